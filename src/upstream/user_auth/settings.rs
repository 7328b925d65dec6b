//! `[upstreams.user_auth]`: what each upstream's per-user authorization
//! may be told, and its validation beside the other upstream settings.

use std::{collections::BTreeMap, path::PathBuf};

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::upstream::settings::{RawUpstream, Surroundings, secret};

/// `user_auth = true` or `[upstreams.user_auth]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum RawUserAuthSetting {
    Flag(bool),
    Table(RawUserAuth),
}

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawUserAuth {
    /// A client registered at the upstream's authorization server by hand;
    /// without it mcpgate registers itself (RFC 7591).
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub client_secret_file: Option<PathBuf>,
    /// Scopes to ask for; default: those the upstream's metadata lists.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// The authorization server's issuer, when the upstream publishes no
    /// protected-resource metadata.
    pub authorization_server: Option<String>,
    /// RFC 8707 `resource` on the authorization and token requests
    /// (default true; Entra ID v2 refuses it).
    pub resource_indicator: Option<bool>,
    /// More query parameters on the authorization request, e.g. Auth0's
    /// `audience`, or Google's `access_type` and `prompt`.
    #[serde(default)]
    pub authorize_params: BTreeMap<String, String>,
}

/// Validated `[upstreams.user_auth]`.
#[derive(Clone)]
pub struct UserAuthSettings {
    pub client_id: Option<String>,
    pub client_secret: Option<SecretString>,
    pub scopes: Vec<String>,
    pub authorization_server: Option<Url>,
    /// Send RFC 8707 `resource` (the MCP specification's MUST; off only for
    /// servers that refuse it).
    pub resource_indicator: bool,
    /// Extra query parameters of the authorization request, by name.
    pub authorize_params: BTreeMap<String, String>,
}

/// Parameters of the authorization request mcpgate sets itself: a
/// configured one would replace (or duplicate) what the flow depends on.
const FLOW_PARAMS: &[&str] = &[
    "response_type",
    "client_id",
    "redirect_uri",
    "state",
    "code_challenge",
    "code_challenge_method",
    "resource",
    "scope",
    // Would move the answer to a POST the callback does not take, or let a
    // request object replace the parameters above (RFC 9101).
    "response_mode",
    "request",
    "request_uri",
];

/// `user_auth`: only for url upstreams, alone (no static credentials or
/// identity beside the user's token), and only where users sign in to mcpgate.
pub(in crate::upstream) fn validate(
    section: &str,
    u: &RawUpstream,
    around: &Surroundings<'_>,
    errors: &mut Vec<String>,
) -> Option<UserAuthSettings> {
    let raw = match u.user_auth.as_ref()? {
        RawUserAuthSetting::Flag(false) => return None,
        RawUserAuthSetting::Flag(true) => RawUserAuth::default(),
        RawUserAuthSetting::Table(t) => t.clone(),
    };
    let s = format!("{section}.user_auth");
    if u.url.is_none() {
        errors.push(format!("{s}: needs a url upstream"));
    }
    if u.oauth.is_some()
        || u.identity.as_deref().is_some_and(|i| i != "none")
        || u.headers
            .keys()
            .any(|k| k.eq_ignore_ascii_case("authorization"))
    {
        errors.push(format!(
            "{s}: the upstream gets the user's own token; remove oauth and identity"
        ));
    }
    if !around.has_browser_sign_in {
        errors.push(format!(
            "{s}: needs auth.mode = \"local\" or \"proxy\" (the connect page must know who the browser is)"
        ));
    }
    let client_secret = secret(
        &s,
        "client_secret",
        raw.client_secret.as_ref(),
        raw.client_secret_file.as_ref(),
        errors,
    );
    if client_secret.is_some() && raw.client_id.is_none() {
        errors.push(format!("{s}: a client_secret needs its client_id"));
    }
    let authorization_server = match raw.authorization_server.as_deref().map(Url::parse) {
        None => None,
        Some(Ok(a)) if matches!(a.scheme(), "http" | "https") => Some(a),
        Some(_) => {
            errors.push(format!(
                "{s}.authorization_server: an http(s) URL is required"
            ));
            None
        }
    };
    for (name, value) in &raw.authorize_params {
        if FLOW_PARAMS.contains(&name.as_str()) {
            errors.push(format!(
                "{s}.authorize_params.{name}: mcpgate sets this parameter itself{}",
                match name.as_str() {
                    "scope" => "; list scopes in scopes",
                    "resource" => "; see resource_indicator",
                    _ => "",
                }
            ));
        } else if name.is_empty()
            || name.len() > 100
            || !crate::visible_text::is_visible_text(name)
            || value.len() > 2000
        {
            errors.push(format!(
                "{s}.authorize_params: {name:?} must be a visible name of at most 100 characters with a value of at most 2000 bytes"
            ));
        }
    }
    Some(UserAuthSettings {
        client_id: raw.client_id.filter(|c| !c.is_empty()),
        client_secret,
        scopes: raw.scopes,
        authorization_server,
        resource_indicator: raw.resource_indicator.unwrap_or(true),
        authorize_params: raw.authorize_params,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::settings::{tests::around, validate};

    #[test]
    fn user_auth_authorize_params_may_not_replace_the_flows_own() {
        let with = |params: &[(&str, &str)]| RawUpstream {
            name: Some("h".into()),
            url: Some("https://mcp.example/mcp".into()),
            user_auth: Some(RawUserAuthSetting::Table(RawUserAuth {
                authorize_params: params
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                ..RawUserAuth::default()
            })),
            ..RawUpstream::default()
        };
        let mut errors = Vec::new();
        let cfg = validate(
            None,
            &[with(&[
                ("audience", "https://api.example/"),
                ("access_type", "offline"),
            ])],
            &around(false),
            &mut errors,
        );
        assert!(errors.is_empty(), "{errors:?}");
        let settings = cfg.upstreams[0].user_auth.as_ref().unwrap();
        assert_eq!(
            settings.authorize_params["audience"],
            "https://api.example/"
        );
        for (name, hint) in [
            ("redirect_uri", "sets this parameter itself"),
            ("state", "sets this parameter itself"),
            ("scope", "list scopes in scopes"),
            ("resource", "see resource_indicator"),
            ("request_uri", "sets this parameter itself"),
            ("", "must be a visible name"),
        ] {
            let mut errors = Vec::new();
            validate(None, &[with(&[(name, "x")])], &around(false), &mut errors);
            assert_eq!(errors.len(), 1, "{name}: {errors:?}");
            assert!(errors[0].contains(hint), "{name}: {errors:?}");
        }
    }
}
