//! The HTTP server itself: the listener, per-connection limits and timeouts,
//! the client address every per-address limit counts by, who may read the
//! operations endpoints, and the draining state of a shutdown. See README.md.

pub mod client_address;
pub mod drain;
pub mod ops_access;
pub mod serve;
pub mod settings;

pub use client_address::ClientAddress;
pub use drain::{Draining, InFlight};
pub use ops_access::OpsAccess;
pub use settings::ServerConfig;
