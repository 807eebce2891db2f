//! The HTTP stack every service runs behind, and the server loop with graceful shutdown.
//!
//! Outermost first: `Edge` (request id taken from `X-Request-Id` or generated and put on
//! every log line written while serving, the client address, panics to 500, problem+json for bodiless errors, the id
//! echoed back, 5xx and optional access logging) → request timeout → body limit. Routes are
//! timed by the metrics layer.

use std::{
    convert::Infallible,
    future::Future,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::{
    extract::{ConnectInfo, DefaultBodyLimit, Request},
    http::{header, HeaderName, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Router,
};
use tower::{Layer, Service, ServiceBuilder};

use crate::{
    config::HttpSettings,
    problem::{InternalErrorReport, Problem, CONTENT_TYPE},
    telemetry::export::{self, KeyValue},
};

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// W3C trace context: the caller's trace, continued into the events a request publishes.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// Incoming request ids longer than this are replaced, so clients cannot bloat every log line.
const MAX_REQUEST_ID: usize = 128;

/// The address of the client that sent the request: the peer, or the last `X-Forwarded-For`
/// hop when the service is configured to trust the proxy in front of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

#[derive(Clone, Copy)]
struct EdgePolicy {
    trust_forwarded_for: bool,
    access_log: bool,
}

fn request_id(request: &Request) -> HeaderValue {
    request_id_from(request.headers())
}

/// The request id for a request with `headers`: the client's `X-Request-Id` when it is sane
/// (non-empty, at most 128 visible characters), otherwise a new UUID.
pub fn request_id_from(headers: &axum::http::HeaderMap) -> HeaderValue {
    let incoming = headers
        .get(REQUEST_ID)
        .filter(|v| !v.is_empty() && v.len() <= MAX_REQUEST_ID && v.to_str().is_ok());
    match incoming {
        Some(v) => v.clone(),
        None => {
            let mut buf = uuid::Uuid::encode_buffer();
            let id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
            HeaderValue::from_str(id).unwrap_or_else(|_| HeaderValue::from_static("-"))
        }
    }
}

/// The outermost layer of every service. Written by hand, as one tower service with its own
/// future, because it replaces four layers (tower-http's request id, propagate-request-id,
/// trace and catch-panic, plus an axum `from_fn`) that each cost a boxed future or body per
/// request; on two cores that overhead was a third of a constant handler's peak throughput.
#[derive(Clone, Copy)]
struct EdgeLayer {
    policy: EdgePolicy,
}

impl<S> Layer<S> for EdgeLayer {
    type Service = Edge<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Edge {
            inner,
            policy: self.policy,
        }
    }
}

#[derive(Clone)]
struct Edge<S> {
    inner: S,
    policy: EdgePolicy,
}

impl<S> Service<Request> for Edge<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = EdgeFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let started = Instant::now();
        let id = request_id(&request);
        let mut span = crate::telemetry::Span::child_of(
            request
                .headers()
                .get(TRACEPARENT)
                .and_then(|v| v.to_str().ok()),
        );
        if routine(request.uri().path(), 200) {
            // The platform's own polling: no spans, for it nor for its queries.
            span = span.quiet();
        }
        let method = request.method().clone();
        let uri = request.uri().clone();
        if let Some(client) = client_addr(self.policy.trust_forwarded_for, &request) {
            request.extensions_mut().insert(client);
        }
        // A panic while building the handler's future is caught like one while polling it.
        let inner =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.inner.call(request)))
                .ok()
                .map(|future| {
                    let context = crate::telemetry::RequestContext {
                        id: id.clone(),
                        span,
                    };
                    crate::telemetry::scope_request(context, future)
                });
        EdgeFuture {
            inner,
            id,
            span,
            started,
            policy: self.policy,
            method,
            uri,
        }
    }
}

pin_project_lite::pin_project! {
    struct EdgeFuture<F> {
        #[pin]
        inner: Option<tokio::task::futures::TaskLocalFuture<crate::telemetry::RequestContext, F>>,
        id: HeaderValue,
        span: crate::telemetry::Span,
        started: Instant,
        policy: EdgePolicy,
        method: axum::http::Method,
        uri: axum::http::Uri,
    }
}

impl<F> Future for EdgeFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = match this.inner.as_pin_mut() {
            None => Problem::internal("handler panicked").into_response(),
            Some(inner) => {
                // After a panic the handler's future is in an unknown state and is dropped,
                // never polled again: the client gets a 500 and the process lives on.
                match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.poll(cx))) {
                    Ok(Poll::Pending) => return Poll::Pending,
                    Ok(Poll::Ready(Ok(response))) => response,
                    Err(_) => Problem::internal("handler panicked").into_response(),
                }
            }
        };
        let mut response = problem_fallback(response);
        let status = response.status().as_u16();
        let latency_ms = this.started.elapsed().as_secs_f64() * 1000.0;
        // Unexpected failures are logged here, once, with their cause; client errors are the
        // client's business and only appear in the access log.
        if let Some(InternalErrorReport(cause)) = response.extensions().get::<InternalErrorReport>()
        {
            tracing::error!(
                request_id = this.id.to_str().unwrap_or("-"),
                trace_id = this.span.trace_id(),
                span_id = this.span.id(),
                parent_span_id = this.span.parent_id(),
                method = %this.method,
                path = this.uri.path(),
                status,
                latency_ms,
                error = %cause,
                "request failed"
            );
        } else if this.policy.access_log && !routine(this.uri.path(), status) {
            // With its span: `gravity trace` draws the request's path from these lines.
            tracing::info!(
                request_id = this.id.to_str().unwrap_or("-"),
                trace_id = this.span.trace_id(),
                span_id = this.span.id(),
                parent_span_id = this.span.parent_id(),
                method = %this.method,
                path = this.uri.path(),
                status,
                latency_ms,
                "request"
            );
        }
        if export::exporting() && this.span.sampled() {
            export::export(server_span(
                *this.span,
                this.method,
                this.id,
                &response,
                this.started.elapsed(),
            ));
        }
        response.headers_mut().insert(REQUEST_ID, this.id.clone());
        Poll::Ready(Ok(response))
    }
}

/// The span of a request served, named by its route template (`POST /api/v1/login`).
fn server_span(
    span: crate::telemetry::Span,
    method: &axum::http::Method,
    id: &HeaderValue,
    response: &Response,
    took: std::time::Duration,
) -> export::Finished {
    let route = response
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let name = match &route {
        Some(route) => format!("{method} {route}"),
        None => method.to_string(),
    };
    let status = response.status();
    let mut finished = export::Finished::ending_now(span, export::Kind::Server, name, took)
        // The route template, never the path: a path may hold a token (a reset or
        // unsubscribe link's), and spans leave the platform for a collector.
        .with(KeyValue::new("http.request.method", method))
        .with(KeyValue::new(
            "http.response.status_code",
            i64::from(status.as_u16()),
        ))
        .with(KeyValue::new(
            "gravity.request_id",
            id.to_str().unwrap_or("-").to_owned(),
        ));
    if let Some(route) = route {
        finished = finished.with(KeyValue::new("http.route", route));
    }
    // A server span fails on 5xx only: a 4xx is the client's.
    if status.is_server_error() {
        finished = finished.failed(status.to_string());
    }
    finished
}

/// A probe or scrape that succeeded: the platform's own polling (the engine's health check
/// every 2 s, Prometheus every 5 s), kept out of the access log so people's requests stand
/// out in it. A failed one is logged like any request.
fn routine(path: &str, status: u16) -> bool {
    status < 400 && (path == "/metrics" || path.starts_with("/health/"))
}

/// Responses that leave the stack with an error status but no problem body (405 from the
/// router, 408 from the timeout) are rewritten as problem+json, so clients only ever see one
/// error shape.
fn problem_fallback(response: Response) -> Response {
    let status = response.status();
    if status.as_u16() < 400 {
        return response;
    }
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(CONTENT_TYPE));
    if is_problem {
        return response;
    }
    let (parts, _) = response.into_parts();
    let mut rewritten = Problem::for_status(status).into_response();
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            rewritten.headers_mut().append(name.clone(), value.clone());
        }
    }
    if let Some(report) = parts.extensions.get::<InternalErrorReport>() {
        rewritten.extensions_mut().insert(report.clone());
    }
    rewritten
}

fn client_addr(trust_forwarded_for: bool, request: &Request) -> Option<ClientAddr> {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(a)| a.ip());
    if !trust_forwarded_for {
        return peer.map(ClientAddr);
    }
    forwarded_client(request.headers()).or(peer).map(ClientAddr)
}

/// The client address a trusted proxy wrote: the rightmost `X-Forwarded-For` hop (anything
/// left of it came from the client). A rightmost hop that does not parse is ignored rather
/// than skipped over.
pub fn forwarded_client(headers: &axum::http::HeaderMap) -> Option<IpAddr> {
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .next_back()
        .and_then(|hop| hop.trim().parse::<IpAddr>().ok())
}

/// A request timeout that arms its timer only when the handler does not finish on its first
/// poll. tower-http's `Timeout` creates a tokio `Sleep` for every request, which registers
/// with the runtime's timer; most requests here complete on their first poll and never need
/// one, and that per-request cost was the largest single item of the stack's overhead.
#[derive(Clone, Copy)]
struct RequestTimeoutLayer {
    timeout: Duration,
}

impl<S> Layer<S> for RequestTimeoutLayer {
    type Service = RequestTimeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestTimeout {
            inner,
            timeout: self.timeout,
        }
    }
}

#[derive(Clone)]
struct RequestTimeout<S> {
    inner: S,
    timeout: Duration,
}

impl<S> Service<Request> for RequestTimeout<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = TimeoutFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        TimeoutFuture {
            inner: self.inner.call(request),
            deadline: tokio::time::Instant::now() + self.timeout,
            sleep: None,
        }
    }
}

pin_project_lite::pin_project! {
    struct TimeoutFuture<F> {
        #[pin]
        inner: F,
        deadline: tokio::time::Instant,
        #[pin]
        sleep: Option<tokio::time::Sleep>,
    }
}

impl<F> Future for TimeoutFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Poll::Ready(response) = this.inner.poll(cx) {
            return Poll::Ready(response);
        }
        if this.sleep.is_none() {
            this.sleep
                .set(Some(tokio::time::sleep_until(*this.deadline)));
        }
        if let Some(sleep) = this.sleep.as_pin_mut() {
            if sleep.poll(cx).is_ready() {
                let problem = Problem::for_status(StatusCode::REQUEST_TIMEOUT).with_detail(
                    "The request took longer than this service allows; retry, or send less.",
                );
                return Poll::Ready(Ok(problem.into_response()));
            }
        }
        Poll::Pending
    }
}

/// Wraps a service's full router in the standard stack.
pub fn with_standard_layers(router: Router, settings: &HttpSettings) -> Router {
    // `Identity` checks callers with the gateway's public key, installed once per process.
    if let Some(key) = &settings.identity_public_key {
        match crate::identity::IdentityVerifier::from_base64(key) {
            Ok(verifier) => {
                if !crate::identity::install(verifier) {
                    tracing::warn!(
                        "IDENTITY_PUBLIC_KEY differs from the key this process already checks identities with; the first one stays"
                    );
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "IDENTITY_PUBLIC_KEY is unusable; every identity will be refused")
            }
        }
    }
    crate::telemetry::log_spans(settings.access_log);
    let policy = EdgePolicy {
        trust_forwarded_for: settings.trust_forwarded_for,
        access_log: settings.access_log,
    };
    // One `layer` call for the whole stack: axum boxes each `Router::layer` separately, so
    // stacking them one by one would cost an allocation and a clone per layer per request.
    // The body limit is `DefaultBodyLimit`, which every body extractor enforces while reading
    // (chunked bodies included), without changing the body type.
    router.route_layer(crate::metrics::TrackLayer).layer(
        ServiceBuilder::new()
            .layer(EdgeLayer { policy })
            .layer(RequestTimeoutLayer {
                timeout: settings.request_timeout,
            })
            .layer(DefaultBodyLimit::max(settings.body_limit_bytes)),
    )
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

/// Serves `router` until `shutdown` resolves, then stops accepting, lets in-flight requests
/// finish, and gives up on stragglers after `settings.shutdown_grace`.
///
/// A client gets `settings.header_read_timeout` to send a request's headers; without it, one
/// that opens connections and trickles bytes holds them forever (slowloris). axum's own
/// `serve` sets no timer, so hyper applies no such timeout; hence this accept loop.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    settings: &HttpSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use tower::ServiceExt as _;
    let handler = move |mut request: hyper::Request<hyper::body::Incoming>, peer: SocketAddr| {
        request.extensions_mut().insert(ConnectInfo(peer));
        router.clone().oneshot(request)
    };
    serve_with(
        listener,
        settings.header_read_timeout,
        settings.shutdown_grace,
        hyper_util::rt::TokioTimer::new(),
        shutdown,
        handler,
    )
    .await
}

/// The accept loop behind [`serve`], for a server that is not an axum router (the gateway
/// answers from a plain function of the request and the peer's address). HTTP/1 upgrades
/// (WebSocket) are served; the same header timeout and graceful shutdown apply. `timer` keeps
/// the header timeout (`hyper_util::rt::TokioTimer` unless the server has a cheaper one).
pub async fn serve_with<H, F, T>(
    listener: tokio::net::TcpListener,
    header_read_timeout: Duration,
    grace: Duration,
    timer: T,
    shutdown: impl Future<Output = ()> + Send + 'static,
    handler: H,
) -> std::io::Result<()>
where
    H: Fn(hyper::Request<hyper::body::Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response, Infallible>> + Send + 'static,
    T: hyper::rt::Timer + Send + Sync + 'static,
{
    use hyper_util::{
        rt::{TokioExecutor, TokioIo},
        server::{conn::auto, graceful::GracefulShutdown},
    };

    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(timer)
        .header_read_timeout(header_read_timeout);
    let graceful = GracefulShutdown::new();
    let upkeep = tokio::spawn(crate::metrics::upkeep());
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            // Out of file descriptors, or a connection reset before it was accepted: keep
            // serving the connections there are, and try again shortly.
            Err(e) => {
                tracing::warn!(error = %e, "cannot accept a connection; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let service =
            hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                handler(request, peer)
            });
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!("shutdown requested; draining in-flight requests");
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_secs = grace.as_secs(),
            "requests still in flight after the grace period; stopping anyway"
        );
    }
    upkeep.abort();
    Ok(())
}

/// Connects to Redis with bounded timeouts, retrying for up to `wait` so a service started
/// alongside Redis does not crash while it boots.
pub async fn connect_redis(
    client: redis::Client,
    wait: Duration,
) -> Result<redis::aio::ConnectionManager, redis::RedisError> {
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Duration::from_secs(2))
        .set_response_timeout(Duration::from_secs(2))
        .set_number_of_retries(2);
    let started = std::time::Instant::now();
    loop {
        match redis::aio::ConnectionManager::new_with_config(client.clone(), config.clone()).await {
            Ok(conn) => return Ok(conn),
            Err(e) if started.elapsed() >= wait => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "redis not reachable yet; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::{body::Body, routing::get};
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;

    use super::*;
    use crate::config::Env;

    async fn boom() -> &'static str {
        panic!("boom")
    }

    fn app(timeout_secs: &str) -> Router {
        let settings =
            HttpSettings::from_env(&Env::from_pairs([("REQUEST_TIMEOUT_SECS", timeout_secs)]))
                .unwrap();
        let router = Router::new()
            .route("/fast", get(|| async { "ok" }))
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "late"
                }),
            )
            .route(
                "/yield",
                get(|| async {
                    tokio::task::yield_now().await;
                    "ok"
                }),
            )
            .route("/panic", get(boom));
        with_standard_layers(router, &settings)
    }

    async fn send(
        app: Router,
        uri: &str,
        request_id: Option<&str>,
    ) -> (StatusCode, HeaderValue, String) {
        let mut request = axum::http::Request::get(uri);
        if let Some(id) = request_id {
            request = request.header(REQUEST_ID, id);
        }
        let response = app
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let id = response.headers()[REQUEST_ID].clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, id, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_handler_times_out_with_a_problem() {
        let (status, _, body) = send(app("1"), "/slow", None).await;
        assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
        assert!(
            body.contains("urn:gravity:problem:request-timeout"),
            "{body}"
        );
        // A handler that is pending once but finishes in time is not cut off.
        let (status, _, _) = send(app("1"), "/yield", None).await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn a_panic_is_a_500_problem_without_details() {
        let (status, _, body) = send(app("5"), "/panic", None).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(body.contains("urn:gravity:problem:internal"), "{body}");
        assert!(!body.contains("boom"), "{body}");
    }

    #[tokio::test]
    async fn request_ids_are_kept_when_sane_and_replaced_when_not() {
        let (_, id, _) = send(app("5"), "/fast", Some("abc-123")).await;
        assert_eq!(id, "abc-123");
        let long = "x".repeat(MAX_REQUEST_ID + 1);
        let (_, id, _) = send(app("5"), "/fast", Some(&long)).await;
        assert!(
            uuid::Uuid::parse_str(id.to_str().unwrap()).is_ok(),
            "{id:?}"
        );
        let (status, id, body) = send(app("5"), "/nowhere", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(uuid::Uuid::parse_str(id.to_str().unwrap()).is_ok());
        assert!(body.contains("urn:gravity:problem:not-found"), "{body}");
    }
}
