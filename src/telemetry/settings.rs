//! `[log]` (output format and level) and `[telemetry]` (the audit sink), raw
//! and validated. Called from `config`, which collects the errors.

use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    /// `pretty` (default) or `json`.
    pub format: Option<String>,
    /// An `EnvFilter` directive, e.g. `info,mcpgate=debug`. Default `info`.
    pub level: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Serialize)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
}

/// `[log]`; absent means pretty output at `info`.
pub fn validate(raw: &RawLog, errors: &mut Vec<String>) -> LogSettings {
    let format = match raw.format.as_deref().unwrap_or("pretty") {
        "pretty" => LogFormat::Pretty,
        "json" => LogFormat::Json,
        other => {
            errors.push(format!(
                "log.format: {other:?} must be \"pretty\" or \"json\""
            ));
            LogFormat::Pretty
        }
    };
    let level = raw.level.clone().unwrap_or_else(|| "info".to_owned());
    if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
        errors.push(format!(
            "log.level: {level:?} is not a valid filter directive"
        ));
    }
    LogSettings { format, level }
}

/// `[telemetry]`.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTelemetry {
    /// Audit events as JSON lines: `"off"` (default), `"stdout"`, or a file path.
    pub audit: Option<String>,
}

/// Where audit events go (`crate::telemetry::audit`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditTarget {
    Off,
    Stdout,
    File(std::path::PathBuf),
}

#[derive(Debug, Clone, Serialize)]
pub struct TelemetrySettings {
    pub audit: AuditTarget,
}

/// `[telemetry]`; absent means no audit sink (audit events still go to the log).
pub fn validate_telemetry(raw: &RawTelemetry, errors: &mut Vec<String>) -> TelemetrySettings {
    let audit = match raw.audit.as_deref().map(str::trim) {
        None | Some("off") => AuditTarget::Off,
        Some("stdout") => AuditTarget::Stdout,
        Some("") => {
            errors
                .push("telemetry.audit: empty; use \"off\", \"stdout\" or a file path".to_owned());
            AuditTarget::Off
        }
        Some(path) => {
            let path = std::path::PathBuf::from(path);
            if path.is_dir() {
                errors.push(format!(
                    "telemetry.audit: {} is a directory; name a file",
                    path.display()
                ));
            }
            AuditTarget::File(path)
        }
    };
    TelemetrySettings { audit }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_audit_target_is_off_stdout_or_a_file() {
        let mut errors = Vec::new();
        let at = |v: Option<&str>, errors: &mut Vec<String>| {
            validate_telemetry(
                &RawTelemetry {
                    audit: v.map(str::to_owned),
                },
                errors,
            )
            .audit
        };
        assert_eq!(at(None, &mut errors), AuditTarget::Off);
        assert_eq!(at(Some("off"), &mut errors), AuditTarget::Off);
        assert_eq!(at(Some("stdout"), &mut errors), AuditTarget::Stdout);
        assert_eq!(
            at(Some("/var/log/mcpgate/audit.jsonl"), &mut errors),
            AuditTarget::File("/var/log/mcpgate/audit.jsonl".into())
        );
        assert!(errors.is_empty());
        at(Some("/"), &mut errors);
        at(Some(" "), &mut errors);
        assert_eq!(errors.len(), 2, "{errors:?}");
    }

    #[test]
    fn format_and_level_are_checked() {
        let mut errors = Vec::new();
        let log = validate(&RawLog::default(), &mut errors);
        assert_eq!(
            (log.format, log.level.as_str()),
            (LogFormat::Pretty, "info")
        );
        let raw = RawLog {
            format: Some("xml".to_owned()),
            level: Some("info,[".to_owned()),
        };
        validate(&raw, &mut errors);
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].starts_with("log.format:") && errors[1].starts_with("log.level:"));
    }
}
