//! Loading and validating whole files: every section, every problem at once.

use super::*;
use crate::auth::SUPPORTED_ALGORITHMS;

fn env_none() -> Env {
    Env::prefixed("MCPGATE_TEST_NOTHING_")
}

fn from_toml(text: &str) -> Result<Config, ConfigErrors> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, text).unwrap();
    load_from(Some(&path), env_none())
}

#[test]
fn gateway_and_policy_sections_are_validated() {
    let err = from_toml(
        "[[upstreams]]\nname = \"a\"\ncommand = [\"x\"]\nurl = \"http://h/mcp\"\n\
         [[upstreams]]\nname = \"b\"\nurl = \"http://h/mcp\"\nidentity = \"jwt\"\n\
         [gateway]\nprefix = \"sometimes\"\n\
         [[policy]]\nscopes = [\"x\"]\n\
         [[policy]]\ntools = [\"t\"]\neffect = \"deny\"\nscopes = [\"x\"]\n\
         [[policy]]\nprompts = [\"p\"]\neffect = \"maybe\"\n",
    )
    .unwrap_err();
    let text = err.to_string();
    for key in [
        "upstreams[0]: set exactly one of command, url",
        "upstreams[1].identity: needs isolation = \"per-user\"",
        "gateway.prefix",
        "policy[0]: name at least one non-empty pattern",
        "policy[1]: a deny rule refuses whatever the scopes",
        "policy[2].effect",
    ] {
        assert!(text.contains(key), "missing {key:?} in:\n{text}");
    }
    // Local mode mints JWTs, so identity = "jwt" is fine there.
    let cfg = from_toml(
        "[[upstreams]]\nname = \"b\"\nurl = \"http://h/mcp\"\nidentity = \"jwt\"\nisolation = \"per-user\"\n\
         [[policy]]\nresources = [\"file:///*\"]\ngroups = [\"ops\"]\n",
    )
    .unwrap();
    assert_eq!(cfg.gateway.upstreams.len(), 1);
    assert_eq!(cfg.policy[0].groups, vec!["ops".to_owned()]);
    // A gateway serves no built-in toolset unless [toolsets] asks for one.
    assert!(!cfg.toolsets.calc && !cfg.toolsets.notes && cfg.toolsets.docs.is_none());
}

#[test]
fn defaults_without_a_file() {
    let cfg = load_from(None, env_none()).unwrap();
    assert_eq!(cfg.listen.to_string(), "127.0.0.1:8000");
    assert_eq!(cfg.mcp_resource(), "http://127.0.0.1:8000/mcp");
    assert_eq!(cfg.store.url, "sqlite://./data/mcpgate.db");
    assert_eq!(cfg.auth.mode_name(), "local");
    assert!(cfg.toolsets.calc && cfg.toolsets.notes && cfg.toolsets.docs.is_some());
    assert!(cfg.http.allowed_hosts.contains(&"localhost".to_owned()));
}

#[test]
fn every_problem_is_reported_at_once() {
    let err = from_toml(
        "listen = \"nope\"\npublic_url = \"ftp://x\"\n[store]\nurl = \"mysql://a\"\n[log]\nformat = \"xml\"\n",
    )
    .unwrap_err();
    let text = err.to_string();
    for key in ["listen:", "public_url:", "store.url:", "log.format:"] {
        assert!(text.contains(key), "{key} missing from {text}");
    }
    assert_eq!(err.0.len(), 4, "{text}");
}

#[test]
fn proxy_mode_validates_the_upstream_per_preset() {
    let err = from_toml("[auth]\nmode = \"proxy\"\n").unwrap_err();
    assert!(err.to_string().contains("auth.upstream: required"), "{err}");
    let err = from_toml(
        "[auth]\nmode = \"proxy\"\n[auth.upstream]\npreset = \"entra\"\naudience = \"x\"\nscopes = [\"profile\"]\n",
    )
    .unwrap_err();
    let text = err.to_string();
    for key in [
        "auth.upstream.tenant: required",
        "auth.upstream.audience: not used",
        "auth.upstream.client_id: required",
        "exactly one of client_secret, client_secret_file",
        "must include \"openid\"",
    ] {
        assert!(text.contains(key), "{key} missing from {text}");
    }
    let err = from_toml(
        "[auth]\nmode = \"proxy\"\n[auth.upstream]\npreset = \"okta\"\nclient_id = \"c\"\nclient_secret = \"s\"\nauthorize_params = { state = \"x\" }\n",
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("auth.upstream.issuer: required"),
        "{err}"
    );
    assert!(
        err.to_string().contains("\"state\" is set by mcpgate"),
        "{err}"
    );
    let err =
        from_toml("[auth]\nmode = \"proxy\"\n[auth.upstream]\npreset = \"saml\"\n").unwrap_err();
    assert!(
        err.to_string().contains("is not one of oidc, auth0"),
        "{err}"
    );

    let cfg = from_toml(
        "[auth]\nmode = \"proxy\"\n[auth.upstream]\npreset = \"entra\"\ntenant = \"contoso.onmicrosoft.com\"\nclient_id = \"c\"\nclient_secret = \"hunter2\"\n",
    )
    .unwrap();
    let up = cfg.auth.idp().unwrap();
    assert_eq!(
        up.issuer.as_deref(),
        Some("https://login.microsoftonline.com/contoso.onmicrosoft.com/v2.0")
    );
    assert!(
        cfg.auth.local().is_some(),
        "proxy mode runs the authorization server"
    );
    let shown = cfg.to_redacted_toml().unwrap();
    assert!(
        !shown.contains("hunter2") && shown.contains("preset = \"entra\""),
        "{shown}"
    );

    let cfg = from_toml(
        "[auth]\nmode = \"proxy\"\n[auth.upstream]\npreset = \"google\"\nclient_id = \"c\"\nclient_secret = \"s\"\nauthorize_params = { prompt = \"select_account consent\", hd = \"example.com\" }\n",
    )
    .unwrap();
    let up = cfg.auth.idp().unwrap();
    assert_eq!(up.issuer.as_deref(), Some("https://accounts.google.com"));
    assert_eq!(
        up.authorize_params,
        vec![
            ("access_type".to_owned(), "offline".to_owned()),
            ("hd".to_owned(), "example.com".to_owned()),
            ("prompt".to_owned(), "select_account consent".to_owned()),
        ]
    );
    let err = from_toml(
        "[auth]\nmode = \"proxy\"\n[auth.upstream]\npreset = \"github\"\nissuer = \"https://github.com\"\nclient_id = \"c\"\nclient_secret = \"s\"\n",
    )
    .unwrap_err();
    assert!(err.to_string().contains("has no OpenID issuer"), "{err}");
    let err = from_toml("[auth.upstream]\nclient_id = \"c\"\n").unwrap_err();
    assert!(
        err.to_string()
            .contains("only used with auth.mode = \"proxy\""),
        "{err}"
    );
}

/// Passthrough without `audience` forwards `/mcp` as `resource`: the
/// resource server must accept that audience, or every token is refused.
#[test]
fn a_forwarding_bridge_needs_its_mcp_resource_among_the_audiences() {
    let err = from_toml(
        "[auth]\nmode = \"bridge\"\n[auth.resource]\nissuer = \"https://kc.example/realms/x\"\naudiences = [\"api://other\"]\n[auth.bridge]\nregistrar = \"passthrough\"\n",
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("auth.resource.audiences: must include \"http://127.0.0.1:8000/mcp\""),
        "{err}"
    );
    for accepted in [
        "audiences = [\"api://other\", \"http://127.0.0.1:8000/mcp\"]\n[auth.bridge]\nregistrar = \"passthrough\"\n",
        "audiences = [\"api://other\"]\n[auth.bridge]\nregistrar = \"passthrough\"\naudience = \"api://other\"\n",
        "[auth.bridge]\nregistrar = \"passthrough\"\n",
    ] {
        let text = format!(
            "[auth]\nmode = \"bridge\"\n[auth.resource]\nissuer = \"https://kc.example/realms/x\"\n{accepted}"
        );
        assert!(from_toml(&text).is_ok(), "{text}");
    }
}

#[test]
fn bridge_and_auto_modes_are_validated() {
    let err = from_toml("[auth]\nmode = \"bridge\"\n").unwrap_err();
    let text = err.to_string();
    assert!(text.contains("auth.resource: required"), "{text}");
    assert!(text.contains("auth.bridge: required"), "{text}");
    let err = from_toml(
        "[auth]\nmode = \"bridge\"\n[auth.resource]\nissuer = \"https://t.auth0.com/\"\n[auth.bridge]\nregistrar = \"auth0\"\naudience = \"https://elsewhere\"\n",
    )
    .unwrap_err();
    let text = err.to_string();
    for key in [
        "auth.bridge.management_client_id: required",
        "auth.bridge: set exactly one of management_client_secret, management_client_secret_file",
        "auth.bridge.audience: \"https://elsewhere\" must be one of auth.resource.audiences",
    ] {
        assert!(text.contains(key), "{key} missing from {text}");
    }
    let cfg = from_toml(
        "[auth]\nmode = \"bridge\"\n[auth.resource]\nissuer = \"https://t.auth0.com/\"\n[auth.bridge]\nregistrar = \"auth0\"\nmanagement_client_id = \"m\"\nmanagement_client_secret = \"hunter2\"\n",
    )
    .unwrap();
    let bridge = cfg.auth.bridge().unwrap();
    assert_eq!(
        bridge.audience.as_deref(),
        Some("http://127.0.0.1:8000/mcp")
    );
    match &bridge.registrar {
        BridgeRegistrar::Auth0 { audience, .. } => {
            assert_eq!(audience, "https://t.auth0.com/api/v2/")
        }
        other => panic!("{other:?}"),
    }
    assert!(!cfg.to_redacted_toml().unwrap().contains("hunter2"));
    let err = from_toml(
        "[auth]\nmode = \"bridge\"\n[auth.resource]\nissuer = \"https://kc.example/realms/x\"\n[auth.bridge]\nregistrar = \"passthrough\"\nmanagement_client_id = \"m\"\n",
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("only used with registrar = \"auth0\""),
        "{err}"
    );

    // Auto needs the upstream (for proxy) and derives resource settings from it.
    let cfg = from_toml(
        "[auth]\nmode = \"auto\"\n[auth.upstream]\npreset = \"keycloak\"\nissuer = \"https://kc.example/realms/x\"\nclient_id = \"c\"\nclient_secret = \"s\"\n",
    )
    .unwrap();
    assert_eq!(cfg.auth.mode_name(), "auto");
    assert_eq!(
        cfg.auth.resource().unwrap().issuer,
        "https://kc.example/realms/x"
    );
    assert!(cfg.auth.local().is_some() && cfg.auth.idp().is_some());
}

#[test]
fn unknown_keys_name_the_key() {
    let err = from_toml("[store]\nurll = \"x\"\n").unwrap_err();
    assert!(err.to_string().contains("urll"), "{err}");
}

#[test]
fn auth_none_is_refused_off_loopback() {
    let err = from_toml(
        "listen = \"0.0.0.0:8000\"\npublic_url = \"https://mcp.example.com\"\n[auth]\nmode = \"none\"\n",
    )
    .unwrap_err();
    assert!(err.to_string().contains("loopback"), "{err}");
    // The default (local) is fine off loopback behind https.
    let cfg =
        from_toml("listen = \"0.0.0.0:8000\"\npublic_url = \"https://mcp.example.com\"\n").unwrap();
    assert_eq!(cfg.auth.mode_name(), "local");
}

#[test]
fn local_mode_needs_https_off_loopback_and_reports_every_bad_value() {
    let err = from_toml(
        "listen = \"0.0.0.0:8000\"\npublic_url = \"http://mcp.example.com\"\n[auth.local]\naccess_token_ttl_secs = 0\ncode_ttl_secs = 99999\nencryption_key = \"x\"\nencryption_key_file = \"/k\"\n",
    )
    .unwrap_err();
    let text = err.to_string();
    for needle in [
        "must be https",
        "access_token_ttl_secs",
        "code_ttl_secs",
        "at most one of encryption_key",
    ] {
        assert!(text.contains(needle), "{needle}: {text}");
    }
    let cfg = from_toml(
        "[auth.local]\nencryption_key = \"c2VjcmV0LWtleS1zZWNyZXQta2V5LXNlY3JldC1rZXkh\"\n",
    )
    .unwrap();
    let shown = cfg.to_redacted_toml().unwrap();
    assert!(!shown.contains("c2VjcmV0"), "{shown}");
}

#[test]
fn local_auth_limits_and_introspection_clients_are_validated() {
    let err = from_toml(
        "[auth.local]\nauthorize_requests_per_minute = 0\nmax_unused_clients = 0\n[[auth.local.introspection_clients]]\nclient_id = \"rs\"\nclient_secret = \"short\"\n[[auth.local.introspection_clients]]\nclient_id = \"rs\"\n",
    )
    .unwrap_err();
    let text = err.to_string();
    for needle in [
        "authorize_requests_per_minute",
        "max_unused_clients",
        "introspection_clients[0].client_secret: at least 32",
        "introspection_clients[1]: set exactly one of",
    ] {
        assert!(text.contains(needle), "{needle}: {text}");
    }
    let cfg = from_toml(
        "[auth.local]\n[[auth.local.introspection_clients]]\nclient_id = \"rs\"\nclient_secret = \"0123456789abcdef0123456789abcdef-rs\"\n",
    )
    .unwrap();
    let local = cfg.auth.local().unwrap();
    assert_eq!(local.authorize_requests_per_minute, 60);
    assert_eq!(local.max_unused_clients, 10_000);
    assert_eq!(local.introspection_clients[0].client_id, "rs");
    let shown = cfg.to_redacted_toml().unwrap();
    assert!(!shown.contains("0123456789abcdef"), "{shown}");
}

#[test]
fn public_url_with_path_is_refused() {
    let err = from_toml("public_url = \"https://h.example/mcp\"\n").unwrap_err();
    assert!(err.to_string().contains("origin only"), "{err}");
}

#[test]
#[allow(clippy::result_large_err)] // figment's Jail API returns its own error type
fn environment_overrides_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "listen = \"127.0.0.1:9000\"\n").unwrap();
    figment::Jail::expect_with(|jail| {
        jail.set_env("MCPGATE_LISTEN", "127.0.0.1:9100");
        jail.set_env("MCPGATE_STORE__URL", "postgres://u:secret@127.0.0.1/db");
        jail.set_env("MCPGATE_CONFIG", "/ignored/not/a/key");
        let cfg = load(Some(&path)).map_err(|e| e.to_string())?;
        assert_eq!(cfg.listen.to_string(), "127.0.0.1:9100");
        assert_eq!(cfg.store.url, "postgres://u:secret@127.0.0.1/db");
        let shown = cfg.to_redacted_toml().map_err(|e| e.to_string())?;
        assert!(!shown.contains("secret"), "{shown}");
        assert!(!format!("{cfg:?}").contains("secret"));
        Ok(())
    });
}

#[test]
fn resource_mode_config() {
    let cfg = from_toml(
        "public_url = \"https://mcp.example.com\"\nlisten = \"0.0.0.0:8000\"\n[auth]\nmode = \"resource\"\n[auth.resource]\nissuer = \"https://idp.example.com/realms/x\"\n[auth.resource.introspection]\nclient_id = \"rs\"\nclient_secret = \"s3cret\"\n[[policy]]\ntools = [\"add\"]\nscopes = [\"math\"]\n",
    )
    .unwrap();
    let resource = cfg.auth.resource().cloned().unwrap();
    assert_eq!(resource.audiences, vec!["https://mcp.example.com/mcp"]);
    assert_eq!(resource.algorithms.len(), SUPPORTED_ALGORITHMS.len());
    assert!(!cfg.to_redacted_toml().unwrap().contains("s3cret"));
    assert!(!format!("{cfg:?}").contains("s3cret"));
    assert_eq!(cfg.policy.len(), 1);
}

#[test]
fn resource_mode_problems_are_listed() {
    let err = from_toml(
        "[auth]\nmode = \"resource\"\n[auth.resource]\nissuer = \"http://idp.example.com\"\naudiences = [\"*\"]\nalgorithms = [\"HS256\"]\n",
    )
    .unwrap_err();
    let text = err.to_string();
    for key in [
        "auth.resource.issuer",
        "auth.resource.audiences",
        "auth.resource.algorithms",
    ] {
        assert!(text.contains(key), "{key}: {text}");
    }
}

#[test]
fn public_host_is_allowed() {
    let cfg = from_toml("public_url = \"http://localhost:8000\"\n").unwrap();
    assert_eq!(cfg.http.allowed_hosts[0], "localhost");
    assert!(cfg.http.allowed_hosts.contains(&"127.0.0.1".to_owned()));
}

#[test]
fn auto_resolves_to_resource_or_proxy_and_every_other_mode_to_itself() {
    use crate::idp::auto::Choice;
    let auto = from_toml(
        "[auth]\nmode = \"auto\"\n[auth.upstream]\npreset = \"keycloak\"\nissuer = \"https://kc.example/realms/x\"\nclient_id = \"c\"\nclient_secret = \"s\"\n",
    )
    .unwrap()
    .auth;
    assert_eq!(
        auto.clone().resolved(Choice::Resource).mode_name(),
        "resource"
    );
    assert_eq!(auto.resolved(Choice::Proxy).mode_name(), "proxy");
    // Without an issuer there is nothing to validate tokens of: proxy only.
    let github = from_toml(
        "[auth]\nmode = \"auto\"\n[auth.upstream]\npreset = \"github\"\nclient_id = \"c\"\nclient_secret = \"s\"\n",
    )
    .unwrap()
    .auth;
    assert!(github.resource().is_none());
    assert_eq!(github.resolved(Choice::Resource).mode_name(), "proxy");
    let local = from_toml("").unwrap().auth;
    assert_eq!(local.resolved(Choice::Resource).mode_name(), "local");
}

#[test]
fn check_config_shows_the_mode_as_a_tag() {
    let shown = from_toml("[auth]\nmode = \"none\"\n")
        .unwrap()
        .to_redacted_toml()
        .unwrap();
    assert!(shown.contains("[auth]\nmode = \"none\""), "{shown}");
}

/// `config` composes the subsystems' settings; none of them may import it
/// back (only `app.rs` and `main.rs` see the whole `Config`).
#[test]
fn no_subsystem_imports_config() {
    fn visit(dir: &std::path::Path, offenders: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if !path.ends_with("config") {
                    visit(&path, offenders);
                }
                continue;
            }
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if ["app.rs", "main.rs", "lib.rs"].contains(&name.as_str()) {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            if code
                .lines()
                .any(|l| !l.trim_start().starts_with("//") && l.contains("crate::config"))
            {
                offenders.push(path.display().to_string());
            }
        }
    }
    let mut offenders = Vec::new();
    visit(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut offenders,
    );
    assert!(offenders.is_empty(), "{offenders:?}");
}
