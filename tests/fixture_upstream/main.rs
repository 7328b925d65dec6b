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
    let router = axum::Router::new().route_service("/mcp", service);
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
