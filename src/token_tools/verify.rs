//! `mcpgate token verify`: a token checked exactly as mcpgate checks it,
//! with `auth::verify::IssuerVerifier` built the way the server builds it
//! (`auth::resource_verifier` for an external issuer; the own-token rules of
//! local and proxy mode), then the verdict explained: which check failed
//! (signature, alg, typ, iss, aud, exp/nbf with times in words, missing
//! scopes) or what passed.

use serde::Serialize;

use super::TokenToolError;
use crate::{
    auth::{
        self, SUPPORTED_ALGORITHMS,
        policy::AccessPolicy,
        settings::ResourceAuthSettings,
        verify::{IssuerVerifier, TokenError},
    },
    config::{Config, ResolvedAuth},
    doctor::token::{DecodedJwt, decode, relative},
};

/// Where the fix texts point: `docs/guide/tokens.md#<anchor>`.
pub const DOCS: &str = "docs/guide/tokens.md";

/// What a token is checked against, and how.
pub struct Expectations {
    /// One line: the mode or flags these came from.
    pub source: String,
    pub issuer: String,
    pub audiences: Vec<String>,
    pub algorithms: Vec<String>,
    /// Scopes the token must carry (`--scope`): a missing one fails.
    pub required_scopes: Vec<String>,
    /// Scopes mcpgate advertises (`--config`): a missing one is a warning,
    /// since mcpgate accepts the token and refuses only the tools needing it.
    pub advertised_scopes: Vec<String>,
    /// Seconds of clock skew allowed on `exp`/`nbf` (0 for mcpgate's own tokens).
    pub leeway_secs: i64,
    verifier: IssuerVerifier,
}

/// The verifier of an external issuer's tokens from flags: resource mode
/// with these settings (every supported algorithm, keys by discovery).
pub async fn from_flags(
    http: reqwest::Client,
    issuer: &str,
    audiences: Vec<String>,
    scopes: Vec<String>,
) -> Result<Expectations, TokenToolError> {
    if audiences.is_empty() {
        return Err(TokenToolError::Usage(
            "name the audience the token must carry: --audience URL (for mcpgate, its MCP URL: public_url + \"/mcp\")".to_owned(),
        ));
    }
    let settings = resource_settings(issuer, audiences, all_algorithms());
    let verifier = resource_verifier(&settings, http).await?;
    Ok(Expectations {
        source: format!("issuer {issuer} (flags)"),
        issuer: settings.issuer,
        audiences: settings.audiences,
        algorithms: settings.algorithms,
        required_scopes: scopes,
        advertised_scopes: Vec::new(),
        leeway_secs: 60,
        verifier,
    })
}

/// What the configured mode checks: `[auth.resource]` in resource and
/// bridge mode (and auto deciding resource), mcpgate's own tokens in local
/// and proxy mode (issuer `public_url`, audience `public_url/mcp`, ES256,
/// keys from its metadata, so that server must be reachable). `scopes`
/// are required on top.
pub async fn from_config(
    http: reqwest::Client,
    cfg: &Config,
    scopes: Vec<String>,
) -> Result<Expectations, TokenToolError> {
    let policy = AccessPolicy::new(cfg.policy.clone());
    let resolved = cfg
        .auth
        .clone()
        .resolve()
        .await
        .map_err(|e| TokenToolError::Config(e.to_string()))?;
    let mode = resolved.mode_name();
    match resolved {
        ResolvedAuth::None => Err(TokenToolError::Config(
            "auth.mode = \"none\" checks no tokens: every caller is anonymous".to_owned(),
        )),
        ResolvedAuth::Resource { resource } | ResolvedAuth::Bridge { resource, .. } => {
            let verifier = resource_verifier(&resource, http).await?;
            Ok(Expectations {
                source: format!("auth.mode = \"{mode}\": [auth.resource]"),
                issuer: resource.issuer.clone(),
                audiences: resource.audiences.clone(),
                algorithms: resource.algorithms.clone(),
                required_scopes: scopes,
                advertised_scopes: crate::app::external_scopes(&resource, &policy),
                leeway_secs: 60,
                verifier,
            })
        }
        ResolvedAuth::Local { local } | ResolvedAuth::Proxy { local, .. } => {
            // The settings the server's own verifier has (oauth::setup::build).
            let settings = resource_settings(
                &cfg.public_origin(),
                vec![cfg.mcp_resource()],
                vec!["ES256".to_owned()],
            );
            let verifier = resource_verifier(&settings, http).await?.for_own_tokens();
            Ok(Expectations {
                source: format!("auth.mode = \"{mode}\": mcpgate is the issuer"),
                issuer: settings.issuer,
                audiences: settings.audiences,
                algorithms: settings.algorithms,
                required_scopes: scopes,
                advertised_scopes: crate::oauth::setup::advertised_scopes(&local, &policy),
                leeway_secs: 0,
                verifier,
            })
        }
    }
}

fn all_algorithms() -> Vec<String> {
    SUPPORTED_ALGORITHMS
        .iter()
        .map(|a| (*a).to_owned())
        .collect()
}

fn resource_settings(
    issuer: &str,
    audiences: Vec<String>,
    algorithms: Vec<String>,
) -> ResourceAuthSettings {
    ResourceAuthSettings {
        issuer: issuer.to_owned(),
        audiences,
        jwks_uri: None,
        algorithms,
        scopes_supported: None,
        jwks_refetch_interval_secs: 30,
        introspection: None,
    }
}

async fn resource_verifier(
    settings: &ResourceAuthSettings,
    http: reqwest::Client,
) -> Result<IssuerVerifier, TokenToolError> {
    auth::resource_verifier(settings, http, crate::clock::system())
        .await
        .map_err(|e| match e {
            auth::AuthSetupError::Discovery { issuer, reason } => {
                TokenToolError::Discovery { issuer, reason }
            }
            other => TokenToolError::Config(other.to_string()),
        })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Pass,
    Warn,
    Fail,
}

/// One check of the verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// `signature`, `alg`, `typ`, `iss`, `aud`, `exp`, `nbf`, `scope`, …
    pub check: &'static str,
    pub outcome: Outcome,
    pub summary: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    /// `docs/guide/tokens.md#verify-<check>`.
    pub docs: String,
}

impl Finding {
    fn new(check: &'static str, outcome: Outcome, summary: String, fix: Option<String>) -> Self {
        Finding {
            check,
            outcome,
            summary,
            fix,
            docs: format!("{DOCS}#verify-{check}"),
        }
    }
    fn pass(check: &'static str, summary: String) -> Self {
        Self::new(check, Outcome::Pass, summary, None)
    }
    fn fail(check: &'static str, summary: String, fix: impl Into<String>) -> Self {
        Self::new(check, Outcome::Fail, summary, Some(fix.into()))
    }
}

/// The verdict on `token`: what passed, then the check that failed (the
/// verifier stops at the first), or every check passed and the scopes.
/// `now` in unix seconds, for the times in words.
pub async fn verify(expected: &Expectations, token: &str, now: i64) -> Vec<Finding> {
    let jwt = decode(token).ok();
    // `verify`, not `verify_jwt`: an opaque token goes to introspection
    // when the configuration has it, as on the server. The caches are this
    // process's own, so they are empty here.
    let result = expected.verifier.verify(token).await;
    let header = |name: &str| {
        jwt.as_ref()
            .and_then(|j| j.header.get(name))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    let alg = header("alg").unwrap_or_else(|| "?".to_owned());
    let kid = header("kid");
    let kid_text = kid
        .as_deref()
        .map(|k| format!("key {k}"))
        .unwrap_or_else(|| "a key without kid".to_owned());
    match result {
        Ok(principal) => {
            let mut findings = vec![
                if jwt.is_some() {
                    Finding::pass(
                        "signature",
                        format!("{alg} signature verifies with {kid_text} of the issuer's key set"),
                    )
                } else {
                    Finding::pass(
                        "active",
                        "an opaque token: introspection at the authorization server says it is active".to_owned(),
                    )
                },
                Finding::pass("iss", format!("iss is {}", principal.issuer)),
                Finding::pass(
                    "aud",
                    format!(
                        "aud {:?} names {}",
                        principal.audience,
                        accepted(&principal.audience, &expected.audiences)
                    ),
                ),
            ];
            if let Some(exp) = principal.expires_at {
                findings.push(Finding::pass(
                    "exp",
                    format!("expires {} ({})", relative(exp - now), utc(exp)),
                ));
            }
            let granted: Vec<String> = principal.scopes.iter().cloned().collect();
            findings.push(scope_finding(expected, &granted));
            findings
        }
        Err(e) => vec![failure(expected, jwt.as_ref(), &e, &alg, &kid_text, now).await],
    }
}

fn accepted(audience: &[String], accepted: &[String]) -> String {
    audience
        .iter()
        .find(|a| accepted.contains(a))
        .cloned()
        .unwrap_or_default()
}

fn scope_finding(expected: &Expectations, granted: &[String]) -> Finding {
    let missing = |wanted: &[String]| -> Vec<String> {
        wanted
            .iter()
            .filter(|s| !granted.contains(s))
            .cloned()
            .collect()
    };
    let required = missing(&expected.required_scopes);
    if !required.is_empty() {
        return Finding::fail(
            "scope",
            format!("scopes {granted:?} lack the required {required:?}"),
            "request the missing scopes (scope=… on the token or authorization request) and allow them for this client at the authorization server; tools that need them answer 403 insufficient_scope",
        );
    }
    let advertised = missing(&expected.advertised_scopes);
    if !advertised.is_empty() {
        return Finding::new(
            "scope",
            Outcome::Warn,
            format!(
                "scopes {granted:?} lack {advertised:?} of the advertised {:?}: mcpgate accepts the token, and the tools needing those answer 403 insufficient_scope",
                expected.advertised_scopes
            ),
            Some("request the missing scopes if the client needs those tools".to_owned()),
        );
    }
    Finding::pass(
        "scope",
        if expected.required_scopes.is_empty() && expected.advertised_scopes.is_empty() {
            format!("scopes {granted:?} (none required)")
        } else {
            format!("scopes {granted:?} cover what is required and advertised")
        },
    )
}

/// The failed check, named from the verifier's error and explained from
/// the token's (unverified) claims.
async fn failure(
    expected: &Expectations,
    jwt: Option<&DecodedJwt>,
    error: &TokenError,
    alg: &str,
    kid_text: &str,
    now: i64,
) -> Finding {
    let claim = |name: &str| jwt.and_then(|j| j.claims.get(name)).cloned();
    let time = |name: &str| claim(name).and_then(|v| v.as_i64());
    match error {
        TokenError::TooLong | TokenError::Malformed(_) | TokenError::OpaqueNotAccepted => {
            Finding::fail(
                "format",
                match jwt {
                    None => format!(
                        "{error}: not a JWT, and no introspection is configured to ask about an opaque token ([auth.resource.introspection])"
                    ),
                    Some(_) => error.to_string(),
                },
                "give the access token itself (not an ID token, not the whole token response); an IdP issuing opaque access tokens needs a resource/audience parameter to issue JWTs (Auth0: audience)",
            )
        }
        TokenError::AlgorithmNotAllowed(_) => Finding::fail(
            "alg",
            format!(
                "alg {alg} is not among the accepted {:?}",
                expected.algorithms
            ),
            "sign with an accepted algorithm, or list it in auth.resource.algorithms (asymmetric only: HS256 is never accepted)",
        ),
        TokenError::WrongType(typ) => Finding::fail(
            "typ",
            format!(
                "typ {typ:?} is not an access token type (JWT or at+jwt; mcpgate's own tokens are exactly at+jwt)"
            ),
            "send the access token, not an ID token or another JWT the issuer signs",
        ),
        TokenError::UnknownKeyId => {
            let known: Vec<String> = expected
                .verifier
                .jwks()
                .keys_for(None)
                .await
                .unwrap_or_default()
                .into_iter()
                .map(|k| k.kid.unwrap_or_else(|| "(no kid)".to_owned()))
                .collect();
            Finding::fail(
                "signature",
                format!(
                    "no key of the issuer's key set can verify {alg} with {kid_text}; it has {known:?}"
                ),
                "the token comes from another issuer or tenant, or was signed by a key the issuer no longer publishes",
            )
        }
        TokenError::BadSignature => Finding::fail(
            "signature",
            format!("the {alg} signature does not verify with {kid_text} of the issuer's key set"),
            "the token was altered, or signed by another issuer's key under the same kid",
        ),
        TokenError::WrongIssuer => Finding::fail(
            "iss",
            format!(
                "iss {} is not {}",
                claim("iss")
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "(none)".to_owned()),
                expected.issuer
            ),
            "get the token from the configured issuer, or configure auth.resource.issuer exactly as the tokens' iss (trailing slash included: Auth0's ends in /)",
        ),
        TokenError::WrongAudience => {
            let audiences = jwt.map(DecodedJwt::audiences).unwrap_or_default();
            let slash = audiences.iter().any(|a| {
                expected
                    .audiences
                    .iter()
                    .any(|e| a.trim_end_matches('/') == e.trim_end_matches('/'))
            });
            Finding::fail(
                "aud",
                format!(
                    "aud {audiences:?} names none of the accepted audiences {:?}{}",
                    expected.audiences,
                    if slash {
                        " (they differ only by a trailing slash, and audiences are compared exactly)"
                    } else {
                        ""
                    }
                ),
                format!(
                    "ask for a token for this resource: resource={0} (RFC 8707), Auth0 audience={0}, Entra scope=api://<app-id>/.default with the API's application ID URI; Keycloak: an audience mapper; or accept that audience in auth.resource.audiences",
                    expected.audiences.first().map(String::as_str).unwrap_or("")
                ),
            )
        }
        TokenError::Expired => {
            let exp = time("exp").unwrap_or_default();
            Finding::fail(
                "exp",
                format!(
                    "expired {} ({}){}",
                    relative(exp - now),
                    utc(exp),
                    if expected.leeway_secs > 0 {
                        format!(
                            ", beyond the {} s of clock skew allowed",
                            expected.leeway_secs
                        )
                    } else {
                        String::new()
                    }
                ),
                "get a fresh token (mcpgate token refresh, or the grant again); if it has just been issued, check this machine's and the issuer's clocks",
            )
        }
        TokenError::NotYetValid => {
            let nbf = time("nbf").unwrap_or_default();
            Finding::fail(
                "nbf",
                format!("not valid until {} ({})", relative(nbf - now), utc(nbf)),
                "the issuer's clock is ahead of this machine's: synchronise them (NTP)",
            )
        }
        TokenError::MissingClaim(name) => Finding::fail(
            "claims",
            format!("the token has no {name} claim (mcpgate requires exp, iss, aud and sub)"),
            "configure the authorization server to issue RFC 9068 access tokens",
        ),
        TokenError::Delegated => Finding::fail(
            "typ",
            "the token carries act: it acts on someone's behalf and is not an access token"
                .to_owned(),
            "send the access token mcpgate issued to the client",
        ),
        TokenError::Upstream(reason) => Finding::fail(
            "keys",
            format!("cannot ask the authorization server: {reason}"),
            "check that the issuer's jwks_uri (or its introspection endpoint) is reachable from here",
        ),
        TokenError::Inactive => Finding::fail(
            "active",
            "introspection says the token is not active (expired, revoked, or unknown to the authorization server)".to_owned(),
            "get a fresh token; an opaque token is only known to the server that issued it",
        ),
        TokenError::NoSubject(claim) => Finding::fail(
            "claims",
            format!("the introspection answer has no {claim:?} claim to take the caller from"),
            "set auth.resource.introspection.subject_claim to a claim the answer carries",
        ),
        TokenError::Rejected(reason)
            if reason.starts_with("Base64") || reason.starts_with("Json") =>
        {
            Finding::fail(
                "format",
                format!("a part of the JWT does not decode: {reason}"),
                "the token was cut or altered on the way (copy it whole, without quotes or line breaks)",
            )
        }
        other => Finding::fail("claims", other.to_string(), "see the description"),
    }
}

/// True when no check failed (warnings allowed).
pub fn valid(findings: &[Finding]) -> bool {
    findings.iter().all(|f| f.outcome != Outcome::Fail)
}

/// The findings as text: the expectations, then one line per check with
/// its fix and docs link under a warning or failure.
pub fn text(expected: &Expectations, findings: &[Finding]) -> String {
    let mut out = format!(
        "checked as mcpgate would, {}\n  issuer {}, audiences {:?}, algorithms {:?}\n",
        expected.source, expected.issuer, expected.audiences, expected.algorithms
    );
    for f in findings {
        let word = match f.outcome {
            Outcome::Pass => "pass",
            Outcome::Warn => "warn",
            Outcome::Fail => "FAIL",
        };
        out.push_str(&format!("{word}  {:<9}  {}\n", f.check, f.summary));
        if let Some(fix) = &f.fix {
            out.push_str(&format!("      fix: {fix}\n      see {}\n", f.docs));
        }
    }
    let failed: Vec<&str> = findings
        .iter()
        .filter(|f| f.outcome == Outcome::Fail)
        .map(|f| f.check)
        .collect();
    out.push_str(match failed.as_slice() {
        [] => "the token is valid for this server\n",
        ["scope"] => "the token is valid, but lacks required scopes: the tools needing them answer 403 insufficient_scope\n",
        _ => "the token would be refused: 401 invalid_token\n",
    });
    out
}

/// The findings as one JSON object.
pub fn json(expected: &Expectations, findings: &[Finding]) -> serde_json::Value {
    serde_json::json!({
        "valid": valid(findings),
        "source": expected.source,
        "issuer": expected.issuer,
        "audiences": expected.audiences,
        "algorithms": expected.algorithms,
        "required_scopes": expected.required_scopes,
        "advertised_scopes": expected.advertised_scopes,
        "findings": findings,
    })
}

/// A unix time as `2026-12-06 19:41:33 UTC`.
fn utc(t: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(t) {
        Ok(d) => format!(
            "{}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            d.year(),
            u8::from(d.month()),
            d.day(),
            d.hour(),
            d.minute(),
            d.second()
        ),
        Err(_) => t.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::jwks::{JwksCache, KeyFamily, VerificationKey};
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    use jsonwebtoken::Algorithm;
    use serde_json::json;

    const NOW: i64 = 2_000_000_000;

    /// Expectations over one fresh P-256 key (resource-mode rules), and a
    /// signer with that key taking the header `typ` and the claims.
    fn expectations_and_signer(
        required: &[&str],
    ) -> (Expectations, impl Fn(serde_json::Value) -> String) {
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &aws_lc_rs::rand::SystemRandom::new(),
        )
        .unwrap();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        let point = pair.public_key().as_ref().to_vec();
        let key = VerificationKey {
            kid: Some("k1".into()),
            key: jsonwebtoken::DecodingKey::from_ec_components(
                &URL_SAFE_NO_PAD.encode(&point[1..33]),
                &URL_SAFE_NO_PAD.encode(&point[33..]),
            )
            .unwrap(),
            alg: Some(Algorithm::ES256),
            family: KeyFamily::Ec,
        };
        let verifier = IssuerVerifier::new(
            "https://idp.example".into(),
            vec!["https://mcp.example/mcp".into()],
            vec![Algorithm::ES256],
            JwksCache::preloaded(vec![key]),
            None,
            reqwest::Client::new(),
        );
        let expected = Expectations {
            source: "test".into(),
            issuer: "https://idp.example".into(),
            audiences: vec!["https://mcp.example/mcp".into()],
            algorithms: vec!["ES256".into()],
            required_scopes: required.iter().map(|s| (*s).to_owned()).collect(),
            advertised_scopes: vec!["notes:read".into(), "notes:write".into()],
            leeway_secs: 60,
            verifier,
        };
        let encoding = jsonwebtoken::EncodingKey::from_ec_der(pkcs8.as_ref());
        let sign = move |extra: serde_json::Value| {
            let mut claims = json!({"iss": "https://idp.example", "sub": "alice",
                "aud": "https://mcp.example/mcp", "exp": NOW + 600, "iat": NOW,
                "scope": "notes:read"});
            if let (Some(c), Some(e)) = (claims.as_object_mut(), extra.as_object()) {
                c.extend(e.clone());
            }
            let mut header = jsonwebtoken::Header::new(Algorithm::ES256);
            header.kid = Some("k1".into());
            header.typ = Some("at+jwt".into());
            jsonwebtoken::encode(&header, &claims, &encoding).unwrap()
        };
        (expected, sign)
    }

    fn failed(findings: &[Finding]) -> &Finding {
        findings
            .iter()
            .find(|f| f.outcome == Outcome::Fail)
            .unwrap_or_else(|| panic!("no failure in {findings:?}"))
    }

    // The verifier checks exp against the system clock: tokens in these
    // tests are built around the real time, the words around `NOW`.
    fn real_now() -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp()
    }

    #[tokio::test]
    async fn a_good_token_passes_with_an_advertised_scope_missing_as_a_warning() {
        let (expected, sign) = expectations_and_signer(&[]);
        let now = real_now();
        let token = sign(json!({"exp": now + 3600, "iat": now}));
        let findings = verify(&expected, &token, now).await;
        assert!(valid(&findings), "{findings:?}");
        let checks: Vec<_> = findings.iter().map(|f| f.check).collect();
        assert_eq!(checks, ["signature", "iss", "aud", "exp", "scope"]);
        assert!(
            findings[3].summary.contains("expires in 60 minutes"),
            "{findings:?}"
        );
        assert_eq!(findings[4].outcome, Outcome::Warn);
        assert!(findings[4].summary.contains("notes:write"), "{findings:?}");
    }

    #[tokio::test]
    async fn each_refusal_is_named_by_its_check() {
        let (expected, sign) = expectations_and_signer(&["notes:write"]);
        let now = real_now();
        let live = json!({"exp": now + 600, "iat": now});
        let with = |extra: serde_json::Value| {
            let mut claims = live.clone();
            if let (Some(c), Some(e)) = (claims.as_object_mut(), extra.as_object()) {
                c.extend(e.clone());
            }
            sign(claims)
        };
        let cases = [
            (
                with(json!({"aud": "https://mcp.example/mcp/"})),
                "aud",
                "trailing slash",
            ),
            (
                with(json!({"aud": "https://other.example"})),
                "aud",
                "https://other.example",
            ),
            (
                with(json!({"iss": "https://evil.example"})),
                "iss",
                "https://evil.example",
            ),
            (with(json!({"exp": now - 7200})), "exp", "2 hours ago"),
            (with(json!({"nbf": now + 7200})), "nbf", "in 2 hours"),
            (with(json!({})), "scope", "notes:write"),
            ("opaque".to_owned(), "format", "not a JWT"),
        ];
        for (token, check, words) in cases {
            let findings = verify(&expected, &token, now).await;
            let f = failed(&findings);
            assert_eq!(f.check, check, "{findings:?}");
            assert!(f.summary.contains(words), "{check}: {}", f.summary);
            assert!(f.fix.is_some());
            assert_eq!(f.docs, format!("docs/guide/tokens.md#verify-{check}"));
        }
        // A token without sub: a required claim.
        let mut no_sub = live.clone();
        no_sub["sub"] = serde_json::Value::Null;
        let token = sign(no_sub);
        let f = failed(&verify(&expected, &token, now).await).clone();
        assert!(matches!(f.check, "claims" | "format"), "{f:?}");
        // An altered signature.
        let good = with(json!({}));
        let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
        let flipped = if parts[2].as_bytes()[5] == b'A' {
            "B"
        } else {
            "A"
        };
        parts[2].replace_range(5..6, flipped);
        let findings = verify(&expected, &parts.join("."), now).await;
        assert_eq!(failed(&findings).check, "signature", "{findings:?}");
        // Another algorithm: HS256 with any secret is refused on alg.
        let mut header = jsonwebtoken::Header::new(Algorithm::HS256);
        header.kid = Some("k1".into());
        let hmac = jsonwebtoken::encode(
            &header,
            &live,
            &jsonwebtoken::EncodingKey::from_secret(b"secret"),
        )
        .unwrap();
        let findings = verify(&expected, &hmac, now).await;
        assert_eq!(failed(&findings).check, "alg", "{findings:?}");
        let _ = NOW;
    }

    #[test]
    fn every_check_has_a_section_in_the_guide() {
        let guide = include_str!("../../docs/guide/tokens.md");
        let source = include_str!("verify.rs");
        let mut names = Vec::new();
        for call in ["Finding::fail(", "Finding::pass(", "Finding::new("] {
            for (at, _) in source.match_indices(call) {
                let rest = &source[at + call.len()..];
                if let Some(start) = rest.find('"') {
                    let name: String = rest[start + 1..]
                        .chars()
                        .take_while(|c| *c != '"')
                        .collect();
                    // Names are lowercase words (this test's own text is not a call).
                    if rest[..start].trim().is_empty()
                        && !name.is_empty()
                        && name.chars().all(|c| c.is_ascii_lowercase())
                    {
                        names.push(name);
                    }
                }
            }
        }
        assert!(names.len() > 10, "{names:?}");
        for name in names {
            assert!(
                guide.contains(&format!("### verify-{name}\n")),
                "docs/guide/tokens.md has no section verify-{name}"
            );
        }
    }

    #[test]
    fn times_are_shown_in_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
    }
}
