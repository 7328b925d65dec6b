//! The HTTP server itself: the listener, per-connection limits and timeouts,
//! and the client address every per-address limit counts by.

pub mod client_address;

pub use client_address::ClientAddress;
