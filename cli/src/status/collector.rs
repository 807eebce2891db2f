//! Gathers a `Snapshot`: containers and their health from the Engine, CPU and memory from its
//! stats, and request rate, error rate and p99 latency from each service's `/metrics`.
//! Rates and CPU are differences between two refreshes, so the first snapshot has none.

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use bollard::query_parameters::StatsOptions;
use futures_util::StreamExt as _;

use super::model::{Broker, Gateway, Row, Snapshot};
use crate::{
    engine::{resource_of, Engine},
    gateway::{is_gateway, published_admin_port},
    manifest::ServiceName,
    project::Project,
};

/// The service-kit histogram every service exports.
const DURATION: &str = "http_request_duration_seconds";
/// Traffic that is the platform watching itself, not users: left out of rates.
const SELF_ROUTES: [&str; 3] = ["/metrics", "/health/live", "/health/ready"];

/// A service's request histogram at one moment: cumulative counts per bucket bound, for all
/// requests and for 5xx ones.
#[derive(Debug, Clone, Default)]
struct Histogram {
    at: Option<Instant>,
    buckets: BTreeMap<OrderedBound, f64>,
    total: f64,
    errors: f64,
}

/// A bucket's upper bound, ordered (`f64` is not `Ord`; bounds are finite or +Inf).
#[derive(Debug, Clone, Copy, PartialEq)]
struct OrderedBound(f64);
impl Eq for OrderedBound {}
impl PartialOrd for OrderedBound {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for OrderedBound {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

pub struct Collector {
    engine: Engine,
    project: Project,
    http: reqwest::Client,
    cpu: HashMap<String, (u64, u64)>,
    histograms: HashMap<String, Histogram>,
    /// The gateway admin token, and when the secrets file it came from was last modified: the
    /// file is read again only when that changes, not on every refresh.
    /// The platform's secrets file as last read, and when it was modified then.
    secrets: Option<(std::time::SystemTime, crate::project::Secrets)>,
}

impl Collector {
    pub fn new(engine: Engine, project: Project) -> Self {
        Self {
            engine,
            project,
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_millis(800))
                .build()
                .unwrap_or_default(),
            cpu: HashMap::new(),
            histograms: HashMap::new(),
            secrets: None,
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The platform's secrets (empty when it has no secrets file), reread only when the file
    /// changes.
    fn secrets(&mut self) -> crate::project::Secrets {
        let modified = std::fs::metadata(self.project.secrets_path())
            .and_then(|m| m.modified())
            .ok();
        match (&self.secrets, modified) {
            (Some((at, secrets)), Some(now)) if *at == now => secrets.clone(),
            (_, Some(now)) => {
                let secrets = self.project.existing_secrets().unwrap_or_default();
                self.secrets = Some((now, secrets.clone()));
                secrets
            }
            (_, None) => {
                self.secrets = None;
                crate::project::Secrets::default()
            }
        }
    }

    /// The platform's gateway admin token (empty when its secrets file has none).
    fn admin_token(&mut self) -> String {
        self.secrets().gateway_admin_token
    }

    pub async fn snapshot(&mut self) -> Snapshot {
        let mut snapshot = Snapshot {
            platform: self.project.name().to_owned(),
            ..Snapshot::default()
        };
        let containers = match self.engine.containers(self.project.label_filter()).await {
            Ok(c) => c,
            Err(e) => {
                snapshot.error = Some(e.to_string());
                return snapshot;
            }
        };
        let mut wanted: Vec<(String, &'static str, u16)> = self
            .project
            .resources()
            .into_iter()
            .map(|r| (r.name, r.kind, r.port))
            .collect();
        let resource_of =
            |c: &bollard::models::ContainerSummary| resource_of(c).unwrap_or_default().to_owned();
        for c in &containers {
            let r = resource_of(c);
            if !wanted.iter().any(|(w, _, _)| *w == r) {
                wanted.push((r, "orphan", 0));
            }
        }
        let details = futures_util::future::join_all(wanted.iter().map(|(resource, _, _)| {
            let container = containers.iter().find(|c| resource_of(c) == *resource);
            let id = container.and_then(|c| c.id.clone());
            let engine = self.engine.clone();
            async move {
                match id {
                    Some(id) => {
                        let (inspect, stats) = tokio::join!(
                            engine.api().inspect_container(&id, None),
                            one_shot_stats(&engine, &id)
                        );
                        (Some(id), inspect.ok(), stats)
                    }
                    None => (None, None, None),
                }
            }
        }))
        .await;
        let metrics =
            futures_util::future::join_all(wanted.iter().map(|(resource, kind, port)| {
                let http = self.http.clone();
                let running = details
                    .iter()
                    .zip(&wanted)
                    .find(|(_, (r, _, _))| r == resource)
                    .and_then(|((_, inspect, _), _)| inspect.as_ref())
                    .and_then(|i| i.state.as_ref())
                    .and_then(|s| s.running)
                    .unwrap_or(false);
                let scrape = *kind == "service" && running;
                let port = *port;
                async move {
                    if scrape {
                        scrape_histogram(&http, port).await
                    } else {
                        None
                    }
                }
            }))
            .await;

        // Each running gateway's admin endpoint, on the loopback port the engine published.
        let gateways: Vec<(String, Option<u16>)> = wanted
            .iter()
            .zip(&details)
            .filter(|((resource, kind, _), _)| {
                *kind == "service"
                    && self
                        .project
                        .manifest
                        .services
                        .iter()
                        .any(|(n, s)| n.as_str() == resource && is_gateway(s))
            })
            .filter_map(|((resource, _, _), (_, inspect, _))| {
                let inspect = inspect.as_ref()?;
                inspect.state.as_ref()?.running.filter(|r| *r)?;
                Some((resource.clone(), published_admin_port(inspect)))
            })
            .collect();
        if !gateways.is_empty() {
            let token = self.admin_token();
            snapshot.gateways =
                futures_util::future::join_all(gateways.into_iter().map(|(service, port)| {
                    let http = self.http.clone();
                    let token = token.clone();
                    async move {
                        let mut view = match port {
                            Some(_) if token.is_empty() => Gateway {
                                error: Some(
                                    "no gateway admin token in this platform's secrets file \
                                     (.gravity/); `gravity up` writes one"
                                        .to_owned(),
                                ),
                                ..Gateway::default()
                            },
                            Some(port) => admin_routes(&http, port, &token).await,
                            None => Gateway {
                                error: Some(
                                    "its admin endpoint is not published (a container from an \
                                     older gravity): run `gravity up` to recreate it"
                                        .to_owned(),
                                ),
                                ..Gateway::default()
                            },
                        };
                        view.service = service;
                        view
                    }
                }))
                .await;
        }

        // Each running broker's queues, through its management API on the loopback port the
        // engine published, as its administrator.
        let brokers: Vec<(ServiceName, u16, Option<u16>)> = wanted
            .iter()
            .zip(&details)
            .filter_map(|((resource, _, port), (_, inspect, _))| {
                let (name, infra) = self
                    .project
                    .manifest
                    .infrastructure
                    .iter()
                    .find(|(n, _)| n.as_str() == resource)?;
                let ui = infra.kind.ui()?;
                let inspect = inspect.as_ref()?;
                inspect.state.as_ref()?.running.filter(|r| *r)?;
                Some((
                    name.clone(),
                    *port,
                    crate::containers::published_port(inspect, ui.port),
                ))
            })
            .collect();
        if !brokers.is_empty() {
            let secrets = self.secrets();
            let manifest = &self.project.manifest;
            let http = &self.http;
            let secrets = &secrets;
            let views = brokers.iter().filter_map(|(name, port, ui_port)| {
                let infra = manifest.infrastructure.get(name)?;
                let reach = crate::infra::Reach {
                    instance: crate::infra::Instance {
                        name,
                        infra,
                        platform: manifest,
                    },
                    secrets,
                    port: *port,
                    ui_port: *ui_port,
                };
                let queues = infra.kind.queues(reach, http)?;
                Some(async move {
                    let (queues, error) = match queues.await {
                        Ok(q) => (q, None),
                        Err(e) => (Vec::new(), Some(e)),
                    };
                    Broker {
                        resource: name.to_string(),
                        queues,
                        error,
                    }
                })
            });
            snapshot.brokers = futures_util::future::join_all(views).await;
        }

        for (((resource, kind, port), (id, inspect, stats)), histogram) in
            wanted.into_iter().zip(details).zip(metrics)
        {
            let mut row = Row {
                resource: resource.clone(),
                kind,
                state: "not created".to_owned(),
                port: (port != 0).then_some(port),
                container_id: id.clone(),
                ..Row::default()
            };
            if let Some(inspect) = inspect {
                row.restarts = inspect.restart_count.unwrap_or(0);
                if let Some(state) = inspect.state {
                    row.state = state
                        .status
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| "unknown".to_owned());
                    if state.running != Some(true) {
                        row.exit_code = state.exit_code;
                    }
                    // A stopped container keeps its last verdict; it means nothing now.
                    row.health = state
                        .health
                        .filter(|_| state.running == Some(true))
                        .and_then(|h| h.status)
                        .map(|s| s.to_string())
                        .filter(|s| s != "none" && !s.is_empty())
                        .unwrap_or_default();
                    if state.running == Some(true) {
                        row.uptime_secs = state
                            .started_at
                            .as_deref()
                            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                            .and_then(|t| {
                                u64::try_from(
                                    chrono::Utc::now().signed_duration_since(t).num_seconds(),
                                )
                                .ok()
                            });
                    }
                }
            }
            if let (Some(id), Some((total, system, cpus, memory))) = (&id, stats) {
                row.memory_bytes = memory;
                if let Some((prev_total, prev_system)) =
                    self.cpu.insert(id.clone(), (total, system))
                {
                    let dt = total.saturating_sub(prev_total) as f64;
                    let ds = system.saturating_sub(prev_system) as f64;
                    if ds > 0.0 {
                        row.cpu_percent = Some(dt / ds * f64::from(cpus) * 100.0);
                    }
                }
            }
            if let Some(now) = histogram {
                if let Some(prev) = self.histograms.insert(resource.clone(), now.clone()) {
                    let (rate, errors, p99) = rates(&prev, &now);
                    row.requests_per_sec = rate;
                    row.error_rate = errors;
                    row.p99_ms = p99;
                }
            }
            snapshot.rows.push(row);
        }
        snapshot
    }
}

/// A gateway's routes, upstream health and breakers, from its admin endpoint.
async fn admin_routes(http: &reqwest::Client, port: u16, token: &str) -> Gateway {
    let failed = |e: String| Gateway {
        error: Some(e),
        ..Gateway::default()
    };
    let response = match http
        .get(format!("http://127.0.0.1:{port}/admin/routes"))
        .bearer_auth(token)
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) => return failed(format!("its admin endpoint did not answer: {e}")),
    };
    if response.status() == reqwest::StatusCode::UNAUTHORIZED {
        return failed(
            "its admin endpoint refused the platform's admin token (secrets file changed?): \
             run `gravity up` to recreate it"
                .to_owned(),
        );
    }
    if !response.status().is_success() {
        return failed(format!("its admin endpoint answered {}", response.status()));
    }
    match response.json::<Gateway>().await {
        Ok(view) => view,
        Err(e) => failed(format!("its admin endpoint's answer is not readable: {e}")),
    }
}

/// CPU (container total, system total, online CPUs) and memory in use, without waiting for
/// the engine's second sample: CPU is computed between refreshes instead.
async fn one_shot_stats(engine: &Engine, id: &str) -> Option<(u64, u64, u32, Option<u64>)> {
    let mut stream = engine.api().stats(
        id,
        Some(StatsOptions {
            stream: false,
            one_shot: true,
        }),
    );
    let stats = stream.next().await?.ok()?;
    let cpu = stats.cpu_stats?;
    let total = cpu.cpu_usage?.total_usage?;
    let system = cpu.system_cpu_usage?;
    let cpus = cpu.online_cpus.unwrap_or(1);
    let memory = stats.memory_stats.and_then(|m| {
        let usage = m.usage?;
        // What `docker stats` shows: usage minus the page cache that can be reclaimed.
        let cache = m
            .stats
            .as_ref()
            .and_then(|s| {
                s.get("inactive_file")
                    .or_else(|| s.get("total_inactive_file"))
            })
            .copied()
            .unwrap_or(0);
        Some(usage.saturating_sub(cache))
    });
    Some((total, system, cpus, memory))
}

/// Reads a service's request histogram from its `/metrics`.
async fn scrape_histogram(http: &reqwest::Client, port: u16) -> Option<Histogram> {
    let body = http
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    Some(parse_histogram(&body, Instant::now()))
}

fn parse_histogram(body: &str, at: Instant) -> Histogram {
    let mut h = Histogram {
        at: Some(at),
        ..Histogram::default()
    };
    let Ok(scrape) = prometheus_parse::Scrape::parse(
        body.lines().map(|l| Ok::<_, std::io::Error>(l.to_owned())),
    ) else {
        return h;
    };
    for sample in scrape.samples {
        if sample.metric != DURATION {
            continue;
        }
        if sample
            .labels
            .get("route")
            .is_some_and(|r| SELF_ROUTES.contains(&r))
        {
            continue;
        }
        let is_error = sample
            .labels
            .get("status")
            .is_some_and(|s| s.starts_with('5'));
        if let prometheus_parse::Value::Histogram(buckets) = sample.value {
            for b in buckets {
                *h.buckets.entry(OrderedBound(b.less_than)).or_insert(0.0) += b.count;
                if b.less_than.is_infinite() {
                    h.total += b.count;
                    if is_error {
                        h.errors += b.count;
                    }
                }
            }
        }
    }
    h
}

/// Requests per second, 5xx share and p99 (ms) between two histograms of one service.
fn rates(prev: &Histogram, now: &Histogram) -> (Option<f64>, Option<f64>, Option<f64>) {
    let (Some(t0), Some(t1)) = (prev.at, now.at) else {
        return (None, None, None);
    };
    let secs = t1.duration_since(t0).as_secs_f64();
    let total = (now.total - prev.total).max(0.0);
    if secs <= 0.0 {
        return (None, None, None);
    }
    let rate = Some(total / secs);
    if total == 0.0 {
        return (rate, None, None);
    }
    let errors = Some(((now.errors - prev.errors).max(0.0)) / total);
    // The bucket where the 99th percentile falls, interpolated linearly inside it, as
    // Prometheus's histogram_quantile does.
    let target = total * 0.99;
    let mut lower_bound = 0.0;
    let mut lower_count = 0.0;
    let mut p99 = None;
    for (bound, count) in &now.buckets {
        let delta = (count - prev.buckets.get(bound).copied().unwrap_or(0.0)).max(0.0);
        if delta >= target {
            let upper = if bound.0.is_infinite() {
                lower_bound
            } else {
                bound.0
            };
            let in_bucket = delta - lower_count;
            let fraction = if in_bucket > 0.0 {
                (target - lower_count) / in_bucket
            } else {
                1.0
            };
            p99 = Some((lower_bound + (upper - lower_bound) * fraction) * 1000.0);
            break;
        }
        lower_bound = bound.0;
        lower_count = delta;
    }
    (rate, errors, p99)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exposition(fast: u64, slow: u64, errors: u64, scrapes: u64) -> String {
        let mut s = String::from("# TYPE http_request_duration_seconds histogram\n");
        let series = [
            ("/api/v1/me", "200", fast, slow),
            ("/api/v1/login", "500", errors, 0),
            ("/metrics", "200", scrapes, 0),
        ];
        for (route, status, fast, slow) in series {
            let l = format!("method=\"GET\",route=\"{route}\",status=\"{status}\"");
            s.push_str(&format!("{DURATION}_bucket{{{l},le=\"0.005\"}} {fast}\n"));
            s.push_str(&format!(
                "{DURATION}_bucket{{{l},le=\"0.1\"}} {}\n",
                fast + slow
            ));
            s.push_str(&format!(
                "{DURATION}_bucket{{{l},le=\"+Inf\"}} {}\n",
                fast + slow
            ));
            s.push_str(&format!(
                "{DURATION}_sum{{{l}}} 1\n{DURATION}_count{{{l}}} {}\n",
                fast + slow
            ));
        }
        s
    }

    #[test]
    fn rates_errors_and_p99_come_from_the_difference_of_two_scrapes() {
        let t0 = Instant::now();
        let prev = parse_histogram(&exposition(100, 0, 0, 5), t0);
        let now = parse_histogram(&exposition(1090, 10, 0, 500), t0 + Duration::from_secs(2));
        let (rate, errors, p99) = rates(&prev, &now);
        // 1,000 user requests in 2 s; the /metrics scrapes are left out.
        assert_eq!(rate, Some(500.0));
        assert_eq!(errors, Some(0.0));
        // 990 of 1,000 under 5 ms, 10 between 5 and 100 ms: p99 is the 5 ms bound.
        let p99 = p99.unwrap();
        assert!((p99 - 5.0).abs() < 1e-6, "{p99}");

        let later = parse_histogram(&exposition(1090, 10, 100, 600), t0 + Duration::from_secs(3));
        let (rate, errors, p99) = rates(&now, &later);
        assert_eq!(rate, Some(100.0));
        assert_eq!(errors, Some(1.0));
        assert!(p99.unwrap() <= 5.0);
    }

    #[test]
    fn no_traffic_has_a_rate_of_zero_and_no_latency() {
        let t0 = Instant::now();
        let a = parse_histogram(&exposition(10, 0, 0, 1), t0);
        let b = parse_histogram(&exposition(10, 0, 0, 2), t0 + Duration::from_secs(1));
        assert_eq!(rates(&a, &b), (Some(0.0), None, None));
    }
}
