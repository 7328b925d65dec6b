use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_mcpgate");

pub fn run(args: &[&str], config: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mcpgate.toml");
    std::fs::write(&path, config).unwrap();
    let mut command = Command::new(BIN);
    command
        .args(args)
        .arg("--config")
        .arg(&path)
        .current_dir(dir.path());
    for (key, _) in std::env::vars() {
        if key.starts_with("MCPGATE_") {
            command.env_remove(key);
        }
    }
    let output = command.output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn bad_config_exits_2_listing_every_problem() {
    let (code, _, err) = run(
        &["serve"],
        "listen = \"0.0.0.0:99999\"\n[store]\nurl = \"redis://x\"\n[auth]\nmode = \"sometimes\"\n[log]\nformat = \"yaml\"\n",
    );
    assert_eq!(code, 2, "{err}");
    for key in ["listen:", "store.url:", "auth.mode:", "log.format:"] {
        assert!(err.contains(key), "{key} missing: {err}");
    }
}

#[test]
fn auth_none_off_loopback_is_refused_with_the_reason() {
    let (code, _, err) = run(
        &["check-config"],
        "listen = \"0.0.0.0:8000\"\npublic_url = \"https://mcp.example.com\"\n[auth]\nmode = \"none\"\n",
    );
    assert_eq!(code, 2);
    assert!(
        err.contains("loopback") && err.contains("without authentication"),
        "{err}"
    );
}

#[test]
fn check_config_prints_the_effective_config_redacted() {
    let (code, out, err) = run(
        &["check-config"],
        "listen = \"127.0.0.1:8123\"\n[store]\nurl = \"postgres://mcp:hunter2@127.0.0.1:1/db\"\n",
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("127.0.0.1:8123"), "{out}");
    assert!(
        out.contains("mcp_resource") || out.contains("public_url"),
        "{out}"
    );
    assert!(!out.contains("hunter2"), "secret printed: {out}");
    assert!(out.contains("***"), "{out}");
}

#[test]
fn unreachable_store_at_start_is_a_clear_failure() {
    // Port 1 on loopback: nothing listens there.
    let (code, _, err) = run(
        &["serve"],
        "listen = \"127.0.0.1:0\"\n[store]\nurl = \"postgres://mcp:hunter2@127.0.0.1:1/db\"\n",
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot open the store"), "{err}");
    assert!(!err.contains("hunter2"), "secret in error: {err}");
}

#[test]
fn version_flag() {
    let output = Command::new(BIN).arg("--version").output().unwrap();
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains(env!("CARGO_PKG_VERSION")));
}

/// `mcpgate healthcheck` with `config` as its configuration file.
async fn healthcheck(extra: &[&str], config: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mcpgate.toml");
    std::fs::write(&path, config).unwrap();
    let mut command = tokio::process::Command::new(BIN);
    command
        .arg("healthcheck")
        .args(extra)
        .arg("--config")
        .arg(&path)
        .current_dir(dir.path());
    for (key, _) in std::env::vars() {
        if key.starts_with("MCPGATE_") {
            command.env_remove(key);
        }
    }
    let output = command.output().await.unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn healthcheck_probes_the_configured_listen_address() {
    let server = crate::common::TestServer::start().await;
    let port = server.url("").rsplit(':').next().unwrap().to_owned();
    let (code, err) = healthcheck(&[], &format!("listen = \"127.0.0.1:{port}\"\n")).await;
    assert_eq!(code, 0, "{err}");
    // A container listens on every interface; the probe goes to loopback.
    // Only `listen` is read: without public_url this file would not serve.
    let (code, err) = healthcheck(&[], &format!("listen = \"0.0.0.0:{port}\"\n")).await;
    assert_eq!(code, 0, "{err}");
}

#[tokio::test]
async fn healthcheck_fails_with_exit_1_naming_the_cause() {
    let server = crate::common::TestServer::start().await;
    let missing = server.url("/no-such-route");
    let (code, err) = healthcheck(&["--url", &missing], "").await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("answered 404"), "{err}");

    // Port 1 on loopback: nothing listens there.
    let (code, err) = healthcheck(&[], "listen = \"127.0.0.1:1\"\n").await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("cannot reach http://127.0.0.1:1/healthz"),
        "{err}"
    );

    let (code, err) = healthcheck(&["--url", "https://127.0.0.1:1/healthz"], "").await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not an http:// URL"), "{err}");

    // A broken listen address is unhealthy too, never Docker's reserved 2.
    let (code, err) = healthcheck(&[], "listen = \"nowhere\"\n").await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("listen: \"nowhere\""), "{err}");
    let (code, err) = healthcheck(&[], "listen = [\n").await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("listen:"), "{err}");
}

/// Output into a pipe whose reader has gone (`mcpgate check-config | head -1`
/// once head has exited) ends the command quietly: 141 like other Unix tools
/// stopped by a closed pipe, no panic message.
#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mcpgate.toml");
    std::fs::write(&path, "listen = \"127.0.0.1:8123\"\n").unwrap();
    let (reader, writer) = std::io::pipe().unwrap();
    // The reader is gone before mcpgate writes its first byte.
    drop(reader);
    let mut command = Command::new(BIN);
    command
        .args(["check-config", "--config"])
        .arg(&path)
        .current_dir(dir.path())
        .stdout(writer);
    for (key, _) in std::env::vars() {
        if key.starts_with("MCPGATE_") {
            command.env_remove(key);
        }
    }
    let output = command.output().unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.is_empty(), "{err}");
    assert_eq!(output.status.code(), Some(141), "{err}");
}
