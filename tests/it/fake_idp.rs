//! An in-process authorization server for the resource-mode tests: it signs
//! tokens with keys it can rotate, serves discovery, JWKS (counting fetches,
//! switchable to failing) and introspection. The end-to-end suite uses the
//! real oidc-provider; this one lets tests forge exactly the bad tokens.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicBool, AtomicU64, Ordering},
};

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use axum::{
    Form, Json, Router, extract::State, http::HeaderMap, response::IntoResponse, routing::get,
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

pub struct SigningKey {
    pub kid: String,
    pub encoding: EncodingKey,
    pub jwk: Value,
    pub public_point: Vec<u8>,
}

pub fn new_es256_key(kid: &str) -> SigningKey {
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
    let point = pair.public_key().as_ref().to_vec();
    assert_eq!(point.len(), 65);
    let jwk = json!({
        "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
    });
    SigningKey {
        kid: kid.to_owned(),
        encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
        jwk,
        public_point: point,
    }
}

#[derive(Clone)]
pub struct FakeIdp {
    pub issuer: String,
    pub keys: Arc<Mutex<Vec<SigningKey>>>,
    pub jwks_fetches: Arc<AtomicU64>,
    pub jwks_down: Arc<AtomicBool>,
    pub resource: Arc<Mutex<String>>,
    /// Scripted answers of `/token` (status, body), oldest first; none left: 400 invalid_grant.
    pub token_answers: Arc<Mutex<std::collections::VecDeque<(u16, Value)>>>,
    /// Every `/token` request: (Authorization header, form).
    pub token_requests: Arc<Mutex<Vec<TokenRequest>>>,
    /// `/token` answers 503.
    pub token_down: Arc<AtomicBool>,
    /// Tokens posted to `/revoke`.
    pub revoked: Arc<Mutex<Vec<String>>>,
    /// GitHub-style `/user` and `/user/emails` answers.
    pub github_user: Arc<Mutex<Value>>,
    pub github_emails: Arc<Mutex<Value>>,
    /// Bodies posted to `/register` (DCR) and `/api/v2/clients` (Auth0 Management API).
    pub registrations: Arc<Mutex<Vec<Value>>>,
    pub management_clients: Arc<Mutex<Vec<Value>>>,
    /// What `/userinfo` answers (any bearer token).
    pub userinfo: Arc<Mutex<Value>>,
    /// Status `/api/v2/clients` answers with (201 by default).
    pub management_status: Arc<AtomicU64>,
}

type HashMap<K, V> = std::collections::HashMap<K, V>;
/// (Authorization header, form) of a `/token` request.
pub type TokenRequest = (Option<String>, HashMap<String, String>);

pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

impl FakeIdp {
    pub async fn start() -> FakeIdp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let idp = FakeIdp {
            issuer,
            keys: Arc::new(Mutex::new(vec![new_es256_key("k1")])),
            jwks_fetches: Arc::new(AtomicU64::new(0)),
            jwks_down: Arc::new(AtomicBool::new(false)),
            resource: Arc::new(Mutex::new(String::new())),
            token_answers: Arc::default(),
            token_requests: Arc::default(),
            token_down: Arc::default(),
            revoked: Arc::default(),
            github_user: Arc::new(Mutex::new(Value::Null)),
            github_emails: Arc::new(Mutex::new(json!([]))),
            registrations: Arc::default(),
            management_clients: Arc::default(),
            management_status: Arc::new(AtomicU64::new(201)),
            userinfo: Arc::new(Mutex::new(json!({}))),
        };
        let app = Router::new()
            .route("/.well-known/oauth-authorization-server", get(metadata))
            .route(
                "/{tenant}/v2.0/.well-known/openid-configuration",
                get(entra_metadata),
            )
            .route("/token", axum::routing::post(token))
            .route("/revoke", axum::routing::post(revoke))
            .route("/user", get(github_user))
            .route("/register", axum::routing::post(dcr))
            .route("/userinfo", get(userinfo))
            .route(
                "/api/v2/clients",
                axum::routing::post(management_create_client),
            )
            .route("/user/emails", get(github_emails))
            .route("/jwks", get(jwks))
            .route("/introspect", axum::routing::post(introspect))
            .with_state(idp.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        idp
    }

    pub fn set_resource(&self, resource: &str) {
        *self.resource.lock().unwrap() = resource.to_owned();
    }

    /// Standard claims for `sub` with `scope`, valid for an hour.
    pub fn claims(&self, sub: &str, scope: &str) -> Value {
        json!({
            "iss": self.issuer, "sub": sub, "aud": self.resource.lock().unwrap().clone(),
            "exp": now() + 3600, "iat": now(), "scope": scope, "client_id": "test-client",
        })
    }

    /// Sign with the newest key.
    pub fn sign(&self, claims: &Value) -> String {
        let keys = self.keys.lock().unwrap();
        let key = keys.last().unwrap();
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(key.kid.clone());
        header.typ = Some("at+jwt".to_owned());
        jsonwebtoken::encode(&header, claims, &key.encoding).unwrap()
    }

    pub fn token(&self, sub: &str, scope: &str) -> String {
        self.sign(&self.claims(sub, scope))
    }

    /// An ID token for our upstream client.
    pub fn id_token(&self, client_id: &str, sub: &str, nonce: &str, extra: Value) -> String {
        let mut claims = json!({
            "iss": self.issuer, "sub": sub, "aud": client_id, "nonce": nonce,
            "exp": now() + 300, "iat": now(),
        });
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            claims[k] = v;
        }
        let keys = self.keys.lock().unwrap();
        let key = keys.last().unwrap();
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(key.kid.clone());
        header.typ = Some("JWT".to_owned());
        jsonwebtoken::encode(&header, &claims, &key.encoding).unwrap()
    }

    /// Queue the next `/token` answer.
    pub fn answer_token(&self, status: u16, body: Value) {
        self.token_answers.lock().unwrap().push_back((status, body));
    }

    pub fn rotate(&self, kid: &str) {
        self.keys.lock().unwrap().push(new_es256_key(kid));
    }
}

async fn metadata(State(idp): State<FakeIdp>) -> impl IntoResponse {
    Json(json!({
        "issuer": idp.issuer,
        "jwks_uri": format!("{}/jwks", idp.issuer),
        "introspection_endpoint": format!("{}/introspect", idp.issuer),
        "authorization_endpoint": format!("{}/authorize", idp.issuer),
        "token_endpoint": format!("{}/token", idp.issuer),
        "revocation_endpoint": format!("{}/revoke", idp.issuer),
        "registration_endpoint": format!("{}/register", idp.issuer),
        "code_challenge_methods_supported": ["S256"],
        "userinfo_endpoint": format!("{}/userinfo", idp.issuer),
    }))
}

async fn userinfo(State(idp): State<FakeIdp>) -> Json<Value> {
    Json(idp.userinfo.lock().unwrap().clone())
}

async fn dcr(State(idp): State<FakeIdp>, Json(body): Json<Value>) -> axum::response::Response {
    idp.registrations.lock().unwrap().push(body.clone());
    let mut answer = body;
    answer["client_id"] = json!("dcr-client-1");
    (axum::http::StatusCode::CREATED, Json(answer)).into_response()
}

async fn management_create_client(
    State(idp): State<FakeIdp>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> axum::response::Response {
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer mgmt-token") {
        return (
            axum::http::StatusCode::UNAUTHORIZED,
            Json(json!({"statusCode": 401, "message": "Invalid token"})),
        )
            .into_response();
    }
    let status = idp.management_status.load(Ordering::SeqCst) as u16;
    if status != 201 {
        return (
            axum::http::StatusCode::from_u16(status).unwrap(),
            Json(json!({"statusCode": status, "message": "Insufficient scope, expected any of: create:clients"})),
        )
            .into_response();
    }
    let n = {
        let mut created = idp.management_clients.lock().unwrap();
        created.push(body.clone());
        created.len()
    };
    let mut answer = body;
    answer["client_id"] = json!(format!("auth0-client-{n}"));
    answer["client_secret"] = json!("auth0-secret");
    (axum::http::StatusCode::CREATED, Json(answer)).into_response()
}

/// Entra's discovery: for `common` the issuer is a template; a tenant named
/// by domain is answered with its GUID.
async fn entra_metadata(
    State(idp): State<FakeIdp>,
    axum::extract::Path(tenant): axum::extract::Path<String>,
) -> impl IntoResponse {
    let tenant_id = if tenant == "common" {
        "{tenantid}"
    } else {
        "9188040d-guid"
    };
    Json(json!({
        "issuer": format!("{}/{tenant_id}/v2.0", idp.issuer),
        "jwks_uri": format!("{}/jwks", idp.issuer),
        "authorization_endpoint": format!("{}/authorize", idp.issuer),
        "token_endpoint": format!("{}/token", idp.issuer),
    }))
}

async fn token(
    State(idp): State<FakeIdp>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> axum::response::Response {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    idp.token_requests.lock().unwrap().push((auth, form));
    if idp.token_down.load(Ordering::SeqCst) {
        return (axum::http::StatusCode::SERVICE_UNAVAILABLE, "down").into_response();
    }
    let (status, body) = idp
        .token_answers
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or((400, json!({"error": "invalid_grant"})));
    (
        axum::http::StatusCode::from_u16(status).unwrap(),
        Json(body),
    )
        .into_response()
}

async fn revoke(State(idp): State<FakeIdp>, Form(form): Form<HashMap<String, String>>) {
    idp.revoked
        .lock()
        .unwrap()
        .push(form.get("token").cloned().unwrap_or_default());
}

async fn github_user(State(idp): State<FakeIdp>, headers: HeaderMap) -> axum::response::Response {
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer gh-token") {
        return (axum::http::StatusCode::UNAUTHORIZED, "bad credentials").into_response();
    }
    Json(idp.github_user.lock().unwrap().clone()).into_response()
}

async fn github_emails(State(idp): State<FakeIdp>) -> Json<Value> {
    Json(idp.github_emails.lock().unwrap().clone())
}

async fn jwks(State(idp): State<FakeIdp>) -> axum::response::Response {
    idp.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    if idp.jwks_down.load(Ordering::SeqCst) {
        return (axum::http::StatusCode::SERVICE_UNAVAILABLE, "down").into_response();
    }
    let keys: Vec<Value> = idp
        .keys
        .lock()
        .unwrap()
        .iter()
        .map(|k| k.jwk.clone())
        .collect();
    (
        [("cache-control", "max-age=600")],
        Json(json!({ "keys": keys })),
    )
        .into_response()
}

async fn introspect(
    State(idp): State<FakeIdp>,
    headers: HeaderMap,
    Form(form): Form<std::collections::HashMap<String, String>>,
) -> Json<Value> {
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("rs-client:rs-secret")
    );
    let authorized =
        headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(expected.as_str());
    let token = form.get("token").cloned().unwrap_or_default();
    if authorized && token.starts_with("opaque-machine-") {
        // client_credentials tokens carry no sub.
        return Json(json!({
            "active": true, "iss": idp.issuer, "aud": idp.resource.lock().unwrap().clone(),
            "scope": "calc", "client_id": "machine-client", "exp": now() + 600,
        }));
    }
    if !authorized || !token.starts_with("opaque-good-") {
        return Json(json!({ "active": false }));
    }
    let sub = token.trim_start_matches("opaque-good-");
    Json(json!({
        "active": true, "iss": idp.issuer, "sub": sub, "aud": idp.resource.lock().unwrap().clone(),
        "scope": "calc notes:read", "client_id": "opaque-client", "exp": now() + 600,
    }))
}
