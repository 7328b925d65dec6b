//! The audit sink (`[telemetry] audit`): every event of the `audit` log
//! target as one JSON line, for a SIEM: `ts`, `event`, `user`, `client`,
//! `tool`, `kind`, `upstream`, `step`, `outcome`, `latency_ms`, `reason`,
//! `request_id`.
//!
//! Only those fields are written, whatever an event carries: free text
//! (`error`, `detail`) may hold what a client or an upstream sent, so it
//! stays in the ordinary log. No audit event carries a token, code, secret
//! or password in the first place; the allow-list keeps it that way.
//!
//! A file is opened in append mode and reopened when it was renamed or
//! removed (logrotate without `copytruncate`: checked before each line by
//! comparing the path's inode with the open file's) and on SIGHUP
//! ([`AuditSink::reopen`]).

use std::{
    fs::{File, OpenOptions},
    io::Write,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use serde_json::{Map, Value};
use tracing::{
    Event, Subscriber,
    field::{Field, Visit},
    span::{Attributes, Id},
};
use tracing_subscriber::{Layer, layer::Context, registry::LookupSpan};

use super::settings::AuditTarget;

/// Where audit lines go; cheap to clone.
#[derive(Clone)]
pub struct AuditSink {
    inner: Arc<SinkInner>,
}

struct SinkInner {
    output: Output,
    reopen: AtomicBool,
}

enum Output {
    Stdout,
    File {
        path: PathBuf,
        file: Mutex<Option<OpenFile>>,
    },
}

struct OpenFile {
    file: File,
    #[cfg(unix)]
    id: (u64, u64),
}

impl AuditSink {
    /// `None` for [`AuditTarget::Off`]. A file that cannot be opened now is
    /// an error at start (so a typo is seen), later failures are retried.
    pub fn open(target: &AuditTarget) -> std::io::Result<Option<AuditSink>> {
        let output = match target {
            AuditTarget::Off => return Ok(None),
            AuditTarget::Stdout => Output::Stdout,
            AuditTarget::File(path) => Output::File {
                file: Mutex::new(Some(open_append(path)?)),
                path: path.clone(),
            },
        };
        Ok(Some(AuditSink {
            inner: Arc::new(SinkInner {
                output,
                reopen: AtomicBool::new(false),
            }),
        }))
    }

    /// Reopen the file before the next line (SIGHUP).
    pub fn reopen(&self) {
        self.inner.reopen.store(true, Ordering::SeqCst);
    }

    /// Append one line; a failure is reported on stderr, never to the caller.
    pub fn write_line(&self, line: &str) {
        match &self.inner.output {
            Output::Stdout => {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
            }
            Output::File { path, file } => {
                let Ok(mut held) = file.lock() else {
                    return;
                };
                let forced = self.inner.reopen.swap(false, Ordering::SeqCst);
                if forced || held.as_ref().is_none_or(|f| !still_at(f, path)) {
                    *held = match open_append(path) {
                        Ok(f) => Some(f),
                        Err(e) => {
                            eprintln!(
                                "mcpgate: audit file {} cannot be opened: {e}",
                                path.display()
                            );
                            None
                        }
                    };
                }
                if let Some(open) = held.as_mut() {
                    // One write per line: with O_APPEND, lines of concurrent
                    // writers do not interleave.
                    let mut bytes = Vec::with_capacity(line.len() + 1);
                    bytes.extend_from_slice(line.as_bytes());
                    bytes.push(b'\n');
                    if let Err(e) = open.file.write_all(&bytes) {
                        eprintln!("mcpgate: audit line not written: {e}");
                        *held = None;
                    }
                }
            }
        }
    }
}

fn open_append(path: &PathBuf) -> std::io::Result<OpenFile> {
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o640);
    }
    let file = options.open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let meta = file.metadata()?;
        Ok(OpenFile {
            file,
            id: (meta.dev(), meta.ino()),
        })
    }
    #[cfg(not(unix))]
    Ok(OpenFile { file })
}

/// The open file is still the one at `path` (not renamed away or removed).
fn still_at(open: &OpenFile, path: &PathBuf) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).is_ok_and(|m| (m.dev(), m.ino()) == open.id)
    }
    #[cfg(not(unix))]
    {
        let _ = open;
        path.exists()
    }
}

/// The fields an audit line may carry, with the event's name for each.
/// Anything else an event has is left out.
fn audit_field(name: &str) -> Option<&'static str> {
    Some(match name {
        "message" => "event",
        "subject" | "user" | "user_id" => "user",
        "client" | "client_id" => "client",
        "tool" | "item" => "tool",
        "kind" => "kind",
        "upstream" => "upstream",
        "step" => "step",
        "outcome" => "outcome",
        "elapsed_ms" | "latency_ms" => "latency_ms",
        "reason" => "reason",
        "status" => "status",
        _ => return None,
    })
}

/// The tracing layer: `audit` events to an [`AuditSink`].
pub struct AuditLayer {
    sink: AuditSink,
}

impl AuditLayer {
    pub fn new(sink: AuditSink) -> AuditLayer {
        AuditLayer { sink }
    }
}

/// A span's `request_id` (the HTTP trace span), kept for its events.
struct RequestId(String);

impl<S> Layer<S> for AuditLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut found = FieldsOf::default();
        attrs.record(&mut found);
        if let (Some(Value::String(request_id)), Some(span)) =
            (found.request_id.take(), ctx.span(id))
        {
            span.extensions_mut().insert(RequestId(request_id));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if event.metadata().target() != "audit" {
            return;
        }
        let mut fields = FieldsOf::default();
        event.record(&mut fields);
        let mut line = Map::new();
        line.insert("ts".to_owned(), Value::String(now_rfc3339()));
        line.append(&mut fields.kept);
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope {
                if let Some(RequestId(id)) = span.extensions().get::<RequestId>() {
                    line.insert("request_id".to_owned(), Value::String(id.clone()));
                    break;
                }
            }
        }
        self.sink.write_line(&Value::Object(line).to_string());
    }
}

#[derive(Default)]
struct FieldsOf {
    kept: Map<String, Value>,
    request_id: Option<Value>,
}

impl FieldsOf {
    fn keep(&mut self, field: &Field, value: Value) {
        if field.name() == "request_id" {
            self.request_id = Some(value);
            return;
        }
        if let Some(name) = audit_field(field.name()) {
            self.kept.insert(name.to_owned(), value);
        }
    }
}

impl Visit for FieldsOf {
    fn record_f64(&mut self, field: &Field, value: f64) {
        let rounded = (value * 1000.0).round() / 1000.0;
        self.keep(field, serde_json::json!(rounded));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.keep(field, Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.keep(field, Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.keep(field, Value::Bool(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.keep(field, Value::String(value.to_owned()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        // `%x` arrives here as Display, `?x` as Debug: strip Debug's quotes.
        let text = format!("{value:?}");
        let text = text
            .strip_prefix('"')
            .and_then(|t| t.strip_suffix('"'))
            .map(str::to_owned)
            .unwrap_or(text);
        self.keep(field, Value::String(text));
    }
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::prelude::*;

    fn lines(path: &std::path::Path) -> Vec<Value> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn only_audit_events_and_only_allowed_fields_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let sink = AuditSink::open(&AuditTarget::File(path.clone()))
            .unwrap()
            .unwrap();
        let subscriber = tracing_subscriber::registry().with(AuditLayer::new(sink));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("http", request_id = %"req-1");
            let _in = span.enter();
            tracing::info!(target: "audit", subject = %"u1", client = "c1", tool = "calc", outcome = "ok", elapsed_ms = 1.23456, error = %"Bearer eyJsecret", password = "hunter2", "tool call");
            tracing::info!(subject = "u2", "not an audit event");
        });
        let got = lines(&path);
        assert_eq!(got.len(), 1, "{got:?}");
        let line = &got[0];
        assert_eq!(line["event"], "tool call");
        assert_eq!(line["user"], "u1");
        assert_eq!(line["client"], "c1");
        assert_eq!(line["tool"], "calc");
        assert_eq!(line["outcome"], "ok");
        assert_eq!(line["latency_ms"], 1.235);
        assert_eq!(line["request_id"], "req-1");
        assert!(line["ts"].as_str().unwrap().ends_with('Z'));
        let text = line.to_string();
        assert!(
            !text.contains("secret") && !text.contains("hunter2"),
            "{text}"
        );
    }

    #[test]
    fn a_renamed_or_removed_file_is_reopened_and_sighup_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let sink = AuditSink::open(&AuditTarget::File(path.clone()))
            .unwrap()
            .unwrap();
        sink.write_line(r#"{"n":1}"#);
        // logrotate (no copytruncate): rename, then the writer goes on.
        let rotated = dir.path().join("audit.jsonl.1");
        std::fs::rename(&path, &rotated).unwrap();
        sink.write_line(r#"{"n":2}"#);
        assert_eq!(lines(&rotated), [serde_json::json!({"n": 1})]);
        assert_eq!(lines(&path), [serde_json::json!({"n": 2})]);
        // Removed: created again.
        std::fs::remove_file(&path).unwrap();
        sink.write_line(r#"{"n":3}"#);
        assert_eq!(lines(&path), [serde_json::json!({"n": 3})]);
        // SIGHUP after a copy elsewhere: reopened (appending to the same path).
        sink.reopen();
        sink.write_line(r#"{"n":4}"#);
        assert_eq!(lines(&path).len(), 2);
        // Appends, never truncates, across sinks (a restart).
        let again = AuditSink::open(&AuditTarget::File(path.clone()))
            .unwrap()
            .unwrap();
        again.write_line(r#"{"n":5}"#);
        assert_eq!(lines(&path).len(), 3);
    }

    #[test]
    fn off_is_no_sink() {
        assert!(AuditSink::open(&AuditTarget::Off).unwrap().is_none());
    }
}
