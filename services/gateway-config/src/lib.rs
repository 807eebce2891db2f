//! The gateway's configuration file (`gateway.toml`): its schema as written ([`ConfigFile`]),
//! and the checked types it is parsed into ([`Config`]), so the request path never meets a
//! malformed prefix, URL or limit. The gateway reads it; the platform manager writes it from
//! gravity.toml as typed values and checks it the same way before starting a gateway.
//!
//! `[[route]]` sections are reloaded while running; `[server]`, `[auth]` and `[rate_limit]`
//! are read at start (a reload that changes them says a restart is needed).

use std::{fmt, net::SocketAddr, num::NonZeroU32, path::Path, str::FromStr, time::Duration};

use http::uri::{Authority, Scheme};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

/// The whole file, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub server: Server,
    pub auth: Option<Auth>,
    pub rate_limit: RateLimit,
    pub routes: Vec<Route>,
    /// What the admin listener's `/admin/*` endpoints require, when set. Never read from the
    /// file (a secret stays out of configuration files): the binary takes it from
    /// `GATEWAY_ADMIN_TOKEN`.
    pub admin_token: Option<AdminToken>,
}

/// A bearer token for the admin endpoints: at least 16 visible ASCII characters. Its `Debug`
/// never shows it, and it is compared in constant time.
#[derive(Clone)]
pub struct AdminToken(secrecy::SecretString);

impl AdminToken {
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.len() < 16 || !raw.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("the admin token must be at least 16 visible ASCII characters".into());
        }
        Ok(Self(secrecy::SecretString::from(raw.to_owned())))
    }

    /// Whether `presented` is this token; the time taken does not depend on where they differ.
    pub fn matches(&self, presented: &[u8]) -> bool {
        use secrecy::ExposeSecret as _;
        use subtle::ConstantTimeEq as _;
        self.0.expose_secret().as_bytes().ct_eq(presented).into()
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken([redacted])")
    }
}

impl PartialEq for AdminToken {
    fn eq(&self, other: &Self) -> bool {
        use secrecy::ExposeSecret as _;
        self.matches(other.0.expose_secret().as_bytes())
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    #[serde(default = "defaults::listen")]
    pub listen: SocketAddr,
    /// Routes, upstream health and breakers, `/metrics` and health probes. Keep it private.
    #[serde(default = "defaults::admin_listen")]
    pub admin_listen: SocketAddr,
    #[serde(default = "defaults::body_limit")]
    pub body_limit_bytes: u64,
    #[serde(default = "defaults::connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    #[serde(default = "defaults::header_read_timeout", with = "humantime_serde")]
    pub header_read_timeout: Duration,
    #[serde(default = "defaults::shutdown_grace", with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Take the client address from the last `X-Forwarded-For` hop (behind a load balancer).
    #[serde(default)]
    pub trust_forwarded_for: bool,
    /// One log line per request.
    #[serde(default)]
    pub access_log: bool,
    /// Answer this path on the main listener with the gateway's readiness (for orchestrators
    /// that probe the public port); off by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_path: Option<String>,
    /// Serve Prometheus metrics at this path on the main listener too; off by default (the
    /// admin listener always has `/metrics`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_path: Option<String>,
    /// How often the file is checked for changes (routes are reloaded without a restart).
    #[serde(default = "defaults::reload_interval", with = "humantime_serde")]
    pub reload_interval: Duration,
    /// Threads serving requests, each with its own listener on the port (`SO_REUSEPORT`),
    /// its own single-threaded runtime and its own upstream connections, so a request never
    /// crosses threads (nginx's worker model). Default: one per CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<usize>,
}

impl Default for Server {
    fn default() -> Self {
        Self {
            listen: defaults::listen(),
            admin_listen: defaults::admin_listen(),
            body_limit_bytes: defaults::body_limit(),
            connect_timeout: defaults::connect_timeout(),
            header_read_timeout: defaults::header_read_timeout(),
            shutdown_grace: defaults::shutdown_grace(),
            trust_forwarded_for: false,
            access_log: false,
            health_path: None,
            metrics_path: None,
            reload_interval: defaults::reload_interval(),
            workers: None,
        }
    }
}

impl Server {
    /// The number of serving threads: `workers`, else one per CPU the process may use.
    pub fn worker_count(&self) -> usize {
        self.workers.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        })
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    /// The auth service's key set, e.g. `http://auth:8000/.well-known/jwks.json`.
    pub jwks_url: String,
    #[serde(default = "defaults::issuer")]
    pub issuer: String,
    #[serde(default = "defaults::audience")]
    pub audience: String,
    /// Keys are refetched this often even when every `kid` is known.
    #[serde(default = "defaults::jwks_refresh", with = "humantime_serde")]
    pub refresh: Duration,
    /// A token naming an unknown `kid` triggers a refetch at most this often.
    #[serde(default = "defaults::jwks_min_refetch", with = "humantime_serde")]
    pub min_refetch_interval: Duration,
}

impl Auth {
    /// Tokens verified with the key set at `jwks_url`, everything else by default.
    pub fn new(jwks_url: String) -> Self {
        Self {
            jwks_url,
            issuer: defaults::issuer(),
            audience: defaults::audience(),
            refresh: defaults::jwks_refresh(),
            min_refetch_interval: defaults::jwks_min_refetch(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Shared limits across gateway instances; without it every instance counts alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_client: Option<Quota>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_user: Option<Quota>,
    /// Redis calls slower than this fall back to the local limiter.
    #[serde(default = "defaults::redis_timeout", with = "humantime_serde")]
    pub redis_timeout: Duration,
    /// Prefix of the Redis keys, so platforms sharing one Redis count apart.
    #[serde(default = "defaults::key_prefix")]
    pub key_prefix: String,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            redis_url: None,
            per_client: None,
            per_user: None,
            redis_timeout: defaults::redis_timeout(),
            key_prefix: defaults::key_prefix(),
        }
    }
}

/// `requests` per `period`, with bursts of up to `burst` (GCRA).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    pub requests: NonZeroU32,
    #[serde(with = "humantime_serde")]
    pub period: Duration,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<NonZeroU32>,
}

impl Quota {
    /// Time between two requests at the sustained rate.
    pub fn emission_interval(&self) -> Duration {
        self.period / self.requests.get()
    }

    pub fn burst(&self) -> NonZeroU32 {
        self.burst.unwrap_or(self.requests)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    RoundRobin,
    LeastConnections,
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// A valid token is required (except on `public_paths`).
    Token,
    /// A token is verified when sent; requests without one pass anonymously.
    Optional,
    /// No token is looked at.
    Public,
}

/// A path prefix: starts with `/`, no trailing `/` (except the root), no `..`, `?` or `#`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prefix(String);

impl Prefix {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The rest of `path` after this prefix, if `path` is under it (segment-wise: `/api`
    /// matches `/api` and `/api/x`, never `/apix`).
    pub fn strip<'a>(&self, path: &'a str) -> Option<&'a str> {
        if self.0 == "/" {
            return Some(path);
        }
        let rest = path.strip_prefix(self.0.as_str())?;
        (rest.is_empty() || rest.starts_with('/')).then_some(rest)
    }
}

impl FromStr for Prefix {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if !s.starts_with('/') {
            return Err(format!("prefix {s:?} must start with '/'"));
        }
        if s.contains(['?', '#', ' ']) || s.split('/').any(|seg| seg == ".." || seg == ".") {
            return Err(format!(
                "prefix {s:?} must be a plain path (no '.', '..', '?', '#' or spaces)"
            ));
        }
        let trimmed = if s.len() > 1 {
            s.trim_end_matches('/')
        } else {
            s
        };
        Ok(Self(if trimmed.is_empty() {
            "/".into()
        } else {
            trimmed.into()
        }))
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An upstream base URL: `http://host:port`, nothing else (no path, query or credentials).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UpstreamUrl {
    pub authority: Authority,
}

impl UpstreamUrl {
    pub fn scheme(&self) -> Scheme {
        Scheme::HTTP
    }
}

impl FromStr for UpstreamUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let uri: http::Uri = s
            .parse()
            .map_err(|e| format!("upstream {s:?} is not a URL ({e})"))?;
        if uri.scheme() != Some(&Scheme::HTTP) {
            return Err(format!(
                "upstream {s:?} must start with http:// (upstreams are on the private network)"
            ));
        }
        let authority = uri
            .authority()
            .ok_or_else(|| format!("upstream {s:?} has no host"))?
            .clone();
        if authority.as_str().contains('@') {
            return Err(format!("upstream {s:?} must not carry credentials"));
        }
        if authority.port_u16().is_none() {
            return Err(format!(
                "upstream {s:?} must name its port, e.g. http://auth:8000"
            ));
        }
        if uri.path() != "/" && !uri.path().is_empty() || uri.query().is_some() {
            return Err(format!(
                "upstream {s:?} must be only scheme, host and port; put paths in the route"
            ));
        }
        Ok(Self { authority })
    }
}

impl fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}", self.authority)
    }
}

/// A route's name: lowercase letters, digits and `-`; used in metrics labels and logs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RouteName(String);

impl RouteName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for RouteName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(format!(
                "route name {s:?} must be 1-63 lowercase letters, digits, '-' or '_'"
            ))
        }
    }
}

impl fmt::Display for RouteName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The most retries a route may make per request.
pub const MAX_RETRIES: u32 = 5;

#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub name: RouteName,
    pub prefix: Prefix,
    /// Matched against the request's host (without port), case-insensitively.
    pub host: Option<String>,
    pub strip_prefix: bool,
    pub upstreams: Vec<UpstreamUrl>,
    pub balance: Balance,
    pub access: Access,
    /// Paths (after the prefix) that need no token: exact, or ending in `/*` for a subtree.
    pub public_paths: Vec<String>,
    /// Whole-request deadline, retries included, until the upstream's response headers.
    /// Also the longest an upstream may pause in the middle of a response body.
    pub timeout: Duration,
    /// Extra attempts for idempotent methods (GET, HEAD, OPTIONS, PUT, DELETE, TRACE).
    pub retries: u32,
    pub health_check: Option<HealthCheck>,
    pub breaker: Breaker,
    pub outlier: Outlier,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    pub path: String,
    #[serde(default = "defaults::hc_interval", with = "humantime_serde")]
    pub interval: Duration,
    #[serde(default = "defaults::hc_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Consecutive failed checks before an upstream is taken out.
    #[serde(default = "defaults::two")]
    pub unhealthy_after: u32,
    /// Consecutive passed checks before it is put back.
    #[serde(default = "defaults::two")]
    pub healthy_after: u32,
}

impl HealthCheck {
    /// Checks of `path` with the default interval, timeout and thresholds.
    pub fn new(path: String) -> Self {
        Self {
            path,
            interval: defaults::hc_interval(),
            timeout: defaults::hc_timeout(),
            unhealthy_after: defaults::two(),
            healthy_after: defaults::two(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Breaker {
    /// Consecutive failures (connection errors, timeouts, 5xx) that open the breaker.
    #[serde(default = "defaults::breaker_failures")]
    pub failures: u32,
    /// How long it stays open before letting trial requests through.
    #[serde(default = "defaults::breaker_open", with = "humantime_serde")]
    pub open_for: Duration,
    /// Trial requests allowed at once while half-open.
    #[serde(default = "defaults::one")]
    pub half_open_requests: u32,
    /// Consecutive trial successes that close it again.
    #[serde(default = "defaults::one")]
    pub successes: u32,
}

impl Default for Breaker {
    fn default() -> Self {
        Self {
            failures: defaults::breaker_failures(),
            open_for: defaults::breaker_open(),
            half_open_requests: 1,
            successes: 1,
        }
    }
}

/// Passive outlier detection: an upstream that keeps failing at the connection level
/// (refused, reset, timed out) is ejected from balancing for a while, longer each time.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Outlier {
    #[serde(default = "defaults::outlier_errors")]
    pub consecutive_errors: u32,
    #[serde(default = "defaults::outlier_ejection", with = "humantime_serde")]
    pub base_ejection: Duration,
    /// Never eject more than this share of a pool.
    #[serde(default = "defaults::outlier_max_percent")]
    pub max_ejected_percent: u8,
}

impl Default for Outlier {
    fn default() -> Self {
        Self {
            consecutive_errors: defaults::outlier_errors(),
            base_ejection: defaults::outlier_ejection(),
            max_ejected_percent: defaults::outlier_max_percent(),
        }
    }
}

mod defaults {
    use std::{net::SocketAddr, time::Duration};

    pub fn listen() -> SocketAddr {
        SocketAddr::from(([0, 0, 0, 0], 8080))
    }
    pub fn admin_listen() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 9080))
    }
    pub fn body_limit() -> u64 {
        10 * 1024 * 1024
    }
    pub fn connect_timeout() -> Duration {
        Duration::from_secs(2)
    }
    pub fn header_read_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub fn shutdown_grace() -> Duration {
        Duration::from_secs(20)
    }
    pub fn reload_interval() -> Duration {
        Duration::from_secs(1)
    }
    pub fn issuer() -> String {
        "gravity-auth".into()
    }
    pub fn audience() -> String {
        "gravity".into()
    }
    pub fn jwks_refresh() -> Duration {
        Duration::from_secs(300)
    }
    pub fn jwks_min_refetch() -> Duration {
        Duration::from_secs(10)
    }
    pub fn redis_timeout() -> Duration {
        Duration::from_millis(100)
    }
    pub fn timeout() -> Duration {
        Duration::from_secs(30)
    }
    pub fn hc_interval() -> Duration {
        Duration::from_secs(2)
    }
    pub fn hc_timeout() -> Duration {
        Duration::from_secs(1)
    }
    pub fn one() -> u32 {
        1
    }
    pub fn two() -> u32 {
        2
    }
    pub fn retries() -> u32 {
        2
    }
    pub fn breaker_failures() -> u32 {
        5
    }
    pub fn breaker_open() -> Duration {
        Duration::from_secs(10)
    }
    pub fn outlier_errors() -> u32 {
        3
    }
    pub fn outlier_ejection() -> Duration {
        Duration::from_secs(5)
    }
    pub fn outlier_max_percent() -> u8 {
        50
    }
    pub fn key_prefix() -> String {
        "gravity:gateway:rl".into()
    }
    pub fn truth() -> bool {
        true
    }
}

/// The file as written, before checking: what the platform manager builds and writes.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<Server>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<Auth>,
    #[serde(default)]
    pub rate_limit: RateLimit,
    #[serde(default, rename = "route", skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteFile>,
}

/// A `[[route]]` as written.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    pub name: String,
    pub prefix: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default = "defaults::truth")]
    pub strip_prefix: bool,
    pub upstreams: Vec<String>,
    #[serde(default = "round_robin")]
    pub balance: Balance,
    #[serde(default = "token")]
    pub access: Access,
    #[serde(default)]
    pub public_paths: Vec<String>,
    #[serde(default = "defaults::timeout", with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(default = "defaults::retries")]
    pub retries: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    #[serde(default)]
    pub breaker: Breaker,
    #[serde(default)]
    pub outlier: Outlier,
}

impl RouteFile {
    /// A route named `name` from `prefix` to `upstreams`, everything else by default.
    pub fn new(name: String, prefix: String, upstreams: Vec<String>) -> Self {
        Self {
            name,
            prefix,
            host: None,
            strip_prefix: true,
            upstreams,
            balance: round_robin(),
            access: token(),
            public_paths: Vec::new(),
            timeout: defaults::timeout(),
            retries: defaults::retries(),
            health_check: None,
            breaker: Breaker::default(),
            outlier: Outlier::default(),
        }
    }
}

impl ConfigFile {
    /// The file's text.
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        toml::to_string(self).map_err(|e| ConfigError::Parse {
            path: "the written configuration".to_owned(),
            message: e.to_string(),
        })
    }
}

fn round_robin() -> Balance {
    Balance::RoundRobin
}

fn token() -> Access {
    Access::Token
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and checks `text`; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let raw: ConfigFile = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        Self::check(raw, origin)
    }

    /// Checks a file given as typed values; `origin` names it in errors.
    pub fn check(raw: ConfigFile, origin: &str) -> Result<Self, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: origin.to_owned(),
            message,
        };
        let server = raw.server.unwrap_or_default();
        for (key, path) in [
            ("health_path", &server.health_path),
            ("metrics_path", &server.metrics_path),
        ] {
            if path.as_deref().is_some_and(|p| !p.starts_with('/')) {
                return Err(invalid(format!("server.{key} must start with '/'")));
            }
        }
        if server.workers.is_some_and(|w| w == 0 || w > 1024) {
            return Err(invalid("server.workers must be between 1 and 1024".into()));
        }
        if server.body_limit_bytes == 0 {
            return Err(invalid("server.body_limit_bytes must be at least 1".into()));
        }
        let mut routes = Vec::with_capacity(raw.routes.len());
        for r in raw.routes {
            let route = check_route(r).map_err(&invalid)?;
            if routes.iter().any(|o: &Route| o.name == route.name) {
                return Err(invalid(format!("two routes are named {:?}", route.name.0)));
            }
            if let Some(other) = routes
                .iter()
                .find(|o: &&Route| o.prefix == route.prefix && o.host == route.host)
            {
                return Err(invalid(format!(
                    "routes {:?} and {:?} both claim prefix {}{}",
                    other.name.0,
                    route.name.0,
                    route.prefix,
                    route
                        .host
                        .as_deref()
                        .map(|h| format!(" on host {h}"))
                        .unwrap_or_default()
                )));
            }
            if route.access != Access::Public && raw.auth.is_none() {
                return Err(invalid(format!(
                    "route {:?} needs tokens (access = \"{}\") but there is no [auth] section \
                     with the auth service's jwks_url; add one, or set access = \"public\"",
                    route.name.0,
                    if route.access == Access::Token {
                        "token"
                    } else {
                        "optional"
                    }
                )));
            }
            routes.push(route);
        }
        for (what, quota) in [
            ("per_client", raw.rate_limit.per_client),
            ("per_user", raw.rate_limit.per_user),
        ] {
            if let Some(q) = quota {
                if q.emission_interval().is_zero() {
                    return Err(invalid(format!(
                        "rate_limit.{what}: {} requests per {:?} is more than one per nanosecond",
                        q.requests, q.period
                    )));
                }
            }
        }
        if let Some(url) = &raw.rate_limit.redis_url {
            let parsed = url::Url::parse(url)
                .map_err(|e| invalid(format!("rate_limit.redis_url is not a Redis URL ({e})")))?;
            if !["redis", "rediss", "unix", "redis+unix"].contains(&parsed.scheme()) {
                return Err(invalid(
                    "rate_limit.redis_url must start with redis://, rediss:// or unix://".into(),
                ));
            }
        }
        if let Some(auth) = &raw.auth {
            let parsed = url::Url::parse(&auth.jwks_url)
                .map_err(|e| invalid(format!("auth.jwks_url is not a URL ({e})")))?;
            if !["http", "https"].contains(&parsed.scheme()) {
                return Err(invalid("auth.jwks_url must be an http(s) URL".into()));
            }
        }
        Ok(Self {
            server,
            auth: raw.auth,
            rate_limit: raw.rate_limit,
            routes,
            admin_token: None,
        })
    }
}

fn check_route(r: RouteFile) -> Result<Route, String> {
    let name: RouteName = r.name.parse()?;
    let at = |e: String| format!("route {:?}: {e}", name.0);
    let prefix: Prefix = r.prefix.parse().map_err(at)?;
    if r.upstreams.is_empty() {
        return Err(at("needs at least one upstream".into()));
    }
    let mut upstreams = Vec::with_capacity(r.upstreams.len());
    for u in &r.upstreams {
        let url: UpstreamUrl = u.parse().map_err(at)?;
        if upstreams.contains(&url) {
            return Err(at(format!("upstream {url} is listed twice")));
        }
        upstreams.push(url);
    }
    for p in &r.public_paths {
        if !p.starts_with('/') {
            return Err(at(format!("public path {p:?} must start with '/'")));
        }
    }
    if r.timeout.is_zero() {
        return Err(at("timeout must be more than zero".into()));
    }
    if r.retries > MAX_RETRIES {
        return Err(at(format!(
            "retries = {} is more than {MAX_RETRIES}",
            r.retries
        )));
    }
    if let Some(hc) = &r.health_check {
        if !hc.path.starts_with('/') {
            return Err(at(format!(
                "health_check.path {:?} must start with '/'",
                hc.path
            )));
        }
        if hc.interval.is_zero() || hc.timeout.is_zero() {
            return Err(at(
                "health_check interval and timeout must be more than zero".into(),
            ));
        }
        if hc.unhealthy_after == 0 || hc.healthy_after == 0 {
            return Err(at("health_check thresholds must be at least 1".into()));
        }
    }
    if r.breaker.failures == 0 || r.breaker.half_open_requests == 0 || r.breaker.successes == 0 {
        return Err(at("breaker thresholds must be at least 1".into()));
    }
    if r.outlier.consecutive_errors == 0 || r.outlier.max_ejected_percent > 100 {
        return Err(at(
            "outlier.consecutive_errors must be at least 1 and max_ejected_percent at most 100"
                .into(),
        ));
    }
    let host = r.host.map(|h| h.to_ascii_lowercase());
    Ok(Route {
        name,
        prefix,
        host,
        strip_prefix: r.strip_prefix,
        upstreams,
        balance: r.balance,
        access: r.access,
        public_paths: r.public_paths,
        timeout: r.timeout,
        retries: r.retries,
        health_check: r.health_check,
        breaker: r.breaker,
        outlier: r.outlier,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_tokens_are_long_visible_ascii_never_shown_and_compared_whole() {
        for bad in [
            "short",
            "sixteen chars ok",
            "tab\tinside-0123456789",
            "ünïcödé-0123456789",
        ] {
            assert!(AdminToken::parse(bad).is_err(), "{bad}");
        }
        let token = AdminToken::parse("0123456789abcdef").unwrap();
        assert_eq!(format!("{token:?}"), "AdminToken([redacted])");
        assert!(token.matches(b"0123456789abcdef"));
        for wrong in [
            &b"0123456789abcdeF"[..],
            b"0123456789abcde",
            b"0123456789abcdef0",
            b"",
        ] {
            assert!(!token.matches(wrong));
        }
        // Never read from the file: only the binary's environment sets it.
        let parsed = Config::parse("", "gateway.toml").unwrap();
        assert!(parsed.admin_token.is_none());
        assert!(Config::parse("[server]\nadmin_token = \"0123456789abcdef\"\n", "g").is_err());
    }

    #[test]
    fn prefixes_match_whole_segments() {
        let p: Prefix = "/api/".parse().unwrap();
        assert_eq!(p.as_str(), "/api");
        assert_eq!(p.strip("/api"), Some(""));
        assert_eq!(p.strip("/api/users"), Some("/users"));
        assert_eq!(p.strip("/apix"), None);
        let root: Prefix = "/".parse().unwrap();
        assert_eq!(root.strip("/x"), Some("/x"));
        assert!("api".parse::<Prefix>().is_err());
        assert!("/a/../b".parse::<Prefix>().is_err());
    }

    #[test]
    fn upstreams_are_plain_http_origins() {
        assert!("http://auth:8000".parse::<UpstreamUrl>().is_ok());
        assert!("http://auth:8000/".parse::<UpstreamUrl>().is_ok());
        assert!("https://auth:8000".parse::<UpstreamUrl>().is_err());
        assert!("http://auth".parse::<UpstreamUrl>().is_err());
        assert!("http://auth:8000/v1".parse::<UpstreamUrl>().is_err());
        assert!("http://u:p@auth:8000".parse::<UpstreamUrl>().is_err());
    }

    #[test]
    fn a_route_needing_tokens_needs_an_auth_section() {
        let err = Config::parse(
            "[[route]]\nname = \"a\"\nprefix = \"/a\"\nupstreams = [\"http://a:1\"]\n",
            "gateway.toml",
        )
        .unwrap_err();
        assert!(err.to_string().contains("[auth]"), "{err}");
    }

    #[test]
    fn duplicate_prefixes_and_unknown_keys_are_refused() {
        let text = r#"
            [[route]]
            name = "a"
            prefix = "/a"
            access = "public"
            upstreams = ["http://a:1"]
            [[route]]
            name = "b"
            prefix = "/a/"
            access = "public"
            upstreams = ["http://b:1"]
        "#;
        let err = Config::parse(text, "g.toml").unwrap_err().to_string();
        assert!(err.contains("both claim prefix /a"), "{err}");
        let err = Config::parse("[server]\nlisten_port = 1\n", "g.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field"), "{err}");
        let err = Config::parse("[server]\nworkers = 0\n", "g.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("server.workers"), "{err}");
        let three = Config::parse("[server]\nworkers = 3\n", "g.toml").unwrap();
        assert_eq!(three.server.worker_count(), 3);
        let default = Config::parse("", "g.toml").unwrap();
        assert!(default.server.worker_count() >= 1);
    }

    #[test]
    fn the_example_in_the_readme_is_valid() {
        let readme = include_str!("../../../README.md");
        let start = readme
            .find("```toml\n[server]")
            .expect("the README's example")
            + 8;
        let len = readme[start..].find("```").expect("its end");
        let config = Config::parse(&readme[start..start + len], "README.md").unwrap();
        assert_eq!(config.routes.len(), 1);
        assert_eq!(config.routes[0].upstreams.len(), 2);
    }

    #[test]
    fn durations_and_quotas_parse() {
        let text = r#"
            [rate_limit]
            per_client = { requests = 10, period = "1s", burst = 20 }
            [[route]]
            name = "a"
            prefix = "/a"
            access = "public"
            timeout = "250ms"
            upstreams = ["http://a:1"]
            breaker = { failures = 3, open_for = "2s" }
        "#;
        let c = Config::parse(text, "g.toml").unwrap();
        let q = c.rate_limit.per_client.unwrap();
        assert_eq!(q.emission_interval(), Duration::from_millis(100));
        assert_eq!(q.burst().get(), 20);
        assert_eq!(c.routes[0].timeout, Duration::from_millis(250));
        assert_eq!(c.routes[0].breaker.failures, 3);
        assert_eq!(c.routes[0].breaker.open_for, Duration::from_secs(2));
        assert_eq!(c.server.listen.port(), 8080);
    }
}
