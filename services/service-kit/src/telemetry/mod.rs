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

pub mod export;
mod wire;

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
    layer::{Layer, SubscriberExt},
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
    /// Never exported, nor its children: the platform's own probes and scrapes.
    quiet: bool,
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
                flags: if export::sample_child(trace, flags & 1 == 1) {
                    flags | 1
                } else {
                    flags & !1
                },
                quiet: false,
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
                    flags: u8::from(export::sample_root(trace)),
                    quiet: false,
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
            quiet: self.quiet,
        }
    }

    /// The span a `traceparent` this process sent names (`sent`), whose parent is the
    /// caller's span when `caller` is of the same trace: how the gateway, which writes the
    /// header itself, exports its own span.
    pub fn of_sent(sent: &str, caller: Option<&str>) -> Option<Self> {
        let (trace, id, flags) = parse_traceparent(sent)?;
        let parent = caller
            .and_then(parse_traceparent)
            .filter(|(t, _, _)| *t == trace)
            .map(|(_, p, _)| p);
        Some(Self {
            trace,
            id,
            parent,
            flags,
            quiet: false,
        })
    }

    /// This span, never exported (nor its children).
    pub fn quiet(self) -> Self {
        Self {
            quiet: true,
            ..self
        }
    }

    /// Whether this span is exported when spans are: its trace is sampled (the caller's
    /// `traceparent` flags) and it is not quiet.
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1 && !self.quiet
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
/// Read at fixed offsets (`vv-<32>-<16>-ff`), as the spec lays it out: splitting on `-` was
/// a fifth of what a request's span cost.
fn parse_traceparent(value: &str) -> Option<(u128, u64, u8)> {
    let value = value.trim();
    let bytes = value.as_bytes();
    if bytes.len() < 55 || bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
        return None;
    }
    let version = &value[..2];
    // Version 00 is exactly 55 characters; a later one may go on after a `-`.
    if version == "ff" || (bytes.len() > 55 && (version == "00" || bytes[55] != b'-')) {
        return None;
    }
    hex(version)?;
    let trace = hex(&value[3..35]).filter(|t| *t != 0)?;
    let parent = u64::try_from(hex(&value[36..52])?)
        .ok()
        .filter(|p| *p != 0)?;
    let flags = u8::try_from(hex(&value[53..55])?).ok()?;
    Some((trace, parent, flags))
}

/// The value of at most 32 hex digits. By hand: `u128::from_str_radix` was a third of what
/// a request's span cost (callgrind, `scripts/bench-tracing.sh`); a table and two 64-bit
/// halves (rather than shifting a `u128` per digit) halve what is left.
fn hex(digits: &str) -> Option<u128> {
    let bytes = digits.as_bytes();
    if bytes.is_empty() || bytes.len() > 32 {
        return None;
    }
    let split = bytes.len().saturating_sub(16);
    let high = hex64(&bytes[..split])?;
    let low = hex64(&bytes[split..])?;
    Some(u128::from(high) << 64 | u128::from(low))
}

/// Each byte's value as a hex digit, or `INVALID`.
const INVALID: u8 = 0xff;
const HEX_DIGITS: [u8; 256] = {
    let mut table = [INVALID; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        table[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};

/// The value of at most 16 hex digits (0 for none).
fn hex64(bytes: &[u8]) -> Option<u64> {
    let mut value = 0u64;
    let mut seen = 0u8;
    for &b in bytes {
        let digit = HEX_DIGITS[usize::from(b)];
        seen |= digit;
        value = (value << 4) | u64::from(digit & 0x0f);
    }
    // An invalid byte sets the high bits, which no digit has.
    (seen & 0xf0 == 0).then_some(value)
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

/// Keeps the log writer and the span exporter alive: dropping it (at exit) writes what is
/// still buffered and sends the spans still queued.
pub struct Guard {
    _logs: Option<WorkerGuard>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        export::flush();
    }
}

/// Installs the global subscriber and, when the environment names an OTLP endpoint, starts
/// exporting spans (see [`export`]). Level from `RUST_LOG` (default `default_filter`). Keep
/// the returned guard alive until exit. Calling this twice is harmless, which tests rely on.
pub fn init(default_filter: &str) -> Guard {
    let logs = install(Some(default_filter));
    match export::Sampler::from_env() {
        Ok(sampler) => sampler.install(),
        Err(e) => tracing::error!(error = %e, "keeping the default sampler (every trace)"),
    }
    match export::start_from_env() {
        Ok(true) => tracing::info!("exporting spans over OTLP"),
        Ok(false) => {}
        Err(e) => tracing::error!(error = %e, "spans are not exported"),
    }
    Guard { _logs: logs }
}

/// The subscriber: log lines (unless `default_filter` is none: tests without `TEST_LOG`)
/// and the database queries' spans.
fn install(default_filter: Option<&str>) -> Option<WorkerGuard> {
    let (lines, guard) = match default_filter {
        Some(default_filter) => {
            let filter = EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new(default_filter));
            let pretty =
                std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("pretty"));
            let (writer, guard) = NonBlockingBuilder::default()
                .lossy(false)
                .finish(std::io::stdout());
            let layer = tracing_subscriber::fmt::layer()
                .event_format(Lines { pretty })
                .with_writer(writer)
                .with_filter(filter);
            (Some(layer), Some(guard))
        }
        None => (None, None),
    };
    let queries = export::QuerySpans.with_filter(export::OnlyQueries);
    let _ = tracing_subscriber::registry()
        .with(lines)
        .with(queries)
        .try_init();
    guard
}

/// For tests: logs only when `TEST_LOG` is set, so a passing run stays quiet (and a test
/// binary may install a subscriber of its own). A test that exports spans installs what it
/// needs with [`export::start`].
pub fn init_for_tests() {
    if std::env::var_os("TEST_LOG").is_some() {
        // Tests end without a shutdown; the guard lives as long as the test binary.
        std::mem::forget(install(Some("info")));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_digits_are_read_whole_or_not_at_all() {
        use super::hex;
        assert_eq!(hex("0"), Some(0));
        assert_eq!(hex("fF"), Some(255));
        assert_eq!(
            hex("4bf92f3577b34da6a3ce929d0e0e4736"),
            Some(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736)
        );
        assert_eq!(hex("100000000000000000"), Some(1 << 68));
        for bad in [
            "",
            "g",
            "0x1",
            "4bf92f3577b34da6a3ce929d0e0e4736a",
            "12 4",
            "é",
        ] {
            assert_eq!(hex(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_span_continues_a_valid_traceparent_and_starts_a_trace_otherwise() {
        let caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let span = Span::child_of(Some(caller));
        assert_eq!(span.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(span.parent_id().as_deref(), Some("00f067aa0ba902b7"));
        assert_ne!(span.id(), "00f067aa0ba902b7");
        let sent = span.traceparent();
        assert_eq!(sent.len(), 55);
        assert_eq!(
            sent,
            format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01", span.id())
        );
        let child = Span::child_of(Some(&sent));
        assert_eq!(child.parent_id(), Some(span.id()));
        assert_eq!(span.child().parent_id(), Some(span.id()));
        assert_eq!(span.child().trace_id(), span.trace_id());

        for bad in [
            "",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            let fresh = Span::child_of(Some(bad));
            assert_eq!(fresh.parent_id(), None, "{bad:?} starts a new trace");
            assert_ne!(
                fresh.trace_id(),
                "4bf92f3577b34da6a3ce929d0e0e4736",
                "{bad:?}"
            );
        }
        // A later version may carry more fields.
        let later = Span::child_of(Some(
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more",
        ));
        assert_eq!(later.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
    }
}
