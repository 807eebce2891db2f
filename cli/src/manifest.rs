//! `gravity.toml`, parsed into typed values. A mistake is reported with the file, line and
//! column, and what to write instead.

use std::{
    collections::BTreeMap,
    fmt,
    ops::Range,
    path::{Path, PathBuf},
};

use serde::Deserialize;
use toml::Spanned;

/// A problem in gravity.toml, located in the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}{}", help.as_deref().map(|h| format!("\n  help: {h}")).unwrap_or_default())]
pub struct ManifestError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
    pub help: Option<String>,
}

/// A service or infrastructure name: lowercase kebab-case, 2 to 40 characters, usable as a
/// container, database and DNS name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceName(String);

impl ServiceName {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let ok = (2..=40).contains(&raw.len())
            && raw.starts_with(|c: char| c.is_ascii_lowercase())
            && !raw.ends_with('-')
            && !raw.contains("--")
            && raw
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(format!(
                "{raw:?} is not a valid name: use 2-40 lowercase letters, digits and single dashes, starting with a letter (e.g. \"user-profiles\")"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A TCP port a platform publishes on the host: 1024 to 65535 (no privileged ports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Port(u16);

impl Port {
    pub fn parse(raw: i64) -> Result<Self, String> {
        match u16::try_from(raw) {
            Ok(p) if p >= 1024 => Ok(Self(p)),
            _ => Err(format!(
                "{raw} is not a usable port: pick one between 1024 and 65535"
            )),
        }
    }

    pub fn get(self) -> u16 {
        self.0
    }
}

/// A container image reference: `name[:tag]`, optionally with a registry and path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    name: String,
    tag: String,
}

impl ImageRef {
    pub fn parse(raw: &str, default_tag: &str) -> Result<Self, String> {
        let (name, tag) = match raw.rsplit_once(':') {
            // A colon before the last slash belongs to a registry's port, not a tag.
            Some((name, tag)) if !tag.contains('/') => (name, tag),
            _ => (raw, default_tag),
        };
        let name_ok = !name.is_empty()
            && name.len() <= 255
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/:".contains(c))
            && !name.starts_with(['/', '.', '-'])
            && !name.ends_with('/');
        let tag_ok = !tag.is_empty()
            && tag.len() <= 128
            && tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            && !tag.starts_with(['.', '-']);
        if name_ok && tag_ok {
            Ok(Self {
                name: name.to_owned(),
                tag: tag.to_owned(),
            })
        } else {
            Err(format!("{raw:?} is not an image reference (e.g. \"postgres:15\" or \"registry.local/redis:7\")"))
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn tag(&self) -> &str {
        &self.tag
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, self.tag)
    }
}

/// The platform gravity.toml describes.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub name: ServiceName,
    /// The Cargo workspace holding the services' crates and `migrations/`, relative to
    /// gravity.toml's directory (default: that directory).
    pub workspace: PathBuf,
    /// The Cargo profile services are built with (`dev` unless `[build] profile` says).
    pub profile: String,
    /// `[infrastructure.NAME]`: each an instance of a kind (`crate::infra::KINDS`).
    pub infrastructure: BTreeMap<ServiceName, Infra>,
    pub services: BTreeMap<ServiceName, ServiceSpec>,
    /// `[platform] otlp_endpoint`: a collector outside the platform every service sends its
    /// spans to (when no trace backend of the platform's own receives them).
    pub otlp_endpoint: Option<OtlpEndpoint>,
}

/// Where spans go over OTLP/HTTP, as the services' containers reach it (`/v1/traces` is
/// appended): `http://` only, since the services' exporter has no TLS stack of its own (a
/// collector on TLS is reached through a local one), and never loopback, which inside a
/// container is the container itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpEndpoint(String);

/// The name a container reaches the machine running it by (Docker Desktop's; `gravity up`
/// maps it to the engine's host gateway on Linux).
pub const DOCKER_HOST: &str = "host.docker.internal";

impl OtlpEndpoint {
    pub fn parse(raw: &str) -> Result<Self, (String, String)> {
        let url = reqwest::Url::parse(raw).map_err(|e| {
            (
                format!("{raw:?} is not a URL: {e}"),
                "for example otlp_endpoint = \"http://collector.internal:4318\"".to_owned(),
            )
        })?;
        if url.scheme() != "http" {
            return Err((
                format!(
                    "otlp_endpoint must be an http:// URL, not {}://",
                    url.scheme()
                ),
                "the services send OTLP/HTTP without TLS; to reach a collector on TLS, run a \
                 local OpenTelemetry Collector that forwards to it and name that one here"
                    .to_owned(),
            ));
        }
        let host = url.host_str().unwrap_or_default();
        let loopback = host == "localhost"
            || host
                .trim_matches(['[', ']'])
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if loopback {
            return Err((
                format!("{host} in otlp_endpoint would be each service's own container"),
                format!("to reach a collector on this machine use http://{DOCKER_HOST}:4318"),
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err((
                "otlp_endpoint takes no query nor fragment".to_owned(),
                "name the collector's base URL; /v1/traces is appended".to_owned(),
            ));
        }
        Ok(Self(raw.trim_end_matches('/').to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether it names the machine running the containers.
    pub fn on_docker_host(&self) -> bool {
        reqwest::Url::parse(&self.0).is_ok_and(|u| u.host_str() == Some(DOCKER_HOST))
    }
}

/// One piece of infrastructure: an instance of a kind (PostgreSQL, Redis, RabbitMQ, ...).
#[derive(Debug, Clone)]
pub struct Infra {
    pub kind: &'static dyn crate::infra::Kind,
    pub image: ImageRef,
    pub port: Port,
    pub settings: BTreeMap<String, String>,
}

/// One service of the platform.
#[derive(Debug, Clone)]
pub struct ServiceSpec {
    pub crate_name: String,
    pub port: Port,
    /// The service's own database, if it has one.
    pub database: Option<String>,
    pub depends_on: Vec<ServiceName>,
    pub env: BTreeMap<String, String>,
    pub health: String,
    /// Its migrations, relative to the workspace (default `migrations/<service name>`).
    pub migrations: Option<PathBuf>,
    /// How the gateway reaches it, if it is public.
    pub route: Option<ServiceRoute>,
    /// On the gateway only: the limits it applies to every routed request.
    pub rate_limit: Option<GatewayLimits>,
    /// `signing_key = true`: the service gets the platform's signing key
    /// (`PLATFORM_SIGNING_KEY`), with which it signs what the platform vouches for (the
    /// audit log's checkpoints). No other service sees it.
    pub signing_key: bool,
}

/// `[services.NAME.rate_limit]`, on the gateway service: requests per client address and
/// per verified user (see the gateway's `[rate_limit]`). Counted in the platform's Redis
/// when the gateway depends on it, so every gateway instance enforces one limit.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_client: Option<gateway_config::Quota>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_user: Option<gateway_config::Quota>,
}

/// `[services.NAME.route]`: the gateway route to a service (see the gateway's `[[route]]`).
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceRoute {
    pub prefix: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strip_prefix: Option<bool>,
    /// `token` (the default), `optional` or `public`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<gateway_config::Access>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub public_paths: Vec<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde"
    )]
    pub timeout: Option<std::time::Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    platform: RawPlatform,
    #[serde(default)]
    infrastructure: BTreeMap<Spanned<String>, RawInfra>,
    #[serde(default)]
    services: BTreeMap<Spanned<String>, RawService>,
    #[serde(default)]
    build: RawBuild,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawBuild {
    profile: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlatform {
    name: Spanned<String>,
    workspace: Option<String>,
    otlp_endpoint: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInfra {
    /// The kind; the table's name when left out (`[infrastructure.redis]`).
    kind: Option<Spanned<String>>,
    image: Option<Spanned<String>>,
    version: Option<Spanned<String>>,
    port: Spanned<i64>,
    #[serde(default)]
    settings: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    #[serde(rename = "crate")]
    crate_name: Option<Spanned<String>>,
    port: Spanned<i64>,
    database: Option<Spanned<String>>,
    #[serde(default)]
    depends_on: Vec<Spanned<String>>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    health: Option<Spanned<String>>,
    migrations: Option<Spanned<String>>,
    route: Option<Spanned<ServiceRoute>>,
    rate_limit: Option<Spanned<GatewayLimits>>,
    #[serde(default)]
    signing_key: bool,
}

/// Turns byte offsets into 1-based line and column for error messages.
struct Source<'a> {
    file: &'a str,
    text: &'a str,
}

impl Source<'_> {
    fn error(
        &self,
        span: Range<usize>,
        message: impl Into<String>,
        help: Option<String>,
    ) -> ManifestError {
        let before = &self.text[..span.start.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        ManifestError {
            file: self.file.to_owned(),
            line,
            column,
            message: message.into(),
            help,
        }
    }
}

/// The known name closest to `unknown`, if any is close enough to be a likely typo.
fn nearest<'a>(unknown: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    known
        .into_iter()
        .map(|k| (strsim::levenshtein(unknown, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min()
        .map(|(_, k)| k)
}

impl Manifest {
    /// Reads and parses gravity.toml at `path`.
    pub fn load(path: &Path) -> Result<Self, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|error| LoadError::Read {
            path: path.display().to_string(),
            error,
        })?;
        Ok(Self::parse(&path.display().to_string(), &text)?)
    }

    /// Parses gravity.toml's text; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Self, ManifestError> {
        Self::parse_with_kinds(file, text, crate::infra::KINDS)
    }

    /// Parses gravity.toml's text knowing the infrastructure kinds `kinds` (a test adds its
    /// own).
    pub fn parse_with_kinds(
        file: &str,
        text: &str,
        kinds: &[&'static dyn crate::infra::Kind],
    ) -> Result<Self, ManifestError> {
        let src = Source { file, text };
        let raw: RawManifest = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            src.error(
                span,
                e.message().trim().to_owned(),
                syntax_help(e.message()),
            )
        })?;

        let name = ServiceName::parse(raw.platform.name.get_ref())
            .map_err(|m| src.error(raw.platform.name.span(), m, None))?;

        let mut infrastructure = BTreeMap::new();
        let mut infra_spans = BTreeMap::new();
        let mut ports: BTreeMap<Port, String> = BTreeMap::new();
        for (key, spec) in raw.infrastructure {
            let name =
                ServiceName::parse(key.get_ref()).map_err(|m| src.error(key.span(), m, None))?;
            infra_spans.insert(name.clone(), key.span());
            let kind_name = spec
                .kind
                .as_ref()
                .map_or(name.as_str(), |k| k.get_ref().as_str());
            let kind_span = spec.kind.as_ref().map_or(key.span(), |k| k.span());
            let Some(kind) = crate::infra::kind_named(kinds, kind_name) else {
                let names: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
                let help = match nearest(kind_name, names.iter().copied()) {
                    Some(n) => format!("did you mean \"{n}\"? known kinds: {}", names.join(", ")),
                    None => format!(
                        "known kinds: {}; name one with `kind = \"...\"`",
                        names.join(", ")
                    ),
                };
                return Err(src.error(
                    kind_span,
                    format!("unknown infrastructure kind \"{kind_name}\""),
                    Some(help),
                ));
            };
            let (default_name, default_tag) = kind.default_image();
            let (image_text, image_span) = match &spec.image {
                Some(i) => (i.get_ref().as_str(), i.span()),
                None => (default_name, key.span()),
            };
            let tag = spec
                .version
                .as_ref()
                .map_or(default_tag, |v| v.get_ref().as_str());
            let image =
                ImageRef::parse(image_text, tag).map_err(|m| src.error(image_span, m, None))?;
            let port = claim_port(&src, &mut ports, &spec.port, &name)?;
            if let Some(key) = spec.settings.keys().find(|k| {
                k.is_empty()
                    || !k
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
            }) {
                return Err(src.error(
                    spec.port.span(),
                    format!("setting name {key:?} is not valid"),
                    Some("setting names are letters, digits, '_', '.' and '-' (e.g. max_connections = \"200\")".to_owned()),
                ));
            }
            if kind.name() == crate::infra::POSTGRES_KIND
                && infrastructure
                    .values()
                    .any(|i: &Infra| i.kind.name() == kind.name())
            {
                return Err(src.error(
                    key.span(),
                    "a platform has one PostgreSQL: every service's `database` lives in it",
                    Some(
                        "remove this table; each service already gets its own database and role"
                            .to_owned(),
                    ),
                ));
            }
            infrastructure.insert(
                name,
                Infra {
                    kind,
                    image,
                    port,
                    settings: spec.settings,
                },
            );
        }

        let mut known: Vec<String> = infrastructure.keys().map(|k| k.to_string()).collect();
        for key in raw.services.keys() {
            known.push(key.get_ref().clone());
        }

        let mut services = BTreeMap::new();
        for (key, spec) in raw.services {
            let name =
                ServiceName::parse(key.get_ref()).map_err(|m| src.error(key.span(), m, None))?;
            if infrastructure.contains_key(&name)
                || crate::infra::kind_named(kinds, name.as_str()).is_some()
            {
                return Err(src.error(
                    key.span(),
                    format!("service name {name:?} is reserved for infrastructure"),
                    Some("pick another name for the service".to_owned()),
                ));
            }
            // Every service's exchange feeds the broker's `events` exchange, which a service
            // of that name would also be given as its own.
            if name.as_str() == "events" {
                return Err(src.error(
                    key.span(),
                    "service name \"events\" is reserved: it names the exchange every event passes through",
                    Some("pick another name for the service".to_owned()),
                ));
            }
            let port = claim_port(&src, &mut ports, &spec.port, &name)?;
            let mut depends_on = Vec::new();
            for dep in &spec.depends_on {
                let dep_name = dep.get_ref();
                if dep_name == name.as_str() {
                    return Err(src.error(
                        dep.span(),
                        format!("service {name} depends on itself"),
                        None,
                    ));
                }
                if !known.iter().any(|k| k == dep_name) {
                    let help = match nearest(dep_name, known.iter().map(String::as_str)) {
                        Some(n) => {
                            format!("did you mean \"{n}\"? known names: {}", known.join(", "))
                        }
                        None => format!("known names: {}", known.join(", ")),
                    };
                    return Err(src.error(
                        dep.span(),
                        format!("unknown name \"{dep_name}\" in services.{name}.depends_on"),
                        Some(help),
                    ));
                }
                depends_on.push(ServiceName(dep_name.clone()));
            }
            let health = match spec.health {
                Some(h) if h.get_ref().starts_with('/') => h.into_inner(),
                Some(h) => {
                    return Err(src.error(
                        h.span(),
                        format!("health path {:?} must start with '/'", h.get_ref()),
                        Some("for example health = \"/health/ready\"".to_owned()),
                    ))
                }
                None => "/health/ready".to_owned(),
            };
            let database = match spec.database {
                Some(db) => {
                    let ok = !db.get_ref().is_empty()
                        && db.get_ref().len() <= 63
                        && db
                            .get_ref()
                            .chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
                    // The service's role is named after its database: `public` and `none`
                    // are role names PostgreSQL refuses.
                    let reserved = ["postgres", "template0", "template1", "public", "none"]
                        .contains(&db.get_ref().as_str())
                        || db.get_ref().starts_with("pg_");
                    if reserved {
                        return Err(src.error(
                            db.span(),
                            format!("database name {:?} is reserved by PostgreSQL", db.get_ref()),
                            Some(format!(
                                "name it after the service (e.g. \"{}\")",
                                key.get_ref().replace('-', "_")
                            )),
                        ));
                    }
                    if !ok {
                        return Err(src.error(
                            db.span(),
                            format!("{:?} is not a database name", db.get_ref()),
                            Some("use lowercase letters, digits and underscores (e.g. \"user_profiles\")".to_owned()),
                        ));
                    }
                    Some(db.into_inner())
                }
                None => None,
            };
            let crate_name = match spec.crate_name {
                Some(c) => {
                    let ok = !c.get_ref().is_empty()
                        && c.get_ref().len() <= 64
                        && c.get_ref().starts_with(|ch: char| ch.is_ascii_alphabetic())
                        && c.get_ref().chars().all(|ch| {
                            ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-' || ch == '_'
                        });
                    if !ok {
                        return Err(src.error(
                            c.span(),
                            format!("{:?} is not a crate name", c.get_ref()),
                            Some("name the workspace crate whose binary runs this service (e.g. \"auth\")".to_owned()),
                        ));
                    }
                    c.into_inner()
                }
                None => name.to_string(),
            };
            let migrations = match spec.migrations {
                Some(dir) => {
                    let path = Path::new(dir.get_ref());
                    let inside = !dir.get_ref().is_empty()
                        && path.is_relative()
                        && path
                            .components()
                            .all(|c| matches!(c, std::path::Component::Normal(_)));
                    if !inside {
                        return Err(src.error(
                            dir.span(),
                            format!(
                                "{:?} is not a directory inside the workspace",
                                dir.get_ref()
                            ),
                            Some("use a relative path such as \"migrations/auth\"".to_owned()),
                        ));
                    }
                    if database.is_none() {
                        return Err(src.error(
                            dir.span(),
                            format!("service {name} has migrations but no database"),
                            Some("add `database = \"...\"` to the service".to_owned()),
                        ));
                    }
                    Some(PathBuf::from(dir.into_inner()))
                }
                None => None,
            };
            if let Some(db) = &database {
                if database_server(&infrastructure).is_none() {
                    return Err(src.error(
                        key.span(),
                        format!("service {name} has a database but the platform has no PostgreSQL"),
                        Some(
                            "add an [infrastructure.postgres] table, or remove `database`"
                                .to_owned(),
                        ),
                    ));
                }
                if let Some((other, _)) =
                    services
                        .iter()
                        .find(|(_, s): &(&ServiceName, &ServiceSpec)| {
                            s.database.as_deref() == Some(db.as_str())
                        })
                {
                    return Err(src.error(
                        key.span(),
                        format!("services {other} and {name} both use database {db:?}"),
                        Some(
                            "each service owns its own database: give this one another name"
                                .to_owned(),
                        ),
                    ));
                }
            }
            let route = match spec.route {
                Some(r) => {
                    let span = r.span();
                    let route = r.into_inner();
                    let problem = if !route.prefix.starts_with('/') {
                        Some(format!(
                            "route prefix {:?} must start with '/'",
                            route.prefix
                        ))
                    } else {
                        None
                    };
                    if let Some(problem) = problem {
                        return Err(src.error(
                            span,
                            problem,
                            Some("for example route = { prefix = \"/api/v1/orders\" }".to_owned()),
                        ));
                    }
                    Some(route)
                }
                None => None,
            };
            let rate_limit = match spec.rate_limit {
                Some(limits) if crate_name != crate::gateway::GATEWAY_CRATE => {
                    return Err(src.error(
                        limits.span(),
                        format!(
                            "service {name} is not the gateway; rate limits are set on the gateway"
                        ),
                        Some(
                            "move the table to the service built from the gateway crate, \
                             e.g. [services.gateway.rate_limit]"
                                .to_owned(),
                        ),
                    ));
                }
                Some(limits) => Some(limits.into_inner()),
                None => None,
            };
            services.insert(
                name,
                ServiceSpec {
                    crate_name,
                    port,
                    database,
                    depends_on,
                    env: spec.env,
                    health,
                    migrations,
                    route,
                    rate_limit,
                    signing_key: spec.signing_key,
                },
            );
        }
        let profile = match raw.build.profile {
            Some(p) => {
                let ok = !p.get_ref().is_empty()
                    && p.get_ref()
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
                if !ok {
                    return Err(src.error(
                        p.span(),
                        format!("{:?} is not a Cargo profile name", p.get_ref()),
                        Some("for example profile = \"release\"".to_owned()),
                    ));
                }
                p.into_inner()
            }
            None => "dev".to_owned(),
        };
        let otlp_endpoint = match raw.platform.otlp_endpoint {
            Some(raw) => Some(
                OtlpEndpoint::parse(raw.get_ref())
                    .map_err(|(message, help)| src.error(raw.span(), message, Some(help)))?,
            ),
            None => None,
        };
        let manifest = Self {
            name,
            workspace: PathBuf::from(raw.platform.workspace.unwrap_or_else(|| ".".to_owned())),
            profile,
            infrastructure,
            services,
            otlp_endpoint,
        };
        manifest.check_cycles(&src)?;
        for (name, infra) in &manifest.infrastructure {
            let instance = crate::infra::Instance {
                name,
                infra,
                platform: &manifest,
            };
            if let Err((message, help)) = infra.kind.check(&instance) {
                let span = infra_spans.get(name).cloned().unwrap_or(0..0);
                return Err(src.error(span, message, Some(help)));
            }
        }
        Ok(manifest)
    }

    /// The platform's PostgreSQL, where every service's `database` lives.
    pub fn database_server(&self) -> Option<(&ServiceName, &Infra)> {
        database_server(&self.infrastructure)
    }

    /// The instance services exchange their events through, if the platform has one.
    pub fn event_broker(&self) -> Option<&ServiceName> {
        self.infrastructure
            .iter()
            .find(|(_, i)| i.kind.carries_events())
            .map(|(name, _)| name)
    }

    /// Refuses `depends_on` cycles, naming one.
    fn check_cycles(&self, src: &Source<'_>) -> Result<(), ManifestError> {
        fn visit<'a>(
            m: &'a Manifest,
            at: &'a ServiceName,
            path: &mut Vec<&'a ServiceName>,
            done: &mut Vec<&'a ServiceName>,
        ) -> Result<(), Vec<String>> {
            if done.contains(&at) {
                return Ok(());
            }
            if let Some(i) = path.iter().position(|p| *p == at) {
                let mut cycle: Vec<String> = path[i..].iter().map(|s| s.to_string()).collect();
                cycle.push(at.to_string());
                return Err(cycle);
            }
            path.push(at);
            if let Some(spec) = m.services.get(at) {
                for dep in &spec.depends_on {
                    visit(m, dep, path, done)?;
                }
            }
            path.pop();
            done.push(at);
            Ok(())
        }
        let mut done = Vec::new();
        for name in self.services.keys() {
            if let Err(cycle) = visit(self, name, &mut Vec::new(), &mut done) {
                let at = src
                    .text
                    .find(&format!("[services.{}]", cycle[0]))
                    .unwrap_or(0);
                return Err(src.error(
                    at..at,
                    format!("depends_on forms a cycle: {}", cycle.join(" -> ")),
                    Some("remove one of these dependencies".to_owned()),
                ));
            }
        }
        Ok(())
    }
}

/// Parses a `port` and records it as `owner`'s, refusing one another resource has.
fn claim_port(
    src: &Source<'_>,
    ports: &mut BTreeMap<Port, String>,
    raw: &Spanned<i64>,
    owner: &ServiceName,
) -> Result<Port, ManifestError> {
    let port = Port::parse(*raw.get_ref()).map_err(|m| src.error(raw.span(), m, None))?;
    if let Some(other) = ports.get(&port) {
        return Err(src.error(
            raw.span(),
            format!("port {} is already used by {other}", port.get()),
            Some("give each service and infrastructure piece its own port".to_owned()),
        ));
    }
    ports.insert(port, owner.to_string());
    Ok(port)
}

fn database_server(
    infrastructure: &BTreeMap<ServiceName, Infra>,
) -> Option<(&ServiceName, &Infra)> {
    infrastructure
        .iter()
        .find(|(_, i)| i.kind.name() == crate::infra::POSTGRES_KIND)
}

fn syntax_help(message: &str) -> Option<String> {
    if message.contains("unknown field") {
        Some("check the spelling; docs/ARCHITECTURE.md lists gravity.toml's keys".to_owned())
    } else if message.contains("missing field") {
        Some("add the missing key to this table".to_owned())
    } else {
        None
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "cannot read {path}: {error}; run gravity from the platform's root, where gravity.toml is, or pass --file"
    )]
    Read { path: String, error: std::io::Error },
    #[error(transparent)]
    Invalid(#[from] ManifestError),
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[platform]
name = "shop"

[infrastructure.postgres]
image = "postgres"
version = "15"
port = 5432

[infrastructure.redis]
image = "redis"
version = "7"
port = 6379

[services.auth]
port = 8000
database = "auth"
depends_on = ["postgres", "redis"]

[services.gateway]
port = 8080
depends_on = ["auth"]
"#;

    #[test]
    fn parses_a_platform() {
        let m = Manifest::parse("gravity.toml", GOOD).unwrap();
        assert_eq!(m.name.as_str(), "shop");
        let (pg_name, pg) = m.database_server().unwrap();
        assert_eq!(pg_name.as_str(), "postgres");
        assert_eq!(pg.image.to_string(), "postgres:15");
        assert_eq!(pg.kind.name(), "postgres");
        let auth = &m.services[&ServiceName::parse("auth").unwrap()];
        assert_eq!(auth.crate_name, "auth");
        assert_eq!(auth.port.get(), 8000);
        assert_eq!(auth.health, "/health/ready");
        assert_eq!(auth.database.as_deref(), Some("auth"));
    }

    #[test]
    fn the_shipped_gravity_toml_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../gravity.toml");
        let m = Manifest::load(&path).unwrap();
        assert!(m
            .services
            .contains_key(&ServiceName::parse("auth").unwrap()));
    }

    #[test]
    fn an_unknown_dependency_is_located_and_a_near_name_suggested() {
        let text = GOOD.replace(r#"depends_on = ["auth"]"#, r#"depends_on = ["auht"]"#);
        let err = Manifest::parse("gravity.toml", &text).unwrap_err();
        assert_eq!((err.line, err.column), (22, 15), "{err}");
        assert!(err.message.contains("unknown name \"auht\""), "{err}");
        assert!(
            err.help
                .as_deref()
                .unwrap()
                .contains("did you mean \"auth\""),
            "{err}"
        );
        let shown = err.to_string();
        assert!(shown.starts_with("gravity.toml:22:15: "), "{shown}");
    }

    #[test]
    fn syntax_errors_and_unknown_keys_are_located() {
        let err = Manifest::parse("gravity.toml", "[platform]\nname = \n").unwrap_err();
        assert_eq!(err.line, 2, "{err}");
        let err = Manifest::parse(
            "gravity.toml",
            "[platform]\nname = \"shop\"\nnmae = \"x\"\n",
        )
        .unwrap_err();
        assert_eq!(err.line, 3, "{err}");
        assert!(err.message.contains("unknown field"), "{err}");
    }

    #[test]
    fn bad_values_are_refused_with_a_location() {
        let err = Manifest::parse("g.toml", &GOOD.replace("port = 8080", "port = 80")).unwrap_err();
        assert_eq!(err.line, 21);
        assert!(err.message.contains("1024"));
        let err =
            Manifest::parse("g.toml", &GOOD.replace("port = 8080", "port = 8000")).unwrap_err();
        assert!(err.message.contains("already used by auth"), "{err}");
        let err = Manifest::parse(
            "g.toml",
            &GOOD.replace("[services.gateway]", "[services.Gateway]"),
        )
        .unwrap_err();
        assert!(err.message.contains("not a valid name"), "{err}");
        let err = Manifest::parse(
            "g.toml",
            &GOOD.replace("depends_on = [\"auth\"]", "depends_on = [\"gateway\"]"),
        )
        .unwrap_err();
        assert!(err.message.contains("depends on itself"), "{err}");
        for reserved in ["postgres", "template1", "pg_catalog", "public", "none"] {
            let err = Manifest::parse(
                "g.toml",
                &GOOD.replace("database = \"auth\"", &format!("database = \"{reserved}\"")),
            )
            .unwrap_err();
            assert!(err.message.contains("reserved by PostgreSQL"), "{err}");
        }
    }

    #[test]
    fn a_service_cannot_take_the_name_of_the_exchange_every_event_passes_through() {
        let text = format!("{GOOD}\n[services.events]\nport = 8003\n");
        let err = Manifest::parse("g.toml", &text).unwrap_err();
        assert!(err.message.contains("\"events\" is reserved"), "{err}");
    }

    #[test]
    fn rate_limits_belong_to_the_gateway_and_are_checked_where_written() {
        let limits = "\n[services.gateway.rate_limit]\n\
                      per_client = { requests = 100, period = \"1s\", burst = 200 }\n\
                      per_user = { requests = 10, period = \"1m\" }\n";
        let m = Manifest::parse("g.toml", &format!("{GOOD}{limits}")).unwrap();
        let gateway = &m.services[&ServiceName::parse("gateway").unwrap()];
        let set = gateway.rate_limit.as_ref().expect("limits parsed");
        let client = set.per_client.expect("per client");
        assert_eq!(
            (client.requests.get(), client.period, client.burst()),
            (
                100,
                std::time::Duration::from_secs(1),
                200.try_into().unwrap()
            )
        );
        assert_eq!(set.per_user.unwrap().period.as_secs(), 60);

        // On another service: refused, pointing at the table.
        let text = GOOD.replace(
            "[services.gateway]",
            "[services.auth.rate_limit]\nper_user = { requests = 1, period = \"1s\" }\n\n[services.gateway]",
        );
        let err = Manifest::parse("g.toml", &text).unwrap_err();
        assert!(err.message.contains("not the gateway"), "{err}");
        assert_eq!(err.line, 20, "{err}");
        // A zero rate, an unreadable period or an unknown key: refused at its line.
        for bad in [
            "per_client = { requests = 0, period = \"1s\" }",
            "per_client = { requests = 5, period = \"soon\" }",
            "per_client = { requests = 5, period = \"1s\", brust = 9 }",
        ] {
            let text = format!("{GOOD}\n[services.gateway.rate_limit]\n{bad}\n");
            let err = Manifest::parse("g.toml", &text).unwrap_err();
            assert_eq!(err.line, 25, "{bad}: {err}");
        }
    }

    #[test]
    fn cycles_are_refused() {
        let text = GOOD.replace(
            r#"depends_on = ["postgres", "redis"]"#,
            r#"depends_on = ["gateway"]"#,
        );
        let err = Manifest::parse("g.toml", &text).unwrap_err();
        assert!(err.message.contains("cycle"), "{err}");
    }

    #[test]
    fn image_refs() {
        assert_eq!(
            ImageRef::parse("postgres", "15").unwrap().to_string(),
            "postgres:15"
        );
        assert_eq!(
            ImageRef::parse("registry.local:5000/redis", "7")
                .unwrap()
                .to_string(),
            "registry.local:5000/redis:7"
        );
        assert_eq!(ImageRef::parse("redis:7.2", "x").unwrap().tag(), "7.2");
        assert!(ImageRef::parse("Bad Image", "1").is_err());
    }
}
