//! `mcpgate connect CLIENT [URL]`: what to paste or click in each MCP
//! client, with this server's URL filled in, and what the user will see.
//!
//! The clients are one table of data ([`CLIENTS`]); `docs/clients.md` has a
//! section per row (anchor `connect-<name>`, same text with the example URL).
//! Nothing here prints: the command line renders a [`Guide`].

use url::Url;

/// The placeholder the table's texts carry for the MCP endpoint URL.
const URL_SLOT: &str = "{url}";

/// One client's instructions, with [`URL_SLOT`] where the URL goes.
#[derive(Debug)]
pub struct ClientGuide {
    /// The command-line name (`mcpgate connect NAME`), also the docs anchor's stem.
    pub name: &'static str,
    pub title: &'static str,
    /// What to paste or click, in order.
    pub steps: &'static [&'static str],
    /// What the user will see once the steps are done.
    pub sees: &'static str,
    /// The failure people meet most, with its fix.
    pub common_failure: &'static str,
}

pub const CLIENTS: &[ClientGuide] = &[
    ClientGuide {
        name: "claude",
        title: "Claude (claude.ai, Claude Desktop, Claude Code)",
        steps: &[
            "claude.ai and Claude Desktop: Settings → Connectors → Add custom connector; Name: mcpgate, Remote MCP server URL: {url}; click Add, then Connect.",
            "Claude Code: run `claude mcp add --transport http mcpgate {url}`, then type `/mcp` in a session and choose Authenticate.",
        ],
        sees: "A browser tab opens mcpgate's sign-in page (or your identity provider's), then mcpgate's consent page naming Claude; after Allow, the connector shows as connected and its tools are listed.",
        common_failure: "\"Couldn't connect\" or no sign-in page: claude.ai connects from Anthropic's servers, so the URL must be https and reachable from the internet; `mcpgate doctor {url}` shows which step fails.",
    },
    ClientGuide {
        name: "chatgpt",
        title: "ChatGPT (apps / connectors in Developer mode)",
        steps: &[
            "Settings → Apps & Connectors → Advanced settings: turn on Developer mode.",
            "Settings → Apps & Connectors → Create: Name: mcpgate, MCP Server URL: {url}, Authentication: OAuth; tick \"I trust this application\" and click Create.",
        ],
        sees: "ChatGPT registers itself by its client metadata document (CIMD, private_key_jwt); a window opens mcpgate's sign-in, then the consent page naming ChatGPT; after Allow, the app lists its tools and can be picked in a chat.",
        common_failure: "\"Error creating connector\": ChatGPT needs https reachable from the internet (`mcpgate doctor {url}`); \"connection expired\" every hour: raise `access_token_ttl_by_client.chatgpt` (see the access-token lifetime section of docs/clients.md).",
    },
    ClientGuide {
        name: "vscode",
        title: "VS Code (GitHub Copilot agent mode)",
        steps: &[
            "Command line: `code --add-mcp '{\"name\":\"mcpgate\",\"type\":\"http\",\"url\":\"{url}\"}'`.",
            "Or in the workspace file `.vscode/mcp.json`: `{\"servers\":{\"mcpgate\":{\"type\":\"http\",\"url\":\"{url}\"}}}`, then click Start above the server in that file.",
        ],
        sees: "VS Code asks to allow the server to authenticate; the browser opens mcpgate's sign-in and consent pages, returns to VS Code, and the tools appear in Copilot Chat's tool picker.",
        common_failure: "Stuck at \"Waiting for authentication\": the redirect back to VS Code was blocked; read MCP: List Servers → Show Output, and run `mcpgate doctor {url}`.",
    },
    ClientGuide {
        name: "cursor",
        title: "Cursor",
        steps: &[
            "In `~/.cursor/mcp.json` (or `.cursor/mcp.json` in a project): `{\"mcpServers\":{\"mcpgate\":{\"url\":\"{url}\"}}}`.",
            "Cursor Settings → Tools & Integrations (MCP): the server shows \"Needs login\"; click it.",
        ],
        sees: "Cursor registers itself at mcpgate's /register (dynamic client registration); the browser opens mcpgate's sign-in and consent pages, then hands back to Cursor through cursor://anysphere.cursor-mcp/oauth/callback; the server turns green with its tools listed.",
        common_failure: "\"Client registration failed\": Cursor only uses dynamic client registration, so it must be enabled in mcpgate; `mcpgate doctor {url}` checks it (the DCR row).",
    },
    ClientGuide {
        name: "mcp-remote",
        title: "mcp-remote (stdio bridge for clients without remote OAuth)",
        steps: &[
            "Try it: `npx -y mcp-remote {url}`.",
            "For a client configured by a stdio command (e.g. Claude Desktop's `claude_desktop_config.json`): `{\"mcpServers\":{\"mcpgate\":{\"command\":\"npx\",\"args\":[\"-y\",\"mcp-remote\",\"{url}\"]}}}`, then restart the client.",
        ],
        sees: "mcp-remote registers a client (dynamic registration), opens the browser at mcpgate's sign-in and consent pages, receives the code on a localhost port, then relays stdio to the server; tokens are cached in `~/.mcp-auth`.",
        common_failure: "A stale registration or token after the server's store was reset (\"invalid_client\"): delete `~/.mcp-auth` and run again.",
    },
    ClientGuide {
        name: "inspector",
        title: "MCP Inspector",
        steps: &[
            "UI: `npx @modelcontextprotocol/inspector`, then Transport Type: Streamable HTTP, URL: {url}, Connect (Open Auth Settings → Quick OAuth Flow shows each OAuth step).",
            "CLI (does not sign in; bring a token): `npx @modelcontextprotocol/inspector --cli {url} --transport http --method tools/list --header \"Authorization: Bearer $TOKEN\"`.",
        ],
        sees: "The UI opens mcpgate's sign-in and consent pages in a tab, comes back to the inspector's /oauth/callback, and lists the tools, resources and prompts.",
        common_failure: "A CORS error in the UI when connecting directly: allow the inspector's origin (http://localhost:6274) in mcpgate, or connect via the inspector's proxy.",
    },
];

/// A client's guide with the URL filled in.
#[derive(Debug, PartialEq, Eq)]
pub struct Guide {
    /// The client's table name (its docs anchor is [`anchor`] of it).
    pub name: &'static str,
    pub title: &'static str,
    pub url: String,
    pub steps: Vec<String>,
    pub sees: String,
    pub common_failure: String,
    /// Set when the URL is plain http off loopback.
    pub warning: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConnectError {
    #[error("unknown client {name:?}; known clients: {}", known_names().join(", "))]
    UnknownClient { name: String },
    #[error("{url:?} is not an http(s) URL ({reason})")]
    BadUrl { url: String, reason: String },
}

pub fn known_names() -> Vec<&'static str> {
    CLIENTS.iter().map(|c| c.name).collect()
}

pub fn find(name: &str) -> Result<&'static ClientGuide, ConnectError> {
    CLIENTS
        .iter()
        .find(|c| c.name.eq_ignore_ascii_case(name))
        .ok_or_else(|| ConnectError::UnknownClient {
            name: name.to_owned(),
        })
}

/// The guide for `client` with `url` filled in; the URL must be http(s).
pub fn guide(client: &str, url: &str) -> Result<Guide, ConnectError> {
    let client = find(client)?;
    let parsed = Url::parse(url).map_err(|e| ConnectError::BadUrl {
        url: url.to_owned(),
        reason: e.to_string(),
    })?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(ConnectError::BadUrl {
            url: url.to_owned(),
            reason: "the scheme must be http or https, with a host".to_owned(),
        });
    }
    let fill = |text: &str| text.replace(URL_SLOT, url);
    Ok(Guide {
        name: client.name,
        title: client.title,
        url: url.to_owned(),
        steps: client.steps.iter().map(|s| fill(s)).collect(),
        sees: fill(client.sees),
        common_failure: fill(client.common_failure),
        warning: plain_http_warning(&parsed),
    })
}

/// Hosted clients refuse plain http, and tokens would cross the network in clear.
fn plain_http_warning(url: &Url) -> Option<String> {
    let host = url.host_str()?;
    (url.scheme() == "http" && !crate::problems::is_loopback_host(host)).then(|| {
        format!(
            "{url} is plain http off loopback: ChatGPT and claude.ai refuse it and tokens would cross the network in clear; serve it over https (set public_url to the https origin)"
        )
    })
}

/// The docs anchor of a client's section in `docs/clients.md`.
pub fn anchor(name: &str) -> String {
    format!("connect-{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "https://mcp.example.com/mcp";

    #[test]
    fn every_client_fills_in_the_url() {
        for client in CLIENTS {
            let g = guide(client.name, EXAMPLE).unwrap();
            assert!(
                g.steps.iter().any(|s| s.contains(EXAMPLE)),
                "{}",
                client.name
            );
            let all = format!("{:?}", g);
            assert!(!all.contains(URL_SLOT), "{}: {all}", client.name);
            assert_eq!(g.warning, None);
        }
    }

    #[test]
    fn the_brief_clients_are_all_in_the_table() {
        assert_eq!(
            known_names(),
            [
                "claude",
                "chatgpt",
                "vscode",
                "cursor",
                "mcp-remote",
                "inspector"
            ]
        );
    }

    #[test]
    fn unknown_client_names_the_known_ones() {
        let e = guide("netscape", EXAMPLE).unwrap_err();
        assert_eq!(
            e,
            ConnectError::UnknownClient {
                name: "netscape".into()
            }
        );
        let text = e.to_string();
        for name in known_names() {
            assert!(text.contains(name), "{text}");
        }
    }

    #[test]
    fn plain_http_is_warned_off_loopback_only() {
        assert!(
            guide("claude", "http://mcp.example.com/mcp")
                .unwrap()
                .warning
                .is_some_and(|w| w.contains("https"))
        );
        for url in [
            "http://127.0.0.1:8000/mcp",
            "http://localhost:8000/mcp",
            "http://[::1]:8000/mcp",
            EXAMPLE,
        ] {
            assert_eq!(guide("claude", url).unwrap().warning, None, "{url}");
        }
    }

    #[test]
    fn garbage_urls_are_refused_not_filled_in() {
        for url in [
            "",
            "mcp.example.com/mcp",
            "ftp://x/mcp",
            "file:///etc/passwd",
        ] {
            assert!(
                matches!(guide("cursor", url), Err(ConnectError::BadUrl { .. })),
                "{url}"
            );
        }
    }

    /// Every client in the table has its section in docs/clients.md with the
    /// same steps, what the user sees and the common failure (example URL).
    #[test]
    fn every_client_has_its_section_in_the_docs() {
        let docs = include_str!("../../docs/clients.md");
        for client in CLIENTS {
            let tag = format!("<a id=\"{}\"></a>", anchor(client.name));
            let start = docs
                .find(&tag)
                .unwrap_or_else(|| panic!("docs/clients.md lacks {tag}"));
            let rest = &docs[start + tag.len()..];
            let section = &rest[..rest.find("<a id=\"connect-").unwrap_or(rest.len())];
            let g = guide(client.name, EXAMPLE).unwrap();
            for text in g.steps.iter().chain([&g.sees, &g.common_failure]) {
                assert!(
                    section.contains(text.as_str()),
                    "docs/clients.md#{} lacks: {text}",
                    anchor(client.name)
                );
            }
        }
    }
}
