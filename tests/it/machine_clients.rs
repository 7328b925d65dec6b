//! `[[auth.local.clients]]`: machine clients on the `client_credentials`
//! grant, and configured interactive clients on the code flow. Each refusal
//! has a test that fails if its check is removed.

use base64::Engine;
use mcpgate::oauth::configured_clients::RawConfiguredClient;
use reqwest::{StatusCode, header};
use serde_json::{Value, json};

use crate::{
    common::{TestServer, sqlite_url, tool_json},
    local_auth::local,
    oauth_browser::{
        Browser, REDIRECT, authorize_url, hidden, location, pkce, public_client, query_of,
        register, token,
    },
};

const SECRET: &str = "machine-secret-0123456789abcdef-0123";
const OTHER_SECRET: &str = "other-machine-secret-0123456789abcdef";
const CURSOR_REDIRECT: &str = "cursor://anysphere.cursor-mcp/oauth/callback";
const CLAUDE_REDIRECT: &str = "https://claude.ai/api/mcp/auth_callback";

fn machine(id: &str, secret: &str) -> RawConfiguredClient {
    RawConfiguredClient {
        client_id: id.to_owned(),
        client_secret: Some(secret.to_owned()),
        ..RawConfiguredClient::default()
    }
}

fn claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

/// `grant_type=client_credentials` with HTTP Basic.
async fn basic_grant(
    server: &TestServer,
    id: &str,
    secret: &str,
    form: &[(&str, &str)],
) -> (StatusCode, Value) {
    let mut body = vec![("grant_type", "client_credentials")];
    body.extend_from_slice(form);
    let r = server
        .client
        .post(server.url("/token"))
        .basic_auth(id, Some(secret))
        .form(&body)
        .send()
        .await
        .unwrap();
    (r.status(), r.json().await.unwrap())
}

/// `grant_type=client_credentials` with the secret in the form.
async fn post_grant(
    server: &TestServer,
    id: &str,
    secret: &str,
    form: &[(&str, &str)],
) -> (StatusCode, Value) {
    let mut body = vec![
        ("grant_type", "client_credentials"),
        ("client_id", id),
        ("client_secret", secret),
    ];
    body.extend_from_slice(form);
    token(server, &body).await
}

fn error_of(answer: &(StatusCode, Value)) -> (StatusCode, &str) {
    (answer.0, answer.1["error"].as_str().unwrap_or_default())
}

async fn call_tool(server: &TestServer, token: &str, id: i64, name: &str, args: Value) -> Value {
    server.set_token(token);
    let (status, reply) = server
        .stateless_call(
            id,
            "tools/call",
            Some(name),
            json!({"name": name, "arguments": args}),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    reply
}

#[tokio::test]
async fn machine_clients_get_tokens_by_basic_and_post_that_work_on_mcp() {
    let server = local(|l| {
        l.clients = vec![RawConfiguredClient {
            access_token_ttl_secs: Some(120),
            ..machine("ci-bot", SECRET)
        }];
    })
    .await;
    let meta = server
        .get_json("/.well-known/oauth-authorization-server")
        .await;
    assert!(
        meta["grant_types_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("client_credentials")),
        "{meta}"
    );

    for (status, answer) in [
        basic_grant(&server, "ci-bot", SECRET, &[]).await,
        post_grant(&server, "ci-bot", SECRET, &[]).await,
    ] {
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["token_type"], "Bearer");
        // RFC 6749 §4.4.3: no refresh token.
        assert!(answer.get("refresh_token").is_none(), "{answer}");
        // The per-client lifetime.
        assert_eq!(answer["expires_in"], 120);
        let jwt = answer["access_token"].as_str().unwrap();
        let c = claims(jwt);
        assert_eq!(c["sub"], "client:ci-bot");
        assert_eq!(c["client_id"], "ci-bot");
        assert_eq!(c["aud"], server.url("/mcp"));
        assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 120);
        // No `scopes` configured: every advertised scope.
        let scope = answer["scope"].as_str().unwrap();
        for s in ["calc", "notes:read", "notes:write"] {
            assert!(scope.split(' ').any(|x| x == s), "{scope}");
        }
        assert!(!scope.contains("offline_access"), "{scope}");
        let reply = call_tool(&server, jwt, 1, "add", json!({"a": 2, "b": 3})).await;
        assert!(reply["result"].to_string().contains('5'), "{reply}");
    }
}

#[tokio::test]
async fn client_credentials_is_only_for_configured_clients_allowed_it() {
    let server = local(|l| {
        l.clients = vec![
            machine("ci-bot", SECRET),
            RawConfiguredClient {
                token_endpoint_auth_method: Some("client_secret_basic".to_owned()),
                ..machine("basic-only", OTHER_SECRET)
            },
            // A configured interactive client with a secret, not allowed the grant.
            RawConfiguredClient {
                redirect_uris: vec![CLAUDE_REDIRECT.to_owned()],
                grant_types: Some(vec![
                    "authorization_code".to_owned(),
                    "refresh_token".to_owned(),
                ]),
                ..machine("claude-enterprise", OTHER_SECRET)
            },
            // A configured public client (no secret, no keys).
            RawConfiguredClient {
                client_id: "cursor-static".to_owned(),
                redirect_uris: vec![CURSOR_REDIRECT.to_owned()],
                ..RawConfiguredClient::default()
            },
        ];
    })
    .await;
    // Authentication fails first: 401 invalid_client.
    let wrong = basic_grant(&server, "ci-bot", OTHER_SECRET, &[]).await;
    assert_eq!(
        error_of(&wrong),
        (StatusCode::UNAUTHORIZED, "invalid_client")
    );
    let wrong = post_grant(&server, "ci-bot", "not-the-secret", &[]).await;
    assert_eq!(
        error_of(&wrong),
        (StatusCode::UNAUTHORIZED, "invalid_client")
    );
    let unknown = basic_grant(&server, "nobody", SECRET, &[]).await;
    assert_eq!(
        error_of(&unknown),
        (StatusCode::UNAUTHORIZED, "invalid_client")
    );
    let anonymous = token(&server, &[("grant_type", "client_credentials")]).await;
    assert_eq!(
        error_of(&anonymous),
        (StatusCode::UNAUTHORIZED, "invalid_client")
    );
    // The id without its secret: a configured client is never public.
    let no_secret = token(
        &server,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "ci-bot"),
        ],
    )
    .await;
    assert_eq!(
        error_of(&no_secret),
        (StatusCode::UNAUTHORIZED, "invalid_client")
    );
    // The right secret by a method the client is not configured for.
    let by_post = post_grant(&server, "basic-only", OTHER_SECRET, &[]).await;
    assert_eq!(
        error_of(&by_post),
        (StatusCode::UNAUTHORIZED, "invalid_client")
    );
    assert_eq!(
        basic_grant(&server, "basic-only", OTHER_SECRET, &[])
            .await
            .0,
        StatusCode::OK
    );

    // Authenticated, but not allowed the grant: unauthorized_client.
    let interactive = basic_grant(&server, "claude-enterprise", OTHER_SECRET, &[]).await;
    assert_eq!(
        error_of(&interactive),
        (StatusCode::BAD_REQUEST, "unauthorized_client")
    );
    assert!(
        interactive.1["error_description"]
            .as_str()
            .unwrap()
            .contains("grant_types"),
        "{}",
        interactive.1
    );
    let configured_public = token(
        &server,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "cursor-static"),
        ],
    )
    .await;
    assert_eq!(
        error_of(&configured_public),
        (StatusCode::BAD_REQUEST, "unauthorized_client")
    );
    let (status, registered) = register(
        &server,
        json!({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "client_secret_post",
               "grant_types": ["authorization_code", "client_credentials"]}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{registered}");
    let dcr = post_grant(
        &server,
        registered["client_id"].as_str().unwrap(),
        registered["client_secret"].as_str().unwrap(),
        &[],
    )
    .await;
    assert_eq!(
        error_of(&dcr),
        (StatusCode::BAD_REQUEST, "unauthorized_client")
    );
    assert!(
        dcr.1["error_description"]
            .as_str()
            .unwrap()
            .contains("[[auth.local.clients]]"),
        "{}",
        dcr.1
    );
    let public = public_client(&server).await;
    let public = token(
        &server,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", public.as_str()),
        ],
    )
    .await;
    assert_eq!(
        error_of(&public),
        (StatusCode::BAD_REQUEST, "unauthorized_client")
    );
}

#[tokio::test]
async fn scopes_stay_within_what_the_client_is_allowed() {
    let server = local(|l| {
        l.clients = vec![RawConfiguredClient {
            scopes: Some(vec!["calc".to_owned(), "notes:read".to_owned()]),
            ..machine("reader", SECRET)
        }];
    })
    .await;
    let all = basic_grant(&server, "reader", SECRET, &[]).await;
    assert_eq!(all.0, StatusCode::OK, "{}", all.1);
    assert_eq!(all.1["scope"], "calc notes:read");
    assert_eq!(
        claims(all.1["access_token"].as_str().unwrap())["scope"],
        "calc notes:read"
    );

    let narrow = basic_grant(&server, "reader", SECRET, &[("scope", "calc")]).await;
    assert_eq!(narrow.1["scope"], "calc", "{}", narrow.1);
    // offline_access means nothing here and is dropped.
    let offline = basic_grant(
        &server,
        "reader",
        SECRET,
        &[("scope", "calc offline_access")],
    )
    .await;
    assert_eq!(offline.1["scope"], "calc", "{}", offline.1);
    assert!(offline.1.get("refresh_token").is_none());

    // Advertised, but not allowed this client: refused, never widened.
    let escalation = basic_grant(&server, "reader", SECRET, &[("scope", "calc notes:write")]).await;
    assert_eq!(
        error_of(&escalation),
        (StatusCode::BAD_REQUEST, "invalid_scope")
    );
    assert!(
        escalation.1["error_description"]
            .as_str()
            .unwrap()
            .contains("notes:write")
    );
    // Unknown scopes are refused too (not silently dropped).
    let unknown = basic_grant(&server, "reader", SECRET, &[("scope", "admin")]).await;
    assert_eq!(
        error_of(&unknown),
        (StatusCode::BAD_REQUEST, "invalid_scope")
    );

    // The policy applies to machine tokens like to any: no notes:write, no
    // create_note.
    let calc_only = narrow.1["access_token"].as_str().unwrap();
    server.set_token(calc_only);
    let denied = server
        .mcp_post()
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "read_note")
        .json(
            &json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{
            "name":"read_note","arguments":{"id":"x"},
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientInfo": {"name": "it", "version": "1"},
                "io.modelcontextprotocol/clientCapabilities": {}
            }}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), StatusCode::FORBIDDEN);
    assert!(
        denied.headers()[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .contains("insufficient_scope")
    );
}

#[tokio::test]
async fn the_resource_must_be_one_the_client_may_have() {
    let server = local(|l| {
        l.clients = vec![
            machine("ci-bot", SECRET),
            RawConfiguredClient {
                resources: vec!["https://reports.example/api".to_owned()],
                ..machine("reports", OTHER_SECRET)
            },
        ];
    })
    .await;
    let mcp = server.url("/mcp");
    // Spelled differently (trailing slash): the audience is the canonical one.
    let slash = format!("{mcp}/");
    let ok = basic_grant(&server, "ci-bot", SECRET, &[("resource", &slash)]).await;
    assert_eq!(ok.0, StatusCode::OK, "{}", ok.1);
    assert_eq!(claims(ok.1["access_token"].as_str().unwrap())["aud"], mcp);

    let foreign = basic_grant(
        &server,
        "ci-bot",
        SECRET,
        &[("resource", "https://reports.example/api")],
    )
    .await;
    assert_eq!(
        error_of(&foreign),
        (StatusCode::BAD_REQUEST, "invalid_target")
    );

    // A client configured for another resource only: that is its default,
    // and this server's /mcp is refused to it.
    let reports = basic_grant(&server, "reports", OTHER_SECRET, &[]).await;
    assert_eq!(reports.0, StatusCode::OK, "{}", reports.1);
    let jwt = reports.1["access_token"].as_str().unwrap();
    assert_eq!(claims(jwt)["aud"], "https://reports.example/api");
    let not_mcp = basic_grant(&server, "reports", OTHER_SECRET, &[("resource", &mcp)]).await;
    assert_eq!(
        error_of(&not_mcp),
        (StatusCode::BAD_REQUEST, "invalid_target")
    );
    // And its token does not open /mcp.
    server.set_token(jwt);
    let r = server
        .mcp_post()
        .json(&json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn notes_belong_to_the_configured_subject() {
    let server = local(|l| {
        l.clients = vec![
            RawConfiguredClient {
                subject: Some("svc:nightly".to_owned()),
                ..machine("nightly-a", SECRET)
            },
            RawConfiguredClient {
                subject: Some("svc:nightly".to_owned()),
                ..machine("nightly-b", OTHER_SECRET)
            },
            machine("other", SECRET),
        ];
    })
    .await;
    let token_of = |id: &'static str, secret: &'static str| {
        let server = &server;
        async move {
            let (status, answer) = basic_grant(server, id, secret, &[]).await;
            assert_eq!(status, StatusCode::OK, "{answer}");
            answer["access_token"].as_str().unwrap().to_owned()
        }
    };
    let a = token_of("nightly-a", SECRET).await;
    let b = token_of("nightly-b", OTHER_SECRET).await;
    let other = token_of("other", SECRET).await;
    assert_eq!(claims(&a)["sub"], "svc:nightly");

    let created =
        tool_json(&call_tool(&server, &a, 1, "create_note", json!({"title": "run 42"})).await);
    let id = created["id"].as_str().unwrap().to_owned();
    // The same subject through another client: the same notes.
    let listed = tool_json(&call_tool(&server, &b, 2, "list_notes", json!({})).await);
    assert_eq!(listed["notes"].as_array().unwrap().len(), 1, "{listed}");
    let read = tool_json(&call_tool(&server, &b, 3, "read_note", json!({"id": id})).await);
    assert_eq!(read["title"], "run 42");
    // Another subject: none of them.
    let listed = tool_json(&call_tool(&server, &other, 4, "list_notes", json!({})).await);
    assert_eq!(listed["notes"].as_array().unwrap().len(), 0, "{listed}");
    let read = call_tool(&server, &other, 5, "read_note", json!({"id": id})).await;
    assert_eq!(read["result"]["isError"], true, "{read}");
}

#[tokio::test]
async fn client_credentials_is_advertised_only_when_a_client_may_use_it() {
    let plain = local(|_| {}).await;
    let meta = plain
        .get_json("/.well-known/oauth-authorization-server")
        .await;
    assert_eq!(
        meta["grant_types_supported"],
        json!(["authorization_code", "refresh_token"])
    );
    let interactive_only = local(|l| {
        l.clients = vec![RawConfiguredClient {
            client_id: "cursor".to_owned(),
            redirect_uris: vec![CURSOR_REDIRECT.to_owned()],
            ..RawConfiguredClient::default()
        }];
    })
    .await;
    let meta = interactive_only
        .get_json("/.well-known/oauth-authorization-server")
        .await;
    assert_eq!(
        meta["grant_types_supported"],
        json!(["authorization_code", "refresh_token"])
    );
}

/// Through login and consent to the redirect back; returns the consent
/// page's HTML and where the browser was sent.
async fn sign_in_to_consent(server: &TestServer, authorize: &str) -> (String, String) {
    let mut browser = Browser::default();
    let page = browser.get(authorize).await;
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    let password = server.admin_password.clone().unwrap();
    let login = browser
        .post(
            &server.url("/login"),
            &[
                ("request", &hidden(&html, "request")),
                ("csrf", &hidden(&html, "csrf")),
                ("username", "admin"),
                ("password", &password),
            ],
        )
        .await;
    assert_eq!(login.status(), StatusCode::SEE_OTHER);
    let consent_html = browser
        .get(&server.url(&location(&login)))
        .await
        .text()
        .await
        .unwrap();
    let done = browser
        .post(
            &server.url("/consent"),
            &[
                ("request", &hidden(&consent_html, "request")),
                ("csrf", &hidden(&consent_html, "csrf")),
                ("decision", "approve"),
            ],
        )
        .await;
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    (consent_html, location(&done))
}

#[tokio::test]
async fn configured_interactive_clients_complete_the_code_flow() {
    let server = local(|l| {
        l.clients = vec![
            RawConfiguredClient {
                client_id: "cursor-static".to_owned(),
                client_name: Some("Cursor (company build)".to_owned()),
                redirect_uris: vec![CURSOR_REDIRECT.to_owned()],
                access_token_ttl_secs: Some(86_400),
                ..RawConfiguredClient::default()
            },
            RawConfiguredClient {
                client_name: Some("Claude Enterprise".to_owned()),
                redirect_uris: vec![CLAUDE_REDIRECT.to_owned()],
                scopes: Some(vec!["calc".to_owned()]),
                ..machine("claude-enterprise", SECRET)
            },
            machine("ci-bot", OTHER_SECRET),
        ];
    })
    .await;

    // The public one (Cursor with a static id): PKCE, no secret.
    let (verifier, challenge) = pkce();
    let (consent, back) = sign_in_to_consent(
        &server,
        &authorize_url(&server, "cursor-static", &challenge, CURSOR_REDIRECT),
    )
    .await;
    assert!(consent.contains("Cursor (company build)"), "{consent}");
    assert!(back.starts_with(CURSOR_REDIRECT), "{back}");
    let code = query_of(&back)["code"].clone();
    let (status, tokens) = token(
        &server,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", "cursor-static"),
            ("code", &code),
            ("redirect_uri", CURSOR_REDIRECT),
            ("code_verifier", &verifier),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    // Its own lifetime, and a refresh token (its grant types include refresh).
    assert_eq!(tokens["expires_in"], 86_400);
    assert!(tokens["refresh_token"].is_string(), "{tokens}");
    let reply = call_tool(
        &server,
        tokens["access_token"].as_str().unwrap(),
        1,
        "add",
        json!({"a": 1, "b": 1}),
    )
    .await;
    assert!(reply["result"].to_string().contains('2'), "{reply}");
    let (status, refreshed) = token(
        &server,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", "cursor-static"),
            ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");
    assert_eq!(refreshed["expires_in"], 86_400);

    // The confidential one (enterprise-managed Claude): the code needs the secret.
    let (verifier, challenge) = pkce();
    let authorize = format!(
        "{}&scope=calc%20notes%3Awrite",
        authorize_url(&server, "claude-enterprise", &challenge, CLAUDE_REDIRECT)
    );
    let (consent, back) = sign_in_to_consent(&server, &authorize).await;
    assert!(consent.contains("Claude Enterprise"), "{consent}");
    let code = query_of(&back)["code"].clone();
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", CLAUDE_REDIRECT),
        ("code_verifier", verifier.as_str()),
    ];
    let without_secret = token(
        &server,
        &[&form[..], &[("client_id", "claude-enterprise")]].concat(),
    )
    .await;
    assert_eq!(
        error_of(&without_secret),
        (StatusCode::UNAUTHORIZED, "invalid_client")
    );
    let r = server
        .client
        .post(server.url("/token"))
        .basic_auth("claude-enterprise", Some(SECRET))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let tokens: Value = r.json().await.unwrap();
    // Its configured scopes bound what the consent could grant.
    assert_eq!(tokens["scope"], "calc", "{tokens}");
    assert_eq!(
        claims(tokens["access_token"].as_str().unwrap())["client_id"],
        "claude-enterprise"
    );
}

#[tokio::test]
async fn configured_interactive_clients_keep_their_redirects_and_their_ids() {
    let server = local(|l| {
        l.clients = vec![
            RawConfiguredClient {
                client_id: "cursor-static".to_owned(),
                client_name: Some("Cursor (company build)".to_owned()),
                redirect_uris: vec![CURSOR_REDIRECT.to_owned()],
                ..RawConfiguredClient::default()
            },
            // Has a redirect URI, but is allowed client_credentials only.
            RawConfiguredClient {
                redirect_uris: vec![REDIRECT.to_owned()],
                grant_types: Some(vec!["client_credentials".to_owned()]),
                ..machine("ci-bot", SECRET)
            },
        ];
    })
    .await;
    let (_, challenge) = pkce();
    // A redirect outside the configured list: a page, never a redirect.
    for elsewhere in [
        "cursor://anysphere.cursor-mcp/oauth/other",
        "https://attacker.example/cb",
        REDIRECT,
    ] {
        let r = Browser::default()
            .get(&authorize_url(
                &server,
                "cursor-static",
                &challenge,
                elsewhere,
            ))
            .await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{elsewhere}");
        assert!(location(&r).is_empty());
    }
    // A machine client is not an interactive one.
    let r = Browser::default()
        .get(&authorize_url(&server, "ci-bot", &challenge, REDIRECT))
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("unauthorized_client"));

    // /register cannot take a configured id.
    let (status, registered) = register(
        &server,
        json!({"client_id": "cursor-static", "redirect_uris": [REDIRECT],
               "token_endpoint_auth_method": "none", "client_name": "impostor"}),
    )
    .await;
    if status == StatusCode::CREATED {
        assert_ne!(registered["client_id"], "cursor-static", "{registered}");
    }
    // The sweeper finds nothing of theirs to delete: they live in the
    // configuration, not the store.
    let store = mcpgate::store::Store::connect(&sqlite_url(server.data_dir()), 1)
        .await
        .unwrap();
    let far = unix_now() + 400 * 86_400;
    store.sweep_oauth(far, 1).await.unwrap();
    store.close().await;
    let page = Browser::default()
        .get(&authorize_url(
            &server,
            "cursor-static",
            &challenge,
            CURSOR_REDIRECT,
        ))
        .await;
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(!html.contains("impostor"), "{html}");
    assert_eq!(
        basic_grant(&server, "ci-bot", SECRET, &[]).await.0,
        StatusCode::OK
    );
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Issue 18 item 4 for machine clients: each `client_credentials` request
/// is one funnel attempt, passed or stopped with its precise reason (a bad
/// secret, a scope or resource the client may not have, a refused or
/// replayed private_key_jwt assertion); the token's first MCP call joins
/// the attempt that issued it. Unknown clients are counted, not stored.
#[tokio::test]
async fn each_client_credentials_request_is_a_funnel_attempt_with_its_reason() {
    use crate::auth_funnel::{attempts_until, series};
    use jsonwebtoken::{Algorithm, Header};
    let key = crate::fake_idp::new_es256_key("kb-1");
    let server = local(|l| {
        l.clients = vec![
            machine("ci-bot", SECRET),
            RawConfiguredClient {
                client_id: "key-bot".to_owned(),
                jwks: Some(json!({ "keys": [key.jwk.clone()] }).to_string()),
                ..RawConfiguredClient::default()
            },
        ];
    })
    .await;
    let (status, answer) = basic_grant(&server, "ci-bot", SECRET, &[]).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (status, _) = {
        server.set_token(answer["access_token"].as_str().unwrap());
        server
            .stateless_call(1, "tools/list", None, json!({}))
            .await
    };
    assert_eq!(status, 200);
    for (form, secret, reason) in [
        (vec![], OTHER_SECRET, "invalid_client"),
        (vec![("scope", "no-such-scope")], SECRET, "invalid_scope"),
        (
            vec![("resource", "https://elsewhere.example/mcp")],
            SECRET,
            "invalid_target",
        ),
    ] {
        let (status, body) = basic_grant(&server, "ci-bot", secret, &form).await;
        assert!(status.is_client_error(), "{reason}: {body}");
        assert!(
            body["error_uri"]
                .as_str()
                .unwrap_or_default()
                .ends_with(&format!("/errors#{}", reason.replace('_', "-"))),
            "{reason}: {body}"
        );
    }
    assert_eq!(
        basic_grant(&server, "nobody", SECRET, &[]).await.0,
        StatusCode::UNAUTHORIZED
    );

    // key-bot authenticates with an assertion: once, not twice, not for
    // another audience.
    let sign = |aud: &str| {
        let now = crate::fake_idp::now();
        let claims = json!({
            "iss": "key-bot", "sub": "key-bot", "aud": aud,
            "iat": now, "exp": now + 60, "jti": uuid::Uuid::new_v4().to_string(),
        });
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&header, &claims, &key.encoding).unwrap()
    };
    let by_assertion = |assertion: String| {
        let server = &server;
        async move {
            token(
                server,
                &[
                    ("grant_type", "client_credentials"),
                    ("client_id", "key-bot"),
                    (
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    ),
                    ("client_assertion", &assertion),
                ],
            )
            .await
        }
    };
    let assertion = sign(&server.url("/token"));
    assert_eq!(by_assertion(assertion.clone()).await.0, StatusCode::OK);
    let (status, body) = by_assertion(assertion).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"], "invalid_client");
    assert_eq!(
        body["error_uri"],
        server.url("/errors#client-assertion-replayed")
    );
    let (status, body) = by_assertion(sign("https://elsewhere.example/token")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(
        body["error_uri"],
        server.url("/errors#client-assertion-invalid")
    );

    let sorted = |attempts: &[mcpgate::store::FunnelAttempt]| {
        let mut all: Vec<Vec<String>> = attempts.iter().map(series).collect();
        all.sort();
        all
    };
    let attempts = attempts_until(&server, "ci-bot", |a| a.len() == 4).await;
    assert_eq!(
        sorted(&attempts),
        [
            vec!["client_credentials", "mcp_call"],
            vec!["client_credentials:invalid_client"],
            vec!["client_credentials:invalid_scope"],
            vec!["client_credentials:invalid_target"],
        ],
        "{attempts:#?}"
    );
    assert!(
        attempts
            .iter()
            .all(|a| a.user_id.is_some() || a.stopped.is_some())
    );
    let attempts = attempts_until(&server, "key-bot", |a| a.len() == 3).await;
    assert_eq!(
        sorted(&attempts),
        [
            vec!["client_credentials"],
            vec!["client_credentials:client_assertion_invalid"],
            vec!["client_credentials:client_assertion_replayed"],
        ],
        "{attempts:#?}"
    );
    assert!(attempts_until(&server, "nobody", |_| true).await.is_empty());
    let metrics = server.get_text("/metrics").await;
    for series in [
        r#"mcpgate_auth_funnel_total{client="ci-bot",step="client_credentials",reason="ok"} 1"#,
        r#"mcpgate_auth_funnel_total{client="ci-bot",step="client_credentials",reason="invalid_scope"} 1"#,
        r#"mcpgate_auth_funnel_total{client="key-bot",step="client_credentials",reason="client_assertion_replayed"} 1"#,
        r#"mcpgate_auth_funnel_total{client="other",step="client_credentials",reason="invalid_client"} 1"#,
    ] {
        assert!(metrics.contains(series), "{series} missing from\n{metrics}");
    }
}
