//! An in-process authorization server for the resource-mode tests: it signs
//! tokens with keys it can rotate, serves discovery, JWKS (counting fetches,
//! switchable to failing) and introspection. For bridge mode it also plays
//! a standard authorization server (`/authorize` with remembered consent,
//! codes checked at `/token`) and Auth0's Management API. The end-to-end
//! suite uses the real oidc-provider; this one lets tests forge exactly the
//! bad tokens.

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
    /// Ids deleted through `DELETE /api/v2/clients/{id}`.
    pub management_deleted: Arc<Mutex<Vec<String>>>,
    /// The standard authorization server part (see [`StandardAs`]).
    pub standard: Arc<Mutex<StandardAs>>,
}

/// What a standard authorization server remembers, for the bridge attacks:
/// registered clients (DCR and Management API) with their redirect URIs,
/// consents given per (user, client), and the codes it issued. `/authorize`
/// checks `client_id` + exact `redirect_uri` and answers silently when the
/// signed-in user (cookie `idp_user`) consented before; `/token` checks the
/// code's client, `redirect_uri` and PKCE.
#[derive(Default)]
pub struct StandardAs {
    pub clients: HashMap<String, Vec<String>>,
    pub consents: std::collections::HashSet<(String, String)>,
    pub codes: HashMap<String, IssuedCode>,
    /// Every code issued: (user, client_id).
    pub issued: Vec<(String, String)>,
    /// Every `/authorize` request's query.
    pub authorize_requests: Vec<HashMap<String, String>>,
}

#[derive(Clone)]
pub struct IssuedCode {
    pub client_id: String,
    pub redirect_uri: String,
    pub challenge: String,
    pub user: String,
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
            management_deleted: Arc::default(),
            standard: Arc::default(),
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
            .route(
                "/api/v2/clients/{id}",
                axum::routing::delete(management_delete_client),
            )
            .route("/authorize", get(standard_authorize))
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

    /// `user` approved `client_id` at this IdP before: it answers silently.
    pub fn remember_consent(&self, user: &str, client_id: &str) {
        self.standard
            .lock()
            .unwrap()
            .consents
            .insert((user.to_owned(), client_id.to_owned()));
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
    let n = {
        let mut registrations = idp.registrations.lock().unwrap();
        registrations.push(body.clone());
        registrations.len()
    };
    let id = format!("dcr-client-{n}");
    idp.standard
        .lock()
        .unwrap()
        .clients
        .insert(id.clone(), redirect_list(&body["redirect_uris"]));
    let mut answer = body;
    answer["client_id"] = json!(id);
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
    idp.standard.lock().unwrap().clients.insert(
        format!("auth0-client-{n}"),
        redirect_list(&body["callbacks"]),
    );
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
    idp.token_requests
        .lock()
        .unwrap()
        .push((auth.clone(), form.clone()));
    if let Some(answer) = standard_token(&idp, auth.as_deref(), &form) {
        return answer;
    }
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

fn redirect_list(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

async fn management_delete_client(
    State(idp): State<FakeIdp>,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> axum::http::StatusCode {
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer mgmt-token") {
        return axum::http::StatusCode::UNAUTHORIZED;
    }
    idp.management_deleted.lock().unwrap().push(id);
    axum::http::StatusCode::NO_CONTENT
}

/// A standard `/authorize`: known client, exact redirect URI (else an error
/// page, never a redirect), PKCE S256; a user who consented to this client
/// before gets a code without any prompt.
async fn standard_authorize(
    State(idp): State<FakeIdp>,
    headers: HeaderMap,
    axum::extract::Query(q): axum::extract::Query<HashMap<String, String>>,
) -> axum::response::Response {
    use axum::http::StatusCode;
    let mut standard = idp.standard.lock().unwrap();
    standard.authorize_requests.push(q.clone());
    let get = |k: &str| q.get(k).cloned().unwrap_or_default();
    let client_id = get("client_id");
    let redirect_uri = get("redirect_uri");
    let Some(registered) = standard.clients.get(&client_id) else {
        return (StatusCode::BAD_REQUEST, "unknown client").into_response();
    };
    if !registered.contains(&redirect_uri) {
        return (StatusCode::BAD_REQUEST, "redirect_uri not registered").into_response();
    }
    if get("code_challenge_method") != "S256" || get("code_challenge").is_empty() {
        return (StatusCode::BAD_REQUEST, "PKCE required").into_response();
    }
    let user = headers
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|p| p.trim().strip_prefix("idp_user="))
        .map(str::to_owned)
        .next();
    let Some(user) = user else {
        return (StatusCode::OK, "<html>sign in</html>").into_response();
    };
    if !standard
        .consents
        .contains(&(user.clone(), client_id.clone()))
    {
        return (StatusCode::OK, "<html>consent</html>").into_response();
    }
    let code = format!("code-{}", uuid::Uuid::new_v4().simple());
    standard.codes.insert(
        code.clone(),
        IssuedCode {
            client_id: client_id.clone(),
            redirect_uri: redirect_uri.clone(),
            challenge: get("code_challenge"),
            user: user.clone(),
        },
    );
    standard.issued.push((user, client_id));
    let mut to = url::Url::parse(&redirect_uri).unwrap();
    to.query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", &get("state"))
        .append_pair("iss", &idp.issuer);
    (StatusCode::FOUND, [("location", to.to_string())]).into_response()
}

/// `/token` for a code `/authorize` issued: single use, same client, same
/// redirect URI, PKCE. `None`: not such a code (scripted answers apply).
fn standard_token(
    idp: &FakeIdp,
    auth: Option<&str>,
    form: &HashMap<String, String>,
) -> Option<axum::response::Response> {
    use axum::http::StatusCode;
    if form.get("grant_type").map(String::as_str) != Some("authorization_code") {
        return None;
    }
    let issued = idp
        .standard
        .lock()
        .unwrap()
        .codes
        .remove(form.get("code")?)?;
    let client_id = auth
        .and_then(|a| a.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|t| t.split_once(':').map(|(id, _)| id.to_owned()))
        .or_else(|| form.get("client_id").cloned())
        .unwrap_or_default();
    let verifier = form.get("code_verifier").cloned().unwrap_or_default();
    let ok = client_id == issued.client_id
        && form.get("redirect_uri") == Some(&issued.redirect_uri)
        && mcpgate::oauth::crypto::pkce_s256(&verifier) == issued.challenge;
    Some(if ok {
        (
            StatusCode::OK,
            Json(json!({
                "access_token": format!("IDP-ACCESS-TOKEN(user={},client={})", issued.user, issued.client_id),
                "token_type": "Bearer", "expires_in": 3600,
            })),
        )
            .into_response()
    } else {
        (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_grant"})),
        )
            .into_response()
    })
}
