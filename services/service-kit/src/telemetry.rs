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
    /// This work's span: a child of the caller's `traceparent`, whose trace the events this
    /// work publishes continue.
    pub span: Span,
}

/// One span of a W3C trace: this hop's id, its trace, and the span it was called from.
///
/// Written by hand rather than as a `tracing` span: a span per request cost a tenth of a
/// service's peak throughput (see the module's doc); these are three integers made from one
/// random draw, formatted only when a line is written or an event published.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    trace: u128,
    id: u64,
    parent: Option<u64>,
    flags: u8,
}

impl Span {
    /// A new span, the child of the one `traceparent` names, or the root of a new trace
    /// when there is none or it is malformed.
    pub fn child_of(traceparent: Option<&str>) -> Self {
        let mut id = 0;
        while id == 0 {
            id = rand::random::<u64>();
        }
        match traceparent.and_then(parse_traceparent) {
            Some((trace, parent, flags)) => Self {
                trace,
                id,
                parent: Some(parent),
                flags,
            },
            None => {
                let mut trace = 0;
                while trace == 0 {
                    trace = rand::random::<u128>();
                }
                Self {
                    trace,
                    id,
                    parent: None,
                    flags: 1,
                }
            }
        }
    }

    /// A span within this one (an event recorded while serving a request).
    pub fn child(&self) -> Self {
        let mut id = 0;
        while id == 0 || id == self.id {
            id = rand::random::<u64>();
        }
        Self {
            trace: self.trace,
            id,
            parent: Some(self.id),
            flags: self.flags,
        }
    }

    /// The `traceparent` that makes the receiver this span's child.
    pub fn traceparent(&self) -> String {
        format!("00-{:032x}-{:016x}-{:02x}", self.trace, self.id, self.flags)
    }

    pub fn trace_id(&self) -> String {
        format!("{:032x}", self.trace)
    }

    pub fn id(&self) -> String {
        format!("{:016x}", self.id)
    }

    pub fn parent_id(&self) -> Option<String> {
        self.parent.map(|p| format!("{p:016x}"))
    }
}

/// `(trace id, parent id, flags)` of a W3C `traceparent`, all non-zero as the spec requires.
fn parse_traceparent(value: &str) -> Option<(u128, u64, u8)> {
    let mut parts = value.trim().split('-');
    let version = parts.next()?;
    let (trace, parent, flags) = (parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    if !hex(version, 2) || version == "ff" || !hex(trace, 32) || !hex(parent, 16) || !hex(flags, 2)
    {
        return None;
    }
    if version == "00" && parts.next().is_some() {
        return None;
    }
    let trace = u128::from_str_radix(trace, 16).ok().filter(|t| *t != 0)?;
    let parent = u64::from_str_radix(parent, 16).ok().filter(|p| *p != 0)?;
    Some((trace, parent, u8::from_str_radix(flags, 16).ok()?))
}

static SPAN_LOG: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether spans are logged: each request's access line, each event recorded and each
/// event handled then carries `span_id` and `parent_span_id`, from which `gravity trace`
/// draws a request's path through the platform. On with the access log (`ACCESS_LOG`).
pub fn log_spans(on: bool) {
    SPAN_LOG.store(on, std::sync::atomic::Ordering::Relaxed);
}

pub fn spans_logged() -> bool {
    SPAN_LOG.load(std::sync::atomic::Ordering::Relaxed)
}

/// The span of the request or event being handled on this task, if any.
pub fn current_span() -> Option<Span> {
    REQUEST.try_with(|c| c.span).ok()
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

/// The `traceparent` that makes a callee the child of the request or event being handled
/// on this task, if any.
pub fn current_traceparent() -> Option<String> {
    current_span().map(|s| s.traceparent())
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
            if let Some(span) = current_span() {
                fields.insert("trace_id".into(), Value::String(span.trace_id()));
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
