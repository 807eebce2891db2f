//! Prometheus exporters for the infrastructure that serves no metrics of its own: the
//! platform's PostgreSQL (`postgres-exporter`) and a Redis (`redis-exporter`). Each is one
//! container on the platform's network, scraped by Prometheus as the `postgres` or `redis`
//! job. The Prometheus community's images where a registry answers; built from Debian's
//! `prometheus-postgres-exporter` and `prometheus-redis-exporter` where none does.
//!
//! They connect as the instance's administrator (the platform's generated password, passed
//! in their environment on the platform's network only): what they read (`pg_stat_*`,
//! `INFO`) is platform-wide.

use std::collections::BTreeMap;

use futures_util::future::BoxFuture;

use super::{
    http_healthcheck_any, http_ready, offline_ref, Dependent, InfraError, Instance, Kind, Reach,
    Runtime, Scrape, POSTGRES_KIND,
};
use crate::{
    images::{Offline, OfflineRecipe},
    manifest::{ImageRef, ServiceName},
    project::Secrets,
};

const POSTGRES_PORT: u16 = 9187;
const REDIS_PORT: u16 = 9121;
/// Neither keeps data; the volume every instance gets stays empty.
const VOLUME: &str = "/var/lib/gravity-exporter";

/// The image built from one Debian package whose binary is the entrypoint.
fn offline(name: &str, version: &str, package: &str, port: u16) -> Offline {
    Offline {
        image: offline_ref(name, version),
        recipe: OfflineRecipe {
            packages: vec![package.to_owned()],
            files: vec![],
            commands: vec![format!("install -d -o nobody -m 0755 {VOLUME}")],
            changes: vec![
                "USER nobody".to_owned(),
                format!("ENTRYPOINT [\"/usr/bin/{package}\"]"),
                format!("EXPOSE {port}"),
            ],
        },
    }
}

/// `--name=value` for each setting.
fn flags(instance: &Instance<'_>) -> Option<Vec<String>> {
    let settings = &instance.infra.settings;
    let flags: Vec<String> = settings
        .iter()
        .filter(|(k, _)| k.as_str() != "target")
        .map(|(k, v)| format!("--{k}={v}"))
        .collect();
    (!flags.is_empty()).then_some(flags)
}

#[derive(Debug)]
pub struct PostgresExporter;

impl PostgresExporter {
    fn target<'a>(instance: &Instance<'a>) -> Option<&'a ServiceName> {
        instance
            .platform
            .infrastructure
            .iter()
            .find(|(_, i)| i.kind.name() == POSTGRES_KIND)
            .map(|(name, _)| name)
    }
}

impl Kind for PostgresExporter {
    fn name(&self) -> &'static str {
        "postgres-exporter"
    }

    fn title(&self) -> &'static str {
        "PostgreSQL exporter"
    }

    fn default_image(&self) -> (&'static str, &'static str) {
        ("prometheuscommunity/postgres-exporter", "v0.11.1")
    }

    /// Debian bookworm packages 0.11.
    fn offline(&self, wanted: &ImageRef) -> Option<Offline> {
        (super::major(wanted).trim_start_matches('v') == "0").then(|| {
            offline(
                "postgres-exporter",
                "0.11",
                "prometheus-postgres-exporter",
                POSTGRES_PORT,
            )
        })
    }

    fn container_port(&self) -> u16 {
        POSTGRES_PORT
    }

    fn volume_path(&self) -> &'static str {
        VOLUME
    }

    fn check(&self, instance: &Instance<'_>) -> Result<(), (String, String)> {
        if instance.infra.settings.contains_key("target") {
            return Err((
                format!(
                    "{} exports the platform's one PostgreSQL: it takes no `target`",
                    instance.name
                ),
                "remove `target` from its settings".to_owned(),
            ));
        }
        match Self::target(instance) {
            Some(_) => Ok(()),
            None => Err((
                format!(
                    "{} exports the platform's PostgreSQL, and gravity.toml has none",
                    instance.name
                ),
                "add [infrastructure.postgres], or remove this table".to_owned(),
            )),
        }
    }

    fn ensure_secrets(
        &self,
        _instance: &Instance<'_>,
        _dependents: &[Dependent<'_>],
        _secrets: &mut Secrets,
    ) -> bool {
        false
    }

    fn container(
        &self,
        instance: &Instance<'_>,
        _dependents: &[Dependent<'_>],
        secrets: &Secrets,
    ) -> Runtime {
        let host = Self::target(instance).map_or(POSTGRES_KIND, ServiceName::as_str);
        // The generated password is alphanumeric: nothing in it needs escaping in a URL.
        let dsn = format!(
            "postgresql://postgres:{}@{host}:{}/postgres?sslmode=disable",
            secrets.postgres_password,
            super::Postgres.container_port()
        );
        Runtime {
            env: BTreeMap::from([("DATA_SOURCE_NAME".to_owned(), dsn)]),
            cmd: flags(instance),
            ..Runtime::default()
        }
    }

    fn healthcheck(&self) -> Vec<String> {
        http_healthcheck_any(POSTGRES_PORT, "/")
    }

    fn probe<'a>(&'a self, reach: Reach<'a>) -> BoxFuture<'a, Result<bool, InfraError>> {
        Box::pin(async move { Ok(http_ready(reach.port, "/").await) })
    }

    fn scrape(&self) -> Vec<Scrape> {
        vec![Scrape::metrics("postgres", POSTGRES_PORT)]
    }
}

#[derive(Debug)]
pub struct RedisExporter;

impl RedisExporter {
    /// The Redis it exports: its `target` setting, else the platform's only Redis.
    fn target<'a>(instance: &Instance<'a>) -> Result<&'a ServiceName, (String, String)> {
        let redis = super::Redis.name();
        let platform = instance.platform;
        let named = instance.infra.settings.get("target");
        let mut all = platform
            .infrastructure
            .iter()
            .filter(|(_, i)| i.kind.name() == redis)
            .map(|(name, _)| name);
        match named {
            Some(target) => all.find(|name| name.as_str() == target).ok_or_else(|| {
                (
                    format!("{}'s target {target:?} is not a Redis in gravity.toml", instance.name),
                    "set `settings = { target = \"NAME\" }` to one of the [infrastructure] tables of kind \"redis\"".to_owned(),
                )
            }),
            None => {
                let found: Vec<&ServiceName> = all.collect();
                match found.as_slice() {
                    [only] => Ok(only),
                    [] => Err((
                        format!("{} exports a Redis, and gravity.toml has none", instance.name),
                        "add [infrastructure.redis], or remove this table".to_owned(),
                    )),
                    _ => Err((
                        format!("{} could export any of several Redis instances", instance.name),
                        "name one: `settings = { target = \"NAME\" }`".to_owned(),
                    )),
                }
            }
        }
    }
}

impl Kind for RedisExporter {
    fn name(&self) -> &'static str {
        "redis-exporter"
    }

    fn title(&self) -> &'static str {
        "Redis exporter"
    }

    fn default_image(&self) -> (&'static str, &'static str) {
        // The alpine variant: the plain one is `FROM scratch`, with no shell for the health
        // check.
        ("oliver006/redis_exporter", "v1.45.0-alpine")
    }

    /// Debian bookworm packages 1.45.
    fn offline(&self, wanted: &ImageRef) -> Option<Offline> {
        (super::major(wanted).trim_start_matches('v') == "1").then(|| {
            offline(
                "redis-exporter",
                "1.45",
                "prometheus-redis-exporter",
                REDIS_PORT,
            )
        })
    }

    fn container_port(&self) -> u16 {
        REDIS_PORT
    }

    fn volume_path(&self) -> &'static str {
        VOLUME
    }

    fn check(&self, instance: &Instance<'_>) -> Result<(), (String, String)> {
        Self::target(instance).map(|_| ())
    }

    fn ensure_secrets(
        &self,
        _instance: &Instance<'_>,
        _dependents: &[Dependent<'_>],
        _secrets: &mut Secrets,
    ) -> bool {
        false
    }

    fn container(
        &self,
        instance: &Instance<'_>,
        _dependents: &[Dependent<'_>],
        secrets: &Secrets,
    ) -> Runtime {
        let target = Self::target(instance).map_or("redis", ServiceName::as_str);
        Runtime {
            env: BTreeMap::from([
                (
                    "REDIS_ADDR".to_owned(),
                    format!("redis://{target}:{}", super::Redis.container_port()),
                ),
                ("REDIS_USER".to_owned(), "default".to_owned()),
                (
                    "REDIS_PASSWORD".to_owned(),
                    secrets.infra_admin(target).to_owned(),
                ),
            ]),
            cmd: flags(instance),
            ..Runtime::default()
        }
    }

    fn healthcheck(&self) -> Vec<String> {
        http_healthcheck_any(REDIS_PORT, "/health")
    }

    fn probe<'a>(&'a self, reach: Reach<'a>) -> BoxFuture<'a, Result<bool, InfraError>> {
        Box::pin(async move { Ok(http_ready(reach.port, "/health").await) })
    }

    fn scrape(&self) -> Vec<Scrape> {
        vec![Scrape::metrics("redis", REDIS_PORT)]
    }
}
