#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code
//! The one integration test binary: mcpgate in-process on 127.0.0.1:0,
//! driven over real HTTP.

mod admin_console;
mod admin_idp_sign_in;
mod admin_sessions_clients;
mod auth_funnel;
mod bridge_auth;
mod client_assertions;
mod client_replays;
mod common;
mod config_cli;
mod connect_cli;
mod doctor;
mod drain;
mod enterprise_auth;
mod fake_idp;
mod gateway;
mod gateway_http;
mod gateway_mrtr;
mod local_auth;
mod machine_clients;
mod mcp_events;
mod mcp_post_streams;
mod mcp_sessions;
mod mcp_transport;
mod oauth_browser;
mod oauth_pages;
mod ops;
mod proxy_auth;
mod resource_auth;
mod scale_limits;
mod security_bridge;
mod security_gateway;
mod security_oauth;
mod security_server;
mod security_signin;
mod store_contract;
mod store_grants;
mod token_cli;
mod upstream_user_auth;
