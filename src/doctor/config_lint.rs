//! `mcpgate doctor --config`: mcpgate's own configuration against its
//! identity provider, for the chosen mode and preset. What the IdP shows
//! from outside is probed (discovery, the authorize endpoint's answer to
//! our client id and redirect URI, DCR); what it does not is reported as
//! "cannot be checked from outside" with the console step to verify.

use std::time::Duration;

use serde_json::Value;

use super::{Check, DoctorError, Report, http, http::Answer, token::relative};
use crate::{config::Config, idp::settings::IdpSettings};

pub struct LintOptions {
    pub timeout: Duration,
    /// Register a throwaway client at the IdP where mcpgate relies on its DCR.
    pub register: bool,
}

pub async fn lint(
    cfg: &Config,
    target: &str,
    options: &LintOptions,
) -> Result<Report, DoctorError> {
    let client = http::client(options.timeout)?;
    let mut report = Report::new(target);
    public_url(cfg, &mut report);
    let auth = &cfg.auth;
    let mode = auth.mode_name();
    match (auth.idp(), auth.resource(), auth.bridge()) {
        (Some(idp), _, _) => {
            report.push(Check::pass(
                "config.mode",
                format!("auth.mode = {mode} with the {} preset", idp.preset.name),
            ));
            let meta = discovery(&client, idp.issuer.as_deref(), &mut report).await;
            authorize_probe(&client, cfg, idp, meta.as_ref(), &mut report).await;
            preset_rows(cfg, idp, &mut report);
        }
        (None, Some(resource), bridge) => {
            report.push(Check::pass(
                "config.mode",
                format!("auth.mode = {mode}: tokens come from {}", resource.issuer),
            ));
            let meta = discovery(&client, Some(&resource.issuer), &mut report).await;
            audience_row(cfg, &resource.issuer, &mut report);
            let needs_idp_dcr = bridge.is_none_or(|b| {
                matches!(b.registrar, crate::bridge::settings::BridgeRegistrar::Passthrough)
            });
            if needs_idp_dcr {
                idp_dcr(&client, meta.as_ref(), options.register, &mut report).await;
            }
        }
        _ if mode == "none" => report.push(Check::warn(
            "config.mode",
            "auth.mode = none",
            "no authentication: every caller is anonymous (allowed on loopback only)",
            "choose local, proxy, bridge or resource before exposing the server (docs/idp/README.md)",
        )),
        _ => report.push(Check::pass(
            "config.mode",
            format!("auth.mode = {mode}: mcpgate is the authorization server; no identity provider to check"),
        )),
    }
    if let Some(local) = auth.local() {
        report.push(Check::pass(
            "config.refresh",
            format!(
                "mcpgate's access tokens live {}, its refresh tokens {} (rotating, reuse grace {} s)",
                relative(local.access_token_ttl_secs as i64).trim_start_matches("in "),
                relative(local.refresh_token_ttl_secs as i64).trim_start_matches("in "),
                local.refresh_reuse_grace_secs
            ),
        ));
    }
    Ok(report)
}

fn public_url(cfg: &Config, report: &mut Report) {
    let url = &cfg.public_url;
    let host = url.host_str().unwrap_or_default();
    let loopback = host == "localhost"
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    report.push(match (url.scheme(), loopback) {
        ("https", _) => Check::pass("config.public_url", format!("public_url {url}")),
        (_, true) => Check::warn(
            "config.public_url",
            format!("public_url {url} is a loopback address"),
            "remote clients (ChatGPT, claude.ai) cannot reach it, and tokens name this URL as their audience",
            "set public_url to the https URL clients use (the MCP URL is public_url + /mcp)",
        ),
        _ => Check::warn(
            "config.public_url",
            format!("public_url {url} is http off loopback"),
            "ChatGPT and claude.ai require https; tokens would cross the network in clear",
            "terminate TLS in front of mcpgate and set public_url to the https URL",
        ),
    });
}

/// The IdP's discovery document, checked for its issuer.
async fn discovery(
    client: &reqwest::Client,
    issuer: Option<&str>,
    report: &mut Report,
) -> Option<Value> {
    let Some(issuer) = issuer else {
        report.push(Check::skip(
            "idp.discovery",
            "this provider has no discovery (fixed endpoints)",
        ));
        return None;
    };
    let mut last = String::new();
    for url in crate::auth::verify::discovery_urls(issuer) {
        match client.get(&url).send().await {
            Ok(r) => {
                let a = Answer::read(r).await;
                match a.json() {
                    Some(v) if a.status == 200 && v.is_object() => {
                        let named = v["issuer"].as_str().unwrap_or_default();
                        if named == issuer || issuer.contains("login.microsoftonline.com") {
                            report.push(Check::pass("idp.discovery", format!("read {url}")));
                            return Some(v);
                        }
                        last = format!("{url} names issuer {named:?}");
                    }
                    _ => last = format!("{url} answered {}", a.status),
                }
            }
            Err(e) => last = format!("{url}: {}", http::reason(&e)),
        }
    }
    report.push(Check::fail(
        "idp.discovery",
        format!("no discovery document for issuer {issuer}"),
        last,
        "set issuer exactly as the provider's discovery document names it (Keycloak: https://host/realms/<realm>; Auth0: https://<tenant>.auth0.com/ with the slash; Okta: https://<org>.okta.com/oauth2/default)",
    ));
    None
}

/// Where the provider's console lists allowed redirect URIs.
fn redirect_step(preset: &str, callback: &str) -> String {
    match preset {
        "auth0" => format!(
            "Auth0 Dashboard → Applications → your application → Settings → Allowed Callback URLs: add {callback}"
        ),
        "keycloak" => format!(
            "Keycloak admin console → your realm → Clients → your client → Settings → Valid redirect URIs: add {callback}"
        ),
        "entra" => format!(
            "Entra admin center → App registrations → your app → Authentication → Add a platform → Web → Redirect URI {callback}"
        ),
        "okta" => format!(
            "Okta Admin Console → Applications → your app → General → Sign-in redirect URIs: add {callback}"
        ),
        "google" => format!(
            "Google Cloud console → APIs & Services → Credentials → your OAuth client → Authorized redirect URIs: add {callback}"
        ),
        "github" => format!(
            "GitHub → Settings → Developer settings → OAuth Apps → your app → Authorization callback URL: {callback}"
        ),
        "cognito" => format!(
            "Amazon Cognito → User pools → your pool → App integration → your app client → Login pages → Allowed callback URLs: add {callback}"
        ),
        _ => format!("the provider's client settings → allowed redirect URIs: add {callback}"),
    }
}

/// Ask the authorize endpoint for a code with our client id and callback,
/// without following redirects, and read how the IdP answers.
async fn authorize_probe(
    client: &reqwest::Client,
    cfg: &Config,
    idp: &IdpSettings,
    meta: Option<&Value>,
    report: &mut Report,
) {
    let endpoint = idp
        .authorization_endpoint
        .clone()
        .or_else(|| meta.and_then(|m| m["authorization_endpoint"].as_str().map(str::to_owned)))
        .or_else(|| {
            idp.preset
                .fixed_endpoints
                .map(|f| f.authorization.to_owned())
        });
    let Some(endpoint) = endpoint else {
        report.push(Check::skip(
            "idp.redirect_uri",
            "no authorization endpoint known",
        ));
        return;
    };
    let callback = format!("{}/callback", cfg.public_origin());
    let step = redirect_step(idp.preset.name, &callback);
    let Ok(mut url) = url::Url::parse(&endpoint) else {
        report.push(Check::fail(
            "idp.redirect_uri",
            format!("{endpoint:?} is not a URL"),
            "the authorization endpoint is malformed",
            "fix auth.upstream.authorization_endpoint",
        ));
        return;
    };
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("response_type", "code")
            .append_pair("client_id", &idp.client_id)
            .append_pair("redirect_uri", &callback)
            .append_pair("scope", &idp.scopes.join(" "))
            .append_pair("state", "mcpgate-doctor")
            .append_pair("nonce", "mcpgate-doctor")
            .append_pair(
                "code_challenge",
                "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            )
            .append_pair("code_challenge_method", "S256");
        if let Some(audience) = idp
            .audience
            .as_deref()
            .filter(|_| idp.preset.audience_param)
        {
            q.append_pair("audience", audience);
        }
        for (k, v) in &idp.authorize_params {
            q.append_pair(k, v);
        }
    }
    let answer = match client.get(url.as_str()).send().await {
        Ok(r) => Answer::read(r).await,
        Err(e) => {
            report.push(Check::fail(
                "idp.redirect_uri",
                "the authorize endpoint did not answer",
                http::reason(&e),
                "check auth.upstream.issuer / authorization_endpoint",
            ));
            return;
        }
    };
    let location = answer.header("location").unwrap_or_default().to_owned();
    let body = String::from_utf8_lossy(&answer.body).to_ascii_lowercase();
    let lower_location = location.to_ascii_lowercase();
    let redirect_markers = [
        "redirect_uri",
        "redirect uri",
        "callback url mismatch",
        "aadsts50011",
        "aadsts500113",
        "not associated with this application",
    ];
    let client_markers = [
        "invalid_client",
        "unauthorized_client",
        "client not found",
        "aadsts700016",
        "unknown client",
    ];
    let is_error_location = lower_location.contains("error");
    let mentions = |text: &str, markers: &[&str]| markers.iter().any(|m| text.contains(m));
    let error_text = if (300..400).contains(&answer.status) {
        is_error_location.then(|| location.clone())
    } else if answer.status >= 400
        || mentions(&body, &redirect_markers[2..])
        || mentions(&body, &client_markers[3..])
    {
        Some(answer.excerpt_near(&["error", "redirect", "client"]))
    } else {
        None
    };
    report.push(match error_text {
        None if location.starts_with(&callback) => Check::pass("idp.redirect_uri", "the IdP sent the browser back to the callback (already signed in)"),
        None => Check::pass(
            "idp.redirect_uri",
            format!("the IdP accepted client {} with redirect URI {callback} and asked for sign-in (HTTP {})", idp.client_id, answer.status),
        ),
        Some(text) if location.starts_with(&callback) => Check::fail(
            "idp.redirect_uri",
            "the redirect URI is registered, but the IdP refused the request",
            text,
            "read the error: invalid_scope → remove the scope from auth.upstream.scopes or allow it for the client; unauthorized_client → enable the authorization-code grant for this client",
        ),
        Some(text) => {
            let lower = text.to_ascii_lowercase();
            if mentions(&lower, &redirect_markers) || mentions(&body, &redirect_markers) {
                Check::fail("idp.redirect_uri", format!("the IdP does not accept redirect URI {callback}"), text, step)
            } else if mentions(&lower, &client_markers) || mentions(&body, &client_markers) {
                Check::fail(
                    "idp.redirect_uri",
                    format!("the IdP does not know client {}", idp.client_id),
                    text,
                    "copy the client id of the application you created at the provider into auth.upstream.client_id (and check the tenant/realm in issuer)",
                )
            } else {
                Check::fail("idp.redirect_uri", format!("the IdP refused the authorization request (HTTP {})", answer.status), text, step)
            }
        }
    });
}

/// Preset rows: what each provider needs that only its console shows.
fn preset_rows(cfg: &Config, idp: &IdpSettings, report: &mut Report) {
    let callback = format!("{}/callback", cfg.public_origin());
    let preset = idp.preset;
    if preset.default_scopes.contains(&"offline_access")
        && !idp.scopes.iter().any(|s| s == "offline_access")
    {
        report.push(Check::warn(
            "idp.offline_access",
            format!("auth.upstream.scopes {:?} lack offline_access", idp.scopes),
            "without offline_access the provider issues no refresh token, so mcpgate cannot refresh the upstream sign-in and users sign in again when it runs out",
            "add offline_access to auth.upstream.scopes (Auth0: also enable Allow Offline Access on the API; Okta: the Refresh Token grant on the app)",
        ));
    } else if preset.name == "google"
        && !idp
            .authorize_params
            .iter()
            .any(|(k, v)| k == "access_type" && v == "offline")
    {
        report.push(Check::warn(
            "idp.offline_access",
            "no access_type=offline",
            "Google issues refresh tokens only with access_type=offline",
            "add access_type = \"offline\" to auth.upstream.authorize_params",
        ));
    } else {
        report.push(Check::pass(
            "idp.offline_access",
            "refresh tokens are requested from the provider",
        ));
    }
    match preset.name {
        "auth0" => report.push(match &idp.audience {
            Some(a) => Check::pass("idp.audience", format!("audience {a} is sent")),
            None => Check::manual(
                "idp.audience",
                "no audience: Auth0 signs users in and returns an opaque access token for /userinfo only (enough for proxy mode, where mcpgate issues the MCP tokens)",
                "only if upstream servers need Auth0 access tokens: Auth0 Dashboard → Applications → APIs → Create API, then set auth.upstream.audience to its identifier",
            ),
        }),
        "keycloak" => report.push(Check::manual(
            "idp.refresh_lifetime",
            "Keycloak's refresh lifetime (SSO Session Idle / Max) cannot be checked from outside",
            "Realm settings → Sessions: SSO Session Idle and Max bound the upstream refresh token; set them at least as long as users should stay connected",
        )),
        "entra" => {
            report.push(Check::manual(
                "idp.platform",
                format!("the platform type of {callback} cannot be checked from outside (Entra reports it only at the token request, AADSTS9002327)"),
                format!("App registrations → your app → Authentication: {callback} must be under the Web platform (mcpgate is a confidential client with a secret), not Single-page application"),
            ));
            let api: Vec<&String> = idp.scopes.iter().filter(|s| s.starts_with("api://")).collect();
            report.push(if api.is_empty() {
                Check::pass("idp.scopes", format!("scopes {:?}", idp.scopes))
            } else {
                Check::manual(
                    "idp.scopes",
                    format!("api:// scopes {api:?}: each must be exposed by the API app and consented for this client"),
                    "App registrations → the API app → Expose an API: add each scope; then your app → API permissions → Add → My APIs → grant admin consent",
                )
            });
        }
        _ => {}
    }
}

/// resource and bridge modes: the IdP's tokens must name the MCP URL.
fn audience_row(cfg: &Config, issuer: &str, report: &mut Report) {
    let resource = cfg.mcp_resource();
    let step = if issuer.contains(".auth0.com") {
        format!(
            "Auth0 Dashboard → Applications → APIs → Create API with identifier exactly {resource}"
        )
    } else if issuer.contains("/realms/") {
        format!(
            "Keycloak → Client scopes → (a scope the clients get) → Mappers → By configuration → Audience → Included Custom Audience {resource}, Add to access token on"
        )
    } else if issuer.contains("login.microsoftonline.com") {
        format!(
            "Entra → App registrations → the API app → Expose an API → Application ID URI {resource}"
        )
    } else {
        format!(
            "configure the provider to put aud = {resource} in access tokens (RFC 8707 resource indicator)"
        )
    };
    report.push(Check::manual(
        "idp.audience",
        format!("whether the IdP puts aud = {resource} in its tokens cannot be checked from outside without a token (run mcpgate doctor {resource} --token FILE)"),
        step,
    ));
}

/// Clients register at the IdP itself (resource mode, bridge passthrough):
/// its DCR must be open to them.
async fn idp_dcr(
    client: &reqwest::Client,
    meta: Option<&Value>,
    register: bool,
    report: &mut Report,
) {
    let Some(endpoint) = meta.and_then(|m| m["registration_endpoint"].as_str()) else {
        report.push(Check::warn(
            "idp.dcr",
            "the provider advertises no registration_endpoint",
            "MCP clients register themselves (DCR) at the authorization server their metadata names; without it only pre-registered clients connect",
            "enable DCR at the provider (Keycloak: Clients → Client registration; Auth0: Settings → Advanced → OIDC Dynamic Application Registration) or use auth.mode = proxy or bridge",
        ));
        return;
    };
    if !register {
        report.push(Check::skip("idp.dcr", "not tried (--no-register)"));
        return;
    }
    let body = serde_json::json!({
        "client_name": "mcpgate doctor (throwaway, safe to delete)",
        "redirect_uris": ["http://127.0.0.1:33418/callback"],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    });
    let answer = match client.post(endpoint).json(&body).send().await {
        Ok(r) => Answer::read(r).await,
        Err(e) => {
            report.push(Check::fail(
                "idp.dcr",
                "the registration endpoint did not answer",
                http::reason(&e),
                "make the registration endpoint reachable",
            ));
            return;
        }
    };
    report.push(if matches!(answer.status, 200 | 201) {
        Check::pass("idp.dcr", "anonymous registration works")
    } else {
        let text = answer.oauth_error();
        let fix = if text.to_ascii_lowercase().contains("trusted hosts") || text.to_ascii_lowercase().contains("host not trusted") {
            "Keycloak → Clients → Client registration → Anonymous access policies → Trusted Hosts: add the hosts clients register from, or turn off \"Host sending client registration request must match\""
        } else {
            "allow anonymous dynamic registration for public clients with loopback redirect URIs at the provider"
        };
        Check::fail("idp.dcr", format!("registration refused: HTTP {}", answer.status), text, fix)
    });
}
