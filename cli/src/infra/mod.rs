//! Infrastructure as data: every kind of infrastructure Gravity can run (PostgreSQL, Redis,
//! RabbitMQ, a mail catcher, ...) is one module implementing [`Kind`], registered once in [`KINDS`]. A kind
//! says which image it runs and how to build that image from Debian packages, where its data
//! lives, how to tell it really answers, what a service that depends on it receives in its
//! environment, and what each such service gets provisioned for it (its own database, ACL
//! user or broker user). `up`, `export compose`, `ps`, `status` and `logs` only ever talk to
//! the trait, so adding a kind is one new module and one line here.
//!
//! **Invariant:** every kind isolates its dependents from each other: a service's credentials
//! reach only what belongs to that service.

mod alertmanager;
mod exporters;
mod grafana;
mod jaeger;
mod mail;
mod postgres;
mod prometheus;
mod rabbitmq;
mod redis;

use std::{collections::BTreeMap, fmt, path::PathBuf, time::Duration};

use futures_util::future::BoxFuture;

pub use alertmanager::Alertmanager;
pub use exporters::{PostgresExporter, RedisExporter};
pub use grafana::Grafana;
pub use jaeger::Jaeger;
pub use mail::{Mail, NAME as MAIL_KIND};
pub use postgres::{admin_options as postgres_admin, Postgres, PG_VOLUME_PATH};
pub use prometheus::{Prometheus, RULES as PROMETHEUS_RULES};
pub use rabbitmq::{queues as broker_queues, BrokerQueue, RabbitMq};
pub use redis::Redis;

use crate::{
    database::DatabaseError,
    images::{Offline, OfflineRecipe},
    manifest::{ImageRef, Infra, Manifest, ServiceName, ServiceSpec},
    progress::Task,
    project::Secrets,
};

/// The kind whose single instance holds every service's `database`.
pub const POSTGRES_KIND: &str = postgres::NAME;

/// Every kind Gravity knows, by the name gravity.toml uses (`kind = "..."`, or the table's
/// name when `kind` is left out).
pub const KINDS: &[&'static dyn Kind] = &[
    &Postgres,
    &Redis,
    &RabbitMq,
    &Mail,
    &Prometheus,
    &Alertmanager,
    &PostgresExporter,
    &RedisExporter,
    &Jaeger,
    &Grafana,
];

/// One kind of infrastructure. Implementations are unit structs; each instance in
/// gravity.toml (`[infrastructure.NAME]`) is an [`Instance`] of one.
pub trait Kind: Sync + fmt::Debug {
    /// The name gravity.toml uses for it (`postgres`).
    fn name(&self) -> &'static str;
    /// What users call it (`PostgreSQL`).
    fn title(&self) -> &'static str;
    /// The image and tag used when gravity.toml names none.
    fn default_image(&self) -> (&'static str, &'static str);
    /// Its stand-in built from Debian packages, when Debian packages the version asked for.
    fn offline(&self, wanted: &ImageRef) -> Option<Offline>;
    /// The port it serves on inside the container (published on the instance's `port`).
    fn container_port(&self) -> u16;
    /// A second port for people (a management UI), published on an ephemeral loopback port.
    fn ui(&self) -> Option<Ui> {
        None
    }
    /// Where its data volume is mounted.
    fn volume_path(&self) -> &'static str;
    /// Whether the container's host name must stay the same across recreations (RabbitMQ
    /// keeps its data under its node name, which is derived from it).
    fn stable_hostname(&self) -> bool {
        false
    }
    /// Whether services exchange their events through it (a broker): `gravity new service`
    /// makes a new service depend on it.
    fn carries_events(&self) -> bool {
        false
    }
    /// Whether gravity.toml's table for it makes sense in its platform (an exporter has
    /// something to export); the error and a suggestion otherwise.
    fn check(&self, _instance: &Instance<'_>) -> Result<(), (String, String)> {
        Ok(())
    }
    /// Where its metrics are, for Prometheus (none by default).
    fn scrape(&self) -> Vec<Scrape> {
        Vec::new()
    }
    /// Asks it to reread the files of its [`Runtime`] just rewritten in its running
    /// container (by default it needs nothing: it reads them itself).
    fn reload<'a>(
        &'a self,
        _reach: Reach<'a>,
        _http: &'a reqwest::Client,
    ) -> BoxFuture<'a, Result<(), InfraError>> {
        Box::pin(async { Ok(()) })
    }
    /// Where services send their spans over OTLP/HTTP, when this is a trace backend (every
    /// service then does, without naming it in `depends_on`).
    fn otlp_endpoint(&self, _instance: &Instance<'_>) -> Option<String> {
        None
    }
    /// Whether `spec` uses this instance. By default: it is named in `depends_on`.
    fn serves(&self, instance: &Instance<'_>, spec: &ServiceSpec) -> bool {
        spec.depends_on.iter().any(|d| d == instance.name)
    }
    /// Generates what is missing of this instance's secrets; returns whether it did.
    fn ensure_secrets(
        &self,
        instance: &Instance<'_>,
        dependents: &[Dependent<'_>],
        secrets: &mut Secrets,
    ) -> bool {
        secrets.ensure_infra(instance.name.as_str(), dependents, &[])
    }
    /// The container's environment and command line.
    fn container(
        &self,
        instance: &Instance<'_>,
        dependents: &[Dependent<'_>],
        secrets: &Secrets,
    ) -> Runtime;
    /// The Docker health check, the same in Gravity's containers and an exported compose file.
    fn healthcheck(&self) -> Vec<String>;
    /// What a dependent service receives in its environment (reached by the instance's name
    /// on the platform's network); nothing by default.
    fn env_for(
        &self,
        _instance: &Instance<'_>,
        _dependent: &Dependent<'_>,
        _secrets: &Secrets,
    ) -> Vec<(String, String)> {
        Vec::new()
    }
    /// Whether it really answers now, reached through its published ports. An error means
    /// waiting will not help (a refused password).
    fn probe<'a>(&'a self, reach: Reach<'a>) -> BoxFuture<'a, Result<bool, InfraError>>;
    /// Makes what `dependent` needs of it exist (its database, user, exchange); idempotent.
    /// Returns notes worth showing (e.g. migrations applied).
    fn provision<'a>(
        &'a self,
        _reach: Reach<'a>,
        _dependent: Dependent<'a>,
        _task: &'a Task,
    ) -> BoxFuture<'a, Result<Vec<String>, InfraError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    /// Provisioning for every dependent at once, where a kind does it in one step (after the
    /// per-dependent [`Kind::provision`] calls). Returns notes worth showing.
    fn provision_all<'a>(
        &'a self,
        _reach: Reach<'a>,
        _dependents: &'a [Dependent<'a>],
    ) -> BoxFuture<'a, Result<Vec<String>, InfraError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    /// The queues it holds, for `gravity status`: brokers answer, other kinds have none.
    fn queues<'a>(
        &'a self,
        _reach: Reach<'a>,
        _http: &'a reqwest::Client,
    ) -> Option<BoxFuture<'a, Result<Vec<BrokerQueue>, String>>> {
        None
    }
    /// The messages its consumers parked after giving up on them, for `gravity events`:
    /// brokers answer, other kinds have none.
    fn parked<'a>(
        &'a self,
        _reach: Reach<'a>,
        _http: &'a reqwest::Client,
    ) -> Option<BoxFuture<'a, Result<Vec<ParkedMessage>, String>>> {
        None
    }
    /// Sends parked messages back to the queues they were parked from, as first attempts;
    /// how many (`gravity events replay`).
    fn replay<'a>(
        &'a self,
        _reach: Reach<'a>,
        _http: &'a reqwest::Client,
        _which: Which<'a>,
    ) -> Option<BoxFuture<'a, Result<u64, String>>> {
        None
    }
    /// The same provisioning as a one-shot container for an exported compose file, which
    /// has no `gravity up` to do it.
    fn compose_init(
        &self,
        _instance: &Instance<'_>,
        _dependents: &[Dependent<'_>],
        _secrets: &Secrets,
    ) -> Option<InitJob> {
        None
    }
}

/// A message a consumer parked, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ParkedMessage {
    /// The parking queue it is in, `<queue>.parked`.
    pub parked_in: String,
    /// The queue it goes back to on replay.
    pub queue: String,
    /// The CloudEvent's `id`, `type`, `subject` and `time`, when the body is one.
    pub id: Option<String>,
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    pub subject: Option<String>,
    pub time: Option<String>,
    /// Attempts made before it was parked.
    pub attempts: u32,
    /// The handler's last error, or why no handler could take it.
    pub error: String,
}

/// Which parked messages to replay: all of them, those of one queue, or one event.
#[derive(Debug, Clone, Copy, Default)]
pub struct Which<'a> {
    pub queue: Option<&'a str>,
    pub id: Option<&'a str>,
}

/// A port meant for people, and what it is.
#[derive(Debug, Clone, Copy)]
pub struct Ui {
    pub port: u16,
    /// e.g. "management UI".
    pub what: &'static str,
}

/// One instance of a kind: `[infrastructure.NAME]`, in its platform.
#[derive(Debug, Clone, Copy)]
pub struct Instance<'a> {
    pub name: &'a ServiceName,
    pub infra: &'a Infra,
    /// The whole platform (Prometheus scrapes all of it; an exporter finds its target).
    pub platform: &'a Manifest,
}

/// Metrics an instance serves on the platform's network, as one Prometheus scrape job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scrape {
    /// The job's name (`rabbitmq`); instances of one kind share it.
    pub job: &'static str,
    pub port: u16,
    pub path: &'static str,
    /// URL query parameters (`family=queue_coarse_metrics`).
    pub params: Vec<(&'static str, &'static str)>,
}

impl Scrape {
    /// The usual job: `/metrics` on `port`, no parameters.
    pub fn metrics(job: &'static str, port: u16) -> Self {
        Self {
            job,
            port,
            path: "/metrics",
            params: vec![],
        }
    }
}

/// A service that uses an instance.
#[derive(Debug, Clone)]
pub struct Dependent<'a> {
    pub name: &'a ServiceName,
    pub spec: &'a ServiceSpec,
    /// Its migrations folder (PostgreSQL applies them).
    pub migrations: PathBuf,
}

/// How the container runs.
#[derive(Debug, Clone, Default)]
pub struct Runtime {
    pub env: BTreeMap<String, String>,
    pub cmd: Option<Vec<String>>,
    /// Files written into the container before it starts and rewritten in place when they
    /// change (then [`Kind::reload`] is asked); their folders exist in the image.
    pub files: Vec<RuntimeFile>,
    /// The image's entrypoint, for an export that writes `files` before starting it.
    pub program: Option<&'static str>,
}

/// A file Gravity keeps in an infrastructure container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeFile {
    /// An absolute path.
    pub path: String,
    pub content: String,
}

/// An instance as reachable from the host.
#[derive(Debug, Clone, Copy)]
pub struct Reach<'a> {
    pub instance: Instance<'a>,
    pub secrets: &'a Secrets,
    /// Its main port on the host's loopback.
    pub port: u16,
    /// Its UI port on the host's loopback, when it has one and it is published.
    pub ui_port: Option<u16>,
}

/// A one-shot container that provisions dependents in an exported compose file.
#[derive(Debug, Clone)]
pub struct InitJob {
    pub entrypoint: Vec<String>,
    pub env: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum InfraError {
    #[error(transparent)]
    Database(#[from] DatabaseError),
    #[error("{title} refused the password Gravity holds for {who}; the data was made with other passwords: restore the platform's secrets file (.gravity/ next to gravity.toml) from a backup, or start over with `gravity down --volumes`")]
    WrongPassword { title: &'static str, who: String },
    #[error("{title} on 127.0.0.1:{port}: {detail}")]
    Request {
        title: &'static str,
        port: u16,
        detail: String,
    },
    #[error(
        "{title}'s {what} is not published; recreate it with `gravity down` then `gravity up`"
    )]
    NotPublished {
        title: &'static str,
        what: &'static str,
    },
}

/// Looks a kind up by its gravity.toml name.
pub fn kind_named(kinds: &[&'static dyn Kind], name: &str) -> Option<&'static dyn Kind> {
    kinds.iter().copied().find(|k| k.name() == name)
}

/// The base image services' binaries run on: Debian bookworm, the same glibc they link.
pub fn runtime_images() -> (ImageRef, Offline) {
    let wanted = ImageRef::parse("debian:bookworm-slim", "latest")
        .unwrap_or_else(|_| offline_ref("runtime", "bookworm"));
    let offline = Offline {
        image: offline_ref("runtime", "bookworm"),
        recipe: OfflineRecipe {
            packages: vec!["ca-certificates".to_owned()],
            ..OfflineRecipe::default()
        },
    };
    (wanted, offline)
}

/// Gravity's own tag for an image it builds from Debian packages.
pub fn offline_ref(name: &str, tag: &str) -> ImageRef {
    // Both parts are constants made of valid characters.
    ImageRef::parse(&format!("gravity-offline/{name}:{tag}"), "latest")
        .unwrap_or_else(|e| unreachable!("constant image reference: {e}"))
}

/// The major version in an image tag (`15` of `15.4-bookworm`).
pub fn major(image: &ImageRef) -> &str {
    image.tag().split(['.', '-']).next().unwrap_or("")
}

/// An HTTP GET of `path` with nothing but bash (neither image ships curl).
pub fn http_healthcheck(port: u16, path: &str) -> Vec<String> {
    vec![
        "CMD".to_owned(),
        "bash".to_owned(),
        "-c".to_owned(),
        format!(
            "exec 3<>/dev/tcp/127.0.0.1/{port} && printf 'GET {path} HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && head -n1 <&3 | grep -q ' 2[0-9][0-9] '"
        ),
    ]
}

fn shell(cmd: &str) -> Vec<String> {
    vec!["CMD-SHELL".to_owned(), cmd.to_owned()]
}

/// An HTTP GET of `path` in an image that has either busybox's `wget` (the Prometheus
/// project's official images) or bash (Gravity's Debian-built stand-ins).
fn http_healthcheck_any(port: u16, path: &str) -> Vec<String> {
    let bash = &http_healthcheck(port, path)[3];
    shell(&format!(
        "wget -q -O /dev/null http://127.0.0.1:{port}{path} 2>/dev/null || bash -c \"{}\"",
        bash.replace('\\', "\\\\").replace('"', "\\\"")
    ))
}

/// Whether an HTTP GET of `path` on a published loopback port answers 2xx now.
async fn http_ready(port: u16, path: &str) -> bool {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    let client = CLIENT.get_or_init(reqwest::Client::new);
    http_answers(client, port, path).await
}

/// Whether a service's health endpoint answers 2xx now.
pub async fn http_answers(client: &reqwest::Client, port: u16, path: &str) -> bool {
    match client
        .get(format!("http://127.0.0.1:{port}{path}"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
    {
        Ok(resp) => resp.status().is_success(),
        Err(_) => false,
    }
}

/// An environment variable's name made from a resource name: `cache` → `CACHE`.
pub fn env_name(resource: &str) -> String {
    resource.replace('-', "_").to_ascii_uppercase()
}
