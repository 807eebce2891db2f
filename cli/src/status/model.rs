//! What the dashboard shows: one `Row` per resource, gathered into a `Snapshot`.

use serde::{Deserialize, Serialize};

/// One resource of the platform as it is now.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Row {
    pub resource: String,
    /// `infrastructure`, `service` or `orphan` (running, but no longer in gravity.toml).
    pub kind: &'static str,
    /// Docker's state (`running`, `exited`, `restarting`, ...) or `not created`.
    pub state: String,
    /// Docker's exit code, when the container is not running.
    pub exit_code: Option<i64>,
    /// `healthy`, `unhealthy`, `starting`, or empty when there is no health check.
    pub health: String,
    pub uptime_secs: Option<u64>,
    pub restarts: i64,
    pub port: Option<u16>,
    pub cpu_percent: Option<f64>,
    pub memory_bytes: Option<u64>,
    /// Requests per second over the last refresh (health checks and scrapes left out).
    pub requests_per_sec: Option<f64>,
    /// Share of those requests that answered 5xx.
    pub error_rate: Option<f64>,
    /// 99th percentile latency over the last refresh, from the histogram's buckets.
    pub p99_ms: Option<f64>,
    #[serde(skip)]
    pub container_id: Option<String>,
}

impl Row {
    /// Running and not unhealthy.
    pub fn is_up(&self) -> bool {
        self.state == "running" && self.health != "unhealthy"
    }

    /// The state in words, as shown in the table.
    pub fn state_words(&self) -> String {
        match (self.state.as_str(), self.exit_code) {
            ("running", _) if self.health == "unhealthy" => "UNHEALTHY".to_owned(),
            ("running", _) => "running".to_owned(),
            ("not created", _) => "not created".to_owned(),
            ("exited", Some(code)) => format!("DOWN (exit {code})"),
            (other, _) => format!("DOWN ({other})"),
        }
    }
}

/// The whole platform at one moment.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Snapshot {
    pub platform: String,
    pub rows: Vec<Row>,
    /// Why the engine could not be read, if it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Each running gateway's routes, upstream health and breakers, from its admin endpoint.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<Gateway>,
    /// Each running broker's queues, from its management API.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub brokers: Vec<Broker>,
}

/// A message broker's queues: depth, consumers, rates, and its dead-letter queues.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Broker {
    pub resource: String,
    pub queues: Vec<crate::infra::BrokerQueue>,
    /// Why its queues could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Broker {
    /// Its dead-letter queues and the messages parked in them.
    pub fn dead_letters(&self) -> (usize, u64) {
        self.queues
            .iter()
            .filter(|q| q.dead_letter)
            .fold((0, 0), |(n, m), q| (n + 1, m + q.messages))
    }
}

/// A queue's columns, aligned as the table and the dashboard show them.
pub fn queue_columns(q: &crate::infra::BrokerQueue) -> String {
    format!(
        "  {:<36} {:>8} {:>9} {:>10.1} {:>10.1}",
        q.name, q.messages, q.consumers, q.publish_rate, q.deliver_rate
    )
}

/// The header over [`queue_columns`].
pub fn queue_header() -> String {
    format!(
        "  {:<36} {:>8} {:>9} {:>10} {:>10}",
        "QUEUE", "DEPTH", "CONSUMERS", "PUBLISH/S", "DELIVER/S"
    )
}

/// One gateway as its admin endpoint (`/admin/routes`) describes it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Gateway {
    /// The gateway's service name (not in the endpoint's answer: set by the collector).
    #[serde(default)]
    pub service: String,
    #[serde(default)]
    pub rate_limit_backend: String,
    pub keys_loaded: Option<bool>,
    pub reload_error: Option<String>,
    #[serde(default)]
    pub routes: Vec<GatewayRoute>,
    /// Why the endpoint could not be read (set by the collector).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct GatewayRoute {
    pub name: String,
    pub prefix: String,
    #[serde(default)]
    pub access: String,
    #[serde(default)]
    pub upstreams: Vec<GatewayUpstream>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct GatewayUpstream {
    pub url: String,
    pub healthy: bool,
    /// `closed`, `open` or `half_open`.
    pub breaker: String,
    pub ejected_for_ms: Option<u64>,
    #[serde(default)]
    pub in_flight: usize,
}

/// The route and upstream columns of one upstream's line, aligned as the table and the
/// dashboard show them.
pub fn upstream_columns(route: &GatewayRoute, upstream: &GatewayUpstream) -> String {
    format!(
        "  {:<14} {:<18} {:<9} {:<28} ",
        route.name, route.prefix, route.access, upstream.url
    )
}

impl GatewayUpstream {
    /// Whether requests reach it now.
    pub fn is_serving(&self) -> bool {
        self.healthy && self.breaker != "open" && self.ejected_for_ms.is_none()
    }

    /// Its state in words: `serving`, `UNHEALTHY`, `EJECTED 3s`, `BREAKER OPEN`,
    /// `half-open` (so it reads without colour too).
    pub fn state_words(&self) -> String {
        if !self.healthy {
            "UNHEALTHY".to_owned()
        } else if let Some(ms) = self.ejected_for_ms {
            format!("EJECTED {}s", ms.div_ceil(1000))
        } else {
            match self.breaker.as_str() {
                "open" => "BREAKER OPEN".to_owned(),
                "half_open" => "half-open".to_owned(),
                _ => "serving".to_owned(),
            }
        }
    }
}

/// `1h02m`, `45s`.
pub fn human_duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// `12.3 MiB`.
pub fn human_bytes(bytes: u64) -> String {
    let mib = bytes as f64 / (1024.0 * 1024.0);
    if mib >= 1024.0 {
        format!("{:.1} GiB", mib / 1024.0)
    } else {
        format!("{mib:.1} MiB")
    }
}

/// The rows as a plain, aligned table (for `--once` and non-terminals).
pub fn table(snapshot: &Snapshot) -> String {
    let dash = || "-".to_owned();
    let mut out = format!(
        "{:<14} {:<17} {:<10} {:>8} {:>4} {:>6} {:>6} {:>10} {:>8} {:>7} {:>8}\n",
        "RESOURCE",
        "STATE",
        "HEALTH",
        "UPTIME",
        "RST",
        "PORT",
        "CPU%",
        "MEMORY",
        "REQ/S",
        "ERR%",
        "P99"
    );
    for r in &snapshot.rows {
        out.push_str(&format!(
            "{:<14} {:<17} {:<10} {:>8} {:>4} {:>6} {:>6} {:>10} {:>8} {:>7} {:>8}\n",
            r.resource,
            r.state_words(),
            if r.health.is_empty() { "-" } else { &r.health },
            r.uptime_secs.map(human_duration).unwrap_or_else(dash),
            r.restarts,
            r.port.map(|p| p.to_string()).unwrap_or_else(dash),
            r.cpu_percent
                .map(|c| format!("{c:.1}"))
                .unwrap_or_else(dash),
            r.memory_bytes.map(human_bytes).unwrap_or_else(dash),
            r.requests_per_sec
                .map(|v| format!("{v:.1}"))
                .unwrap_or_else(dash),
            r.error_rate
                .map(|v| format!("{:.1}", v * 100.0))
                .unwrap_or_else(dash),
            r.p99_ms.map(|v| format!("{v:.1}ms")).unwrap_or_else(dash),
        ));
    }
    for g in &snapshot.gateways {
        out.push_str(&format!(
            "\n{}: {} route(s), limits {}{}\n",
            g.service,
            g.routes.len(),
            if g.rate_limit_backend.is_empty() {
                "-"
            } else {
                &g.rate_limit_backend
            },
            match g.keys_loaded {
                Some(true) => ", token keys loaded",
                Some(false) => ", token keys NOT LOADED",
                None => "",
            }
        ));
        if let Some(e) = g.error.as_ref().or(g.reload_error.as_ref()) {
            out.push_str(&format!("  error: {e}\n"));
        }
        if !g.routes.is_empty() {
            out.push_str(&format!(
                "  {:<14} {:<18} {:<9} {:<28} {:<13} {:>9}\n",
                "ROUTE", "PREFIX", "ACCESS", "UPSTREAM", "STATE", "IN FLIGHT"
            ));
        }
        for r in &g.routes {
            for u in &r.upstreams {
                out.push_str(&format!(
                    "{}{:<13} {:>9}\n",
                    upstream_columns(r, u),
                    u.state_words(),
                    u.in_flight
                ));
            }
        }
    }
    for b in &snapshot.brokers {
        let (dlqs, parked) = b.dead_letters();
        out.push_str(&format!(
            "\n{}: {} queue(s), {dlqs} dead-letter queue(s) holding {parked} message(s)\n",
            b.resource,
            b.queues.len()
        ));
        if let Some(e) = &b.error {
            out.push_str(&format!("  error: {e}\n"));
        }
        if !b.queues.is_empty() {
            out.push_str(&queue_header());
            out.push('\n');
        }
        for q in &b.queues {
            out.push_str(&queue_columns(q));
            if q.dead_letter {
                out.push_str("  dead-letter");
            }
            out.push('\n');
        }
    }
    if let Some(e) = &snapshot.error {
        out.push_str(&format!("error: {e}\n"));
    }
    out
}
