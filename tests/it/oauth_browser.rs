//! A scripted browser and OAuth helpers shared by the authorization-server tests.

use reqwest::{StatusCode, header};
use serde_json::{Value, json};

use crate::common::TestServer;

pub const REDIRECT: &str = "http://127.0.0.1:9/cb";

pub fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

pub fn pkce() -> (String, String) {
    let verifier = mcpgate::oauth::crypto::random_token(40).unwrap();
    let challenge = mcpgate::oauth::crypto::pkce_s256(&verifier);
    (verifier, challenge)
}

/// A scripted browser: keeps the cookies mcpgate sets.
#[derive(Default)]
pub struct Browser {
    pub cookies: Vec<(String, String)>,
}

impl Browser {
    pub fn absorb(&mut self, response: &reqwest::Response) {
        for v in response.headers().get_all(header::SET_COOKIE) {
            let text = v.to_str().unwrap();
            let (pair, _) = text.split_once(';').unwrap_or((text, ""));
            let (k, val) = pair.split_once('=').unwrap();
            self.cookies.retain(|(name, _)| name != k);
            self.cookies.push((k.to_owned(), val.to_owned()));
        }
    }
    pub fn header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
    pub async fn get(&mut self, url: &str) -> reqwest::Response {
        let r = no_redirects()
            .get(url)
            .header(header::COOKIE, self.header())
            .send()
            .await
            .unwrap();
        self.absorb(&r);
        r
    }
    pub async fn post(&mut self, url: &str, form: &[(&str, &str)]) -> reqwest::Response {
        let r = no_redirects()
            .post(url)
            .header(header::COOKIE, self.header())
            .form(form)
            .send()
            .await
            .unwrap();
        self.absorb(&r);
        r
    }
}

pub fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {html}"))
        + marker.len();
    html[start..].split('"').next().unwrap().to_owned()
}

pub fn location(response: &reqwest::Response) -> String {
    response
        .headers()
        .get(header::LOCATION)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

pub fn query_of(url: &str) -> std::collections::HashMap<String, String> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}

pub async fn register(server: &TestServer, body: Value) -> (StatusCode, Value) {
    let r = server
        .client
        .post(server.url("/register"))
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status(), r.json().await.unwrap())
}

pub async fn public_client(server: &TestServer) -> String {
    let (status, body) = register(
        server,
        json!({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none", "grant_types": ["authorization_code", "refresh_token"], "client_name": "it"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["client_id"].as_str().unwrap().to_owned()
}

pub fn authorize_url(
    server: &TestServer,
    client_id: &str,
    challenge: &str,
    redirect: &str,
) -> String {
    let q = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("response_type", "code")
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", redirect)
        .append_pair("code_challenge", challenge)
        .append_pair("code_challenge_method", "S256")
        .append_pair("state", "s-1")
        .append_pair("resource", &server.url("/mcp"))
        .finish();
    server.url(&format!("/authorize?{q}"))
}

pub async fn token(server: &TestServer, form: &[(&str, &str)]) -> (StatusCode, Value) {
    let r = server
        .client
        .post(server.url("/token"))
        .form(form)
        .send()
        .await
        .unwrap();
    let status = r.status();
    if status == StatusCode::OK {
        assert_eq!(r.headers().get(header::CACHE_CONTROL).unwrap(), "no-store");
    }
    (status, r.json().await.unwrap())
}

/// `grant_type=authorization_code` for a public client registered with [`REDIRECT`].
pub async fn exchange_code(
    server: &TestServer,
    client_id: &str,
    code: &str,
    verifier: &str,
) -> (StatusCode, Value) {
    token(
        server,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", client_id),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier),
        ],
    )
    .await
}

/// `grant_type=refresh_token` for a public client.
pub async fn refresh_grant(
    server: &TestServer,
    client_id: &str,
    refresh_token: &str,
) -> (StatusCode, Value) {
    token(
        server,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", client_id),
            ("refresh_token", refresh_token),
        ],
    )
    .await
}

/// Sign in at mcpgate's login page as `username` and approve the consent page
/// of the authorization request at `authorize`; returns where mcpgate sends
/// the browser back to the client. `extra`: more consent-form fields.
pub async fn sign_in_and_approve(
    server: &TestServer,
    browser: &mut Browser,
    authorize: &str,
    (username, password): (&str, &str),
    extra: &[(&str, &str)],
) -> String {
    let page = browser.get(authorize).await;
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    let (request, csrf) = (hidden(&html, "request"), hidden(&html, "csrf"));
    let login = browser
        .post(
            &server.url("/login"),
            &[
                ("request", &request),
                ("csrf", &csrf),
                ("username", username),
                ("password", password),
            ],
        )
        .await;
    assert_eq!(login.status(), StatusCode::SEE_OTHER);
    let consent = browser.get(&server.url(&location(&login))).await;
    let html = consent.text().await.unwrap();
    let (request, csrf) = (hidden(&html, "request"), hidden(&html, "csrf"));
    let mut form = vec![
        ("request", request.as_str()),
        ("csrf", csrf.as_str()),
        ("decision", "approve"),
    ];
    form.extend_from_slice(extra);
    let done = browser.post(&server.url("/consent"), &form).await;
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    location(&done)
}

/// An access token for a local user through the whole flow (a new public
/// client, sign-in, consent, code exchange), asking for `scope` (`None`:
/// every scope). Returns the token and the client's id.
pub async fn user_token(
    server: &TestServer,
    login: (&str, &str),
    scope: Option<&str>,
) -> (String, String) {
    let client_id = public_client(server).await;
    let (verifier, challenge) = pkce();
    let mut authorize = authorize_url(server, &client_id, &challenge, REDIRECT);
    if let Some(scope) = scope {
        let scope: String = url::form_urlencoded::byte_serialize(scope.as_bytes()).collect();
        authorize.push_str(&format!("&scope={scope}"));
    }
    let back = sign_in_and_approve(server, &mut Browser::default(), &authorize, login, &[]).await;
    let code = query_of(&back)["code"].clone();
    let (status, tokens) = exchange_code(server, &client_id, &code, &verifier).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    (
        tokens["access_token"].as_str().unwrap().to_owned(),
        client_id,
    )
}
