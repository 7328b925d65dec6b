//! `private_key_jwt` (RFC 7523 §2.2) at the token endpoint: a client whose
//! metadata document (served on loopback, with `allow_loopback_http`) names a
//! `jwks_uri` proves itself with an assertion signed by its key. Each check
//! has a refusal here.
//!
//! The probe is a refresh grant with an unknown refresh token: client
//! authentication comes first, so an accepted assertion answers 400
//! `invalid_grant` and a refused one 401 `invalid_client`.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicUsize, Ordering},
};
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header, jwk::Jwk};
use mcpgate::clock::ManualClock;
use mcpgate::oauth::settings::RawLocalAuth;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::TestServer;

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// A client's signing key and its public JWK.
struct ClientKey {
    key: EncodingKey,
    alg: Algorithm,
    jwk: Value,
}

fn ec_key(kid: &str) -> ClientKey {
    use aws_lc_rs::{
        rand::SystemRandom,
        signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair},
    };
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
            .unwrap();
    let key = EncodingKey::from_ec_der(pkcs8.as_ref());
    let mut jwk =
        serde_json::to_value(Jwk::from_encoding_key(&key, Algorithm::ES256).unwrap()).unwrap();
    jwk["kid"] = json!(kid);
    jwk["use"] = json!("sig");
    ClientKey {
        key,
        alg: Algorithm::ES256,
        jwk,
    }
}

fn rsa_key(kid: &str) -> ClientKey {
    let pem = std::fs::read(format!(
        "{}/tests/it/replays/chatgpt-test-key.pem",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let key = EncodingKey::from_rsa_pem(&pem).unwrap();
    let mut jwk =
        serde_json::to_value(Jwk::from_encoding_key(&key, Algorithm::RS256).unwrap()).unwrap();
    jwk["kid"] = json!(kid);
    jwk["alg"] = json!("RS256");
    ClientKey {
        key,
        alg: Algorithm::RS256,
        jwk,
    }
}

impl ClientKey {
    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = self.jwk["kid"].as_str().map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &self.key).unwrap()
    }
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The client's side: its metadata document and key set on loopback.
struct ClientHost {
    base: String,
    keys: Arc<Mutex<Vec<Value>>>,
    key_fetches: Arc<AtomicUsize>,
}

impl ClientHost {
    async fn start(first: &ClientKey) -> ClientHost {
        use axum::{Json, Router, routing::get};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let keys = Arc::new(Mutex::new(vec![first.jwk.clone()]));
        let key_fetches = Arc::new(AtomicUsize::new(0));
        let document = json!({
            "client_id": format!("{base}/client.json"),
            "client_name": "Assertion Client",
            "redirect_uris": ["https://chatgpt.com/connector_platform_oauth_redirect"],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "private_key_jwt",
            "jwks_uri": format!("{base}/jwks.json"),
        });
        // A document that offers both: public by default, keys when it signs.
        let both = json!({
            "client_id": format!("{base}/both.json"),
            "client_name": "Either Way",
            "redirect_uris": ["https://chatgpt.com/connector_platform_oauth_redirect"],
            "token_endpoint_auth_method": "none",
            "token_endpoint_auth_methods_supported": ["none", "private_key_jwt"],
            "jwks_uri": format!("{base}/jwks.json"),
        });
        let (served_keys, fetches) = (keys.clone(), key_fetches.clone());
        let app = Router::new()
            .route("/client.json", get(move || async move { Json(document) }))
            .route("/both.json", get(move || async move { Json(both) }))
            .route(
                "/jwks.json",
                get(move || async move {
                    fetches.fetch_add(1, Ordering::SeqCst);
                    let keys = served_keys.lock().unwrap().clone();
                    Json(json!({ "keys": keys }))
                }),
            );
        tokio::spawn(async move { axum::serve(listener, app).await });
        ClientHost {
            base,
            keys,
            key_fetches,
        }
    }

    fn client_id(&self) -> String {
        format!("{}/client.json", self.base)
    }

    fn fetches(&self) -> usize {
        self.key_fetches.load(Ordering::SeqCst)
    }
}

struct Fixture {
    server: TestServer,
    clock: Arc<ManualClock>,
    host: ClientHost,
    key: ClientKey,
}

impl Fixture {
    async fn start() -> Fixture {
        let key = ec_key("k1");
        let host = ClientHost::start(&key).await;
        let clock = ManualClock::new();
        let server = TestServer::start_with_clock(
            |raw| {
                raw.auth.mode = Some("local".to_owned());
                let mut local = RawLocalAuth::default();
                local.cimd.allow_loopback_http = Some(true);
                raw.auth.local = Some(local);
            },
            clock.clone(),
        )
        .await;
        Fixture {
            server,
            clock,
            host,
            key,
        }
    }

    fn now(&self) -> i64 {
        use mcpgate::clock::Clock;
        self.clock.now()
    }

    /// Claims a well-behaved client sends: `iss` = `sub` = its id, `aud`
    /// the token endpoint, a minute to live, a fresh `jti`.
    fn claims(&self) -> Value {
        let now = self.now();
        let id = self.host.client_id();
        json!({
            "iss": id, "sub": id, "aud": self.server.url("/token"),
            "iat": now, "exp": now + 60, "jti": uuid::Uuid::new_v4().to_string(),
        })
    }

    /// `/token` with `form` (and a Basic header when given): status and body.
    async fn token(&self, form: &[(&str, String)], basic: Option<&str>) -> (StatusCode, Value) {
        let mut request = self.server.client.post(self.server.url("/token"));
        if let Some(basic) = basic {
            request = request.header("authorization", basic);
        }
        let response = request.form(form).send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// The probe: a refresh grant authenticated by `assertion`.
    async fn probe(&self, assertion: &str) -> (StatusCode, Value) {
        self.token(&self.probe_form(assertion), None).await
    }

    fn probe_form(&self, assertion: &str) -> Vec<(&'static str, String)> {
        vec![
            ("grant_type", "refresh_token".to_owned()),
            ("refresh_token", "not-a-refresh-token".to_owned()),
            ("client_id", self.host.client_id()),
            ("client_assertion_type", ASSERTION_TYPE.to_owned()),
            ("client_assertion", assertion.to_owned()),
        ]
    }
}

fn assert_authenticated((status, body): (StatusCode, Value)) {
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_grant", "{body}");
}

fn assert_refused((status, body): (StatusCode, Value), why: &str) {
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{why}: {body}");
    assert_eq!(body["error"], "invalid_client", "{why}: {body}");
    let description = body["error_description"].as_str().unwrap_or_default();
    assert!(description.contains(why), "{why}: {body}");
}

#[tokio::test]
async fn the_metadata_lists_private_key_jwt_its_algorithms_and_still_none() {
    let f = Fixture::start().await;
    let metadata = f
        .server
        .get_json("/.well-known/oauth-authorization-server")
        .await;
    let methods = metadata["token_endpoint_auth_methods_supported"].to_string();
    for method in ["none", "client_secret_basic", "private_key_jwt"] {
        assert!(methods.contains(method), "{method}: {methods}");
    }
    let algs = metadata["token_endpoint_auth_signing_alg_values_supported"]
        .as_array()
        .unwrap();
    assert!(algs.contains(&json!("RS256")) && algs.contains(&json!("ES256")));
    assert!(!algs.contains(&json!("HS256")) && !algs.contains(&json!("none")));
    assert_eq!(metadata["client_id_metadata_document_supported"], true);
}

#[tokio::test]
async fn an_assertion_authenticates_once_and_its_replay_is_refused() {
    let f = Fixture::start().await;
    let assertion = f.key.sign(&f.claims());
    assert_authenticated(f.probe(&assertion).await);
    assert_refused(f.probe(&assertion).await, "already used");
    // The audience may also be the issuer, with or without a slash, or an array.
    for aud in [
        json!(f.server.url("")),
        json!(f.server.url("/")),
        json!(f.server.url("/token/")),
        json!(["https://elsewhere.example", f.server.url("/token")]),
    ] {
        let mut claims = f.claims();
        claims["aud"] = aud.clone();
        assert_authenticated(f.probe(&f.key.sign(&claims)).await);
    }
    assert_eq!(f.host.fetches(), 1, "the key set is cached");
    // Without client_id the assertion's sub names the client.
    let mut form = f.probe_form(&f.key.sign(&f.claims()));
    form.retain(|(name, _)| *name != "client_id");
    assert_authenticated(f.token(&form, None).await);
}

#[tokio::test]
async fn every_broken_assertion_is_refused_with_its_cause() {
    let f = Fixture::start().await;
    let id = f.host.client_id();
    let now = f.now();
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut claims = f.claims();
        edit(&mut claims);
        claims
    };
    // Another key under the same kid.
    let impostor = ec_key("k1");
    assert_refused(
        f.probe(&impostor.sign(&f.claims())).await,
        "signature does not verify",
    );
    let foreign_aud = with(&|c| c["aud"] = json!("https://other-server.example/token"));
    assert_refused(f.probe(&f.key.sign(&foreign_aud)).await, "aud");
    let mcp_aud = with(&|c| c["aud"] = json!(f.server.url("/mcp")));
    assert_refused(f.probe(&f.key.sign(&mcp_aud)).await, "aud");
    let expired = with(&|c| {
        c["iat"] = json!(now - 300);
        c["exp"] = json!(now - 120);
    });
    assert_refused(f.probe(&f.key.sign(&expired)).await, "expired");
    let no_exp = with(&|c| {
        c.as_object_mut().unwrap().remove("exp");
    });
    assert_refused(f.probe(&f.key.sign(&no_exp)).await, "no exp");
    let long = with(&|c| c["exp"] = json!(now + 3600));
    assert_refused(f.probe(&f.key.sign(&long)).await, "within 10 minutes");
    let future = with(&|c| {
        c["iat"] = json!(now + 300);
        c["exp"] = json!(now + 360);
    });
    assert_refused(f.probe(&f.key.sign(&future)).await, "not valid yet");
    let no_jti = with(&|c| {
        c.as_object_mut().unwrap().remove("jti");
    });
    assert_refused(f.probe(&f.key.sign(&no_jti)).await, "jti");
    let other_iss = with(&|c| c["iss"] = json!("https://attacker.example/client.json"));
    assert_refused(f.probe(&f.key.sign(&other_iss)).await, "iss and sub");
    let other_sub = with(&|c| c["sub"] = json!("someone-else"));
    assert_refused(f.probe(&f.key.sign(&other_sub)).await, "iss and sub");
    // alg none: a header and claims with an empty signature.
    let unsigned = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT","kid":"k1"}"#),
        b64(f.claims().to_string().as_bytes())
    );
    assert_refused(f.probe(&unsigned).await, "alg must be one of");
    // HS256 keyed with the client's public key set (the classic confusion).
    let public = json!({ "keys": [f.key.jwk.clone()] }).to_string();
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("k1".to_owned());
    let hmac = jsonwebtoken::encode(
        &header,
        &f.claims(),
        &EncodingKey::from_secret(public.as_bytes()),
    )
    .unwrap();
    assert_refused(f.probe(&hmac).await, "alg must be one of");
    assert_refused(f.probe("not.a.jwt").await, "well-formed");
    // The wrong assertion type.
    let mut form = f.probe_form(&f.key.sign(&f.claims()));
    form[3].1 = "urn:ietf:params:oauth:client-assertion-type:saml2-bearer".to_owned();
    assert_refused(f.token(&form, None).await, "client_assertion_type");
    // A private_key_jwt client presenting nothing, or a secret.
    let bare = vec![
        ("grant_type", "refresh_token".to_owned()),
        ("refresh_token", "x".to_owned()),
        ("client_id", id.clone()),
    ];
    let (status, body) = f.token(&bare, None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client"))
    );
    let mut secret = bare.clone();
    secret.push(("client_secret", "guess".to_owned()));
    let (status, body) = f.token(&secret, None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client"))
    );
}

#[tokio::test]
async fn one_authentication_method_per_request() {
    let f = Fixture::start().await;
    let assertion = f.key.sign(&f.claims());
    let mut with_secret = f.probe_form(&assertion);
    with_secret.push(("client_secret", "also-a-secret".to_owned()));
    let (status, body) = f.token(&with_secret, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_request");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("one client authentication method")
    );
    let basic = {
        use base64::Engine;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("id:secret")
        )
    };
    let (status, body) = f.token(&f.probe_form(&assertion), Some(&basic)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_request");
    // Neither attempt spent the assertion: it still authenticates once.
    assert_authenticated(f.probe(&assertion).await);
}

#[tokio::test]
async fn an_assertion_expires_on_the_servers_clock() {
    let f = Fixture::start().await;
    let assertion = f.key.sign(&f.claims());
    // exp is 60 s out and 60 s of skew are allowed.
    f.clock.advance(Duration::from_secs(121));
    assert_refused(f.probe(&assertion).await, "expired");
}

#[tokio::test]
async fn an_unknown_kid_refetches_the_key_set_once_and_a_flood_of_kids_does_not() {
    let f = Fixture::start().await;
    assert_authenticated(f.probe(&f.key.sign(&f.claims())).await);
    assert_eq!(f.host.fetches(), 1);
    // The client rotates to an RSA key right after mcpgate fetched its set;
    // its next assertion names the new kid and is served at once.
    let rotated = rsa_key("k2");
    f.host.keys.lock().unwrap().push(rotated.jwk.clone());
    assert_authenticated(f.probe(&rotated.sign(&f.claims())).await);
    assert_eq!(f.host.fetches(), 2, "one refetch for the new kid");
    for i in 0..5 {
        let stranger = ec_key(&format!("random-{i}"));
        assert_refused(f.probe(&stranger.sign(&f.claims())).await, "no key");
    }
    assert_eq!(
        f.host.fetches(),
        2,
        "unknown kids within a minute of the last refetch cost no fetch"
    );
    f.clock.advance(Duration::from_secs(61));
    assert_refused(
        f.probe(&ec_key("random-late").sign(&f.claims())).await,
        "no key",
    );
    assert_eq!(f.host.fetches(), 3);
}

#[tokio::test]
async fn registrations_with_keys_get_no_secret_and_authenticate_by_assertion() {
    let f = Fixture::start().await;
    let key = ec_key("reg-1");
    let (status, registered) = crate::oauth_browser::register(
        &f.server,
        json!({
            "redirect_uris": ["https://app.example/cb"],
            "token_endpoint_auth_method": "private_key_jwt",
            "token_endpoint_auth_signing_alg": "ES256",
            "jwks": { "keys": [key.jwk.clone()] },
            "client_name": "Keyed",
        }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{registered}");
    assert!(registered.get("client_secret").is_none(), "{registered}");
    assert_eq!(registered["token_endpoint_auth_method"], "private_key_jwt");
    let id = registered["client_id"].as_str().unwrap().to_owned();
    let now = f.now();
    let claims = json!({
        "iss": id, "sub": id, "aud": f.server.url("/token"),
        "iat": now, "exp": now + 60, "jti": "registration-1",
    });
    let form = |assertion: String| {
        vec![
            ("grant_type", "refresh_token".to_owned()),
            ("refresh_token", "x".to_owned()),
            ("client_id", id.clone()),
            ("client_assertion_type", ASSERTION_TYPE.to_owned()),
            ("client_assertion", assertion),
        ]
    };
    assert_authenticated(f.token(&form(key.sign(&claims)), None).await);
    // It registered ES256: an RS256 assertion is refused even with a valid key.
    let rsa = rsa_key("reg-1");
    let mut other = claims.clone();
    other["jti"] = json!("registration-2");
    assert_refused(
        f.token(&form(rsa.sign(&other)), None).await,
        "token_endpoint_auth_signing_alg",
    );
    for (body, why) in [
        (
            json!({"redirect_uris": ["https://app.example/cb"], "token_endpoint_auth_method": "private_key_jwt"}),
            "needs jwks or jwks_uri",
        ),
        (
            json!({"redirect_uris": ["https://app.example/cb"], "token_endpoint_auth_method": "private_key_jwt",
                   "jwks_uri": "http://10.0.0.1/jwks.json"}),
            "jwks_uri",
        ),
        (
            json!({"redirect_uris": ["https://app.example/cb"], "token_endpoint_auth_method": "private_key_jwt",
                   "jwks": {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}}),
            "key material",
        ),
        (
            json!({"redirect_uris": ["https://app.example/cb"], "token_endpoint_auth_method": "private_key_jwt",
                   "jwks": {"keys": [key.jwk.clone()]}, "token_endpoint_auth_signing_alg": "HS256"}),
            "token_endpoint_auth_signing_alg",
        ),
    ] {
        let (status, answer) = crate::oauth_browser::register(&f.server, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{why}: {answer}");
        assert_eq!(
            answer["error"], "invalid_client_metadata",
            "{why}: {answer}"
        );
        assert!(
            answer["error_description"]
                .as_str()
                .unwrap_or_default()
                .contains(why),
            "{why}: {answer}"
        );
    }
}

#[tokio::test]
async fn a_document_offering_none_and_private_key_jwt_uses_what_the_client_sends() {
    let f = Fixture::start().await;
    let id = format!("{}/both.json", f.host.base);
    let now = f.now();
    let claims = |jti: &str| {
        json!({
            "iss": id, "sub": id, "aud": f.server.url("/token"),
            "iat": now, "exp": now + 60, "jti": jti,
        })
    };
    let form = |assertion: Option<String>| {
        let mut form = vec![
            ("grant_type", "refresh_token".to_owned()),
            ("refresh_token", "x".to_owned()),
            ("client_id", id.clone()),
        ];
        if let Some(assertion) = assertion {
            form.push(("client_assertion_type", ASSERTION_TYPE.to_owned()));
            form.push(("client_assertion", assertion));
        }
        form
    };
    // Nothing sent: a public client.
    assert_authenticated(f.token(&form(None), None).await);
    // An assertion sent: it must verify.
    assert_authenticated(
        f.token(&form(Some(f.key.sign(&claims("both-1")))), None)
            .await,
    );
    assert_refused(
        f.token(&form(Some(ec_key("k1").sign(&claims("both-2")))), None)
            .await,
        "signature does not verify",
    );
}
