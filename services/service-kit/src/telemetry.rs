//! Structured logs: one JSON object per line by default, human-readable lines with
//! `LOG_FORMAT=pretty`. Every line written while a request is being served carries that
//! request's id.
//!
//! The request id travels in a task-local (`scope_request_id`), not in a tracing span, and the
//! line format is written here rather than by tracing-subscriber's JSON formatter: a span per
//! request had its fields formatted on creation, which cost a tenth of a service's peak
//! throughput even for requests that log nothing. Now the id is only read when a line is
//! actually written.
//!
//! Lines are written by a background thread, so a request never waits on the log's I/O. The
//! writer blocks rather than drops when its buffer is full: no log line is ever lost.

use std::{fmt, future::Future};

use axum::http::HeaderValue;

use serde_json::{Map, Value};
use tracing::{
    field::{Field, Visit},
    Event, Subscriber,
};
use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::{
    fmt::{format::Writer, FmtContext, FormatEvent, FormatFields},
    layer::SubscriberExt,
    registry::LookupSpan,
    util::SubscriberInitExt,
    EnvFilter,
};

/// What a task serving one request (or handling one event) knows about it.
#[derive(Clone, Debug)]
pub struct RequestContext {
    /// As echoed in `X-Request-Id`; on every log line written while serving.
    pub id: HeaderValue,
    /// The caller's W3C `traceparent`, carried into the events this work publishes.
    pub traceparent: Option<HeaderValue>,
}

tokio::task_local! {
    static REQUEST: RequestContext;
}

/// Runs `future` within `context`: its id on every log line it writes, its trace on every
/// event it publishes.
pub fn scope_request<F: Future>(
    context: RequestContext,
    future: F,
) -> tokio::task::futures::TaskLocalFuture<RequestContext, F> {
    REQUEST.scope(context, future)
}

/// The id of the request being served on this task, if any.
pub fn current_request_id() -> Option<String> {
    REQUEST
        .try_with(|c| c.id.to_str().unwrap_or("-").to_owned())
        .ok()
}

/// The `traceparent` of the request or event being handled on this task, if any.
pub fn current_traceparent() -> Option<String> {
    REQUEST
        .try_with(|c| {
            c.traceparent
                .as_ref()
                .and_then(|t| t.to_str().ok().map(str::to_owned))
        })
        .ok()
        .flatten()
}

/// Installs the global subscriber. Level from `RUST_LOG` (default `default_filter`). Keep the
/// returned guard alive until exit: dropping it flushes what is still buffered. Calling this
/// twice is harmless, which tests rely on.
pub fn init(default_filter: &str) -> WorkerGuard {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let pretty = std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("pretty"));
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .finish(std::io::stdout());
    let layer = tracing_subscriber::fmt::layer()
        .event_format(Lines { pretty })
        .with_writer(writer);
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(layer)
        .try_init();
    guard
}

/// For tests: logs only when `TEST_LOG` is set, so a passing run stays quiet.
pub fn init_for_tests() {
    if std::env::var_os("TEST_LOG").is_some() {
        // Tests end without a shutdown; the guard lives as long as the test binary.
        std::mem::forget(init("info"));
    }
}

/// The trace id of a W3C `traceparent` (`00-<trace id>-<span id>-<flags>`), if it has one.
fn trace_id(traceparent: &str) -> Option<&str> {
    let id = traceparent.split('-').nth(1)?;
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

/// Writes one event as a line: JSON (`timestamp`, `level`, `message`, the event's fields,
/// `target`, `request_id`, `trace_id`) or, when `pretty`, `timestamp LEVEL message key=value ...`.
struct Lines {
    pretty: bool,
}

impl<S, N> FormatEvent<S, N> for Lines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Fields(Map::new());
        event.record(&mut fields);
        let mut fields = fields.0;
        if !fields.contains_key("request_id") {
            if let Some(id) = current_request_id() {
                fields.insert("request_id".into(), Value::String(id));
            }
        }
        if !fields.contains_key("trace_id") {
            if let Some(id) = current_traceparent().as_deref().and_then(trace_id) {
                fields.insert("trace_id".into(), Value::String(id.to_owned()));
            }
        }
        let timestamp = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let level = event.metadata().level().as_str();
        if self.pretty {
            let message = fields.remove("message").unwrap_or(Value::Null);
            write!(
                writer,
                "{timestamp} {level:>5} {}",
                message.as_str().unwrap_or_default()
            )?;
            for (key, value) in &fields {
                match value {
                    Value::String(s) => write!(writer, " {key}={s}")?,
                    other => write!(writer, " {key}={other}")?,
                }
            }
            writeln!(writer)
        } else {
            let mut line = Map::with_capacity(fields.len() + 3);
            line.insert("timestamp".into(), Value::String(timestamp));
            line.insert("level".into(), Value::String(level.to_owned()));
            line.extend(fields);
            line.insert(
                "target".into(),
                Value::String(event.metadata().target().to_owned()),
            );
            writeln!(writer, "{}", Value::Object(line))
        }
    }
}

/// Collects an event's fields as JSON values.
struct Fields(Map<String, Value>);

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().to_owned(), Value::String(value.to_owned()));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), Value::Bool(value));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0
            .insert(field.name().to_owned(), Value::String(value.to_string()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), Value::String(format!("{value:?}")));
    }
}
