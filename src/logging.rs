//! Log output: one JSON object a line on stdout (or plain text), and the
//! access-log line written for every request.
//!
//! The JSON formatter is hand-written because the contract names the fields
//! (`ts`, `level`, then the event's fields at the top level) and
//! tracing-subscriber's JSON format nests them under `fields` and calls the
//! time `timestamp`. The fields of the spans an event happens in (the
//! request span's `request_id`) are written beside the event's own, so
//! every line a request causes can be joined to its access line. Nothing
//! here ever receives a token, cookie or key: the access line is built from
//! the method, path, status and a verified user id.

use std::fmt;
use std::fs::File;
use std::io::BufWriter;
use std::os::fd::AsFd;

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. `RUST_LOG` overrides the `info` level.
///
/// Lines go to stdout from a thread of their own (tracing-appender), so a
/// request never waits on a write: it hands its line over and the thread
/// writes whatever has queued up in one `write` (an access line per
/// request was one system call per request). Nothing is dropped: past
/// 128k queued lines a request waits. Keep the returned guard until exit:
/// dropping it writes what is left.
pub fn init(format: LogFormat) -> Option<WorkerGuard> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let (writer, guard) = match std::io::stdout().as_fd().try_clone_to_owned() {
        // Unbuffered on a terminal: a person watches it line by line.
        Ok(fd) if !terminal => {
            let batched = BufWriter::with_capacity(64 * 1024, File::from(fd));
            NonBlockingBuilder::default().lossy(false).finish(batched)
        }
        _ => NonBlockingBuilder::default()
            .lossy(false)
            .finish(std::io::stdout()),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(terminal)
        .with_writer(writer);
    let installed = match format {
        LogFormat::Json => builder
            .fmt_fields(JsonFields::new())
            .event_format(JsonLines)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
    installed.ok().map(|()| guard)
}

/// Formats each event as one JSON object: `ts`, `level`, `target`, the
/// fields of its spans, then its own fields (`message` included), all at
/// the top level. Spans' fields must be recorded by [`JsonFields`].
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut ts = String::new();
        SystemTime.format_time(&mut Writer::new(&mut ts))?;
        let mut fields = serde_json::Map::new();
        fields.insert("ts".into(), ts.into());
        let level = event.metadata().level().as_str().to_ascii_lowercase();
        fields.insert("level".into(), level.into());
        fields.insert("target".into(), event.metadata().target().into());
        for span in ctx
            .event_scope()
            .into_iter()
            .flat_map(|scope| scope.from_root())
        {
            let extensions = span.extensions();
            let Some(recorded) = extensions.get::<FormattedFields<N>>() else {
                continue;
            };
            if let Ok(serde_json::Value::Object(map)) = serde_json::from_str(&recorded.fields) {
                fields.extend(map);
            }
        }
        event.record(&mut JsonVisitor(&mut fields));
        writeln!(writer, "{}", serde_json::Value::Object(fields))
    }
}

struct JsonVisitor<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl Visit for JsonVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}

/// What the access log and the request metrics say of one request.
pub struct AccessLine<'a> {
    pub request_id: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub action: &'a str,
    pub status: u16,
    pub duration_ms: f64,
    pub user_id: Option<&'a str>,
}

impl AccessLine<'_> {
    pub fn emit(&self) {
        tracing::info!(
            target: "access",
            request_id = self.request_id,
            method = self.method,
            path = self.path,
            action = self.action,
            status = self.status,
            duration_ms = self.duration_ms,
            user_id = self.user_id,
            "request"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// What `log` writes through the JSON subscriber `init` installs.
    fn json_lines(log: impl FnOnce()) -> String {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .fmt_fields(JsonFields::new())
            .event_format(JsonLines)
            .finish();
        tracing::subscriber::with_default(subscriber, log);
        let out = buffer.0.lock().unwrap().clone();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn access_line_is_one_json_object_with_the_spec_fields() {
        let out = json_lines(|| {
            AccessLine {
                request_id: "r-1",
                method: "POST",
                path: "/api/stripe/create-checkout",
                action: "checkout",
                status: 503,
                duration_ms: 1.5,
                user_id: None,
            }
            .emit();
        });
        assert_eq!(out.lines().count(), 1, "{out}");
        let line: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert!(line["ts"].as_str().unwrap().contains('T'));
        assert_eq!(line["level"], "info");
        assert_eq!(line["request_id"], "r-1");
        assert_eq!(line["method"], "POST");
        assert_eq!(line["path"], "/api/stripe/create-checkout");
        assert_eq!(line["action"], "checkout");
        assert_eq!(line["status"], 503);
        assert_eq!(line["duration_ms"], 1.5);
        assert!(line.get("user_id").is_none(), "unknown user must be absent");
    }

    #[test]
    fn lines_inside_a_request_span_carry_its_request_id() {
        let out = json_lines(|| {
            let span = tracing::info_span!("request", request_id = "r-9");
            span.in_scope(|| tracing::warn!(endpoint = "/customers", "retrying a Stripe call"));
        });
        let line: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(line["request_id"], "r-9", "{out}");
        assert_eq!(line["endpoint"], "/customers");
        assert_eq!(line["level"], "warn");
    }
}
