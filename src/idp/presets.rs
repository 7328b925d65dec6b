//! What differs between identity providers, as data. Each preset says where
//! the issuer comes from, which scopes and extra authorization parameters to
//! send, and how the user is identified (ID token or, for OAuth-only
//! providers, their user API). `docs/idp/<name>.md` explains the console side.

/// How mcpgate learns who signed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentitySource {
    /// An OpenID Connect ID token, verified against the issuer's JWKS.
    IdToken,
    /// GitHub's REST API (`/user`, `/user/emails`): GitHub has no OIDC for users.
    GitHubApi,
}

/// Fixed endpoints of a provider without discovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedEndpoints {
    pub authorization: &'static str,
    pub token: &'static str,
    pub api_base: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preset {
    pub name: &'static str,
    pub identity: IdentitySource,
    /// The issuer when the provider has one fixed issuer; `{tenant}` is
    /// replaced by `auth.upstream.tenant`. `None`: `issuer` must be configured.
    pub issuer_template: Option<&'static str>,
    pub default_scopes: &'static [&'static str],
    /// Sent on every authorization request (e.g. Google's offline access).
    pub authorize_params: &'static [(&'static str, &'static str)],
    /// `auth.upstream.tenant` is required.
    pub needs_tenant: bool,
    /// `auth.upstream.audience` is sent as the `audience` parameter (Auth0).
    pub audience_param: bool,
    pub fixed_endpoints: Option<FixedEndpoints>,
    /// The ID-token claim listing the user's groups.
    pub groups_claim: &'static str,
}

const OIDC_SCOPES: &[&str] = &["openid", "profile", "email", "offline_access"];

/// The generic OpenID Connect provider; the others differ from it as noted.
const OIDC: Preset = Preset {
    name: "oidc",
    identity: IdentitySource::IdToken,
    issuer_template: None,
    default_scopes: OIDC_SCOPES,
    authorize_params: &[],
    needs_tenant: false,
    audience_param: false,
    fixed_endpoints: None,
    groups_claim: "groups",
};

pub const PRESETS: &[Preset] = &[
    OIDC,
    Preset {
        name: "auth0",
        audience_param: true,
        ..OIDC
    },
    Preset {
        name: "keycloak",
        ..OIDC
    },
    Preset {
        name: "okta",
        ..OIDC
    },
    Preset {
        name: "entra",
        // v2 endpoints; `common`/`organizations` resolve to `{tenantid}` in the
        // discovery document's issuer, checked against each token's `tid`.
        issuer_template: Some("https://login.microsoftonline.com/{tenant}/v2.0"),
        needs_tenant: true,
        ..OIDC
    },
    Preset {
        name: "google",
        issuer_template: Some("https://accounts.google.com"),
        // Google rejects `offline_access`; it wants access_type=offline instead,
        // and only returns a refresh token on consent.
        default_scopes: &["openid", "profile", "email"],
        authorize_params: &[("access_type", "offline"), ("prompt", "consent")],
        ..OIDC
    },
    Preset {
        name: "github",
        identity: IdentitySource::GitHubApi,
        default_scopes: &["read:user", "user:email"],
        fixed_endpoints: Some(FixedEndpoints {
            authorization: "https://github.com/login/oauth/authorize",
            token: "https://github.com/login/oauth/access_token",
            api_base: "https://api.github.com",
        }),
        ..OIDC
    },
    Preset {
        name: "cognito",
        // Cognito issues refresh tokens without `offline_access` and rejects it.
        default_scopes: &["openid", "profile", "email"],
        groups_claim: "cognito:groups",
        ..OIDC
    },
];

pub fn find(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name)
}

pub fn names() -> Vec<&'static str> {
    PRESETS.iter().map(|p| p.name).collect()
}

/// Entra's multi-tenant aliases: the issuer is per token (`tid`).
pub fn is_entra_multi_tenant(tenant: &str) -> bool {
    matches!(tenant, "common" | "organizations" | "consumers")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_is_findable_and_consistent() {
        for preset in PRESETS {
            assert_eq!(find(preset.name), Some(preset));
            assert_eq!(
                preset.identity == IdentitySource::GitHubApi,
                preset.fixed_endpoints.is_some(),
                "{}",
                preset.name
            );
            if preset.identity == IdentitySource::IdToken {
                assert!(preset.default_scopes.contains(&"openid"), "{}", preset.name);
            }
        }
        assert!(find("saml").is_none());
        // Providers that reject `offline_access` must not get it by default.
        for name in ["google", "cognito", "github"] {
            assert!(
                !find(name)
                    .unwrap()
                    .default_scopes
                    .contains(&"offline_access")
            );
        }
    }
}
