//! `[log]`: output format and level, raw and validated. Called from
//! `config`, which collects the errors.

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

#[cfg(test)]
mod tests {
    use super::*;

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
