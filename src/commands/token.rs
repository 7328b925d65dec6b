//! `mcpgate token`: decode, client-credentials, verify, refresh. The work
//! is `mcpgate::token_tools` and `mcpgate::doctor::token`; this is the
//! printing and the exit codes.

use std::{process::ExitCode, time::Duration};

use mcpgate::config;

use crate::{EXIT_CONFIG, print_line, unix_now};

/// `mcpgate token decode FILE|-`: 0 with the header and claims on stdout,
/// 2 when the token cannot be read or is not a JWT.
pub(crate) fn decode(from: &str) -> ExitCode {
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
pub(crate) async fn client_credentials(args: mcpgate::cli::ClientCredentialsArgs) -> ExitCode {
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
pub(crate) async fn verify(args: mcpgate::cli::VerifyArgs) -> ExitCode {
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
pub(crate) async fn refresh(args: mcpgate::cli::RefreshArgs) -> ExitCode {
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
