//! The HTTP server itself: the listener, per-connection limits and timeouts,
//! the client address every per-address limit counts by, and who may read
//! the operations endpoints. See README.md.

pub mod client_address;
pub mod ops_access;
pub mod serve;
pub mod settings;

pub use client_address::ClientAddress;
pub use ops_access::OpsAccess;
pub use settings::ServerConfig;
