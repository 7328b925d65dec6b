//! `mcpgate connect`: the built binary fills in the configured URL and
//! refuses an unknown client with exit 2.

use crate::config_cli::run;

#[test]
fn connect_fills_in_the_configured_mcp_url() {
    let (code, out, err) = run(
        &["connect", "vscode"],
        "listen = \"127.0.0.1:8123\"\npublic_url = \"https://mcp.example.com/\"\n",
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("\"url\":\"https://mcp.example.com/mcp\""),
        "{out}"
    );
    assert!(out.contains("code --add-mcp"), "{out}");
    assert!(out.contains("docs/clients.md#connect-vscode"), "{out}");
    assert!(!out.contains("{url}"), "{out}");
    assert!(!err.contains("warning"), "{err}");
}

#[test]
fn connect_warns_about_plain_http_off_loopback() {
    let (code, out, err) = run(&["connect", "claude", "http://mcp.example.com/mcp"], "");
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("claude mcp add --transport http mcpgate http://mcp.example.com/mcp"),
        "{out}"
    );
    assert!(err.contains("warning") && err.contains("https"), "{err}");
}

#[test]
fn connect_to_an_unknown_client_exits_2_naming_the_known_ones() {
    let (code, out, err) = run(&["connect", "netscape"], "");
    assert_eq!(code, 2, "{out}{err}");
    assert!(out.is_empty(), "{out}");
    for name in [
        "claude",
        "chatgpt",
        "vscode",
        "cursor",
        "mcp-remote",
        "inspector",
    ] {
        assert!(err.contains(name), "{err}");
    }
}
