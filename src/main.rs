use std::{process::ExitCode, time::Duration};

use clap::Parser;
use mcpgate::{
    app::{self, App},
    cli::{
        Cli, ClientsAction, Command, ConnectionsAction, ConsentsAction, KeysAction, TokenAction,
        UsersAction,
    },
    config::{self, AuthSettings, ResolvedAuth},
    oauth::settings::LocalAuthSettings,
    telemetry,
};

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
            TokenAction::Decode { token } => token_decode(&token),
            TokenAction::ClientCredentials(args) => token_client_credentials(args).await,
            TokenAction::Verify(args) => token_verify(args).await,
            TokenAction::Refresh(args) => token_refresh(args).await,
        },
        Command::Connect {
            client,
            url,
            config,
        } => connect(&client, url, config.as_deref()),
        Command::Users { config, action } => {
            admin(config, |cfg, store| Box::pin(users(cfg, store, action))).await
        }
        Command::Clients { config, action } => {
            admin(config, |_, store| Box::pin(clients(store, action))).await
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
            telemetry::logs::init(&cfg.log);
            match serve(cfg).await {
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

/// `mcpgate token decode FILE|-`: 0 with the header and claims on stdout,
/// 2 when the token cannot be read or is not a JWT.
fn token_decode(from: &str) -> ExitCode {
    use mcpgate::doctor::{read_secret_source, token};
    use secrecy::ExposeSecret as _;
    let decoded = read_secret_source("the token", from, &mut std::io::stdin())
        .map_err(|e| e.to_string())
        .and_then(|text| token::decode(text.expose_secret()).map_err(|e| e.to_string()));
    match decoded {
        Ok(jwt) => {
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            let lines = jwt.explain(now);
            let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
            for (name, value) in lines {
                out!("{name:width$}  {value}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            say_err!("mcpgate: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

/// A token command's error on stderr (with the hint for a token
/// endpoint's common errors) and its exit code: 1 refused, 2 unusable input.
fn token_failure(e: &mcpgate::token_tools::TokenToolError) -> ExitCode {
    say_err!("mcpgate: {e}");
    if let Some(hint) = e.hint() {
        say_err!("hint: {hint}");
    }
    ExitCode::from(e.exit_code())
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// `--scope a --scope "b c"` → `[a, b, c]`.
fn scope_words(scopes: &[String]) -> Vec<String> {
    scopes
        .iter()
        .flat_map(|s| s.split_whitespace())
        .map(str::to_owned)
        .collect()
}

/// The client of a token request, its secret or key read from a file or
/// stdin, and the token endpoint (given or discovered). `stdin_taken`: a
/// source that already reads stdin, which a second one may not.
async fn token_client(
    args: &mcpgate::cli::TokenClientArgs,
    stdin_taken: bool,
    http: &reqwest::Client,
) -> Result<(mcpgate::token_tools::grant::Client, String), mcpgate::token_tools::TokenToolError> {
    use mcpgate::{
        cli::SecretMethod,
        doctor::read_secret_source,
        token_tools::{
            TokenToolError,
            grant::{self, ClientAuth},
            signing_key::SigningKey,
        },
    };
    let sources = [&args.client_secret_file, &args.private_key_file];
    if stdin_taken && sources.iter().any(|s| s.as_deref() == Some("-")) {
        return Err(TokenToolError::Usage(
            "only one input can come from stdin (-): give the other as a file".to_owned(),
        ));
    }
    let mut stdin = std::io::stdin();
    let auth = if let Some(from) = &args.client_secret_file {
        let secret = read_secret_source("the client secret", from, &mut stdin)?;
        match args.client_auth {
            SecretMethod::Basic => ClientAuth::SecretBasic(secret),
            SecretMethod::Post => ClientAuth::SecretPost(secret),
        }
    } else if let Some(from) = &args.private_key_file {
        let text = read_secret_source("the private key", from, &mut stdin)?;
        ClientAuth::PrivateKeyJwt(SigningKey::parse(&text, args.key_id.clone())?)
    } else {
        ClientAuth::None
    };
    let endpoint = match (&args.token_endpoint, &args.issuer) {
        (Some(endpoint), _) => endpoint.clone(),
        (None, Some(issuer)) => grant::discover_token_endpoint(http, issuer).await?,
        (None, None) => {
            return Err(TokenToolError::Usage(
                "give --issuer URL (discovery) or --token-endpoint URL".to_owned(),
            ));
        }
    };
    let client = grant::Client {
        id: args.client_id.clone(),
        auth,
    };
    Ok((client, endpoint))
}

/// `mcpgate token client-credentials`: the access token alone on stdout
/// (or the response as JSON), what it is on stderr.
async fn token_client_credentials(args: mcpgate::cli::ClientCredentialsArgs) -> ExitCode {
    use mcpgate::token_tools::{TokenToolError, grant, http_client};
    use secrecy::ExposeSecret as _;
    let run = async {
        if args.client.client_secret_file.is_none() && args.client.private_key_file.is_none() {
            return Err(TokenToolError::Usage(
                "the client-credentials grant is for confidential clients: give --client-secret-file FILE|- or --private-key-file FILE|-".to_owned(),
            ));
        }
        let http = http_client(Duration::from_secs(args.client.timeout_secs.max(1)))?;
        let (client, endpoint) = token_client(&args.client, false, &http).await?;
        let target = grant::Target {
            resource: args.resource.clone(),
            scopes: scope_words(&args.scope),
            audience: args.audience.clone(),
        };
        let now = unix_now();
        let tokens = grant::client_credentials(&http, &endpoint, &client, &target, now).await?;
        Ok((tokens, endpoint, client, now))
    };
    match run.await {
        Ok((tokens, endpoint, client, now)) => {
            if args.json {
                out!("{}", token_json(&tokens, &endpoint, None));
            } else {
                out!("{}", tokens.access_token.expose_secret());
            }
            say_err!(
                "client {} ({}) got a token from {endpoint}",
                client.id,
                client.auth.method()
            );
            for line in grant::describe(&tokens, now) {
                say_err!("{line}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => token_failure(&e),
    }
}

/// A token response as `--json` prints it: the response, where it came
/// from, a JWT's claims, and whether the refresh token rotated.
fn token_json(
    tokens: &mcpgate::token_tools::grant::Tokens,
    endpoint: &str,
    rotated: Option<bool>,
) -> serde_json::Value {
    use secrecy::ExposeSecret as _;
    let claims = mcpgate::doctor::token::decode(tokens.access_token.expose_secret())
        .ok()
        .map(|jwt| serde_json::Value::Object(jwt.claims));
    let mut value = serde_json::json!({
        "token_endpoint": endpoint,
        "response": tokens.response,
        "claims": claims,
    });
    if let (Some(rotated), Some(map)) = (rotated, value.as_object_mut()) {
        map.insert("refresh_token_rotated".to_owned(), rotated.into());
    }
    value
}

/// `mcpgate token verify`: 0 valid, 1 a check failed, 2 unusable input.
async fn token_verify(args: mcpgate::cli::VerifyArgs) -> ExitCode {
    use mcpgate::{
        doctor::read_secret_source,
        token_tools::{TokenToolError, http_client, verify},
    };
    use secrecy::ExposeSecret as _;
    let run = async {
        let token = read_secret_source("the token", &args.token, &mut std::io::stdin())?;
        let http = http_client(Duration::from_secs(args.timeout_secs.max(1)))?;
        let scopes = scope_words(&args.scope);
        let expected = match (&args.config, &args.issuer) {
            (Some(path), _) => {
                let cfg = config::load(Some(path))
                    .map_err(|e| TokenToolError::Config(e.to_string().trim_end().to_owned()))?;
                verify::from_config(http, &cfg, scopes).await?
            }
            (None, Some(issuer)) => {
                verify::from_flags(http, issuer, args.audience.clone(), scopes).await?
            }
            (None, None) => {
                return Err(TokenToolError::Usage(
                    "give --config FILE or --issuer URL --audience URL".to_owned(),
                ));
            }
        };
        let findings = verify::verify(&expected, token.expose_secret(), unix_now()).await;
        Ok((expected, findings))
    };
    match run.await {
        Ok((expected, findings)) => {
            if args.json {
                out!("{}", verify::json(&expected, &findings));
            } else {
                out!("{}", verify::text(&expected, &findings).trim_end());
            }
            if verify::valid(&findings) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => token_failure(&e),
    }
}

/// `mcpgate token refresh`: the new access token on stdout's first line,
/// the new refresh token on the second (or in `--refresh-token-out`).
async fn token_refresh(args: mcpgate::cli::RefreshArgs) -> ExitCode {
    use mcpgate::{
        doctor::read_secret_source,
        token_tools::{TokenToolError, grant, http_client},
    };
    use secrecy::ExposeSecret as _;
    let run = async {
        let old = read_secret_source(
            "the refresh token",
            &args.refresh_token_file,
            &mut std::io::stdin(),
        )?;
        let http = http_client(Duration::from_secs(args.client.timeout_secs.max(1)))?;
        let (client, endpoint) =
            token_client(&args.client, args.refresh_token_file == "-", &http).await?;
        let target = grant::Target {
            resource: args.resource.clone(),
            scopes: scope_words(&args.scope),
            audience: None,
        };
        let now = unix_now();
        let tokens = grant::refresh(&http, &endpoint, &client, &old, &target, now).await?;
        let rotated = tokens
            .refresh_token
            .as_ref()
            .is_some_and(|new| new.expose_secret() != old.expose_secret());
        if let (Some(path), Some(new)) = (&args.refresh_token_out, &tokens.refresh_token) {
            write_private_file(path, new.expose_secret()).map_err(|e| {
                TokenToolError::Input(format!(
                    "cannot write the new refresh token to {}: {e}",
                    path.display()
                ))
            })?;
        }
        Ok((tokens, endpoint, client, rotated, now))
    };
    match run.await {
        Ok((tokens, endpoint, client, rotated, now)) => {
            if args.json {
                out!("{}", token_json(&tokens, &endpoint, Some(rotated)));
            } else {
                out!("{}", tokens.access_token.expose_secret());
                if let (None, Some(new)) = (&args.refresh_token_out, &tokens.refresh_token) {
                    out!("{}", new.expose_secret());
                }
            }
            say_err!(
                "client {} ({}) refreshed at {endpoint}",
                client.id,
                client.auth.method()
            );
            for line in grant::describe(&tokens, now) {
                say_err!("{line}");
            }
            let place = match (&args.refresh_token_out, args.json) {
                (Some(path), _) => format!("written to {}", path.display()),
                (None, true) => "in the JSON's response.refresh_token".to_owned(),
                (None, false) => "on stdout's second line".to_owned(),
            };
            match (&tokens.refresh_token, rotated) {
                (Some(_), true) => say_err!(
                    "the refresh token rotated: the new one is {place}; the old one is now dead (after the server's grace period for a retry, if any, using it fails and may revoke the whole grant as a replay)"
                ),
                (Some(_), false) => say_err!(
                    "the refresh token did not rotate: the server sent the same one back; keep using it"
                ),
                (None, _) => say_err!(
                    "no new refresh token: the server does not rotate, keep the one you have"
                ),
            }
            ExitCode::SUCCESS
        }
        Err(e) => token_failure(&e),
    }
}

/// Write a secret to a file only its owner may read.
fn write_private_file(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    // An existing file keeps its mode on open: narrow it before writing.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")
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

async fn serve(cfg: config::Config) -> anyhow::Result<()> {
    let app = App::build(&cfg).await?;
    let listener = app::bind(cfg.listen).await?;
    let local = listener.local_addr()?;
    tracing::info!(
        listen = %local,
        mcp = %cfg.mcp_resource(),
        store = app.store.backend(),
        auth = cfg.auth.mode_name(),
        "mcpgate ready"
    );
    announce!(
        "mcpgate listening on http://{local}  (MCP endpoint: {})",
        cfg.mcp_resource()
    );
    if let Some(password) = &app.initial_admin_password {
        // Printed once to the terminal, never logged.
        announce!(
            "created the first user: admin, one-time password: {password}\n  sign in when your MCP client opens {}/authorize; change it with: mcpgate users passwd admin",
            cfg.public_origin()
        );
    }
    app.serve(listener, app::shutdown_signal()).await?;
    Ok(())
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

async fn hash(password: String) -> anyhow::Result<String> {
    Ok(
        tokio::task::spawn_blocking(move || mcpgate::oauth::passwords::hash_password(&password))
            .await??,
    )
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
        } => {
            if name.is_empty()
                || name.len() > 100
                || name.chars().any(|c| c.is_control() || c.is_whitespace())
            {
                anyhow::bail!("user names are 1 to 100 characters without spaces");
            }
            let hash = hash(read_password(password_stdin)?).await?;
            store.create_user(&name, &hash).await?;
            out!("added user {name}");
        }
        UsersAction::List => {
            for user in store.list_users().await? {
                out!(
                    "{}\t{}\tcreated {}",
                    user.username,
                    user.id,
                    user.created_at
                );
            }
        }
        UsersAction::Remove { name } => {
            if !store.delete_user(&name).await? {
                anyhow::bail!("no user named {name}");
            }
            out!(
                "removed user {name}; their sign-in sessions and consents are gone and their refresh tokens revoked"
            );
        }
        UsersAction::Passwd {
            name,
            password_stdin,
        } => {
            let hash = hash(read_password(password_stdin)?).await?;
            if !store.set_password(&name, &hash).await? {
                anyhow::bail!("no local user named {name}");
            }
            out!(
                "password changed for {name}; their sign-in sessions, remembered consents and refresh tokens are revoked"
            );
        }
    }
    Ok(())
}

async fn clients(store: &mcpgate::store::Store, action: ClientsAction) -> anyhow::Result<()> {
    match action {
        ClientsAction::List => {
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
            if !store.delete_client(&client_id).await? {
                anyhow::bail!("no registered client {client_id}");
            }
            out!(
                "removed client {client_id}; its consents are gone and its refresh tokens revoked"
            );
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
            let (remembered, revoked) = store
                .revoke_consent(&user_id(user.clone()).await?, &client_id)
                .await?;
            if !remembered && revoked == 0 {
                anyhow::bail!(
                    "{user} has neither a remembered consent nor live tokens for {client_id}"
                );
            }
            out!(
                "revoked {user}'s grant to {client_id}: remembered consent {}, {revoked} refresh token(s) revoked; access tokens already issued stay valid until they expire",
                if remembered { "removed" } else { "none" }
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
            let kid =
                mcpgate::oauth::keys::rotate(store, &sealer, local.access_token_ttl_secs as i64)
                    .await?;
            out!(
                "added key {kid}; it signs in {} s, the others retire once their tokens expired",
                mcpgate::oauth::keys::ACTIVATION_DELAY_SECS
            );
        }
    }
    Ok(())
}
