//! `mcpgate doctor`: checks a deployed MCP endpoint from the outside the way
//! ChatGPT, Claude, VS Code and Cursor will ([`endpoint`]), the token a client
//! would send ([`token`]), and mcpgate's own configuration against its
//! identity provider ([`config_lint`]). Every check is data ([`Check`]: an
//! outcome, the cause, the fix and a docs anchor); [`render`] turns a
//! [`Report`] into text or JSON. Nothing here prints.

pub mod config_lint;
pub mod endpoint;
mod http;
pub mod render;
pub mod token;

use serde::Serialize;

/// Where the fix texts point: `docs/guide/doctor.md#<anchor>`.
pub const DOCS: &str = "docs/guide/doctor.md";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Pass,
    /// Works for some clients or some day breaks: worth fixing.
    Warn,
    /// A client following the specification fails here.
    Fail,
    /// Not run: an earlier check failed, or it needs input not given, or it
    /// cannot be checked from outside.
    Skip,
}

/// One check's result. `cause` and `fix` are set for warnings and failures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Stable identifier (`prm.resource`), also the docs anchor's stem.
    pub id: &'static str,
    pub outcome: Outcome,
    /// What was seen, one line.
    pub summary: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    /// `docs/guide/doctor.md#anchor`.
    pub docs: String,
}

impl Check {
    pub fn pass(id: &'static str, summary: impl Into<String>) -> Check {
        Check::new(id, Outcome::Pass, summary, None, None)
    }

    pub fn skip(id: &'static str, summary: impl Into<String>) -> Check {
        Check::new(id, Outcome::Skip, summary, None, None)
    }

    /// Cannot be checked from outside: what to verify by hand, and where.
    pub fn manual(id: &'static str, summary: impl Into<String>, step: impl Into<String>) -> Check {
        Check::new(id, Outcome::Skip, summary, None, Some(step.into()))
    }

    pub fn warn(
        id: &'static str,
        summary: impl Into<String>,
        cause: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check::new(
            id,
            Outcome::Warn,
            summary,
            Some(cause.into()),
            Some(fix.into()),
        )
    }

    pub fn fail(
        id: &'static str,
        summary: impl Into<String>,
        cause: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check::new(
            id,
            Outcome::Fail,
            summary,
            Some(cause.into()),
            Some(fix.into()),
        )
    }

    fn new(
        id: &'static str,
        outcome: Outcome,
        summary: impl Into<String>,
        cause: Option<String>,
        fix: Option<String>,
    ) -> Check {
        Check {
            id,
            outcome,
            summary: summary.into(),
            cause,
            fix,
            docs: format!("{DOCS}#{}", anchor(id)),
        }
    }
}

/// `prm.resource` → `prm-resource` (Markdown heading anchors have no dots).
pub fn anchor(id: &str) -> String {
    id.replace(['.', '_'], "-")
}

/// Everything one `doctor` run found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The URL or configuration file checked.
    pub target: String,
    pub checks: Vec<Check>,
}

impl Report {
    pub fn new(target: impl Into<String>) -> Report {
        Report {
            target: target.into(),
            checks: Vec::new(),
        }
    }

    pub fn push(&mut self, check: Check) {
        self.checks.push(check);
    }

    /// Any failure: the command exits non-zero.
    pub fn failed(&self) -> bool {
        self.checks.iter().any(|c| c.outcome == Outcome::Fail)
    }

    pub fn count(&self, outcome: Outcome) -> usize {
        self.checks.iter().filter(|c| c.outcome == outcome).count()
    }

    /// Replace every occurrence of `secrets` in the checks' texts.
    pub fn redact(&mut self, secrets: &[&str]) {
        for secret in secrets.iter().filter(|s| s.len() >= 4) {
            for check in &mut self.checks {
                for text in [&mut check.summary]
                    .into_iter()
                    .chain(check.cause.as_mut())
                    .chain(check.fix.as_mut())
                {
                    if text.contains(secret) {
                        *text = text.replace(secret, "[redacted]");
                    }
                }
            }
        }
    }

    /// The check with this id (tests and callers that act on one result).
    pub fn get(&self, id: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.id == id)
    }
}

/// Why the doctor could not start at all (bad arguments, unreadable secret
/// files); check results are never errors.
#[derive(Debug, thiserror::Error)]
pub enum DoctorError {
    #[error("{0:?} is not an http(s) URL")]
    BadUrl(String),
    #[error("cannot read {what} from {from}: {reason}")]
    Secret {
        what: &'static str,
        from: String,
        reason: String,
    },
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    #[error("configuration: {0}")]
    Config(String),
}

/// Read a secret from a file or, for `-`, standard input; trailing
/// newlines are dropped. Secrets never come from argv.
pub fn read_secret_source(
    what: &'static str,
    from: &str,
    stdin: &mut dyn std::io::Read,
) -> Result<secrecy::SecretString, DoctorError> {
    let mut text = String::new();
    let result = if from == "-" {
        stdin.read_to_string(&mut text).map(|_| ())
    } else {
        std::fs::read_to_string(from).map(|t| text = t)
    };
    result.map_err(|e| DoctorError::Secret {
        what,
        from: from.to_owned(),
        reason: e.to_string(),
    })?;
    let text = text.trim_end_matches(['\n', '\r']).to_owned();
    if text.trim().is_empty() {
        return Err(DoctorError::Secret {
            what,
            from: from.to_owned(),
            reason: "it is empty".to_owned(),
        });
    }
    Ok(text.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn anchors_have_no_dots() {
        assert_eq!(anchor("prm.resource"), "prm-resource");
        let check = Check::fail("as.pkce", "x", "y", "z");
        assert_eq!(check.docs, "docs/guide/doctor.md#as-pkce");
    }

    /// Every check id in the code has its section in the guide, so no fix
    /// text links to a missing anchor.
    #[test]
    fn every_check_has_a_docs_anchor() {
        let guide = include_str!("../../docs/guide/doctor.md");
        let sources = [
            include_str!("endpoint.rs"),
            include_str!("endpoint/authorization.rs"),
            include_str!("token.rs"),
            include_str!("config_lint.rs"),
        ];
        let mut ids = Vec::new();
        for source in sources {
            for method in ["pass(", "fail(", "warn(", "skip(", "manual("] {
                for (i, _) in source.match_indices(&format!("Check::{method}")) {
                    let rest = source[i + 7 + method.len()..].trim_start();
                    if let Some(rest) = rest.strip_prefix('"') {
                        ids.push(rest.split('"').next().unwrap().to_owned());
                    }
                }
            }
        }
        assert!(ids.len() > 40, "{ids:?}");
        for id in &ids {
            let tag = format!("<a id=\"{}\"></a>", anchor(id));
            assert!(guide.contains(&tag), "docs/guide/doctor.md lacks {tag}");
        }
    }

    #[test]
    fn secrets_echoed_by_a_server_are_redacted() {
        let mut report = Report::new("x");
        report.push(Check::fail(
            "token.accepted",
            "got s3cret-token",
            "echo: s3cret-token",
            "fix",
        ));
        report.redact(&["s3cret-token", ""]);
        let check = &report.checks[0];
        assert_eq!(check.summary, "got [redacted]");
        assert_eq!(check.cause.as_deref(), Some("echo: [redacted]"));
    }

    #[test]
    fn secrets_come_from_stdin_or_a_file_and_are_never_empty() {
        let mut stdin: &[u8] = b"abc.def.ghi\n";
        let secret = read_secret_source("token", "-", &mut stdin).unwrap();
        assert_eq!(secret.expose_secret(), "abc.def.ghi");
        let mut empty: &[u8] = b"\n";
        assert!(read_secret_source("token", "-", &mut empty).is_err());
        let mut none: &[u8] = b"";
        let err = read_secret_source("token", "/no/such/file", &mut none).unwrap_err();
        assert!(err.to_string().contains("/no/such/file"), "{err}");
    }
}
