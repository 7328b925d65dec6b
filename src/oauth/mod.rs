//! The embedded authorization server (`auth.mode = "local"`); the flow is
//! described in this folder's README.md.
//!
//! `flow` is the domain (registration, authorization, login, consent, token
//! grants) free of HTTP; `http` is the axum edge and `pages` its HTML;
//! `setup` assembles it from configuration. Building blocks: `crypto`,
//! `clients` (metadata and redirect policy), `cimd` (SSRF-fenced document
//! fetch), `keys` (signing keys), `passwords`, `ratelimit`.

pub mod cimd;
pub mod clients;
pub mod crypto;
pub mod federation;
pub mod flow;
pub mod http;
pub mod keys;
pub mod pages;
pub mod passwords;
pub mod ratelimit;
pub mod reseal;
pub mod settings;
pub mod setup;
