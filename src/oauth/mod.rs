//! The embedded authorization server (`auth.mode = "local"`), being built.
//!
//! This release holds the building blocks, each with its own tests; the
//! endpoints that use them (`/register`, `/authorize`, `/token`, ...) are
//! not served yet, so `auth.mode = "local"` is still refused by the config.
//!
//! - `crypto`: random tokens, hashes for stored secrets, constant-time
//!   comparison, the AES-256-GCM envelope for data at rest.
//! - `clients`: RFC 7591 metadata validation, the redirect-URI policy and
//!   RFC 8252 loopback matching.
//! - `cimd`: SSRF-fenced fetching of Client ID Metadata Documents.
//! - `passwords`: Argon2id hashes for local users.
//! - `ratelimit`: per-key fixed windows for logins and registrations.

pub mod cimd;
pub mod clients;
pub mod crypto;
pub mod flow;
pub mod http;
pub mod keys;
pub mod pages;
pub mod passwords;
pub mod ratelimit;
pub mod setup;
