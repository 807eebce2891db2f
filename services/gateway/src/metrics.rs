//! The gateway's Prometheus series, recorded through handles resolved once per
//! (route, method, status) rather than a registry lookup per request.
//!
//! - `http_request_duration_seconds{method,route,status}`: every request the gateway answered,
//!   `route` being the route's name (`-` when none matched); the same series every service
//!   exports, so `gravity status` reads the gateway like any service.
//! - `gateway_upstream_requests_total{route,upstream,status}`: attempts sent upstream.
//! - `gateway_upstream_healthy{upstream}`, `gateway_breaker_state{upstream}` (0 closed,
//!   1 open, 2 half-open), `gateway_retries_total{route}`,
//!   `gateway_rate_limited_total{scope}`, `gateway_rate_limit_redis_up` (0 while the local
//!   fallback is in use), `gateway_rate_limit_fallback_total`, `gateway_jwks_fetches_total{outcome}`,
//!   `gateway_config_reloads_total{outcome}`.

use std::sync::OnceLock;

use http::Method;
use metrics::{Counter, Histogram};

const STATUSES: usize = 500;
const METHODS: usize = 8;

fn method_index(method: &Method) -> usize {
    match *method {
        Method::GET => 0,
        Method::POST => 1,
        Method::PUT => 2,
        Method::PATCH => 3,
        Method::DELETE => 4,
        Method::HEAD => 5,
        Method::OPTIONS => 6,
        _ => 7,
    }
}

fn method_label(index: usize) -> &'static str {
    [
        "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "OTHER",
    ][index]
}

fn status_index(status: u16) -> usize {
    usize::from(status.clamp(100, 599) - 100)
}

/// Latency histograms of one route, by method and status, created on first use.
pub struct RouteMetrics {
    route: String,
    durations: Box<[OnceLock<Histogram>]>,
    retries: Counter,
}

impl RouteMetrics {
    pub fn new(route: &str) -> Self {
        Self {
            route: route.to_owned(),
            durations: (0..METHODS * STATUSES).map(|_| OnceLock::new()).collect(),
            retries: metrics::counter!("gateway_retries_total", "route" => route.to_owned()),
        }
    }

    pub fn observe(&self, method: &Method, status: u16, seconds: f64) {
        let m = method_index(method);
        let s = status_index(status);
        self.durations[m * STATUSES + s]
            .get_or_init(|| {
                metrics::histogram!(
                    service_kit::metrics::DURATION,
                    "method" => method_label(m),
                    "route" => self.route.clone(),
                    "status" => (s + 100).to_string(),
                )
            })
            .record(seconds);
    }

    pub fn retried(&self) {
        self.retries.increment(1);
    }
}

/// Attempt counters of one (route, upstream) pair, by status.
pub struct UpstreamMetrics {
    route: String,
    upstream: String,
    counters: Box<[OnceLock<Counter>]>,
}

impl UpstreamMetrics {
    pub fn new(route: &str, upstream: &str) -> Self {
        Self {
            route: route.to_owned(),
            upstream: upstream.to_owned(),
            counters: (0..STATUSES).map(|_| OnceLock::new()).collect(),
        }
    }

    /// `status` 0 stands for "no response" (connection error or timeout).
    pub fn attempt(&self, status: u16) {
        let label = if status == 0 { 599 } else { status };
        self.counters[status_index(label)]
            .get_or_init(|| {
                metrics::counter!(
                    "gateway_upstream_requests_total",
                    "route" => self.route.clone(),
                    "upstream" => self.upstream.clone(),
                    "status" => if status == 0 { "error".to_owned() } else { status.to_string() },
                )
            })
            .increment(1);
    }
}

pub fn upstream_healthy(upstream: &str, healthy: bool) {
    metrics::gauge!("gateway_upstream_healthy", "upstream" => upstream.to_owned())
        .set(if healthy { 1.0 } else { 0.0 });
}

/// `gauge` is the breaker's state as `upstream::BreakerState::gauge` numbers it.
pub fn breaker_state(upstream: &str, gauge: f64) {
    metrics::gauge!("gateway_breaker_state", "upstream" => upstream.to_owned()).set(gauge);
}

pub fn rate_limited(scope: &'static str) {
    metrics::counter!("gateway_rate_limited_total", "scope" => scope).increment(1);
}

pub fn redis_up(up: bool) {
    metrics::gauge!("gateway_rate_limit_redis_up").set(if up { 1.0 } else { 0.0 });
}

pub fn fallback() {
    metrics::counter!("gateway_rate_limit_fallback_total").increment(1);
}

pub fn jwks_fetch(outcome: &'static str) {
    metrics::counter!("gateway_jwks_fetches_total", "outcome" => outcome).increment(1);
}

pub fn reload(outcome: &'static str) {
    metrics::counter!("gateway_config_reloads_total", "outcome" => outcome).increment(1);
}
