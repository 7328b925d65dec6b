//! `[auth.bridge]`: the raw TOML shape and its validation into typed
//! settings. Called from `config`, which collects the errors.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{auth::settings::ResourceAuthSettings, problems::read_secret};

/// `[auth.bridge]`: mcpgate serves discovery and registration for an IdP
/// without open DCR; the IdP's own tokens are validated per `[auth.resource]`.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawBridge {
    /// `auth0` (clients created through the Management API) or `passthrough`
    /// (the IdP's own registration endpoint, e.g. Keycloak, relayed with CORS).
    pub registrar: Option<String>,
    /// Sent to the IdP as `audience` in place of `resource`. Default: the
    /// first of `auth.resource.audiences` with `auth0`, none with `passthrough`
    /// (then mcpgate's `/mcp` is sent as `resource`, RFC 8707).
    pub audience: Option<String>,
    /// Auth0: a machine-to-machine application allowed `create:clients`
    /// (and `delete:clients`, for the sweep of unused applications).
    pub management_client_id: Option<String>,
    pub management_client_secret: Option<String>,
    pub management_client_secret_file: Option<PathBuf>,
    /// Auth0: the Management API audience. Default `<issuer>api/v2/`.
    pub management_audience: Option<String>,
    /// Registrations per client address per minute. Default 60.
    pub registrations_per_minute: Option<u32>,
    /// Auth0: applications mcpgate may create per UTC day, over all
    /// replicas (counted in the store). Default 200.
    pub applications_per_day: Option<u32>,
    /// Auth0: an application mcpgate created and that has not obtained a
    /// token for this many days is deleted through the Management API.
    /// Default 30; 0 keeps them.
    pub unused_application_days: Option<u32>,
}

/// `[auth.bridge]`, validated.
#[derive(Debug, Clone, Serialize)]
pub struct BridgeConfig {
    pub registrar: BridgeRegistrar,
    pub audience: Option<String>,
    pub registrations_per_minute: u32,
    pub applications_per_day: u32,
    pub unused_application_days: u32,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BridgeRegistrar {
    Auth0 {
        client_id: String,
        #[serde(serialize_with = "hidden")]
        client_secret: secrecy::SecretString,
        audience: String,
    },
    Passthrough,
}

fn hidden<S: serde::Serializer>(_: &secrecy::SecretString, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str("***")
}

pub fn validate(
    raw: Option<&RawBridge>,
    resource: Option<&ResourceAuthSettings>,
    errors: &mut Vec<String>,
) -> Option<BridgeConfig> {
    let Some(raw) = raw else {
        errors.push(
            "auth.bridge: required with auth.mode = \"bridge\" (registrar = \"auth0\" or \"passthrough\")"
                .to_owned(),
        );
        return None;
    };
    let registrations_per_minute = raw.registrations_per_minute.unwrap_or(60);
    if registrations_per_minute == 0 {
        errors.push("auth.bridge.registrations_per_minute: must be at least 1".to_owned());
    }
    let applications_per_day = raw.applications_per_day.unwrap_or(200);
    if applications_per_day == 0 {
        errors.push("auth.bridge.applications_per_day: must be at least 1".to_owned());
    }
    let unused_application_days = raw.unused_application_days.unwrap_or(30);
    let registrar = match raw.registrar.as_deref() {
        Some("auth0") => {
            let client_id = raw.management_client_id.clone().unwrap_or_default();
            if client_id.is_empty() {
                errors.push(
                    "auth.bridge.management_client_id: required with registrar = \"auth0\""
                        .to_owned(),
                );
            }
            let secret = read_secret(
                "auth.bridge",
                "management_client_secret",
                raw.management_client_secret.as_deref(),
                raw.management_client_secret_file.as_deref(),
                errors,
            );
            let audience = raw.management_audience.clone().unwrap_or_else(|| {
                let issuer = resource.map(|r| r.issuer.as_str()).unwrap_or("");
                format!("{}/api/v2/", issuer.trim_end_matches('/'))
            });
            BridgeRegistrar::Auth0 {
                client_id,
                // A missing secret is already an error; keep checking the rest.
                client_secret: secrecy::SecretString::from(secret.unwrap_or_default()),
                audience,
            }
        }
        Some("passthrough") => {
            for (key, set) in [
                ("management_client_id", raw.management_client_id.is_some()),
                (
                    "management_client_secret",
                    raw.management_client_secret.is_some(),
                ),
                ("management_audience", raw.management_audience.is_some()),
                ("applications_per_day", raw.applications_per_day.is_some()),
                (
                    "unused_application_days",
                    raw.unused_application_days.is_some(),
                ),
            ] {
                if set {
                    errors.push(format!(
                        "auth.bridge.{key}: only used with registrar = \"auth0\""
                    ));
                }
            }
            BridgeRegistrar::Passthrough
        }
        other => {
            errors.push(format!(
                "auth.bridge.registrar: {:?} is not one of auth0, passthrough",
                other.unwrap_or("")
            ));
            return None;
        }
    };
    let audience = match (&registrar, &raw.audience) {
        (_, Some(a)) => Some(a.clone()),
        (BridgeRegistrar::Auth0 { .. }, None) => {
            resource.and_then(|r| r.audiences.first().cloned())
        }
        (BridgeRegistrar::Passthrough, None) => None,
    };
    if let (Some(audience), Some(resource)) = (&audience, resource)
        && !resource.audiences.contains(audience)
    {
        errors.push(format!(
            "auth.bridge.audience: {audience:?} must be one of auth.resource.audiences, or its tokens are refused"
        ));
    }
    Some(BridgeConfig {
        registrar,
        audience,
        registrations_per_minute,
        applications_per_day,
        unused_application_days,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth0() -> RawBridge {
        RawBridge {
            registrar: Some("auth0".to_owned()),
            management_client_id: Some("m".to_owned()),
            management_client_secret: Some("s".to_owned()),
            ..RawBridge::default()
        }
    }

    #[test]
    fn the_auth0_budget_and_sweep_have_defaults_and_are_checked() {
        let mut errors = Vec::new();
        let config = validate(Some(&auth0()), None, &mut errors).unwrap();
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(config.applications_per_day, 200);
        assert_eq!(config.unused_application_days, 30);

        let raw = RawBridge {
            applications_per_day: Some(0),
            unused_application_days: Some(0),
            ..auth0()
        };
        let config = validate(Some(&raw), None, &mut errors).unwrap();
        assert_eq!(config.unused_application_days, 0);
        assert_eq!(
            errors,
            ["auth.bridge.applications_per_day: must be at least 1"]
        );

        let mut errors = Vec::new();
        let raw = RawBridge {
            registrar: Some("passthrough".to_owned()),
            applications_per_day: Some(5),
            unused_application_days: Some(5),
            ..RawBridge::default()
        };
        validate(Some(&raw), None, &mut errors);
        assert_eq!(
            errors,
            [
                "auth.bridge.applications_per_day: only used with registrar = \"auth0\"",
                "auth.bridge.unused_application_days: only used with registrar = \"auth0\"",
            ]
        );
    }
}
