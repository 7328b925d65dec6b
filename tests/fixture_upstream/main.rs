//! A fixture upstream MCP server for mcpgate's gateway tests: the fixture surface of the MCP
//! conformance suite (`@modelcontextprotocol/conformance` 0.1.16) plus tools for fault tests
//! and benchmarks.
//!
//! ```text
//! fixture-upstream [--stdio]            MCP over stdin/stdout
//! fixture-upstream --http ADDR          Streamable HTTP at http://ADDR/mcp
//! fixture-upstream --http-json ADDR     the same, answering each POST with one JSON body
//! ```
//!
//! With `FIXTURE_REFUSE_TOKENS_FILE` set, an HTTP request whose bearer token is a line of that
//! file is refused with 401 `invalid_token`, as a server does with a token its user revoked.
//!
//! stdout carries the protocol in stdio mode, so diagnostics go to stderr only. In HTTP mode
//! the one stdout line is `listening on http://ADDR/mcp`, printed once the socket is bound
//! (port 0 picks a free port and the line shows which).

mod catalog;
mod old_mrtr;
mod server;
mod tools;

use std::{io::Write, net::SocketAddr, process::ExitCode, sync::Arc};

use anyhow::Context;
use rmcp::{
    ServiceExt,
    transport::{
        stdio,
        streamable_http_server::{
            StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
        },
    },
};

use crate::server::{FixtureServer, Shared};

const USAGE: &str = "usage: fixture-upstream [--stdio | --http HOST:PORT | --http-json HOST:PORT]";

enum Mode {
    Stdio,
    /// The address, and whether POSTs are answered with JSON bodies (no SSE).
    Http(SocketAddr, bool),
}

fn parse_args(args: &[String]) -> Result<Mode, String> {
    match args {
        [] => Ok(Mode::Stdio),
        [flag] if flag == "--stdio" => Ok(Mode::Stdio),
        [flag, addr] if flag == "--http" || flag == "--http-json" => addr
            .parse()
            .map(|addr| Mode::Http(addr, flag == "--http-json"))
            .map_err(|err| format!("bad address {addr:?}: {err}")),
        _ => Err(format!("unexpected arguments: {}", args.join(" "))),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if matches!(args.as_slice(), [flag] if flag == "--help" || flag == "-h") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let mode = match parse_args(&args) {
        Ok(mode) => mode,
        Err(err) => {
            eprintln!("fixture-upstream: {err}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let served = match mode {
        Mode::Stdio => serve_stdio().await,
        Mode::Http(addr, json) => serve_http(addr, json).await,
    };
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("fixture-upstream: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Serves one session until stdin closes.
async fn serve_stdio() -> anyhow::Result<()> {
    let running = old_mrtr::AsksInResult(FixtureServer::new(Shared::new()))
        .serve(stdio())
        .await
        .context("MCP initialization over stdio failed")?;
    running
        .waiting()
        .await
        .context("the MCP service task failed")?;
    Ok(())
}

/// 401 for a bearer token listed in `file` (read on every request: a test adds to it).
async fn refuse_listed(
    file: Option<std::path::PathBuf>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let token = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    if let (Some(file), Some(token)) = (file, token) {
        let listed = std::fs::read_to_string(file).unwrap_or_default();
        if listed.lines().any(|line| line == token) {
            return axum::response::IntoResponse::into_response((
                axum::http::StatusCode::UNAUTHORIZED,
                [(
                    axum::http::header::WWW_AUTHENTICATE,
                    "Bearer error=\"invalid_token\", error_description=\"the token was revoked\"",
                )],
            ));
        }
    }
    next.run(request).await
}

async fn serve_http(addr: SocketAddr, json: bool) -> anyhow::Result<()> {
    let shared = Shared::new();
    // rmcp's defaults: sessions for the 2025 revisions, stateless for 2026-07-28, SSE
    // responses (so notifications reach the client mid-call; JSON bodies with --http-json),
    // and only loopback Host headers.
    let service = StreamableHttpService::new(
        move || Ok(FixtureServer::new(Arc::clone(&shared))),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default().with_json_response(json),
    );
    let refused = std::env::var_os("FIXTURE_REFUSE_TOKENS_FILE").map(std::path::PathBuf::from);
    let router =
        axum::Router::new()
            .route_service("/mcp", service)
            .layer(axum::middleware::from_fn(move |request, next| {
                refuse_listed(refused.clone(), request, next)
            }));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let bound = listener.local_addr().context("reading the bound address")?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on http://{bound}/mcp")
        .and_then(|()| stdout.flush())
        .context("writing to stdout")?;
    drop(stdout);
    // Its SSE answers are several writes: without TCP_NODELAY the last one
    // waits for the client's delayed ACK (~40 ms on a kept-alive connection).
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router)
        .await
        .context("the HTTP server failed")
}
