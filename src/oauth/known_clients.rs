//! The MCP clients people use, as data: how mcpgate recognises each one and
//! what is special about it (see docs/clients.md). The flows stay generic;
//! this table only names a client (for logs and per-client settings such as
//! `[auth.local.access_token_ttl_by_client]`).

use super::flow::Client;

/// One known client: how it is recognised, what it does differently.
#[derive(Debug)]
pub struct KnownClient {
    /// The name used in configuration and logs (`chatgpt`, `claude`, ...).
    pub name: &'static str,
    /// Client ID Metadata Document URLs it uses as `client_id`.
    pub cimd_urls: &'static [&'static str],
    /// Prefixes of redirect URIs only this client registers.
    pub redirect_prefixes: &'static [&'static str],
    /// What it does that a generic client does not (for docs and reviews).
    pub quirks: &'static str,
}

/// The table. Order matters only where two entries could match the same
/// client; none do today.
pub static KNOWN_CLIENTS: &[KnownClient] = &[
    KnownClient {
        name: "chatgpt",
        cimd_urls: &[],
        redirect_prefixes: &["https://chatgpt.com/connector_platform_oauth_redirect"],
        quirks: "per-app CIMD documents with private_key_jwt (RS256, jwks_uri), no `none` \
                 fallback, no DCR fallback; posts the authorization code twice",
    },
    KnownClient {
        name: "claude",
        cimd_urls: &["https://claude.ai/oauth/mcp-oauth-client-metadata"],
        redirect_prefixes: &[
            "https://claude.ai/api/mcp/auth_callback",
            "https://claude.com/api/mcp/auth_callback",
        ],
        quirks: "CIMD with `none`; auth_callback on claude.ai and claude.com; \
                 requests the scopes of `scopes_supported` in order",
    },
    KnownClient {
        name: "claude-code",
        cimd_urls: &["https://claude.ai/oauth/claude-code-client-metadata"],
        redirect_prefixes: &[],
        quirks: "CIMD with portless loopback redirect URIs, used with any port",
    },
    KnownClient {
        name: "vscode",
        cimd_urls: &["https://vscode.dev/oauth/client-metadata.json"],
        redirect_prefixes: &["https://vscode.dev/redirect", "http://127.0.0.1:33418"],
        quirks: "CIMD; vscode.dev/redirect or a fixed loopback port",
    },
    KnownClient {
        name: "cursor",
        cimd_urls: &[],
        redirect_prefixes: &["cursor://anysphere.cursor-mcp/oauth/callback"],
        quirks: "DCR with a private-use `cursor://` redirect URI",
    },
];

/// Which known client `client` is, if any: by its CIMD URL, else by its
/// redirect URIs when every one of them is that client's. One of its URIs
/// among others is not enough: anyone may register `chatgpt.com`'s
/// callback beside their own and would get ChatGPT's token lifetime.
pub fn recognise(client: &Client) -> Option<&'static KnownClient> {
    let redirects = &client.metadata.redirect_uris;
    KNOWN_CLIENTS.iter().find(|known| {
        known.cimd_urls.contains(&client.client_id.as_str())
            || (!redirects.is_empty()
                && redirects.iter().all(|uri| {
                    known
                        .redirect_prefixes
                        .iter()
                        .any(|prefix| uri.starts_with(prefix))
                }))
    })
}

/// A known client's entry by its configuration name.
pub fn by_name(name: &str) -> Option<&'static KnownClient> {
    KNOWN_CLIENTS.iter().find(|known| known.name == name)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::oauth::clients::ClientMetadata;

    fn client(id: &str, redirects: &[&str]) -> Client {
        let metadata: ClientMetadata = serde_json::from_value(serde_json::json!({
            "redirect_uris": redirects,
        }))
        .unwrap();
        Client {
            client_id: id.to_owned(),
            metadata: Arc::new(metadata),
            secret_hash: None,
            document_host: None,
            last_used_at: None,
            configured: None,
        }
    }

    #[test]
    fn clients_are_recognised_by_document_url_or_their_own_redirect_uri() {
        let name = |c: &Client| recognise(c).map(|k| k.name);
        assert_eq!(
            name(&client(
                "https://claude.ai/oauth/mcp-oauth-client-metadata",
                &[]
            )),
            Some("claude")
        );
        assert_eq!(
            name(&client(
                "https://claude.ai/oauth/claude-code-client-metadata",
                &["http://localhost/callback"]
            )),
            Some("claude-code")
        );
        assert_eq!(
            name(&client(
                "https://example.com/chatgpt-app.json",
                &["https://chatgpt.com/connector_platform_oauth_redirect"]
            )),
            Some("chatgpt")
        );
        assert_eq!(
            name(&client(
                "dcr-1",
                &["cursor://anysphere.cursor-mcp/oauth/callback"]
            )),
            Some("cursor")
        );
        assert_eq!(name(&client("dcr-2", &["http://127.0.0.1:5555/cb"])), None);
        assert_eq!(
            name(&client(
                "dcr-3",
                &[
                    "https://chatgpt.com/connector_platform_oauth_redirect",
                    "https://attacker.example/cb"
                ]
            )),
            None,
            "a known client's callback beside another is not that client"
        );
    }

    #[test]
    fn names_are_unique() {
        for known in KNOWN_CLIENTS {
            let same = KNOWN_CLIENTS.iter().filter(|k| k.name == known.name);
            assert_eq!(same.count(), 1, "{}", known.name);
            assert_eq!(by_name(known.name).map(|k| k.quirks), Some(known.quirks));
        }
    }
}
