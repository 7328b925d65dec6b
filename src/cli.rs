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
    /// Manage local users (auth.mode = "local").
    Users {
        #[arg(long, env = "MCPGATE_CONFIG", global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: UsersAction,
    },
    /// Manage registered OAuth clients (auth.mode = "local").
    Clients {
        #[arg(long, env = "MCPGATE_CONFIG", global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: ClientsAction,
    },
    /// Show and revoke the consents users gave to clients.
    Consents {
        #[arg(long, env = "MCPGATE_CONFIG", global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: ConsentsAction,
    },
    /// Manage token-signing keys.
    Keys {
        #[arg(long, env = "MCPGATE_CONFIG", global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: KeysAction,
    },
}

#[derive(Debug, Subcommand)]
pub enum UsersAction {
    /// Add a user; the password is prompted for or read from stdin.
    Add {
        name: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List users.
    List,
    /// Remove a user, their sessions and consents, and revoke their refresh
    /// tokens. Upstream users (proxy mode) may share a name: give the id.
    Remove { name: String },
    /// Set a local user's new password; their sessions, remembered consents
    /// and refresh tokens are revoked with the old one.
    Passwd {
        name: String,
        #[arg(long)]
        password_stdin: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysAction {
    /// List signing keys with their activation and retirement times.
    List,
    /// Add a new key (it signs after a short publication delay) and retire the others.
    Rotate,
    /// Re-seal stored secrets under the current encryption key (after
    /// setting `encryption_key` and listing the old one in `previous_encryption_keys`).
    Reseal,
}

#[derive(Debug, Subcommand)]
pub enum ClientsAction {
    /// List registered clients (dynamic registrations; CIMD clients are not stored).
    List,
    /// Remove a client with its consents and revoke its refresh tokens.
    Remove { client_id: String },
}

#[derive(Debug, Subcommand)]
pub enum ConsentsAction {
    /// List the clients a user has consented to.
    List { user: String },
    /// Forget a user's consent to a client and revoke the refresh tokens it produced.
    Revoke { user: String, client_id: String },
}
