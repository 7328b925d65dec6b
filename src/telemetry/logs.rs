//! Log output: pretty for people, JSON for collectors. The `audit` target
//! carries security events; request ids come from the HTTP trace span.
//!
//! Field values often carry what a client sent (user names, paths). In the
//! pretty format every field and message is escaped: control characters
//! (CR, LF, ESC, ...) and invisible format characters (bidi overrides,
//! zero-width) become `\n`, `\u{202e}`, ..., so a value can neither start a
//! forged log line nor recolour or reorder the terminal. JSON output is
//! escaped by serde already.

use std::fmt::{self as stdfmt, Write as _};

use tracing_subscriber::{
    EnvFilter,
    field::RecordFields,
    fmt::{self, FormatFields, format::Writer},
    prelude::*,
};

use super::audit::{AuditLayer, AuditSink};
use super::settings::{LogFormat, LogSettings};

/// Install the global subscriber. Logs go to stderr; stdout carries only
/// what the program prints for its operator (the URL, the first password).
/// `RUST_LOG` wins over the configured level
/// so an operator can turn up detail without editing the file.
/// `audit`, when set, also gets every `audit` event as a JSON line
/// (`super::audit`), whatever the level filter says about the rest.
pub fn init(config: &LogSettings, audit: Option<AuditSink>) {
    let filter = || {
        EnvFilter::try_from_default_env()
            .or_else(|_| EnvFilter::try_new(&config.level))
            .unwrap_or_else(|_| EnvFilter::new("info"))
    };
    // Each output has its own filter: the log level does not silence audit
    // events, and the audit sink sees nothing else.
    let audit = audit.map(|sink| {
        AuditLayer::new(sink).with_filter(tracing_subscriber::filter::filter_fn(|m| {
            m.target() == "audit" || m.is_span()
        }))
    });
    let registry = tracing_subscriber::registry().with(audit);
    let result = match config.format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .with_writer(std::io::stderr)
                    .json()
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_filter(filter()),
            )
            .try_init(),
        LogFormat::Pretty => registry
            .with(
                fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_target(true)
                    .fmt_fields(EscapedFields)
                    .with_filter(filter()),
            )
            .try_init(),
    };
    // A second init (tests) keeps the first subscriber.
    let _ = result;
}

/// The pretty format's field formatter: `name=value` pairs (the message
/// bare), separated by spaces, every value escaped.
#[derive(Debug, Default)]
pub struct EscapedFields;

impl<'w> FormatFields<'w> for EscapedFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> stdfmt::Result {
        let mut visitor = FieldsVisitor {
            writer: &mut writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct FieldsVisitor<'a, 'w> {
    writer: &'a mut Writer<'w>,
    first: bool,
    result: stdfmt::Result,
}

impl tracing::field::Visit for FieldsVisitor<'_, '_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn stdfmt::Debug) {
        // Display fields (`%value`) arrive here unescaped; format, then escape.
        let mut text = String::new();
        if write!(text, "{value:?}").is_err() {
            self.result = Err(stdfmt::Error);
            return;
        }
        let separator = if self.first { "" } else { " " };
        self.first = false;
        let written = if field.name() == "message" {
            write!(self.writer, "{separator}{}", escape(&text))
        } else {
            write!(self.writer, "{separator}{}={}", field.name(), escape(&text))
        };
        if written.is_err() {
            self.result = written;
        }
    }
}

/// `text` with control and invisible format characters written as escapes.
pub fn escape(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(crate::visible_text::is_hidden_or_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if crate::visible_text::is_hidden_or_control(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// What the pretty format writes for the events `emit` produces.
    fn pretty_output(emit: impl FnOnce()) -> String {
        let buffer = Buffer::default();
        let sink = buffer.clone();
        let subscriber = tracing_subscriber::registry().with(
            fmt::layer()
                .with_writer(move || sink.clone())
                .with_ansi(false)
                .fmt_fields(EscapedFields),
        );
        tracing::subscriber::with_default(subscriber, emit);
        String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap()
    }

    const FORGED: &str = "nobody\n2026-12-05T08:00:00.000000Z  INFO mcpgate::oauth::http: login succeeded username=admin \x1b[31mRED\r\u{202e}gnp.exe";

    #[test]
    fn a_forged_log_line_in_a_display_field_stays_one_escaped_line() {
        let out = pretty_output(|| {
            tracing::info!(username = %FORGED, "login failed");
        });
        assert_eq!(out.lines().count(), 1, "{out:?}");
        assert!(!out.contains('\x1b') && !out.contains('\r') && !out.contains('\u{202e}'));
        assert!(
            out.contains(r"username=nobody\n2026-12-05T08:00:00.000000Z  INFO mcpgate::oauth::http: login succeeded username=admin \u{1b}[31mRED\r\u{202e}gnp.exe"),
            "{out}"
        );
        assert!(out.contains("login failed"), "{out}");
    }

    #[test]
    fn messages_span_fields_and_debug_fields_are_escaped_too() {
        let out = pretty_output(|| {
            let span = tracing::info_span!("http", path = %"/a\nINFO forged");
            let _entered = span.enter();
            let value = String::from("x\ny");
            tracing::warn!(detail = ?value, "failed for {}", "b\u{1b}[2Jc");
        });
        assert_eq!(out.lines().count(), 1, "{out:?}");
        assert!(out.contains(r"path=/a\nINFO forged"), "{out}");
        assert!(out.contains(r"failed for b\u{1b}[2Jc"), "{out}");
        // Debug already escapes; the result is not escaped twice into noise.
        assert!(out.contains(r#"detail="x\ny""#), "{out}");
    }

    #[test]
    fn plain_text_is_unchanged() {
        assert_eq!(escape("admin café 東京 -_.~"), "admin café 東京 -_.~");
        assert_eq!(escape("a\u{2028}b\u{feff}"), r"a\u{2028}b\u{feff}");
    }
}
