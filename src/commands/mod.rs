//! The binary's command handlers that outgrew `main.rs`: printing and exit
//! codes around the library's work.

pub(crate) mod token;
