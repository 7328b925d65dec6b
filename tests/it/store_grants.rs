//! The token grants' writes (one statement on PostgreSQL, one script on the
//! SQLite writer): single use, all or nothing, the client touched only by the
//! winner, on both backends.

use mcpgate::store::{ClientRecord, CodeRecord, Consumed, NewRefresh, Store};

use crate::common::postgres_url;

async fn backends() -> Vec<(Store, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Store::connect(&crate::common::sqlite_url(dir.path()), 4)
        .await
        .unwrap();
    let mut stores = vec![(sqlite, Some(dir))];
    if let Some(url) = postgres_url() {
        stores.push((Store::connect(&url, 4).await.unwrap(), None));
    }
    stores
}

/// A registered client, a user and a live code of theirs; returns
/// (client id, user id, code hash, family id).
async fn client_user_code(store: &Store, now: i64) -> (String, String, String, String) {
    let tag = uuid::Uuid::new_v4().to_string();
    let client_id = format!("client-{tag}");
    assert!(
        store
            .insert_client_capped(
                &ClientRecord {
                    client_id: client_id.clone(),
                    secret_hash: None,
                    metadata: "{}".into(),
                    created_at: now,
                    last_used_at: None,
                },
                Some(1_000_000),
            )
            .await
            .unwrap()
    );
    let user = store
        .create_user(&format!("user-{tag}"), "x")
        .await
        .unwrap();
    let (code_hash, family_id) = (format!("code-{tag}"), format!("family-{tag}"));
    store
        .insert_code(&CodeRecord {
            code_hash: code_hash.clone(),
            client_id: client_id.clone(),
            user_id: user.id.clone(),
            redirect_uri: "http://127.0.0.1/cb".into(),
            code_challenge: "x".into(),
            scope: "calc".into(),
            resource: "r".into(),
            family_id: family_id.clone(),
            created_at: now,
            expires_at: now + 60,
            redeemed_at: None,
            response_sealed: None,
            redirect_uri_sent: true,
        })
        .await
        .unwrap();
    (client_id, user.id, code_hash, family_id)
}

fn refresh(hash: &str, family: &str, client: &str, user: &str, now: i64) -> NewRefresh {
    NewRefresh {
        token_hash: hash.into(),
        family_id: family.into(),
        client_id: client.into(),
        user_id: user.into(),
        scope: "calc".into(),
        resource: "r".into(),
        expires_at: now + 600,
    }
}

async fn last_used(store: &Store, client_id: &str) -> Option<i64> {
    store
        .get_client(client_id)
        .await
        .unwrap()
        .unwrap()
        .last_used_at
}

#[tokio::test]
async fn a_code_and_a_refresh_token_are_used_once_and_the_winner_touches_the_client() {
    for (store, _dir) in backends().await {
        let backend = store.backend();
        let now = 1_700_000_000;
        let (client, user, code, family) = client_user_code(&store, now).await;
        let (_, exists) = store.get_code_and_user(&code).await.unwrap().unwrap();
        assert!(exists, "{backend}");

        let first = refresh(&format!("{family}-1"), &family, &client, &user, now);
        let won = store
            .redeem_code(&code, now, "sealed-1", Some(&first), Some(&client))
            .await
            .unwrap();
        assert_eq!(won, Consumed::Won, "{backend}");
        assert_eq!(last_used(&store, &client).await, Some(now), "{backend}");
        let record = store.get_code(&code).await.unwrap().unwrap();
        assert_eq!(record.redeemed_at, Some(now), "{backend}");
        assert_eq!(record.response_sealed.as_deref(), Some("sealed-1"));
        assert!(
            store
                .get_refresh(&first.token_hash)
                .await
                .unwrap()
                .is_some()
        );

        // Again: lost, and neither a second first token nor a touch.
        let again = refresh(&format!("{family}-1b"), &family, &client, &user, now);
        let lost = store
            .redeem_code(&code, now + 5, "sealed-x", Some(&again), Some(&client))
            .await
            .unwrap();
        assert_eq!(lost, Consumed::Lost, "{backend}");
        assert!(
            store
                .get_refresh(&again.token_hash)
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(last_used(&store, &client).await, Some(now), "{backend}");
        let record = store.get_code(&code).await.unwrap().unwrap();
        assert_eq!(record.response_sealed.as_deref(), Some("sealed-1"));

        // Rotation: once; `touch` decides whether the client is touched.
        let second = refresh(&format!("{family}-2"), &family, &client, &user, now);
        let won = store
            .rotate_refresh(&first.token_hash, now + 10, "sealed-2", &second, false)
            .await
            .unwrap();
        assert_eq!(won, Consumed::Won, "{backend}");
        assert_eq!(last_used(&store, &client).await, Some(now), "{backend}");
        let old = store.get_refresh(&first.token_hash).await.unwrap().unwrap();
        assert_eq!(old.rotated_at, Some(now + 10));
        assert_eq!(old.response_sealed.as_deref(), Some("sealed-2"));
        let next = store
            .get_refresh(&second.token_hash)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (next.created_at, next.rotated_at, next.family_id.as_str()),
            (now + 10, None, family.as_str())
        );

        let third = refresh(&format!("{family}-3"), &family, &client, &user, now);
        let lost = store
            .rotate_refresh(&first.token_hash, now + 20, "sealed-x", &third, true)
            .await
            .unwrap();
        assert_eq!(lost, Consumed::Lost, "{backend}");
        assert!(
            store
                .get_refresh(&third.token_hash)
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(last_used(&store, &client).await, Some(now), "{backend}");

        let won = store
            .rotate_refresh(&second.token_hash, now + 30, "sealed-3", &third, true)
            .await
            .unwrap();
        assert_eq!(won, Consumed::Won, "{backend}");
        assert_eq!(
            last_used(&store, &client).await,
            Some(now + 30),
            "{backend}"
        );

        // A revoked token does not rotate.
        store.revoke_family(&family, now + 40).await.unwrap();
        let fourth = refresh(&format!("{family}-4"), &family, &client, &user, now);
        let lost = store
            .rotate_refresh(&third.token_hash, now + 50, "sealed-4", &fourth, false)
            .await
            .unwrap();
        assert_eq!(lost, Consumed::Lost, "{backend}");
        assert!(
            store
                .get_refresh(&fourth.token_hash)
                .await
                .unwrap()
                .is_none()
        );
    }
}

/// A write that fails half way (here the successor's hash is taken) leaves
/// nothing behind, and the next grant still goes through: the SQLite writer
/// is not left inside the failed script's transaction.
#[tokio::test]
async fn a_failed_grant_write_leaves_nothing_behind() {
    for (store, _dir) in backends().await {
        let backend = store.backend();
        let now = 1_700_000_000;
        let (client, user, code, family) = client_user_code(&store, now).await;
        let taken = refresh(&format!("{family}-taken"), &family, &client, &user, now);
        let (_, _, other_code, _) = client_user_code(&store, now).await;
        store
            .redeem_code(&other_code, now, "s", Some(&taken), None)
            .await
            .unwrap();

        let collides = refresh(&taken.token_hash, &family, &client, &user, now);
        assert!(
            store
                .redeem_code(&code, now, "sealed", Some(&collides), Some(&client))
                .await
                .is_err(),
            "{backend}"
        );
        let record = store.get_code(&code).await.unwrap().unwrap();
        assert_eq!(record.redeemed_at, None, "{backend}: half a redemption");
        assert_eq!(last_used(&store, &client).await, None, "{backend}");

        let first = refresh(&format!("{family}-1"), &family, &client, &user, now);
        let won = store
            .redeem_code(&code, now, "sealed", Some(&first), None)
            .await
            .unwrap();
        assert_eq!(won, Consumed::Won, "{backend}");

        assert!(
            store
                .rotate_refresh(&first.token_hash, now, "sealed-2", &collides, true)
                .await
                .is_err(),
            "{backend}"
        );
        let old = store.get_refresh(&first.token_hash).await.unwrap().unwrap();
        assert_eq!(old.rotated_at, None, "{backend}: half a rotation");
        assert_eq!(last_used(&store, &client).await, None, "{backend}");
        let second = refresh(&format!("{family}-2"), &family, &client, &user, now);
        let won = store
            .rotate_refresh(&first.token_hash, now, "sealed-2", &second, true)
            .await
            .unwrap();
        assert_eq!(won, Consumed::Won, "{backend}");
    }
}

#[tokio::test]
async fn concurrent_rotations_of_one_token_have_one_winner() {
    for (store, _dir) in backends().await {
        let backend = store.backend();
        let now = 1_700_000_000;
        let (client, user, code, family) = client_user_code(&store, now).await;
        let first = refresh(&format!("{family}-1"), &family, &client, &user, now);
        store
            .redeem_code(&code, now, "s", Some(&first), None)
            .await
            .unwrap();
        let tries = (0..16).map(|i| {
            let (store, old) = (store.clone(), first.token_hash.clone());
            let next = refresh(&format!("{family}-n{i}"), &family, &client, &user, now);
            async move { store.rotate_refresh(&old, now, "s", &next, false).await }
        });
        let results = futures::future::join_all(tries).await;
        let won = results
            .into_iter()
            .filter(|r| *r.as_ref().unwrap() == Consumed::Won)
            .count();
        assert_eq!(won, 1, "{backend}");
    }
}

#[tokio::test]
async fn the_code_read_says_when_its_user_is_gone() {
    for (store, _dir) in backends().await {
        let backend = store.backend();
        let now = 1_700_000_000;
        let (_, user, code, _) = client_user_code(&store, now).await;
        store.delete_user(&user).await.unwrap();
        let (record, exists) = store.get_code_and_user(&code).await.unwrap().unwrap();
        assert_eq!(record.user_id, user);
        assert!(!exists, "{backend}");
        assert!(store.get_code_and_user("nope").await.unwrap().is_none());
    }
}

/// The refresh grant's short way checks nothing against the store before
/// its write, so the write itself refuses a token presented for another
/// client or after its expiry, and writes nothing then.
#[tokio::test]
async fn a_rotation_needs_the_tokens_own_client_and_an_unexpired_token() {
    for (store, _dir) in backends().await {
        let backend = store.backend();
        let now = 1_700_000_000;
        let (client, user, code, family) = client_user_code(&store, now).await;
        let first = refresh(&format!("{family}-1"), &family, &client, &user, now);
        let won = store
            .redeem_code(&code, now, "sealed-1", Some(&first), None)
            .await
            .unwrap();
        assert_eq!(won, Consumed::Won, "{backend}");

        // Another client's successor: lost, nothing written.
        let foreign = refresh(&format!("{family}-f"), &family, "another", &user, now);
        let lost = store
            .rotate_refresh(&first.token_hash, now + 1, "sealed-f", &foreign, true)
            .await
            .unwrap();
        assert_eq!(lost, Consumed::Lost, "{backend}");
        assert!(
            store
                .get_refresh(&foreign.token_hash)
                .await
                .unwrap()
                .is_none()
        );

        // At its expiry (first.expires_at = now + 600): lost, nothing written.
        let late = refresh(&format!("{family}-l"), &family, &client, &user, now);
        let lost = store
            .rotate_refresh(&first.token_hash, now + 600, "sealed-l", &late, false)
            .await
            .unwrap();
        assert_eq!(lost, Consumed::Lost, "{backend}");
        assert!(store.get_refresh(&late.token_hash).await.unwrap().is_none());
        let old = store.get_refresh(&first.token_hash).await.unwrap().unwrap();
        assert_eq!((old.rotated_at, old.response_sealed), (None, None));
        assert_eq!(last_used(&store, &client).await, None, "{backend}");

        // Just before it, by its own client: won.
        let won = store
            .rotate_refresh(&first.token_hash, now + 599, "sealed-2", &late, false)
            .await
            .unwrap();
        assert_eq!(won, Consumed::Won, "{backend}");
    }
}
