//! Enterprise-managed authorization (ID-JAG): a configured confidential
//! client exchanges an identity assertion from a trusted enterprise IdP
//! for an access token (`grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`).
//! Each refusal below fails if its check is removed: every forged
//! assertion is valid except for the one thing it gets wrong, and the
//! answer must name that thing.

use std::{sync::Arc, time::Duration};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use mcpgate::{
    clock::ManualClock,
    config::RawLocalAuth,
    oauth::{configured_clients::RawConfiguredClient, enterprise::RawEnterpriseIdp},
};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    common::TestServer,
    fake_idp::{FakeIdp, SigningKey, new_es256_key},
    local_auth::local_on_clock,
    oauth_browser::{public_client, token},
};

const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const ISSUER: &str = "https://idp.acme.example";
const SECRET: &str = "agent-secret-0123456789-abcdefghijklmnop";
const OTHER_SECRET: &str = "other-secret-0123456789-abcdefghijklmnop";

struct Enterprise {
    server: TestServer,
    clock: Arc<ManualClock>,
    key: SigningKey,
}

fn client(id: &str, secret: &str) -> RawConfiguredClient {
    RawConfiguredClient {
        client_id: id.to_owned(),
        client_secret: Some(secret.to_owned()),
        grant_types: Some(vec![JWT_BEARER.to_owned()]),
        ..RawConfiguredClient::default()
    }
}

/// Local mode with two configured jwt-bearer clients (`agent`, allowed for
/// the IdP, and `other-agent`, not) and one enterprise IdP, `edit`ed.
async fn enterprise(edit: impl FnOnce(&mut RawLocalAuth)) -> Enterprise {
    let key = new_es256_key("acme-1");
    let clock = ManualClock::new();
    let jwks = json!({ "keys": [key.jwk.clone()] }).to_string();
    let server = local_on_clock(
        |local| {
            local.extra_scopes = Some(vec!["notes.read".to_owned(), "notes.write".to_owned()]);
            local.clients = vec![
                RawConfiguredClient {
                    access_token_ttl_secs: Some(600),
                    ..client("agent", SECRET)
                },
                client("other-agent", OTHER_SECRET),
            ];
            local.enterprise_idps = vec![RawEnterpriseIdp {
                issuer: ISSUER.to_owned(),
                jwks: Some(jwks),
                allowed_clients: vec!["agent".to_owned()],
                ..RawEnterpriseIdp::default()
            }];
            edit(local);
        },
        clock.clone(),
    )
    .await;
    Enterprise { server, clock, key }
}

fn now(clock: &ManualClock) -> i64 {
    use mcpgate::clock::Clock;
    clock.now()
}

impl Enterprise {
    /// A valid ID-JAG's claims for `agent`, at the server's time.
    fn claims(&self) -> Value {
        let now = now(&self.clock);
        json!({
            "iss": ISSUER,
            "sub": "U019488227",
            "email": "ada@acme.example",
            "name": "Ada Lovelace",
            "aud": self.server.base,
            "resource": self.server.url("/mcp"),
            "client_id": "agent",
            "jti": uuid::Uuid::new_v4().to_string(),
            "iat": now,
            "exp": now + 300,
            "scope": "calc notes.read",
        })
    }

    fn sign(&self, claims: &Value) -> String {
        sign_with(&self.key, Some("oauth-id-jag+jwt"), claims)
    }

    /// `claims()` with `changes` applied (`null` removes a claim).
    fn assertion_with(&self, changes: Value) -> String {
        let mut claims = self.claims();
        for (k, v) in changes.as_object().cloned().unwrap_or_default() {
            if v.is_null() {
                claims.as_object_mut().unwrap().remove(&k);
            } else {
                claims[k] = v;
            }
        }
        self.sign(&claims)
    }

    async fn exchange(&self, assertion: &str, extra: &[(&str, &str)]) -> (StatusCode, Value) {
        self.exchange_as("agent", SECRET, assertion, extra).await
    }

    async fn exchange_as(
        &self,
        client_id: &str,
        secret: &str,
        assertion: &str,
        extra: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let mut form = vec![
            ("grant_type", JWT_BEARER),
            ("assertion", assertion),
            ("client_id", client_id),
            ("client_secret", secret),
        ];
        form.extend_from_slice(extra);
        token(&self.server, &form).await
    }
}

fn sign_with(key: &SigningKey, typ: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(key.kid.clone());
    header.typ = typ.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &key.encoding).unwrap()
}

fn payload(jwt: &str) -> Value {
    let part = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

#[track_caller]
fn assert_refused(answer: &(StatusCode, Value), code: &str, cause: &str) {
    let (status, body) = answer;
    assert_eq!(*status, StatusCode::BAD_REQUEST, "{cause}: {body}");
    assert_eq!(body["error"], code, "{cause}: {body}");
    let description = body["error_description"].as_str().unwrap_or_default();
    assert!(description.contains(cause), "{cause}: {body}");
}

#[tokio::test]
async fn an_id_jag_from_a_trusted_idp_gets_a_token_for_its_user_that_works_on_mcp() {
    let e = enterprise(|_| {}).await;
    let meta: Value = e
        .server
        .get_json("/.well-known/oauth-authorization-server")
        .await;
    assert!(
        meta["grant_types_supported"]
            .as_array()
            .unwrap()
            .contains(&json!(JWT_BEARER)),
        "{meta}"
    );
    assert_eq!(
        meta["authorization_grant_profiles_supported"],
        json!(["urn:ietf:params:oauth:grant-profile:id-jag"])
    );

    let assertion = e.sign(&e.claims());
    let resource = e.server.url("/mcp");
    let (status, body) = e
        .exchange(&assertion, &[("resource", resource.as_str())])
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], "calc notes.read");
    assert_eq!(body["expires_in"], 600, "the client's own lifetime");
    assert!(
        body.get("refresh_token").is_none(),
        "no refresh token: renewal goes back to the IdP: {body}"
    );
    let access = body["access_token"].as_str().unwrap();
    let claims = payload(access);
    assert_eq!(claims["aud"], resource);
    assert_eq!(claims["client_id"], "agent");
    assert_eq!(claims["email"], "ada@acme.example");
    assert_eq!(claims["name"], "Ada Lovelace");
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        600
    );
    let sub = claims["sub"].as_str().unwrap().to_owned();
    assert!(sub.starts_with("ent_"), "{sub}");

    e.server.set_token(access);
    let (status, reply) = e
        .server
        .stateless_call(
            1,
            "tools/call",
            Some("add"),
            json!({"name": "add", "arguments": {"a": 2, "b": 3}}),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    assert!(reply["result"].to_string().contains('5'), "{reply}");

    // The same enterprise user again (a fresh assertion): the same subject.
    let (status, again) = e.exchange(&e.sign(&e.claims()), &[]).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(payload(again["access_token"].as_str().unwrap())["sub"], sub);
    // Another user of the same IdP: another subject.
    let (status, other) = e
        .exchange(&e.assertion_with(json!({"sub": "U2", "email": null})), &[])
        .await;
    assert_eq!(status, StatusCode::OK, "{other}");
    let other = payload(other["access_token"].as_str().unwrap());
    assert_ne!(other["sub"], sub);
    assert!(other.get("email").is_none(), "{other}");
}

#[tokio::test]
async fn without_an_enterprise_idp_the_grant_is_neither_advertised_nor_accepted() {
    let server = local_on_clock(|_| {}, mcpgate::clock::system()).await;
    let meta: Value = server
        .get_json("/.well-known/oauth-authorization-server")
        .await;
    assert!(
        !meta["grant_types_supported"]
            .as_array()
            .unwrap()
            .contains(&json!(JWT_BEARER)),
        "{meta}"
    );
    assert!(
        meta.get("authorization_grant_profiles_supported").is_none(),
        "{meta}"
    );
    let answer = token(
        &server,
        &[("grant_type", JWT_BEARER), ("assertion", "x.y.z")],
    )
    .await;
    assert_refused(
        &answer,
        "unsupported_grant_type",
        "no enterprise identity provider",
    );
}

#[tokio::test]
async fn each_forged_or_misdirected_assertion_is_refused_naming_its_cause() {
    let e = enterprise(|_| {}).await;
    let now = now(&e.clock);
    let stranger = new_es256_key("acme-1");
    let mcp = e.server.url("/mcp");
    let cases: Vec<(&str, String)> = vec![
        (
            "its issuer is not a trusted enterprise identity provider",
            e.assertion_with(json!({"iss": "https://evil.example"})),
        ),
        (
            // The trusted issuer's name on a stranger's key (same kid).
            "its signature does not verify",
            sign_with(&stranger, Some("oauth-id-jag+jwt"), &e.claims()),
        ),
        (
            "its aud is not this authorization server",
            e.assertion_with(json!({"aud": "https://other-as.example"})),
        ),
        (
            "its aud is not this authorization server",
            e.assertion_with(json!({"aud": mcp})),
        ),
        (
            "its resource is not this server's /mcp",
            e.assertion_with(json!({"resource": "https://other-mcp.example/mcp"})),
        ),
        (
            "it names no resource",
            e.assertion_with(json!({"resource": null})),
        ),
        (
            "its typ must be oauth-id-jag+jwt",
            sign_with(&e.key, None, &e.claims()),
        ),
        (
            "its typ must be oauth-id-jag+jwt",
            sign_with(&e.key, Some("JWT"), &e.claims()),
        ),
        (
            "it was issued to another client",
            e.assertion_with(json!({"client_id": "other-agent"})),
        ),
        ("exp is missing", e.assertion_with(json!({"exp": null}))),
        ("iat is missing", e.assertion_with(json!({"iat": null}))),
        (
            "it lives longer than 300 seconds",
            e.assertion_with(json!({"exp": now + 3600})),
        ),
        (
            "it was issued in the future",
            e.assertion_with(json!({"iat": now + 600, "exp": now + 700})),
        ),
        ("jti is missing", e.assertion_with(json!({"jti": null}))),
        (
            "refused: sub is missing",
            e.assertion_with(json!({"sub": null})),
        ),
        (
            "it is not a JWT signed with a known algorithm",
            unsigned(&e.claims()),
        ),
        (
            "algorithm HS256 is not allowed",
            jsonwebtoken::encode(
                &Header {
                    typ: Some("oauth-id-jag+jwt".to_owned()),
                    kid: Some("acme-1".to_owned()),
                    ..Header::new(Algorithm::HS256)
                },
                &e.claims(),
                &EncodingKey::from_secret(b"a shared secret anyone could hold"),
            )
            .unwrap(),
        ),
    ];
    for (cause, assertion) in &cases {
        assert_refused(&e.exchange(assertion, &[]).await, "invalid_grant", cause);
    }
    // None of them spent anything: the genuine assertion still works.
    let (status, body) = e.exchange(&e.sign(&e.claims()), &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// `alg: none`, no signature.
fn unsigned(claims: &Value) -> String {
    let header = json!({"alg": "none", "typ": "oauth-id-jag+jwt"});
    format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

#[tokio::test]
async fn an_assertion_is_single_use_and_expires_by_the_server_clock() {
    let e = enterprise(|_| {}).await;
    let assertion = e.sign(&e.claims());
    let (status, body) = e.exchange(&assertion, &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_refused(
        &e.exchange(&assertion, &[]).await,
        "invalid_grant",
        "it was already used",
    );

    let short = e.assertion_with(json!({"exp": now(&e.clock) + 60}));
    e.clock.advance(Duration::from_secs(61));
    assert_refused(
        &e.exchange(&short, &[]).await,
        "invalid_grant",
        "it has expired",
    );
}

#[tokio::test]
async fn scopes_are_the_intersection_and_escalation_is_refused() {
    let e = enterprise(|_| {}).await;
    // Narrower than the assertion: that much.
    let (status, body) = e
        .exchange(&e.sign(&e.claims()), &[("scope", "notes.read")])
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["scope"], "notes.read");
    // More than the assertion grants: refused, and nothing spent.
    let escalating = e.assertion_with(json!({"scope": "notes.read"}));
    assert_refused(
        &e.exchange(&escalating, &[("scope", "notes.read notes.write")])
            .await,
        "invalid_scope",
        "scope notes.write is not granted by the identity assertion",
    );
    // Scopes this server does not know are dropped from the assertion's.
    let (status, body) = e
        .exchange(
            &e.assertion_with(json!({"scope": "notes.read payroll.admin"})),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["scope"], "notes.read");
}

#[tokio::test]
async fn a_resource_parameter_must_be_the_assertions() {
    let e = enterprise(|_| {}).await;
    assert_refused(
        &e.exchange(
            &e.sign(&e.claims()),
            &[("resource", "https://other-mcp.example/mcp")],
        )
        .await,
        "invalid_target",
        "resource differs from the identity assertion's",
    );
}

#[tokio::test]
async fn only_the_allowed_authenticated_client_may_present_assertions() {
    let e = enterprise(|_| {}).await;
    // A wrong secret: 401 before the assertion is looked at.
    let (status, body) = e
        .exchange_as("agent", OTHER_SECRET, &e.sign(&e.claims()), &[])
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"], "invalid_client");
    // A configured jwt-bearer client the IdP's entry does not list, with
    // an assertion issued to it.
    let theirs = e.assertion_with(json!({"client_id": "other-agent"}));
    assert_refused(
        &e.exchange_as("other-agent", OTHER_SECRET, &theirs, &[])
            .await,
        "invalid_grant",
        "this client may not present this issuer's assertions",
    );
    // A registered (DCR) client may not use the grant at all.
    let registered = public_client(&e.server).await;
    let answer = token(
        &e.server,
        &[
            ("grant_type", JWT_BEARER),
            (
                "assertion",
                &e.assertion_with(json!({"client_id": registered})),
            ),
            ("client_id", &registered),
        ],
    )
    .await;
    assert_refused(&answer, "unauthorized_client", "may not use");
}

#[tokio::test]
async fn keys_fetched_from_the_idp_are_refetched_once_for_an_unknown_kid() {
    let idp = FakeIdp::start().await;
    let key = new_es256_key("unused");
    let clock = ManualClock::new();
    let issuer = idp.issuer.clone();
    let server = local_on_clock(
        |local| {
            local.clients = vec![client("agent", SECRET)];
            local.enterprise_idps = vec![RawEnterpriseIdp {
                issuer: issuer.clone(),
                jwks_uri: Some(format!("{issuer}/jwks")),
                allowed_clients: vec!["agent".to_owned()],
                ..RawEnterpriseIdp::default()
            }];
        },
        clock.clone(),
    )
    .await;
    let e = Enterprise { server, clock, key };
    let signed_by_idp = |e: &Enterprise| {
        let mut claims = e.claims();
        claims["iss"] = json!(idp.issuer);
        claims["scope"] = json!(null);
        let keys = idp.keys.lock().unwrap();
        let key = keys.last().unwrap();
        sign_with(key, Some("oauth-id-jag+jwt"), &claims)
    };
    let fetches = || idp.jwks_fetches.load(std::sync::atomic::Ordering::SeqCst);

    let (status, body) = e.exchange(&signed_by_idp(&e), &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(fetches(), 1);

    // The IdP rotates. An unknown kid refetches, but not more often than
    // the minimum interval: right away, the new key is not seen yet.
    idp.rotate("acme-2");
    assert_refused(
        &e.exchange(&signed_by_idp(&e), &[]).await,
        "invalid_grant",
        "no key of the issuer matches",
    );
    assert_eq!(fetches(), 1);
    e.clock.advance(Duration::from_secs(31));
    let (status, body) = e.exchange(&signed_by_idp(&e), &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(fetches(), 2, "one refetch for the new kid");
    let (status, body) = e.exchange(&signed_by_idp(&e), &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(fetches(), 2, "known kids are served from the cache");
}

/// The operator's IdP being out of reach is not the client's fault: 503
/// `temporarily_unavailable` (the client retries), not `invalid_grant`.
#[tokio::test]
async fn an_unreachable_idp_key_set_is_temporarily_unavailable() {
    // A port that was free a moment ago: nothing answers there.
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let e = enterprise(|local| {
        local.enterprise_idps[0].jwks = None;
        local.enterprise_idps[0].jwks_uri = Some(format!("http://{dead}/jwks"));
    })
    .await;
    let (status, body) = e.exchange(&e.sign(&e.claims()), &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"], "temporarily_unavailable", "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap_or_default()
            .contains("keys could not be fetched"),
        "{body}"
    );
}

/// Issue 18 item 4 for enterprise-managed authorization: each ID-JAG
/// exchange is one funnel attempt (step `identity_assertion`), passed or
/// stopped with its precise reason; the token's first MCP call joins it.
#[tokio::test]
async fn each_assertion_exchange_is_a_funnel_attempt_with_its_reason() {
    use crate::auth_funnel::{attempts_until, series};
    let e = enterprise(|_| {}).await;
    let assertion = e.sign(&e.claims());
    let (status, body) = e.exchange(&assertion, &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    e.server.set_token(body["access_token"].as_str().unwrap());
    let (status, _) = e
        .server
        .stateless_call(1, "tools/list", None, json!({}))
        .await;
    assert_eq!(status, 200);
    let refusals = [
        (
            e.exchange(&assertion, &[]).await,
            "identity-assertion-replayed",
        ),
        (
            e.exchange(
                &e.assertion_with(json!({"aud": "https://elsewhere.example"})),
                &[],
            )
            .await,
            "identity-assertion-invalid",
        ),
        (
            e.exchange(
                &e.sign(&e.claims()),
                &[("resource", "https://elsewhere.example/mcp")],
            )
            .await,
            "invalid-target",
        ),
        (
            e.exchange_as("agent", OTHER_SECRET, &e.sign(&e.claims()), &[])
                .await,
            "invalid-client",
        ),
    ];
    for ((status, body), anchor) in &refusals {
        assert!(status.is_client_error(), "{anchor}: {body}");
        assert_eq!(
            body["error_uri"],
            e.server.url(&format!("/errors#{anchor}")),
            "{body}"
        );
    }
    let attempts = attempts_until(&e.server, "agent", |a| a.len() == 5).await;
    let mut all: Vec<Vec<String>> = attempts.iter().map(series).collect();
    all.sort();
    assert_eq!(
        all,
        [
            vec!["identity_assertion", "mcp_call"],
            vec!["identity_assertion:identity_assertion_invalid"],
            vec!["identity_assertion:identity_assertion_replayed"],
            vec!["identity_assertion:invalid_client"],
            vec!["identity_assertion:invalid_target"],
        ],
        "{attempts:#?}"
    );
    let called = r#"mcpgate_auth_funnel_total{client="agent",step="mcp_call",reason="ok"} 1"#;
    let metrics = crate::auth_funnel::metrics_until(&e.server, called).await;
    for series in [
        r#"mcpgate_auth_funnel_total{client="agent",step="identity_assertion",reason="ok"} 1"#,
        r#"mcpgate_auth_funnel_total{client="agent",step="identity_assertion",reason="identity_assertion_replayed"} 1"#,
        called,
    ] {
        assert!(metrics.contains(series), "{series} missing from\n{metrics}");
    }
}
