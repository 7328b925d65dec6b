//! The request sequences real MCP clients send, replayed against mcpgate in
//! local mode (issue 16 item 5). One fixture per client in
//! `tests/it/replays/<client>.json`: the requests in the client's order
//! (401 on /mcp, discovery, /register or a CIMD client id, /authorize,
//! /token, /mcp with the token, refresh), with the parts that vary as
//! `{placeholders}`, and what the client reads from each answer. The
//! replayer fills the placeholders, drives the browser step (sign-in and
//! consent) itself, and checks every answer. CIMD documents are pinned
//! (`[[auth.local.cimd.pinned]]`) under the client's real document URL, so
//! `oauth::known_clients` recognises the client as it would in production;
//! Claude and ChatGPT get `[auth.local.access_token_ttl_by_client]`
//! overrides and their fixtures expect the longer `expires_in`.

use std::collections::HashMap;

use mcpgate::config::{RawLocalAuth, RawPinnedDocument};
use reqwest::{StatusCode, header};
use serde_json::{Value, json};

use crate::{
    common::TestServer,
    oauth_browser::{Browser, location, pkce, query_of, sign_in_and_approve},
};

/// The per-known-client lifetimes every replay runs with.
const LONG_LIVED: &[(&str, u64)] = &[("claude", 28_800), ("chatgpt", 28_800)];

/// The values the replay has learnt so far, by placeholder name.
struct Replay {
    vars: HashMap<String, String>,
    name: String,
}

impl Replay {
    /// `text` with every `{name}` it knows filled in.
    fn fill(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for (name, value) in &self.vars {
            out = out.replace(&format!("{{{name}}}"), value);
        }
        assert!(
            !out.contains("{base}") && !out.contains("{code}"),
            "{}: unfilled placeholder in {out}",
            self.name
        );
        out
    }

    /// `value` with placeholders filled in every string; a string that is
    /// exactly one placeholder holding JSON (e.g. `{jwks}`) becomes that JSON.
    fn fill_json(&self, value: &Value) -> Value {
        match value {
            Value::String(s) => {
                let filled = self.fill(s);
                match s.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
                    Some(_) if filled.starts_with('{') && filled != *s => {
                        serde_json::from_str(&filled).unwrap_or(Value::String(filled))
                    }
                    _ => Value::String(filled),
                }
            }
            Value::Array(items) => Value::Array(items.iter().map(|v| self.fill_json(v)).collect()),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), self.fill_json(v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    fn pairs(&self, map: &Value) -> Vec<(String, String)> {
        map.as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), self.fill(v.as_str().unwrap())))
            .collect()
    }

    /// Check a JSON answer against a step's `expect` and keep its `save`s.
    fn check_json(&mut self, what: &str, body: &Value, step: &Value) {
        let expect = &step["expect"];
        for (pointer, want) in expect["equals"].as_object().into_iter().flatten() {
            let want = self.fill_json(want);
            assert_eq!(
                body.pointer(pointer),
                Some(&want),
                "{}: {what}: {pointer} in {body}",
                self.name
            );
        }
        for (pointer, member) in expect["contains"].as_object().into_iter().flatten() {
            let list = body.pointer(pointer).and_then(Value::as_array);
            assert!(
                list.is_some_and(|l| l.contains(member)),
                "{}: {what}: {pointer} lacks {member} in {body}",
                self.name
            );
        }
        for pointer in expect["present"].as_array().into_iter().flatten() {
            let pointer = pointer.as_str().unwrap();
            assert!(
                body.pointer(pointer).is_some_and(|v| !v.is_null()),
                "{}: {what}: no {pointer} in {body}",
                self.name
            );
        }
        for (name, pointer) in step["save"].as_object().into_iter().flatten() {
            let value = &body[pointer.as_str().unwrap().trim_start_matches('/')];
            let text = match value {
                // Clients join a list (Claude: `scopes_supported`) with spaces.
                Value::Array(items) => items
                    .iter()
                    .map(|v| v.as_str().unwrap())
                    .collect::<Vec<_>>()
                    .join(" "),
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            self.vars.insert(name.clone(), text);
        }
    }
}

/// A replay's server: local mode with the fixture's document pinned.
async fn server_for(fixture: &Value, dir: &std::path::Path, replay: &Replay) -> TestServer {
    let mut pinned = Vec::new();
    if let Some(document) = fixture.get("document") {
        let document = replay.fill_json(document);
        let file = dir.join("document.json");
        std::fs::write(&file, document.to_string()).unwrap();
        pinned.push(RawPinnedDocument {
            client_id: document["client_id"].as_str().unwrap().to_owned(),
            document_file: file,
        });
    }
    let mut local = RawLocalAuth::default();
    local.cimd.pinned = pinned;
    local.access_token_ttl_by_client = LONG_LIVED
        .iter()
        .map(|(name, secs)| ((*name).to_owned(), *secs))
        .collect();
    TestServer::start_with(|raw| {
        raw.auth.mode = Some("local".to_owned());
        raw.auth.local = Some(local);
    })
    .await
}

/// Replay `tests/it/replays/<client>.json`; `extra` seeds placeholders.
/// With `signer`, every `/token` step gets a fresh `{client_assertion}`
/// (RFC 7523: `iss` = `sub` = the step's `client_id`, `aud` the token
/// endpoint, a new `jti`), as a `private_key_jwt` client makes one per call.
async fn replay(client: &str, extra: &[(&str, String)], signer: Option<&Signer>) {
    let path = format!(
        "{}/tests/it/replays/{client}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let fixture: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let (verifier, challenge) = pkce();
    let mut replay = Replay {
        vars: HashMap::new(),
        name: client.to_owned(),
    };
    for (k, v) in extra {
        replay.vars.insert((*k).to_owned(), v.clone());
    }
    let dir = tempfile::tempdir().unwrap();
    let server = server_for(&fixture, dir.path(), &replay).await;
    for (k, v) in [
        ("base", server.base.clone()),
        ("resource", server.url("/mcp")),
        ("code_verifier", verifier),
        ("code_challenge", challenge),
        ("state", "replay-state-1".to_owned()),
        ("port", "53187".to_owned()),
    ] {
        replay.vars.insert(k.to_owned(), v);
    }
    let password = server.admin_password.clone().unwrap();

    for (i, step) in fixture["steps"].as_array().unwrap().iter().enumerate() {
        let kind = step["step"].as_str().unwrap();
        let what = format!("step {i} ({kind})");
        let status = step["expect"]["status"].as_u64();
        match kind {
            "get" => {
                let r = server
                    .client
                    .get(server.url(step["path"].as_str().unwrap()))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(
                    Some(u64::from(r.status().as_u16())),
                    status,
                    "{client}: {what}"
                );
                let body: Value = r.json().await.unwrap();
                replay.check_json(&what, &body, step);
            }
            "register" => {
                let body = replay.fill_json(&step["json"]);
                let r = server
                    .client
                    .post(server.url("/register"))
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                let got = r.status().as_u16();
                let body: Value = r.json().await.unwrap();
                assert_eq!(Some(u64::from(got)), status, "{client}: {what}: {body}");
                replay.check_json(&what, &body, step);
            }
            "authorize" => {
                let query = replay.pairs(&step["query"]);
                let query = url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(&query)
                    .finish();
                let back = sign_in_and_approve(
                    &server,
                    &mut Browser::default(),
                    &server.url(&format!("/authorize?{query}")),
                    ("admin", &password),
                    &[],
                )
                .await;
                let redirect = replay.fill(step["expect"]["redirect"].as_str().unwrap());
                assert!(
                    back.starts_with(&format!("{redirect}?")),
                    "{client}: {what}: sent back to {back}, not {redirect}"
                );
                let answer = query_of(&back);
                assert_eq!(answer["state"], replay.vars["state"], "{client}: {what}");
                assert_eq!(answer["iss"], server.base, "{client}: {what}");
                replay
                    .vars
                    .insert("code".to_owned(), answer["code"].clone());
            }
            "token" => {
                if let Some(signer) = signer {
                    let client_id = replay.fill(step["form"]["client_id"].as_str().unwrap());
                    let assertion = signer.assertion(&client_id, &server.url("/token"));
                    replay.vars.insert("client_assertion".to_owned(), assertion);
                }
                let form = replay.pairs(&step["form"]);
                let r = server
                    .client
                    .post(server.url("/token"))
                    .form(&form)
                    .send()
                    .await
                    .unwrap();
                let got = r.status();
                if got == StatusCode::OK {
                    assert_eq!(r.headers()[header::CACHE_CONTROL], "no-store");
                }
                let body: Value = r.json().await.unwrap();
                assert_eq!(
                    Some(u64::from(got.as_u16())),
                    status,
                    "{client}: {what}: {body}"
                );
                replay.check_json(&what, &body, step);
            }
            "mcp" => {
                let mut request = server
                    .client
                    .post(server.url("/mcp"))
                    .header(header::CONTENT_TYPE, "application/json")
                    .header(header::ACCEPT, "application/json, text/event-stream");
                let token = replay.fill(step["token"].as_str().unwrap());
                if token != "none" {
                    request = request.bearer_auth(token);
                }
                let r = request
                    .json(
                        &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                        "protocolVersion": "2025-11-25", "capabilities": {},
                        "clientInfo": {"name": client, "version": "replay"}}}),
                    )
                    .send()
                    .await
                    .unwrap();
                assert_eq!(
                    Some(u64::from(r.status().as_u16())),
                    status,
                    "{client}: {what}"
                );
                if let Some(want) = step["expect"]["www_authenticate"].as_str() {
                    let got = r.headers()[header::WWW_AUTHENTICATE].to_str().unwrap();
                    assert!(got.contains(&replay.fill(want)), "{client}: {what}: {got}");
                }
                let _ = location(&r);
            }
            other => panic!("{client}: unknown step kind {other}"),
        }
    }
}

#[tokio::test]
async fn claude_connects_with_its_metadata_document_and_every_advertised_scope() {
    replay("claude", &[], None).await;
}

#[tokio::test]
async fn claude_code_connects_on_any_loopback_port() {
    replay("claude-code", &[], None).await;
}

#[tokio::test]
async fn vscode_connects_through_vscode_dev_and_its_fixed_loopback_port() {
    replay("vscode", &[], None).await;
}

#[tokio::test]
async fn cursor_registers_dynamically_with_its_private_use_redirect() {
    replay("cursor", &[], None).await;
}

#[tokio::test]
async fn codex_and_opencode_find_what_they_need_to_choose_cimd() {
    replay("codex", &[], None).await;
}

/// A `private_key_jwt` client's key (the test key in `replays/`).
struct Signer {
    key: jsonwebtoken::EncodingKey,
}

impl Signer {
    fn chatgpt() -> (Signer, String) {
        use jsonwebtoken::{Algorithm, EncodingKey, jwk::Jwk};
        let pem = std::fs::read(format!(
            "{}/tests/it/replays/chatgpt-test-key.pem",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let key = EncodingKey::from_rsa_pem(&pem).unwrap();
        let mut jwk =
            serde_json::to_value(Jwk::from_encoding_key(&key, Algorithm::RS256).unwrap()).unwrap();
        jwk["kid"] = json!("replay-1");
        jwk["alg"] = json!("RS256");
        jwk["use"] = json!("sig");
        (Signer { key }, json!({"keys": [jwk]}).to_string())
    }

    fn assertion(&self, client_id: &str, audience: &str) -> String {
        let now = crate::fake_idp::now();
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some("replay-1".to_owned());
        let claims = json!({
            "iss": client_id, "sub": client_id, "aud": audience,
            "iat": now, "exp": now + 60, "jti": uuid::Uuid::new_v4().to_string(),
        });
        jsonwebtoken::encode(&header, &claims, &self.key).unwrap()
    }
}

#[tokio::test]
async fn chatgpt_connects_with_private_key_jwt_and_posts_the_code_twice() {
    let (signer, jwks) = Signer::chatgpt();
    replay("chatgpt", &[("jwks", jwks)], Some(&signer)).await;
}

/// A configured client's own lifetime comes before its known client's: a
/// Cursor pre-registered in `[[auth.local.clients]]` (a static id, its
/// `cursor://` redirect URI) with `access_token_ttl_secs = 600`, while
/// `access_token_ttl_by_client.cursor = 28800`, gets 600; a Cursor that
/// registered itself gets 28800.
#[tokio::test]
async fn a_configured_clients_own_lifetime_comes_before_its_known_clients() {
    const CURSOR: &str = "cursor://anysphere.cursor-mcp/oauth/callback";
    let mut local = RawLocalAuth::default();
    local
        .access_token_ttl_by_client
        .insert("cursor".to_owned(), 28_800);
    local
        .clients
        .push(mcpgate::oauth::configured_clients::RawConfiguredClient {
            client_id: "cursor-static".to_owned(),
            redirect_uris: vec![CURSOR.to_owned()],
            access_token_ttl_secs: Some(600),
            ..Default::default()
        });
    let server = TestServer::start_with(|raw| {
        raw.auth.mode = Some("local".to_owned());
        raw.auth.local = Some(local);
    })
    .await;
    let (status, registered) = crate::oauth_browser::register(
        &server,
        json!({"redirect_uris": [CURSOR], "token_endpoint_auth_method": "none"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{registered}");
    let dynamic = registered["client_id"].as_str().unwrap().to_owned();
    let password = server.admin_password.clone().unwrap();
    for (client_id, lifetime) in [("cursor-static", 600), (dynamic.as_str(), 28_800)] {
        let (verifier, challenge) = pkce();
        let authorize = crate::oauth_browser::authorize_url(&server, client_id, &challenge, CURSOR);
        let back = sign_in_and_approve(
            &server,
            &mut Browser::default(),
            &authorize,
            ("admin", &password),
            &[],
        )
        .await;
        let code = query_of(&back)["code"].clone();
        let (status, tokens) = crate::oauth_browser::token(
            &server,
            &[
                ("grant_type", "authorization_code"),
                ("client_id", client_id),
                ("code", &code),
                ("redirect_uri", CURSOR),
                ("code_verifier", &verifier),
            ],
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{client_id}: {tokens}");
        assert_eq!(tokens["expires_in"], lifetime, "{client_id}: {tokens}");
    }
}
