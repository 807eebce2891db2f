//! Spans sent to an OpenTelemetry collector (Jaeger, Tempo, an OpenTelemetry Collector ...)
//! over OTLP/HTTP with protobuf, when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) names one; `OTEL_SERVICE_NAME` names the service
//! (default: the program's name).
//!
//! The spans are this crate's own [`Span`]s, written as OTLP protobuf when they end
//! (`super::wire`) into a bounded queue that a thread of its own sends in batches, rather
//! than spans of the OpenTelemetry SDK's tracer or of `tracing`: their ids are already on
//! the wire (`traceparent`, the events' envelopes) and in the log lines `gravity trace`
//! reads; a `tracing` span per request cost a tenth of a service's peak throughput, and
//! the SDK's conversions most of what exporting cost (see `docs/BENCHMARKS.md`). With no
//! endpoint nothing is built, and ending a span costs one atomic load. The queue drops
//! when full: a slow or absent collector never slows a request down nor grows the
//! service's memory, and one that fails a batch pauses the making of spans ([`PAUSE`]).
//!
//! Children come from three places: the database queries sqlx reports (`sqlx::query` events,
//! read by [`QuerySpans`]), the Redis commands sent through [`TracedRedis`], and the events
//! recorded, published and handled (`crate::events`).

use std::{
    borrow::Cow,
    future::Future,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Condvar, Mutex, OnceLock, PoisonError,
    },
    time::{Duration, SystemTime},
};

use tracing::{
    field::{Field, Visit},
    subscriber::Interest,
    Event, Subscriber,
};
use tracing_subscriber::layer::{Context, Layer};

use super::{wire, Span};

/// What a span is to its trace (OTLP's `SpanKind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Internal,
    /// Handles a request from another process.
    Server,
    /// Calls another system (a database, Redis, a service).
    Client,
    /// Hands a message over for later delivery.
    Producer,
    /// Handles a message.
    Consumer,
}

/// An attribute of a span: a key from OpenTelemetry's semantic conventions (or `gravity.*`)
/// and its value.
#[derive(Clone, Debug, PartialEq)]
pub struct KeyValue {
    pub key: &'static str,
    pub value: Value,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Str(Cow<'static, str>),
    Bool(bool),
    I64(i64),
    F64(f64),
}

impl KeyValue {
    pub fn new(key: &'static str, value: impl Into<Value>) -> Self {
        Self {
            key,
            value: value.into(),
        }
    }
}

impl From<&'static str> for Value {
    fn from(s: &'static str) -> Self {
        Self::Str(Cow::Borrowed(s))
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Self::Str(Cow::Owned(s))
    }
}

impl From<Cow<'static, str>> for Value {
    fn from(s: Cow<'static, str>) -> Self {
        Self::Str(s)
    }
}

/// A request's method: the standard ones without an allocation.
impl From<&http::Method> for Value {
    fn from(method: &http::Method) -> Self {
        use http::Method;
        let name = match *method {
            Method::GET => "GET",
            Method::POST => "POST",
            Method::PUT => "PUT",
            Method::PATCH => "PATCH",
            Method::DELETE => "DELETE",
            Method::HEAD => "HEAD",
            Method::OPTIONS => "OPTIONS",
            _ => return Self::Str(Cow::Owned(method.as_str().to_owned())),
        };
        Self::Str(Cow::Borrowed(name))
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Self::Bool(b)
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Self::I64(i)
    }
}

impl From<f64> for Value {
    fn from(f: f64) -> Self {
        Self::F64(f)
    }
}

static EXPORTER: OnceLock<Exporter> = OnceLock::new();

/// Spans waiting to be sent, as bytes ready for the wire, and a thread that sends them.
struct Exporter {
    queue: Mutex<Queue>,
    /// Wakes the sending thread: a full batch, or a flush asked for.
    wake: Condvar,
    /// Wakes those waiting for a flush.
    flushed: Condvar,
    timeout: Duration,
}

#[derive(Default)]
struct Queue {
    /// `ScopeSpans.spans` entries (`wire::write_span`).
    spans: Vec<u8>,
    count: usize,
    /// Spans dropped because the queue was full, since the last batch was sent.
    dropped: u64,
    /// Flushes asked for, and the last one done.
    flush_asked: u64,
    flush_done: u64,
}

/// A batch is sent when it holds this many spans, or when the oldest has waited
/// [`BATCH_DELAY`].
const BATCH_SPANS: usize = 512;
const BATCH_DELAY: Duration = Duration::from_millis(500);
/// Spans beyond this many bytes waiting (some 15,000 spans) are dropped: a slow or absent
/// collector never grows the service's memory.
const MAX_QUEUED_BYTES: usize = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("OTLP endpoint {0:?} is not an http:// URL (spans are sent to a collector over plain OTLP/HTTP; run one beside the service)")]
    Endpoint(String),
    #[error("{var}: {why} (expected key=value pairs separated by commas, values percent-encoded)")]
    Headers { var: &'static str, why: String },
    #[error("{var}={value:?} is not a timeout in milliseconds")]
    Timeout { var: &'static str, value: String },
    #[error("cannot start the span exporter: {0}")]
    Start(String),
    #[error("spans are already exported (to one endpoint per process)")]
    AlreadyStarted,
}

/// The first of `vars` the environment sets to something other than blanks.
fn env_first(vars: &[&'static str]) -> Option<(&'static str, String)> {
    vars.iter().find_map(|var| {
        std::env::var(var)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .map(|v| (*var, v.trim().to_owned()))
    })
}

/// Starts exporting when the environment names an endpoint (`OTEL_EXPORTER_OTLP_ENDPOINT`,
/// to which `/v1/traces` is appended, or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, used as it
/// is); `Ok(false)` when it names none. `OTEL_EXPORTER_OTLP_[TRACES_]HEADERS` and
/// `OTEL_EXPORTER_OTLP_[TRACES_]TIMEOUT` (milliseconds, 10 s by default) are read too, as the
/// OpenTelemetry specification has them, and the resource's attributes from
/// `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`.
pub fn start_from_env() -> Result<bool, ExportError> {
    let url = match (
        env_first(&["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]),
        env_first(&["OTEL_EXPORTER_OTLP_ENDPOINT"]),
    ) {
        (Some((_, url)), _) => url,
        (None, Some((_, base))) => format!("{}/v1/traces", base.trim_end_matches('/')),
        (None, None) => return Ok(false),
    };
    // Already started (a paused exporter is started too: `exporting()` is not the test).
    if EXPORTER.get().is_some() {
        return Ok(false);
    }
    let headers = match env_first(&[
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        "OTEL_EXPORTER_OTLP_HEADERS",
    ]) {
        Some((var, value)) => {
            parse_headers(&value).map_err(|why| ExportError::Headers { var, why })?
        }
        None => Vec::new(),
    };
    let timeout = match env_first(&[
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
        "OTEL_EXPORTER_OTLP_TIMEOUT",
    ]) {
        Some((var, value)) => value
            .parse::<u64>()
            .map(Duration::from_millis)
            .map_err(|_| ExportError::Timeout { var, value })?,
        None => Duration::from_secs(10),
    };
    install(&url, headers, timeout, resource(None))?;
    Ok(true)
}

/// Exports to the OTLP/HTTP endpoint `base` (`/v1/traces` is appended) as `service`, for
/// tests: installs the subscriber that turns database queries into spans when none is yet.
pub fn start(base: &str, service: &str) -> Result<(), ExportError> {
    std::mem::forget(super::install(None));
    let url = format!("{}/v1/traces", base.trim_end_matches('/'));
    install(
        &url,
        Vec::new(),
        Duration::from_secs(10),
        resource(Some(service)),
    )
}

/// `OTEL_EXPORTER_OTLP_HEADERS`' form: `key=value,key2=value2`, values percent-encoded.
fn parse_headers(value: &str) -> Result<Vec<(String, String)>, String> {
    value
        .split(',')
        .filter(|pair| !pair.trim().is_empty())
        .map(|pair| {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| format!("{pair:?} has no '='"))?;
            let value = percent_encoding::percent_decode_str(value.trim())
                .decode_utf8()
                .map_err(|_| format!("the value of {:?} is not UTF-8", key.trim()))?;
            Ok((key.trim().to_owned(), value.into_owned()))
        })
        .collect()
}

/// The resource the spans come from: `service.name` (`service`, else `OTEL_SERVICE_NAME`,
/// else the program's name), what `OTEL_RESOURCE_ATTRIBUTES` adds, and the SDK's own.
fn resource(service: Option<&str>) -> Vec<KeyValue> {
    let mut attributes: Vec<KeyValue> = std::env::var("OTEL_RESOURCE_ATTRIBUTES")
        .ok()
        .and_then(|v| parse_headers(&v).ok())
        .unwrap_or_default()
        .into_iter()
        .filter(|(key, _)| key != "service.name")
        // Keys are 'static for the spans' attributes; the resource's are made once.
        .map(|(key, value)| KeyValue::new(Box::leak(key.into_boxed_str()), value))
        .collect();
    let name = match service {
        Some(name) => name.to_owned(),
        None => env_first(&["OTEL_SERVICE_NAME"])
            .map(|(_, name)| name)
            .or_else(|| {
                std::env::current_exe()
                    .ok()
                    .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
            })
            .unwrap_or_else(|| "unknown_service".to_owned()),
    };
    attributes.insert(0, KeyValue::new("service.name", name));
    attributes.push(KeyValue::new("telemetry.sdk.name", "gravity.service-kit"));
    attributes.push(KeyValue::new("telemetry.sdk.language", "rust"));
    attributes.push(KeyValue::new(
        "telemetry.sdk.version",
        env!("CARGO_PKG_VERSION"),
    ));
    attributes
}

fn install(
    url: &str,
    headers: Vec<(String, String)>,
    timeout: Duration,
    resource: Vec<KeyValue>,
) -> Result<(), ExportError> {
    if !url.starts_with("http://") || reqwest::Url::parse(url).is_err() {
        return Err(ExportError::Endpoint(url.to_owned()));
    }
    let mut header_map = reqwest::header::HeaderMap::new();
    for (key, value) in headers {
        let name = reqwest::header::HeaderName::from_bytes(key.as_bytes());
        let value = reqwest::header::HeaderValue::from_str(&value);
        match (name, value) {
            (Ok(name), Ok(value)) => {
                header_map.insert(name, value);
            }
            _ => {
                return Err(ExportError::Headers {
                    var: "OTEL_EXPORTER_OTLP_HEADERS",
                    why: format!("{key:?} is not a valid header"),
                })
            }
        }
    }
    let client = reqwest::Client::builder()
        .default_headers(header_map)
        .timeout(timeout)
        .build()
        .map_err(|e| ExportError::Start(e.to_string()))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ExportError::Start(e.to_string()))?;
    let exporter = Exporter {
        queue: Mutex::new(Queue::default()),
        wake: Condvar::new(),
        flushed: Condvar::new(),
        timeout,
    };
    EXPORTER
        .set(exporter)
        .map_err(|_| ExportError::AlreadyStarted)?;
    let header = wire::Header::new(&resource, "gravity.service-kit", env!("CARGO_PKG_VERSION"));
    let url = url.to_owned();
    std::thread::Builder::new()
        .name("otlp-export".to_owned())
        .spawn(move || send_batches(&runtime, &client, &url, &header))
        .map(drop)
        .map_err(|e| ExportError::Start(e.to_string()))
}

/// The sending thread: waits for a full batch, a flush or [`BATCH_DELAY`], then sends what is
/// queued, forever.
fn send_batches(
    runtime: &tokio::runtime::Runtime,
    client: &reqwest::Client,
    url: &str,
    header: &wire::Header,
) {
    let Some(exporter) = EXPORTER.get() else {
        return;
    };
    let mut spare = Vec::new();
    loop {
        let (mut batch, count, dropped, flush) = {
            let (mut queue, _) = exporter
                .wake
                .wait_timeout_while(exporter.lock(), BATCH_DELAY, |queue| {
                    queue.count < BATCH_SPANS && queue.flush_asked == queue.flush_done
                })
                .unwrap_or_else(PoisonError::into_inner);
            let batch = std::mem::replace(&mut queue.spans, std::mem::take(&mut spare));
            let count = std::mem::take(&mut queue.count);
            (
                batch,
                count,
                std::mem::take(&mut queue.dropped),
                queue.flush_asked,
            )
        };
        if dropped > 0 {
            tracing::warn!(dropped, "spans dropped: the collector is not keeping up");
        }
        if count > 0 {
            let body = header.request(&batch);
            let sent = runtime.block_on(async {
                let response = client
                    .post(url)
                    .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf")
                    .body(body)
                    .send()
                    .await?;
                response.error_for_status()?.bytes().await
            });
            let until = match sent {
                Ok(_) => 0,
                Err(error) => {
                    tracing::warn!(%error, spans = count, "the OTLP collector did not take a batch of spans");
                    now_ms().saturating_add(PAUSE.as_millis() as u64).max(1)
                }
            };
            PAUSED_UNTIL.store(until, Ordering::Relaxed);
        }
        batch.clear();
        spare = batch;
        let mut queue = exporter.lock();
        queue.flush_done = flush;
        exporter.flushed.notify_all();
    }
}

impl Exporter {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Which traces are sampled (exported), as OpenTelemetry's `OTEL_TRACES_SAMPLER` and
/// `OTEL_TRACES_SAMPLER_ARG` say: `always_on`, `always_off`, `traceidratio`, and their
/// `parentbased_` forms (the default, `parentbased_always_on`), where a span with a caller
/// follows the caller's decision (its `traceparent` flags) and only new traces are decided
/// here. A ratio keeps the traces whose id falls in that share, so every service that decides
/// decides alike. Read once, at [`super::init`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampler {
    pub parent_based: bool,
    /// The share of traces kept, 0 to 1.
    pub ratio: f64,
}

static PARENT_BASED: AtomicBool = AtomicBool::new(true);
/// Traces whose low 64 bits are below this are kept; `u64::MAX` keeps all.
static THRESHOLD: AtomicU64 = AtomicU64::new(u64::MAX);

impl Sampler {
    /// The sampler the environment names (the default when it names none).
    pub fn from_env() -> Result<Self, String> {
        let name = std::env::var("OTEL_TRACES_SAMPLER").unwrap_or_default();
        let arg = std::env::var("OTEL_TRACES_SAMPLER_ARG").ok();
        Self::parse(name.trim(), arg.as_deref())
    }

    pub fn parse(name: &str, arg: Option<&str>) -> Result<Self, String> {
        let (parent_based, rest) = match name.strip_prefix("parentbased_") {
            Some(rest) => (true, rest),
            None if name.is_empty() => (true, "always_on"),
            None => (false, name),
        };
        let ratio = match rest {
            "always_on" => 1.0,
            "always_off" => 0.0,
            "traceidratio" => match arg.map(str::trim) {
                None | Some("") => 1.0,
                Some(arg) => arg
                    .parse::<f64>()
                    .ok()
                    .filter(|r| (0.0..=1.0).contains(r))
                    .ok_or_else(|| {
                        format!("OTEL_TRACES_SAMPLER_ARG={arg:?} is not a ratio from 0 to 1")
                    })?,
            },
            _ => {
                return Err(format!(
                    "OTEL_TRACES_SAMPLER={name:?} is not one of always_on, always_off, \
                     traceidratio, parentbased_always_on, parentbased_always_off, \
                     parentbased_traceidratio"
                ))
            }
        };
        Ok(Self {
            parent_based,
            ratio,
        })
    }

    /// Makes this the process's sampler.
    pub fn install(self) {
        PARENT_BASED.store(self.parent_based, Ordering::Relaxed);
        let threshold = if self.ratio >= 1.0 {
            u64::MAX
        } else {
            // Below 2^64 once scaled: the cast saturates, and 0 keeps nothing.
            (self.ratio * 18_446_744_073_709_551_616.0) as u64
        };
        THRESHOLD.store(threshold, Ordering::Relaxed);
    }
}

/// Whether a new trace with id `trace` is sampled.
pub fn sample_root(trace: u128) -> bool {
    let threshold = THRESHOLD.load(Ordering::Relaxed);
    threshold == u64::MAX || (trace as u64) < threshold
}

/// Whether a span of trace `trace` whose caller decided `caller_sampled` is sampled.
pub fn sample_child(trace: u128, caller_sampled: bool) -> bool {
    if PARENT_BASED.load(Ordering::Relaxed) {
        caller_sampled
    } else {
        sample_root(trace)
    }
}

/// Whether a caller's decision is followed (the default) rather than made again.
pub fn parent_based() -> bool {
    PARENT_BASED.load(Ordering::Relaxed)
}

/// Whether spans are exported: there is a collector, and it did not refuse the last batch
/// within the last [`PAUSE`].
pub fn exporting() -> bool {
    EXPORTER.get().is_some() && !paused()
}

/// How long spans are not made after the collector failed a batch: those made would be
/// dropped (the queue fills), and making them cost a request several microseconds. Then
/// spans flow again, and the next batch tells whether the collector is back.
pub const PAUSE: Duration = Duration::from_secs(5);

/// While the collector is failing: when spans may be made again, in milliseconds since
/// `EPOCH`; 0 when it is not.
static PAUSED_UNTIL: AtomicU64 = AtomicU64::new(0);
static EPOCH: OnceLock<std::time::Instant> = OnceLock::new();

fn now_ms() -> u64 {
    let epoch = EPOCH.get_or_init(std::time::Instant::now);
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

fn paused() -> bool {
    let until = PAUSED_UNTIL.load(Ordering::Relaxed);
    // The clock is read only while the collector is failing.
    until != 0 && now_ms() < until
}

/// Sends what is queued and waits for it (bounded by the export timeout): at shutdown.
pub fn flush() {
    let Some(exporter) = EXPORTER.get() else {
        return;
    };
    let mut queue = exporter.lock();
    queue.flush_asked += 1;
    let ticket = queue.flush_asked;
    exporter.wake.notify_one();
    let wait = exporter.timeout + Duration::from_secs(1);
    drop(
        exporter
            .flushed
            .wait_timeout_while(queue, wait, |queue| queue.flush_done < ticket)
            .unwrap_or_else(PoisonError::into_inner),
    );
}

/// A span that has ended, as exported.
pub struct Finished {
    pub span: Span,
    pub kind: Kind,
    pub name: Cow<'static, str>,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attributes: Vec<KeyValue>,
    /// Why it failed, when it did (the span's status is then an error).
    pub error: Option<Cow<'static, str>>,
}

impl Finished {
    /// A span of `kind` named `name` that started `took` ago and ends now.
    pub fn ending_now(
        span: Span,
        kind: Kind,
        name: impl Into<Cow<'static, str>>,
        took: Duration,
    ) -> Self {
        let end = SystemTime::now();
        Self {
            span,
            kind,
            name: name.into(),
            start: end.checked_sub(took).unwrap_or(end),
            end,
            // Room for a server span's attributes: one allocation, not a growing vector.
            attributes: Vec::with_capacity(6),
            error: None,
        }
    }

    pub fn with(mut self, attribute: KeyValue) -> Self {
        self.attributes.push(attribute);
        self
    }

    pub fn failed(mut self, why: impl Into<Cow<'static, str>>) -> Self {
        self.error = Some(why.into());
        self
    }
}

/// Queues `finished` for export, when spans are exported and its trace is sampled (the
/// caller's `traceparent` flags; the platform's own probes and scrapes never are).
pub fn export(finished: Finished) {
    let Some(exporter) = EXPORTER.get() else {
        return;
    };
    if paused() || !finished.span.sampled() {
        return;
    }
    let mut queue = exporter.lock();
    if queue.spans.len() >= MAX_QUEUED_BYTES {
        queue.dropped += 1;
        return;
    }
    wire::write_span(&finished, &mut queue.spans);
    queue.count += 1;
    if queue.count == BATCH_SPANS {
        exporter.wake.notify_one();
    }
}

/// Whether the work on this task is in a span that is exported.
fn traced_here() -> bool {
    exporting() && super::current_span().is_some_and(|s| s.sampled())
}

/// Runs `call`, a request to another system (`system`, e.g. `redis`), as a client span named
/// `name` within the current span, when spans are exported.
pub async fn client_call<T, E: std::fmt::Display>(
    system: &'static str,
    name: Cow<'static, str>,
    call: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let Some(parent) = super::current_span().filter(|s| exporting() && s.sampled()) else {
        return call.await;
    };
    let started = std::time::Instant::now();
    let out = call.await;
    let mut finished = Finished::ending_now(parent.child(), Kind::Client, name, started.elapsed())
        .with(KeyValue::new("db.system.name", system));
    if let Err(e) = &out {
        finished = finished.failed(e.to_string());
    }
    export(finished);
    out
}

/// A Redis connection whose commands are client spans of the request or event handling
/// that sends them (`SET`, `EVALSHA`, `pipeline` ...), when spans are exported. Commands sent
/// outside a sampled span, or with no exporter, go straight through.
#[derive(Clone)]
pub struct TracedRedis<C>(pub C);

impl<C: redis::aio::ConnectionLike + Send> redis::aio::ConnectionLike for TracedRedis<C> {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        if !traced_here() {
            return self.0.req_packed_command(cmd);
        }
        let name: Cow<'static, str> = match cmd.args_iter().next() {
            Some(redis::Arg::Simple(bytes)) => {
                String::from_utf8_lossy(bytes).to_ascii_uppercase().into()
            }
            _ => "command".into(),
        };
        Box::pin(client_call("redis", name, self.0.req_packed_command(cmd)))
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        if !traced_here() {
            return self.0.req_packed_commands(cmd, offset, count);
        }
        Box::pin(client_call(
            "redis",
            "pipeline".into(),
            self.0.req_packed_commands(cmd, offset, count),
        ))
    }

    fn get_db(&self) -> i64 {
        self.0.get_db()
    }
}

/// Turns each database query sqlx reports (`sqlx::query` events, logged when a query ends,
/// with its summary, text and duration) into a client span of the work that ran it.
pub(super) struct QuerySpans;

/// Lets through sqlx's query events only, and only while spans are exported: every other
/// callsite is never asked, so this costs nothing elsewhere.
pub(super) struct OnlyQueries;

impl<S> tracing_subscriber::layer::Filter<S> for OnlyQueries {
    fn enabled(&self, meta: &tracing::Metadata<'_>, _cx: &Context<'_, S>) -> bool {
        // sqlx formats a query's summary only for an enabled event: not for unsampled work.
        meta.target() == "sqlx::query" && traced_here()
    }

    fn callsite_enabled(&self, meta: &'static tracing::Metadata<'static>) -> Interest {
        if meta.target() == "sqlx::query" {
            Interest::sometimes()
        } else {
            Interest::never()
        }
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        // sqlx reports queries at DEBUG (slow ones at WARN).
        Some(tracing::level_filters::LevelFilter::DEBUG)
    }
}

impl<S: Subscriber> Layer<S> for QuerySpans {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let Some(parent) = super::current_span().filter(|s| s.sampled()) else {
            return;
        };
        let mut query = Query::default();
        event.record(&mut query);
        // sqlx gives the text only when it is longer than its four-word summary.
        let text = match query.statement.trim() {
            "" => query.summary.trim(),
            text => text,
        };
        let name = query_name(text);
        let mut finished = Finished::ending_now(
            parent.child(),
            Kind::Client,
            name.clone(),
            Duration::from_secs_f64(query.elapsed_secs.max(0.0)),
        )
        .with(KeyValue::new("db.system.name", "postgresql"))
        .with(KeyValue::new("db.query.summary", name))
        // Parameterized statements only (the house rule): the text holds no values.
        .with(KeyValue::new("db.query.text", text.to_owned()));
        if let Some(rows) = query.rows_returned {
            finished = finished.with(KeyValue::new("db.response.returned_rows", rows as i64));
        }
        export(finished);
    }
}

/// A query's span name as OpenTelemetry's conventions have it, `{operation} {table}`
/// (`SELECT users`, `INSERT event_outbox`), or its operation alone when no table follows
/// the usual keyword (`BEGIN`). A `WITH` query is named by the first change it makes, if
/// it makes one.
fn query_name(sql: &str) -> String {
    let words: Vec<&str> = sql
        .split_whitespace()
        .map(|w| w.trim_start_matches('('))
        .collect();
    let Some(first) = words.first() else {
        return "query".to_owned();
    };
    let mut operation = first.to_ascii_uppercase();
    let mut words = &words[..];
    if operation == "WITH" {
        let change = words.iter().position(|w| {
            ["INSERT", "UPDATE", "DELETE"]
                .iter()
                .any(|op| w.eq_ignore_ascii_case(op))
        });
        match change {
            Some(at) => {
                words = &words[at..];
                operation = words[0].to_ascii_uppercase();
            }
            None => return operation,
        }
    }
    let after = match operation.as_str() {
        "SELECT" | "DELETE" => "FROM",
        "INSERT" => "INTO",
        "UPDATE" => "UPDATE",
        _ => return operation,
    };
    let table = words
        .iter()
        .position(|w| w.eq_ignore_ascii_case(after))
        .and_then(|i| words.get(i + 1))
        .map(|t| t.trim_matches(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.')))
        .filter(|t| !t.is_empty());
    match table {
        Some(table) => format!("{operation} {table}"),
        None => operation,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{query_name, Finished, Kind, Sampler};
    use crate::telemetry::Span;

    /// The only test in this binary that starts exporting (one exporter per process).
    #[test]
    fn a_collector_that_fails_a_batch_pauses_the_making_of_spans() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        // Nothing listens there now.
        super::start(&format!("http://127.0.0.1:{port}"), "paused").expect("start");
        assert!(super::exporting());
        let span = Span::child_of(None);
        assert!(span.sampled());
        super::export(Finished::ending_now(
            span,
            Kind::Server,
            "GET /",
            Duration::ZERO,
        ));
        super::flush();
        assert!(
            !super::exporting(),
            "no spans are made while the collector is failing"
        );
    }

    #[test]
    fn endpoints_and_headers_that_cannot_be_used_are_refused_before_anything_starts() {
        use super::{install, ExportError};
        let second = Duration::from_secs(1);
        for url in [
            "https://collector:4318/v1/traces",
            "collector:4318",
            "http://",
        ] {
            assert!(
                matches!(
                    install(url, Vec::new(), second, Vec::new()),
                    Err(ExportError::Endpoint(_))
                ),
                "{url}"
            );
        }
        let bad = vec![("api key".to_owned(), "v".to_owned())];
        assert!(matches!(
            install("http://127.0.0.1:4318/v1/traces", bad, second, Vec::new()),
            Err(ExportError::Headers { .. })
        ));
    }

    #[test]
    fn exporter_headers_are_read_as_the_specification_writes_them() {
        assert_eq!(
            super::parse_headers("api-key=s%20ecret, x-tenant = a=b ,"),
            Ok(vec![
                ("api-key".to_owned(), "s ecret".to_owned()),
                ("x-tenant".to_owned(), "a=b".to_owned()),
            ])
        );
        assert!(super::parse_headers("no-value").is_err());
        assert!(super::parse_headers("k=%ff").is_err());
    }

    #[test]
    fn samplers_are_read_as_opentelemetry_names_them() {
        let on = Sampler {
            parent_based: true,
            ratio: 1.0,
        };
        assert_eq!(Sampler::parse("", None), Ok(on));
        assert_eq!(Sampler::parse("parentbased_always_on", None), Ok(on));
        assert_eq!(
            Sampler::parse("traceidratio", Some("0.25")),
            Ok(Sampler {
                parent_based: false,
                ratio: 0.25
            })
        );
        assert_eq!(
            Sampler::parse("parentbased_always_off", None).map(|s| s.ratio),
            Ok(0.0)
        );
        for (name, arg) in [
            ("sometimes", None),
            ("traceidratio", Some("2")),
            ("traceidratio", Some("half")),
        ] {
            assert!(Sampler::parse(name, arg).is_err(), "{name} {arg:?}");
        }
    }

    #[test]
    fn queries_are_named_by_operation_and_table() {
        for (sql, name) in [
            (
                "SELECT u.id, u.email FROM users u JOIN roles r ON r.id = u.role_id",
                "SELECT users",
            ),
            ("select 1", "SELECT"),
            (
                "INSERT INTO event_outbox (event_id) VALUES ($1)",
                "INSERT event_outbox",
            ),
            (
                "UPDATE sessions SET revoked = true WHERE id = $1",
                "UPDATE sessions",
            ),
            (
                "DELETE FROM event_outbox WHERE id = ANY($1)",
                "DELETE event_outbox",
            ),
            (
                "WITH family AS (INSERT INTO refresh_families ...)",
                "INSERT refresh_families",
            ),
            ("WITH RECURSIVE tree AS (SELECT id FROM categories)", "WITH"),
            ("", "query"),
        ] {
            assert_eq!(query_name(sql), name, "{sql}");
        }
    }
}

#[derive(Default)]
struct Query {
    summary: String,
    statement: String,
    elapsed_secs: f64,
    rows_returned: Option<u64>,
}

impl Visit for Query {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "summary" => value.clone_into(&mut self.summary),
            "db.statement" => value.clone_into(&mut self.statement),
            _ => {}
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if field.name() == "elapsed_secs" {
            self.elapsed_secs = value;
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "rows_returned" {
            self.rows_returned = Some(value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "summary" if self.summary.is_empty() => self.summary = format!("{value:?}"),
            "db.statement" if self.statement.is_empty() => self.statement = format!("{value:?}"),
            _ => {}
        }
    }
}
