//! `mcpgate doctor` against a healthy mcpgate and deliberately broken
//! servers: each break is found with its cause and fix, not only "fail".

use std::time::Duration;

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use mcpgate::{
    config::{RawConfig, RawResourceAuth, RawStore},
    doctor::{
        Outcome, Report, config_lint,
        endpoint::{self, DEFAULT_ORIGIN, EndpointOptions},
        token::ClientCredentials,
    },
    idp::settings::RawUpstreamIdp,
};
use serde_json::{Value, json};

use crate::{
    common::TestServer,
    fake_idp::{FakeIdp, now},
};

fn options(url: &str) -> EndpointOptions {
    EndpointOptions {
        url: url.to_owned(),
        token: None,
        client_credentials: None,
        register: true,
        origin: DEFAULT_ORIGIN.to_owned(),
        timeout: Duration::from_secs(5),
        now: now(),
    }
}

async fn doctor(options: &EndpointOptions) -> Report {
    endpoint::check(options).await.unwrap()
}

/// The check `id`, asserting its outcome; shows the whole report otherwise.
fn expect<'r>(report: &'r Report, id: &str, outcome: Outcome) -> &'r mcpgate::doctor::Check {
    let check = report
        .get(id)
        .unwrap_or_else(|| panic!("no check {id} in {report:#?}"));
    assert_eq!(check.outcome, outcome, "{id}: {report:#?}");
    check
}

fn cause(check: &mcpgate::doctor::Check) -> &str {
    check.cause.as_deref().unwrap_or_default()
}

fn fix(check: &mcpgate::doctor::Check) -> &str {
    check.fix.as_deref().unwrap_or_default()
}

#[tokio::test]
async fn a_healthy_mcpgate_passes_every_check() {
    let server = TestServer::start_with(|raw| {
        raw.auth.mode = Some("local".into());
        raw.http.allowed_origins = vec![DEFAULT_ORIGIN.to_owned()];
    })
    .await;
    let report = doctor(&options(&server.url("/mcp"))).await;
    assert!(!report.failed(), "{report:#?}");
    for id in [
        "transport",
        "reach",
        "path.redirect",
        "challenge",
        "prm.fetch",
        "prm.resource",
        "prm.authorization_servers",
        "as.fetch",
        "as.issuer",
        "as.pkce",
        "as.registration",
        "as.iss_param",
        "as.auth_methods",
        "dcr",
        "cors",
    ] {
        expect(&report, id, Outcome::Pass);
    }
    // Without a token these are skipped, never guessed.
    expect(&report, "token", Outcome::Skip);
    expect(&report, "discover", Outcome::Skip);
    let text = mcpgate::doctor::render::text(&report);
    assert!(
        text.ends_with("15 passed, 0 warnings, 0 failed, 2 skipped\n"),
        "{text}"
    );
}

#[tokio::test]
async fn a_wrong_public_url_is_named_as_the_audience_cause() {
    let server = TestServer::start_with(|raw| {
        raw.auth.mode = Some("local".into());
        raw.public_url = Some("https://mcp.example.com".into());
    })
    .await;
    let report = doctor(&options(&server.url("/mcp"))).await;
    assert!(report.failed());
    let check = expect(&report, "prm.resource", Outcome::Fail);
    assert!(cause(check).contains("another host"), "{check:?}");
    assert!(cause(check).contains("wrong public URL"), "{check:?}");
    assert!(
        fix(check).contains(&format!("public_url = \"{}\"", server.base)),
        "{check:?}"
    );
    assert_eq!(check.docs, "docs/guide/doctor.md#prm-resource");
    // The 401 points at the wrong host too: found and named.
    let fetch = expect(&report, "prm.fetch", Outcome::Fail);
    assert!(
        fetch
            .summary
            .contains("https://mcp.example.com/.well-known/oauth-protected-resource/mcp"),
        "{fetch:?}"
    );
    assert!(fix(fetch).contains("public_url"), "{fetch:?}");
}

/// A stand-in for a broken MCP server: what it gets wrong is set per test.
#[derive(Clone, Default)]
struct StandIn {
    base: String,
    redirect_mcp: bool,
    no_prm: bool,
    unquoted: bool,
    metadata: Value,
    dcr_status: u16,
}

async fn stand_in_mcp(State(s): State<StandIn>) -> Response {
    if s.redirect_mcp {
        return (
            StatusCode::TEMPORARY_REDIRECT,
            [(header::LOCATION, "/mcp/")],
        )
            .into_response();
    }
    stand_in_challenge(State(s)).await
}

async fn stand_in_challenge(State(s): State<StandIn>) -> Response {
    let metadata = format!("{}/.well-known/oauth-protected-resource/mcp", s.base);
    let value = if s.unquoted {
        format!("Bearer resource_metadata={metadata}, scope=read")
    } else {
        format!("Bearer resource_metadata=\"{metadata}\", scope=\"read\"")
    };
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, value)],
        Json(json!({"error":"invalid_token"})),
    )
        .into_response()
}

async fn stand_in_prm(State(s): State<StandIn>) -> Response {
    if s.no_prm {
        return StatusCode::NOT_FOUND.into_response();
    }
    Json(json!({"resource": format!("{}/mcp", s.base), "authorization_servers": [s.base]}))
        .into_response()
}

async fn stand_in_register(State(s): State<StandIn>, _: HeaderMap) -> Response {
    if s.dcr_status == 201 {
        return (
            StatusCode::CREATED,
            Json(json!({"client_id": "stand-in-1"})),
        )
            .into_response();
    }
    (
        StatusCode::from_u16(s.dcr_status).unwrap(),
        Json(json!({"error":"access_denied","error_description":"Policy 'Trusted Hosts' rejected request to client-registration service. Details: Host not trusted."})),
    )
        .into_response()
}

/// Start `stand_in` on `bind`; its `base` is set from the bound address
/// (`host` replaces the IP when given).
async fn start_stand_in(mut stand_in: StandIn, bind: &str, host: Option<&str>) -> String {
    let listener = tokio::net::TcpListener::bind(bind).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let base = format!("http://{}:{port}", host.unwrap_or("127.0.0.1"));
    stand_in.base = base.clone();
    if stand_in.metadata.is_null() {
        stand_in.metadata = json!({
            "issuer": base, "authorization_endpoint": format!("{base}/authorize"),
            "token_endpoint": format!("{base}/token"), "registration_endpoint": format!("{base}/register"),
            "code_challenge_methods_supported": ["S256"],
        });
    }
    let metadata = stand_in.metadata.clone();
    let app = Router::new()
        .route("/mcp", post(stand_in_mcp))
        .route("/mcp/", post(stand_in_challenge))
        .route(
            "/.well-known/oauth-protected-resource/mcp",
            get(stand_in_prm),
        )
        .route(
            "/.well-known/oauth-authorization-server",
            get(move || async move { Json(metadata) }),
        )
        .route("/register", post(stand_in_register))
        .with_state(stand_in);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    base
}

#[tokio::test]
async fn missing_protected_resource_metadata_is_a_failure_with_where_to_serve_it() {
    let base = start_stand_in(
        StandIn {
            no_prm: true,
            dcr_status: 201,
            ..StandIn::default()
        },
        "127.0.0.1:0",
        None,
    )
    .await;
    let report = doctor(&options(&format!("{base}/mcp"))).await;
    let check = expect(&report, "prm.fetch", Outcome::Fail);
    assert!(cause(check).contains("answered 404"), "{check:?}");
    assert!(
        fix(check).contains(&format!(
            "serve RFC 9728 metadata at {base}/.well-known/oauth-protected-resource/mcp"
        )),
        "{check:?}"
    );
    // Nothing after it is guessed: no AS checks without an issuer.
    assert!(report.get("as.fetch").is_none());
}

#[tokio::test]
async fn a_redirected_mcp_path_fails_and_names_the_final_url() {
    let base = start_stand_in(
        StandIn {
            redirect_mcp: true,
            dcr_status: 201,
            ..StandIn::default()
        },
        "127.0.0.1:0",
        None,
    )
    .await;
    let report = doctor(&options(&format!("{base}/mcp"))).await;
    let check = expect(&report, "path.redirect", Outcome::Fail);
    assert!(
        cause(check).contains("do not follow redirects on POST"),
        "{check:?}"
    );
    assert!(
        fix(check).contains("give clients the final URL (/mcp/)"),
        "{check:?}"
    );
    assert!(report.failed());
}

#[tokio::test]
async fn an_unquoted_resource_metadata_fails() {
    let base = start_stand_in(
        StandIn {
            unquoted: true,
            dcr_status: 201,
            ..StandIn::default()
        },
        "127.0.0.1:0",
        None,
    )
    .await;
    let report = doctor(&options(&format!("{base}/mcp"))).await;
    let check = expect(&report, "challenge", Outcome::Fail);
    assert!(fix(check).contains("quote every value"), "{check:?}");
    // The metadata is still found (the value parses).
    expect(&report, "prm.fetch", Outcome::Pass);
}

/// This host's address on a non-loopback interface (no packet is sent: a
/// UDP connect only picks the route).
fn non_loopback_ip() -> std::net::IpAddr {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    socket.connect("192.0.2.1:9").unwrap();
    let ip = socket.local_addr().unwrap().ip();
    assert!(!ip.is_loopback(), "this host has no non-loopback address");
    ip
}

#[tokio::test]
async fn http_off_loopback_is_a_warning_with_the_tls_fix() {
    let ip = non_loopback_ip().to_string();
    let base = start_stand_in(
        StandIn {
            dcr_status: 201,
            ..StandIn::default()
        },
        &format!("{ip}:0"),
        Some(&ip),
    )
    .await;
    let report = doctor(&options(&format!("{base}/mcp"))).await;
    let check = expect(&report, "transport", Outcome::Warn);
    assert!(cause(check).contains("require https"), "{check:?}");
    assert!(fix(check).contains("put TLS in front"), "{check:?}");
    // The rest still runs: a warning does not stop the doctor.
    expect(&report, "prm.resource", Outcome::Pass);
    assert!(!report.failed(), "{report:#?}");
}

#[tokio::test]
async fn no_registration_at_all_fails_and_a_refused_registration_shows_the_servers_reason() {
    let base = start_stand_in(
        StandIn {
            metadata: json!({"issuer": "placeholder"}),
            ..StandIn::default()
        },
        "127.0.0.1:0",
        None,
    )
    .await;
    // The placeholder issuer differs from the URL: also a named failure.
    let report = doctor(&options(&format!("{base}/mcp"))).await;
    let issuer = expect(&report, "as.issuer", Outcome::Fail);
    assert!(cause(issuer).contains("mix-up"), "{issuer:?}");
    let check = expect(&report, "as.registration", Outcome::Fail);
    assert!(fix(check).contains("enable DCR"), "{check:?}");
    expect(&report, "as.pkce", Outcome::Fail);
    expect(&report, "dcr", Outcome::Skip);

    let base = start_stand_in(
        StandIn {
            dcr_status: 403,
            ..StandIn::default()
        },
        "127.0.0.1:0",
        None,
    )
    .await;
    let report = doctor(&options(&format!("{base}/mcp"))).await;
    let check = expect(&report, "dcr", Outcome::Fail);
    assert!(cause(check).contains("Host not trusted"), "{check:?}");
    assert!(fix(check).contains("Trusted Hosts"), "{check:?}");
    // The opt-out flag: no registration is attempted.
    let mut quiet = options(&format!("{base}/mcp"));
    quiet.register = false;
    let report = doctor(&quiet).await;
    assert_eq!(
        expect(&report, "dcr", Outcome::Skip).summary,
        "not tried (--no-register)"
    );
}

async fn resource_server(idp: &FakeIdp) -> TestServer {
    let issuer = idp.issuer.clone();
    let server = TestServer::start_with(|raw| {
        raw.auth.mode = Some("resource".into());
        raw.auth.resource = Some(RawResourceAuth {
            issuer: Some(issuer),
            ..RawResourceAuth::default()
        });
    })
    .await;
    idp.set_resource(&server.url("/mcp"));
    server
}

#[tokio::test]
async fn a_wrong_audience_token_is_caught_before_and_by_the_server() {
    let idp = FakeIdp::start().await;
    let server = resource_server(&idp).await;
    let mut opts = options(&server.url("/mcp"));

    // A good token: every token check passes, and server/discover answers.
    opts.token = Some(
        idp.token("alice", "calc docs:read notes:read notes:write")
            .into(),
    );
    let report = doctor(&opts).await;
    for id in [
        "token.iss",
        "token.aud",
        "token.exp",
        "token.scope",
        "token.accepted",
        "discover",
    ] {
        expect(&report, id, Outcome::Pass);
    }

    idp.set_resource("https://other.example.com/api");
    opts.token = Some(idp.token("alice", "calc").into());
    let report = doctor(&opts).await;
    let aud = expect(&report, "token.aud", Outcome::Fail);
    assert!(cause(aud).contains("classic wrong-audience"), "{aud:?}");
    assert!(
        fix(aud).contains(&format!("aud = {}", server.url("/mcp"))),
        "{aud:?}"
    );
    assert!(fix(aud).contains("audience mapper"), "{aud:?}");
    let accepted = expect(&report, "token.accepted", Outcome::Fail);
    assert!(cause(accepted).contains("invalid_token"), "{accepted:?}");
    expect(&report, "token.scope", Outcome::Warn);
    // Not blamed on the server's protocol revision.
    expect(&report, "discover", Outcome::Skip);
    assert!(report.failed());
}

#[tokio::test]
async fn client_credentials_fetch_a_token_for_the_resource() {
    let idp = FakeIdp::start().await;
    let server = resource_server(&idp).await;
    idp.answer_token(200, json!({"access_token": idp.token("svc", "calc docs:read notes:read notes:write"), "token_type": "Bearer"}));
    let mut opts = options(&server.url("/mcp"));
    opts.register = false;
    opts.client_credentials = Some(
        ClientCredentials::parse(
            &r#"{"client_id":"svc","client_secret":"s3cret"}"#.to_owned().into(),
        )
        .unwrap(),
    );
    let report = doctor(&opts).await;
    expect(&report, "token.fetch", Outcome::Pass);
    expect(&report, "token.accepted", Outcome::Pass);
    let requests = idp.token_requests.lock().unwrap().clone();
    let (auth, form) = requests.last().unwrap();
    assert_eq!(form["grant_type"], "client_credentials");
    assert_eq!(form["resource"], server.url("/mcp"));
    assert!(auth.as_deref().unwrap().starts_with("Basic "));
    // The secret is in no check's text.
    let text = mcpgate::doctor::render::json(&report);
    assert!(!text.contains("s3cret"));
}

fn proxy_config(idp: &FakeIdp, preset: &str) -> mcpgate::config::Config {
    let dir = std::env::temp_dir();
    RawConfig {
        public_url: Some("https://mcp.example.com".into()),
        listen: Some("127.0.0.1:0".into()),
        data_dir: Some(dir.clone()),
        store: RawStore {
            url: Some("sqlite::memory:".into()),
            max_connections: None,
        },
        auth: mcpgate::config::RawAuth {
            mode: Some("proxy".into()),
            upstream: Some(RawUpstreamIdp {
                preset: Some(preset.into()),
                issuer: Some(idp.issuer.clone()),
                client_id: Some("mcpgate-up".into()),
                client_secret: Some("s".into()),
                scopes: Some(vec!["openid".into(), "email".into()]),
                ..RawUpstreamIdp::default()
            }),
            ..Default::default()
        },
        ..RawConfig::default()
    }
    .validate()
    .unwrap()
}

#[tokio::test]
async fn config_lint_probes_the_redirect_uri_at_the_idp() {
    let idp = FakeIdp::start().await;
    let cfg = proxy_config(&idp, "keycloak");
    let lint = |cfg| async move {
        config_lint::lint(
            &cfg,
            "test",
            &config_lint::LintOptions {
                timeout: Duration::from_secs(5),
                register: false,
            },
        )
        .await
        .unwrap()
    };
    idp.standard.lock().unwrap().clients.insert(
        "mcpgate-up".into(),
        vec!["https://elsewhere.example/cb".into()],
    );
    let report = lint(cfg.clone()).await;
    expect(&report, "idp.discovery", Outcome::Pass);
    let check = expect(&report, "idp.redirect_uri", Outcome::Fail);
    assert!(
        cause(check).contains("redirect_uri not registered"),
        "{check:?}"
    );
    assert!(
        fix(check).contains("Valid redirect URIs: add https://mcp.example.com/callback"),
        "{check:?}"
    );
    // offline_access dropped from the preset's scopes: a warning with the fix.
    assert!(
        fix(expect(&report, "idp.offline_access", Outcome::Warn)).contains("add offline_access")
    );
    // What the console alone shows is said to be so, not guessed.
    expect(&report, "idp.refresh_lifetime", Outcome::Skip);

    idp.standard.lock().unwrap().clients.insert(
        "mcpgate-up".into(),
        vec!["https://mcp.example.com/callback".into()],
    );
    let report = lint(cfg).await;
    expect(&report, "idp.redirect_uri", Outcome::Pass);
    // The query really carried our client and callback.
    let last = idp
        .standard
        .lock()
        .unwrap()
        .authorize_requests
        .last()
        .cloned()
        .unwrap();
    assert_eq!(last["redirect_uri"], "https://mcp.example.com/callback");
    assert_eq!(last["code_challenge_method"], "S256");
}

#[tokio::test]
async fn config_lint_in_resource_mode_tries_the_idps_registration() {
    let issuer = start_stand_in(
        StandIn {
            dcr_status: 403,
            ..StandIn::default()
        },
        "127.0.0.1:0",
        None,
    )
    .await;
    let mut raw = RawConfig {
        public_url: Some("https://mcp.example.com".into()),
        listen: Some("127.0.0.1:0".into()),
        data_dir: Some(std::env::temp_dir()),
        store: RawStore {
            url: Some("sqlite::memory:".into()),
            max_connections: None,
        },
        ..RawConfig::default()
    };
    raw.auth.mode = Some("resource".into());
    raw.auth.resource = Some(RawResourceAuth {
        issuer: Some(issuer),
        ..RawResourceAuth::default()
    });
    let cfg = raw.validate().unwrap();
    let lint = |register| {
        let cfg = cfg.clone();
        async move {
            let options = config_lint::LintOptions {
                timeout: Duration::from_secs(5),
                register,
            };
            config_lint::lint(&cfg, "test", &options).await.unwrap()
        }
    };
    let report = lint(true).await;
    expect(&report, "idp.discovery", Outcome::Pass);
    let dcr = expect(&report, "idp.dcr", Outcome::Fail);
    assert!(cause(dcr).contains("Host not trusted"), "{dcr:?}");
    assert!(
        fix(dcr).contains("Anonymous access policies → Trusted Hosts"),
        "{dcr:?}"
    );
    // The audience is not visible from outside: said so, with the way to check it.
    let audience = expect(&report, "idp.audience", Outcome::Skip);
    assert!(audience.summary.contains("cannot be checked from outside"));
    assert!(audience.summary.contains("https://mcp.example.com/mcp"));
    assert!(report.failed());
    assert_eq!(
        expect(&lint(false).await, "idp.dcr", Outcome::Skip).summary,
        "not tried (--no-register)"
    );
}
