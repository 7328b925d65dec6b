//! One contract, run against both backends.

use mcpgate::store::{NoteDraft, NotePatch, Store};

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

fn owner() -> String {
    format!("it|{}", uuid::Uuid::new_v4())
}

#[tokio::test]
async fn notes_crud_contract() {
    for (store, _dir) in backends().await {
        let backend = store.backend();
        let alice = owner();
        let note = store
            .create_note(
                &alice,
                NoteDraft {
                    title: "t".into(),
                    body: "b".into(),
                },
            )
            .await
            .unwrap();
        assert_eq!(
            store.get_note(&alice, &note.id).await.unwrap().as_ref(),
            Some(&note),
            "{backend}"
        );
        let patched = store
            .update_note(
                &alice,
                &note.id,
                NotePatch {
                    title: Some("t2".into()),
                    body: None,
                },
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (patched.title.as_str(), patched.body.as_str()),
            ("t2", "b"),
            "{backend}"
        );
        assert!(patched.updated_at >= note.updated_at);
        let second = store
            .create_note(
                &alice,
                NoteDraft {
                    title: "second".into(),
                    body: String::new(),
                },
            )
            .await
            .unwrap();
        let listed = store.list_notes(&alice, 10).await.unwrap();
        assert_eq!(listed.len(), 2, "{backend}");
        assert_eq!(
            store.list_notes(&alice, 1).await.unwrap().len(),
            1,
            "{backend}"
        );
        assert!(listed.iter().any(|n| n.id == second.id));
        assert!(
            store.delete_note(&alice, &note.id).await.unwrap(),
            "{backend}"
        );
        assert!(
            !store.delete_note(&alice, &note.id).await.unwrap(),
            "{backend}: second delete"
        );
        assert_eq!(store.get_note(&alice, &note.id).await.unwrap(), None);
        assert!(
            store
                .update_note(&alice, &note.id, NotePatch::default())
                .await
                .unwrap()
                .is_none()
        );
        store.ping().await.unwrap();
    }
}

#[tokio::test]
async fn notes_are_isolated_by_owner() {
    for (store, _dir) in backends().await {
        let backend = store.backend();
        let (alice, mallory) = (owner(), owner());
        let note = store
            .create_note(
                &alice,
                NoteDraft {
                    title: "secret".into(),
                    body: "x".into(),
                },
            )
            .await
            .unwrap();
        assert_eq!(
            store.get_note(&mallory, &note.id).await.unwrap(),
            None,
            "{backend}"
        );
        assert!(
            store.list_notes(&mallory, 100).await.unwrap().is_empty(),
            "{backend}"
        );
        let patch = NotePatch {
            title: Some("pwned".into()),
            body: None,
        };
        assert!(
            store
                .update_note(&mallory, &note.id, patch)
                .await
                .unwrap()
                .is_none(),
            "{backend}"
        );
        assert!(
            !store.delete_note(&mallory, &note.id).await.unwrap(),
            "{backend}"
        );
        assert_eq!(
            store
                .get_note(&alice, &note.id)
                .await
                .unwrap()
                .unwrap()
                .title,
            "secret"
        );
    }
}

#[tokio::test]
async fn text_round_trips_exactly() {
    for (store, _dir) in backends().await {
        let alice = owner();
        let body = "line1\n'quoted' \"double\" ; DROP TABLE notes; -- ünïcødé 🚀 \u{0}"
            .replace('\u{0}', "");
        let note = store
            .create_note(
                &alice,
                NoteDraft {
                    title: "x".into(),
                    body: body.clone(),
                },
            )
            .await
            .unwrap();
        assert_eq!(
            store
                .get_note(&alice, &note.id)
                .await
                .unwrap()
                .unwrap()
                .body,
            body,
            "{}",
            store.backend()
        );
    }
}

#[tokio::test]
async fn migrations_are_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let url = crate::common::sqlite_url(dir.path());
    let first = Store::connect(&url, 2).await.unwrap();
    let alice = owner();
    first
        .create_note(
            &alice,
            NoteDraft {
                title: "kept".into(),
                body: String::new(),
            },
        )
        .await
        .unwrap();
    first.close().await;
    let again = Store::connect(&url, 2).await.unwrap();
    assert_eq!(again.list_notes(&alice, 10).await.unwrap().len(), 1);
    if let Some(pg) = postgres_url() {
        Store::connect(&pg, 2).await.unwrap();
        Store::connect(&pg, 2).await.unwrap();
    }
}

/// A caller dropped mid-transaction (a client hanging up) must neither stop
/// the transaction halfway nor lose it: sqlx's begin/commit are not
/// cancel-safe on PostgreSQL, and a half-run one leaves the pooled connection
/// inside a transaction that swallows later statements. The store runs every
/// transaction to completion in its own task.
#[tokio::test]
async fn transactions_complete_when_the_caller_is_dropped() {
    use mcpgate::store::{CodeRecord, NewRefresh, now_epoch};
    for (store, _dir) in backends().await {
        let backend = store.backend();
        let now = now_epoch();
        let tag = uuid::Uuid::new_v4().simple().to_string();
        let family = format!("family-{tag}");
        store
            .insert_code(&CodeRecord {
                code_hash: format!("code-{tag}"),
                client_id: "c".into(),
                user_id: "u".into(),
                redirect_uri: "http://127.0.0.1/cb".into(),
                code_challenge: "x".into(),
                scope: "calc".into(),
                resource: "r".into(),
                family_id: family.clone(),
                created_at: now,
                expires_at: now + 60,
                redeemed_at: None,
                response_sealed: None,
                redirect_uri_sent: true,
            })
            .await
            .unwrap();
        let first = NewRefresh {
            token_hash: format!("rt1-{tag}"),
            family_id: family.clone(),
            client_id: "c".into(),
            user_id: "u".into(),
            scope: "calc".into(),
            resource: "r".into(),
            expires_at: now + 600,
        };
        // The caller gives up after the first poll (the call is dropped).
        use futures::FutureExt;
        let _ = store
            .redeem_code(&format!("code-{tag}"), now, "sealed", Some(&first), None)
            .now_or_never();
        let second = NewRefresh {
            token_hash: format!("rt2-{tag}"),
            ..first.clone()
        };
        // The work goes on without its caller; wait for it (a loaded
        // machine may take a while to open a connection).
        let mut redeemed = false;
        for _ in 0..200 {
            let code = store
                .get_code(&format!("code-{tag}"))
                .await
                .unwrap()
                .unwrap();
            if code.redeemed_at.is_some() {
                redeemed = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(redeemed, "{backend}: redemption lost");
        assert!(
            store
                .get_refresh(&first.token_hash)
                .await
                .unwrap()
                .is_some()
        );
        let _ = store
            .rotate_refresh(&first.token_hash, now, "sealed-2", &second, false)
            .now_or_never();
        let mut rotated = false;
        for _ in 0..200 {
            let record = store.get_refresh(&first.token_hash).await.unwrap().unwrap();
            if record.rotated_at.is_some() {
                rotated = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(rotated, "{backend}: rotation lost");
        assert!(
            store
                .get_refresh(&second.token_hash)
                .await
                .unwrap()
                .is_some()
        );
    }
}

/// An assertion id is used once across every replica: concurrent first uses
/// get one winner, a later use loses until the assertion has expired, and an
/// expired row (not yet swept) is taken over rather than refusing a fresh
/// assertion.
#[tokio::test]
async fn assertion_ids_are_single_use() {
    use mcpgate::store::Consumed;
    for (store, _dir) in backends().await {
        let backend = store.backend();
        let key = format!("https://client.example|{}", uuid::Uuid::new_v4());
        let now = 1_000_000;
        let racers: Vec<_> = (0..8)
            .map(|_| {
                let store = store.clone();
                let key = key.clone();
                tokio::spawn(async move { store.use_assertion_jti(&key, now + 60, now).await })
            })
            .collect();
        let mut won = 0;
        for racer in racers {
            if racer.await.unwrap().unwrap() == Consumed::Won {
                won += 1;
            }
        }
        assert_eq!(won, 1, "{backend:?}: one winner among concurrent uses");
        assert_eq!(
            store
                .use_assertion_jti(&key, now + 90, now + 59)
                .await
                .unwrap(),
            Consumed::Lost,
            "{backend:?}: reuse before expiry"
        );
        assert_eq!(
            store
                .use_assertion_jti(&key, now + 200, now + 60)
                .await
                .unwrap(),
            Consumed::Won,
            "{backend:?}: an expired id is taken over"
        );
        assert_eq!(
            store
                .use_assertion_jti(&key, now + 300, now + 100)
                .await
                .unwrap(),
            Consumed::Lost,
            "{backend:?}: and is single use again"
        );
        let other = format!("{key}-other");
        assert_eq!(
            store
                .use_assertion_jti(&other, now + 60, now)
                .await
                .unwrap(),
            Consumed::Won
        );
        store.sweep_oauth(now + 61, 86_400).await.unwrap();
        assert_eq!(
            store
                .use_assertion_jti(&other, now + 120, now + 61)
                .await
                .unwrap(),
            Consumed::Won,
            "{backend:?}: swept"
        );
    }
}

#[tokio::test]
async fn funnel_rows_are_stored_in_chunks_joined_and_swept() {
    use mcpgate::store::{FUNNEL_INSERT_MAX_ROWS, FUNNEL_TTL_SECS, FunnelRow};
    for (store, _dir) in backends().await {
        let backend = store.backend();
        let client = owner();
        let row =
            |at: i64, attempt: &str, step: &str, reason: Option<&str>, grant: Option<&str>| {
                FunnelRow {
                    at,
                    attempt: attempt.to_owned(),
                    client_id: client.clone(),
                    user_id: Some("u".to_owned()),
                    step: step.to_owned(),
                    reason: reason.map(str::to_owned),
                    grant_key: grant.map(str::to_owned),
                }
            };
        // More rows than one INSERT carries: one attempt that refreshes a lot.
        let mut rows = vec![
            row(100, "a", "authorize", None, None),
            row(101, "a", "code_redeemed", None, Some("g")),
        ];
        for i in 0..FUNNEL_INSERT_MAX_ROWS as i64 {
            rows.push(row(102 + i, "g:g", "refresh", None, Some("g")));
        }
        rows.push(row(
            400,
            "g:g",
            "refresh",
            Some("refresh_reused"),
            Some("g"),
        ));
        rows.push(row(401, "b", "authorize", Some("pkce_missing"), None));
        store.insert_funnel_rows(&rows).await.unwrap();
        let attempts = store.funnel_attempts(Some(&client), 0, 10).await.unwrap();
        assert_eq!(attempts.len(), 2, "{backend}: {attempts:?}");
        assert_eq!(attempts[0].attempt, "b", "{backend}: newest first");
        assert_eq!(attempts[0].stopped.as_deref(), Some("pkce_missing"));
        let a = &attempts[1];
        assert_eq!(a.steps.len(), 2 + FUNNEL_INSERT_MAX_ROWS + 1, "{backend}");
        assert_eq!(a.stopped.as_deref(), Some("refresh_reused"), "{backend}");
        // Only rows at or after `since`; other clients' rows are not shown.
        let late = store.funnel_attempts(Some(&client), 401, 10).await.unwrap();
        assert_eq!(late.len(), 1, "{backend}");
        assert!(
            store
                .funnel_attempts(Some(&owner()), 0, 10)
                .await
                .unwrap()
                .is_empty()
        );
        // Swept by age.
        store
            .sweep_auth_funnel(400 + FUNNEL_TTL_SECS)
            .await
            .unwrap();
        let left = store.funnel_attempts(Some(&client), 0, 10).await.unwrap();
        assert_eq!(left.len(), 1, "{backend}: {left:?}");
        assert_eq!(left[0].attempt, "b");
    }
}
