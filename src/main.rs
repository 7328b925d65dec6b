use std::{process::ExitCode, time::Duration};

use clap::Parser;
use mcpgate::admin::{Actor, Admin};
use mcpgate::{
    app::{self, App},
    cli::{
        Cli, ClientsAction, Command, ConnectionsAction, ConsentsAction, KeysAction, SessionsAction,
        TokenAction, UsersAction,
    },
    config::{self, AuthSettings, ResolvedAuth},
    oauth::settings::LocalAuthSettings,
    telemetry,
};

/// mimalloc instead of glibc's malloc: a proxied call allocates many
/// mid-size blocks across tokio's threads, where glibc's arenas spent a
/// quarter of the hop's CPU (docs/benchmarks.md, "A cheaper hop").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code for configuration problems, distinct from runtime failures.
const EXIT_CONFIG: u8 = 2;
/// Exit status when the reader of the output went away: 128 + SIGPIPE, what
/// a shell reports for a command a closed pipe stopped.
const EXIT_CLOSED_PIPE: i32 = 141;

/// A line of a command's output. `println!` panics when the reader has gone
/// (`mcpgate users list | head -1`); here the command ends quietly instead,
/// as other Unix tools do.
macro_rules! out {
    ($($arg:tt)*) => { print_line(format_args!($($arg)*)) };
}

/// A line of `serve`'s own output: a closed stdout must not stop a server.
macro_rules! announce {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// A message on stderr (with and without a newline); a closed stderr loses
/// it rather than panicking.
macro_rules! say_err {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}
macro_rules! say_err_raw {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stderr(), $($arg)*);
    }};
}

// After the macros above: the command modules use them.
mod commands;

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn print_line(line: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    let written = stdout
        .write_fmt(line)
        .and_then(|()| stdout.write_all(b"\n"))
        .and_then(|()| stdout.flush());
    match written {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            std::process::exit(EXIT_CLOSED_PIPE)
        }
        Err(e) => {
            say_err!("mcpgate: cannot write the output: {e}");
            std::process::exit(1)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            say_err!("mcpgate: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::CheckConfig { config } => match config::load(config.as_deref()) {
            Ok(cfg) => match cfg.to_redacted_toml() {
                Ok(text) => {
                    out!("# configuration is valid\n{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    say_err_raw!("mcpgate: {e}");
                    ExitCode::from(EXIT_CONFIG)
                }
            },
            Err(e) => {
                say_err_raw!("mcpgate: {e}");
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Command::Healthcheck {
            config,
            url,
            timeout_secs,
        } => {
            let url = match url {
                Some(url) => Ok(url),
                None => mcpgate::cli::listen_address(config.as_deref())
                    .map(mcpgate::cli::healthcheck_url),
            };
            let probe = match url {
                Ok(url) => mcpgate::cli::healthcheck(&url, Duration::from_secs(timeout_secs)).await,
                Err(e) => Err(e),
            };
            // Every failure is 1, never EXIT_CONFIG: Docker reserves 2 in health checks.
            match probe {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    say_err!("mcpgate: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Doctor(args) => doctor(args).await,
        Command::Token { action } => match action {
            TokenAction::Decode { token } => commands::token::decode(&token),
            TokenAction::ClientCredentials(args) => commands::token::client_credentials(args).await,
            TokenAction::Verify(args) => commands::token::verify(args).await,
            TokenAction::Refresh(args) => commands::token::refresh(args).await,
        },
        Command::Connect {
            client,
            url,
            config,
        } => connect(&client, url, config.as_deref()),
        Command::Funnel {
            config,
            client,
            since,
            limit,
            json,
        } => {
            admin(config, |_, store| {
                Box::pin(funnel(store, client, since, limit, json))
            })
            .await
        }
        Command::Users { config, action } => {
            admin(config, |cfg, store| Box::pin(users(cfg, store, action))).await
        }
        Command::Clients { config, action } => {
            admin(config, |cfg, store| Box::pin(clients(cfg, store, action))).await
        }
        Command::Sessions { config, action } => {
            admin(config, |_, store| Box::pin(sessions(store, action))).await
        }
        Command::Consents { config, action } => {
            admin(config, |_, store| Box::pin(consents(store, action))).await
        }
        Command::Keys { config, action } => {
            admin(config, |cfg, store| Box::pin(keys(cfg, store, action))).await
        }
        Command::Connections { config, action } => {
            admin(config, |cfg, store| {
                Box::pin(connections(cfg, store, action))
            })
            .await
        }
        Command::Serve { config } => {
            let cfg = match config::load(config.as_deref()) {
                Ok(cfg) => cfg,
                Err(e) => {
                    say_err_raw!("mcpgate: {e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            let audit = match telemetry::audit::AuditSink::open(&cfg.telemetry.audit) {
                Ok(sink) => sink,
                Err(e) => {
                    say_err_raw!("mcpgate: telemetry.audit: {e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            telemetry::logs::init(&cfg.log, audit.clone());
            match serve(cfg, audit).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    say_err!("mcpgate: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// `mcpgate connect`: 0 with the guide on stdout, 2 on an unknown client,
/// a bad URL or an unusable configuration.
fn connect(client: &str, url: Option<String>, config: Option<&std::path::Path>) -> ExitCode {
    use mcpgate::connect;
    // An unknown client is named before a configuration is loaded.
    if let Err(e) = connect::find(client) {
        say_err!("mcpgate: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    let url = match url {
        Some(url) => url,
        None => match config::load(config) {
            Ok(cfg) => cfg.mcp_resource(),
            Err(e) => {
                say_err_raw!("mcpgate: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        },
    };
    let guide = match connect::guide(client, &url) {
        Ok(guide) => guide,
        Err(e) => {
            say_err!("mcpgate: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Some(warning) = &guide.warning {
        say_err!("warning: {warning}");
    }
    out!("{} — {}\n", guide.title, guide.url);
    out!("What to do:");
    for (i, step) in guide.steps.iter().enumerate() {
        out!("  {}. {step}", i + 1);
    }
    out!("\nWhat you will see:\n  {}", guide.sees);
    out!("\nIf it fails:\n  {}", guide.common_failure);
    out!("\nMore: docs/clients.md#{}", connect::anchor(guide.name));
    ExitCode::SUCCESS
}

/// `mcpgate doctor`: 0 when nothing failed, 1 on a failed check, 2 when
/// the input is unusable.
async fn doctor(args: mcpgate::cli::DoctorArgs) -> ExitCode {
    use mcpgate::doctor::{self, config_lint, endpoint, render, token::ClientCredentials};
    let timeout = Duration::from_secs(args.timeout_secs.max(1));
    let register = !args.no_register;
    let report = async {
        if let Some(path) = &args.config {
            let cfg =
                config::load(Some(path)).map_err(|e| doctor::DoctorError::Config(e.to_string()))?;
            let target = format!("configuration {}", path.display());
            return config_lint::lint(
                &cfg,
                &target,
                &config_lint::LintOptions { timeout, register },
            )
            .await;
        }
        let mut stdin = std::io::stdin();
        let token = match &args.token {
            Some(from) => Some(doctor::read_secret_source("the token", from, &mut stdin)?),
            None => None,
        };
        let client_credentials = match &args.client_credentials {
            Some(from) => Some(ClientCredentials::parse(&doctor::read_secret_source(
                "client credentials",
                from,
                &mut stdin,
            )?)?),
            None => None,
        };
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        endpoint::check(&endpoint::EndpointOptions {
            url: args.url.clone().unwrap_or_default(),
            token,
            client_credentials,
            register,
            origin: args.origin.clone(),
            timeout,
            now,
        })
        .await
    }
    .await;
    match report {
        Ok(report) => {
            if args.json {
                println!("{}", render::json(&report));
            } else {
                print!("{}", render::text(&report));
            }
            if report.failed() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("mcpgate: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

async fn serve(
    cfg: config::Config,
    audit: Option<telemetry::audit::AuditSink>,
) -> anyhow::Result<()> {
    let app = App::build(&cfg).await?;
    if let Some(sink) = audit {
        reopen_on_sighup(sink);
    }
    // With audit lines on stdout, what is printed for the operator (the
    // first password) goes to stderr: stdout then feeds a collector.
    let to_operator = |text: String| {
        if cfg.telemetry.audit == telemetry::settings::AuditTarget::Stdout {
            say_err_raw!("{text}\n");
        } else {
            announce!("{text}");
        }
    };
    let listener = app::bind(cfg.listen).await?;
    let local = listener.local_addr()?;
    tracing::info!(
        listen = %local,
        mcp = %cfg.mcp_resource(),
        store = app.store.backend(),
        auth = cfg.auth.mode_name(),
        "mcpgate ready"
    );
    to_operator(format!(
        "mcpgate listening on http://{local}  (MCP endpoint: {})",
        cfg.mcp_resource()
    ));
    if let Some(password) = &app.initial_admin_password {
        // Printed once to the terminal, never logged.
        to_operator(format!(
            "created the first user: admin, one-time password: {password}\n  sign in when your MCP client opens {}/authorize; change it with: mcpgate users passwd admin",
            cfg.public_origin()
        ));
    }
    app.serve(listener, app::shutdown_signal()).await?;
    Ok(())
}

/// SIGHUP reopens the audit file (logrotate's `postrotate`); a renamed or
/// removed file is noticed without it too.
fn reopen_on_sighup(sink: telemetry::audit::AuditSink) {
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            return;
        };
        while hangups.recv().await.is_some() {
            tracing::info!("SIGHUP: reopening the audit file");
            sink.reopen();
        }
    });
    #[cfg(not(unix))]
    let _ = sink;
}

type AdminFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>> + 'a>>;

/// Run an administrative command against the configured store.
async fn admin(
    config: Option<std::path::PathBuf>,
    run: impl for<'a> FnOnce(&'a config::Config, &'a mcpgate::store::Store) -> AdminFuture<'a>,
) -> ExitCode {
    let cfg = match config::load(config.as_deref()) {
        Ok(cfg) => cfg,
        Err(e) => {
            say_err_raw!("mcpgate: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // The actions write audit events (target `audit`) to the configured log,
    // and to the audit file when there is one; an audit sink on stdout is
    // left to the server (a command's stdout is its own output).
    let audit = match &cfg.telemetry.audit {
        telemetry::settings::AuditTarget::File(_) => {
            match telemetry::audit::AuditSink::open(&cfg.telemetry.audit) {
                Ok(sink) => sink,
                Err(e) => {
                    say_err_raw!("mcpgate: telemetry.audit: {e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            }
        }
        _ => None,
    };
    telemetry::logs::init(&cfg.log, audit);
    let store = match mcpgate::store::Store::connect(&cfg.store.url, 2).await {
        Ok(s) => s,
        Err(e) => {
            say_err!("mcpgate: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = run(&cfg, &store).await;
    store.close().await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            say_err!("mcpgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn read_password(from_stdin: bool) -> anyhow::Result<String> {
    if !from_stdin {
        anyhow::bail!("pass --password-stdin and write the password to standard input");
    }
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

/// The administrative actions (shared with the admin console).
fn console(store: &mcpgate::store::Store) -> Admin {
    Admin::new(store.clone())
}

async fn users(
    _cfg: &config::Config,
    store: &mcpgate::store::Store,
    action: UsersAction,
) -> anyhow::Result<()> {
    match action {
        UsersAction::Add {
            name,
            password_stdin,
            admin: is_admin,
        } => {
            let password = read_password(password_stdin)?;
            console(store)
                .add_user(&Actor::cli(), &name, password, is_admin)
                .await?;
            if is_admin {
                out!("added user {name} (admin)");
            } else {
                out!("added user {name}");
            }
        }
        UsersAction::SetAdmin { name, revoke } => {
            console(store)
                .set_admin(&Actor::cli(), &name, !revoke)
                .await?;
            if revoke {
                out!("{name} may no longer use the admin console");
            } else {
                out!("{name} may use the admin console (/admin)");
            }
        }
        UsersAction::Disable { name } => {
            console(store)
                .set_disabled(&Actor::cli(), &name, true)
                .await?;
            out!(
                "disabled {name}; their sign-in sessions ended and their refresh tokens are revoked"
            );
        }
        UsersAction::Enable { name } => {
            console(store)
                .set_disabled(&Actor::cli(), &name, false)
                .await?;
            out!("enabled {name}");
        }
        UsersAction::List => {
            for user in store.list_users().await? {
                out!("{}", mcpgate::admin::user_line(&user));
            }
        }
        UsersAction::Remove { name } => {
            console(store).remove_user(&Actor::cli(), &name).await?;
            out!(
                "removed user {name}; their sign-in sessions and consents are gone and their refresh tokens revoked"
            );
        }
        UsersAction::Passwd {
            name,
            password_stdin,
        } => {
            let password = read_password(password_stdin)?;
            console(store)
                .reset_password(&Actor::cli(), &name, password)
                .await?;
            out!(
                "password changed for {name}; their sign-in sessions, remembered consents and refresh tokens are revoked"
            );
        }
    }
    Ok(())
}

/// `mcpgate funnel`: the attempts in the window, as text or JSON.
async fn funnel(
    store: &mcpgate::store::Store,
    client: Option<String>,
    since_secs: u64,
    limit: usize,
    json: bool,
) -> anyhow::Result<()> {
    let since = mcpgate::store::now_epoch() - i64::try_from(since_secs).unwrap_or(i64::MAX / 2);
    let attempts = store
        .funnel_attempts(client.as_deref(), since, limit)
        .await?;
    if json {
        out!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "since": since,
                "attempts": attempts,
            }))?
        );
    } else {
        out!("{}", mcpgate::funnel::render_text(&attempts).trim_end());
    }
    Ok(())
}

async fn clients(
    cfg: &config::Config,
    store: &mcpgate::store::Store,
    action: ClientsAction,
) -> anyhow::Result<()> {
    match action {
        ClientsAction::List { all: true } => {
            let configured = cfg
                .auth
                .local()
                .map(|local| local.clients.as_slice())
                .unwrap_or_default();
            let now = mcpgate::store::now_epoch();
            for client in console(store).clients(configured, now).await? {
                out!(
                    "{}\t{}\t{}\tlast used {}\tlive grants {}",
                    client.client_id,
                    client.name.as_deref().unwrap_or("-"),
                    client.kind.label(),
                    client
                        .last_used
                        .map(|t| t.to_string())
                        .unwrap_or_else(|| "-".to_owned()),
                    client.live_grants,
                );
            }
        }
        ClientsAction::RevokeGrants { client_id } => {
            let (consents, tokens) = console(store)
                .revoke_client_grants(&Actor::cli(), &client_id)
                .await?;
            out!(
                "{client_id}: {consents} remembered consents forgotten, {tokens} refresh tokens revoked"
            );
        }
        ClientsAction::List { all: false } => {
            for client in store.list_clients().await? {
                // Only the fields an operator recognises a client by; never the secret hash.
                let metadata: serde_json::Value =
                    serde_json::from_str(&client.metadata).unwrap_or_default();
                let name = metadata["client_name"].as_str().unwrap_or("-");
                let redirects = metadata["redirect_uris"]
                    .as_array()
                    .map(|uris| {
                        uris.iter()
                            .filter_map(|u| u.as_str())
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .unwrap_or_default();
                let last_used = client
                    .last_used_at
                    .map(|t| t.to_string())
                    .unwrap_or_else(|| "-".to_owned());
                out!(
                    "{}\t{name}\t{}\tcreated {}\tlast used {last_used}\t{redirects}",
                    client.client_id,
                    if client.secret_hash.is_some() {
                        "confidential"
                    } else {
                        "public"
                    },
                    client.created_at,
                );
            }
        }
        ClientsAction::Remove { client_id } => {
            console(store)
                .remove_client(&Actor::cli(), &client_id)
                .await?;
            out!(
                "removed client {client_id}; its consents are gone and its refresh tokens revoked"
            );
        }
    }
    Ok(())
}

async fn sessions(store: &mcpgate::store::Store, action: SessionsAction) -> anyhow::Result<()> {
    let now = mcpgate::store::now_epoch();
    match action {
        SessionsAction::List => {
            for session in store.live_mcp_sessions(now, i64::MAX).await? {
                out!("{}", mcpgate::admin::session_line(&session));
            }
        }
        SessionsAction::End { handle } => {
            console(store)
                .end_mcp_session(&Actor::cli(), &handle, now)
                .await?;
            out!("ended MCP session {handle} on every replica");
        }
    }
    Ok(())
}

async fn consents(store: &mcpgate::store::Store, action: ConsentsAction) -> anyhow::Result<()> {
    let user_id = |name: String| async move {
        match store.find_user_by_name(&name).await? {
            Some(user) => Ok(user.id),
            None => Err(anyhow::anyhow!("no user named {name}")),
        }
    };
    match action {
        ConsentsAction::List { user } => {
            for (client_id, scope, created_at) in store.consents_of(&user_id(user).await?).await? {
                out!("{client_id}\t{scope}\tgiven {created_at}");
            }
        }
        ConsentsAction::Revoke { user, client_id } => {
            let (remembered, revoked) = console(store)
                .revoke_consent(&Actor::cli(), &user, &client_id)
                .await?;
            out!(
                "revoked {user}'s grant to {client_id}: remembered consent {}, {revoked} refresh token(s) revoked; access tokens already issued stay valid until they expire",
                if remembered { "removed" } else { "none" }
            );
        }
        ConsentsAction::Grants { user } => {
            for grant in store.grants_of(&user_id(user).await?, unix_now()).await? {
                out!("{}", mcpgate::admin::grant_line(&grant));
            }
        }
        ConsentsAction::RevokeGrant { grant } => {
            let revoked = console(store)
                .revoke_grant(&Actor::cli(), &grant, unix_now())
                .await?;
            out!(
                "revoked grant {grant}: {revoked} refresh token(s); access tokens already issued stay valid until they expire"
            );
        }
    }
    Ok(())
}

/// `mcpgate connections list|revoke --user U [--upstream N]`.
async fn connections(
    cfg: &config::Config,
    store: &mcpgate::store::Store,
    action: ConnectionsAction,
) -> anyhow::Result<()> {
    use mcpgate::upstream::user_auth::admin;
    let auth = admin::open(&cfg.gateway, cfg.auth.local(), cfg.public_origin(), store)?;
    let lines = match action {
        ConnectionsAction::List { user } => admin::list(&auth, store, &user).await?,
        ConnectionsAction::Revoke { user, upstream } => {
            admin::revoke(&auth, store, &user, upstream).await?
        }
    };
    for line in lines {
        out!("{line}");
    }
    Ok(())
}

/// `[auth.local]`, for the key commands. Signing keys exist where mcpgate is
/// the authorization server: local, proxy, and auto when it decides proxy,
/// which is decided here from the IdP's discovery as at start.
async fn local_settings(cfg: &config::Config) -> anyhow::Result<&LocalAuthSettings> {
    let Some(local) = cfg.auth.local() else {
        anyhow::bail!(
            "signing keys exist only with auth.mode = \"local\", \"proxy\" or \"auto\" (when it decides proxy); this configuration has auth.mode = \"{}\"",
            cfg.auth.mode_name()
        );
    };
    if let AuthSettings::Auto { .. } = &cfg.auth {
        match cfg.auth.clone().resolve().await {
            Ok(ResolvedAuth::Proxy { .. }) => {}
            Ok(other) => anyhow::bail!(
                "auth.mode = \"auto\" decides \"{}\" from the identity provider's discovery, and that mode has no signing keys",
                other.mode_name()
            ),
            Err(e) => anyhow::bail!(
                "{e}; signing keys are used only when auto decides proxy, so it must be decided first"
            ),
        }
    }
    Ok(local)
}

async fn keys(
    cfg: &config::Config,
    store: &mcpgate::store::Store,
    action: KeysAction,
) -> anyhow::Result<()> {
    let local = &local_settings(cfg).await?;
    match action {
        KeysAction::List => {
            for key in store.all_signing_keys().await? {
                out!(
                    "{}\t{}\tactivates {}\tretires {}",
                    key.kid,
                    key.alg,
                    key.activate_at,
                    key.retire_at
                        .map(|t| t.to_string())
                        .unwrap_or_else(|| "-".to_owned())
                );
            }
        }
        KeysAction::Reseal => {
            let sealer = mcpgate::oauth::setup::sealer(local)?;
            let done = mcpgate::oauth::reseal::reseal_all(store, &sealer).await?;
            out!(
                "re-sealed {} value(s) under key {}; {} could not be opened by any configured key",
                done.resealed,
                sealer.key_id(),
                done.unreadable
            );
            if done.unreadable > 0 {
                anyhow::bail!(
                    "keep the old keys in previous_encryption_keys until nothing is unreadable"
                );
            }
        }
        KeysAction::Rotate => {
            let sealer = mcpgate::oauth::setup::sealer(local)?;
            let kid = console(store)
                .rotate_key(
                    &Actor::cli(),
                    &sealer,
                    local.access_token_ttl_secs as i64,
                    unix_now(),
                )
                .await?;
            out!(
                "added key {kid}; it signs in {} s, the others retire once their tokens expired",
                mcpgate::oauth::keys::ACTIVATION_DELAY_SECS
            );
        }
    }
    Ok(())
}
