//! The browser pages' shell: the stylesheet route, the CSP every page
//! carries, `[branding]`, and "not you? sign out" on the consent page.

use mcpgate::config::{RawConfig, RawLocalAuth};
use reqwest::{StatusCode, header};

use crate::{
    common::{TestServer, seed_users},
    oauth_browser::{
        Browser, REDIRECT, authorize_url, hidden, location, no_redirects, pkce, public_client,
    },
};

fn local(raw: &mut RawConfig) {
    raw.auth.mode = Some("local".to_owned());
    raw.auth.local = Some(RawLocalAuth::default());
}

fn stylesheet_href(html: &str) -> String {
    let marker = "<link rel=\"stylesheet\" href=\"";
    let start = html.find(marker).expect("a stylesheet link") + marker.len();
    html[start..].split('"').next().unwrap().to_owned()
}

fn csp(r: &reqwest::Response) -> String {
    r.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_owned()
}

/// Sign in as `user` for a new authorization request; returns the consent page.
async fn consent_page(
    server: &TestServer,
    browser: &mut Browser,
    (user, password): (&str, &str),
) -> String {
    let client_id = public_client(server).await;
    let (_, challenge) = pkce();
    let page = browser
        .get(&authorize_url(server, &client_id, &challenge, REDIRECT))
        .await;
    let html = page.text().await.unwrap();
    let login = browser
        .post(
            &server.url("/login"),
            &[
                ("request", &hidden(&html, "request")),
                ("csrf", &hidden(&html, "csrf")),
                ("username", user),
                ("password", password),
            ],
        )
        .await;
    assert_eq!(login.status(), StatusCode::SEE_OTHER);
    let consent = browser.get(&server.url(&location(&login))).await;
    assert_eq!(consent.status(), StatusCode::OK);
    consent.text().await.unwrap()
}

#[tokio::test]
async fn pages_link_one_hashed_stylesheet_under_a_strict_csp() {
    let server = TestServer::start_with(local).await;
    let client_id = public_client(&server).await;
    let (_, challenge) = pkce();
    let page = Browser::default()
        .get(&authorize_url(&server, &client_id, &challenge, REDIRECT))
        .await;
    assert_eq!(page.status(), StatusCode::OK);
    let policy = csp(&page);
    assert_eq!(
        policy,
        "default-src 'none'; style-src 'self'; img-src 'self'; frame-ancestors 'none'; base-uri 'none'"
    );
    let html = page.text().await.unwrap();
    assert!(
        !html.contains("<script") && !html.contains("style="),
        "{html}"
    );
    let href = stylesheet_href(&html);
    assert!(
        href.starts_with("/assets/mcpgate-") && href.ends_with(".css"),
        "{href}"
    );
    let css = no_redirects().get(server.url(&href)).send().await.unwrap();
    assert_eq!(css.status(), StatusCode::OK);
    assert_eq!(
        css.headers()[header::CONTENT_TYPE],
        "text/css; charset=utf-8"
    );
    assert_eq!(
        css.headers()[header::CACHE_CONTROL],
        "public, max-age=31536000, immutable"
    );
    assert_eq!(css.headers()["x-content-type-options"], "nosniff");
    let text = css.text().await.unwrap();
    assert!(text.contains("prefers-color-scheme: dark"));
    assert!(text.contains("--accent: #2557d6;"));
    for other in [
        "/assets/mcpgate.css",
        "/assets/..%2Fmcpgate.toml",
        "/assets/",
    ] {
        let r = no_redirects().get(server.url(other)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{other}");
    }
}

#[tokio::test]
async fn branding_from_config_reaches_every_page_and_the_stylesheet() {
    let dir = tempfile::tempdir().unwrap();
    seed_users(dir.path(), &[("alice", "alice-password")]).await;
    let server = TestServer::start_in(dir, |raw| {
        local(raw);
        let b = &mut raw.branding;
        b.product_name = Some("Acme <AI>".to_owned());
        b.server_name = Some("Acme Notes".to_owned());
        b.accent_color = Some("#7A1FA2".to_owned());
        b.support_url = Some("https://help.acme.example/mcp".to_owned());
        b.logo_url = Some("https://cdn.acme.example/logo.svg".to_owned());
        b.scopes.insert(
            "notes:read".to_owned(),
            "Look at the team's notebook".to_owned(),
        );
    })
    .await;
    let mut browser = Browser::default();
    let html = consent_page(&server, &mut browser, ("alice", "alice-password")).await;
    assert!(html.contains("<span class=\"brand-name\">Acme &lt;AI&gt;</span>"));
    assert!(html.contains("<strong>Acme Notes</strong>"), "server name");
    assert!(
        html.contains("Look at the team&#39;s notebook"),
        "scope words"
    );
    assert!(html.contains("<code>notes:read</code>"));
    assert!(
        html.contains("Create, change and delete your notes"),
        "default words"
    );
    assert!(html.contains("href=\"https://help.acme.example/mcp\""));
    assert!(html.contains("src=\"https://cdn.acme.example/logo.svg\""));
    let css = no_redirects()
        .get(server.url(&stylesheet_href(&html)))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        css.contains("--accent: #7a1fa2; --accent-ink: #ffffff;"),
        "{css}"
    );
    // An error page: same shell, same CSP (the logo's origin for images only).
    let bad = browser
        .get(&server.url("/authorize?client_id=nobody&response_type=code"))
        .await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        csp(&bad),
        "default-src 'none'; style-src 'self'; img-src 'self' https://cdn.acme.example; frame-ancestors 'none'; base-uri 'none'"
    );
    let html = bad.text().await.unwrap();
    assert!(
        html.contains("<h1>This sign-in request is not valid</h1>"),
        "{html}"
    );
    assert!(
        html.contains("this client is not registered here"),
        "{html}"
    );
    assert!(html.contains("Try connecting again from the app"), "{html}");
    assert!(html.contains("Acme &lt;AI&gt;"));
}

#[tokio::test]
async fn a_logo_file_is_served_by_mcpgate_under_its_hash_and_runs_nothing() {
    let logo_dir = tempfile::tempdir().unwrap();
    let logo = logo_dir.path().join("acme.svg");
    std::fs::write(
        &logo,
        "<svg xmlns=\"http://www.w3.org/2000/svg\"><script>alert(1)</script></svg>",
    )
    .unwrap();
    let server = TestServer::start_with(|raw| {
        local(raw);
        raw.branding.logo_file = Some(logo.clone());
    })
    .await;
    let page = Browser::default()
        .get(&server.url("/authorize?client_id=nobody"))
        .await;
    assert_eq!(
        csp(&page),
        "default-src 'none'; style-src 'self'; img-src 'self'; frame-ancestors 'none'; base-uri 'none'"
    );
    let html = page.text().await.unwrap();
    let marker = "<img class=\"brand-logo\" src=\"";
    let start = html.find(marker).expect("the logo") + marker.len();
    let src = html[start..].split('"').next().unwrap();
    assert!(
        src.starts_with("/assets/logo-") && src.ends_with(".svg"),
        "{src}"
    );
    let r = no_redirects().get(server.url(src)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[header::CONTENT_TYPE], "image/svg+xml");
    // Opened on its own, the SVG is a document: sandboxed, no script.
    let policy = csp(&r);
    assert!(
        policy.contains("sandbox") && policy.starts_with("default-src 'none'"),
        "{policy}"
    );
}

#[test]
fn bad_branding_is_refused_by_the_configuration_check() {
    let mut raw = RawConfig::default();
    raw.branding.accent_color = Some("#fff;}body{display:none".to_owned());
    raw.branding.logo_url = Some("data:image/svg+xml,<svg/>".to_owned());
    raw.branding.support_url = Some("javascript:alert(1)".to_owned());
    let errors = raw.validate().unwrap_err().0;
    for key in [
        "branding.accent_color",
        "branding.logo_url",
        "branding.support_url",
    ] {
        assert!(errors.iter().any(|e| e.contains(key)), "{key}: {errors:?}");
    }
}

#[tokio::test]
async fn not_you_signs_out_only_with_the_forms_csrf_and_returns_to_sign_in() {
    let dir = tempfile::tempdir().unwrap();
    seed_users(
        dir.path(),
        &[("alice", "alice-password"), ("bob", "bob-password")],
    )
    .await;
    let server = TestServer::start_in(dir, local).await;
    let mut browser = Browser::default();
    let html = consent_page(&server, &mut browser, ("alice", "alice-password")).await;
    assert!(
        html.contains("Signed in as <strong>alice</strong>"),
        "{html}"
    );
    assert!(html.contains("action=\"/logout\""));
    let (request, csrf) = (hidden(&html, "request"), hidden(&html, "csrf"));
    let consent_url = server.url(&format!("/consent?request={request}"));
    let session_cookie = browser
        .cookies
        .iter()
        .find(|(k, _)| k == "mcpgate_session")
        .cloned()
        .expect("a session cookie");

    // Another site's form cannot sign alice out: no token, or a wrong one.
    for form in [
        vec![("request", request.as_str())],
        vec![("request", request.as_str()), ("csrf", "forged")],
    ] {
        let r = browser.post(&server.url("/logout"), &form).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert!(r.headers().get(header::SET_COOKIE).is_none());
    }
    // ... nor the right token sent from another browser.
    let mut other = Browser::default();
    other.cookies.push(session_cookie.clone());
    let r = other
        .post(
            &server.url("/logout"),
            &[("request", &request), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let still = browser.get(&consent_url).await;
    assert_eq!(still.status(), StatusCode::OK, "alice is still signed in");

    let out = browser
        .post(
            &server.url("/logout"),
            &[("request", &request), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&out), format!("/login?request={request}"));
    let cleared = out.headers()[header::SET_COOKIE].to_str().unwrap();
    assert!(cleared.starts_with("mcpgate_session=;") && cleared.contains("Max-Age=0"));
    // The old session is gone in the store, not only in this browser.
    let mut replay = Browser {
        cookies: browser.cookies.clone(),
    };
    replay.cookies.retain(|(k, _)| k != "mcpgate_session");
    replay.cookies.push(session_cookie);
    let r = replay.get(&consent_url).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    // The same request's sign-in page; bob signs in and sees his name.
    let login = browser.get(&server.url(&location(&out))).await;
    assert_eq!(login.status(), StatusCode::OK);
    let html = login.text().await.unwrap();
    assert!(html.contains("action=\"/login\""), "{html}");
    assert_eq!(hidden(&html, "request"), request);
    let signed_in = browser
        .post(
            &server.url("/login"),
            &[
                ("request", &request),
                ("csrf", &hidden(&html, "csrf")),
                ("username", "bob"),
                ("password", "bob-password"),
            ],
        )
        .await;
    assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);
    let html = browser
        .get(&server.url(&location(&signed_in)))
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains("Signed in as <strong>bob</strong>"), "{html}");
    // The sign-in page of a request is for its own browser only.
    let r = Browser::default()
        .get(&server.url(&format!("/login?request={request}")))
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_failed_sign_in_keeps_the_name_and_marks_the_field() {
    let server = TestServer::start_with(local).await;
    let client_id = public_client(&server).await;
    let (_, challenge) = pkce();
    let mut browser = Browser::default();
    let html = browser
        .get(&authorize_url(&server, &client_id, &challenge, REDIRECT))
        .await
        .text()
        .await
        .unwrap();
    let r = browser
        .post(
            &server.url("/login"),
            &[
                ("request", &hidden(&html, "request")),
                ("csrf", &hidden(&html, "csrf")),
                ("username", "admin<"),
                ("password", "pw-Zq81-never-echoed"),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let html = r.text().await.unwrap();
    assert!(html.contains("value=\"admin&lt;\""), "{html}");
    assert!(html.contains("aria-invalid=\"true\" aria-describedby=\"signin-error\""));
    assert!(html.contains(
        "id=\"signin-error\" class=\"field-error\" role=\"alert\">Wrong user name or password."
    ));
    assert!(!html.contains("pw-Zq81"), "the password is never echoed");
}

#[tokio::test]
async fn proxy_mode_consent_names_the_idp_and_offers_no_local_sign_in_or_out() {
    let idp = crate::fake_idp::FakeIdp::start().await;
    let server = crate::proxy_auth::proxy(&idp, |_| {}).await;
    let client_id = public_client(&server).await;
    let (_, challenge) = pkce();
    let mut browser = Browser::default();
    let page = browser
        .get(&authorize_url(&server, &client_id, &challenge, REDIRECT))
        .await;
    assert_eq!(page.status(), StatusCode::OK);
    assert!(csp(&page).contains("style-src 'self'"));
    let html = page.text().await.unwrap();
    assert!(html.contains("you sign in with"), "{html}");
    assert!(
        !html.contains("/logout") && !html.contains("Signed in as"),
        "{html}"
    );
    let (request, csrf) = (hidden(&html, "request"), hidden(&html, "csrf"));
    let r = browser
        .post(
            &server.url("/logout"),
            &[("request", &request), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = browser
        .get(&server.url(&format!("/login?request={request}")))
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("sign-in happens at the identity provider")
    );
}
