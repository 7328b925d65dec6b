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
        crypto::{Sealer, pkce_s256, random_token},
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
