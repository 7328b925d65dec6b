//! `[upstreams.user_auth]`: each user connects their own account at an
//! OAuth-protected upstream. The upstream is the fixture (its `http_headers`
//! tool shows what it received); its authorization server is the fake IdP's
//! standard part (DCR, `/authorize` with a signed-in user and remembered
//! consent, `/token` checking PKCE, `/revoke`).

use std::sync::Arc;

use mcpgate::upstream::settings::{RawUserAuth, RawUserAuthSetting};
use reqwest::StatusCode;
use rmcp::{
    ClientHandler, RoleClient, ServiceExt,
    model::{
        CallToolRequestParams, ClientCapabilities, ClientConfig, CustomNotification,
        ElicitRequestParams, ElicitResult, ElicitationAction, ElicitationCapability,
        FormElicitationCapability, Implementation, ProtocolVersion, UrlElicitationCapability,
    },
    service::{NotificationContext, RequestContext},
    transport::{
        StreamableHttpClientTransport, streamable_http_client::StreamableHttpClientTransportConfig,
    },
};
use serde_json::{Value, json};

use crate::{
    common::TestServer,
    fake_idp::FakeIdp,
    gateway::{ALICE, BOB, HttpFixture, call, http, local_gateway, structured},
    oauth_browser::{
        Browser, REDIRECT, authorize_url, exchange_code, location, pkce, public_client, query_of,
        sign_in_and_approve,
    },
};

/// A token for `login` and the browser that signed in to get it (it keeps
/// mcpgate's login session).
async fn token_and_browser(server: &TestServer, login: (&str, &str)) -> (String, Browser) {
    let client_id = public_client(server).await;
    let (verifier, challenge) = pkce();
    let authorize = authorize_url(server, &client_id, &challenge, REDIRECT);
    let mut browser = Browser::default();
    let back = sign_in_and_approve(server, &mut browser, &authorize, login, &[]).await;
    let code = query_of(&back)["code"].clone();
    let (status, tokens) = exchange_code(server, &client_id, &code, &verifier).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    (tokens["access_token"].as_str().unwrap().to_owned(), browser)
}

async fn protected_gateway(idp: &FakeIdp, fixture: &HttpFixture) -> TestServer {
    let issuer = idp.issuer.clone();
    let url = fixture.url.clone();
    let (server, _) = local_gateway(move |raw, _| {
        raw.gateway = Some(mcpgate::upstream::settings::RawGateway {
            prefix: Some("always".into()),
            ..Default::default()
        });
        raw.upstreams = vec![mcpgate::upstream::settings::RawUpstream {
            user_auth: Some(RawUserAuthSetting::Table(RawUserAuth {
                authorization_server: Some(issuer),
                ..RawUserAuth::default()
            })),
            ..http("gh", &url)
        }];
    })
    .await;
    server
}

/// The URL elicitation of a -32042 answer.
fn elicitation(reply: &Value) -> &Value {
    assert_eq!(reply["error"]["code"], json!(-32042), "{reply}");
    let e = &reply["error"]["data"]["elicitations"][0];
    assert_eq!(e["mode"], "url", "{reply}");
    assert!(e["elicitationId"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(e["message"].as_str().is_some_and(|s| s.contains("gh")));
    e
}

fn idp_cookie(browser: &mut Browser, user: &str) {
    browser
        .cookies
        .push(("idp_user".to_owned(), user.to_owned()));
}

#[tokio::test]
async fn a_user_connects_their_own_account_and_the_upstream_gets_their_token_never_the_clients() {
    let idp = FakeIdp::start().await;
    let fixture = HttpFixture::start("127.0.0.1:0");
    let server = protected_gateway(&idp, &fixture).await;
    let (token, mut alice) = token_and_browser(&server, ALICE).await;
    server.set_token(&token);
    let sid = server.initialize().await;

    // Not connected: the list offers a way in, a call answers with the link.
    let list = server.session_call(&sid, 2, "tools/list", json!({})).await;
    let names: Vec<&str> = list["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(names.contains(&"gh__connect"), "{list}");
    let reply = call(&server, &sid, 3, "gh__http_headers", json!({})).await;
    let link = elicitation(&reply)["url"].as_str().unwrap().to_owned();
    assert!(link.starts_with(&server.url("/connect/gh?e=")), "{link}");

    // Alice's browser, signed in to mcpgate as alice, follows it.
    let start = alice.get(&link).await;
    assert_eq!(start.status(), StatusCode::SEE_OTHER);
    let to_as = location(&start);
    assert!(
        to_as.starts_with(&format!("{}/authorize?", idp.issuer)),
        "{to_as}"
    );
    let q = query_of(&to_as);
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(
        q["resource"], fixture.url,
        "RFC 8707: the upstream's own resource"
    );
    assert_eq!(q["redirect_uri"], server.url("/connect/callback"));
    // mcpgate registered itself (DCR) with that redirect URI.
    let client_id = q["client_id"].clone();
    assert_eq!(client_id, "dcr-client-1");
    idp.remember_consent("alice-at-gh", &client_id);
    idp_cookie(&mut alice, "alice-at-gh");
    let back = alice.get(&to_as).await;
    assert_eq!(back.status(), StatusCode::FOUND);
    let done = alice.get(&location(&back)).await;
    assert_eq!(done.status(), StatusCode::OK);
    assert!(done.text().await.unwrap().contains("connected"));

    // The retried call reaches the upstream with alice's token there.
    let reply = call(&server, &sid, 4, "gh__http_headers", json!({})).await;
    let authorization = structured(&reply)["headers"]["authorization"]
        .as_str()
        .unwrap_or_else(|| panic!("no authorization upstream: {reply}"))
        .to_owned();
    assert_eq!(
        authorization,
        "Bearer IDP-ACCESS-TOKEN(user=alice-at-gh,client=dcr-client-1)"
    );
    assert!(!authorization.contains(&token));
    // The token request carried the PKCE verifier and the resource.
    let requests = idp.token_requests.lock().unwrap().clone();
    let (_, form) = requests.last().unwrap();
    assert_eq!(form["resource"], fixture.url);
    assert!(form.contains_key("code_verifier"));
}

/// Alice's browser, signed in to mcpgate, follows a connect link to the end
/// (the upstream's sign-in as `alice-at-gh`, consent remembered).
async fn connect_in_browser(idp: &FakeIdp, alice: &mut Browser, link: &str) {
    let start = alice.get(link).await;
    assert_eq!(start.status(), StatusCode::SEE_OTHER);
    let to_as = location(&start);
    let client_id = query_of(&to_as)["client_id"].clone();
    idp.remember_consent("alice-at-gh", &client_id);
    idp_cookie(alice, "alice-at-gh");
    let back = alice.get(&to_as).await;
    assert_eq!(back.status(), StatusCode::FOUND);
    let done = alice.get(&location(&back)).await;
    assert_eq!(done.status(), StatusCode::OK);
}

#[tokio::test]
async fn another_signed_in_user_is_refused_at_the_connect_page_and_a_link_is_single_user() {
    let idp = FakeIdp::start().await;
    let fixture = HttpFixture::start("127.0.0.1:0");
    let server = protected_gateway(&idp, &fixture).await;
    let (token, _) = token_and_browser(&server, ALICE).await;
    let (_, mut bob) = token_and_browser(&server, BOB).await;
    server.set_token(&token);
    let sid = server.initialize().await;
    let reply = call(&server, &sid, 2, "gh__http_headers", json!({})).await;
    let link = elicitation(&reply)["url"].as_str().unwrap().to_owned();

    // Bob (phished with alice's link) is refused before any redirect.
    let page = bob.get(&link).await;
    assert_eq!(page.status(), StatusCode::FORBIDDEN);
    let html = page.text().await.unwrap();
    assert!(html.contains("another mcpgate user"), "{html}");
    assert!(idp.standard.lock().unwrap().authorize_requests.is_empty());
    // No browser session at all: asked to sign in, not sent on.
    let anonymous = Browser::default().get(&link).await;
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    // A tampered link is refused.
    let tampered = link[..link.len() - 5].to_owned();
    let page = bob.get(&tampered).await;
    assert_eq!(page.status(), StatusCode::BAD_REQUEST);
    // A callback with a state no browser started is refused.
    let page = bob
        .get(&server.url("/connect/callback?state=forged&code=x"))
        .await;
    assert_eq!(page.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_denied_sign_in_is_shown_and_a_revoked_connection_asks_again() {
    let idp = FakeIdp::start().await;
    let fixture = HttpFixture::start("127.0.0.1:0");
    let server = protected_gateway(&idp, &fixture).await;
    let (token, mut alice) = token_and_browser(&server, ALICE).await;
    server.set_token(&token);
    let sid = server.initialize().await;
    let reply = call(&server, &sid, 2, "gh__http_headers", json!({})).await;
    let link = elicitation(&reply)["url"].as_str().unwrap().to_owned();

    // The authorization server says no: the page says so; the attempt is spent.
    let start = alice.get(&link).await;
    let state = query_of(&location(&start))["state"].clone();
    let denied = alice
        .get(&server.url(&format!(
            "/connect/callback?state={state}&error=access_denied&error_description=user+said+no"
        )))
        .await;
    assert_eq!(denied.status(), StatusCode::FORBIDDEN);
    assert!(
        denied
            .text()
            .await
            .unwrap()
            .contains("access_denied: user said no")
    );
    let again = alice
        .get(&server.url(&format!("/connect/callback?state={state}&code=x")))
        .await;
    assert_eq!(again.status(), StatusCode::BAD_REQUEST);

    // Connect for real, then the operator revokes it.
    let start = alice.get(&link).await;
    let to_as = location(&start);
    let client_id = query_of(&to_as)["client_id"].clone();
    idp.remember_consent("alice-at-gh", &client_id);
    idp_cookie(&mut alice, "alice-at-gh");
    let back = alice.get(&to_as).await;
    assert_eq!(alice.get(&location(&back)).await.status(), StatusCode::OK);
    let reply = call(&server, &sid, 3, "gh__http_headers", json!({})).await;
    structured(&reply);

    let (ok, out, err) = connections_cli(
        &server,
        (&idp, &fixture),
        &["connections", "list", "--user", "alice"],
    )
    .await;
    assert!(ok, "{err}");
    assert!(out.starts_with("gh\tconnected"), "{out}");
    let (ok, out, err) = connections_cli(
        &server,
        (&idp, &fixture),
        &[
            "connections",
            "revoke",
            "--user",
            "alice",
            "--upstream",
            "gh",
        ],
    )
    .await;
    assert!(ok, "{err}");
    assert!(out.contains("revoked alice's connection to gh"), "{out}");
    assert_eq!(
        idp.revoked.lock().unwrap().as_slice(),
        ["IDP-ACCESS-TOKEN(user=alice-at-gh,client=dcr-client-1)"],
        "revoked at the upstream's authorization server too"
    );
    let reply = call(&server, &sid, 4, "gh__http_headers", json!({})).await;
    elicitation(&reply);
}

#[tokio::test]
async fn a_token_the_upstream_refuses_is_refreshed_or_the_user_is_asked_to_connect_again() {
    let idp = FakeIdp::start().await;
    let refused = tempfile::NamedTempFile::new().unwrap();
    let fixture = HttpFixture::start_with(
        "--http",
        "127.0.0.1:0",
        &[("FIXTURE_REFUSE_TOKENS_FILE", refused.path())],
    );
    let server = protected_gateway(&idp, &fixture).await;
    let (token, mut alice) = token_and_browser(&server, ALICE).await;
    server.set_token(&token);
    let sid = server.initialize().await;
    let reply = call(&server, &sid, 2, "gh__http_headers", json!({})).await;
    let link = elicitation(&reply)["url"].as_str().unwrap().to_owned();
    connect_in_browser(&idp, &mut alice, &link).await;
    let reply = call(&server, &sid, 3, "gh__http_headers", json!({})).await;
    let upstream_token = structured(&reply)["headers"]["authorization"]
        .as_str()
        .unwrap()
        .strip_prefix("Bearer ")
        .unwrap()
        .to_owned();

    // Alice revokes mcpgate's access at the upstream: it answers 401. This
    // authorization server gave no refresh token, so there is nothing to
    // refresh with: the same call asks her to connect again (not an opaque
    // failure, and not a connection that stays broken).
    std::fs::write(refused.path(), format!("{upstream_token}\n")).unwrap();
    let reply = call(&server, &sid, 4, "gh__http_headers", json!({})).await;
    let link = elicitation(&reply)["url"].as_str().unwrap().to_owned();
    let (ok, out, err) = connections_cli(
        &server,
        (&idp, &fixture),
        &["connections", "list", "--user", "alice"],
    )
    .await;
    assert!(ok, "{err}");
    assert!(!out.contains("gh\tconnected"), "{out}");

    // She connects again and the upstream takes the new token.
    std::fs::write(refused.path(), "").unwrap();
    connect_in_browser(&idp, &mut alice, &link).await;
    let reply = call(&server, &sid, 5, "gh__http_headers", json!({})).await;
    assert!(
        structured(&reply)["headers"]["authorization"].is_string(),
        "{reply}"
    );
}

/// The CLI against the test server's store, with the same upstream; run
/// without blocking this runtime, which serves the fake IdP.
async fn connections_cli(
    server: &TestServer,
    (idp, fixture): (&FakeIdp, &HttpFixture),
    args: &[&str],
) -> (bool, String, String) {
    let config = server.data_dir().join("connections.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[store]\nurl = {:?}\n[auth]\nmode = \"local\"\n[auth.local]\n\n[[upstreams]]\nname = \"gh\"\nurl = {:?}\n[upstreams.user_auth]\nauthorization_server = {:?}\n",
            server.data_dir().display().to_string(),
            crate::common::sqlite_url(server.data_dir()),
            fixture.url,
            idp.issuer,
        ),
    )
    .unwrap();
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_mcpgate"));
    command.args(args).arg("--config").arg(&config);
    for (key, _) in std::env::vars() {
        if key.starts_with("MCPGATE_") {
            command.env_remove(key);
        }
    }
    let out = command.output().await.unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// -- the shapes of "connect first", by what the client supports

/// An rmcp client (2025-11-25, a session) that declares URL elicitation
/// (or, with `url_mode` false, form mode only). On a URL elicitation it
/// answers `answer` at once and, when accepting, has alice's browser follow
/// the link a moment later: the call must wait for the connection.
struct UrlClient {
    url_mode: bool,
    answer: ElicitationAction,
    idp: Arc<FakeIdp>,
    browser: Arc<tokio::sync::Mutex<Browser>>,
    asked: Arc<std::sync::Mutex<Vec<(String, String)>>>,
    completed: Arc<std::sync::Mutex<Vec<Value>>>,
}

impl ClientHandler for UrlClient {
    fn get_info(&self) -> ClientConfig {
        let elicitation = if self.url_mode {
            ElicitationCapability::new().with_url(UrlElicitationCapability::new())
        } else {
            ElicitationCapability::new().with_form(FormElicitationCapability::default())
        };
        let mut capabilities = ClientCapabilities::default();
        capabilities.elicitation = Some(elicitation);
        ClientConfig::new(capabilities, Implementation::new("it-url-client", "1"))
            .with_protocol_version(ProtocolVersion::V_2025_11_25)
    }

    async fn create_elicitation(
        &self,
        request: ElicitRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, rmcp::ErrorData> {
        let ElicitRequestParams::UrlElicitationParams {
            url,
            elicitation_id,
            ..
        } = request
        else {
            panic!("a form elicitation: {request:?}");
        };
        self.asked
            .lock()
            .unwrap()
            .push((url.clone(), elicitation_id));
        if self.answer == ElicitationAction::Accept {
            let (idp, browser) = (self.idp.clone(), self.browser.clone());
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                connect_in_browser(&idp, &mut *browser.lock().await, &url).await;
            });
        }
        Ok(ElicitResult::new(self.answer.clone()))
    }

    async fn on_custom_notification(
        &self,
        notification: CustomNotification,
        _context: NotificationContext<RoleClient>,
    ) {
        if notification.method == "notifications/elicitation/complete" {
            self.completed
                .lock()
                .unwrap()
                .push(notification.params.unwrap_or_default());
        }
    }
}

async fn url_client(
    server: &TestServer,
    token: &str,
    client: UrlClient,
) -> rmcp::service::RunningService<RoleClient, UrlClient> {
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(server.url("/mcp")).auth_header(token),
    );
    client.serve(transport).await.unwrap()
}

fn url_client_for(
    idp: &Arc<FakeIdp>,
    browser: Browser,
    url_mode: bool,
    answer: ElicitationAction,
) -> UrlClient {
    UrlClient {
        url_mode,
        answer,
        idp: idp.clone(),
        browser: Arc::new(tokio::sync::Mutex::new(browser)),
        asked: Default::default(),
        completed: Default::default(),
    }
}

#[tokio::test]
async fn a_2025_client_with_url_elicitation_is_asked_during_the_call_which_waits_and_runs() {
    let idp = Arc::new(FakeIdp::start().await);
    let fixture = HttpFixture::start("127.0.0.1:0");
    let server = protected_gateway(&idp, &fixture).await;
    let (token, alice) = token_and_browser(&server, ALICE).await;

    // Form mode only: the link as error -32042, as for any other client.
    let form_only = url_client(
        &server,
        &token,
        url_client_for(&idp, Browser::default(), false, ElicitationAction::Accept),
    )
    .await;
    let refused = form_only
        .call_tool(CallToolRequestParams::new("gh__http_headers"))
        .await
        .unwrap_err();
    assert!(
        format!("{refused:?}").contains("-32042"),
        "form mode only gets the error: {refused:?}"
    );
    form_only.cancel().await.unwrap();

    // Declined: a tool error naming why, and nothing reached the upstream.
    let declining = url_client(
        &server,
        &token,
        url_client_for(&idp, Browser::default(), true, ElicitationAction::Decline),
    )
    .await;
    let result = declining
        .call_tool(CallToolRequestParams::new("gh__http_headers"))
        .await
        .unwrap();
    assert_eq!(result.is_error, Some(true), "{result:?}");
    let said = format!("{:?}", result.content);
    assert!(
        said.contains("declined connecting their account at gh"),
        "{said}"
    );
    assert_eq!(declining.service().asked.lock().unwrap().len(), 1);
    declining.cancel().await.unwrap();

    // Accepted: the call waits for alice's browser to finish the connect page,
    // announces the elicitation complete, then runs with alice's token there.
    let accepting = url_client(
        &server,
        &token,
        url_client_for(&idp, alice, true, ElicitationAction::Accept),
    )
    .await;
    let result = accepting
        .call_tool(CallToolRequestParams::new("gh__http_headers"))
        .await
        .unwrap();
    assert_ne!(result.is_error, Some(true), "{result:?}");
    let headers = result.structured_content.clone().unwrap_or_default();
    assert_eq!(
        headers["headers"]["authorization"],
        "Bearer IDP-ACCESS-TOKEN(user=alice-at-gh,client=dcr-client-1)",
        "{result:?}"
    );
    let asked = accepting.service().asked.lock().unwrap().clone();
    assert_eq!(asked.len(), 1);
    assert!(asked[0].0.starts_with(&server.url("/connect/gh?e=")));
    assert_eq!(
        accepting.service().completed.lock().unwrap().as_slice(),
        [json!({"elicitationId": asked[0].1})],
        "notifications/elicitation/complete names the elicitation"
    );
    // Connected now: the next call is not asked again.
    accepting
        .call_tool(CallToolRequestParams::new("gh__http_headers"))
        .await
        .unwrap();
    assert_eq!(accepting.service().asked.lock().unwrap().len(), 1);
    accepting.cancel().await.unwrap();
}

/// A 2026-07-28 `tools/call` (no session) from a client that declares URL
/// elicitation (or not); `extra` goes into the params.
async fn modern_call(
    server: &TestServer,
    id: i64,
    tool: &str,
    url_mode: bool,
    extra: Value,
) -> Value {
    let capabilities = if url_mode {
        json!({"elicitation": {"url": {}}})
    } else {
        json!({"elicitation": {"form": {}}})
    };
    let mut params = json!({
        "name": tool,
        "arguments": {},
        "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientInfo": {"name": "it", "version": "1"},
            "io.modelcontextprotocol/clientCapabilities": capabilities
        }
    });
    if let (Some(p), Value::Object(extra)) = (params.as_object_mut(), extra) {
        p.extend(extra);
    }
    let response = server
        .mcp_post()
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", tool)
        .json(&json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    crate::common::response_message(response).await
}

/// The URL elicitation and the state of an `input_required` answer.
fn input_required(reply: &Value) -> (String, String) {
    let result = &reply["result"];
    assert_eq!(result["resultType"], "input_required", "{reply}");
    let request = &result["inputRequests"]["connect_gh"];
    assert_eq!(request["method"], "elicitation/create", "{reply}");
    assert_eq!(request["params"]["mode"], "url", "{reply}");
    assert!(
        request["params"]["message"]
            .as_str()
            .unwrap()
            .contains("gh")
    );
    let state = result["requestState"].as_str().unwrap().to_owned();
    assert!(state.starts_with("mcpgate-connect."), "{state}");
    (request["params"]["url"].as_str().unwrap().to_owned(), state)
}

fn invalid_params(reply: &Value, cause: &str) {
    assert_eq!(reply["error"]["code"], json!(-32602), "{reply}");
    let message = reply["error"]["message"].as_str().unwrap();
    assert!(message.contains(cause), "{cause} in {message}");
}

#[tokio::test]
async fn a_2026_client_gets_input_required_with_a_sealed_state_bound_to_its_user_and_tool() {
    let idp = FakeIdp::start().await;
    let fixture = HttpFixture::start("127.0.0.1:0");
    let server = protected_gateway(&idp, &fixture).await;
    let (bob_token, _) = token_and_browser(&server, BOB).await;
    let (token, mut alice) = token_and_browser(&server, ALICE).await;
    server.set_token(&token);

    // No URL mode declared: the error, with the link.
    let reply = modern_call(&server, 1, "gh__http_headers", false, json!({})).await;
    elicitation(&reply);

    let reply = modern_call(&server, 2, "gh__http_headers", true, json!({})).await;
    let (link, state) = input_required(&reply);
    assert!(link.starts_with(&server.url("/connect/gh?e=")), "{link}");
    let accept = json!({"connect_gh": {"action": "accept"}});

    // The state is checked: altered, for another tool, by another user.
    let mut altered = state.clone();
    altered.replace_range(state.len() - 4.., "AAAA");
    let reply = modern_call(
        &server,
        3,
        "gh__http_headers",
        true,
        json!({"requestState": altered, "inputResponses": accept}),
    )
    .await;
    invalid_params(&reply, "not issued by mcpgate or was altered");
    let reply = modern_call(
        &server,
        4,
        "gh__echo",
        true,
        json!({"requestState": state, "inputResponses": accept}),
    )
    .await;
    invalid_params(&reply, "issued for another tool");
    server.set_token(&bob_token);
    let reply = modern_call(
        &server,
        5,
        "gh__http_headers",
        true,
        json!({"requestState": state, "inputResponses": accept}),
    )
    .await;
    invalid_params(&reply, "another user");
    server.set_token(&token);

    // Still not connected and no answer: asked again. Declined: a tool error.
    let reply = modern_call(
        &server,
        6,
        "gh__http_headers",
        true,
        json!({"requestState": state}),
    )
    .await;
    input_required(&reply);
    let reply = modern_call(
        &server,
        7,
        "gh__http_headers",
        true,
        json!({"requestState": state, "inputResponses": {"connect_gh": {"action": "decline"}}}),
    )
    .await;
    assert_eq!(reply["result"]["isError"], json!(true), "{reply}");
    assert!(
        reply["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("declined connecting their account at gh")
    );

    // Alice connects; the retry that accepted runs with her token there.
    connect_in_browser(&idp, &mut alice, &link).await;
    let reply = modern_call(
        &server,
        8,
        "gh__http_headers",
        true,
        json!({"requestState": state, "inputResponses": accept}),
    )
    .await;
    assert_eq!(
        structured(&reply)["headers"]["authorization"],
        "Bearer IDP-ACCESS-TOKEN(user=alice-at-gh,client=dcr-client-1)",
        "{reply}"
    );
}

#[tokio::test]
async fn the_admin_console_shows_a_users_connections_and_revokes_one_with_its_csrf_token() {
    use crate::{
        admin_console::{act, console_as, user_id},
        local_auth::admin_cli,
    };
    let idp = FakeIdp::start().await;
    let fixture = HttpFixture::start("127.0.0.1:0");
    let server = protected_gateway(&idp, &fixture).await;
    let (token, mut alice) = token_and_browser(&server, ALICE).await;
    server.set_token(&token);
    let sid = server.initialize().await;
    let reply = call(&server, &sid, 2, "gh__http_headers", json!({})).await;
    let link = elicitation(&reply)["url"].as_str().unwrap().to_owned();
    connect_in_browser(&idp, &mut alice, &link).await;
    structured(&call(&server, &sid, 3, "gh__http_headers", json!({})).await);

    // Bob is an admin; his console shows alice's connection to gh.
    let (ok, _, err) = admin_cli(&server, &["users", "set-admin", BOB.0]);
    assert!(ok, "{err}");
    let (mut console, csrf) = console_as(&server, BOB.0, BOB.1).await;
    assert!(!csrf.is_empty());
    let alice_id = user_id(&server, ALICE.0);
    let page = console
        .get(&server.url(&format!("/admin/user?id={alice_id}")))
        .await;
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(html.contains("<h2>Upstream connections</h2>"), "{html}");
    assert!(html.contains("<td><code>gh</code></td>"), "{html}");
    assert!(html.contains("value=\"connection.revoke\""), "{html}");

    // A forged form changes nothing.
    let revoke = [
        ("action", "connection.revoke"),
        ("user", alice_id.as_str()),
        ("upstream", "gh"),
    ];
    for forged in ["", "forged", &csrf[..csrf.len() - 1]] {
        let r = act(&server, &mut console, forged, &revoke).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "csrf {forged:?}");
    }
    structured(&call(&server, &sid, 4, "gh__http_headers", json!({})).await);

    // With the session's token: revoked here and at the authorization server.
    let r = act(&server, &mut console, &csrf, &revoke).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(
        location(&r).starts_with("/admin/user?id="),
        "{}",
        location(&r)
    );
    assert_eq!(
        idp.revoked.lock().unwrap().as_slice(),
        ["IDP-ACCESS-TOKEN(user=alice-at-gh,client=dcr-client-1)"]
    );
    let html = console
        .get(&server.url(&format!("/admin/user?id={alice_id}")))
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains("No upstream connections."), "{html}");
    // Her next call asks her to connect again; a second revoke finds nothing.
    elicitation(&call(&server, &sid, 5, "gh__http_headers", json!({})).await);
    let r = act(&server, &mut console, &csrf, &revoke).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}
