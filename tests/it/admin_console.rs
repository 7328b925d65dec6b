//! The admin console (`/admin`): who is refused, the CSRF check of every
//! action, each action's effect, and the escaping of hostile names.

use reqwest::{StatusCode, header};
use serde_json::json;

use mcpgate::store::{FunnelRow, Store};

use crate::{
    common::{TestServer, sqlite_url},
    local_auth::{admin_cli, local},
    oauth_browser::{Browser, hidden, location, register},
    security_signin::{admin_cli_input, assert_signed_out, signed_in_with_grant},
};

/// Sign in to the console as `user`: the browser and its page's CSRF token
/// (empty when the user is not an admin).
pub(crate) async fn console_as(
    server: &TestServer,
    user: &str,
    password: &str,
) -> (Browser, String) {
    let mut browser = Browser::default();
    let r = browser.get(&server.url("/admin/login")).await;
    assert_eq!(r.status(), StatusCode::OK);
    let form_csrf = hidden(&r.text().await.unwrap(), "csrf");
    let r = browser
        .post(
            &server.url("/admin/login"),
            &[
                ("csrf", &form_csrf),
                ("username", user),
                ("password", password),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "{user} did not sign in");
    assert_eq!(location(&r), "/admin");
    let r = browser.get(&server.url("/admin")).await;
    if r.status() != StatusCode::OK {
        return (browser, String::new());
    }
    let csrf = hidden(&r.text().await.unwrap(), "csrf");
    (browser, csrf)
}

pub(crate) async fn as_admin(server: &TestServer) -> (Browser, String) {
    let password = server.admin_password.clone().unwrap();
    console_as(server, "admin", &password).await
}

pub(crate) async fn act(
    server: &TestServer,
    browser: &mut Browser,
    csrf: &str,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    let mut form = vec![("csrf", csrf)];
    form.extend_from_slice(fields);
    browser.post(&server.url("/admin/act"), &form).await
}

pub(crate) fn user_id(server: &TestServer, name: &str) -> String {
    let (ok, out, err) = admin_cli(server, &["users", "list"]);
    assert!(ok, "{err}");
    out.lines()
        .find(|l| l.split('\t').next() == Some(name))
        .and_then(|l| l.split('\t').nth(1))
        .unwrap_or_else(|| panic!("no {name} in {out}"))
        .to_owned()
}

pub(crate) fn add_user(server: &TestServer, name: &str, password: &str) {
    let (ok, out) = admin_cli_input(
        server,
        &["users", "add", name, "--password-stdin"],
        &format!("{password}\n"),
    );
    assert!(ok, "{out}");
}

#[tokio::test]
async fn anonymous_visitors_are_sent_to_sign_in_or_refused() {
    let server = local(|_| {}).await;
    let mut browser = Browser::default();
    for page in [
        "/admin",
        "/admin/clients",
        "/admin/keys",
        "/admin/sessions",
        "/admin/upstreams",
        "/admin/funnel",
        "/admin/user?id=x",
    ] {
        let r = browser.get(&server.url(page)).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{page}");
        assert_eq!(location(&r), "/admin/login", "{page}");
    }
    let r = browser
        .post(
            &server.url("/admin/act"),
            &[("action", "key.rotate"), ("csrf", "x")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let (ok, out, _) = admin_cli(&server, &["keys", "list"]);
    assert!(ok);
    assert_eq!(
        out.lines().count(),
        1,
        "an anonymous POST rotated a key: {out}"
    );
    // The sign-in page goes out with the pages' security headers.
    let r = browser.get(&server.url("/admin/login")).await;
    let h = r.headers();
    assert!(
        h[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("default-src 'none'")
    );
    assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
    assert_eq!(h[header::CACHE_CONTROL], "no-store");
    let html = r.text().await.unwrap();
    assert!(
        !html.contains("<script") && !html.contains("style="),
        "{html}"
    );
}

#[tokio::test]
async fn the_sign_in_form_must_come_from_this_browser() {
    let server = local(|_| {}).await;
    let password = server.admin_password.clone().unwrap();
    let mut other = Browser::default();
    let r = other.get(&server.url("/admin/login")).await;
    let csrf = hidden(&r.text().await.unwrap(), "csrf");
    // A forged sign-in (login CSRF): the token without the browser's cookie.
    let mut attacker = Browser::default();
    let r = attacker
        .post(
            &server.url("/admin/login"),
            &[
                ("csrf", &csrf),
                ("username", "admin"),
                ("password", &password),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.headers().get(header::SET_COOKIE).is_none());
    // A wrong password is refused on the form again.
    let r = other
        .post(
            &server.url("/admin/login"),
            &[
                ("csrf", &csrf),
                ("username", "admin"),
                ("password", "not-it-at-all"),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_signed_in_non_admin_gets_403_even_with_a_valid_token() {
    let server = local(|_| {}).await;
    add_user(&server, "bob", "bobs-password");
    let (mut bob, csrf) = console_as(&server, "bob", "bobs-password").await;
    assert!(csrf.is_empty());
    let r = bob.get(&server.url("/admin")).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(r.headers()[header::X_FRAME_OPTIONS], "DENY");
    assert!(r.text().await.unwrap().contains("Not an admin"));
    // Bob computes the token his own session would have: still refused.
    let session = bob
        .cookies
        .iter()
        .find(|(k, _)| k == "mcpgate_session")
        .unwrap()
        .1
        .clone();
    let token = mcpgate::oauth::crypto::sha256_b64(&format!("admin-csrf|{session}"));
    let r = act(
        &server,
        &mut bob,
        &token,
        &[("action", "user.grant_admin"), ("user", "bob")],
    )
    .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let (_, out, _) = admin_cli(&server, &["users", "list"]);
    let r = bob.get(&server.url("/admin/keys")).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "{out}");
    // Once given the role (CLI), the same session opens the console.
    let (ok, out, err) = admin_cli(&server, &["users", "set-admin", "bob"]);
    assert!(ok && out.contains("may use"), "{out}{err}");
    let r = bob.get(&server.url("/admin")).await;
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn every_action_needs_the_sessions_csrf_token() {
    let server = local(|_| {}).await;
    let (mut browser, csrf) = as_admin(&server).await;
    add_user(&server, "carol", "carols-password");
    let carol = user_id(&server, "carol");
    for forged in ["", "forged", &csrf[..csrf.len() - 1]] {
        let r = act(
            &server,
            &mut browser,
            forged,
            &[("action", "user.remove"), ("user", &carol)],
        )
        .await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "csrf {forged:?}");
    }
    // Another admin session's token does not fit this session.
    let (_, other_csrf) = as_admin(&server).await;
    assert_ne!(other_csrf, csrf);
    let r = act(
        &server,
        &mut browser,
        &other_csrf,
        &[("action", "user.remove"), ("user", &carol)],
    )
    .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let (_, out, _) = admin_cli(&server, &["users", "list"]);
    assert!(out.contains("carol"), "a forged form removed carol: {out}");
    // The real token works.
    let r = act(
        &server,
        &mut browser,
        &csrf,
        &[("action", "user.remove"), ("user", &carol)],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "/admin?done=user.remove");
    let (_, out, _) = admin_cli(&server, &["users", "list"]);
    assert!(!out.contains("carol"), "{out}");
    // Signing out ends the session: the old token and cookie open nothing.
    let r = browser
        .post(&server.url("/admin/logout"), &[("csrf", &csrf)])
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let r = browser.get(&server.url("/admin")).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn users_are_added_promoted_disabled_enabled_and_reset() {
    let server = local(|_| {}).await;
    let (mut browser, csrf) = as_admin(&server).await;
    let r = act(
        &server,
        &mut browser,
        &csrf,
        &[
            ("action", "user.add"),
            ("username", "dave"),
            ("password", "daves-password"),
        ],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let page = browser
        .get(&server.url("/admin?done=user.add"))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("User added.") && page.contains(">dave</a>"),
        "{page}"
    );
    // Too short a password and a name with spaces are refused.
    let r = act(
        &server,
        &mut browser,
        &csrf,
        &[
            ("action", "user.add"),
            ("username", "eve"),
            ("password", "short"),
        ],
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = act(
        &server,
        &mut browser,
        &csrf,
        &[
            ("action", "user.add"),
            ("username", "e ve"),
            ("password", "long-enough-1"),
        ],
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // Disable: dave's session and refresh token end at once, and he cannot sign in.
    let (mut daves_browser, client_id, refresh) =
        signed_in_with_grant(&server, ("dave", "daves-password")).await;
    let dave = user_id(&server, "dave");
    let r = act(
        &server,
        &mut browser,
        &csrf,
        &[("action", "user.disable"), ("user", &dave)],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_signed_out(&server, &mut daves_browser, &client_id, &refresh).await;
    let mut fresh = Browser::default();
    let r = fresh.get(&server.url("/admin/login")).await;
    let form = hidden(&r.text().await.unwrap(), "csrf");
    let r = fresh
        .post(
            &server.url("/admin/login"),
            &[
                ("csrf", &form),
                ("username", "dave"),
                ("password", "daves-password"),
            ],
        )
        .await;
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "a disabled user signed in"
    );
    let page = browser
        .get(&server.url(&format!("/admin/user?id={dave}")))
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("disabled since"), "{page}");

    // Enable, make admin: dave opens the console.
    let r = act(
        &server,
        &mut browser,
        &csrf,
        &[("action", "user.enable"), ("user", &dave)],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let r = act(
        &server,
        &mut browser,
        &csrf,
        &[("action", "user.grant_admin"), ("user", &dave)],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let (_, daves_csrf) = console_as(&server, "dave", "daves-password").await;
    assert!(!daves_csrf.is_empty(), "an admin was refused");

    // Reset: the old password stops working, the new one signs in.
    let r = act(
        &server,
        &mut browser,
        &csrf,
        &[
            ("action", "user.reset_password"),
            ("user", &dave),
            ("password", "daves-new-password"),
        ],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let (_, ok) = console_as(&server, "dave", "daves-new-password").await;
    assert!(!ok.is_empty());

    // An admin cannot lock themselves out from the console.
    let me = user_id(&server, "admin");
    for action in ["user.disable", "user.revoke_admin", "user.remove"] {
        let r = act(
            &server,
            &mut browser,
            &csrf,
            &[("action", action), ("user", &me)],
        )
        .await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{action}");
    }
    let r = browser.get(&server.url("/admin")).await;
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn grants_consents_clients_and_keys_are_revoked_from_the_console() {
    let server = local(|_| {}).await;
    add_user(&server, "frank", "franks-password");
    let (_, client_id, refresh) = signed_in_with_grant(&server, ("frank", "franks-password")).await;
    let frank = user_id(&server, "frank");
    let (mut browser, csrf) = as_admin(&server).await;
    let page = browser
        .get(&server.url(&format!("/admin/user?id={frank}")))
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains(&client_id), "{page}");
    let family = hidden(&page, "family");

    // One grant: its refresh token dies; the consent stays remembered.
    let r = act(
        &server,
        &mut browser,
        &csrf,
        &[
            ("action", "grant.revoke"),
            ("user", &frank),
            ("family", &family),
        ],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let (status, body) = crate::oauth_browser::refresh_grant(&server, &client_id, &refresh).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let r = act(
        &server,
        &mut browser,
        &csrf,
        &[
            ("action", "grant.revoke"),
            ("user", &frank),
            ("family", &family),
        ],
    )
    .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "revoked twice");
    let (_, out, _) = admin_cli(&server, &["consents", "list", "frank"]);
    assert!(out.contains(&client_id), "{out}");

    // The consent.
    let r = act(
        &server,
        &mut browser,
        &csrf,
        &[
            ("action", "consent.revoke"),
            ("user", &frank),
            ("client_id", &client_id),
        ],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let (_, out, _) = admin_cli(&server, &["consents", "list", "frank"]);
    assert!(out.is_empty(), "{out}");

    // The client.
    let page = browser
        .get(&server.url("/admin/clients"))
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains(&client_id), "{page}");
    let r = act(
        &server,
        &mut browser,
        &csrf,
        &[("action", "client.remove"), ("client_id", &client_id)],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let (_, out, _) = admin_cli(&server, &["clients", "list"]);
    assert!(!out.contains(&client_id), "{out}");

    // A key rotation adds a key.
    let r = act(&server, &mut browser, &csrf, &[("action", "key.rotate")]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "/admin/keys?done=key.rotate");
    let (_, out, _) = admin_cli(&server, &["keys", "list"]);
    assert_eq!(out.lines().count(), 2, "{out}");
    let page = browser
        .get(&server.url("/admin/keys"))
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("published, not signing yet"), "{page}");

    // The other pages render.
    for page in ["/admin/sessions", "/admin/upstreams"] {
        let r = browser.get(&server.url(page)).await;
        assert_eq!(r.status(), StatusCode::OK, "{page}");
    }
    // No GET changes state: an unknown action by GET is not routed.
    let r = browser
        .get(&server.url("/admin/act?action=key.rotate"))
        .await;
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn hostile_names_are_escaped_everywhere() {
    let server = local(|_| {}).await;
    let (mut browser, csrf) = as_admin(&server).await;
    let hostile_user = "<img/src=x/onerror=alert(1)>\"'";
    let r = act(
        &server,
        &mut browser,
        &csrf,
        &[
            ("action", "user.add"),
            ("username", hostile_user),
            ("password", "hostile-password"),
        ],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let (status, body) = register(
        &server,
        json!({"redirect_uris": ["http://127.0.0.1:9/cb?x=\"><script>alert(2)</script>"], "token_endpoint_auth_method": "none", "client_name": "<script>alert(3)</script>"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let users = browser
        .get(&server.url("/admin"))
        .await
        .text()
        .await
        .unwrap();
    let clients = browser
        .get(&server.url("/admin/clients"))
        .await
        .text()
        .await
        .unwrap();
    let id = user_id(&server, hostile_user);
    let user = browser
        .get(&server.url(&format!("/admin/user?id={id}")))
        .await
        .text()
        .await
        .unwrap();
    for html in [&users, &clients, &user] {
        assert!(
            !html.contains("<img") && !html.contains("<script"),
            "{html}"
        );
    }
    assert!(
        users.contains("&lt;img/src=x/onerror=alert(1)&gt;&quot;&#39;"),
        "{users}"
    );
    assert!(
        clients.contains("&lt;script&gt;alert(3)&lt;/script&gt;"),
        "{clients}"
    );
}

fn funnel_row(at: i64, attempt: &str, client: &str, step: &str, reason: Option<&str>) -> FunnelRow {
    FunnelRow {
        at,
        attempt: attempt.to_owned(),
        client_id: client.to_owned(),
        user_id: Some("u1".to_owned()),
        step: step.to_owned(),
        reason: reason.map(str::to_owned),
        grant_key: None,
    }
}

#[tokio::test]
async fn the_funnel_page_shows_attempts_completion_and_stop_reasons() {
    let server = local(|_| {}).await;
    let (mut browser, _) = as_admin(&server).await;
    // Nothing recorded yet: the page says so, and draws no chart.
    let empty = browser
        .get(&server.url("/admin/funnel"))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        empty.contains("No authorization attempts in the last 24h"),
        "{empty}"
    );
    assert!(!empty.contains("<svg"), "{empty}");

    // A successful and a failed attempt of one client, a failed one of a
    // client with a hostile name, through the store's recording API (the
    // rows the funnel writer stores).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let hostile = "<script>alert(1)</script>";
    let store = Store::connect(&sqlite_url(server.data_dir()), 1)
        .await
        .unwrap();
    store
        .insert_funnel_rows(&[
            funnel_row(now - 120, "ok1", "client-a", "authorize", None),
            funnel_row(now - 110, "ok1", "client-a", "consent", None),
            funnel_row(now - 100, "ok1", "client-a", "code_redeemed", None),
            funnel_row(now - 90, "bad1", "client-a", "authorize", None),
            funnel_row(
                now - 80,
                "bad1",
                "client-a",
                "consent",
                Some("consent_denied"),
            ),
            funnel_row(now - 70, "bad2", hostile, "authorize", Some("pkce_missing")),
            // Older than an hour: in the 24 h window, not in the 1 h one.
            funnel_row(
                now - 7200,
                "old",
                "client-a",
                "authorize",
                Some("redirect_uri_mismatch"),
            ),
        ])
        .await
        .unwrap();
    store.close().await;

    let r = browser.get(&server.url("/admin/funnel")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("default-src 'none'")
    );
    let html = r.text().await.unwrap();
    // client-a: 3 attempts, 1 completed (33%), its stop reasons linked.
    assert!(
        html.contains("<td><code>client-a</code></td><td>3</td><td>1</td><td>33%</td>"),
        "{html}"
    );
    assert!(
        html.contains("<a href=\"/errors#consent-denied\"><code>consent_denied</code></a> (1)"),
        "{html}"
    );
    assert!(html.contains("/errors#redirect-uri-mismatch"), "{html}");
    // The hostile client: escaped, 1 attempt, none completed.
    assert!(
        html.contains("<td><code>&lt;script&gt;alert(1)&lt;/script&gt;</code></td><td>1</td><td>0</td><td>0%</td>"),
        "{html}"
    );
    assert!(html.contains("/errors#pkce-missing"), "{html}");
    // One chart with a text alternative, its numbers in a table; no script,
    // no inline style.
    assert_eq!(html.matches("<svg").count(), 1, "{html}");
    assert!(html.contains("role=\"img\""), "{html}");
    assert!(html.contains("4 attempts, 1 completed"), "{html}");
    assert!(
        !html.contains("<script") && !html.contains("style="),
        "{html}"
    );

    // The last hour leaves the old attempt out.
    let hour = browser
        .get(&server.url("/admin/funnel?since=1h"))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        hour.contains("<td><code>client-a</code></td><td>2</td><td>1</td><td>50%</td>"),
        "{hour}"
    );
    assert!(!hour.contains("redirect_uri_mismatch"), "{hour}");

    // A signed-in non-admin is refused.
    add_user(&server, "bob", "bobs-password");
    let (mut bob, _) = console_as(&server, "bob", "bobs-password").await;
    let r = bob.get(&server.url("/admin/funnel")).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(!r.text().await.unwrap().contains("client-a"));
}
