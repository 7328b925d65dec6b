//! `mcpgate token decode`: the built binary reads the token from a file or
//! stdin (never argv), prints header and claims, and exits 2 on garbage.

use std::{io::Write as _, process::Command, process::Stdio};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};

const BIN: &str = env!("CARGO_BIN_EXE_mcpgate");

fn decode(from: &str, stdin: &str) -> (i32, String, String) {
    let mut child = Command::new(BIN)
        .args(["token", "decode", from])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn jwt() -> String {
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","kid":"k1"}"#);
    let claims = URL_SAFE_NO_PAD
        .encode(r#"{"iss":"https://idp.example","aud":"https://mcp.example.com/mcp","exp":1}"#);
    format!("{header}.{claims}.c2ln")
}

#[test]
fn token_decode_prints_header_and_claims_from_stdin_and_from_a_file() {
    let (code, out, err) = decode("-", &format!("{}\n", jwt()));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("header.alg") && out.contains("RS256"), "{out}");
    assert!(out.contains("https://mcp.example.com/mcp"), "{out}");
    assert!(out.contains("ago"), "exp in words: {out}");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, jwt()).unwrap();
    let (code, from_file, err) = decode(path.to_str().unwrap(), "");
    assert_eq!(code, 0, "{err}");
    assert_eq!(from_file, out);
}

#[test]
fn token_decode_exits_2_on_garbage_naming_the_cause() {
    for garbage in ["", "opaque-token", "a.b.c", "\u{0}\u{ff}..", "..."] {
        let (code, out, err) = decode("-", garbage);
        assert_eq!(code, 2, "{garbage:?}: {out}{err}");
        assert!(out.is_empty(), "{out}");
        assert!(
            err.contains("not a JWT") || err.contains("base64url") || err.contains("empty"),
            "{garbage:?}: {err}"
        );
    }
    let (code, _, err) = decode("/nonexistent/token", "");
    assert_eq!(code, 2);
    assert!(err.contains("cannot read the token"), "{err}");
}

// ---------------------------------------------------------------------------
// client-credentials, verify and refresh against a running mcpgate in local
// mode (it issues JWTs; `[[auth.local.clients]]` are its machine clients).

mod against_local_mode {
    use std::{path::Path, sync::Arc};

    use mcpgate::{
        clock::{Clock, SystemClock},
        oauth::configured_clients::RawConfiguredClient,
    };
    use reqwest::StatusCode;
    use serde_json::Value;

    use crate::{
        common::{TestServer, sqlite_url},
        local_auth::{local, local_on_clock},
        oauth_browser::{
            Browser, REDIRECT, authorize_url, exchange_code, pkce, public_client, query_of,
            sign_in_and_approve,
        },
    };

    const SECRET: &str = "cli-machine-secret-0123456789abcdef";

    struct Run {
        code: i32,
        out: String,
        err: String,
    }

    /// The binary with `args` and `stdin`, off the runtime's threads (the
    /// server it talks to runs on them), without MCPGATE_* from the environment.
    async fn run(args: Vec<String>, stdin: String) -> Run {
        tokio::task::spawn_blocking(move || {
            use std::io::Write as _;
            let mut command = std::process::Command::new(super::BIN);
            command
                .args(&args)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            for (key, _) in std::env::vars() {
                if key.starts_with("MCPGATE_") {
                    command.env_remove(key);
                }
            }
            let mut child = command.spawn().unwrap();
            child
                .stdin
                .take()
                .unwrap()
                .write_all(stdin.as_bytes())
                .unwrap();
            let output = child.wait_with_output().unwrap();
            Run {
                code: output.status.code().unwrap_or(-1),
                out: String::from_utf8_lossy(&output.stdout).into_owned(),
                err: String::from_utf8_lossy(&output.stderr).into_owned(),
            }
        })
        .await
        .unwrap()
    }

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    fn machine(id: &str) -> RawConfiguredClient {
        RawConfiguredClient {
            client_id: id.to_owned(),
            client_secret: Some(SECRET.to_owned()),
            ..RawConfiguredClient::default()
        }
    }

    /// The test's RSA key (src/token_tools/testdata), private and public halves.
    fn rsa_key() -> (String, String) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/token_tools/testdata/rsa-private.jwk.json");
        let private = std::fs::read_to_string(path).unwrap();
        let jwk: Value = serde_json::from_str(&private).unwrap();
        let public = serde_json::json!({"keys": [{
            "kty": "RSA", "kid": jwk["kid"], "alg": "RS256", "use": "sig",
            "n": jwk["n"], "e": jwk["e"],
        }]});
        (private, public.to_string())
    }

    async fn client_credentials(server: &TestServer, id: &str, secret: &str) -> Run {
        run(
            args(&[
                "token",
                "client-credentials",
                "--issuer",
                &server.base,
                "--client-id",
                id,
                "--client-secret-file",
                "-",
                "--resource",
                &server.url("/mcp"),
            ]),
            format!("{secret}\n"),
        )
        .await
    }

    /// A configuration file for `verify --config`: this server's mode and URL.
    fn config_file(server: &TestServer) -> String {
        let path = server.data_dir().join("verify.toml");
        std::fs::write(
            &path,
            format!(
                "public_url = {:?}\ndata_dir = {:?}\n[store]\nurl = {:?}\n[auth]\nmode = \"local\"\n[auth.local]\n",
                server.base,
                server.data_dir().display().to_string(),
                sqlite_url(server.data_dir()),
            ),
        )
        .unwrap();
        path.display().to_string()
    }

    async fn verify(token: &str, extra: &[&str]) -> Run {
        let mut list = args(&["token", "verify", "-"]);
        list.extend(extra.iter().map(|s| (*s).to_owned()));
        run(list, token.to_owned()).await
    }

    #[tokio::test]
    async fn client_credentials_prints_the_token_alone_and_names_a_refusal() {
        let (private, public) = rsa_key();
        let server = local(|l| {
            l.clients = vec![
                machine("ci-bot"),
                RawConfiguredClient {
                    client_id: "key-bot".to_owned(),
                    jwks: Some(public),
                    ..RawConfiguredClient::default()
                },
            ];
        })
        .await;
        let ok = client_credentials(&server, "ci-bot", SECRET).await;
        assert_eq!(ok.code, 0, "{}", ok.err);
        let token = ok.out.trim_end();
        assert_eq!(ok.out.lines().count(), 1, "the token alone: {}", ok.out);
        assert_eq!(token.split('.').count(), 3, "{token}");
        // The explanation says what it is, never the token itself.
        assert!(ok.err.contains("client_secret_basic"), "{}", ok.err);
        assert!(ok.err.contains("Bearer token, expires in"), "{}", ok.err);
        assert!(ok.err.contains(&server.url("/mcp")), "aud: {}", ok.err);
        assert!(!ok.err.contains(token), "{}", ok.err);
        // It works on /mcp.
        server.set_token(token);
        let (status, _) = server
            .stateless_call(1, "tools/list", None, serde_json::json!({}))
            .await;
        assert_eq!(status, 200);

        let wrong = client_credentials(&server, "ci-bot", "not-the-secret").await;
        assert_eq!(wrong.code, 1, "{}{}", wrong.out, wrong.err);
        assert!(wrong.out.is_empty(), "{}", wrong.out);
        assert!(wrong.err.contains("invalid_client"), "{}", wrong.err);
        assert!(
            wrong.err.contains("hint: the client id is unknown"),
            "{}",
            wrong.err
        );
        assert!(!wrong.err.contains("not-the-secret"), "{}", wrong.err);

        // private_key_jwt with a JWK, and --json.
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("key.jwk");
        std::fs::write(&key_file, private).unwrap();
        let signed = run(
            args(&[
                "token",
                "client-credentials",
                "--token-endpoint",
                &server.url("/token"),
                "--client-id",
                "key-bot",
                "--private-key-file",
                key_file.to_str().unwrap(),
                "--scope",
                "calc",
                "--json",
            ]),
            String::new(),
        )
        .await;
        assert_eq!(signed.code, 0, "{}", signed.err);
        let answer: Value = serde_json::from_str(&signed.out).unwrap();
        assert_eq!(answer["response"]["scope"], "calc", "{answer}");
        assert_eq!(answer["claims"]["client_id"], "key-bot", "{answer}");
        assert!(signed.err.contains("private_key_jwt"), "{}", signed.err);

        // Garbage in: usage errors, exit 2, no panic.
        let garbage = run(
            args(&[
                "token",
                "client-credentials",
                "--issuer",
                &server.base,
                "--client-id",
                "key-bot",
                "--private-key-file",
                "-",
            ]),
            "\u{0}not a key".to_owned(),
        )
        .await;
        assert_eq!(garbage.code, 2, "{}", garbage.err);
        assert!(garbage.err.contains("the private key"), "{}", garbage.err);
        let no_secret = run(
            args(&[
                "token",
                "client-credentials",
                "--issuer",
                &server.base,
                "--client-id",
                "ci-bot",
            ]),
            String::new(),
        )
        .await;
        assert_eq!(no_secret.code, 2, "{}", no_secret.err);
        assert!(
            no_secret.err.contains("--client-secret-file"),
            "{}",
            no_secret.err
        );
    }

    #[tokio::test]
    async fn verify_passes_a_good_token_and_names_aud_and_missing_scopes() {
        let server = local(|l| l.clients = vec![machine("ci-bot")]).await;
        let token = client_credentials(&server, "ci-bot", SECRET).await.out;
        let token = token.trim_end();

        // As the configured mode checks it: mcpgate is the issuer.
        let config = config_file(&server);
        let ok = verify(token, &["--config", &config]).await;
        assert_eq!(ok.code, 0, "{}{}", ok.out, ok.err);
        for check in ["signature", "iss", "aud", "exp", "scope"] {
            assert!(
                ok.out
                    .lines()
                    .any(|l| l.starts_with("pass") && l.contains(check)),
                "{check}: {}",
                ok.out
            );
        }
        assert!(ok.out.contains("mcpgate is the issuer"), "{}", ok.out);
        assert!(ok.out.contains("expires in"), "{}", ok.out);

        // From flags, another audience: the aud check fails and names both.
        let other = "https://other.example/mcp";
        let aud = verify(
            token,
            &["--issuer", &server.base, "--audience", other, "--json"],
        )
        .await;
        assert_eq!(aud.code, 1, "{}{}", aud.out, aud.err);
        let verdict: Value = serde_json::from_str(&aud.out).unwrap();
        assert_eq!(verdict["valid"], false);
        let finding = &verdict["findings"][0];
        assert_eq!(finding["check"], "aud", "{verdict}");
        assert_eq!(finding["outcome"], "fail");
        let summary = finding["summary"].as_str().unwrap();
        assert!(
            summary.contains(&server.url("/mcp")) && summary.contains(other),
            "{summary}"
        );
        assert_eq!(finding["docs"], "docs/guide/tokens.md#verify-aud");

        // A token restricted to calc, checked for notes:write.
        let narrow = run(
            args(&[
                "token",
                "client-credentials",
                "--issuer",
                &server.base,
                "--client-id",
                "ci-bot",
                "--client-secret-file",
                "-",
                "--scope",
                "calc",
            ]),
            SECRET.to_owned(),
        )
        .await;
        assert_eq!(narrow.code, 0, "{}", narrow.err);
        let scope = verify(
            narrow.out.trim_end(),
            &[
                "--issuer",
                &server.base,
                "--audience",
                &server.url("/mcp"),
                "--scope",
                "notes:write",
            ],
        )
        .await;
        assert_eq!(scope.code, 1, "{}{}", scope.out, scope.err);
        let line = scope
            .out
            .lines()
            .find(|l| l.starts_with("FAIL"))
            .unwrap_or_default();
        assert!(
            line.contains("scope") && line.contains("notes:write") && line.contains("calc"),
            "{}",
            scope.out
        );
        // With --config the advertised scopes it lacks are a warning only.
        let advertised = verify(narrow.out.trim_end(), &["--config", &config]).await;
        assert_eq!(advertised.code, 0, "{}", advertised.out);
        assert!(advertised.out.contains("warn  scope"), "{}", advertised.out);

        // A token altered after signing: the signature check fails.
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let flipped = if parts[2].as_bytes()[10] == b'A' {
            "B"
        } else {
            "A"
        };
        parts[2].replace_range(10..11, flipped);
        let forged = verify(&parts.join("."), &["--config", &config]).await;
        assert_eq!(forged.code, 1, "{}", forged.out);
        assert!(forged.out.contains("FAIL  signature"), "{}", forged.out);

        // Garbage and unusable input: exit 2 naming the cause, or a failed format check.
        let opaque = verify("opaque-token", &["--config", &config]).await;
        assert_eq!(opaque.code, 1, "{}{}", opaque.out, opaque.err);
        assert!(opaque.out.contains("FAIL  format"), "{}", opaque.out);
        let no_audience = verify(token, &["--issuer", &server.base]).await;
        assert_eq!(no_audience.code, 2, "{}", no_audience.err);
        assert!(
            no_audience.err.contains("--audience"),
            "{}",
            no_audience.err
        );
        let unreachable = verify(
            token,
            &["--issuer", "http://127.0.0.1:9", "--audience", other],
        )
        .await;
        assert_eq!(unreachable.code, 2, "{}", unreachable.err);
        assert!(
            unreachable
                .err
                .contains("cannot discover the authorization server"),
            "{}",
            unreachable.err
        );
    }

    /// The real time two hours ago: the server's tokens are expired on arrival.
    #[derive(Debug)]
    struct TwoHoursAgo;

    impl Clock for TwoHoursAgo {
        fn now(&self) -> i64 {
            SystemClock.now() - 7200
        }
        fn instant(&self) -> std::time::Instant {
            std::time::Instant::now()
        }
    }

    #[tokio::test]
    async fn verify_names_an_expired_token_with_the_time_in_words() {
        let server = local_on_clock(
            |l| l.clients = vec![machine("ci-bot")],
            Arc::new(TwoHoursAgo),
        )
        .await;
        let got = client_credentials(&server, "ci-bot", SECRET).await;
        assert_eq!(got.code, 0, "{}", got.err);
        let expired = verify(got.out.trim_end(), &["--config", &config_file(&server)]).await;
        assert_eq!(expired.code, 1, "{}{}", expired.out, expired.err);
        let line = expired
            .out
            .lines()
            .find(|l| l.starts_with("FAIL"))
            .unwrap_or_default();
        // Issued two hours ago for an hour: expired about an hour ago.
        assert!(
            line.contains("exp") && line.contains("ago"),
            "{}",
            expired.out
        );
        assert!(line.contains("UTC"), "{line}");
    }

    #[tokio::test]
    async fn refresh_prints_the_new_tokens_and_says_the_old_refresh_token_is_dead() {
        // No grace for a retried refresh: the old token is dead once the
        // second of its rotation is past (the clock is moved, not waited for).
        let clock = mcpgate::clock::ManualClock::new();
        let server = local_on_clock(|l| l.refresh_reuse_grace_secs = Some(0), clock.clone()).await;
        let client_id = public_client(&server).await;
        let (verifier, challenge) = pkce();
        let authorize = authorize_url(&server, &client_id, &challenge, REDIRECT);
        let password = server.admin_password.clone().unwrap();
        let back = sign_in_and_approve(
            &server,
            &mut Browser::default(),
            &authorize,
            ("admin", &password),
            &[],
        )
        .await;
        let code = query_of(&back)["code"].clone();
        let (status, first) = exchange_code(&server, &client_id, &code, &verifier).await;
        assert_eq!(status, StatusCode::OK, "{first}");
        let old = first["refresh_token"].as_str().unwrap().to_owned();

        let refresh = |from: String| {
            run(
                args(&[
                    "token",
                    "refresh",
                    "--issuer",
                    &server.base,
                    "--client-id",
                    &client_id,
                    "--refresh-token-file",
                    "-",
                ]),
                from,
            )
        };
        let fresh = refresh(format!("{old}\n")).await;
        assert_eq!(fresh.code, 0, "{}", fresh.err);
        let lines: Vec<&str> = fresh.out.lines().collect();
        assert_eq!(lines.len(), 2, "{}", fresh.out);
        assert_eq!(lines[0].split('.').count(), 3, "an access token first");
        assert_ne!(lines[1], old, "a new refresh token second");
        assert!(
            fresh.err.contains("rotated") && fresh.err.contains("old one is now dead"),
            "{}",
            fresh.err
        );
        for secret in [lines[0], lines[1], old.as_str()] {
            assert!(!fresh.err.contains(secret), "{}", fresh.err);
        }
        // The new refresh token works; the old one is refused with the hint.
        let dir = tempfile::tempdir().unwrap();
        let saved = dir.path().join("refresh");
        std::fs::write(&saved, lines[1]).unwrap();
        let again = run(
            args(&[
                "token",
                "refresh",
                "--token-endpoint",
                &server.url("/token"),
                "--client-id",
                &client_id,
                "--refresh-token-file",
                saved.to_str().unwrap(),
                "--refresh-token-out",
                saved.to_str().unwrap(),
            ]),
            String::new(),
        )
        .await;
        assert_eq!(again.code, 0, "{}", again.err);
        assert_eq!(again.out.lines().count(), 1, "{}", again.out);
        let rotated = std::fs::read_to_string(&saved).unwrap();
        assert_ne!(rotated.trim(), lines[1]);
        assert!(
            again.err.contains(&saved.display().to_string()),
            "{}",
            again.err
        );
        clock.advance(std::time::Duration::from_secs(2));
        let dead = refresh(old.clone()).await;
        assert_eq!(dead.code, 1, "{}{}", dead.out, dead.err);
        assert!(dead.err.contains("invalid_grant"), "{}", dead.err);
        assert!(dead.err.contains("hint: the refresh token"), "{}", dead.err);
    }
}
