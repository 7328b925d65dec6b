//! Command line.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "mcpgate",
    version,
    about = "OAuth 2.1 gateway in front of MCP servers"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve {
        /// TOML configuration file (defaults apply without one).
        #[arg(long, env = "MCPGATE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Load and validate the configuration, print it with secrets redacted.
    CheckConfig {
        #[arg(long, env = "MCPGATE_CONFIG")]
        config: Option<PathBuf>,
    },
}
