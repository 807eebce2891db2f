//! RabbitMQ, the platform's message broker. Each dependent service gets its own user and a
//! topic exchange named after it that Gravity declares; the user's permissions let it
//! publish only to that exchange, declare and read only queues named `<service>.<anything>`,
//! and bind its queues to any service's exchange (that is how it subscribes):
//!
//! | permission | pattern | so that |
//! |---|---|---|
//! | configure | `^<svc>\..+$` | it declares its own queues (and its own `<svc>.*` exchanges, e.g. a dead-letter one) |
//! | write | `^<svc>(\..+)?$` | it publishes to its own exchange and binds into its own queues |
//! | read | `^([a-z][a-z0-9-]*\|<svc>\..+)$` | it binds from any service's exchange and consumes its own queues |
//!
//! Exchange names are bare service names (no dot) and only Gravity declares them, so the
//! read pattern's first half never matches a queue. Queues whose names end in `.dlq` or
//! `.parked` are shown as dead-letter queues by `gravity status`.
//!
//! Users, permissions and exchanges are one definitions document, applied through the
//! management API by `up` (only when its digest changed) and by `rabbitmqctl
//! import_definitions` in an exported compose file. The Erlang cookie is generated per
//! platform, never baked into the image.

use std::{collections::BTreeMap, time::Duration};

use base64::Engine as _;
use futures_util::future::BoxFuture;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest as _, Sha256};

use super::{
    env_name, offline_ref, Dependent, InfraError, InitJob, Instance, Kind, ParkedMessage, Reach,
    Runtime, Scrape, Ui, Which,
};
use crate::{
    images::{Offline, OfflineRecipe},
    manifest::ImageRef,
    project::Secrets,
};

#[derive(Debug)]
pub struct RabbitMq;

/// The broker's administrator (management UI, provisioning); services never get it.
const ADMIN_USER: &str = "admin";
const AMQP_PORT: u16 = 5672;
const UI_PORT: u16 = 15672;
/// The Prometheus plugin's listener.
const PROMETHEUS_PORT: u16 = 15692;
const HOME: &str = "/var/lib/rabbitmq";
/// The exchange every service's exchange is bound to (service-kit's `EVERY_EVENT_EXCHANGE`;
/// the CLI does not link service-kit).
const EVERY_EVENT_EXCHANGE: &str = "events";
/// The global parameter holding the digest of the definitions last applied.
const APPLIED: &str = "gravity-definitions";

const CONF: &str = "loopback_users = none
listeners.tcp.default = 5672
management.tcp.port = 15672
log.console = true
log.console.level = info
log.file = false
";

/// Writes the platform's Erlang cookie from the environment (mode 0400, owned by rabbitmq)
/// and starts the broker as `rabbitmq`. Written here because Debian's packaging expects
/// systemd, and the cookie must never come from the image.
const ENTRYPOINT: &str = r#"#!/bin/sh
set -eu
home=/var/lib/rabbitmq
if [ "${1:-}" = rabbitmq-server ]; then shift; fi
if [ "$(id -u)" = 0 ]; then
  mkdir -p "$home"
  chown rabbitmq:rabbitmq "$home"
  if [ -n "${RABBITMQ_ERLANG_COOKIE:-}" ]; then
    rm -f "$home/.erlang.cookie"
    (umask 377 && printf '%s' "$RABBITMQ_ERLANG_COOKIE" > "$home/.erlang.cookie")
    chown rabbitmq:rabbitmq "$home/.erlang.cookie"
  fi
  exec setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups \
    env -u RABBITMQ_ERLANG_COOKIE HOME="$home" "$0" rabbitmq-server "$@"
fi
cd "$home"
exec /usr/lib/rabbitmq/bin/rabbitmq-server "$@"
"#;

impl Kind for RabbitMq {
    fn name(&self) -> &'static str {
        "rabbitmq"
    }

    fn title(&self) -> &'static str {
        "RabbitMQ"
    }

    fn carries_events(&self) -> bool {
        true
    }

    fn default_image(&self) -> (&'static str, &'static str) {
        ("rabbitmq", "3.10-management")
    }

    fn offline(&self, wanted: &ImageRef) -> Option<Offline> {
        // Debian bookworm packages RabbitMQ 3.10 with the management and Prometheus plugins.
        (wanted.tag() == "3" || wanted.tag().starts_with("3.10")).then(|| Offline {
            image: offline_ref("rabbitmq", "3.10"),
            recipe: OfflineRecipe {
                packages: vec!["rabbitmq-server".to_owned()],
                files: vec![
                    ("/etc/rabbitmq/rabbitmq.conf".to_owned(), CONF.to_owned(), 0o644),
                    (
                        "/etc/rabbitmq/enabled_plugins".to_owned(),
                        "[rabbitmq_management,rabbitmq_prometheus].\n".to_owned(),
                        0o644,
                    ),
                    (
                        "/usr/local/bin/docker-entrypoint.sh".to_owned(),
                        ENTRYPOINT.to_owned(),
                        0o755,
                    ),
                ],
                commands: vec![
                    // Nothing the package made at install time may reach a platform's volume.
                    format!("rm -rf {HOME}/mnesia {HOME}/.erlang.cookie"),
                    format!("install -d -o rabbitmq -g rabbitmq -m 0750 {HOME}"),
                    // The broker rewrites its plugins file when RABBITMQ_ENABLED_PLUGINS is set.
                    "chown -R rabbitmq:rabbitmq /etc/rabbitmq".to_owned(),
                ],
                changes: vec![
                    format!("ENV HOME={HOME}"),
                    "ENV PATH=/usr/lib/rabbitmq/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
                    "ENTRYPOINT [\"/usr/local/bin/docker-entrypoint.sh\"]".to_owned(),
                    "CMD [\"rabbitmq-server\"]".to_owned(),
                    "EXPOSE 5672 15672 15692".to_owned(),
                ],
            },
        })
    }

    fn container_port(&self) -> u16 {
        AMQP_PORT
    }

    /// Its Prometheus plugin: the broker's totals, and per queue (depth, unacknowledged,
    /// consumers; parked messages are in the `<queue>.parked` queues).
    fn scrape(&self) -> Vec<Scrape> {
        vec![
            Scrape {
                job: "rabbitmq",
                port: PROMETHEUS_PORT,
                path: "/metrics",
                params: vec![],
            },
            Scrape {
                job: "rabbitmq-queues",
                port: PROMETHEUS_PORT,
                path: "/metrics/detailed",
                params: vec![
                    ("family", "queue_coarse_metrics"),
                    ("family", "queue_consumer_count"),
                ],
            },
        ]
    }

    fn ui(&self) -> Option<Ui> {
        Some(Ui {
            port: UI_PORT,
            what: "management UI",
        })
    }

    fn volume_path(&self) -> &'static str {
        HOME
    }

    fn stable_hostname(&self) -> bool {
        true
    }

    fn ensure_secrets(
        &self,
        instance: &Instance<'_>,
        dependents: &[Dependent<'_>],
        secrets: &mut Secrets,
    ) -> bool {
        secrets.ensure_infra(instance.name.as_str(), dependents, &["cookie"])
    }

    fn container(
        &self,
        instance: &Instance<'_>,
        _dependents: &[Dependent<'_>],
        secrets: &Secrets,
    ) -> Runtime {
        let own = secrets.infra(instance.name.as_str());
        let mut env = BTreeMap::from([
            ("RABBITMQ_DEFAULT_USER".to_owned(), ADMIN_USER.to_owned()),
            (
                "RABBITMQ_DEFAULT_PASS".to_owned(),
                own.map(|s| s.admin.clone()).unwrap_or_default(),
            ),
            (
                "RABBITMQ_ERLANG_COOKIE".to_owned(),
                own.map(|s| s.extra("cookie").to_owned())
                    .unwrap_or_default(),
            ),
            // The official image enables only the management plugin.
            (
                "RABBITMQ_ENABLED_PLUGINS".to_owned(),
                "rabbitmq_management,rabbitmq_prometheus".to_owned(),
            ),
        ]);
        // Queue statistics every second (the default is five), so `gravity status`, which
        // refreshes every second, shows depths as they are; then the settings, as the
        // server's `-rabbit name value` arguments (a setting may override the interval).
        let args: Vec<String> =
            std::iter::once("-rabbit collect_statistics_interval 1000".to_owned())
                .chain(
                    instance
                        .infra
                        .settings
                        .iter()
                        .map(|(k, v)| format!("-rabbit {k} {v}")),
                )
                .collect();
        env.insert(
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS".to_owned(),
            args.join(" "),
        );
        Runtime {
            env,
            ..Runtime::default()
        }
    }

    /// The AMQP 0-9-1 protocol header, answered by a method frame (type 1): the broker
    /// accepts connections. With bash alone, which both images have.
    fn healthcheck(&self) -> Vec<String> {
        vec![
            "CMD".to_owned(),
            "bash".to_owned(),
            "-c".to_owned(),
            format!(
                "exec 3<>/dev/tcp/127.0.0.1/{AMQP_PORT} && printf 'AMQP\\0\\0\\11\\1' >&3 && timeout 3 head -c 1 <&3 | od -An -tx1 | grep -q 01"
            ),
        ]
    }

    fn env_for(
        &self,
        instance: &Instance<'_>,
        dependent: &Dependent<'_>,
        secrets: &Secrets,
    ) -> Vec<(String, String)> {
        let service = dependent.name.as_str();
        let password = secrets.infra_user(instance.name.as_str(), service);
        let url = format!(
            "amqp://{service}:{password}@{}:{AMQP_PORT}/%2f",
            instance.name
        );
        let mut env = vec![
            ("AMQP_URL".to_owned(), url.clone()),
            ("AMQP_EXCHANGE".to_owned(), service.to_owned()),
        ];
        if instance.name.as_str() != self.name() {
            env.push((format!("{}_URL", env_name(instance.name.as_str())), url));
        }
        env
    }

    /// A real AMQP handshake as the administrator: protocol header, authentication, tuning
    /// and opening the default virtual host.
    fn probe<'a>(&'a self, reach: Reach<'a>) -> BoxFuture<'a, Result<bool, InfraError>> {
        Box::pin(async move {
            let admin = reach.secrets.infra_admin(reach.instance.name.as_str());
            let uri = format!("amqp://{ADMIN_USER}:{admin}@127.0.0.1:{}/%2f", reach.port);
            let attempt = tokio::time::timeout(Duration::from_secs(3), async {
                let conn = lapin::Connection::connect(&uri, lapin::ConnectionProperties::default())
                    .await?;
                conn.close(200, "gravity probe".into()).await
            })
            .await;
            match attempt {
                Ok(Ok(())) => Ok(true),
                Ok(Err(e)) if refused_login(&e) => Err(InfraError::WrongPassword {
                    title: self.title(),
                    who: ADMIN_USER.to_owned(),
                }),
                _ => Ok(false),
            }
        })
    }

    fn provision_all<'a>(
        &'a self,
        reach: Reach<'a>,
        dependents: &'a [Dependent<'a>],
    ) -> BoxFuture<'a, Result<Vec<String>, InfraError>> {
        Box::pin(async move {
            let Some(ui_port) = reach.ui_port else {
                return Err(InfraError::NotPublished {
                    title: self.title(),
                    what: "management API",
                });
            };
            let api = Management::new(reach, ui_port);
            let definitions = definitions(reach.instance, dependents, reach.secrets);
            let digest = hex(&Sha256::digest(definitions.to_string().as_bytes()));
            if api.applied_digest().await?.as_deref() == Some(digest.as_str()) {
                return Ok(Vec::new());
            }
            api.post("/api/definitions", &definitions).await?;
            api.put(
                &format!("/api/global-parameters/{APPLIED}"),
                &json!({ "name": APPLIED, "value": digest }),
            )
            .await?;
            Ok(vec![format!(
                "broker users and exchanges set for {}",
                dependents
                    .iter()
                    .map(|d| d.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )])
        })
    }

    fn queues<'a>(
        &'a self,
        reach: Reach<'a>,
        http: &'a reqwest::Client,
    ) -> Option<BoxFuture<'a, Result<Vec<BrokerQueue>, String>>> {
        let admin = reach.secrets.infra_admin(reach.instance.name.as_str());
        let Some(port) = reach.ui_port else {
            return Some(Box::pin(async {
                Err("its management API is not published: run `gravity up`".to_owned())
            }));
        };
        Some(Box::pin(queues(http, port, admin)))
    }

    fn parked<'a>(
        &'a self,
        reach: Reach<'a>,
        http: &'a reqwest::Client,
    ) -> Option<BoxFuture<'a, Result<Vec<ParkedMessage>, String>>> {
        Some(Box::pin(parked(reach, http)))
    }

    fn replay<'a>(
        &'a self,
        reach: Reach<'a>,
        http: &'a reqwest::Client,
        which: Which<'a>,
    ) -> Option<BoxFuture<'a, Result<u64, String>>> {
        Some(Box::pin(replay(reach, http, which)))
    }

    fn compose_init(
        &self,
        instance: &Instance<'_>,
        dependents: &[Dependent<'_>],
        secrets: &Secrets,
    ) -> Option<InitJob> {
        if dependents.is_empty() {
            return None;
        }
        let cookie = secrets
            .infra(instance.name.as_str())
            .map(|s| s.extra("cookie").to_owned())
            .unwrap_or_default();
        Some(InitJob {
            entrypoint: vec![
                "sh".to_owned(),
                "-ec".to_owned(),
                format!(
                    "printf '%s' \"$GRAVITY_DEFINITIONS\" > /tmp/definitions.json && \
                     rabbitmqctl -n rabbit@{0} await_startup && \
                     rabbitmqctl -n rabbit@{0} import_definitions /tmp/definitions.json",
                    instance.name
                ),
            ],
            env: BTreeMap::from([
                (
                    "GRAVITY_DEFINITIONS".to_owned(),
                    definitions(*instance, dependents, secrets).to_string(),
                ),
                ("RABBITMQ_ERLANG_COOKIE".to_owned(), cookie),
            ]),
        })
    }
}

/// The users, permissions and exchanges of every dependent, in RabbitMQ's definitions format.
fn definitions(
    instance: Instance<'_>,
    dependents: &[Dependent<'_>],
    secrets: &Secrets,
) -> serde_json::Value {
    let resource = instance.name.as_str();
    let mut users = Vec::new();
    let mut permissions = Vec::new();
    // Every event of the platform also passes through one exchange (a subscription to every
    // event, the audit log's, binds there), so that a service added later is included.
    let mut exchanges = vec![json!({
        "name": EVERY_EVENT_EXCHANGE,
        "vhost": "/",
        "type": "topic",
        "durable": true,
        "auto_delete": false,
        "internal": false,
        "arguments": {},
    })];
    let mut bindings = Vec::new();
    for d in dependents {
        let svc = d.name.as_str();
        let password = secrets.infra_user(resource, svc);
        users.push(json!({
            "name": svc,
            "password_hash": password_hash(svc, password),
            "hashing_algorithm": "rabbit_password_hashing_sha256",
            "tags": [],
        }));
        permissions.push(json!({
            "user": svc,
            "vhost": "/",
            "configure": format!("^{svc}\\..+$"),
            "write": format!("^{svc}(\\..+)?$"),
            "read": format!("^([a-z][a-z0-9-]*|{svc}\\..+)$"),
        }));
        exchanges.push(json!({
            "name": svc,
            "vhost": "/",
            "type": "topic",
            "durable": true,
            "auto_delete": false,
            "internal": false,
            "arguments": {},
        }));
        bindings.push(json!({
            "source": svc,
            "vhost": "/",
            "destination": EVERY_EVENT_EXCHANGE,
            "destination_type": "exchange",
            "routing_key": "#",
            "arguments": {},
        }));
    }
    json!({
        "users": users,
        "permissions": permissions,
        "exchanges": exchanges,
        "bindings": bindings,
    })
}

/// RabbitMQ's `rabbit_password_hashing_sha256`: base64 of a 4-byte salt followed by
/// SHA-256(salt ‖ password). The salt is derived from the user and password, so the same
/// secrets always give the same document (and digest); the passwords are 32 random
/// characters, which a salt cannot make any stronger.
fn password_hash(user: &str, password: &str) -> String {
    let seed = Sha256::digest(format!("gravity-salt:{user}:{password}").as_bytes());
    let salt = &seed[..4];
    let mut hasher = Sha256::new();
    hasher.update(salt);
    hasher.update(password.as_bytes());
    let mut out = salt.to_vec();
    out.extend_from_slice(&hasher.finalize());
    base64::engine::general_purpose::STANDARD.encode(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether the broker refused the credentials (rather than not answering yet).
fn refused_login(e: &lapin::Error) -> bool {
    let text = e.to_string();
    text.contains("ACCESS_REFUSED") || text.contains("ACCESS-REFUSED")
}

/// The management HTTP API on the host's loopback, as the administrator.
struct Management<'a> {
    reach: Reach<'a>,
    base: String,
    port: u16,
    client: reqwest::Client,
}

impl<'a> Management<'a> {
    fn new(reach: Reach<'a>, port: u16) -> Self {
        Self {
            reach,
            base: format!("http://127.0.0.1:{port}"),
            port,
            client: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
        }
    }

    fn admin(&self) -> &str {
        self.reach
            .secrets
            .infra_admin(self.reach.instance.name.as_str())
    }

    fn failed(&self, detail: String) -> InfraError {
        InfraError::Request {
            title: "RabbitMQ's management API",
            port: self.port,
            detail,
        }
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, InfraError> {
        let response = request
            .basic_auth(ADMIN_USER, Some(self.admin()))
            .send()
            .await
            .map_err(|e| self.failed(e.to_string()))?;
        if response.status() == reqwest::StatusCode::UNAUTHORIZED {
            return Err(InfraError::WrongPassword {
                title: "RabbitMQ",
                who: ADMIN_USER.to_owned(),
            });
        }
        Ok(response)
    }

    async fn applied_digest(&self) -> Result<Option<String>, InfraError> {
        let response = self
            .send(
                self.client
                    .get(format!("{}/api/global-parameters/{APPLIED}", self.base)),
            )
            .await?;
        if !response.status().is_success() {
            return Ok(None);
        }
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        Ok(body["value"].as_str().map(str::to_owned))
    }

    async fn post(&self, path: &str, body: &serde_json::Value) -> Result<(), InfraError> {
        self.expect_ok(self.client.post(format!("{}{path}", self.base)).json(body))
            .await
    }

    async fn put(&self, path: &str, body: &serde_json::Value) -> Result<(), InfraError> {
        self.expect_ok(self.client.put(format!("{}{path}", self.base)).json(body))
            .await
    }

    async fn expect_ok(&self, request: reqwest::RequestBuilder) -> Result<(), InfraError> {
        let response = self.send(request).await?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let body = response.text().await.unwrap_or_default();
        Err(self.failed(format!(
            "{status}: {}",
            body.chars().take(300).collect::<String>()
        )))
    }
}

/// One queue of the broker as `gravity status` shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BrokerQueue {
    pub name: String,
    pub messages: u64,
    pub consumers: u64,
    /// Messages per second published into it and delivered from it, as the broker measures.
    pub publish_rate: f64,
    pub deliver_rate: f64,
    /// A dead-letter (parking) queue: its name ends in `.dlq` or `.parked`.
    pub dead_letter: bool,
}

#[derive(Deserialize)]
struct RawQueue {
    name: String,
    #[serde(default)]
    messages: u64,
    #[serde(default)]
    consumers: u64,
    #[serde(default)]
    message_stats: RawStats,
}

#[derive(Deserialize, Default)]
struct RawStats {
    #[serde(default)]
    publish_details: RawRate,
    #[serde(default)]
    deliver_get_details: RawRate,
}

#[derive(Deserialize, Default)]
struct RawRate {
    #[serde(default)]
    rate: f64,
}

/// The broker's queues through its management API on `ui_port` of the host's loopback.
pub async fn queues(
    client: &reqwest::Client,
    ui_port: u16,
    admin_password: &str,
) -> Result<Vec<BrokerQueue>, String> {
    let response = client
        .get(format!(
            "http://127.0.0.1:{ui_port}/api/queues?columns=name,messages,consumers,message_stats"
        ))
        .basic_auth(ADMIN_USER, Some(admin_password))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("management API answered {}", response.status()));
    }
    let raw: Vec<RawQueue> = response.json().await.map_err(|e| e.to_string())?;
    Ok(raw
        .into_iter()
        .map(|q| BrokerQueue {
            dead_letter: q.name.ends_with(".dlq") || q.name.ends_with(".parked"),
            name: q.name,
            messages: q.messages,
            consumers: q.consumers,
            publish_rate: q.message_stats.publish_details.rate,
            deliver_rate: q.message_stats.deliver_get_details.rate,
        })
        .collect())
}

// How services' consumers (`service_kit::events`) park a message: in `<queue>.parked`,
// through their `<service>.retry` exchange, with these headers. A wire contract: both sides
// must agree.
const PARKED_SUFFIX: &str = ".parked";
const ATTEMPT_HEADER: &str = "x-gravity-attempt";
const ERROR_HEADER: &str = "x-gravity-error";
const QUEUE_HEADER: &str = "x-gravity-queue";
/// Messages read per parking queue at most, for a listing or a replay.
const READ_LIMIT: u32 = 10_000;

/// The platform's parking queues that hold messages, as the management API lists them.
async fn parking_queues(reach: &Reach<'_>, http: &reqwest::Client) -> Result<Vec<String>, String> {
    let Some(port) = reach.ui_port else {
        return Err("its management API is not published: run `gravity up`".to_owned());
    };
    let admin = reach.secrets.infra_admin(reach.instance.name.as_str());
    Ok(queues(http, port, admin)
        .await?
        .into_iter()
        .filter(|q| q.name.ends_with(PARKED_SUFFIX) && q.messages > 0)
        .map(|q| q.name)
        .collect())
}

async fn connect_admin(reach: &Reach<'_>) -> Result<lapin::Connection, String> {
    let admin = reach.secrets.infra_admin(reach.instance.name.as_str());
    let uri = format!("amqp://{ADMIN_USER}:{admin}@127.0.0.1:{}/%2f", reach.port);
    lapin::Connection::connect(&uri, lapin::ConnectionProperties::default())
        .await
        .map_err(|e| format!("cannot reach the broker on port {}: {e}", reach.port))
}

/// Takes up to `READ_LIMIT` messages of `queue` without acknowledging them: they stay the
/// broker's, and go back where they were when the channel closes unless acknowledged.
async fn hold(
    channel: &lapin::Channel,
    queue: &str,
) -> Result<Vec<lapin::message::BasicGetMessage>, String> {
    let mut held = Vec::new();
    while held.len() < READ_LIMIT as usize {
        let got = channel
            .basic_get(
                queue.into(),
                lapin::options::BasicGetOptions { no_ack: false },
            )
            .await
            .map_err(|e| format!("reading {queue}: {e}"))?;
        match got {
            Some(message) => held.push(message),
            None => break,
        }
    }
    Ok(held)
}

fn header<'m>(
    message: &'m lapin::message::BasicGetMessage,
    name: &str,
) -> Option<&'m lapin::types::AMQPValue> {
    message
        .delivery
        .properties
        .headers()
        .as_ref()?
        .inner()
        .get(&lapin::types::ShortString::from(name))
}

fn header_text(message: &lapin::message::BasicGetMessage, name: &str) -> Option<String> {
    use lapin::types::AMQPValue;
    match header(message, name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// The queue a parked message goes back to.
fn home_of(parked_in: &str, message: &lapin::message::BasicGetMessage) -> String {
    header_text(message, QUEUE_HEADER)
        .unwrap_or_else(|| parked_in.trim_end_matches(PARKED_SUFFIX).to_owned())
}

fn describe(parked_in: &str, message: &lapin::message::BasicGetMessage) -> ParkedMessage {
    use lapin::types::AMQPValue;
    #[derive(Deserialize, Default)]
    struct Event {
        id: Option<String>,
        #[serde(rename = "type")]
        event_type: Option<String>,
        subject: Option<String>,
        time: Option<String>,
    }
    let event: Event = serde_json::from_slice(&message.delivery.data).unwrap_or_default();
    let attempts = match header(message, ATTEMPT_HEADER) {
        Some(AMQPValue::LongUInt(n)) => *n,
        Some(AMQPValue::LongLongInt(n)) => u32::try_from(*n).unwrap_or(0),
        Some(AMQPValue::LongInt(n)) => u32::try_from(*n).unwrap_or(0),
        _ => 0,
    };
    ParkedMessage {
        parked_in: parked_in.to_owned(),
        queue: home_of(parked_in, message),
        id: event.id,
        event_type: event.event_type,
        subject: event.subject,
        time: event.time,
        attempts,
        error: header_text(message, ERROR_HEADER).unwrap_or_else(|| "(no reason given)".to_owned()),
    }
}

async fn parked(reach: Reach<'_>, http: &reqwest::Client) -> Result<Vec<ParkedMessage>, String> {
    let names = parking_queues(&reach, http).await?;
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let conn = connect_admin(&reach).await?;
    let mut found = Vec::new();
    for name in names {
        let channel = conn.create_channel().await.map_err(|e| e.to_string())?;
        let held = hold(&channel, &name).await?;
        found.extend(held.iter().map(|m| describe(&name, m)));
        // Nothing was acknowledged: closing the channel leaves every message in place.
        let _ = channel.close(200, "listed".into()).await;
    }
    let _ = conn.close(200, "listed".into()).await;
    Ok(found)
}

async fn replay(reach: Reach<'_>, http: &reqwest::Client, which: Which<'_>) -> Result<u64, String> {
    use lapin::options::{BasicAckOptions, BasicPublishOptions, ConfirmSelectOptions};
    let names: Vec<String> = parking_queues(&reach, http)
        .await?
        .into_iter()
        .filter(|name| {
            which
                .queue
                .is_none_or(|q| name == q || name.trim_end_matches(PARKED_SUFFIX) == q)
        })
        .collect();
    if names.is_empty() {
        return Ok(0);
    }
    let conn = connect_admin(&reach).await?;
    let mut replayed = 0;
    for name in names {
        let channel = conn.create_channel().await.map_err(|e| e.to_string())?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| e.to_string())?;
        for message in hold(&channel, &name).await? {
            let parked = describe(&name, &message);
            if which.id.is_some_and(|id| parked.id.as_deref() != Some(id)) {
                continue;
            }
            // Back through the consumer's own retry exchange, which routes a queue's name
            // to the queue, as a first attempt.
            let service = parked.queue.split('.').next().unwrap_or_default();
            let mut headers = lapin::types::FieldTable::default();
            let kept = message.delivery.properties.headers().as_ref().map(|h| {
                h.inner()
                    .iter()
                    .filter(|(k, _)| {
                        ![ATTEMPT_HEADER, ERROR_HEADER, QUEUE_HEADER].contains(&k.as_str())
                    })
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect::<Vec<_>>()
            });
            for (k, v) in kept.unwrap_or_default() {
                headers.insert(k, v);
            }
            let properties = message
                .delivery
                .properties
                .clone()
                .with_headers(headers)
                .with_delivery_mode(2);
            let confirm = channel
                .basic_publish(
                    format!("{service}.retry").as_str().into(),
                    parked.queue.as_str().into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..BasicPublishOptions::default()
                    },
                    &message.delivery.data,
                    properties,
                )
                .await
                .map_err(|e| format!("replaying into {}: {e}", parked.queue))?
                .await
                .map_err(|e| format!("replaying into {}: {e}", parked.queue))?;
            // Only once the broker holds the copy does the parked one go.
            if !confirm.is_ack() || confirm.take_message().is_some() {
                return Err(format!(
                    "the broker did not take the message back into {}; it stays parked",
                    parked.queue
                ));
            }
            message
                .delivery
                .ack(BasicAckOptions::default())
                .await
                .map_err(|e| e.to_string())?;
            replayed += 1;
        }
        let _ = channel.close(200, "replayed".into()).await;
    }
    let _ = conn.close(200, "replayed".into()).await;
    Ok(replayed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_hashes_follow_rabbitmqs_sha256_scheme() {
        let encoded = password_hash("orders", "secret");
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&encoded)
            .unwrap();
        assert_eq!(raw.len(), 4 + 32);
        let mut hasher = Sha256::new();
        hasher.update(&raw[..4]);
        hasher.update(b"secret");
        assert_eq!(&raw[4..], hasher.finalize().as_slice());
        assert_eq!(encoded, password_hash("orders", "secret"), "deterministic");
    }
}
