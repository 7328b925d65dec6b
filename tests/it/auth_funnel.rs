//! The reason catalogue on every refusal (`error_description` = cause + fix,
//! `error_uri` = its `/errors` section) and the auth funnel: a client's
//! failed and successful attempts recorded step by step with their reasons,
//! joined across the token endpoint and `/mcp`, counted on `/metrics`, shown
//! by `mcpgate funnel`, and audit lines without secrets.

use std::time::Duration;

use mcpgate::{
    clock::{Clock, ManualClock},
    store::{FunnelAttempt, Store},
};
use reqwest::{StatusCode, header};
use serde_json::{Value, json};

use crate::{
    common::{TestServer, sqlite_url},
    fake_idp::{FakeIdp, now},
    local_auth::{admin_cli, local_on_clock},
    oauth_browser::{
        Browser, REDIRECT, authorize_url, exchange_code, hidden, location, pkce, public_client,
        query_of, refresh_grant, register, sign_in_and_approve, token,
    },
};

/// A 4xx JSON body names its reason: a description with the fix after the
/// cause, and a link to the reason's section of this server's `/errors`.
fn assert_reasoned(server: &TestServer, what: &str, body: &Value, anchor: &str) {
    let description = body["error_description"].as_str().unwrap_or_default();
    let (cause, fix) = description
        .split_once(": ")
        .unwrap_or_else(|| panic!("{what}: no cause and fix in {body}"));
    assert!(!cause.is_empty() && !fix.is_empty(), "{what}: {body}");
    assert_eq!(
        body["error_uri"],
        server.url(&format!("/errors#{anchor}")),
        "{what}: {body}"
    );
}

#[tokio::test]
async fn every_oauth_and_mcp_refusal_names_its_reason_and_links_its_section() {
    let clock = ManualClock::new();
    let server = local_on_clock(|_| {}, clock.clone()).await;
    let client_id = public_client(&server).await;
    let errors_page = server.get_text("/errors").await;
    let mut cases: Vec<(&str, StatusCode, Value, &str)> = Vec::new();

    let (status, body) = register(&server, json!({"redirect_uris": ["javascript:alert(1)"]})).await;
    cases.push(("bad redirect", status, body, "invalid-redirect-uri"));
    let r = server
        .client
        .post(server.url("/register"))
        .body("not json")
        .send()
        .await
        .unwrap();
    cases.push((
        "not json",
        r.status(),
        r.json().await.unwrap(),
        "invalid-client-metadata",
    ));
    let r = server
        .client
        .post(server.url("/register"))
        .body(vec![b' '; 20_000])
        .send()
        .await
        .unwrap();
    cases.push((
        "too large",
        r.status(),
        r.json().await.unwrap(),
        "too-large",
    ));

    let (status, body) = token(&server, &[("client_id", &client_id)]).await;
    cases.push(("no grant_type", status, body, "invalid-request"));
    let (status, body) = token(
        &server,
        &[("grant_type", "password"), ("client_id", &client_id)],
    )
    .await;
    cases.push(("password grant", status, body, "unsupported-grant-type"));
    let (verifier, _) = pkce();
    let (status, body) = exchange_code(&server, &client_id, "no-such-code", &verifier).await;
    cases.push(("unknown code", status, body, "code-invalid"));
    let (status, body) = refresh_grant(&server, &client_id, "no-such-refresh").await;
    cases.push(("unknown refresh", status, body, "refresh-invalid"));
    let (status, body) = token(
        &server,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", "nobody-registered-this"),
            ("code", "x"),
            ("code_verifier", &verifier),
        ],
    )
    .await;
    cases.push(("unknown client", status, body, "invalid-client"));
    let r = server
        .client
        .post(server.url("/revoke"))
        .form(&[("client_id", client_id.as_str())])
        .send()
        .await
        .unwrap();
    cases.push((
        "revoke without token",
        r.status(),
        r.json().await.unwrap(),
        "invalid-request",
    ));

    // A code redeemed without its verifier, then with another redirect_uri.
    let (verifier, challenge) = pkce();
    let password = server.admin_password.clone().unwrap();
    let back = sign_in_and_approve(
        &server,
        &mut Browser::default(),
        &authorize_url(&server, &client_id, &challenge, REDIRECT),
        ("admin", &password),
        &[],
    )
    .await;
    let code = query_of(&back)["code"].clone();
    let (status, body) = token(
        &server,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", &client_id),
            ("code", &code),
            ("redirect_uri", REDIRECT),
        ],
    )
    .await;
    cases.push(("no verifier", status, body, "pkce-missing"));
    let (status, body) = token(
        &server,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", &client_id),
            ("code", &code),
            ("redirect_uri", "http://127.0.0.1:9/other"),
            ("code_verifier", &verifier),
        ],
    )
    .await;
    cases.push(("other redirect_uri", status, body, "redirect-uri-mismatch"));

    for (what, status, body, anchor) in &cases {
        assert!(status.is_client_error(), "{what}: {status} {body}");
        assert_reasoned(&server, what, body, anchor);
        assert!(
            errors_page.contains(&format!("id=\"{anchor}\"")),
            "/errors lacks {anchor}"
        );
    }

    // /mcp: without a token the body explains (the challenge names no error,
    // RFC 6750 §3.1); with a bad one the challenge carries the reason too.
    let r = server
        .mcp_post()
        .json(&json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let challenge = r.headers()[header::WWW_AUTHENTICATE]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(!challenge.contains("error="), "{challenge}");
    assert_reasoned(
        &server,
        "no token",
        &r.json().await.unwrap(),
        "token-missing",
    );
    server.set_token("a.b.c");
    let r = server
        .mcp_post()
        .json(&json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}))
        .send()
        .await
        .unwrap();
    let challenge = r.headers()[header::WWW_AUTHENTICATE]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        challenge.contains("error=\"invalid_token\", error_description=\"The access token is invalid: get a new token")
            && challenge.contains(&format!(
                "error_uri=\"{}\"",
                server.url("/errors#token-invalid")
            )),
        "{challenge}"
    );
    assert_reasoned(
        &server,
        "bad token",
        &r.json().await.unwrap(),
        "token-invalid",
    );

    // Browser steps: the page names the cause, the fix and the section.
    let (_, challenge) = pkce();
    let page = Browser::default()
        .get(&authorize_url(
            &server,
            &client_id,
            &challenge,
            "http://127.0.0.1:9/not-registered",
        ))
        .await;
    assert_eq!(page.status(), StatusCode::BAD_REQUEST);
    let html = page.text().await.unwrap();
    assert!(html.contains("redirect_uri is not registered"), "{html}");
    assert!(
        html.contains("Send exactly a registered redirect_uri"),
        "{html}"
    );
    assert!(html.contains("/errors#redirect-uri-mismatch"), "{html}");
}

/// The server's funnel rows for `client_id`, once `want` holds (the writer
/// stores them in the background).
pub async fn attempts_until(
    server: &TestServer,
    client_id: &str,
    want: impl Fn(&[FunnelAttempt]) -> bool,
) -> Vec<FunnelAttempt> {
    let store = Store::connect(&sqlite_url(server.data_dir()), 1)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let attempts = store
            .funnel_attempts(Some(client_id), 0, 100)
            .await
            .unwrap();
        if want(&attempts) || std::time::Instant::now() > deadline {
            store.close().await;
            return attempts;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn series(attempt: &FunnelAttempt) -> Vec<String> {
    attempt
        .steps
        .iter()
        .map(|s| match &s.reason {
            Some(r) => format!("{}:{r}", s.step),
            None => s.step.clone(),
        })
        .collect()
}

#[tokio::test]
async fn a_clients_failed_and_successful_attempts_are_traced_with_their_reasons() {
    let clock = ManualClock::new();
    let server = local_on_clock(
        |l| {
            l.access_token_ttl_secs = Some(600);
            l.code_replay_window_secs = Some(10);
        },
        clock.clone(),
    )
    .await;
    let client_id = public_client(&server).await;
    let password = server.admin_password.clone().unwrap();

    // 1. No PKCE at all: refused at /authorize.
    let no_pkce = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("response_type", "code")
        .append_pair("client_id", &client_id)
        .append_pair("redirect_uri", REDIRECT)
        .finish();
    let page = Browser::default()
        .get(&server.url(&format!("/authorize?{no_pkce}")))
        .await;
    assert_eq!(page.status(), StatusCode::BAD_REQUEST);

    // 2. A redirect URI the client never registered.
    let (_, challenge) = pkce();
    let page = Browser::default()
        .get(&authorize_url(
            &server,
            &client_id,
            &challenge,
            "http://127.0.0.1:9/elsewhere",
        ))
        .await;
    assert_eq!(page.status(), StatusCode::BAD_REQUEST);

    // 3. Signed in, then denied on the consent page.
    let (_, challenge) = pkce();
    let mut browser = Browser::default();
    let html = browser
        .get(&authorize_url(&server, &client_id, &challenge, REDIRECT))
        .await
        .text()
        .await
        .unwrap();
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
    let html = browser
        .get(&server.url(&location(&login)))
        .await
        .text()
        .await
        .unwrap();
    let denied = browser
        .post(
            &server.url("/consent"),
            &[
                ("request", &hidden(&html, "request")),
                ("csrf", &hidden(&html, "csrf")),
                ("decision", "deny"),
            ],
        )
        .await;
    assert_eq!(query_of(&location(&denied))["error"], "access_denied");

    // 4. The whole way: code, a call, a refresh; then the code again after
    // its replay window (revokes), and the first access token after expiry.
    let (verifier, challenge) = pkce();
    let back = sign_in_and_approve(
        &server,
        &mut Browser::default(),
        &authorize_url(&server, &client_id, &challenge, REDIRECT),
        ("admin", &password),
        &[],
    )
    .await;
    let code = query_of(&back)["code"].clone();
    let (status, tokens) = exchange_code(&server, &client_id, &code, &verifier).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    server.set_token(&access);
    let (status, _) = server
        .stateless_call(1, "tools/list", None, json!({}))
        .await;
    assert_eq!(status, 200);
    // A second call with the same token is not a new step.
    server
        .stateless_call(2, "tools/list", None, json!({}))
        .await;
    let (status, refreshed) = refresh_grant(
        &server,
        &client_id,
        tokens["refresh_token"].as_str().unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");
    clock.advance(Duration::from_secs(11));
    let (status, body) = exchange_code(&server, &client_id, &code, &verifier).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_grant");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .starts_with("the code was already used: start the authorization again"),
        "{body}"
    );
    clock.advance(Duration::from_secs(600));
    let r = server
        .mcp_post()
        .json(&json!({"jsonrpc":"2.0","id":3,"method":"tools/list"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(
        r.headers()[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .contains("/errors#token-expired")
    );

    let attempts = attempts_until(&server, &client_id, |a| {
        a.iter()
            .any(|a| a.stopped.as_deref() == Some("token_expired"))
    })
    .await;
    let mut all: Vec<Vec<String>> = attempts.iter().map(series).collect();
    all.sort();
    let expected: Vec<Vec<String>> = {
        let mut e = vec![
            vec!["authorize:pkce_missing".to_owned()],
            vec!["authorize:redirect_uri_mismatch".to_owned()],
            vec![
                "authorize".to_owned(),
                "sign_in".to_owned(),
                "consent:consent_denied".to_owned(),
            ],
            vec![
                "authorize".to_owned(),
                "sign_in".to_owned(),
                "consent".to_owned(),
                "code_redeemed".to_owned(),
                "mcp_call".to_owned(),
                "refresh".to_owned(),
                "code_redeemed:code_reused".to_owned(),
                "mcp_call:token_expired".to_owned(),
            ],
            vec!["registered".to_owned()],
        ];
        e.sort();
        e
    };
    assert_eq!(all, expected, "{attempts:#?}");
    let full = attempts.iter().find(|a| a.steps.len() == 8).unwrap();
    assert!(full.user_id.is_some());
    // Times are the server clock's.
    let last = full.steps.last().unwrap().at;
    assert!(last >= clock.now() - 1 && last <= clock.now(), "{full:?}");

    // The counters, by client, step and reason.
    let metrics = server.get_text("/metrics").await;
    for series in [
        format!(
            r#"mcpgate_auth_funnel_total{{client="{client_id}",step="authorize",reason="pkce_missing"}} 1"#
        ),
        format!(
            r#"mcpgate_auth_funnel_total{{client="{client_id}",step="consent",reason="consent_denied"}} 1"#
        ),
        format!(
            r#"mcpgate_auth_funnel_total{{client="{client_id}",step="code_redeemed",reason="code_reused"}} 1"#
        ),
        format!(
            r#"mcpgate_auth_funnel_total{{client="{client_id}",step="code_redeemed",reason="ok"}} 1"#
        ),
        format!(
            r#"mcpgate_auth_funnel_total{{client="{client_id}",step="mcp_call",reason="token_expired"}} 1"#
        ),
        format!(
            r#"mcpgate_auth_funnel_total{{client="{client_id}",step="refresh",reason="ok"}} 1"#
        ),
    ] {
        assert!(
            metrics.contains(&series),
            "{series} missing from\n{metrics}"
        );
    }

    // `mcpgate funnel` reads the same store.
    let (ok, out, err) = admin_cli(
        &server,
        &["funnel", "--client", &client_id, "--since", "2h", "--json"],
    );
    assert!(ok, "{err}");
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["attempts"].as_array().unwrap().len(), 5, "{shown}");
    let (ok, out, err) = admin_cli(&server, &["funnel", "--since", "2h"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("authorize > sign_in > consent(consent_denied)  stopped: consent_denied"),
        "{out}"
    );
}

#[tokio::test]
async fn expired_and_foreign_audience_tokens_are_traced_for_their_client() {
    let idp = FakeIdp::start().await;
    let issuer = idp.issuer.clone();
    let server = TestServer::start_with(|raw| {
        raw.auth.mode = Some("resource".into());
        raw.auth.resource = Some(mcpgate::config::RawResourceAuth {
            issuer: Some(issuer),
            ..mcpgate::config::RawResourceAuth::default()
        });
    })
    .await;
    idp.set_resource(&server.url("/mcp"));
    let good = idp.claims("alice", "calc");
    let mut wrong_aud = good.clone();
    wrong_aud["aud"] = json!("https://other.example/mcp");
    let mut expired = good.clone();
    expired["exp"] = json!(now() - 120);
    for (token, reason) in [
        (idp.sign(&wrong_aud), "audience_mismatch"),
        (idp.sign(&expired), "token_expired"),
    ] {
        server.set_token(&token);
        let r = server
            .mcp_post()
            .json(&json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "invalid_token");
        assert_eq!(
            body["error_uri"],
            server.url(&format!("/errors#{}", reason.replace('_', "-")))
        );
    }
    let attempts = attempts_until(&server, "test-client", |a| {
        a.len() == 1 && a[0].steps.len() == 2
    })
    .await;
    assert_eq!(
        series(&attempts[0]),
        ["mcp_call:audience_mismatch", "mcp_call:token_expired"]
    );
    assert_eq!(attempts[0].user_id.as_deref(), Some("alice"));
    let metrics = server.get_text("/metrics").await;
    assert!(metrics.contains(
        r#"mcpgate_auth_funnel_total{client="test-client",step="mcp_call",reason="audience_mismatch"} 1"#
    ));
    // A token whose signature did not verify names nobody: counted, not stored.
    server.set_token("a.b.c");
    server
        .mcp_post()
        .json(&json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}))
        .send()
        .await
        .unwrap();
    let metrics = server.get_text("/metrics").await;
    assert!(metrics.contains(
        r#"mcpgate_auth_funnel_total{client="other",step="mcp_call",reason="token_invalid"} 1"#
    ));
}

#[tokio::test]
async fn audit_lines_trace_the_flow_and_carry_no_secret() {
    use mcpgate::telemetry::{
        audit::{AuditLayer, AuditSink},
        settings::AuditTarget,
    };
    use tracing_subscriber::prelude::*;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let sink = AuditSink::open(&AuditTarget::File(path.clone()))
        .unwrap()
        .unwrap();
    // The test's runtime runs the server on this thread: its events come here.
    let _audit = tracing::subscriber::set_default(
        tracing_subscriber::registry().with(AuditLayer::new(sink)),
    );
    let server = local_on_clock(|_| {}, ManualClock::new()).await;
    let client_id = public_client(&server).await;
    let password = server.admin_password.clone().unwrap();
    // A failed sign-in first (what was typed must not appear), then the flow.
    let wrong = "Wrong-Password-0f9e8d7c";
    let (verifier, challenge) = pkce();
    let mut browser = Browser::default();
    let html = browser
        .get(&authorize_url(&server, &client_id, &challenge, REDIRECT))
        .await
        .text()
        .await
        .unwrap();
    let failed = browser
        .post(
            &server.url("/login"),
            &[
                ("request", &hidden(&html, "request")),
                ("csrf", &hidden(&html, "csrf")),
                ("username", "admin"),
                ("password", wrong),
            ],
        )
        .await;
    assert_eq!(failed.status(), StatusCode::UNAUTHORIZED);
    let back = sign_in_and_approve(
        &server,
        &mut Browser::default(),
        &authorize_url(&server, &client_id, &challenge, REDIRECT),
        ("admin", &password),
        &[],
    )
    .await;
    let code = query_of(&back)["code"].clone();
    let (_, tokens) = exchange_code(&server, &client_id, &code, &verifier).await;
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    server.set_token(&access);
    let (status, _) = server
        .stateless_call(
            1,
            "tools/call",
            Some("add"),
            json!({"name": "add", "arguments": {"a": 1, "b": 2}}),
        )
        .await;
    assert_eq!(status, 200);
    let (_, refreshed) = refresh_grant(&server, &client_id, &refresh).await;
    server.set_token("not.a.token");
    server
        .mcp_post()
        .json(&json!({"jsonrpc":"2.0","id":2,"method":"tools/list"}))
        .send()
        .await
        .unwrap();

    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let has = |event: &str, key: &str, value: &str| {
        lines.iter().any(|l| l["event"] == event && l[key] == value)
    };
    assert!(has("auth step", "reason", "sign_in_failed"), "{text}");
    assert!(has("auth step", "step", "code_redeemed"), "{text}");
    assert!(has("auth step", "step", "refresh"), "{text}");
    assert!(has("tool call", "tool", "add"), "{text}");
    assert!(
        has("authentication failed", "reason", "token_invalid"),
        "{text}"
    );
    let call = lines.iter().find(|l| l["event"] == "tool call").unwrap();
    assert_eq!(call["client"], client_id.as_str());
    assert!(
        call["latency_ms"].is_number() && call["request_id"].is_string(),
        "{call}"
    );
    for secret in [
        password.as_str(),
        wrong,
        access.as_str(),
        refresh.as_str(),
        refreshed["access_token"].as_str().unwrap(),
        refreshed["refresh_token"].as_str().unwrap(),
        code.as_str(),
        verifier.as_str(),
        challenge.as_str(),
    ] {
        assert!(
            !text.contains(secret),
            "a secret is in the audit file:\n{text}"
        );
    }
}

#[tokio::test]
async fn a_remembered_consent_is_the_attempts_consent_step() {
    let server = local_on_clock(|_| {}, ManualClock::new()).await;
    let client_id = public_client(&server).await;
    let password = server.admin_password.clone().unwrap();
    let mut browser = Browser::default();
    let (_, challenge) = pkce();
    sign_in_and_approve(
        &server,
        &mut browser,
        &authorize_url(&server, &client_id, &challenge, REDIRECT),
        ("admin", &password),
        &[("remember", "1")],
    )
    .await;
    // The same browser again: signed in, consent remembered: no page at all.
    let (verifier, challenge) = pkce();
    let back = browser
        .get(&authorize_url(&server, &client_id, &challenge, REDIRECT))
        .await;
    assert!(location(&back).starts_with(REDIRECT), "{}", location(&back));
    let code = query_of(&location(&back))["code"].clone();
    let (status, _) = exchange_code(&server, &client_id, &code, &verifier).await;
    assert_eq!(status, StatusCode::OK);
    let attempts = attempts_until(&server, &client_id, |a| {
        a.iter()
            .any(|a| series(a).contains(&"code_redeemed".to_owned()))
    })
    .await;
    let again = attempts
        .iter()
        .find(|a| series(a).contains(&"code_redeemed".to_owned()))
        .unwrap();
    assert_eq!(series(again), ["authorize", "consent", "code_redeemed"]);
}

#[tokio::test]
async fn proxy_mode_traces_the_upstream_callback_with_the_idps_error() {
    use crate::proxy_auth::{consent_and_go_upstream, proxy, sign_in};
    let idp = FakeIdp::start().await;
    let server = proxy(&idp, |_| {}).await;
    // Declined at the identity provider.
    let client_id = public_client(&server).await;
    let (_, challenge) = pkce();
    let mut browser = Browser::default();
    let upstream =
        consent_and_go_upstream(&server, &idp, &mut browser, &client_id, &challenge, false).await;
    let r = browser
        .get(&server.url(&format!(
            "/callback?error=access_denied&state={}",
            upstream.state()
        )))
        .await;
    assert_eq!(query_of(&location(&r))["error"], "access_denied");
    let attempts = attempts_until(&server, &client_id, |a| {
        a.iter().any(|a| a.stopped.is_some())
    })
    .await;
    let declined = attempts.iter().find(|a| a.stopped.is_some()).unwrap();
    assert_eq!(
        series(declined),
        [
            "authorize",
            "consent",
            "upstream_callback:idp_error:access_denied"
        ]
    );
    // The whole way: the callback is a step of the attempt, with its user.
    let (_, good) = sign_in(&server, &idp, &mut Browser::default(), "alice", 3600).await;
    let attempts = attempts_until(&server, &good, |a| {
        a.iter()
            .any(|a| series(a).contains(&"code_redeemed".to_owned()))
    })
    .await;
    let done = attempts
        .iter()
        .find(|a| series(a).contains(&"code_redeemed".to_owned()))
        .unwrap();
    assert_eq!(
        series(done),
        ["authorize", "consent", "upstream_callback", "code_redeemed"]
    );
    assert!(
        done.user_id
            .as_deref()
            .is_some_and(|u| u.starts_with("idp_"))
    );
    let metrics = server.get_text("/metrics").await;
    assert!(metrics.contains(&format!(
        r#"mcpgate_auth_funnel_total{{client="{client_id}",step="upstream_callback",reason="idp_error"}} 1"#
    )));
}

/// `/metrics` of `server` once it shows `series` (the writer counts a
/// token's first call when it has stored it, just after the row).
pub async fn metrics_until(server: &TestServer, series: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = server.get_text("/metrics").await;
        if metrics.contains(series) || std::time::Instant::now() > deadline {
            return metrics;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A token's first MCP call is one `mcp_call` row and one count, however
/// many replicas serve its first calls: two app instances on one store
/// (SQLite file, and PostgreSQL when available) each see the token for the
/// first time; only the first replica's row is stored and counted.
#[tokio::test]
async fn a_tokens_first_calls_on_two_replicas_are_one_mcp_call_row() {
    const PUBLIC_URL: &str = "http://127.0.0.1:1";
    const CALLED: &str =
        r#"mcpgate_auth_funnel_total{client="test-client",step="mcp_call",reason="ok"} 1"#;
    let idp = FakeIdp::start().await;
    idp.set_resource(&format!("{PUBLIC_URL}/mcp"));
    let dir = tempfile::tempdir().unwrap();
    let mut stores = vec![sqlite_url(dir.path())];
    stores.extend(crate::common::fresh_postgres_database("funnel_first_call").await);
    for url in stores {
        let replica = || {
            let (url, issuer) = (url.clone(), idp.issuer.clone());
            TestServer::start_with(move |raw| {
                raw.store.url = Some(url);
                raw.public_url = Some(PUBLIC_URL.to_owned());
                raw.auth.mode = Some("resource".into());
                raw.auth.resource = Some(mcpgate::config::RawResourceAuth {
                    issuer: Some(issuer),
                    ..mcpgate::config::RawResourceAuth::default()
                });
            })
        };
        let (mut a, mut b) = (replica().await, replica().await);
        let token = idp.token("alice", "calc");
        async fn call(server: &TestServer, token: &str) -> u16 {
            server.set_token(token);
            server
                .stateless_call(1, "tools/list", None, json!({}))
                .await
                .0
        }
        assert_eq!(call(&a, &token).await, 200, "{url}");
        assert_eq!(call(&a, &token).await, 200, "{url}");
        let metrics = metrics_until(&a, CALLED).await;
        assert!(metrics.contains(CALLED), "{url}: {metrics}");
        // Replica b has never seen the token: its first call there.
        assert_eq!(call(&b, &token).await, 200, "{url}");
        assert_eq!(call(&b, &token).await, 200, "{url}");
        // A marker queued after it on b: once stored, b's writer is past
        // the first call's row (and counted it if it stored it).
        let mut expired = idp.claims("alice", "calc");
        expired["exp"] = json!(now() - 120);
        b.set_token(&idp.sign(&expired));
        b.stateless_call(2, "tools/list", None, json!({})).await;
        let store = Store::connect(&url, 1).await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !store
            .funnel_attempts(Some("test-client"), 0, 10)
            .await
            .unwrap()
            .iter()
            .any(|a| a.stopped.as_deref() == Some("token_expired"))
        {
            assert!(std::time::Instant::now() < deadline, "{url}: no marker row");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let metrics = b.get_text("/metrics").await;
        assert!(
            !metrics.contains(r#"step="mcp_call",reason="ok""#),
            "{url}: replica b counted a call replica a had counted:\n{metrics}"
        );
        for server in [&mut a, &mut b] {
            server.signal_shutdown();
            if let Some(task) = server.task.take() {
                task.await.unwrap().unwrap();
            }
        }
        let attempts = store
            .funnel_attempts(Some("test-client"), 0, 10)
            .await
            .unwrap();
        let steps: Vec<String> = attempts.iter().flat_map(series).collect();
        assert_eq!(
            steps,
            ["mcp_call", "mcp_call:token_expired"],
            "{url}: {attempts:#?}"
        );
        store.close().await;
    }
}
