//! Command line.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "mcpgate",
    version,
    about = "OAuth 2.1 gateway in front of MCP servers"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve {
        /// TOML configuration file (defaults apply without one).
        #[arg(long, env = "MCPGATE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Load and validate the configuration, print it with secrets redacted.
    CheckConfig {
        #[arg(long, env = "MCPGATE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Probe this server's `/healthz` and exit 0 when it answers 200, 1
    /// otherwise: a container `HEALTHCHECK` for images without curl or a shell.
    Healthcheck {
        #[arg(long, env = "MCPGATE_CONFIG")]
        config: Option<PathBuf>,
        /// URL to probe instead of `/healthz` on the configured `listen` address.
        #[arg(long)]
        url: Option<String>,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 5)]
        timeout_secs: u64,
    },
    /// Check a deployed MCP endpoint from the outside the way ChatGPT, Claude,
    /// VS Code and Cursor will (`doctor URL`), or this configuration's
    /// identity-provider side (`doctor --config FILE`). Each check is
    /// pass/warn/fail with the cause and the fix; exit 1 on any failure.
    /// Works against any MCP server. Guide: docs/guide/doctor.md.
    Doctor(DoctorArgs),
    /// Token helpers; tokens are read from a file or stdin, never from argv.
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Print what to paste or click in an MCP client (claude, chatgpt,
    /// vscode, cursor, mcp-remote, inspector) with this server's URL filled
    /// in, and what the user will see. Also in docs/clients.md.
    Connect {
        /// The client: claude, chatgpt, vscode, cursor, mcp-remote or inspector.
        client: String,
        /// The MCP endpoint; defaults to the configured public_url + "/mcp".
        url: Option<String>,
        #[arg(long, env = "MCPGATE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Show the recent authorization attempts per client: each attempt's
    /// steps and the reason it stopped. Reads the store, so it sees every
    /// replica. Reason codes: docs/errors.md.
    Funnel {
        #[arg(long, env = "MCPGATE_CONFIG")]
        config: Option<PathBuf>,
        /// Only this client id (generated ids may begin with `-`).
        #[arg(long, allow_hyphen_values = true)]
        client: Option<String>,
        /// How far back: 90s, 15m, 1h, 2d.
        #[arg(long, default_value = "1h", value_parser = crate::funnel::parse_window)]
        since: u64,
        /// At most this many attempts, newest first.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Print {"since", "attempts": [{"attempt", "client_id", "user_id", "started_at", "steps": [{"at", "step", "reason"}], "stopped"}]}.
        #[arg(long)]
        json: bool,
    },
    /// Manage local users (auth.mode = "local").
    Users {
        #[arg(long, env = "MCPGATE_CONFIG", global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: UsersAction,
    },
    /// Manage registered OAuth clients (auth.mode = "local").
    Clients {
        #[arg(long, env = "MCPGATE_CONFIG", global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: ClientsAction,
    },
    /// Show and revoke the consents users gave to clients.
    Consents {
        #[arg(long, env = "MCPGATE_CONFIG", global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: ConsentsAction,
    },
    /// Show and revoke users' connections to upstreams with `user_auth`.
    Connections {
        #[arg(long, env = "MCPGATE_CONFIG", global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: ConnectionsAction,
    },
    /// List and end live MCP sessions (ended on every replica, as the
    /// client's own DELETE would).
    Sessions {
        #[arg(long, env = "MCPGATE_CONFIG", global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: SessionsAction,
    },
    /// Manage token-signing keys.
    Keys {
        #[arg(long, env = "MCPGATE_CONFIG", global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: KeysAction,
    },
}

#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    /// The MCP endpoint as clients are given it, e.g. https://mcp.example.com/mcp.
    #[arg(required_unless_present = "config")]
    pub url: Option<String>,
    /// Lint this mcpgate configuration against its identity provider instead.
    #[arg(long, conflicts_with = "url")]
    pub config: Option<PathBuf>,
    /// An access token to check and call with: a file, or `-` for stdin.
    #[arg(long, value_name = "FILE|-")]
    pub token: Option<String>,
    /// Fetch a token with the client-credentials grant; the file (or `-`)
    /// holds JSON {"client_id", "client_secret"} or two lines: id, secret.
    #[arg(long, value_name = "FILE|-", conflicts_with = "token")]
    pub client_credentials: Option<String>,
    /// Do not register a throwaway client to test DCR.
    #[arg(long)]
    pub no_register: bool,
    /// The browser origin of the CORS preflight.
    #[arg(long, default_value = crate::doctor::endpoint::DEFAULT_ORIGIN)]
    pub origin: String,
    /// Seconds per request.
    #[arg(long, default_value_t = 10)]
    pub timeout_secs: u64,
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum TokenAction {
    /// Print a JWT's header and claims with times in words, without
    /// verifying it; exit 2 when it is not a JWT.
    Decode {
        /// The file holding the token, or `-` for stdin.
        #[arg(value_name = "FILE|-")]
        token: String,
    },
    /// Fetch an access token with the client-credentials grant from any
    /// issuer (found by discovery) and print it alone on stdout
    /// (`TOKEN=$(mcpgate token client-credentials …)`), what it is on
    /// stderr. Exit 1 when the token endpoint refuses (its error and a hint
    /// shown), 2 on unusable input. Guide: docs/guide/tokens.md.
    ClientCredentials(ClientCredentialsArgs),
    /// Verify an access token exactly as mcpgate would (signature against
    /// the issuer's JWKS, alg, typ, iss, aud, exp/nbf, scopes) and name the
    /// check that fails. Expectations from `--config` (the configured mode)
    /// or from `--issuer`/`--audience`/`--scope`. Exit 0 valid, 1 a check
    /// failed, 2 unusable input.
    Verify(VerifyArgs),
    /// Exchange a refresh token (from a file or stdin) for new tokens: the
    /// access token on stdout's first line and, when the server sends one,
    /// the new refresh token on the second (or in --refresh-token-out).
    /// Says on stderr when the refresh token rotated (the old one is dead).
    Refresh(RefreshArgs),
}

/// Where the token endpoint is, and who the client is.
#[derive(Debug, clap::Args)]
pub struct TokenClientArgs {
    /// The authorization server's issuer: its token endpoint is found by
    /// discovery (RFC 8414, then OpenID Connect).
    #[arg(long, required_unless_present = "token_endpoint")]
    pub issuer: Option<String>,
    /// The token endpoint itself, instead of discovery.
    #[arg(long, conflicts_with = "issuer")]
    pub token_endpoint: Option<String>,
    #[arg(long, allow_hyphen_values = true)]
    pub client_id: String,
    /// The client secret: a file, or `-` for stdin (never on the command line).
    #[arg(long, value_name = "FILE|-")]
    pub client_secret_file: Option<String>,
    /// `private_key_jwt`: the client's private key, PEM or JWK, in a file or `-`.
    #[arg(long, value_name = "FILE|-", conflicts_with = "client_secret_file")]
    pub private_key_file: Option<String>,
    /// The `kid` of the assertion's header (default: the JWK's).
    #[arg(long, requires = "private_key_file")]
    pub key_id: Option<String>,
    /// How the secret is sent: `basic` (HTTP Basic, the default) or `post` (in the form).
    #[arg(long, value_enum, default_value = "basic")]
    pub client_auth: SecretMethod,
    /// Seconds per request.
    #[arg(long, default_value_t = 10)]
    pub timeout_secs: u64,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum SecretMethod {
    Basic,
    Post,
}

#[derive(Debug, clap::Args)]
pub struct ClientCredentialsArgs {
    #[command(flatten)]
    pub client: TokenClientArgs,
    /// The resource the token is for (RFC 8707), e.g. https://mcp.example.com/mcp.
    #[arg(long)]
    pub resource: Option<String>,
    /// A scope to request; repeat or separate with spaces. Entra: api://<app-id>/.default.
    #[arg(long)]
    pub scope: Vec<String>,
    /// Auth0's `audience` (the API identifier).
    #[arg(long)]
    pub audience: Option<String>,
    /// Print the whole token response (and the decoded claims) as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The file holding the token, or `-` for stdin.
    #[arg(value_name = "FILE|-")]
    pub token: String,
    /// Expect what this mcpgate configuration's mode checks (issuer,
    /// audiences, algorithms, advertised scopes). Not read from
    /// MCPGATE_CONFIG, so that --issuer works where that is set.
    #[arg(long, required_unless_present = "issuer")]
    pub config: Option<PathBuf>,
    /// Expect tokens of this issuer (keys from its discovery's jwks_uri).
    #[arg(long, conflicts_with = "config")]
    pub issuer: Option<String>,
    /// An accepted audience (repeat for several); with --issuer.
    #[arg(long, requires = "issuer")]
    pub audience: Vec<String>,
    /// A scope the token must carry; repeat or separate with spaces.
    #[arg(long)]
    pub scope: Vec<String>,
    /// Seconds per request (discovery, key set).
    #[arg(long, default_value_t = 10)]
    pub timeout_secs: u64,
    /// Print the findings as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct RefreshArgs {
    #[command(flatten)]
    pub client: TokenClientArgs,
    /// The refresh token: a file, or `-` for stdin.
    #[arg(long, value_name = "FILE|-")]
    pub refresh_token_file: String,
    /// Write the new refresh token to this file (mode 0600) instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub refresh_token_out: Option<PathBuf>,
    /// Narrow the new token to this resource (RFC 8707).
    #[arg(long)]
    pub resource: Option<String>,
    /// Narrow the new token to these scopes; repeat or separate with spaces.
    #[arg(long)]
    pub scope: Vec<String>,
    /// Print the whole token response as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum UsersAction {
    /// Add a user; the password is read from stdin (8 characters or more).
    Add {
        name: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        /// The user may use the admin console (/admin).
        #[arg(long)]
        admin: bool,
    },
    /// Give a user (by name, or id for identity-provider users) the admin
    /// console, or take it away with --revoke.
    SetAdmin {
        name: String,
        #[arg(long)]
        revoke: bool,
    },
    /// Disable a user: no more sign-ins; their sessions end and their
    /// refresh tokens are revoked at once.
    Disable { name: String },
    /// Enable a disabled user again (nothing that ended comes back).
    Enable { name: String },
    /// List users.
    List,
    /// Remove a user, their sessions and consents, and revoke their refresh
    /// tokens. Upstream users (proxy mode) may share a name: give the id.
    Remove { name: String },
    /// Set a local user's new password; their sessions, remembered consents
    /// and refresh tokens are revoked with the old one.
    Passwd {
        name: String,
        #[arg(long)]
        password_stdin: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysAction {
    /// List signing keys with their activation and retirement times.
    List,
    /// Add a new key (it signs after a short publication delay) and retire the others.
    Rotate,
    /// Re-seal stored secrets under the current encryption key (after
    /// setting `encryption_key` and listing the old one in `previous_encryption_keys`).
    Reseal,
}

#[derive(Debug, Subcommand)]
pub enum ClientsAction {
    /// List registered clients (dynamic registrations); with --all also the
    /// configured ones and metadata-document (CIMD) clients with grants.
    List {
        /// Every kind: id, name, kind, last used, live grants.
        #[arg(long)]
        all: bool,
    },
    /// Remove a registered client with its consents and revoke its refresh tokens.
    Remove {
        #[arg(allow_hyphen_values = true)]
        client_id: String,
    },
    /// Forget every consent to a client and revoke its refresh tokens,
    /// keeping it (configured and CIMD clients: their registration is not the store's).
    RevokeGrants {
        #[arg(allow_hyphen_values = true)]
        client_id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum SessionsAction {
    /// List live MCP sessions: handle, transport, owner, started, expires.
    List,
    /// End a session by its handle (from `sessions list`): every replica answers 404 for it.
    End {
        #[arg(allow_hyphen_values = true)]
        handle: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConsentsAction {
    /// List the clients a user has consented to.
    List { user: String },
    /// Forget a user's consent to a client and revoke the refresh tokens it produced.
    Revoke {
        user: String,
        #[arg(allow_hyphen_values = true)]
        client_id: String,
    },
    /// List a user's live grants (sign-ins to clients with a live refresh token).
    Grants { user: String },
    /// Revoke one grant by its id (from `consents grants`).
    RevokeGrant {
        #[arg(allow_hyphen_values = true)]
        grant: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConnectionsAction {
    /// List a user's connections to upstreams.
    List {
        #[arg(long)]
        user: String,
    },
    /// Remove a user's connection (every one without --upstream); its tokens
    /// are revoked at the upstream's authorization server when it can.
    Revoke {
        #[arg(long)]
        user: String,
        #[arg(long)]
        upstream: Option<String>,
    },
}

/// Why `mcpgate healthcheck` failed; every variant exits 1 (Docker reserves 2).
#[derive(Debug, thiserror::Error)]
pub enum HealthcheckError {
    #[error("listen: {0}")]
    Listen(String),
    #[error("{0:?} is not an http:// URL")]
    NotHttp(String),
    #[error("cannot reach {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{url} answered {status}")]
    Status { url: String, status: u16 },
}

/// `listen` alone, from the file and `MCPGATE_LISTEN` as `serve` reads it:
/// the probe must not fail on settings it does not use (a `public_url` given
/// only to `serve --config`, say).
pub fn listen_address(path: Option<&Path>) -> Result<SocketAddr, HealthcheckError> {
    use figment::providers::{Env, Format, Toml};
    let mut figment = figment::Figment::new();
    if let Some(path) = path {
        figment = figment.merge(Toml::file_exact(path));
    }
    let figment = figment.merge(Env::prefixed("MCPGATE_").only(&["listen"]));
    let text = match figment.extract_inner::<String>("listen") {
        Ok(text) => text,
        Err(e) if matches!(e.kind, figment::error::Kind::MissingField(_)) => {
            "127.0.0.1:8000".to_owned()
        }
        Err(e) => return Err(HealthcheckError::Listen(e.to_string())),
    };
    text.parse()
        .map_err(|_| HealthcheckError::Listen(format!("{text:?} is not a socket address")))
}

/// `/healthz` on the listen address, asked over loopback when the server
/// binds every interface (a wildcard address is not a destination).
pub fn healthcheck_url(listen: SocketAddr) -> String {
    let mut target = listen;
    if target.ip().is_unspecified() {
        target.set_ip(match target {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    format!("http://{target}/healthz")
}

/// GET `url` once, without any proxy from the environment: the probe is
/// for this host's own process.
pub async fn healthcheck(url: &str, timeout: Duration) -> Result<(), HealthcheckError> {
    if !url.starts_with("http://") {
        return Err(HealthcheckError::NotHttp(url.to_owned()));
    }
    // reqwest's own message is terse ("error sending request"): add its causes.
    let unreachable = |e: reqwest::Error| {
        let e = e.without_url();
        let mut reason = e.to_string();
        let mut cause = std::error::Error::source(&e);
        while let Some(inner) = cause {
            reason.push_str(": ");
            reason.push_str(&inner.to_string());
            cause = inner.source();
        }
        HealthcheckError::Unreachable {
            url: url.to_owned(),
            reason,
        }
    };
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .build()
        .map_err(unreachable)?;
    let response = client.get(url).send().await.map_err(unreachable)?;
    let status = response.status().as_u16();
    if status == 200 {
        Ok(())
    } else {
        Err(HealthcheckError::Status {
            url: url.to_owned(),
            status,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Client ids, session handles and grant ids are base64url, so about one
    /// in 64 begins with `-`: each is taken as the value, not as a flag.
    #[test]
    fn ids_that_begin_with_a_hyphen_are_values() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("mcpgate").chain(args.iter().copied()))
                .map_err(|e| e.to_string())
        };
        let id = "-Xipe6m2CuELyuRsvIv3VgZV";
        match parse(&["funnel", "--client", id]).unwrap().command {
            Command::Funnel { client, .. } => assert_eq!(client.as_deref(), Some(id)),
            other => panic!("{other:?}"),
        }
        for args in [
            &["clients", "remove", id][..],
            &["clients", "revoke-grants", id],
            &["sessions", "end", id],
            &["consents", "revoke", "alice", id],
            &["consents", "revoke-grant", id],
        ] {
            let parsed = format!("{:?}", parse(args).unwrap().command);
            assert!(parsed.contains(id), "{args:?}: {parsed}");
        }
        // A real flag is still a flag.
        assert!(parse(&["funnel", "--client"]).is_err());
    }

    #[test]
    fn a_wildcard_listen_address_is_probed_over_loopback() {
        let url = |text: &str| healthcheck_url(text.parse().unwrap());
        assert_eq!(url("0.0.0.0:8000"), "http://127.0.0.1:8000/healthz");
        assert_eq!(url("[::]:8000"), "http://[::1]:8000/healthz");
        assert_eq!(url("10.1.2.3:9000"), "http://10.1.2.3:9000/healthz");
        assert_eq!(url("[fd00::5]:80"), "http://[fd00::5]:80/healthz");
    }
}
