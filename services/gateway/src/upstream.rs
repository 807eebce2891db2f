//! One upstream server's state (active health, passive outlier ejection, circuit breaker,
//! connections in flight) and a pool's choice among them.
//!
//! **Invariant:** state is kept per (route, upstream URL) and survives route reloads that keep
//! the pair, so a reload never closes an open breaker or revives an ejected host.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Instant,
};

use serde::Serialize;

use crate::config::{Balance, Breaker as BreakerConfig, Outlier as OutlierConfig, UpstreamUrl};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    /// The state as `gateway_breaker_state` reports it: 0 closed, 1 open, 2 half-open.
    pub fn gauge(self) -> f64 {
        match self {
            Self::Closed => 0.0,
            Self::Open => 1.0,
            Self::HalfOpen => 2.0,
        }
    }
}

/// What happened to one attempt, as far as the upstream's health is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// The upstream answered with a 5xx.
    ServerError,
    /// Refused, reset, closed early or timed out: the host itself is suspect.
    ConnectionError,
}

struct Passive {
    breaker: BreakerState,
    /// Consecutive failures while closed; consecutive successes while half-open.
    streak: u32,
    opened_at: Option<Instant>,
    half_open_in_flight: u32,
    /// Consecutive connection-level errors, for outlier ejection.
    conn_errors: u32,
    ejected_until: Option<Instant>,
    ejections: u32,
}

pub struct Upstream {
    pub url: UpstreamUrl,
    pub label: String,
    healthy: AtomicBool,
    /// Set while every request succeeds: the hot path then skips the lock entirely.
    all_clear: AtomicBool,
    in_flight: AtomicUsize,
    hc_streak: AtomicU32,
    passive: Mutex<Passive>,
    breaker: Mutex<BreakerConfig>,
    outlier: Mutex<OutlierConfig>,
}

/// Admission for one attempt; its outcome is recorded with [`Upstream::finish`]. Dropping it
/// without an outcome (the client went away) counts as neither success nor failure.
pub struct Attempt {
    upstream: Arc<Upstream>,
    trial: bool,
    done: bool,
}

impl Attempt {
    pub fn upstream(&self) -> &Arc<Upstream> {
        &self.upstream
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        self.upstream.in_flight.fetch_sub(1, Ordering::Relaxed);
        if !self.done && self.trial {
            if let Ok(mut p) = self.upstream.passive.lock() {
                p.half_open_in_flight = p.half_open_in_flight.saturating_sub(1);
            }
        }
    }
}

/// A snapshot for the admin endpoint.
#[derive(Debug, Serialize)]
pub struct UpstreamView {
    pub url: String,
    pub healthy: bool,
    pub ejected_for_ms: Option<u64>,
    pub breaker: BreakerState,
    pub consecutive_failures: u32,
    pub in_flight: usize,
}

impl Upstream {
    pub fn new(url: UpstreamUrl, breaker: BreakerConfig, outlier: OutlierConfig) -> Self {
        Self {
            label: url.to_string(),
            url,
            healthy: AtomicBool::new(true),
            all_clear: AtomicBool::new(true),
            in_flight: AtomicUsize::new(0),
            hc_streak: AtomicU32::new(0),
            passive: Mutex::new(Passive {
                breaker: BreakerState::Closed,
                streak: 0,
                opened_at: None,
                half_open_in_flight: 0,
                conn_errors: 0,
                ejected_until: None,
                ejections: 0,
            }),
            breaker: Mutex::new(breaker),
            outlier: Mutex::new(outlier),
        }
    }

    /// Takes the thresholds of a reloaded route while keeping the state.
    pub fn reconfigure(&self, breaker: BreakerConfig, outlier: OutlierConfig) {
        if let Ok(mut b) = self.breaker.lock() {
            *b = breaker;
        }
        if let Ok(mut o) = self.outlier.lock() {
            *o = outlier;
        }
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    fn breaker_config(&self) -> BreakerConfig {
        self.breaker.lock().map(|b| b.clone()).unwrap_or_default()
    }

    /// Whether balancing may send here now, without admitting anything.
    fn available(&self, now: Instant) -> Availability {
        if !self.is_healthy() {
            return Availability::Unhealthy;
        }
        if self.all_clear.load(Ordering::Relaxed) {
            return Availability::Yes;
        }
        let open_for = self.breaker_config().open_for;
        let Ok(p) = self.passive.lock() else {
            return Availability::Yes;
        };
        if p.ejected_until.is_some_and(|t| now < t) {
            return Availability::Ejected;
        }
        match p.breaker {
            BreakerState::Closed => Availability::Yes,
            BreakerState::Open if p.opened_at.is_some_and(|t| now >= t + open_for) => {
                Availability::Yes
            }
            BreakerState::Open => Availability::Open,
            BreakerState::HalfOpen => Availability::Yes,
        }
    }

    /// Admits one attempt, moving an expired open breaker to half-open; `None` when the
    /// breaker does not let it through.
    pub fn admit(self: &Arc<Self>, now: Instant) -> Option<Attempt> {
        let mut trial = false;
        if !self.all_clear.load(Ordering::Relaxed) {
            let config = self.breaker_config();
            let mut p = self.passive.lock().ok()?;
            match p.breaker {
                BreakerState::Closed => {}
                BreakerState::Open => {
                    if p.opened_at.is_some_and(|t| now >= t + config.open_for) {
                        p.breaker = BreakerState::HalfOpen;
                        p.streak = 0;
                        p.half_open_in_flight = 0;
                        self.publish(BreakerState::HalfOpen);
                    } else {
                        return None;
                    }
                    p.half_open_in_flight += 1;
                    trial = true;
                }
                BreakerState::HalfOpen => {
                    if p.half_open_in_flight >= config.half_open_requests {
                        return None;
                    }
                    p.half_open_in_flight += 1;
                    trial = true;
                }
            }
        }
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Some(Attempt {
            upstream: Arc::clone(self),
            trial,
            done: false,
        })
    }

    /// Records how an attempt went, now. The common case (a success while nothing is wrong)
    /// records nothing, and so reads no clock.
    pub fn finish_now(&self, attempt: &mut Attempt, outcome: Outcome) {
        if !attempt.done
            && outcome == Outcome::Success
            && !attempt.trial
            && self.all_clear.load(Ordering::Relaxed)
        {
            attempt.done = true;
            return;
        }
        self.finish(attempt, outcome, Instant::now());
    }

    /// Records how an attempt went. The attempt still counts as in flight (for
    /// least-connections) until it is dropped, when the response body has been sent.
    pub fn finish(&self, attempt: &mut Attempt, outcome: Outcome, now: Instant) {
        if attempt.done {
            return;
        }
        attempt.done = true;
        let trial = attempt.trial;
        if outcome == Outcome::Success && !trial && self.all_clear.load(Ordering::Relaxed) {
            return;
        }
        let config = self.breaker_config();
        let outlier = self.outlier.lock().map(|o| o.clone()).unwrap_or_default();
        let Ok(mut p) = self.passive.lock() else {
            return;
        };
        if trial {
            p.half_open_in_flight = p.half_open_in_flight.saturating_sub(1);
        }
        match outcome {
            Outcome::Success => {
                p.conn_errors = 0;
                match p.breaker {
                    BreakerState::Closed => p.streak = 0,
                    BreakerState::HalfOpen => {
                        p.streak += 1;
                        if p.streak >= config.successes {
                            p.breaker = BreakerState::Closed;
                            p.streak = 0;
                            p.opened_at = None;
                            self.publish(BreakerState::Closed);
                            tracing::info!(upstream = %self.label, "circuit closed");
                        }
                    }
                    BreakerState::Open => {}
                }
            }
            Outcome::ServerError | Outcome::ConnectionError => {
                if outcome == Outcome::ConnectionError {
                    p.conn_errors += 1;
                    if p.conn_errors >= outlier.consecutive_errors {
                        p.conn_errors = 0;
                        p.ejections += 1;
                        let factor = p.ejections.min(10);
                        p.ejected_until = Some(now + outlier.base_ejection * factor);
                        tracing::warn!(
                            upstream = %self.label,
                            ejected_for_ms = (outlier.base_ejection * factor).as_millis() as u64,
                            "upstream ejected after consecutive connection errors"
                        );
                    }
                }
                match p.breaker {
                    BreakerState::Closed => {
                        p.streak += 1;
                        if p.streak >= config.failures {
                            p.breaker = BreakerState::Open;
                            p.opened_at = Some(now);
                            p.streak = 0;
                            self.publish(BreakerState::Open);
                            tracing::warn!(upstream = %self.label, "circuit opened");
                        }
                    }
                    BreakerState::HalfOpen => {
                        p.breaker = BreakerState::Open;
                        p.opened_at = Some(now);
                        p.streak = 0;
                        self.publish(BreakerState::Open);
                        tracing::warn!(upstream = %self.label, "trial failed; circuit open again");
                    }
                    BreakerState::Open => {}
                }
            }
        }
        let clear = p.breaker == BreakerState::Closed
            && p.streak == 0
            && p.conn_errors == 0
            && p.ejected_until.is_none_or(|t| now >= t);
        if clear && p.ejected_until.is_some() {
            p.ejected_until = None;
        }
        self.all_clear.store(clear, Ordering::Relaxed);
    }

    /// Caps ejections: called by the pool, which knows how many are out.
    fn lift_ejection(&self) {
        if let Ok(mut p) = self.passive.lock() {
            p.ejected_until = None;
        }
    }

    fn is_ejected(&self, now: Instant) -> bool {
        !self.all_clear.load(Ordering::Relaxed)
            && self
                .passive
                .lock()
                .is_ok_and(|p| p.ejected_until.is_some_and(|t| now < t))
    }

    fn publish(&self, state: BreakerState) {
        crate::metrics::breaker_state(&self.label, state.gauge());
    }

    /// Applies one active health check result.
    pub fn record_check(&self, passed: bool, healthy_after: u32, unhealthy_after: u32) {
        let was = self.is_healthy();
        if passed == was {
            self.hc_streak.store(0, Ordering::Relaxed);
            return;
        }
        let streak = self.hc_streak.fetch_add(1, Ordering::Relaxed) + 1;
        let needed = if passed {
            healthy_after
        } else {
            unhealthy_after
        };
        if streak >= needed {
            self.healthy.store(passed, Ordering::Relaxed);
            self.hc_streak.store(0, Ordering::Relaxed);
            crate::metrics::upstream_healthy(&self.label, passed);
            if passed {
                tracing::info!(upstream = %self.label, "upstream healthy again");
            } else {
                tracing::warn!(upstream = %self.label, "upstream failed its health checks");
            }
        }
    }

    pub fn view(&self, now: Instant) -> UpstreamView {
        let (breaker, streak, ejected) = match self.passive.lock() {
            Ok(p) => {
                let breaker = match p.breaker {
                    BreakerState::Open
                        if p.opened_at
                            .is_some_and(|t| now >= t + self.breaker_config().open_for) =>
                    {
                        BreakerState::HalfOpen
                    }
                    s => s,
                };
                let streak = if p.breaker == BreakerState::Closed {
                    p.streak
                } else {
                    0
                };
                let ejected = p
                    .ejected_until
                    .filter(|t| now < *t)
                    .map(|t| (t - now).as_millis() as u64);
                (breaker, streak, ejected)
            }
            Err(_) => (BreakerState::Closed, 0, None),
        };
        UpstreamView {
            url: self.label.clone(),
            healthy: self.is_healthy(),
            ejected_for_ms: ejected,
            breaker,
            consecutive_failures: streak,
            in_flight: self.in_flight(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Availability {
    Yes,
    Unhealthy,
    Ejected,
    Open,
}

/// Why no upstream could take a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// Every candidate's breaker is open.
    CircuitOpen,
    /// Every candidate failed its health checks or is ejected.
    NoHealthy,
}

pub struct Pool {
    pub upstreams: Vec<Arc<Upstream>>,
    pub balance: Balance,
    next: AtomicUsize,
    max_ejected_percent: u8,
}

impl Pool {
    pub fn new(upstreams: Vec<Arc<Upstream>>, balance: Balance, max_ejected_percent: u8) -> Self {
        Self {
            upstreams,
            balance,
            next: AtomicUsize::new(0),
            max_ejected_percent,
        }
    }

    /// Picks an upstream and admits an attempt on it, preferring ones not in `tried`.
    pub fn pick(&self, tried: &[usize], now: Instant) -> Result<(usize, Attempt), Unavailable> {
        let n = self.upstreams.len();
        // One upstream needs no rotation (and no write to a counter every thread shares).
        let start = if n > 1 {
            self.next.fetch_add(1, Ordering::Relaxed)
        } else {
            0
        };
        self.enforce_ejection_cap(now);
        // Round robin walks the rotation from `start`; least connections orders it by load
        // (a stable sort keeps the rotation among equally loaded hosts).
        let by_load = (self.balance == Balance::LeastConnections).then(|| {
            let mut order: Vec<usize> = (0..n).map(|i| (start + i) % n).collect();
            order.sort_by_key(|&i| self.upstreams[i].in_flight());
            order
        });
        let mut saw_open = false;
        let mut saw_other = false;
        // Two passes: first hosts not tried yet, then (for a retry on a pool of one) any.
        for allow_tried in [false, true] {
            for k in 0..n {
                let i = by_load.as_ref().map_or((start + k) % n, |order| order[k]);
                if !allow_tried && tried.contains(&i) {
                    continue;
                }
                let upstream = &self.upstreams[i];
                match upstream.available(now) {
                    Availability::Yes => {
                        if let Some(attempt) = upstream.admit(now) {
                            return Ok((i, attempt));
                        }
                        saw_open = true;
                    }
                    Availability::Open => saw_open = true,
                    Availability::Unhealthy | Availability::Ejected => saw_other = true,
                }
            }
            if tried.is_empty() {
                break;
            }
        }
        if saw_open && !saw_other {
            Err(Unavailable::CircuitOpen)
        } else {
            Err(Unavailable::NoHealthy)
        }
    }

    /// Outlier ejection never takes out more than `max_ejected_percent` of the pool (at
    /// least one host always stays in unless the limit is 100 %).
    fn enforce_ejection_cap(&self, now: Instant) {
        let ejected: Vec<&Arc<Upstream>> = self
            .upstreams
            .iter()
            .filter(|u| u.is_ejected(now))
            .collect();
        if ejected.is_empty() {
            return;
        }
        let cap = (self.upstreams.len() * usize::from(self.max_ejected_percent)) / 100;
        let cap = if self.max_ejected_percent < 100 {
            cap.min(self.upstreams.len().saturating_sub(1))
        } else {
            cap
        };
        for u in ejected.iter().skip(cap) {
            u.lift_ejection();
        }
    }
}

pub type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    axum::body::Body,
>;

/// An HTTP/1 client for the gateway's own calls to upstreams (health checks); requests go
/// through each serving thread's `connections` instead.
pub fn client(server: &crate::config::Server) -> Client {
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(server.connect_timeout));
    connector.enforce_http(true);
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(std::time::Duration::from_secs(60))
        .pool_max_idle_per_host(512)
        .build(connector)
}

/// Runs one upstream's active health checks until aborted.
pub async fn health_loop(
    upstream: Arc<Upstream>,
    client: Client,
    check: crate::config::HealthCheck,
) {
    let uri = format!("{}{}", upstream.url, check.path);
    let Ok(uri) = uri.parse::<http::Uri>() else {
        tracing::error!(%uri, "health check URL does not parse; no checks for this upstream");
        return;
    };
    let mut tick = tokio::time::interval(check.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let request = http::Request::get(uri.clone())
            .header(http::header::USER_AGENT, "gravity-gateway-health")
            .body(axum::body::Body::empty());
        let Ok(request) = request else { return };
        let passed = match tokio::time::timeout(check.timeout, client.request(request)).await {
            Ok(Ok(response)) => {
                let ok = response.status().is_success();
                // Drain the body so the connection goes back to the pool.
                let _ = tokio::time::timeout(
                    check.timeout,
                    http_body_util::BodyExt::collect(response.into_body()),
                )
                .await;
                ok
            }
            _ => false,
        };
        upstream.record_check(passed, check.healthy_after, check.unhealthy_after);
    }
}
