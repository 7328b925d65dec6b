//! The two renderings of a [`Report`]: text for people, JSON for machines.

use serde_json::json;

use super::{Outcome, Report};

fn label(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Pass => "pass",
        Outcome::Warn => "WARN",
        Outcome::Fail => "FAIL",
        Outcome::Skip => "skip",
    }
}

/// One line per check; warnings and failures add their cause, fix and docs.
pub fn text(report: &Report) -> String {
    let width = report.checks.iter().map(|c| c.id.len()).max().unwrap_or(0);
    let mut out = format!("mcpgate doctor: {}\n", report.target);
    for check in &report.checks {
        out.push_str(&format!(
            "  {}  {:width$}  {}\n",
            label(check.outcome),
            check.id,
            check.summary
        ));
        let pad = " ".repeat(width + 10);
        if let Some(cause) = &check.cause {
            out.push_str(&format!("{pad}cause: {cause}\n"));
        }
        if let Some(fix) = &check.fix {
            out.push_str(&format!("{pad}fix:   {fix}\n"));
            out.push_str(&format!("{pad}docs:  {}\n", check.docs));
        }
    }
    let warnings = report.count(Outcome::Warn);
    out.push_str(&format!(
        "{} passed, {warnings} {}, {} failed, {} skipped\n",
        report.count(Outcome::Pass),
        if warnings == 1 { "warning" } else { "warnings" },
        report.count(Outcome::Fail),
        report.count(Outcome::Skip)
    ));
    out
}

/// `{"target", "ok", "counts", "checks": [...]}`, pretty-printed.
pub fn json(report: &Report) -> String {
    let value = json!({
        "target": report.target,
        "ok": !report.failed(),
        "counts": {
            "pass": report.count(Outcome::Pass),
            "warn": report.count(Outcome::Warn),
            "fail": report.count(Outcome::Fail),
            "skip": report.count(Outcome::Skip),
        },
        "checks": report.checks,
    });
    serde_json::to_string_pretty(&value).unwrap_or_else(|_| "{}".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Check;

    fn report() -> Report {
        let mut r = Report::new("https://h/mcp");
        r.push(Check::pass("reach", "answered"));
        r.push(Check::fail("prm.resource", "wrong", "the cause", "the fix"));
        r
    }

    #[test]
    fn text_shows_cause_fix_and_anchor_for_failures() {
        let text = text(&report());
        assert!(text.contains("FAIL  prm.resource  wrong"), "{text}");
        assert!(text.contains("cause: the cause"));
        assert!(text.contains("fix:   the fix"));
        assert!(text.contains("docs/guide/doctor.md#prm-resource"));
        assert!(text.ends_with("1 passed, 0 warnings, 1 failed, 0 skipped\n"));
    }

    #[test]
    fn json_carries_every_field() {
        let v: serde_json::Value = serde_json::from_str(&json(&report())).unwrap();
        assert_eq!(v["ok"], false);
        assert_eq!(v["counts"]["fail"], 1);
        assert_eq!(v["checks"][1]["outcome"], "fail");
        assert_eq!(v["checks"][1]["fix"], "the fix");
        assert!(v["checks"][0].get("cause").is_none());
    }
}
