//! `[auth.upstream]`: the identity provider users sign in with (proxy and
//! auto modes), raw and validated. It applies the rules of [`super::presets`]
//! (tenant, audience, fixed endpoints, default scopes). Called from `config`,
//! which collects the errors.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use url::Url;

use super::presets;
use crate::problems::{check_issuer_url, read_secret};

/// `[auth.upstream]`: the identity provider users sign in with in `proxy` mode.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamIdp {
    /// oidc (default), auth0, keycloak, okta, entra, google, github, cognito.
    pub preset: Option<String>,
    /// The provider's issuer, exactly as in its discovery document. Fixed by
    /// the `google` and `entra` presets; not used by `github`.
    pub issuer: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub client_secret_file: Option<PathBuf>,
    /// Scopes requested upstream. Default: the preset's.
    pub scopes: Option<Vec<String>>,
    /// Auth0: the API identifier sent as `audience`.
    pub audience: Option<String>,
    /// Entra: tenant id, domain, or `common` / `organizations` / `consumers`.
    pub tenant: Option<String>,
    /// Extra authorization-request parameters (e.g. `prompt`, `hd`, `connection`).
    #[serde(default)]
    pub authorize_params: std::collections::BTreeMap<String, String>,
    /// Overrides for providers without discovery (GitHub Enterprise) or a
    /// discovery document that lies. Default: discovery or the preset.
    pub authorization_endpoint: Option<String>,
    pub token_endpoint: Option<String>,
    /// GitHub API base. Default `https://api.github.com`.
    pub api_base: Option<String>,
    /// Who may sign in. Empty lists admit everyone the provider signs in;
    /// otherwise a user must match one entry of one list. Emails only count
    /// when the provider does not mark them unverified.
    #[serde(default)]
    pub allowed_emails: Vec<String>,
    #[serde(default)]
    pub allowed_email_domains: Vec<String>,
    #[serde(default)]
    pub allowed_groups: Vec<String>,
    /// Provider user names (GitHub login, `preferred_username`).
    #[serde(default)]
    pub allowed_usernames: Vec<String>,
}

/// `[auth.upstream]`, validated.
#[derive(Debug, Clone, Serialize)]
pub struct IdpSettings {
    #[serde(serialize_with = "serialize_preset")]
    pub preset: &'static presets::Preset,
    /// Where discovery is read (`None` for providers without OIDC).
    pub issuer: Option<String>,
    pub client_id: String,
    #[serde(serialize_with = "crate::problems::redacted")]
    pub client_secret: secrecy::SecretString,
    pub scopes: Vec<String>,
    pub audience: Option<String>,
    pub tenant: Option<String>,
    pub authorize_params: Vec<(String, String)>,
    pub authorization_endpoint: Option<String>,
    pub token_endpoint: Option<String>,
    pub api_base: Option<String>,
    pub allow: SignInAllowList,
}

/// `[auth.upstream] allowed_*`, lower-cased where case does not matter.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SignInAllowList {
    pub emails: Vec<String>,
    pub email_domains: Vec<String>,
    pub groups: Vec<String>,
    pub usernames: Vec<String>,
}

impl SignInAllowList {
    pub fn is_open(&self) -> bool {
        self.emails.is_empty()
            && self.email_domains.is_empty()
            && self.groups.is_empty()
            && self.usernames.is_empty()
    }
}

fn serialize_preset<S: serde::Serializer>(
    preset: &&'static presets::Preset,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_str(preset.name)
}

/// `[auth.upstream]`, required in proxy and auto modes.
pub fn validate(raw: Option<&RawUpstreamIdp>, errors: &mut Vec<String>) -> Option<IdpSettings> {
    let Some(raw) = raw else {
        errors.push("auth.upstream: required with auth.mode = \"proxy\" or \"auto\" (preset, issuer, client_id, client_secret)".to_owned());
        return None;
    };
    let preset_name = raw.preset.as_deref().unwrap_or("oidc");
    let Some(preset) = presets::find(preset_name) else {
        errors.push(format!(
            "auth.upstream.preset: {preset_name:?} is not one of {}",
            presets::names().join(", ")
        ));
        return None;
    };
    let tenant = raw.tenant.clone().filter(|t| !t.is_empty());
    if preset.needs_tenant && tenant.is_none() {
        errors.push(format!(
            "auth.upstream.tenant: required with preset {preset_name:?} (a tenant id, or common / organizations)"
        ));
    }
    if !preset.needs_tenant && tenant.is_some() {
        errors.push(format!(
            "auth.upstream.tenant: not used by preset {preset_name:?}"
        ));
    }
    if raw.audience.is_some() && !preset.audience_param {
        errors.push(format!(
            "auth.upstream.audience: not used by preset {preset_name:?} (only auth0 sends one)"
        ));
    }
    let issuer = match (preset.issuer_template, &raw.issuer, preset.fixed_endpoints) {
        (_, Some(_), Some(_)) => {
            errors.push(format!(
                "auth.upstream.issuer: preset {preset_name:?} has no OpenID issuer; set authorization_endpoint, token_endpoint and api_base to change its endpoints"
            ));
            None
        }
        (_, None, Some(_)) => None,
        // A preset with a fixed issuer may still be pointed elsewhere (a
        // sovereign cloud, a test IdP).
        (_, Some(issuer), None) => {
            check_issuer_url("auth.upstream.issuer", issuer, errors);
            Some(issuer.clone())
        }
        (Some(template), None, None) => {
            Some(template.replace("{tenant}", tenant.as_deref().unwrap_or("common")))
        }
        (None, None, None) => {
            errors.push(format!(
                "auth.upstream.issuer: required with preset {preset_name:?}"
            ));
            None
        }
    };
    let client_id = raw.client_id.clone().unwrap_or_default();
    if client_id.is_empty() {
        errors.push("auth.upstream.client_id: required".to_owned());
    }
    let secret = read_secret(
        "auth.upstream",
        "client_secret",
        raw.client_secret.as_deref(),
        raw.client_secret_file.as_deref(),
        errors,
    );
    let scopes = raw.scopes.clone().unwrap_or_else(|| {
        preset
            .default_scopes
            .iter()
            .map(|s| (*s).to_owned())
            .collect()
    });
    if preset.identity == presets::IdentitySource::IdToken && !scopes.iter().any(|s| s == "openid")
    {
        errors.push(format!(
            "auth.upstream.scopes: must include \"openid\" with preset {preset_name:?}"
        ));
    }
    for (name, value) in [
        ("authorization_endpoint", &raw.authorization_endpoint),
        ("token_endpoint", &raw.token_endpoint),
        ("api_base", &raw.api_base),
    ] {
        if let Some(v) = value
            && Url::parse(v).is_err()
        {
            errors.push(format!("auth.upstream.{name}: {v:?} is not a URL"));
        }
    }
    let reserved = [
        "response_type",
        "client_id",
        "redirect_uri",
        "state",
        "nonce",
        "code_challenge",
        "code_challenge_method",
        "scope",
    ];
    for key in raw.authorize_params.keys() {
        if reserved.contains(&key.as_str()) {
            errors.push(format!(
                "auth.upstream.authorize_params: {key:?} is set by mcpgate"
            ));
        }
    }
    let mut authorize_params: Vec<(String, String)> = preset
        .authorize_params
        .iter()
        .filter(|(k, _)| !raw.authorize_params.contains_key(*k))
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    authorize_params.extend(raw.authorize_params.clone());
    Some(IdpSettings {
        preset,
        issuer,
        client_id,
        client_secret: secrecy::SecretString::from(secret?),
        scopes,
        audience: raw.audience.clone(),
        tenant,
        authorize_params,
        authorization_endpoint: raw.authorization_endpoint.clone(),
        token_endpoint: raw.token_endpoint.clone(),
        api_base: raw.api_base.clone(),
        allow: SignInAllowList {
            emails: raw
                .allowed_emails
                .iter()
                .map(|e| e.to_lowercase())
                .collect(),
            email_domains: raw
                .allowed_email_domains
                .iter()
                .map(|d| d.trim_start_matches('@').to_lowercase())
                .collect(),
            groups: raw.allowed_groups.clone(),
            usernames: raw.allowed_usernames.clone(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_preset_fills_in_issuer_scopes_and_parameters() {
        let mut errors = Vec::new();
        let raw = RawUpstreamIdp {
            preset: Some("entra".to_owned()),
            tenant: Some("contoso.onmicrosoft.com".to_owned()),
            client_id: Some("c".to_owned()),
            client_secret: Some("s".to_owned()),
            allowed_email_domains: vec!["@Example.COM".to_owned()],
            ..RawUpstreamIdp::default()
        };
        let idp = validate(Some(&raw), &mut errors).unwrap();
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            idp.issuer.as_deref(),
            Some("https://login.microsoftonline.com/contoso.onmicrosoft.com/v2.0")
        );
        assert!(idp.scopes.iter().any(|s| s == "openid"));
        assert_eq!(idp.allow.email_domains, vec!["example.com".to_owned()]);
        assert!(!idp.allow.is_open());
    }

    #[test]
    fn preset_rules_are_reported() {
        let mut errors = Vec::new();
        let raw = RawUpstreamIdp {
            preset: Some("github".to_owned()),
            issuer: Some("https://github.com".to_owned()),
            audience: Some("x".to_owned()),
            client_id: Some("c".to_owned()),
            client_secret: Some("s".to_owned()),
            ..RawUpstreamIdp::default()
        };
        validate(Some(&raw), &mut errors);
        let text = errors.join("\n");
        assert!(text.contains("has no OpenID issuer"), "{text}");
        assert!(text.contains("auth.upstream.audience: not used"), "{text}");
        assert!(validate(None, &mut errors).is_none());
    }
}
