//! The admin console's MCP sessions (End, as the client's DELETE) and its
//! Clients page with every kind of client (registered, configured, CIMD),
//! each also from the CLI.

use mcpgate::{
    admin::session_handle,
    oauth::{configured_clients::RawConfiguredClient, settings::RawPinnedDocument},
};
use reqwest::StatusCode;
use serde_json::json;

use crate::{
    admin_console::{act, add_user, as_admin},
    local_auth::{admin_cli, local},
    oauth_browser::{
        Browser, REDIRECT, authorize_url, exchange_code, location, pkce, query_of, refresh_grant,
        sign_in_and_approve, user_token,
    },
};

#[tokio::test]
async fn an_mcp_session_ended_from_the_console_or_cli_gets_404_next() {
    let server = local(|_| {}).await;
    add_user(&server, "frank", "franks-password");
    let (token, _) = user_token(&server, ("frank", "franks-password"), None).await;
    server.set_token(&token);
    let sid = server.initialize().await;
    let (status, _) = server
        .session_request(&sid, 2, "tools/list", json!({}))
        .await;
    assert_eq!(status, 200);

    let (mut browser, csrf) = as_admin(&server).await;
    let page = browser
        .get(&server.url("/admin/sessions"))
        .await
        .text()
        .await
        .unwrap();
    let handle = session_handle(&sid);
    assert!(page.contains(&handle), "{page}");
    // The session id is the client's bearer handle: the page never shows it.
    assert!(!page.contains(&sid), "{page}");

    // Without the session's CSRF token nothing ends.
    let r = act(
        &server,
        &mut browser,
        "not-the-token",
        &[("action", "session.end"), ("session", &handle)],
    )
    .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let (status, _) = server
        .session_request(&sid, 3, "tools/list", json!({}))
        .await;
    assert_eq!(status, 200, "a refused form ended the session");

    let r = act(
        &server,
        &mut browser,
        &csrf,
        &[("action", "session.end"), ("session", &handle)],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "/admin/sessions?done=session.end");
    let (status, body) = server
        .session_request(&sid, 4, "tools/list", json!({}))
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], -32001, "{body}");
    let page = browser
        .get(&server.url("/admin/sessions?done=session.end"))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        !page.contains(&handle),
        "an ended session is listed: {page}"
    );
    assert!(page.contains("ended on every replica"), "{page}");
    // Ending it again: nothing live by that name.
    let r = act(
        &server,
        &mut browser,
        &csrf,
        &[("action", "session.end"), ("session", &handle)],
    )
    .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // The CLI: list names the handle, end ends it the same way. A handle is
    // base64url: about one in 64 begins with '-', and the CLI once took
    // such a handle for a flag (this test then failed now and then), so the
    // session used here has such a handle.
    let (other, other_handle) = session_with_a_dashed_handle(&server).await;
    let (ok, out, err) = admin_cli(&server, &["sessions", "list"]);
    assert!(ok, "{err}");
    assert!(out.contains(&other_handle), "{out}");
    assert!(!out.contains(&other), "{out}");
    let (ok, out, err) = admin_cli(&server, &["sessions", "end", &other_handle]);
    assert!(ok, "{out}{err}");
    let (status, _) = server
        .session_request(&other, 2, "tools/list", json!({}))
        .await;
    assert_eq!(status, 404);
    let (ok, _, err) = admin_cli(&server, &["sessions", "end", &other_handle]);
    assert!(!ok);
    assert!(err.contains("no live MCP session"), "{err}");
}

/// A session whose handle begins with '-', and that handle.
async fn session_with_a_dashed_handle(server: &crate::common::TestServer) -> (String, String) {
    for _ in 0..2000 {
        let sid = server.initialize().await;
        let handle = session_handle(&sid);
        if handle.starts_with('-') {
            return (sid, handle);
        }
    }
    panic!("no handle beginning with '-' in 2000 sessions (one in 64 expected)");
}

const DOCUMENT_CLIENT: &str = "https://app.example.com/mcp-client.json";

/// Sign `login` in to `client_id` (public, redirecting to [`REDIRECT`]):
/// its refresh token.
async fn grant_for(
    server: &crate::common::TestServer,
    client_id: &str,
    login: (&str, &str),
) -> String {
    let (verifier, challenge) = pkce();
    let back = sign_in_and_approve(
        server,
        &mut Browser::default(),
        &authorize_url(server, client_id, &challenge, REDIRECT),
        login,
        &[("remember", "1")],
    )
    .await;
    let code = query_of(&back)["code"].clone();
    let (status, tokens) = exchange_code(server, client_id, &code, &verifier).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    tokens["refresh_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn configured_and_document_clients_are_listed_and_their_grants_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let document = dir.path().join("client.json");
    std::fs::write(
        &document,
        json!({
            "client_id": DOCUMENT_CLIENT, "client_name": "Doc App",
            "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
        })
        .to_string(),
    )
    .unwrap();
    let server = local(|l| {
        l.cimd.pinned.push(RawPinnedDocument {
            client_id: DOCUMENT_CLIENT.to_owned(),
            document_file: document.clone(),
        });
        l.clients.push(RawConfiguredClient {
            client_id: "static-app".to_owned(),
            client_name: Some("Static <App>".to_owned()),
            redirect_uris: vec![REDIRECT.to_owned()],
            ..Default::default()
        });
    })
    .await;
    add_user(&server, "frank", "franks-password");
    let login = ("frank", "franks-password");
    let document_refresh = grant_for(&server, DOCUMENT_CLIENT, login).await;
    let configured_refresh = grant_for(&server, "static-app", login).await;

    let (mut browser, csrf) = as_admin(&server).await;
    let page = browser
        .get(&server.url("/admin/clients"))
        .await
        .text()
        .await
        .unwrap();
    let row_of = |id: &str| {
        page.split("<tr>")
            .find(|row| row.contains(&format!("<code>{id}</code>")))
            .unwrap_or_else(|| panic!("no row for {id}: {page}"))
            .to_owned()
    };
    let doc_row = row_of(DOCUMENT_CLIENT);
    assert!(doc_row.contains("metadata document (CIMD)"), "{doc_row}");
    assert!(doc_row.contains("Revoke grants"), "{doc_row}");
    assert!(
        !doc_row.contains("never"),
        "its last use is known: {doc_row}"
    );
    let static_row = row_of("static-app");
    assert!(static_row.contains("configured"), "{static_row}");
    assert!(static_row.contains("Static &lt;App&gt;"), "{static_row}");
    assert!(
        static_row.contains("Removed in the configuration"),
        "{static_row}"
    );
    assert!(!static_row.contains("client.remove"), "{static_row}");

    // The CLI lists every kind too.
    let (ok, out, err) = admin_cli(&server, &["clients", "list", "--all"]);
    assert!(ok, "{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with(DOCUMENT_CLIENT) && l.contains("metadata document")),
        "{out}"
    );

    // Revoking the document client's grants: its refresh token dies, its
    // remembered consent is gone; the configured client is untouched.
    let r = act(
        &server,
        &mut browser,
        &csrf,
        &[
            ("action", "client.revoke_grants"),
            ("client_id", DOCUMENT_CLIENT),
        ],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "/admin/clients?done=client.revoke_grants");
    let (status, body) = refresh_grant(&server, DOCUMENT_CLIENT, &document_refresh).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (_, out, _) = admin_cli(&server, &["consents", "list", "frank"]);
    assert!(!out.contains(DOCUMENT_CLIENT), "{out}");
    assert!(out.contains("static-app"), "{out}");
    let (status, body) = refresh_grant(&server, "static-app", &configured_refresh).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Nothing left to revoke: 404, nothing pretends to have happened.
    let r = act(
        &server,
        &mut browser,
        &csrf,
        &[
            ("action", "client.revoke_grants"),
            ("client_id", DOCUMENT_CLIENT),
        ],
    )
    .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // The configured client's grants from the CLI.
    let (ok, out, err) = admin_cli(&server, &["clients", "revoke-grants", "static-app"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("1 remembered consents forgotten"), "{out}");
    let (_, out, _) = admin_cli(&server, &["consents", "list", "frank"]);
    assert!(out.is_empty(), "{out}");
}
