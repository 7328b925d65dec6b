//! mcpgate: OAuth 2.1 in front of MCP servers.
//!
//! Layout by feature: `config` (TOML + env → typed config), `app` (assembly
//! and shutdown), `http` (top router and shared layers), `mcp` (Streamable
//! HTTP and legacy SSE, all rmcp types), `toolsets` (built-in tools, domain
//! code only), `store` (SQLite/PostgreSQL), `auth` (who is calling),
//! `telemetry` (logs and metrics), `server` (listener, connection limits,
//! client addresses), `visible_text` (characters kept off pages and logs),
//! `problems` (helpers shared by the settings validators), `constant_time`
//! (secret comparison).

pub mod app;
pub mod auth;
pub mod bridge;
pub mod cli;
pub mod clock;
pub mod config;
pub mod constant_time;
pub mod http;
pub mod idp;
pub mod mcp;
pub mod oauth;
pub mod problems;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod toolsets;
pub mod upstream;
pub mod visible_text;
