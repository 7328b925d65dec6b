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
