//! The embedded authorization server (`auth.mode = "local"` and
//! `"proxy"`); the flow and the file layout are in this folder's README.md.
//!
//! `flow` is the domain (registration, authorization, login, consent, token
//! grants, introspection) free of HTTP: it decides, and `http` (the axum
//! edge) with `pages` (its HTML) renders. `proxy` is proxy mode's sign-in
//! at the identity provider; `setup` assembles it all from configuration.
//! Building blocks: `crypto`, `clients` (metadata and redirect policy),
//! `fenced_fetch` (the SSRF fence every fetch of a client-chosen URL goes
//! through), `fetch_failures` (failed fetches remembered for every replica), `cimd` (metadata documents), `client_keys` and `client_auth`
//! (`private_key_jwt`: client key sets, assertions), `keys` (signing keys),
//! `passwords`, `ratelimit`; `error` and `front` are shared with the bridge.

pub mod cimd;
pub mod client_auth;
pub mod client_credentials;
pub mod client_keys;
pub mod clients;
pub mod configured_clients;
pub mod crypto;
pub mod enterprise;
pub mod error;
pub mod errors_page;
pub mod fenced_fetch;
pub mod fetch_failures;
pub mod flow;
pub mod front;
pub mod http;
pub mod keys;
pub mod known_clients;
pub mod metadata;
pub mod pages;
pub mod passwords;
pub mod proxy;
pub mod ratelimit;
pub mod reseal;
pub mod settings;
pub mod setup;
