//! The grant rules against the domain alone (SQLite in a tempdir, a manual
//! clock): no HTTP, no sleeping.

use std::{sync::Arc, time::Duration};

use serde_json::json;

use super::{
    AuthorizationServer, AuthorizeParams, AuthorizeStep, ClientCredentials, Consent,
    RememberConsent,
};
use crate::{
    clock::ManualClock,
    config::{RawConfig, RawLocalAuth, RawStore},
    funnel::Reason,
    oauth::{
        cimd::CimdResolver,
        crypto::{Sealer, pkce_s256, random_token, sha256_b64},
        error::{OAuthError, OAuthErrorCode},
        keys::KeyRing,
        passwords::hash_password,
    },
    store::Store,
};

struct Fixture {
    server: AuthorizationServer,
    clock: Arc<ManualClock>,
    client: ClientCredentials,
    user_id: String,
    _dir: tempfile::TempDir,
}

async fn fixture(edit: impl FnOnce(&mut RawLocalAuth)) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("mcpgate.db").display());
    let mut local = RawLocalAuth::default();
    edit(&mut local);
    let mut raw = RawConfig {
        listen: Some("127.0.0.1:9".to_owned()),
        public_url: Some("http://127.0.0.1:9".to_owned()),
        data_dir: Some(dir.path().to_path_buf()),
        store: RawStore {
            url: Some(url.clone()),
            max_connections: None,
        },
        ..RawConfig::default()
    };
    raw.auth.mode = Some("local".to_owned());
    raw.auth.local = Some(local);
    let config = raw.validate().unwrap();
    let local = config.auth.local().cloned().unwrap();
    let store = Store::connect(&url, 2).await.unwrap();
    let sealer = Arc::new(Sealer::new(&[9u8; 32]).unwrap());
    let clock = ManualClock::new();
    let keys = KeyRing::open_on_clock(store.clone(), sealer.clone(), clock.clone())
        .await
        .unwrap();
    let user_id = store
        .create_user("alice", &hash_password("a long password").unwrap())
        .await
        .unwrap()
        .id;
    let server = AuthorizationServer::new(
        config.public_origin(),
        config.mcp_resource(),
        vec!["read".to_owned(), "write".to_owned()],
        local,
        store,
        keys,
        sealer,
        CimdResolver::new(false, Duration::from_secs(1)),
    )
    .with_clock(clock.clone());
    let registered = server
        .register(
            json!({
                "redirect_uris": ["http://127.0.0.1:9/cb"],
                "token_endpoint_auth_method": "none",
                "grant_types": ["authorization_code", "refresh_token"],
            }),
            "test",
        )
        .await
        .unwrap();
    let client = ClientCredentials {
        client_id: registered["client_id"].as_str().map(str::to_owned),
        ..ClientCredentials::default()
    };
    Fixture {
        server,
        clock,
        client,
        user_id,
        _dir: dir,
    }
}

impl Fixture {
    /// A code approved by the user for `scope`, and its PKCE verifier.
    async fn code(&self, scope: &str) -> (String, String) {
        let verifier = random_token(32).unwrap();
        let params = AuthorizeParams {
            response_type: Some("code".to_owned()),
            client_id: self.client.client_id.clone(),
            code_challenge: Some(pkce_s256(&verifier)),
            code_challenge_method: Some("S256".to_owned()),
            scope: Some(scope.to_owned()),
            ..AuthorizeParams::default()
        };
        let authorization = self.server.begin(params, None, None, "test").await.unwrap();
        let AuthorizeStep::ShowLogin(pending) = authorization.step else {
            panic!("nobody is signed in: the login form comes first");
        };
        let approve = Consent::Approve {
            remember: RememberConsent::ThisTimeOnly,
        };
        let location = self
            .server
            .decide(&pending.request_id, &self.user_id, approve)
            .await
            .unwrap();
        let url = url::Url::parse(&location).unwrap();
        let code = url
            .query_pairs()
            .find(|(k, _)| k == "code")
            .map(|(_, v)| v.into_owned())
            .unwrap();
        (code, verifier)
    }

    async fn redeem(&self, code: &str, verifier: &str) -> Result<super::TokenResponse, OAuthError> {
        self.server
            .redeem_code(&self.client, Some(code), Some(verifier), None, None)
            .await
    }

    async fn refresh(
        &self,
        token: &str,
        scope: Option<&str>,
    ) -> Result<super::TokenResponse, OAuthError> {
        self.server
            .refresh(&self.client, Some(token), scope, None)
            .await
    }
}

#[tokio::test]
async fn a_code_is_single_use_and_reuse_after_the_window_revokes_its_grant() {
    let f = fixture(|l| l.code_replay_window_secs = Some(5)).await;
    let (code, verifier) = f.code("read").await;
    let first = f.redeem(&code, &verifier).await.unwrap();
    // Within the window: the same answer again, not a second grant.
    assert_eq!(f.redeem(&code, &verifier).await.unwrap(), first);
    f.clock.advance(Duration::from_secs(6));
    let reused = f.redeem(&code, &verifier).await.unwrap_err();
    assert_eq!(
        (reused.code(), reused.reason()),
        (OAuthErrorCode::InvalidGrant, Reason::CodeReused)
    );
    // Its refresh token was revoked with the grant.
    let refresh = first.refresh_token.unwrap();
    let revoked = f.refresh(&refresh, None).await.unwrap_err();
    assert_eq!(
        (revoked.code(), revoked.reason()),
        (OAuthErrorCode::InvalidGrant, Reason::RefreshInvalid)
    );
}

#[tokio::test]
async fn a_narrowed_refresh_keeps_the_familys_scope() {
    let f = fixture(|_| {}).await;
    let (code, verifier) = f.code("read write").await;
    let first = f.redeem(&code, &verifier).await.unwrap();
    assert_eq!(first.scope, "read write");
    let narrowed = f
        .refresh(first.refresh_token.as_deref().unwrap(), Some("read"))
        .await
        .unwrap();
    assert_eq!(narrowed.scope, "read");
    // The next refresh without a scope gets the whole grant back.
    let next = f
        .refresh(narrowed.refresh_token.as_deref().unwrap(), None)
        .await
        .unwrap();
    assert_eq!(next.scope, "read write");
    // And a scope never granted is refused.
    assert!(matches!(
        f.refresh(next.refresh_token.as_deref().unwrap(), Some("admin"))
            .await,
        Err(OAuthError::InvalidScope(_))
    ));
}

#[tokio::test]
async fn refresh_reuse_is_replayed_in_the_grace_window_and_revokes_the_family_after() {
    let f = fixture(|l| l.refresh_reuse_grace_secs = Some(5)).await;
    let (code, verifier) = f.code("read").await;
    let r1 = f
        .redeem(&code, &verifier)
        .await
        .unwrap()
        .refresh_token
        .unwrap();
    let second = f.refresh(&r1, None).await.unwrap();
    // A retry after a lost response: the winner's answer.
    assert_eq!(f.refresh(&r1, None).await.unwrap(), second);
    f.clock.advance(Duration::from_secs(6));
    let reused = f.refresh(&r1, None).await.unwrap_err();
    assert_eq!(
        (reused.code(), reused.reason()),
        (OAuthErrorCode::InvalidGrant, Reason::RefreshReused)
    );
    // The legitimate holder of the successor is cut off too.
    let cut = f
        .refresh(second.refresh_token.as_deref().unwrap(), None)
        .await
        .unwrap_err();
    assert_eq!(cut.reason(), Reason::RefreshInvalid);
}

impl Fixture {
    /// A fresh grant's refresh token.
    async fn refresh_token(&self, scope: &str) -> String {
        let (code, verifier) = self.code(scope).await;
        let first = self.redeem(&code, &verifier).await.unwrap();
        first.refresh_token.unwrap()
    }

    /// The registered client as `/token` authenticates it.
    async fn registered(&self) -> super::Client {
        self.server.authenticate_client(&self.client).await.unwrap()
    }
}

#[tokio::test]
async fn a_refresh_token_names_its_grant_and_rotates_in_one_write() {
    let f = fixture(|l| l.refresh_reuse_grace_secs = Some(5)).await;
    let token = f.refresh_token("read write").await;
    let claims = f.server.refresh_claims(&token).unwrap();
    let client = f.registered().await;
    assert_eq!(
        (claims.client_id.as_str(), claims.user_id.as_str()),
        (client.client_id.as_str(), f.user_id.as_str())
    );
    assert_eq!(claims.scope, "read write");
    // Its claims are sealed: nothing of the grant shows in the clear. And
    // it does not look like a JWT (three dot-separated parts).
    assert!(!token.contains(&f.user_id) && !token.contains(&client.client_id));
    assert!(!token.contains('.'), "{token}");

    // The short way alone: no read, one write, the successor minted from the
    // claims (narrowed here).
    let hash = sha256_b64(&token);
    let rotated = f
        .server
        .rotate_described(&client, &claims, &hash, Some("read"), None)
        .await
        .unwrap()
        .expect("a live token rotates the short way");
    assert_eq!(rotated.scope, "read");
    let successor = f
        .server
        .refresh_claims(rotated.refresh_token.as_deref().unwrap())
        .unwrap();
    assert_eq!(
        (successor.family_id.as_str(), successor.scope.as_str()),
        (claims.family_id.as_str(), "read write")
    );
    // A second short way finds the row rotated: nothing written, and the
    // long way answers the retry with the winner's response.
    assert!(
        f.server
            .rotate_described(&client, &claims, &hash, None, None)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(f.refresh(&token, Some("read")).await.unwrap(), rotated);
    // The successor rotates through `/token`'s entry point too.
    let next = f
        .refresh(rotated.refresh_token.as_deref().unwrap(), None)
        .await
        .unwrap();
    assert_eq!(next.scope, "read write");
}

#[tokio::test]
async fn an_altered_or_forged_refresh_token_is_refused_and_touches_nothing() {
    let f = fixture(|l| l.refresh_reuse_grace_secs = Some(5)).await;
    let token = f.refresh_token("read").await;
    let claims = f.server.refresh_claims(&token).unwrap();
    let refused = |e: OAuthError| {
        assert_eq!(
            (e.code(), e.reason()),
            (OAuthErrorCode::InvalidGrant, Reason::RefreshInvalid),
            "{e:?}"
        );
    };

    // One character of the sealed body changed.
    let mut altered = token.clone().into_bytes();
    let last = altered.len() - 5;
    altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
    let altered = String::from_utf8(altered).unwrap();
    assert!(f.server.refresh_claims(&altered).is_none());
    refused(f.refresh(&altered, None).await.unwrap_err());

    // The same claims sealed with another key, under this key's id.
    let other = Sealer::new(&[7u8; 32]).unwrap();
    let forged = other
        .seal_json("refresh_tokens.presented", &claims)
        .unwrap()
        .replacen(other.key_id(), f.server.sealer.key_id(), 1)
        .replace('.', "~");
    assert!(forged.starts_with(&format!("v1~{}~", f.server.sealer.key_id())));
    assert!(f.server.refresh_claims(&forged).is_none());
    refused(f.refresh(&forged, None).await.unwrap_err());

    // Sealed with the server's own key (a key holder, or a token never
    // stored): the claims open, but no row has its hash.
    let mut value = serde_json::to_value(&claims).unwrap();
    value["n"] = json!(random_token(32).unwrap());
    let minted = f
        .server
        .sealer
        .seal_json("refresh_tokens.presented", &value)
        .unwrap()
        .replace('.', "~");
    assert!(f.server.refresh_claims(&minted).is_some());
    refused(f.refresh(&minted, None).await.unwrap_err());

    // Nothing was rotated, revoked or added: the real token still rotates
    // once, and its retry gets the same answer (a second successor would
    // have been refused as a reuse of a spent token).
    let rotated = f.refresh(&token, None).await.unwrap();
    assert_eq!(f.refresh(&token, None).await.unwrap(), rotated);
    assert!(
        f.refresh(rotated.refresh_token.as_deref().unwrap(), None)
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn the_short_way_keeps_client_binding_expiry_and_removal() {
    let f = fixture(|l| l.refresh_token_ttl_secs = Some(100)).await;
    let token = f.refresh_token("read").await;

    // Another registered client presenting it: as unknown, nothing rotates.
    let other = f
        .server
        .register(
            json!({
                "redirect_uris": ["http://127.0.0.1:9/other"],
                "token_endpoint_auth_method": "none",
                "grant_types": ["authorization_code", "refresh_token"],
            }),
            "test",
        )
        .await
        .unwrap();
    let other = ClientCredentials {
        client_id: other["client_id"].as_str().map(str::to_owned),
        ..ClientCredentials::default()
    };
    f.server.authenticate_client(&other).await.unwrap();
    let stolen = f
        .server
        .refresh(&other, Some(&token), None, None)
        .await
        .unwrap_err();
    assert_eq!(stolen.reason(), Reason::RefreshInvalid);
    let token = f
        .refresh(&token, None)
        .await
        .unwrap()
        .refresh_token
        .unwrap();

    // Expired: refused although its claims open.
    f.clock.advance(Duration::from_secs(101));
    let expired = f.refresh(&token, None).await.unwrap_err();
    assert_eq!(
        (expired.code(), expired.reason()),
        (OAuthErrorCode::InvalidGrant, Reason::RefreshInvalid)
    );

    // A removed client, still remembered by this replica: `invalid_client`,
    // as when it is read from the store.
    let token = f.refresh_token("read").await;
    let client_id = f.client.client_id.clone().unwrap();
    assert!(f.server.store.delete_client(&client_id).await.unwrap());
    assert!(matches!(
        f.refresh(&token, None).await,
        Err(OAuthError::InvalidClient)
    ));
}

#[tokio::test]
async fn a_refresh_token_of_the_earlier_opaque_kind_still_rotates() {
    let f = fixture(|_| {}).await;
    let token = f.refresh_token("read").await;
    let claims = f.server.refresh_claims(&token).unwrap();
    // A token as issued before refresh tokens described their grant: 32
    // random bytes, stored by hash in the same family.
    let opaque = random_token(32).unwrap();
    let now = crate::clock::Clock::now(f.clock.as_ref());
    let row = crate::store::NewRefresh {
        token_hash: sha256_b64(&opaque),
        family_id: claims.family_id.clone(),
        client_id: claims.client_id.clone(),
        user_id: claims.user_id.clone(),
        scope: claims.scope.clone(),
        resource: claims.resource.clone(),
        expires_at: now + 600,
    };
    let hash = sha256_b64(&token);
    assert_eq!(
        f.server
            .store
            .rotate_refresh(&hash, now, "sealed", &row, false)
            .await
            .unwrap(),
        crate::store::Consumed::Won
    );
    assert!(f.server.refresh_claims(&opaque).is_none());
    let rotated = f.refresh(&opaque, None).await.unwrap();
    assert_eq!(rotated.scope, "read");
    // Its successor is of the new kind.
    assert!(
        f.server
            .refresh_claims(rotated.refresh_token.as_deref().unwrap())
            .is_some()
    );
}
