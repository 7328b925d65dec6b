//! Logs and metrics, the audit sink, and the `[log]` and `[telemetry]` settings.

pub mod audit;
pub mod logs;
pub mod metrics;
pub mod settings;
