//! Prometheus metrics: per-route request counts and latency histograms, served at `/metrics`.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::OnceLock,
    task::{Context, Poll},
    time::Instant,
};

use axum::{
    extract::{MatchedPath, Request},
    http::{header, HeaderValue, Method, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use metrics::SharedString;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tower::{Layer, Service};

pub const DURATION: &str = "http_request_duration_seconds";

const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process-wide recorder, installed on first use. `None` only if another recorder was
/// installed first, in which case `/metrics` says so instead of lying with an empty page.
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(DURATION.to_owned()), BUCKETS)
                .ok()?
                .install_recorder()
                .ok()
        })
        .as_ref()
}

/// Keeps histogram memory bounded between scrapes; spawned once per server.
pub async fn upkeep() {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
    loop {
        tick.tick().await;
        if let Some(h) = handle() {
            h.run_upkeep();
        }
    }
}

/// Times every routed request by method, route template and status, in one histogram whose
/// `_count` series is the request count (as OpenTelemetry's `http.server.request.duration`
/// does): one registry lookup per request instead of two.
///
/// The route label is the template (`/api/v1/users/{id}`), never the raw path, so label
/// cardinality stays bounded whatever clients send. A tower layer with its own future rather
/// than an axum `from_fn`, which would box a future per request.
#[derive(Clone, Copy, Default)]
pub struct TrackLayer;

impl<S> Layer<S> for TrackLayer {
    type Service = Track<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Track { inner }
    }
}

#[derive(Clone)]
pub struct Track<S> {
    inner: S,
}

impl<S> Service<Request> for Track<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = TrackFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let route = request.extensions().get::<MatchedPath>().cloned();
        let method = method_label(request.method());
        TrackFuture {
            inner: self.inner.call(request),
            route,
            method,
            started: Instant::now(),
        }
    }
}

pin_project_lite::pin_project! {
    pub struct TrackFuture<F> {
        #[pin]
        inner: F,
        route: Option<MatchedPath>,
        method: SharedString,
        started: Instant,
    }
}

impl<F> Future for TrackFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Poll::Ready(Ok(mut response)) = this.inner.poll(cx) else {
            return Poll::Pending;
        };
        let elapsed = this.started.elapsed().as_secs_f64();
        let route: SharedString = match this.route.take() {
            Some(path) => {
                let label = path.as_str().to_owned().into();
                // For the request's span, which ends outside the router.
                response.extensions_mut().insert(path);
                label
            }
            None => SharedString::const_str("unmatched"),
        };
        let status = status_label(response.status());
        metrics::histogram!(DURATION, "method" => this.method.clone(), "route" => route, "status" => status)
            .record(elapsed);
        Poll::Ready(Ok(response))
    }
}

fn method_label(method: &Method) -> SharedString {
    match *method {
        Method::GET => SharedString::const_str("GET"),
        Method::POST => SharedString::const_str("POST"),
        Method::PUT => SharedString::const_str("PUT"),
        Method::DELETE => SharedString::const_str("DELETE"),
        Method::PATCH => SharedString::const_str("PATCH"),
        Method::HEAD => SharedString::const_str("HEAD"),
        Method::OPTIONS => SharedString::const_str("OPTIONS"),
        // Any other method shares one label: clients choose methods, and each distinct label
        // value would otherwise be a new series kept forever.
        _ => SharedString::const_str("_OTHER"),
    }
}

fn status_label(status: StatusCode) -> SharedString {
    match status.as_u16() {
        200 => SharedString::const_str("200"),
        201 => SharedString::const_str("201"),
        202 => SharedString::const_str("202"),
        204 => SharedString::const_str("204"),
        400 => SharedString::const_str("400"),
        401 => SharedString::const_str("401"),
        403 => SharedString::const_str("403"),
        404 => SharedString::const_str("404"),
        409 => SharedString::const_str("409"),
        422 => SharedString::const_str("422"),
        429 => SharedString::const_str("429"),
        500 => SharedString::const_str("500"),
        503 => SharedString::const_str("503"),
        // Status codes are chosen by the server, so this set stays small.
        other => other.to_string().into(),
    }
}

static POOL: OnceLock<sqlx::PgPool> = OnceLock::new();

/// Reports the connections of the service's database pool with every scrape
/// (`db_pool_connections_in_use`, `_idle`, `_max`: Gravity's Prometheus rules alert on its
/// saturation). The first pool watched in a process is the one reported.
pub fn watch_pool(pool: &sqlx::PgPool) {
    let _ = POOL.set(pool.clone());
}

fn observe_pool() {
    let Some(pool) = POOL.get() else { return };
    let size = pool.size();
    let idle = u32::try_from(pool.num_idle()).unwrap_or(u32::MAX).min(size);
    metrics::gauge!("db_pool_connections_max").set(f64::from(pool.options().get_max_connections()));
    metrics::gauge!("db_pool_connections_in_use").set(f64::from(size - idle));
    metrics::gauge!("db_pool_connections_idle").set(f64::from(idle));
}

async fn render() -> Response {
    observe_pool();
    match handle() {
        Some(h) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            )],
            h.render(),
        )
            .into_response(),
        None => {
            crate::problem::Problem::unavailable("metrics recorder not installed").into_response()
        }
    }
}

/// `GET /metrics`.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    // Install eagerly so the first scrape already has the metric families.
    let _ = handle();
    Router::new().route("/metrics", get(render))
}
