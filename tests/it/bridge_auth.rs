//! `auth.mode = "bridge"`: the IdP issues the tokens; mcpgate serves its
//! discovery on mcpgate's origin, registers clients through the Auth0
//! Management API (or relays the IdP's own DCR), rewrites `/authorize` and
//! relays `/token`. The fake IdP plays Auth0's Management API contract.

use mcpgate::config::{RawBridge, RawResourceAuth};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    common::TestServer,
    fake_idp::FakeIdp,
    oauth_browser::{Browser, REDIRECT, location, no_redirects, pkce, query_of, register},
    security_bridge::approve,
};

async fn bridge(idp: &FakeIdp, edit: impl FnOnce(&mut RawBridge)) -> TestServer {
    let mut raw_bridge = RawBridge {
        registrar: Some("auth0".to_owned()),
        management_client_id: Some("m2m".to_owned()),
        management_client_secret: Some("m2m-secret".to_owned()),
        ..RawBridge::default()
    };
    edit(&mut raw_bridge);
    let server = TestServer::start_with(|raw| {
        raw.auth.mode = Some("bridge".to_owned());
        raw.auth.resource = Some(RawResourceAuth {
            issuer: Some(idp.issuer.clone()),
            ..RawResourceAuth::default()
        });
        raw.auth.bridge = Some(raw_bridge);
    })
    .await;
    idp.set_resource(&server.url("/mcp"));
    server
}

#[tokio::test]
async fn auth0_bridge_registers_through_the_management_api_and_rewrites_the_flow() {
    let idp = FakeIdp::start().await;
    let server = bridge(&idp, |_| {}).await;

    // Discovery points at mcpgate; the keys are the IdP's.
    let prm = server
        .get_json("/.well-known/oauth-protected-resource/mcp")
        .await;
    assert_eq!(prm["authorization_servers"], json!([server.base]));
    let meta = server
        .get_json("/.well-known/oauth-authorization-server")
        .await;
    assert_eq!(meta["issuer"], server.base);
    assert_eq!(meta["registration_endpoint"], server.url("/register"));
    assert_eq!(meta["token_endpoint"], server.url("/token"));
    assert_eq!(meta["jwks_uri"], format!("{}/jwks", idp.issuer));
    assert_eq!(meta["code_challenge_methods_supported"], json!(["S256"]));

    // Registration: a Management API token (client credentials), then a client.
    idp.answer_token(
        200,
        json!({"access_token": "mgmt-token", "token_type": "Bearer", "expires_in": 86400}),
    );
    let (status, body) = register(
        &server,
        json!({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none", "client_name": "Claude"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["client_id"], "auth0-client-1");
    assert!(body.get("client_secret").is_none(), "public client: {body}");
    assert_eq!(body["redirect_uris"], json!([REDIRECT]));
    {
        let requests = idp.token_requests.lock().unwrap();
        let (_, form) = &requests[0];
        assert_eq!(form["grant_type"], "client_credentials");
        assert_eq!(form["client_id"], "m2m");
        assert_eq!(form["audience"], format!("{}/api/v2/", idp.issuer));
        let created = idp.management_clients.lock().unwrap();
        // Auth0 only ever redirects to mcpgate, at the client's own callback;
        // the client's own URIs stay here.
        let callbacks = created[0]["callbacks"].as_array().unwrap();
        assert_eq!(callbacks.len(), 1);
        assert!(
            callbacks[0]
                .as_str()
                .unwrap()
                .starts_with(&server.url("/callback/"))
        );
        assert_eq!(created[0]["app_type"], "native");
        assert_eq!(created[0]["token_endpoint_auth_method"], "none");
        assert_eq!(created[0]["name"], "Claude");
    }
    // The Management API token is reused while valid.
    let (status, body) = register(
        &server,
        json!({"redirect_uris": ["https://chatgpt.com/connector_platform_oauth_redirect"], "token_endpoint_auth_method": "client_secret_post"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["client_secret"], "auth0-secret");
    assert_eq!(idp.token_requests.lock().unwrap().len(), 1);

    // The redirect-URI policy applies before anything reaches Auth0.
    let (status, body) = register(&server, json!({"redirect_uris": ["javascript:alert(1)"]})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_redirect_uri");
    assert_eq!(idp.management_clients.lock().unwrap().len(), 2);
    // Auth0 refusing (missing create:clients) is our upstream's failure: 502, no detail leaked.
    idp.management_status
        .store(403, std::sync::atomic::Ordering::SeqCst);
    let (status, body) = register(&server, json!({"redirect_uris": [REDIRECT]})).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(body["error"], "temporarily_unavailable");
    assert!(!body.to_string().contains("mgmt-token"));

    // /authorize: mcpgate's consent page first; once approved, resource
    // becomes the audience; state and redirect_uri become mcpgate's (the
    // client's own callback); everything else passes through.
    let (verifier, challenge) = pkce();
    let q = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("response_type", "code")
        .append_pair("client_id", "auth0-client-1")
        .append_pair("redirect_uri", REDIRECT)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256")
        .append_pair("state", "s-1")
        .append_pair("scope", "openid offline_access")
        .append_pair("resource", &server.url("/mcp"))
        .finish();
    let mut browser = Browser::default();
    let to = approve(&server, &mut browser, &q).await;
    assert!(
        to.starts_with(&format!("{}/authorize?", idp.issuer)),
        "{to}"
    );
    let p = query_of(&to);
    assert_eq!(p["audience"], server.url("/mcp"));
    assert!(!p.contains_key("resource"));
    assert_ne!(p["state"], "s-1");
    assert_eq!(p["code_challenge"], challenge);
    let callback = idp.management_clients.lock().unwrap()[0]["callbacks"][0]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(p["redirect_uri"], callback);
    // The IdP answers at the client's callback, with its own iss (RFC 9207);
    // the client gets its state back and mcpgate as iss, the issuer it discovered.
    let back = format!(
        "{callback}?code=idp-code&state={}&iss={}",
        p["state"],
        url::form_urlencoded::byte_serialize(idp.issuer.as_bytes()).collect::<String>()
    );
    let r = browser.get(&back).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let to = location(&r);
    assert!(to.starts_with(REDIRECT), "{to}");
    let q = query_of(&to);
    assert_eq!(q["code"], "idp-code");
    assert_eq!(q["state"], "s-1");
    assert_eq!(q["iss"], server.base);
    // Single use.
    let r = browser.get(&back).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(location(&r).is_empty());
    // Pages, never redirects: no PKCE, an unregistered redirect URI, an unknown client.
    for query in [
        format!("response_type=code&client_id=auth0-client-1&redirect_uri={REDIRECT}"),
        format!(
            "response_type=code&client_id=auth0-client-1&redirect_uri=https://evil.example/cb&code_challenge={challenge}&code_challenge_method=S256"
        ),
        format!(
            "response_type=code&client_id=unknown&code_challenge={challenge}&code_challenge_method=S256"
        ),
    ] {
        let r = no_redirects()
            .get(server.url(&format!("/authorize?{query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{query}");
        assert!(location(&r).is_empty(), "{query}");
    }

    // /token is relayed without `resource` (the audience names the API);
    // the IdP's token works on /mcp.
    let access = idp.token("auth0|alice", "calc");
    idp.answer_token(
        200,
        json!({"access_token": access, "token_type": "Bearer", "expires_in": 3600}),
    );
    let r = server
        .client
        .post(server.url("/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("client_id", "auth0-client-1"),
            ("code", "idp-code"),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &verifier),
            ("resource", &server.url("/mcp")),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let tokens: Value = r.json().await.unwrap();
    {
        let requests = idp.token_requests.lock().unwrap();
        let (_, form) = requests.last().unwrap();
        assert_eq!(form["code"], "idp-code");
        assert!(!form.contains_key("resource"));
        assert_eq!(form["redirect_uri"], callback);
    }
    server.set_token(tokens["access_token"].as_str().unwrap());
    server.initialize().await;
    // A token for another audience is refused.
    let mut claims = idp.claims("auth0|alice", "calc");
    claims["aud"] = json!("https://other.example/api");
    server.set_token(&idp.sign(&claims));
    let r = server.mcp_post().body("{}").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // The IdP's own errors pass through with their status.
    let r = server
        .client
        .post(server.url("/token"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("client_id", "auth0-client-1"),
            ("refresh_token", "used"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_grant");
}

#[tokio::test]
async fn passthrough_bridge_relays_the_idps_own_registration() {
    let idp = FakeIdp::start().await;
    let server = bridge(&idp, |b| {
        b.registrar = Some("passthrough".to_owned());
        b.management_client_id = None;
        b.management_client_secret = None;
    })
    .await;
    let (status, body) = register(
        &server,
        json!({"redirect_uris": [REDIRECT], "client_name": "Inspector"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["client_id"], "dcr-client-1");
    assert_eq!(body["redirect_uris"], json!([REDIRECT]));
    let relayed = idp.registrations.lock().unwrap()[0].clone();
    assert_eq!(relayed["client_name"], "Inspector");
    let callback = relayed["redirect_uris"][0].as_str().unwrap();
    assert!(
        callback.starts_with(&server.url("/callback/")),
        "each client its own callback: {relayed}"
    );
    // Browser-based clients can call it (CORS), as they could not call the IdP's.
    let r = server
        .client
        .request(reqwest::Method::OPTIONS, server.url("/register"))
        .header("origin", "http://localhost:6274")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    assert!(r.headers().contains_key("access-control-allow-origin"));
    // No audience parameter unless configured; mcpgate's /mcp as `resource`.
    let (_, challenge) = pkce();
    let to = approve(
        &server,
        &mut Browser::default(),
        &format!(
            "response_type=code&client_id=dcr-client-1&code_challenge={challenge}&code_challenge_method=S256"
        ),
    )
    .await;
    let p = query_of(&to);
    assert!(!p.contains_key("audience"), "{p:?}");
    assert_eq!(p["resource"], server.url("/mcp"));
}

/// Issue 16 item 4: with no `audience` configured, the bridge forwards
/// mcpgate's `/mcp` as `resource` on `/authorize` and `/token` (an RFC 8707
/// IdP with no default resource otherwise issues a token `/mcp` refuses),
/// always spelled as `/mcp` accepts it, and refuses any other resource
/// before the IdP sees it.
#[tokio::test]
async fn passthrough_bridge_forwards_resource_to_the_idp() {
    let idp = FakeIdp::start().await;
    let server = bridge(&idp, |b| {
        b.registrar = Some("passthrough".to_owned());
        b.management_client_id = None;
        b.management_client_secret = None;
    })
    .await;
    let ours = server.url("/mcp");
    let (status, body) = register(
        &server,
        json!({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (verifier, challenge) = pkce();
    let query = |resource: &str| {
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("response_type", "code")
            .append_pair("client_id", "dcr-client-1")
            .append_pair("redirect_uri", REDIRECT)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256")
            .append_pair("state", "s-1")
            .append_pair("resource", resource)
            .finish()
    };

    // Another server's resource: a page, no redirect, nothing stored.
    let r = no_redirects()
        .get(server.url(&format!(
            "/authorize?{}",
            query("https://elsewhere.example/mcp")
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(location(&r).is_empty());
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("resource is not served here"),
        "the page names the cause"
    );

    // The client's spelling (a trailing slash) reaches the IdP as /mcp accepts it.
    let mut browser = Browser::default();
    let to = approve(&server, &mut browser, &query(&format!("{ours}/"))).await;
    let p = query_of(&to);
    assert_eq!(p["resource"], ours);
    assert!(!p.contains_key("audience"), "{p:?}");
    let back = format!("{}?code=idp-code&state={}", p["redirect_uri"], p["state"]);
    let r = browser.get(&back).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);

    // /token: another resource is refused here, never relayed.
    let token = |resource: Option<&str>| {
        let mut form = vec![
            ("grant_type", "authorization_code".to_owned()),
            ("client_id", "dcr-client-1".to_owned()),
            ("code", "idp-code".to_owned()),
            ("redirect_uri", REDIRECT.to_owned()),
            ("code_verifier", verifier.clone()),
        ];
        if let Some(r) = resource {
            form.push(("resource", r.to_owned()));
        }
        server.client.post(server.url("/token")).form(&form).send()
    };
    let r = token(Some("https://elsewhere.example/mcp")).await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_target");
    assert!(idp.token_requests.lock().unwrap().is_empty());

    // The client's resource, or none: the IdP gets /mcp either way.
    for sent in [Some(ours.as_str()), None] {
        idp.answer_token(
            200,
            json!({"access_token": idp.token("alice", "calc"), "token_type": "Bearer"}),
        );
        let r = token(sent).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{sent:?}");
        let requests = idp.token_requests.lock().unwrap();
        let (_, form) = requests.last().unwrap();
        assert_eq!(form["resource"], ours, "{sent:?}");
        assert!(!form.contains_key("audience"), "{form:?}");
    }
    // A refresh carries it too.
    idp.answer_token(400, json!({"error": "invalid_grant"}));
    server
        .client
        .post(server.url("/token"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("client_id", "dcr-client-1"),
            ("refresh_token", "r-1"),
        ])
        .send()
        .await
        .unwrap();
    let requests = idp.token_requests.lock().unwrap();
    let (_, form) = requests.last().unwrap();
    assert_eq!(form["grant_type"], "refresh_token");
    assert_eq!(form["resource"], ours);
}

/// An answer at the callback naming another issuer (an IdP mix-up) stops
/// there: the client gets a page, never a code.
#[tokio::test]
async fn a_callback_naming_another_issuer_is_refused() {
    let idp = FakeIdp::start().await;
    let server = bridge(&idp, |b| {
        b.registrar = Some("passthrough".to_owned());
        b.management_client_id = None;
        b.management_client_secret = None;
    })
    .await;
    let (status, _) = register(&server, json!({"redirect_uris": [REDIRECT]})).await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, challenge) = pkce();
    let mut browser = Browser::default();
    let to = approve(
        &server,
        &mut browser,
        &format!(
            "response_type=code&client_id=dcr-client-1&code_challenge={challenge}&code_challenge_method=S256&state=s"
        ),
    )
    .await;
    let p = query_of(&to);
    let r = browser
        .get(&format!(
            "{}?code=c&state={}&iss=https%3A%2F%2Fevil.example",
            p["redirect_uri"], p["state"]
        ))
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(location(&r).is_empty());
}

/// The bridge's edge answers as the local server's does (one front, issue
/// 15): a parameter sent twice is refused on every endpoint (RFC 6749 §3.1),
/// JSON errors carry `no-store` with `Pragma`, the browser binding cookie
/// lives as long as the request it binds, a registration flood gets the
/// shared rate-limit code, and every redirect is a 303.
#[tokio::test]
async fn the_bridge_edge_answers_as_the_local_server_does() {
    let idp = FakeIdp::start().await;
    let server = bridge(&idp, |b| {
        b.registrar = Some("passthrough".to_owned());
        b.management_client_id = None;
        b.management_client_secret = None;
        b.registrations_per_minute = Some(1);
    })
    .await;
    let (status, body) = register(
        &server,
        json!({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let client_id = body["client_id"].as_str().unwrap().to_owned();
    let (status, body) = register(&server, json!({"redirect_uris": [REDIRECT]})).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["error"], "temporarily_unavailable");

    // /token: twice the same name is invalid_request, never relayed.
    let r = server
        .client
        .post(server.url("/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=authorization_code&code=a&code=b")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert_eq!(r.headers()["pragma"], "no-cache");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("code appears more than once"),
        "{body}"
    );
    assert!(idp.token_requests.lock().unwrap().is_empty());

    // /authorize and /consent: a page, no redirect, nothing stored.
    let (_, challenge) = pkce();
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("response_type", "code")
        .append_pair("client_id", &client_id)
        .append_pair("redirect_uri", REDIRECT)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256")
        .append_pair("state", "s-1")
        .finish();
    for (path, form) in [
        (
            format!("/authorize?{query}&redirect_uri=https%3A%2F%2Fevil.example%2Fcb"),
            None,
        ),
        (
            "/consent".to_owned(),
            Some("request=r&csrf=c&decision=approve&decision=deny"),
        ),
    ] {
        let request = match form {
            None => no_redirects().get(server.url(&path)),
            Some(form) => no_redirects()
                .post(server.url(&path))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form),
        };
        let r = request.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{path}");
        assert!(location(&r).is_empty(), "{path}");
        assert_eq!(r.headers()["x-frame-options"], "DENY", "{path}");
        let html = r.text().await.unwrap();
        assert!(html.contains("appears more than once"), "{path}: {html}");
    }

    // The consent page's cookie lives as long as the pending request.
    let mut browser = Browser::default();
    let r = browser
        .get(&server.url(&format!("/authorize?{query}")))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.starts_with("mcpgate_bridge=") && cookie.contains("; Max-Age=600"),
        "{cookie}"
    );
    let to = approve(&server, &mut browser, &query).await;
    assert!(to.starts_with(&idp.issuer), "{to}");
}

/// Issue 18 item 4 in bridge mode: failed and successful bridged flows are
/// traced step by step with their reasons, joined into attempts as on the
/// local server (by the PKCE challenge up to the code's redemption, then by
/// client and user), counted, and shown by `mcpgate funnel --json`.
#[tokio::test]
async fn bridged_attempts_are_traced_with_their_reasons() {
    use crate::{
        auth_funnel::{attempts_until, series},
        local_auth::admin_cli,
        security_bridge::consent_page,
    };
    let idp = FakeIdp::start().await;
    let server = bridge(&idp, |b| {
        b.registrar = Some("passthrough".to_owned());
        b.management_client_id = None;
        b.management_client_secret = None;
    })
    .await;
    let (status, body) = register(
        &server,
        json!({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let client = "dcr-client-1";
    let query = |challenge: &str| {
        format!(
            "response_type=code&client_id={client}&redirect_uri={}&code_challenge={challenge}&code_challenge_method=S256&state=s",
            urlencode(REDIRECT)
        )
    };

    // 1. No PKCE: refused at /authorize.
    let r = no_redirects()
        .get(server.url(&format!(
            "/authorize?response_type=code&client_id={client}&redirect_uri={}",
            urlencode(REDIRECT)
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // 2. Denied on mcpgate's consent page.
    let (_, challenge) = pkce();
    let mut browser = Browser::default();
    let (request, csrf) = consent_page(&server, &mut browser, &query(&challenge)).await;
    let denied = browser
        .post(
            &server.url("/consent"),
            &[("request", &request), ("csrf", &csrf), ("decision", "deny")],
        )
        .await;
    assert_eq!(query_of(&location(&denied))["error"], "access_denied");
    // 3. Declined at the IdP: its error code is the reason's detail.
    let (_, challenge) = pkce();
    let mut browser = Browser::default();
    let p = query_of(&approve(&server, &mut browser, &query(&challenge)).await);
    let r = browser
        .get(&format!(
            "{}?error=access_denied&state={}",
            p["redirect_uri"], p["state"]
        ))
        .await;
    assert_eq!(query_of(&location(&r))["error"], "access_denied");

    // 4. The whole way: code, a call on /mcp, a refresh; then the code again
    // (the IdP refuses it) and a refresh token the IdP does not know.
    let (verifier, challenge) = pkce();
    let mut browser = Browser::default();
    let p = query_of(&approve(&server, &mut browser, &query(&challenge)).await);
    let r = browser
        .get(&format!(
            "{}?code=idp-code&state={}",
            p["redirect_uri"], p["state"]
        ))
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let mut claims = idp.claims("alice", "calc");
    claims["client_id"] = json!(client);
    let access = idp.sign(&claims);
    let redeem = || {
        server.client.post(server.url("/token")).form(&[
            ("grant_type", "authorization_code"),
            ("client_id", client),
            ("code", "idp-code"),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &verifier),
        ])
    };
    let refresh = |token: &str| {
        server.client.post(server.url("/token")).form(&[
            ("grant_type", "refresh_token"),
            ("client_id", client),
            ("refresh_token", token),
        ])
    };
    idp.answer_token(
        200,
        json!({"access_token": access, "token_type": "Bearer", "refresh_token": "r-1"}),
    );
    let r = redeem().send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    server.set_token(&access);
    let (status, _) = server
        .stateless_call(1, "tools/list", None, json!({}))
        .await;
    assert_eq!(status, 200);
    idp.answer_token(
        200,
        json!({"access_token": idp.sign(&claims), "token_type": "Bearer", "refresh_token": "r-2"}),
    );
    assert_eq!(
        refresh("r-1").send().await.unwrap().status(),
        StatusCode::OK
    );
    idp.answer_token(400, json!({"error": "invalid_grant"}));
    assert_eq!(
        redeem().send().await.unwrap().status(),
        StatusCode::BAD_REQUEST
    );
    idp.answer_token(400, json!({"error": "invalid_grant"}));
    assert_eq!(
        refresh("r-unknown").send().await.unwrap().status(),
        StatusCode::BAD_REQUEST
    );

    let attempts = attempts_until(&server, client, |a| {
        a.iter().map(|a| a.steps.len()).sum::<usize>() >= 15
    })
    .await;
    let mut all: Vec<Vec<String>> = attempts.iter().map(series).collect();
    all.sort();
    let mut expected: Vec<Vec<&str>> = vec![
        vec!["authorize:pkce_missing"],
        vec!["authorize", "consent:consent_denied"],
        vec![
            "authorize",
            "consent",
            "upstream_callback:idp_error:access_denied",
        ],
        vec![
            "authorize",
            "consent",
            "upstream_callback",
            "code_redeemed",
            "mcp_call",
            "refresh",
            "code_redeemed:idp_error:invalid_grant",
        ],
        vec!["refresh:idp_error:invalid_grant"],
        vec!["registered"],
    ];
    expected.sort();
    assert_eq!(all, expected, "{attempts:#?}");
    let whole = attempts.iter().find(|a| a.steps.len() == 7).unwrap();
    assert_eq!(whole.user_id.as_deref(), Some("alice"));

    let metrics = server.get_text("/metrics").await;
    for series in [
        format!(
            r#"mcpgate_auth_funnel_total{{client="{client}",step="upstream_callback",reason="idp_error"}} 1"#
        ),
        format!(
            r#"mcpgate_auth_funnel_total{{client="{client}",step="consent",reason="consent_denied"}} 1"#
        ),
        format!(
            r#"mcpgate_auth_funnel_total{{client="{client}",step="code_redeemed",reason="ok"}} 1"#
        ),
        format!(r#"mcpgate_auth_funnel_total{{client="{client}",step="refresh",reason="ok"}} 1"#),
    ] {
        assert!(
            metrics.contains(&series),
            "{series} missing from\n{metrics}"
        );
    }

    let (ok, out, err) = admin_cli(
        &server,
        &["funnel", "--client", client, "--since", "2h", "--json"],
    );
    assert!(ok, "{err}");
    let shown: Value = serde_json::from_str(&out).unwrap();
    let shown = shown["attempts"].as_array().unwrap();
    assert_eq!(shown.len(), 6, "{shown:?}");
    assert!(
        shown
            .iter()
            .any(|a| a["stopped"] == "idp_error:access_denied"),
        "{shown:?}"
    );
}

fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}
