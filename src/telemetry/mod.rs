//! Logs and metrics, and the `[log]` settings.

pub mod logs;
pub mod metrics;
pub mod settings;
