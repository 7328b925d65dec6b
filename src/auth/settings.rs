//! `[auth.resource]` (with `[auth.resource.introspection]`) and `[[policy]]`:
//! the raw TOML shapes and their validation into typed settings. Called
//! from `config`, which collects the errors.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use url::Url;

use super::{
    SUPPORTED_ALGORITHMS,
    policy::{Effect, ScopeRule},
};
use crate::problems::{is_loopback_host, read_secret};

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawResourceAuth {
    /// The authorization server's issuer identifier, exactly as in its tokens.
    pub issuer: Option<String>,
    /// Accepted `aud` values. Default: the MCP resource (`public_url + "/mcp"`).
    pub audiences: Option<Vec<String>>,
    /// Default: from the issuer's discovery document.
    pub jwks_uri: Option<String>,
    /// Accepted JWS algorithms. Default: every asymmetric one supported.
    pub algorithms: Option<Vec<String>>,
    /// Advertised in protected-resource metadata and challenges. Default: the policy's scopes.
    pub scopes_supported: Option<Vec<String>>,
    /// Least time between two key-set fetches caused by unknown `kid`s. Default 30.
    pub jwks_refetch_interval_secs: Option<u64>,
    pub introspection: Option<RawIntrospection>,
}

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawIntrospection {
    /// Default: `introspection_endpoint` from discovery.
    pub endpoint: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub client_secret_file: Option<PathBuf>,
    /// The answer's claim naming the caller. Default `sub`; no fallback.
    pub subject_claim: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    /// Tool-name patterns (`*` wildcard).
    #[serde(default)]
    pub tools: Vec<String>,
    /// Resource-URI patterns.
    #[serde(default)]
    pub resources: Vec<String>,
    /// Prompt-name patterns.
    #[serde(default)]
    pub prompts: Vec<String>,
    /// Scopes a caller needs (allow rules).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// `allow` (default) or `deny`.
    pub effect: Option<String>,
    /// The rule applies only to these subjects / members of these groups /
    /// callers whose token has these claim values; empty means anyone.
    #[serde(default)]
    pub subjects: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub claims: std::collections::BTreeMap<String, String>,
}

/// `[auth.resource]`, validated.
#[derive(Debug, Clone, Serialize)]
pub struct ResourceAuthSettings {
    pub issuer: String,
    pub audiences: Vec<String>,
    pub jwks_uri: Option<String>,
    pub algorithms: Vec<String>,
    pub scopes_supported: Option<Vec<String>>,
    pub jwks_refetch_interval_secs: u64,
    pub introspection: Option<IntrospectionSettings>,
}

#[derive(Debug, Clone, Serialize)]
pub struct IntrospectionSettings {
    pub endpoint: Option<String>,
    pub client_id: String,
    #[serde(serialize_with = "crate::problems::redacted")]
    pub client_secret: secrecy::SecretString,
    pub subject_claim: String,
}

/// `[[policy]]`: every rule names a pattern; deny rules carry no scopes.
pub fn validate_policy(raw: &[RawPolicy], errors: &mut Vec<String>) -> Vec<ScopeRule> {
    let mut rules = Vec::new();
    for (i, rule) in raw.iter().enumerate() {
        let patterns = [&rule.tools, &rule.resources, &rule.prompts];
        if patterns.iter().all(|p| p.is_empty())
            || patterns.iter().any(|p| p.iter().any(String::is_empty))
        {
            errors.push(format!(
                "policy[{i}]: name at least one non-empty pattern in tools, resources or prompts"
            ));
        }
        if rule
            .scopes
            .iter()
            .any(|s| s.is_empty() || s.contains(' ') || s.contains('"'))
        {
            errors.push(format!(
                "policy[{i}].scopes: scopes are non-empty words without spaces or quotes"
            ));
        }
        let effect = match rule.effect.as_deref() {
            None | Some("allow") => Effect::Allow,
            Some("deny") => {
                if !rule.scopes.is_empty() {
                    errors.push(format!(
                        "policy[{i}]: a deny rule refuses whatever the scopes; drop scopes"
                    ));
                }
                Effect::Deny
            }
            Some(other) => {
                errors.push(format!(
                    "policy[{i}].effect: {other:?} must be \"allow\" or \"deny\""
                ));
                Effect::Allow
            }
        };
        rules.push(ScopeRule {
            tools: rule.tools.clone(),
            resources: rule.resources.clone(),
            prompts: rule.prompts.clone(),
            scopes: rule.scopes.iter().cloned().collect(),
            effect,
            subjects: rule.subjects.clone(),
            groups: rule.groups.clone(),
            claims: rule.claims.clone(),
        });
    }
    rules
}

/// `[auth.resource]`, required in the modes that validate an external
/// issuer's tokens.
pub fn validate_resource(
    raw: Option<&RawResourceAuth>,
    public_url: &Url,
    errors: &mut Vec<String>,
) -> Option<ResourceAuthSettings> {
    let Some(raw) = raw else {
        errors.push("auth.resource: required with auth.mode = \"resource\" or \"bridge\" (at least issuer = \"https://...\")".to_owned());
        return None;
    };
    let issuer = raw.issuer.clone().unwrap_or_default();
    match Url::parse(&issuer) {
        Ok(url)
            if matches!(url.scheme(), "https" | "http")
                && url.fragment().is_none()
                && url.query().is_none() =>
        {
            if url.scheme() == "http" && !url.host_str().is_some_and(is_loopback_host) {
                errors.push(format!(
                    "auth.resource.issuer: {issuer:?} must be https (http only for loopback)"
                ));
            }
        }
        _ => errors.push(format!(
            "auth.resource.issuer: {issuer:?} must be an https URL"
        )),
    }
    let resource = format!("{}/mcp", public_url.as_str().trim_end_matches('/'));
    let audiences = raw.audiences.clone().unwrap_or_else(|| vec![resource]);
    if audiences.is_empty() || audiences.iter().any(|a| a.is_empty() || a == "*") {
        errors.push(
            "auth.resource.audiences: list the exact audiences to accept (no empty or \"*\")"
                .to_owned(),
        );
    }
    let algorithms = raw.algorithms.clone().unwrap_or_else(|| {
        SUPPORTED_ALGORITHMS
            .iter()
            .map(|a| (*a).to_owned())
            .collect()
    });
    for alg in &algorithms {
        if !SUPPORTED_ALGORITHMS.contains(&alg.as_str()) {
            errors.push(format!(
                "auth.resource.algorithms: {alg:?} is not one of {}",
                SUPPORTED_ALGORITHMS.join(", ")
            ));
        }
    }
    if let Some(uri) = &raw.jwks_uri
        && Url::parse(uri).is_err()
    {
        errors.push(format!("auth.resource.jwks_uri: {uri:?} is not a URL"));
    }
    let introspection = raw.introspection.as_ref().and_then(|i| {
        let client_id = i.client_id.clone().unwrap_or_default();
        if client_id.is_empty() {
            errors.push("auth.resource.introspection.client_id: required".to_owned());
        }
        let secret = read_secret(
            "auth.resource.introspection",
            "client_secret",
            i.client_secret.as_deref(),
            i.client_secret_file.as_deref(),
            errors,
        );
        let subject_claim = i.subject_claim.clone().unwrap_or_else(|| "sub".to_owned());
        if subject_claim.trim().is_empty() {
            errors.push("auth.resource.introspection.subject_claim: a claim name".to_owned());
        }
        Some(IntrospectionSettings {
            endpoint: i.endpoint.clone(),
            subject_claim,
            client_id,
            client_secret: secrecy::SecretString::from(secret?),
        })
    });
    Some(ResourceAuthSettings {
        issuer,
        audiences,
        jwks_uri: raw.jwks_uri.clone(),
        algorithms,
        scopes_supported: raw.scopes_supported.clone(),
        jwks_refetch_interval_secs: raw.jwks_refetch_interval_secs.unwrap_or(30).max(1),
        introspection,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Url {
        Url::parse("https://mcp.example.com").unwrap()
    }

    #[test]
    fn resource_defaults_to_the_mcp_audience_and_every_algorithm() {
        let mut errors = Vec::new();
        let raw = RawResourceAuth {
            issuer: Some("https://idp.example.com/realms/x".to_owned()),
            ..RawResourceAuth::default()
        };
        let resource = validate_resource(Some(&raw), &origin(), &mut errors).unwrap();
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(resource.audiences, vec!["https://mcp.example.com/mcp"]);
        assert_eq!(resource.algorithms.len(), SUPPORTED_ALGORITHMS.len());
        assert_eq!(resource.jwks_refetch_interval_secs, 30);
    }

    #[test]
    fn resource_problems_name_their_keys() {
        let mut errors = Vec::new();
        let raw = RawResourceAuth {
            issuer: Some("http://idp.example.com".to_owned()),
            audiences: Some(vec!["*".to_owned()]),
            algorithms: Some(vec!["HS256".to_owned()]),
            ..RawResourceAuth::default()
        };
        validate_resource(Some(&raw), &origin(), &mut errors);
        let text = errors.join("\n");
        for key in [
            "auth.resource.issuer",
            "auth.resource.audiences",
            "auth.resource.algorithms",
        ] {
            assert!(text.contains(key), "{key}: {text}");
        }
        assert!(validate_resource(None, &origin(), &mut errors).is_none());
    }

    #[test]
    fn a_deny_rule_carries_no_scopes() {
        let mut errors = Vec::new();
        let rules = validate_policy(
            &[RawPolicy {
                tools: vec!["t".to_owned()],
                effect: Some("deny".to_owned()),
                scopes: vec!["x".to_owned()],
                ..RawPolicy::default()
            }],
            &mut errors,
        );
        assert_eq!(rules[0].effect, Effect::Deny);
        assert_eq!(
            errors,
            vec!["policy[0]: a deny rule refuses whatever the scopes; drop scopes".to_owned()]
        );
    }
}
