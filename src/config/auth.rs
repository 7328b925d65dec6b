//! `[auth]`: which mode, and the sections that mode uses.
//!
//! The mode is a sum type that carries its settings ([`AuthSettings`]), so a
//! mode without the sections it needs cannot be built. The "only used with
//! auth.mode = …" checks live here, in the raw layer, where they produce
//! messages; each section's own rules live with its subsystem
//! (`auth::settings`, `oauth::settings`, `idp::settings`, `bridge::settings`).

use std::{net::SocketAddr, path::Path};

use serde::{Deserialize, Serialize};
use url::Url;

use crate::{
    auth::settings::{RawResourceAuth, ResourceAuthSettings},
    bridge::settings::{BridgeConfig, RawBridge},
    idp::{
        auto::{AutoError, Choice},
        settings::{IdpSettings, RawUpstreamIdp},
    },
    oauth::settings::{LocalAuthSettings, RawLocalAuth},
    problems::require_https,
};

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    /// `local` (default: mcpgate is the authorization server, users in its
    /// store), `proxy` (the same, users sign in at `[auth.upstream]`),
    /// `resource` (validate tokens of an external authorization server),
    /// `bridge` (the same, plus discovery and registration for IdPs without
    /// open DCR), `auto` (`resource` or `proxy` from the upstream's
    /// discovery) or `none` (loopback development only).
    pub mode: Option<String>,
    pub resource: Option<RawResourceAuth>,
    pub local: Option<RawLocalAuth>,
    pub upstream: Option<RawUpstreamIdp>,
    pub bridge: Option<RawBridge>,
}

/// `auth.mode` as written: the raw layer's tag, before the sections are known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    None,
    Resource,
    Local,
    Proxy,
    Bridge,
    Auto,
}

impl Mode {
    /// Modes that run the embedded authorization server for certain, and so
    /// hold the keys identity JWTs for upstreams are signed with.
    pub(super) fn mints_jwt(self) -> bool {
        matches!(self, Mode::Local | Mode::Proxy)
    }

    /// Modes that may sign users in at an identity provider (`auto` may
    /// decide on proxy at start).
    pub(super) fn signs_in_upstream(self) -> bool {
        matches!(self, Mode::Proxy | Mode::Auto)
    }
}

/// `auth.mode`, with `none` refused off loopback.
pub(super) fn parse_mode(
    raw: Option<&str>,
    listen: SocketAddr,
    errors: &mut Vec<String>,
) -> Option<Mode> {
    match raw.unwrap_or("local") {
        "none" => {
            if !listen.ip().is_loopback() {
                errors.push(format!(
                    "auth.mode: \"none\" serves every caller without authentication, so it is only allowed when listen is a loopback address (127.0.0.1, ::1); listen is {listen}"
                ));
            }
            Some(Mode::None)
        }
        "resource" => Some(Mode::Resource),
        "local" => Some(Mode::Local),
        "proxy" => Some(Mode::Proxy),
        "bridge" => Some(Mode::Bridge),
        "auto" => Some(Mode::Auto),
        other => {
            errors.push(format!(
                "auth.mode: {other:?} is not one of none, local, resource, proxy, bridge, auto"
            ));
            None
        }
    }
}

/// How callers are identified, with the settings each mode uses. In
/// `check-config` output it is `[auth]` with a `mode = "…"` tag and the
/// mode's sections under it.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
#[allow(clippy::large_enum_variant)] // one per process, built at start
pub enum AuthSettings {
    /// No authentication: every caller is the anonymous principal. Loopback only.
    None,
    /// Bearer tokens from an external authorization server.
    Resource { resource: ResourceAuthSettings },
    /// mcpgate is the authorization server; users in its store.
    Local { local: LocalAuthSettings },
    /// mcpgate is the authorization server; users sign in at the IdP.
    Proxy {
        local: LocalAuthSettings,
        #[serde(rename = "upstream")]
        idp: IdpSettings,
    },
    /// The IdP is the authorization server; mcpgate serves its discovery
    /// and client registration, and validates its tokens.
    Bridge {
        resource: ResourceAuthSettings,
        bridge: BridgeConfig,
    },
    /// Turned into `Resource` or `Proxy` at start ([`AuthSettings::resolve`]).
    /// `resource` is absent when the IdP has no issuer to validate tokens
    /// of (then only `proxy` is possible).
    Auto {
        local: LocalAuthSettings,
        #[serde(rename = "upstream")]
        idp: IdpSettings,
        resource: Option<ResourceAuthSettings>,
    },
}

/// [`AuthSettings`] with `auto` decided: what the server is assembled from.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // one per process, built at start
pub enum ResolvedAuth {
    None,
    Resource {
        resource: ResourceAuthSettings,
    },
    Local {
        local: LocalAuthSettings,
    },
    Proxy {
        local: LocalAuthSettings,
        idp: IdpSettings,
    },
    Bridge {
        resource: ResourceAuthSettings,
        bridge: BridgeConfig,
    },
}

impl AuthSettings {
    /// The `auth.mode` value, for logs.
    pub fn mode_name(&self) -> &'static str {
        match self {
            AuthSettings::None => "none",
            AuthSettings::Resource { .. } => "resource",
            AuthSettings::Local { .. } => "local",
            AuthSettings::Proxy { .. } => "proxy",
            AuthSettings::Bridge { .. } => "bridge",
            AuthSettings::Auto { .. } => "auto",
        }
    }

    /// The embedded authorization server's settings (local, proxy, auto).
    pub fn local(&self) -> Option<&LocalAuthSettings> {
        match self {
            AuthSettings::Local { local }
            | AuthSettings::Proxy { local, .. }
            | AuthSettings::Auto { local, .. } => Some(local),
            AuthSettings::None | AuthSettings::Resource { .. } | AuthSettings::Bridge { .. } => {
                None
            }
        }
    }

    /// The external issuer's settings (resource, bridge, and auto when it has one).
    pub fn resource(&self) -> Option<&ResourceAuthSettings> {
        match self {
            AuthSettings::Resource { resource } | AuthSettings::Bridge { resource, .. } => {
                Some(resource)
            }
            AuthSettings::Auto { resource, .. } => resource.as_ref(),
            AuthSettings::None | AuthSettings::Local { .. } | AuthSettings::Proxy { .. } => None,
        }
    }

    /// The identity provider users sign in with (proxy, auto).
    pub fn idp(&self) -> Option<&IdpSettings> {
        match self {
            AuthSettings::Proxy { idp, .. } | AuthSettings::Auto { idp, .. } => Some(idp),
            _ => None,
        }
    }

    /// `[auth.bridge]` (bridge).
    pub fn bridge(&self) -> Option<&BridgeConfig> {
        match self {
            AuthSettings::Bridge { bridge, .. } => Some(bridge),
            _ => None,
        }
    }

    /// The settings with `auto` turned into what `choice` says; the other
    /// modes are already decided and ignore it. `auto` without resource
    /// settings can only be `proxy`.
    pub fn resolved(self, choice: Choice) -> ResolvedAuth {
        match self {
            AuthSettings::None => ResolvedAuth::None,
            AuthSettings::Resource { resource } => ResolvedAuth::Resource { resource },
            AuthSettings::Local { local } => ResolvedAuth::Local { local },
            AuthSettings::Proxy { local, idp } => ResolvedAuth::Proxy { local, idp },
            AuthSettings::Bridge { resource, bridge } => ResolvedAuth::Bridge { resource, bridge },
            AuthSettings::Auto {
                local,
                idp,
                resource,
            } => match (choice, resource) {
                (Choice::Resource, Some(resource)) => ResolvedAuth::Resource { resource },
                _ => ResolvedAuth::Proxy { local, idp },
            },
        }
    }

    /// Decide `auto` from the IdP's discovery (read once, here); the other
    /// modes resolve without I/O.
    pub async fn resolve(self) -> Result<ResolvedAuth, AutoError> {
        let AuthSettings::Auto { idp, .. } = &self else {
            // Not read for modes other than auto.
            return Ok(self.resolved(Choice::Proxy));
        };
        let preset = idp.preset.name;
        let (choice, reasons) = crate::idp::auto::decide(idp).await?;
        let resolved = self.resolved(choice);
        tracing::info!(
            mode = resolved.mode_name(),
            preset,
            reasons = %reasons.join("; "),
            "auth.mode = \"auto\" decided"
        );
        Ok(resolved)
    }
}

impl ResolvedAuth {
    /// The `auth.mode` value this resolves to, for logs.
    pub fn mode_name(&self) -> &'static str {
        match self {
            ResolvedAuth::None => "none",
            ResolvedAuth::Resource { .. } => "resource",
            ResolvedAuth::Local { .. } => "local",
            ResolvedAuth::Proxy { .. } => "proxy",
            ResolvedAuth::Bridge { .. } => "bridge",
        }
    }
}

/// What validating `[auth]` needs from the rest of the file.
pub(super) struct Surroundings<'a> {
    pub public_url: &'a Url,
    pub data_dir: &'a Path,
}

/// The sections `mode` uses, each validated by its subsystem; sections the
/// mode does not use are reported. `None` when the mode is unknown or a
/// section it needs is missing (the reason is in `errors`).
pub(super) fn validate(
    raw: &RawAuth,
    mode: Option<Mode>,
    at: &Surroundings<'_>,
    errors: &mut Vec<String>,
) -> Option<AuthSettings> {
    let public_url = at.public_url;
    let resource = match mode {
        Some(Mode::Resource | Mode::Bridge) => {
            crate::auth::settings::validate_resource(raw.resource.as_ref(), public_url, errors)
        }
        // Auto: what `resource` mode would use, if discovery picks it;
        // by default the upstream issuer with the MCP resource as audience.
        Some(Mode::Auto) => {
            let derived = raw.upstream.as_ref().and_then(|u| {
                u.issuer.clone().map(|issuer| RawResourceAuth {
                    issuer: Some(issuer),
                    ..RawResourceAuth::default()
                })
            });
            match raw.resource.as_ref().or(derived.as_ref()) {
                Some(r) => crate::auth::settings::validate_resource(Some(r), public_url, errors),
                None => None,
            }
        }
        _ => {
            if raw.resource.is_some() {
                errors.push(
                    "auth.resource: only used with auth.mode = \"resource\", \"bridge\" or \"auto\""
                        .to_owned(),
                );
            }
            None
        }
    };
    let bridge = match mode {
        Some(Mode::Bridge) => {
            require_https(public_url, errors);
            let bridge =
                crate::bridge::settings::validate(raw.bridge.as_ref(), resource.as_ref(), errors);
            // Without `audience` the bridge asks the IdP for tokens whose
            // audience is mcpgate's `/mcp` (RFC 8707): `/mcp` must accept them.
            if let (Some(bridge), Some(resource)) = (&bridge, &resource)
                && bridge.audience.is_none()
            {
                let mcp = format!("{}/mcp", public_url.as_str().trim_end_matches('/'));
                if !resource
                    .audiences
                    .iter()
                    .any(|a| a.trim_end_matches('/') == mcp)
                {
                    errors.push(format!(
                        "auth.resource.audiences: must include {mcp:?}: the bridge sends it to the IdP as resource (no auth.bridge.audience is set), so that is the audience of the tokens clients get"
                    ));
                }
            }
            bridge
        }
        _ => {
            if raw.bridge.is_some() {
                errors.push("auth.bridge: only used with auth.mode = \"bridge\"".to_owned());
            }
            None
        }
    };
    let local = match mode {
        Some(Mode::Local | Mode::Proxy | Mode::Auto) => Some(crate::oauth::settings::validate(
            raw.local.as_ref(),
            at.data_dir,
            public_url,
            errors,
        )),
        _ => {
            if raw.local.is_some() {
                errors.push(
                    "auth.local: only used with auth.mode = \"local\", \"proxy\" or \"auto\""
                        .to_owned(),
                );
            }
            None
        }
    };
    let idp = match mode {
        Some(Mode::Proxy | Mode::Auto) => {
            crate::idp::settings::validate(raw.upstream.as_ref(), errors)
        }
        _ => {
            if raw.upstream.is_some() {
                errors.push(
                    "auth.upstream: only used with auth.mode = \"proxy\" or \"auto\"".to_owned(),
                );
            }
            None
        }
    };
    Some(match mode? {
        Mode::None => AuthSettings::None,
        Mode::Resource => AuthSettings::Resource {
            resource: resource?,
        },
        Mode::Local => AuthSettings::Local { local: local? },
        Mode::Proxy => AuthSettings::Proxy {
            local: local?,
            idp: idp?,
        },
        Mode::Bridge => AuthSettings::Bridge {
            resource: resource?,
            bridge: bridge?,
        },
        Mode::Auto => AuthSettings::Auto {
            local: local?,
            idp: idp?,
            resource,
        },
    })
}
