//! `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer` with an
//! Identity Assertion JWT Authorization Grant (ID-JAG) from a trusted
//! enterprise IdP: enterprise-managed authorization (ext-auth
//! `io.modelcontextprotocol/enterprise-managed-authorization`, built on
//! draft-ietf-oauth-identity-assertion-authz-grant and RFC 7523).
//!
//! Every check on the assertion comes before anything is written; then its
//! `jti` is spent (once, across replicas), the user is stored, and an
//! access token is minted. No refresh token: the client obtains a fresh
//! ID-JAG from the IdP instead, so the IdP's policy (and its revocation of
//! the user) applies again at every renewal.

use std::collections::BTreeSet;

use jsonwebtoken::{Algorithm, Validation, decode, decode_header};
use serde_json::{Map, Value};

use super::{AuthorizationServer, Client, ClientCredentials, TokenResponse, machine::MachineTrace};
use crate::funnel::{Reason, Step};
use crate::idp::Identity;
use crate::oauth::{
    client_auth::unverified_claim,
    configured_clients::GRANT_JWT_BEARER,
    crypto::sha256_b64,
    enterprise::{ID_JAG_TYP, TrustedIdp},
    error::{OAuthError, OAuthErrorCode},
};
use crate::store::Consumed;

/// Clock skew allowed on `iat` and `nbf` (the IdP's clock may run ahead).
const LEEWAY_SECS: i64 = 60;
/// Assertion ids longer than this are refused (they are stored).
const MAX_JTI_CHARS: usize = 256;

/// A verified ID-JAG: what the grant goes on with.
struct Assertion<'a> {
    idp: &'a TrustedIdp,
    claims: Map<String, Value>,
    jti: String,
    exp: i64,
}

fn refused(why: &str) -> OAuthError {
    OAuthError::refused(
        OAuthErrorCode::InvalidGrant,
        Reason::IdentityAssertionInvalid,
        format!("identity assertion refused: {why}"),
    )
}

fn string_claim<'c>(claims: &'c Map<String, Value>, name: &str) -> Option<&'c str> {
    claims
        .get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

fn int_claim(claims: &Map<String, Value>, name: &str) -> Option<i64> {
    claims.get(name).and_then(Value::as_i64)
}

/// `aud` names this server: a string or an array, with or without a
/// trailing slash.
fn names_issuer(aud: Option<&Value>, issuer: &str) -> bool {
    let ours = issuer.trim_end_matches('/');
    let matches = |v: &Value| v.as_str().is_some_and(|a| a.trim_end_matches('/') == ours);
    match aud {
        Some(Value::Array(values)) => values.iter().any(matches),
        Some(value) => matches(value),
        None => false,
    }
}

impl AuthorizationServer {
    /// `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`: exchange an
    /// ID-JAG presented by an authenticated configured client for an access
    /// token acting as the enterprise user it names.
    /// The attempt is one funnel step, `identity_assertion`.
    pub async fn identity_assertion_grant(
        &self,
        creds: &ClientCredentials,
        assertion: Option<&str>,
        scope: Option<&str>,
        resource: Option<&str>,
    ) -> Result<TokenResponse, OAuthError> {
        let mut trace = MachineTrace::default();
        let result = self
            .identity_assertion_traced(&mut trace, creds, assertion, scope, resource)
            .await;
        self.record_machine_step(Step::IdentityAssertion, trace, &result);
        result
    }

    async fn identity_assertion_traced(
        &self,
        trace: &mut MachineTrace,
        creds: &ClientCredentials,
        assertion: Option<&str>,
        scope: Option<&str>,
        resource: Option<&str>,
    ) -> Result<TokenResponse, OAuthError> {
        if self.enterprise.is_empty() {
            return Err(OAuthError::UnsupportedGrantType(format!(
                "grant_type {GRANT_JWT_BEARER} is not supported: no enterprise identity provider is configured"
            )));
        }
        let client = self.authenticate_named(creds, &mut trace.client_id).await?;
        if !client
            .configured
            .as_ref()
            .is_some_and(|c| c.allows_grant(GRANT_JWT_BEARER))
        {
            return Err(OAuthError::UnauthorizedClient(format!(
                "this client may not use {GRANT_JWT_BEARER}"
            )));
        }
        let assertion = assertion
            .ok_or_else(|| OAuthError::InvalidRequest("assertion is missing".to_owned()))?;
        let verified = self.verify_id_jag(assertion, &client).await?;
        let claims = &verified.claims;
        // Extension §5.1 and §7.6.2: the token is bound to the assertion's
        // resource, which must be this server's; a `resource` parameter
        // must name the same one.
        match claims.get("resource").and_then(Value::as_str) {
            Some(r) if self.is_our_resource(r) => {}
            Some(_) => return Err(refused("its resource is not this server's /mcp")),
            None => return Err(refused("it names no resource")),
        }
        if resource.is_some_and(|r| !self.is_our_resource(r)) {
            return Err(OAuthError::InvalidTarget(
                "resource differs from the identity assertion's".to_owned(),
            ));
        }
        let scope = self.id_jag_scope(&client, string_claim(claims, "scope"), scope)?;
        let idp = &verified.idp.settings;
        let user = string_claim(claims, &idp.user_claim)
            .ok_or_else(|| refused(&format!("the user claim {} is missing", idp.user_claim)))?
            .to_owned();
        let now = self.clock.now();
        // Single use, across replicas (extension §7.4.2), until it expires.
        let key = format!("id-jag|{}|{}", idp.issuer, verified.jti);
        if self
            .store
            .use_assertion_jti(&key, verified.exp, now)
            .await?
            == Consumed::Lost
        {
            tracing::warn!(client_id = %client.client_id, issuer = %idp.issuer, "identity assertion replayed");
            return Err(OAuthError::refused(
                OAuthErrorCode::InvalidGrant,
                Reason::IdentityAssertionReplayed,
                "identity assertion refused: it was already used",
            ));
        }
        let email = string_claim(claims, &idp.email_claim).map(str::to_owned);
        let identity = Identity {
            subject: user.clone(),
            username: email.clone().unwrap_or_else(|| user.clone()),
            login: None,
            email,
            name: string_claim(claims, &idp.name_claim).map(str::to_owned),
            groups: Vec::new(),
            email_verified: true,
            claims: serde_json::Map::new(),
        };
        let user_id = enterprise_user_id(&idp.issuer, &idp.user_claim, &user);
        trace.user_id = Some(user_id.clone());
        self.store
            .upsert_upstream_user(
                &user_id,
                &format!("enterprise:{}", identity.username),
                &serde_json::to_string(&identity)?,
                now,
            )
            .await?;
        tracing::info!(client_id = %client.client_id, issuer = %idp.issuer, %user_id, "identity assertion exchanged");
        self.mint(
            &client,
            &user_id,
            &scope,
            &self.resource,
            None,
            Some(&identity),
        )
    }

    /// Everything about the assertion that needs no store: its type,
    /// algorithm, issuer, signature, audience, times, id, subject and
    /// client. Each refusal names its cause, never the token.
    async fn verify_id_jag<'s>(
        &'s self,
        assertion: &str,
        client: &Client,
    ) -> Result<Assertion<'s>, OAuthError> {
        let header = decode_header(assertion)
            .map_err(|_| refused("it is not a JWT signed with a known algorithm"))?;
        let typ_ok = header.typ.as_deref().is_some_and(|t| {
            t.eq_ignore_ascii_case(ID_JAG_TYP)
                || t.eq_ignore_ascii_case(&format!("application/{ID_JAG_TYP}"))
        });
        if !typ_ok {
            return Err(refused(&format!("its typ must be {ID_JAG_TYP}")));
        }
        let issuer =
            unverified_claim(assertion, "iss").ok_or_else(|| refused("it names no issuer"))?;
        let idp = self
            .enterprise
            .find(&issuer)
            .ok_or_else(|| refused("its issuer is not a trusted enterprise identity provider"))?;
        let settings = &idp.settings;
        if !settings.algorithms.contains(&header.alg) {
            return Err(refused(&format!(
                "algorithm {:?} is not allowed for this issuer",
                header.alg
            )));
        }
        let claims = self
            .verified_claims(assertion, idp, header.alg, header.kid.as_deref())
            .await?;
        if !names_issuer(claims.get("aud"), &self.issuer) {
            return Err(refused("its aud is not this authorization server"));
        }
        let now = self.clock.now();
        let exp = int_claim(&claims, "exp").ok_or_else(|| refused("exp is missing"))?;
        let iat = int_claim(&claims, "iat").ok_or_else(|| refused("iat is missing"))?;
        if exp <= now {
            return Err(refused("it has expired"));
        }
        if iat > now + LEEWAY_SECS {
            return Err(refused("it was issued in the future"));
        }
        if int_claim(&claims, "nbf").is_some_and(|nbf| nbf > now + LEEWAY_SECS) {
            return Err(refused("it is not valid yet"));
        }
        if exp - iat > settings.max_assertion_lifetime_secs as i64 {
            return Err(refused(&format!(
                "it lives longer than {} seconds",
                settings.max_assertion_lifetime_secs
            )));
        }
        let jti = string_claim(&claims, "jti")
            .filter(|j| j.chars().count() <= MAX_JTI_CHARS)
            .ok_or_else(|| refused("jti is missing"))?
            .to_owned();
        if string_claim(&claims, "sub").is_none() {
            return Err(refused("sub is missing"));
        }
        if string_claim(&claims, "client_id") != Some(client.client_id.as_str()) {
            return Err(refused("it was issued to another client"));
        }
        if !settings.allowed_clients.contains(&client.client_id) {
            return Err(refused(
                "this client may not present this issuer's assertions",
            ));
        }
        Ok(Assertion {
            idp,
            claims,
            jti,
            exp,
        })
    }

    /// The claims, once a key of `idp` verifies the signature. Time and
    /// audience are checked by the caller against the server's clock.
    async fn verified_claims(
        &self,
        assertion: &str,
        idp: &TrustedIdp,
        alg: Algorithm,
        kid: Option<&str>,
    ) -> Result<Map<String, Value>, OAuthError> {
        let keys = idp.keys.keys_for(kid).await.map_err(|e| {
            tracing::warn!(issuer = %idp.settings.issuer, error = %e, "enterprise IdP keys unavailable");
            // The operator's identity provider, not the client, is at fault:
            // 503, so the client retries rather than giving up.
            OAuthError::Unavailable(
                "the enterprise identity provider's keys could not be fetched; retry later"
                    .to_owned(),
            )
        })?;
        let usable: Vec<_> = keys
            .into_iter()
            .filter(|k| k.family.verifies(alg) && k.alg.is_none_or(|a| a == alg))
            .collect();
        if usable.is_empty() {
            return Err(refused(
                "no key of the issuer matches its kid and algorithm",
            ));
        }
        let mut validation = Validation::new(alg);
        validation.algorithms = vec![alg];
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        for key in usable {
            if let Ok(data) = decode::<Map<String, Value>>(assertion, &key.key, &validation) {
                return Ok(data.claims);
            }
        }
        Err(refused("its signature does not verify"))
    }

    /// Extension §7.2.1: the token's scopes are the intersection of the
    /// request's and the assertion's (and of what the client may have and
    /// this server knows). A requested scope the assertion does not grant
    /// is an escalation and refused (`invalid_scope`), not silently
    /// dropped: the client learns its request exceeded what the IdP
    /// allowed. No `scope` in the request: the assertion's. An assertion
    /// without `scope` grants none.
    fn id_jag_scope(
        &self,
        client: &Client,
        granted: Option<&str>,
        requested: Option<&str>,
    ) -> Result<String, OAuthError> {
        let granted: Vec<&str> = granted.unwrap_or_default().split_whitespace().collect();
        let permitted = |s: &&str| {
            self.scopes_supported.iter().any(|k| k == s)
                && client
                    .configured
                    .as_ref()
                    .and_then(|c| c.scopes.as_ref())
                    .is_none_or(|allowed| allowed.iter().any(|a| a == s))
        };
        let scopes: Vec<&str> = match requested {
            Some(requested) => {
                let asked: Vec<&str> = requested.split_whitespace().collect();
                if let Some(extra) = asked.iter().find(|a| !granted.contains(a)) {
                    return Err(OAuthError::InvalidScope(format!(
                        "scope {extra} is not granted by the identity assertion"
                    )));
                }
                let mut seen = BTreeSet::new();
                asked
                    .into_iter()
                    .filter(|s| seen.insert(*s))
                    .filter(permitted)
                    .collect()
            }
            None => granted.into_iter().filter(permitted).collect(),
        };
        Ok(scopes.join(" "))
    }
}

/// The same user id for the same enterprise user on every replica and
/// after restarts, without a lookup; its own namespace (`ent_`), apart
/// from local users and proxy mode's.
fn enterprise_user_id(issuer: &str, claim: &str, value: &str) -> String {
    format!(
        "ent_{}",
        &sha256_b64(&format!("{issuer}|{claim}|{value}"))[..27]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aud_is_the_issuer_as_a_string_or_in_an_array_with_or_without_a_slash() {
        let i = "https://gw.example";
        for aud in [
            serde_json::json!("https://gw.example"),
            serde_json::json!("https://gw.example/"),
            serde_json::json!(["https://other.example", "https://gw.example/"]),
        ] {
            assert!(names_issuer(Some(&aud), i), "{aud}");
        }
        for aud in [
            serde_json::json!("https://gw.example/mcp"),
            serde_json::json!(["https://other.example"]),
            serde_json::json!(7),
        ] {
            assert!(!names_issuer(Some(&aud), i), "{aud}");
        }
        assert!(!names_issuer(None, i));
    }

    #[test]
    fn user_ids_are_stable_and_differ_per_issuer_and_claim() {
        let a = enterprise_user_id("https://acme.example", "sub", "u1");
        assert_eq!(a, enterprise_user_id("https://acme.example", "sub", "u1"));
        assert!(a.starts_with("ent_") && a.len() == 31);
        assert_ne!(a, enterprise_user_id("https://evil.example", "sub", "u1"));
        assert_ne!(a, enterprise_user_id("https://acme.example", "email", "u1"));
    }
}
