//! mcpgate: OAuth 2.1 in front of MCP servers.
//!
//! Layout by feature (the request flow per mode is in `docs/architecture.md`):
//! `config` (TOML + env → `Config`, composing each subsystem's `settings`;
//! the auth mode is the sum type `config::AuthSettings`), `app` (assembly:
//! one `match` over the resolved mode, and shutdown), `server` (listener,
//! connection limits, client addresses), `http` (top router, ops endpoints),
//! `mcp` (Streamable HTTP and legacy SSE towards clients), `auth` (who is
//! calling: bearer checks, `[[policy]]`), `oauth` (the authorization server
//! of local and proxy modes, and the front every mode shares), `idp`
//! (identity providers: presets, discovery, `auto`), `bridge` (bridge mode),
//! `upstream` (the gateway to MCP servers behind mcpgate; rmcp client side),
//! `toolsets` (built-in tools, domain code only), `branding` (the browser pages'
//! skeleton, stylesheet and `[branding]`), `store`
//! (SQLite/PostgreSQL), `telemetry` (logs and metrics), `cli` (the command
//! line), `doctor` (`mcpgate doctor`: outside checks of a deployed MCP
//! endpoint and of this configuration's identity provider), `connect`
//! (`mcpgate connect`: per-client setup guides), `token_tools` (`mcpgate
//! token`: client credentials, refresh, verify as the server would), `funnel` (the reason-code
//! catalogue, `/errors`, and the auth funnel of authorization attempts), and the leaves `clock` (time as a parameter), `problems` (helpers
//! shared by the settings validators), `constant_time` (secret comparison),
//! `visible_text` (characters kept off pages and logs).
//!
//! Mode → module: none: `mcp` only · resource: `auth` · local: `oauth::flow`
//! · proxy: `oauth::flow` + `oauth::proxy` + `idp` · bridge: `bridge` (+
//! `auth` on `/mcp`) · auto: `idp::auto` picks resource or proxy at start.

pub mod admin;
pub mod app;
pub mod auth;
pub mod branding;
pub mod bridge;
pub mod cli;
pub mod clock;
pub mod config;
pub mod connect;
pub mod constant_time;
pub mod doctor;
pub mod funnel;
pub mod http;
pub mod idp;
pub mod mcp;
pub mod oauth;
pub mod problems;
pub mod request_state;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod token_tools;
pub mod toolsets;
pub mod upstream;
pub mod visible_text;
