//! Containers as Gravity wants them (`ContainerPlan`), and bringing one real container in line
//! with its plan: left alone when it matches and runs, started when stopped, recreated when
//! its plan changed, or its live file rewritten in place when only that changed.

use std::collections::{BTreeMap, HashMap};

use bollard::{
    models::{
        ContainerCreateBody, ContainerSummary, EndpointSettings, HealthConfig, HostConfig,
        NetworkingConfig, PortBinding, RestartPolicy, RestartPolicyNameEnum,
    },
    query_parameters::{
        CreateContainerOptions, DownloadFromContainerOptions, LogsOptions, RemoveContainerOptions,
        StopContainerOptions, UploadToContainerOptions,
    },
};
use futures_util::StreamExt as _;
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::engine::{is_conflict, is_not_found, is_not_modified, Engine, EngineError, LABEL_SPEC};

const CREATE_BODY_VERSION: u32 = 1;

/// Everything a container is created from. Its hash, stored as a label, tells whether a
/// running container still matches.
#[derive(Debug, Clone, Serialize)]
pub struct ContainerPlan {
    /// The resource it runs (`postgres`, `redis`, or a service name).
    pub resource: String,
    pub name: String,
    pub image: String,
    /// The image's id: a re-pulled or rebuilt image under the same tag recreates the container.
    pub image_id: String,
    pub env: BTreeMap<String, String>,
    pub cmd: Option<Vec<String>>,
    pub container_port: u16,
    pub host_port: u16,
    /// A named volume and where it is mounted.
    pub volume: Option<(String, String)>,
    pub healthcheck: Vec<String>,
    /// A second container port, published on an ephemeral loopback port (the gateway's
    /// admin listener). Left out of the hash when absent, so other containers' hashes are
    /// what they were before it existed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_port: Option<u16>,
    /// Files kept in the container (the gateway's configuration, Prometheus's); only what
    /// their process reads at start is part of the hash.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub live_files: Vec<LiveFile>,
    pub network: String,
    /// A host name that survives recreation (RabbitMQ keeps its data under a node name made
    /// from it). Left out of the hash when absent, like `admin_port`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// `NAME:ADDRESS` lines for its `/etc/hosts` (`host.docker.internal:host-gateway`). Left
    /// out of the hash when empty, like `admin_port`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<String>,
    #[serde(skip)]
    pub labels: HashMap<String, String>,
}

/// A file Gravity keeps inside a container: written before the container first starts, and
/// rewritten in place by a later `up` when only the parts its process rereads changed (the
/// gateway's routes), so the process carries on without a restart. `read_at_start` is the
/// rest, what the process reads when it starts only: it is hashed with the plan, so a change
/// there recreates the container.
#[derive(Debug, Clone, Serialize)]
pub struct LiveFile {
    /// An absolute path whose folder exists in the image (e.g. `/etc/...`).
    pub path: String,
    #[serde(skip)]
    pub content: String,
    pub read_at_start: String,
}

/// What was done to a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Unchanged,
    /// Left running; its live file was rewritten (the process rereads it).
    Updated,
    Started,
    Created,
    Recreated,
}

impl Change {
    pub fn describe(self) -> &'static str {
        match self {
            Self::Unchanged => "running, unchanged",
            Self::Updated => "running, reloaded in place",
            Self::Started => "started",
            Self::Created => "created",
            Self::Recreated => "recreated (changed)",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("a container named {name} exists and Gravity did not create it; remove or rename it, or change [platform] name in gravity.toml")]
    NameTaken { name: String },
    #[error("cannot write {path} into the container: {detail}")]
    LiveFile { path: String, detail: String },
    #[error("port {port} on 127.0.0.1 is already taken by {owner}; stop it, or give {resource} another port in gravity.toml")]
    PortTaken {
        port: u16,
        resource: String,
        owner: String,
    },
}

impl From<bollard::errors::Error> for ContainerError {
    fn from(e: bollard::errors::Error) -> Self {
        Self::Engine(e.into())
    }
}

impl ContainerPlan {
    pub fn spec_hash(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        let mut hasher = Sha256::new();
        // Bumped whenever `create_body` changes what it derives from a plan (restart policy,
        // health-check timings, ...), so containers made by an older Gravity are recreated.
        hasher.update(CREATE_BODY_VERSION.to_be_bytes());
        hasher.update(&json);
        let digest = hasher.finalize();
        digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
    }

    fn create_body(&self) -> ContainerCreateBody {
        let port_key = format!("{}/tcp", self.container_port);
        let mut labels = self.labels.clone();
        labels.insert(LABEL_SPEC.to_owned(), self.spec_hash());
        let secs = |s: i64| s * 1_000_000_000;
        ContainerCreateBody {
            hostname: self.hostname.clone(),
            image: Some(self.image.clone()),
            env: Some(self.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            cmd: self.cmd.clone(),
            labels: Some(labels),
            exposed_ports: Some(
                std::iter::once(port_key.clone())
                    .chain(self.admin_port.map(|p| format!("{p}/tcp")))
                    .collect(),
            ),
            healthcheck: Some(HealthConfig {
                test: Some(self.healthcheck.clone()),
                interval: Some(secs(2)),
                timeout: Some(secs(3)),
                retries: Some(15),
                start_period: Some(secs(1)),
                ..Default::default()
            }),
            host_config: Some(HostConfig {
                // Published on loopback only: a development platform is not for the network.
                port_bindings: Some(
                    std::iter::once((port_key, self.host_port.to_string()))
                        // An empty host port: the engine picks a free one.
                        .chain(self.admin_port.map(|p| (format!("{p}/tcp"), String::new())))
                        .map(|(key, host_port)| {
                            let binding = PortBinding {
                                host_ip: Some("127.0.0.1".to_owned()),
                                host_port: Some(host_port),
                            };
                            (key, Some(vec![binding]))
                        })
                        .collect(),
                ),
                binds: self
                    .volume
                    .as_ref()
                    .map(|(volume, path)| vec![format!("{volume}:{path}")]),
                restart_policy: Some(RestartPolicy {
                    name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                    maximum_retry_count: None,
                }),
                network_mode: Some(self.network.clone()),
                extra_hosts: (!self.extra_hosts.is_empty()).then(|| self.extra_hosts.clone()),
                init: Some(true),
                ..Default::default()
            }),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    self.network.clone(),
                    EndpointSettings {
                        aliases: Some(vec![self.resource.clone()]),
                        ..Default::default()
                    },
                )])),
            }),
            ..Default::default()
        }
    }
}

/// Brings the container of `plan` in line with it. `existing` is the container of that name
/// among the platform's, if any.
pub async fn ensure(
    engine: &Engine,
    plan: &ContainerPlan,
    existing: Option<&ContainerSummary>,
) -> Result<Change, ContainerError> {
    let docker = engine.api();
    let mut change = Change::Created;
    if let Some(c) = existing {
        let id = c.id.clone().unwrap_or_default();
        let same = c
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_SPEC))
            .is_some_and(|h| *h == plan.spec_hash());
        let running = c.state.as_ref().map(|s| s.to_string()).as_deref() == Some("running");
        if same && running {
            let mut updated = false;
            for file in &plan.live_files {
                if read_file(engine, &id, &file.path).await.as_deref() != Some(&file.content) {
                    write_file(engine, &id, file).await?;
                    updated = true;
                }
            }
            return Ok(if updated {
                Change::Updated
            } else {
                Change::Unchanged
            });
        }
        if same {
            check_port(engine, plan).await?;
            // A container that cannot start again (its network was pruned, it is `dead`) is
            // made anew from the same plan; anything else would fail the same way every time.
            let mut written = true;
            for file in &plan.live_files {
                written &= write_file(engine, &id, file).await.is_ok();
            }
            if written && start(engine, &id).await.is_ok() {
                return Ok(Change::Started);
            }
        }
        remove(engine, &id).await?;
        change = Change::Recreated;
    }
    check_port(engine, plan).await?;
    let created = docker
        .create_container(
            Some(CreateContainerOptions {
                name: Some(plan.name.clone()),
                ..Default::default()
            }),
            plan.create_body(),
        )
        .await;
    let id = match created {
        Ok(r) => r.id,
        Err(e) if is_conflict(&e) => {
            return Err(ContainerError::NameTaken {
                name: plan.name.clone(),
            })
        }
        Err(e) => return Err(e.into()),
    };
    for file in &plan.live_files {
        write_file(engine, &id, file).await?;
    }
    start(engine, &id).await?;
    Ok(change)
}

/// The host port the engine published a container's `container_port` on (for a port
/// published on an ephemeral loopback port: a gateway's admin listener, a management UI).
pub fn published_port(
    inspect: &bollard::models::ContainerInspectResponse,
    container_port: u16,
) -> Option<u16> {
    inspect
        .network_settings
        .as_ref()?
        .ports
        .as_ref()?
        .get(&format!("{container_port}/tcp"))?
        .as_ref()?
        .iter()
        .find_map(|b| b.host_port.as_deref()?.parse().ok())
}

/// The largest live file read back from a container; a larger one counts as different.
const LIVE_FILE_LIMIT: usize = 1 << 20;

/// The text of the file at `path` in the container, if it is there and readable.
async fn read_file(engine: &Engine, id: &str, path: &str) -> Option<String> {
    use std::io::Read as _;
    let mut stream = engine
        .api()
        .download_from_container(id, Some(DownloadFromContainerOptions { path: path.into() }));
    let mut tar = Vec::new();
    while let Some(chunk) = stream.next().await {
        tar.extend_from_slice(&chunk.ok()?);
        if tar.len() > LIVE_FILE_LIMIT + 64 * 1024 {
            return None;
        }
    }
    let mut archive = tar::Archive::new(tar.as_slice());
    let mut entry = archive.entries().ok()?.next()?.ok()?;
    let mut text = String::new();
    entry.read_to_string(&mut text).ok()?;
    Some(text)
}

/// Writes `file` into the container (mode 0644, owned by root), replacing what is there.
async fn write_file(engine: &Engine, id: &str, file: &LiveFile) -> Result<(), ContainerError> {
    let failed = |detail: String| ContainerError::LiveFile {
        path: file.path.clone(),
        detail,
    };
    let path = std::path::Path::new(&file.path);
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(failed("not a file path".to_owned()));
    };
    let mut header = tar::Header::new_ustar();
    header.set_size(file.content.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    );
    let mut builder = tar::Builder::new(Vec::new());
    builder
        .append_data(&mut header, name, file.content.as_bytes())
        .map_err(|e| failed(e.to_string()))?;
    let tar = builder.into_inner().map_err(|e| failed(e.to_string()))?;
    engine
        .api()
        .upload_to_container(
            id,
            Some(UploadToContainerOptions {
                path: dir.to_string_lossy().into_owned(),
                ..Default::default()
            }),
            bollard::body_full(bytes::Bytes::from(tar)),
        )
        .await
        .map_err(|e| failed(e.to_string()))
}

async fn start(engine: &Engine, id: &str) -> Result<(), ContainerError> {
    match engine.api().start_container(id, None).await {
        Ok(()) => Ok(()),
        Err(e) if is_not_modified(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Stops (10 s grace) and removes a container.
pub async fn remove(engine: &Engine, id: &str) -> Result<(), EngineError> {
    let docker = engine.api();
    match docker
        .stop_container(
            id,
            Some(StopContainerOptions {
                t: Some(10),
                ..Default::default()
            }),
        )
        .await
    {
        Ok(()) => {}
        Err(e) if is_not_modified(&e) || is_not_found(&e) => {}
        Err(e) => return Err(e.into()),
    }
    match docker
        .remove_container(
            id,
            Some(RemoveContainerOptions {
                force: true,
                ..Default::default()
            }),
        )
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        // Already being removed by another call.
        Err(e) if is_conflict(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Refuses to start a container whose host port something else holds, naming what.
async fn check_port(engine: &Engine, plan: &ContainerPlan) -> Result<(), ContainerError> {
    let port = plan.host_port;
    if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
        return Ok(());
    }
    // Held by a container (ours or not)? Name it.
    let all = engine.containers(HashMap::new()).await?;
    for c in &all {
        let publishes = c
            .ports
            .iter()
            .flatten()
            .any(|p| p.public_port == Some(port));
        if publishes {
            let name = c
                .names
                .iter()
                .flatten()
                .next()
                .map(|n| n.trim_start_matches('/').to_owned())
                .unwrap_or_default();
            if name == plan.name {
                // Our own container of this resource, about to be replaced.
                return Ok(());
            }
            return Err(ContainerError::PortTaken {
                port,
                resource: plan.resource.clone(),
                owner: format!("container {name}"),
            });
        }
    }
    let owner = listeners::get_processes_by_port(port)
        .ok()
        .and_then(|ps| {
            ps.into_iter()
                .next()
                .map(|p| format!("process {} (pid {})", p.name, p.pid))
        })
        .unwrap_or_else(|| "another program".to_owned());
    Err(ContainerError::PortTaken {
        port,
        resource: plan.resource.clone(),
        owner,
    })
}

/// The last `lines` lines a container wrote, for error messages.
pub async fn last_logs(engine: &Engine, name: &str, lines: usize) -> Vec<String> {
    let mut stream = engine.api().logs(
        name,
        Some(LogsOptions {
            stdout: true,
            stderr: true,
            tail: lines.to_string(),
            ..Default::default()
        }),
    );
    let mut out = Vec::new();
    while let Some(Ok(chunk)) = stream.next().await {
        let text = String::from_utf8_lossy(&chunk.into_bytes()).into_owned();
        out.extend(text.lines().map(str::to_owned));
    }
    out
}

/// How many times the engine's restart policy has restarted a container so far.
pub async fn restart_count(engine: &Engine, name: &str) -> i64 {
    engine
        .api()
        .inspect_container(name, None)
        .await
        .ok()
        .and_then(|i| i.restart_count)
        .unwrap_or(0)
}

/// Whether a container has died since `restarts_before` was read: exited, or restarted by its
/// restart policy after exiting (a crash loop). Returns the last exit code.
pub async fn exited(engine: &Engine, name: &str, restarts_before: i64) -> Option<i64> {
    let inspect = engine.api().inspect_container(name, None).await.ok()?;
    let restarts = inspect.restart_count.unwrap_or(0);
    let state = inspect.state?;
    let running = state.running == Some(true) && state.restarting != Some(true);
    if running && restarts <= restarts_before {
        return None;
    }
    Some(state.exit_code.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(admin_port: Option<u16>) -> ContainerPlan {
        ContainerPlan {
            resource: "auth".into(),
            name: "shop-auth".into(),
            image: "gravity-build/auth:abc".into(),
            image_id: "sha256:0123".into(),
            env: BTreeMap::from([("PORT".into(), "8000".into()), ("A".into(), "1".into())]),
            cmd: None,
            container_port: 8000,
            host_port: 8000,
            volume: None,
            healthcheck: vec!["CMD".into(), "probe".into()],
            admin_port,
            live_files: Vec::new(),
            network: "shop-network".into(),
            hostname: None,
            extra_hosts: Vec::new(),
            labels: HashMap::new(),
        }
    }

    #[test]
    fn a_plan_without_an_admin_port_hashes_as_before_there_was_one() {
        // SHA-256 of the version and the plan's JSON as it was serialised before `admin_port`
        // existed: running containers are not recreated by an upgrade of gravity alone.
        assert_eq!(plan(None).spec_hash(), "8e7b4ea63126e6d327c7e9762d0cf8c5");
        assert_ne!(plan(Some(9080)).spec_hash(), plan(None).spec_hash());
        let named = ContainerPlan {
            hostname: Some("rabbitmq".into()),
            ..plan(None)
        };
        assert_ne!(named.spec_hash(), plan(None).spec_hash());
        assert_eq!(named.create_body().hostname.as_deref(), Some("rabbitmq"));
    }

    #[test]
    fn an_admin_port_is_published_on_an_ephemeral_loopback_port() {
        let body = plan(Some(9080)).create_body();
        let mut exposed = body.exposed_ports.clone().unwrap();
        exposed.sort();
        assert_eq!(exposed, ["8000/tcp", "9080/tcp"]);
        let bindings = body.host_config.unwrap().port_bindings.unwrap();
        let bound = |key: &str| bindings[key].clone().unwrap()[0].clone();
        assert_eq!(bound("8000/tcp").host_port.as_deref(), Some("8000"));
        assert_eq!(bound("9080/tcp").host_port.as_deref(), Some(""));
        assert_eq!(bound("9080/tcp").host_ip.as_deref(), Some("127.0.0.1"));

        let without = plan(None).create_body();
        assert_eq!(without.exposed_ports.unwrap(), ["8000/tcp"]);
        assert_eq!(without.host_config.unwrap().port_bindings.unwrap().len(), 1);
    }
}
