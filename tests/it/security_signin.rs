//! The review's attacks on sign-in, sessions, users and proxy mode, replayed
//! (each test fails if its defence is removed).

use std::{
    io::Write,
    net::IpAddr,
    sync::{Arc, Mutex},
};

use mcpgate::{
    config::RawUpstreamIdp,
    store::{CodeRecord, NewRefresh, Store},
};
use reqwest::{StatusCode, header};
use serde_json::{Value, json};

use crate::{
    common::TestServer,
    fake_idp::FakeIdp,
    local_auth::{admin_cli, local},
    oauth_browser::{
        Browser, REDIRECT, authorize_url, exchange_code, hidden, location, pkce, public_client,
        query_of, refresh_grant, sign_in_and_approve,
    },
    proxy_auth::{UPSTREAM_CLIENT, callback_url, claims_of, consent_and_go_upstream, proxy},
};

/// `mcpgate_password_checks_total` from `/metrics`.
async fn password_checks(server: &TestServer) -> u64 {
    let text = server.get_text("/metrics").await;
    text.lines()
        .find_map(|l| l.strip_prefix("mcpgate_password_checks_total "))
        .unwrap_or_else(|| panic!("no password check counter in {text}"))
        .trim()
        .parse()
        .unwrap()
}

/// A login form: the browser cookie header, the request id and its CSRF token.
async fn login_form(server: &TestServer) -> (String, String, String) {
    let client_id = public_client(server).await;
    let (_, challenge) = pkce();
    let mut browser = Browser::default();
    let html = browser
        .get(&authorize_url(server, &client_id, &challenge, REDIRECT))
        .await
        .text()
        .await
        .unwrap();
    (
        browser.header(),
        hidden(&html, "request"),
        hidden(&html, "csrf"),
    )
}

/// A client whose connections come from `from` (a loopback address): the
/// address the per-address limits count.
fn client_from(from: IpAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .local_address(from)
        .build()
        .unwrap()
}

/// `POST /login` with the form's browser cookie.
async fn post_login(
    server: &TestServer,
    client: &reqwest::Client,
    (cookie, request, csrf): &(String, String, String),
    username: &str,
    password: &str,
) -> reqwest::Response {
    client
        .post(server.url("/login"))
        .header(header::COOKIE, cookie)
        .form(&[
            ("request", request.as_str()),
            ("csrf", csrf.as_str()),
            ("username", username),
            ("password", password),
        ])
        .send()
        .await
        .unwrap()
}

fn loopback(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

#[tokio::test]
async fn concurrent_wrong_guesses_perform_at_most_the_limit_of_password_checks() {
    const LIMIT: u32 = 5;
    let server = local(|l| l.login_max_failures = Some(LIMIT)).await;
    let password = server.admin_password.clone().unwrap();
    let form = login_form(&server).await;
    let here = client_from(loopback(1));

    // The review's burst: 60 guesses at once, all of which passed the old
    // check-then-count limit.
    let burst = (0..60).map(|_| post_login(&server, &here, &form, "admin", "wrong-password"));
    let statuses: Vec<StatusCode> = futures::future::join_all(burst)
        .await
        .iter()
        .map(|r| r.status())
        .collect();
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::UNAUTHORIZED || *s == StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    assert!(password_checks(&server).await <= u64::from(LIMIT));

    // Use up what is left, one by one.
    let mut refused = None;
    for _ in 0..=LIMIT {
        let r = post_login(&server, &here, &form, "admin", "wrong-password").await;
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            refused = Some(r);
            break;
        }
    }
    let refused = refused.expect("the limit refuses within LIMIT attempts");
    assert!(refused.headers().contains_key(header::RETRY_AFTER));
    assert!(
        refused
            .text()
            .await
            .unwrap()
            .contains("too many sign-in attempts")
    );
    let checks = password_checks(&server).await;
    assert!(checks <= u64::from(LIMIT), "{checks} checks");

    // The right password in a concurrent burst: none of it gets through, and
    // no password is checked any more.
    let burst = (0..20).map(|i| {
        let guess = if i == 10 { password.as_str() } else { "wrong" };
        post_login(&server, &here, &form, "admin", guess)
    });
    for r in futures::future::join_all(burst).await {
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    }
    assert_eq!(password_checks(&server).await, checks);
}

#[tokio::test]
async fn guesses_from_many_addresses_stop_at_the_account_budget_but_the_owner_still_signs_in() {
    let server = local(|l| {
        l.login_max_failures = Some(2);
        l.login_max_failures_per_account = Some(3);
    })
    .await;
    let password = server.admin_password.clone().unwrap();
    let form = login_form(&server).await;
    let owner = client_from(loopback(1));
    let r = post_login(&server, &owner, &form, "admin", &password).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);

    // Attackers on other addresses, each within its own allowance, share
    // the account's: three guesses, then nothing more for anyone new.
    let mut statuses = Vec::new();
    for attacker in [2, 3] {
        let attacker = client_from(loopback(attacker));
        for _ in 0..2 {
            let r = post_login(&server, &attacker, &form, "admin", "guess").await;
            statuses.push(r.status());
        }
    }
    assert_eq!(
        statuses,
        [
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    let r = post_login(
        &server,
        &client_from(loopback(4)),
        &form,
        "admin",
        &password,
    )
    .await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);

    // The owner, from where they signed in before, is not locked out.
    let r = post_login(&server, &owner, &form, "admin", &password).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
}

/// A `MakeWriter` into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

#[tokio::test]
async fn typed_user_names_never_reach_the_log() {
    // The server runs on this (current-thread) runtime, so its events go
    // to this thread's subscriber.
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_max_level(tracing::Level::INFO)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let server = local(|_| {}).await;
    let form = login_form(&server).await;
    let client = client_from(loopback(1));
    // A forged log line with an escape sequence, and a password typed into
    // the user-name field.
    let forged = "nobody\n2026-12-05T08:00:00.000000Z  INFO mcpgate::oauth::http: login succeeded username=admin \u{1b}[31mFORGED";
    let typed_password = "Tr0ub4dor-and-3";
    for name in [forged, typed_password] {
        let r = post_login(&server, &client, &form, name, "wrong-password").await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let r = post_login(&server, &client, &form, "admin", "wrong-password").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    for leaked in [typed_password, "FORGED", "username=admin", "\u{1b}[31m"] {
        assert!(!log.contains(leaked), "{leaked:?} in {log}");
    }
    // The failures are still logged, the existing user by id.
    assert!(log.contains("login failed: unknown user name"), "{log}");
    assert!(log.contains("login failed: wrong password"), "{log}");
}

#[tokio::test]
async fn get_consent_in_proxy_mode_goes_upstream_instead_of_issuing_a_code() {
    let idp = FakeIdp::start().await;
    let server = proxy(&idp, |_| {}).await;
    let client_id = public_client(&server).await;
    let (_, challenge) = pkce();
    let mut browser = Browser::default();
    // dave signs in and remembers his consent: the browser holds his session.
    let up =
        consent_and_go_upstream(&server, &idp, &mut browser, &client_id, &challenge, true).await;
    idp.answer_token(
        200,
        json!({"access_token": "a", "token_type": "Bearer", "id_token": idp.id_token(UPSTREAM_CLIENT, "dave", up.nonce(), json!({}))}),
    );
    let r = browser
        .get(&callback_url(&server, up.state(), "up-code"))
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let upstream_exchanges = idp.token_requests.lock().unwrap().len();

    // A pending request of the same browser (its consent page seen without
    // the session cookie), then the review's request with the session.
    let mut without_session = Browser {
        cookies: browser
            .cookies
            .iter()
            .filter(|(k, _)| !k.contains("session"))
            .cloned()
            .collect(),
    };
    let page = without_session
        .get(&authorize_url(&server, &client_id, &challenge, REDIRECT))
        .await;
    assert_eq!(page.status(), StatusCode::OK);
    let request = hidden(&page.text().await.unwrap(), "request");
    let r = browser
        .get(&server.url(&format!("/consent?request={request}")))
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let to = location(&r);
    assert!(
        to.starts_with(&format!("{}/authorize?", idp.issuer)),
        "a code without the identity provider: {to}"
    );
    assert!(!query_of(&to).contains_key("code"));
    assert_eq!(idp.token_requests.lock().unwrap().len(), upstream_exchanges);

    // Coming back as someone else than dave gets no code either.
    let q = query_of(&to);
    idp.answer_token(
        200,
        json!({"access_token": "a", "token_type": "Bearer", "id_token": idp.id_token(UPSTREAM_CLIENT, "mallory", &q["nonce"], json!({}))}),
    );
    let r = browser
        .get(&callback_url(&server, &q["state"], "up-code"))
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}

/// Sign in upstream as `sub` with `email`; returns mcpgate's tokens.
async fn sign_in_with_email(server: &TestServer, idp: &FakeIdp, sub: &str, email: &str) -> Value {
    let client_id = public_client(server).await;
    let (verifier, challenge) = pkce();
    let mut browser = Browser::default();
    let up =
        consent_and_go_upstream(server, idp, &mut browser, &client_id, &challenge, false).await;
    idp.answer_token(
        200,
        json!({"access_token": "a", "token_type": "Bearer", "id_token": idp.id_token(UPSTREAM_CLIENT, sub, up.nonce(), json!({"email": email}))}),
    );
    let r = browser
        .get(&callback_url(server, up.state(), "up-code"))
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "{sub}");
    let code = query_of(&location(&r))["code"].clone();
    let (status, tokens) = exchange_code(server, &client_id, &code, &verifier).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    tokens
}

/// The review's squatting attack: an attacker's subject signs in with bob's
/// email first; bob (another subject, same email) still signs in, as himself.
async fn same_email_squatting_is_harmless(server: &TestServer, idp: &FakeIdp) {
    let attacker = sign_in_with_email(server, idp, "attacker-sub", "bob@corp.example").await;
    let bob = sign_in_with_email(server, idp, "bob-sub", "bob@corp.example").await;
    let attacker = claims_of(attacker["access_token"].as_str().unwrap());
    let bob = claims_of(bob["access_token"].as_str().unwrap());
    assert_ne!(attacker["sub"], bob["sub"]);
    assert_eq!(bob["email"], "bob@corp.example");
    // And again: both keep working, each as their own user.
    let again = sign_in_with_email(server, idp, "bob-sub", "bob@corp.example").await;
    assert_eq!(
        claims_of(again["access_token"].as_str().unwrap())["sub"],
        bob["sub"]
    );
}

#[tokio::test]
async fn two_upstream_accounts_with_the_same_email_each_sign_in_as_themselves() {
    let idp = FakeIdp::start().await;
    let server = proxy(&idp, |u| {
        u.allowed_email_domains = vec!["corp.example".to_owned()];
    })
    .await;
    same_email_squatting_is_harmless(&server, &idp).await;
}

#[tokio::test]
async fn two_upstream_accounts_with_the_same_email_each_sign_in_as_themselves_on_postgres() {
    let Some(url) = crate::common::fresh_postgres_database("squat").await else {
        return;
    };
    let idp = FakeIdp::start().await;
    let server = TestServer::start_with(|raw| {
        raw.store.url = Some(url);
        raw.auth.mode = Some("proxy".to_owned());
        raw.auth.upstream = Some(RawUpstreamIdp {
            issuer: Some(idp.issuer.clone()),
            client_id: Some(UPSTREAM_CLIENT.to_owned()),
            client_secret: Some("s".to_owned()),
            allowed_email_domains: vec!["corp.example".to_owned()],
            ..RawUpstreamIdp::default()
        });
    })
    .await;
    same_email_squatting_is_harmless(&server, &idp).await;
}

#[tokio::test]
async fn entra_multi_tenant_email_allow_lists_need_a_domain_verified_email() {
    let idp = FakeIdp::start().await;
    let server = proxy(&idp, |u| {
        u.preset = Some("entra".to_owned());
        u.tenant = Some("common".to_owned());
        u.issuer = Some(format!("{}/common/v2.0", idp.issuer));
        u.allowed_email_domains = vec!["corp.example".to_owned()];
    })
    .await;
    let client_id = public_client(&server).await;
    let (_, challenge) = pkce();
    let mut browser = Browser::default();
    // Another tenant's administrator set the victim's address on their own
    // user (nOAuth): no xms_edov, so the email proves nothing.
    for (sub, edov, admitted) in [
        ("evil-tenant-user", json!(null), false),
        ("evil-tenant-user", json!(false), false),
        ("real-user", json!(true), true),
    ] {
        let up =
            consent_and_go_upstream(&server, &idp, &mut browser, &client_id, &challenge, false)
                .await;
        let mut claims = json!({"tid": "t-1", "iss": format!("{}/t-1/v2.0", idp.issuer), "email": "ceo@corp.example"});
        if !edov.is_null() {
            claims["xms_edov"] = edov.clone();
        }
        idp.answer_token(
            200,
            json!({"access_token": "a", "token_type": "Bearer", "id_token": idp.id_token(UPSTREAM_CLIENT, sub, up.nonce(), claims)}),
        );
        let r = browser
            .get(&callback_url(&server, up.state(), "up-code"))
            .await;
        let expected = if admitted {
            StatusCode::SEE_OTHER
        } else {
            StatusCode::FORBIDDEN
        };
        assert_eq!(r.status(), expected, "{sub} xms_edov={edov}");
    }
}

/// The admin CLI with `input` on standard input.
pub(crate) fn admin_cli_input(server: &TestServer, args: &[&str], input: &str) -> (bool, String) {
    let config = server.data_dir().join("admin-stdin.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[store]\nurl = {:?}\n[auth]\nmode = \"local\"\n",
            server.data_dir().display().to_string(),
            crate::common::sqlite_url(server.data_dir()),
        ),
    )
    .unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_mcpgate"));
    command
        .args(args)
        .arg("--config")
        .arg(&config)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (key, _) in std::env::vars() {
        if key.starts_with("MCPGATE_") {
            command.env_remove(key);
        }
    }
    let mut child = command.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// Sign in as `login` remembering consent for a new client: the browser
/// (holding the session) and the refresh token.
pub(crate) async fn signed_in_with_grant(
    server: &TestServer,
    login: (&str, &str),
) -> (Browser, String, String) {
    let client_id = public_client(server).await;
    let (verifier, challenge) = pkce();
    let mut browser = Browser::default();
    let back = sign_in_and_approve(
        server,
        &mut browser,
        &authorize_url(server, &client_id, &challenge, REDIRECT),
        login,
        &[("remember", "1")],
    )
    .await;
    let code = query_of(&back)["code"].clone();
    let (status, tokens) = exchange_code(server, &client_id, &code, &verifier).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    (
        browser,
        client_id,
        tokens["refresh_token"].as_str().unwrap().to_owned(),
    )
}

/// After the CLI acted on the user: their browser session no longer skips
/// the login page and their refresh token is dead.
pub(crate) async fn assert_signed_out(
    server: &TestServer,
    browser: &mut Browser,
    client_id: &str,
    refresh: &str,
) {
    let (_, challenge) = pkce();
    let r = browser
        .get(&authorize_url(server, client_id, &challenge, REDIRECT))
        .await;
    assert_eq!(r.status(), StatusCode::OK, "the session still signs in");
    assert!(r.text().await.unwrap().contains("name=\"password\""));
    let (status, body) = refresh_grant(server, client_id, refresh).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_grant");
}

#[tokio::test]
async fn a_new_password_ends_the_old_ones_sessions_consents_and_grants() {
    let server = local(|_| {}).await;
    let password = server.admin_password.clone().unwrap();
    let (mut browser, client_id, refresh) =
        signed_in_with_grant(&server, ("admin", &password)).await;

    let (ok, out) = admin_cli_input(
        &server,
        &["users", "passwd", "admin", "--password-stdin"],
        "a-brand-new-password\n",
    );
    assert!(ok, "{out}");
    assert!(out.contains("revoked"), "{out}");
    assert_signed_out(&server, &mut browser, &client_id, &refresh).await;
    // The consent remembered under the old password is gone too.
    let (ok, out, err) = admin_cli(&server, &["consents", "list", "admin"]);
    assert!(ok && out.is_empty(), "{out}{err}");
    // The new password works; the old one does not.
    let form = login_form(&server).await;
    let client = client_from(loopback(1));
    let r = post_login(&server, &client, &form, "admin", &password).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = post_login(&server, &client, &form, "admin", "a-brand-new-password").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn a_removed_user_loses_sessions_and_grants_at_once() {
    let server = local(|_| {}).await;
    let (ok, out) = admin_cli_input(
        &server,
        &["users", "add", "bob", "--password-stdin"],
        "bobs-password\n",
    );
    assert!(ok, "{out}");
    let (mut browser, client_id, refresh) =
        signed_in_with_grant(&server, ("bob", "bobs-password")).await;
    let (ok, out, err) = admin_cli(&server, &["users", "remove", "bob"]);
    assert!(ok, "{err}");
    assert!(out.contains("refresh tokens revoked"), "{out}");
    assert_signed_out(&server, &mut browser, &client_id, &refresh).await;
}

/// A refresh family with one live token, created through the store.
async fn family_with_a_token(store: &Store, family: &str, token_hash: &str) {
    let now = mcpgate::store::now_epoch();
    let code_hash = format!("code-{family}");
    store
        .insert_code(&CodeRecord {
            code_hash: code_hash.clone(),
            client_id: "c".into(),
            user_id: "u".into(),
            redirect_uri: REDIRECT.into(),
            redirect_uri_sent: true,
            code_challenge: "x".into(),
            scope: "s".into(),
            resource: "r".into(),
            family_id: family.into(),
            created_at: now,
            expires_at: now + 60,
            redeemed_at: None,
            response_sealed: None,
        })
        .await
        .unwrap();
    store
        .redeem_code(
            &code_hash,
            now,
            "sealed",
            Some(&new_refresh(family, token_hash)),
            None,
        )
        .await
        .unwrap();
}

fn new_refresh(family: &str, token_hash: &str) -> NewRefresh {
    NewRefresh {
        token_hash: token_hash.into(),
        family_id: family.into(),
        client_id: "c".into(),
        user_id: "u".into(),
        scope: "s".into(),
        resource: "r".into(),
        expires_at: mcpgate::store::now_epoch() + 3600,
    }
}

async fn live_tokens(pool: &sqlx::PgPool, family: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM refresh_tokens WHERE family_id = $1 AND revoked_at IS NULL",
    )
    .bind(family)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_rotation_racing_a_family_revocation_leaves_no_live_token_on_postgres() {
    let Some(url) = crate::common::fresh_postgres_database("race").await else {
        return;
    };
    let store = Store::connect(&url, 4).await.unwrap();
    let pool = sqlx::PgPool::connect(&url).await.unwrap();

    // Deterministic: a rotation (the statements of rotate_refresh, in one
    // transaction) holds the old token's row when the revocation starts,
    // and commits its successor while the revocation waits on that row.
    family_with_a_token(&store, "f1", "t1").await;
    let mut rotation = pool.begin().await.unwrap();
    sqlx::query("UPDATE refresh_tokens SET rotated_at = 1, response_sealed = 'r' WHERE token_hash = 't1' AND rotated_at IS NULL AND revoked_at IS NULL")
        .execute(&mut *rotation)
        .await
        .unwrap();
    sqlx::query("INSERT INTO refresh_tokens (token_hash, family_id, client_id, user_id, scope, resource, created_at, expires_at) VALUES ('t2', 'f1', 'c', 'u', 's', 'r', 1, 4102444800)")
        .execute(&mut *rotation)
        .await
        .unwrap();
    let revocation = tokio::spawn({
        let store = store.clone();
        async move { store.revoke_family("f1", 2).await.unwrap() }
    });
    // Wait until the revocation is blocked on the rotation's row lock.
    loop {
        let waiting: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'")
            .fetch_one(&pool)
            .await
            .unwrap();
        if waiting > 0 {
            break;
        }
        tokio::task::yield_now().await;
    }
    rotation.commit().await.unwrap();
    revocation.await.unwrap();
    assert_eq!(live_tokens(&pool, "f1").await, 0, "the successor escaped");

    // The real store calls racing, many times over.
    for i in 0..30 {
        let family = format!("g{i}");
        let (old, next) = (
            format!("{family}-a"),
            new_refresh(&family, &format!("{family}-b")),
        );
        family_with_a_token(&store, &family, &old).await;
        let rotate = store.rotate_refresh(&old, 3, "sealed", &next, false);
        let revoke = store.revoke_family(&family, 3);
        let (rotated, revoked) = tokio::join!(rotate, revoke);
        rotated.unwrap();
        revoked.unwrap();
        assert_eq!(live_tokens(&pool, &family).await, 0, "{family}");
    }
    pool.close().await;
    store.close().await;
}

#[tokio::test]
async fn local_user_names_stay_unique_while_upstream_names_may_repeat() {
    let dir = tempfile::tempdir().unwrap();
    let mut stores = vec![
        Store::connect(&crate::common::sqlite_url(dir.path()), 1)
            .await
            .unwrap(),
    ];
    if let Some(url) = crate::common::fresh_postgres_database("names").await {
        stores.push(Store::connect(&url, 1).await.unwrap());
    }
    for store in stores {
        let backend = store.backend();
        let alice = store.create_user("alice", "hash").await.unwrap();
        assert!(
            matches!(
                store.create_user("alice", "hash").await,
                Err(mcpgate::store::StoreError::Conflict(_))
            ),
            "{backend}"
        );
        store
            .upsert_upstream_user("idp_1", "oidc:bob@corp.example", "{}", 1)
            .await
            .unwrap();
        store
            .upsert_upstream_user("idp_2", "oidc:bob@corp.example", "{}", 1)
            .await
            .unwrap();
        // The login form finds local users only; operators name a shared
        // upstream name by id.
        assert_eq!(
            store.find_local_user("alice").await.unwrap(),
            Some(alice.clone())
        );
        assert_eq!(
            store
                .find_local_user("oidc:bob@corp.example")
                .await
                .unwrap(),
            None
        );
        assert!(
            store
                .find_user_by_name("oidc:bob@corp.example")
                .await
                .is_err(),
            "{backend}"
        );
        assert_eq!(
            store.find_user_by_name("idp_2").await.unwrap().unwrap().id,
            "idp_2"
        );
        store.close().await;
    }
}

/// The session cookie lives as long as the session (`session_ttl_secs`, up
/// to 30 days), not a fixed 12 hours; the binding cookie as long as the
/// pending request (10 minutes).
#[tokio::test]
async fn the_session_cookie_lives_as_long_as_the_configured_session() {
    let server = local(|l| l.session_ttl_secs = Some(30 * 86_400)).await;
    let client_id = public_client(&server).await;
    let (_, challenge) = pkce();
    let mut browser = Browser::default();
    let page = browser
        .get(&authorize_url(&server, &client_id, &challenge, REDIRECT))
        .await;
    let set: Vec<String> = page
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert!(
        set.iter()
            .any(|c| c.starts_with("mcpgate_auth=") && c.contains("Max-Age=600")),
        "{set:?}"
    );
    let html = page.text().await.unwrap();
    let password = server.admin_password.clone().unwrap();
    let login = browser
        .post(
            &server.url("/login"),
            &[
                ("request", &hidden(&html, "request")),
                ("csrf", &hidden(&html, "csrf")),
                ("username", "admin"),
                ("password", &password),
            ],
        )
        .await;
    assert_eq!(login.status(), StatusCode::SEE_OTHER);
    let session = login
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("mcpgate_session="))
        .expect("a session cookie");
    assert!(session.contains("Max-Age=2592000"), "{session}");
}
