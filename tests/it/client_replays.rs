//! Recorded request sequences of the MCP clients people use (issue 16 item
//! 5), replayed against mcpgate in local mode: one fixture per client in
//! `tests/it/replays/<client>.json` (discovery paths and the fields the
//! client reads there, its registration: a CIMD document, pinned, or a DCR
//! body, the /authorize query, the /token forms). Placeholders: `{base}`
//! (mcpgate's origin), `{port}` (the client's loopback port, any),
//! `{scopes_supported}` (the metadata's scopes in order, as Claude asks).
//! Each replay of a known client (`oauth::known_clients`) also sets its
//! access-token lifetime (`[auth.local.access_token_ttl_by_client]`) and
//! checks `expires_in`: the client was recognised from its requests.

use mcpgate::config::{RawLocalAuth, RawPinnedDocument};
use reqwest::StatusCode;
use serde_json::Value;

use crate::{
    common::TestServer,
    oauth_browser::{Browser, pkce, query_of, register, sign_in_and_approve, token},
};

/// A lifetime no default or other setting yields: seeing it proves the
/// known client was recognised.
const REPLAY_TTL_SECS: u64 = 28_800;
/// The loopback port the replayed client listens on (any is accepted).
const CLIENT_PORT: &str = "49817";

fn fixture(client: &str) -> Value {
    let path = format!(
        "{}/tests/it/replays/{client}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// `value` with the placeholders filled in (strings, arrays, objects).
fn fill(value: &Value, base: &str, scopes: &str) -> Value {
    match value {
        Value::String(s) => Value::String(
            s.replace("{base}", base)
                .replace("{port}", CLIENT_PORT)
                .replace("{scopes_supported}", scopes),
        ),
        Value::Array(items) => Value::Array(items.iter().map(|v| fill(v, base, scopes)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), fill(v, base, scopes)))
                .collect(),
        ),
        other => other.clone(),
    }
}

async fn replay(client: &str) {
    let recorded = fixture(client);
    let name = recorded["client"].as_str().unwrap().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let mut pinned = Vec::new();
    if let Some(cimd) = recorded["registration"].get("cimd") {
        let file = dir.path().join("document.json");
        std::fs::write(&file, cimd["document"].to_string()).unwrap();
        pinned.push(RawPinnedDocument {
            client_id: cimd["client_id"].as_str().unwrap().to_owned(),
            document_file: file,
        });
    }
    let mut local = RawLocalAuth::default();
    local.cimd.pinned = pinned;
    // Known clients get the replay lifetime; others (Codex has no mark of
    // its own) the server's default.
    let expires_in = match mcpgate::oauth::known_clients::by_name(&name) {
        Some(_) => {
            local
                .access_token_ttl_by_client
                .insert(name.clone(), REPLAY_TTL_SECS);
            REPLAY_TTL_SECS
        }
        None => 3600,
    };
    let server = TestServer::start_with(|raw| {
        raw.auth.mode = Some("local".to_owned());
        raw.auth.local = Some(local);
    })
    .await;
    let base = server.base.clone();

    // 1. Discovery: what the client reads, as it reads it.
    let mut scopes = String::new();
    for step in recorded["discovery"].as_array().unwrap() {
        let path = step["path"].as_str().unwrap();
        let r = server.client.get(server.url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{name}: {path}");
        let doc: Value = r.json().await.unwrap();
        if let Some(list) = doc["scopes_supported"].as_array()
            && path.contains("oauth-authorization-server")
        {
            scopes = list
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" ");
        }
        for (field, want) in step["expect"].as_object().into_iter().flatten() {
            assert_eq!(doc[field], fill(want, &base, ""), "{name}: {path} {field}");
        }
        for (field, items) in step["lists"].as_object().into_iter().flatten() {
            let listed = doc[field].as_array().cloned().unwrap_or_default();
            for item in items.as_array().unwrap() {
                assert!(listed.contains(item), "{name}: {path} {field} lacks {item}");
            }
        }
    }

    // 2. Registration: the document URL is the client id, or DCR.
    let client_id = match (
        recorded["registration"].get("cimd"),
        recorded["registration"].get("dcr"),
    ) {
        (Some(cimd), _) => cimd["client_id"].as_str().unwrap().to_owned(),
        (None, Some(body)) => {
            let (status, answer) = register(&server, body.clone()).await;
            assert_eq!(status, StatusCode::CREATED, "{name}: {answer}");
            answer["client_id"].as_str().unwrap().to_owned()
        }
        (None, None) => panic!("{name}: no registration"),
    };

    // 3. /authorize, signed in and approved in a browser.
    let asked = fill(&recorded["authorize"], &base, &scopes);
    let redirect_uri = asked["redirect_uri"].as_str().unwrap().to_owned();
    let (verifier, challenge) = pkce();
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query
        .append_pair("response_type", "code")
        .append_pair("client_id", &client_id)
        .append_pair("redirect_uri", &redirect_uri)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256")
        .append_pair("state", "replay-state");
    for field in ["scope", "resource"] {
        if let Some(v) = asked[field].as_str() {
            query.append_pair(field, v);
        }
    }
    let authorize = server.url(&format!("/authorize?{}", query.finish()));
    let password = server.admin_password.clone().unwrap();
    let back = sign_in_and_approve(
        &server,
        &mut Browser::default(),
        &authorize,
        ("admin", &password),
        &[],
    )
    .await;
    assert!(back.starts_with(&redirect_uri), "{name}: back to {back}");
    let answer = query_of(&back);
    assert_eq!(answer["state"], "replay-state", "{name}");
    assert_eq!(answer["iss"], base, "{name}");
    let code = answer["code"].clone();

    // 4. /token: the code, then (if the client does) the same code again,
    // then a refresh.
    let resource = asked["resource"].as_str().unwrap_or_default().to_owned();
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("client_id", client_id.as_str()),
        ("code", code.as_str()),
        ("redirect_uri", redirect_uri.as_str()),
        ("code_verifier", verifier.as_str()),
    ];
    if !resource.is_empty() {
        form.push(("resource", resource.as_str()));
    }
    let (status, tokens) = token(&server, &form).await;
    assert_eq!(status, StatusCode::OK, "{name}: {tokens}");
    assert_eq!(tokens["token_type"], "Bearer", "{name}");
    assert_eq!(tokens["expires_in"], expires_in, "{name}: {tokens}");
    if !scopes.is_empty() && asked["scope"].is_string() {
        assert!(tokens["scope"].is_string(), "{name}: {tokens}");
    }
    if recorded["code_posted_twice"] == true {
        let (status, again) = token(&server, &form).await;
        assert_eq!(status, StatusCode::OK, "{name}: the second post");
        assert_eq!(again["access_token"], tokens["access_token"], "{name}");
    }
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    if recorded["refresh"] == true {
        let refresh = tokens["refresh_token"].as_str().unwrap();
        let (status, renewed) = token(
            &server,
            &[
                ("grant_type", "refresh_token"),
                ("client_id", client_id.as_str()),
                ("refresh_token", refresh),
            ],
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{name}: {renewed}");
        assert_ne!(renewed["refresh_token"], tokens["refresh_token"], "rotated");
        assert_eq!(renewed["expires_in"], expires_in, "{name}");
    }

    // 5. The token works on /mcp.
    server.set_token(&access);
    server.initialize().await;
}

#[tokio::test]
async fn claude_replay() {
    replay("claude").await;
}

#[tokio::test]
async fn claude_code_replay() {
    replay("claude-code").await;
}

#[tokio::test]
async fn vscode_replay() {
    replay("vscode").await;
}

#[tokio::test]
async fn cursor_replay() {
    replay("cursor").await;
}

#[tokio::test]
async fn codex_replay() {
    replay("codex").await;
}

#[tokio::test]
#[ignore = "needs private_key_jwt (r16-pkjwt)"]
async fn chatgpt_replay() {
    replay("chatgpt").await;
}
