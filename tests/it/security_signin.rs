//! The review's attacks on sign-in, sessions, users and proxy mode, replayed
//! (each test fails if its defence is removed).

use mcpgate::{config::RawUpstreamIdp, store::Store};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    common::TestServer,
    fake_idp::FakeIdp,
    oauth_browser::{Browser, exchange_code, location, pkce, public_client, query_of},
    proxy_auth::{UPSTREAM_CLIENT, callback_url, claims_of, consent_and_go_upstream, proxy},
};

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
