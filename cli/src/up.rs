//! `gravity up`: from gravity.toml to a running, healthy platform.
//!
//! Every resource is a node: the network and volumes, the images, the cargo build, PostgreSQL,
//! Redis and each service. Nodes start at once and each awaits only what it needs (a service
//! its `depends_on`, its database, its image), so independent work runs in parallel and the
//! start order follows the dependency graph.
//!
//! **Invariant:** every step is idempotent and checks before it changes anything, so `up` on a
//! running, unchanged platform changes nothing, and an `up` cut short is completed by the next.

use std::{
    collections::{BTreeMap, HashMap},
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use bollard::{
    models::{ContainerSummary, NetworkCreateRequest, VolumeCreateRequest},
    query_parameters::InspectNetworkOptions,
};
use futures_util::{
    future::{BoxFuture, Shared},
    FutureExt as _,
};

use crate::{
    build::{self, Binary, BuildError},
    containers::{self, Change, ContainerError, ContainerPlan, LiveFile},
    database::DatabaseError,
    engine::{is_conflict, is_not_found, resource_of, Engine, EngineError},
    images::{self, ImageError, Obtained, Offline, Resolved},
    infra::{self, InfraError, Reach},
    manifest::{ImageRef, ServiceName},
    plan::{InfraPlan, Plan},
    progress::{Reporter, Task},
    project::{Project, ProjectError, Secrets},
};

#[derive(Debug, thiserror::Error)]
pub enum UpError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Project(#[from] ProjectError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    Container(#[from] ContainerError),
    #[error(transparent)]
    Database(#[from] DatabaseError),
    #[error(transparent)]
    Infra(#[from] InfraError),
    #[error("a Docker {kind} named {name} exists and Gravity did not create it; remove it, or change [platform] name in gravity.toml")]
    Foreign { kind: &'static str, name: String },
    #[error("the gateway ({container}) did not reload its routes: {detail}\n  see its output with `gravity logs`, or recreate it: `gravity down`, then `gravity up`")]
    GatewayReload { container: String, detail: String },
    #[error("{resource} did not become healthy within {secs} s{}\n  see all its output with `gravity logs {resource}`", show_logs(resource, logs))]
    NeverHealthy {
        resource: String,
        secs: u64,
        logs: Vec<String>,
    },
    #[error(
        "{resource} stopped with exit code {code}{}\n  fix the cause and run `gravity up` again",
        show_logs(resource, logs)
    )]
    Died {
        resource: String,
        code: i64,
        logs: Vec<String>,
    },
    #[error("{resource} was not started because {dependency} failed")]
    Skipped {
        resource: String,
        dependency: String,
    },
    #[error("{0}")]
    Shared(Arc<UpError>),
    #[error("the platform's data volume {volume} exists but its passwords file (.gravity/ next to gravity.toml) is gone; restore that file from a backup, or, to start over without the data, run `gravity down --volumes`")]
    SecretsLost { volume: String },
    #[error("{0}\n  fix the [services.NAME.route] tables in gravity.toml")]
    GatewayConfig(String),
}

fn show_logs(resource: &str, logs: &[String]) -> String {
    if logs.is_empty() {
        return String::new();
    }
    let mut out = format!("\n  last lines of {resource}'s log:");
    for line in logs {
        out.push_str("\n    ");
        out.push_str(line);
    }
    out
}

impl From<bollard::errors::Error> for UpError {
    fn from(e: bollard::errors::Error) -> Self {
        Self::Engine(e.into())
    }
}

/// What `gravity up` was asked to do.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// Services to bring up (with what they depend on); empty means all.
    pub services: Vec<String>,
    /// How long one resource may take to become healthy.
    pub health_timeout: Duration,
}

/// What `gravity up` did, resource by resource.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub changes: BTreeMap<String, Change>,
    /// Containers of this platform that gravity.toml no longer describes.
    pub orphans: Vec<String>,
}

type Node<T> = Shared<BoxFuture<'static, Result<T, Arc<UpError>>>>;

fn node<T: Clone + Send + Sync + 'static>(
    fut: impl Future<Output = Result<T, UpError>> + Send + 'static,
) -> Node<T> {
    fut.map(|r| r.map_err(Arc::new)).boxed().shared()
}

/// Shared by every node of one `up`.
struct Ctx {
    engine: Engine,
    project: Project,
    secrets: Secrets,
    plan: Plan,
    existing: HashMap<String, ContainerSummary>,
    reporter: Reporter,
    http: reqwest::Client,
    health_timeout: Duration,
    changes: std::sync::Mutex<BTreeMap<String, Change>>,
}

impl Ctx {
    fn record(&self, resource: &str, change: Change) {
        if let Ok(mut changes) = self.changes.lock() {
            changes.insert(resource.to_owned(), change);
        }
    }
}

pub async fn up(
    project: &Project,
    options: &UpOptions,
    reporter: &Reporter,
) -> Result<Summary, UpError> {
    let engine = Engine::connect().await?;
    let selection = project.selection(&options.services)?;
    if !project.has_secrets() {
        // New passwords would not open the data already there; say so before changing anything.
        for name in project.manifest.infrastructure.keys() {
            let volume = project.volume_name(name.as_str());
            if let Ok(v) = engine.api().inspect_volume(&volume).await {
                if project.owns(&v.labels) {
                    return Err(UpError::SecretsLost { volume });
                }
            }
        }
    }
    let secrets = project.secrets()?;
    let plan = Plan::build(project, &secrets);
    crate::gateway::check(&plan).map_err(UpError::GatewayConfig)?;
    let mut existing = HashMap::new();
    let mut orphans = Vec::new();
    let described = project.resources();
    for c in engine.containers(project.label_filter()).await? {
        let Some(resource) = resource_of(&c).map(str::to_owned) else {
            continue;
        };
        if !described.iter().any(|r| r.name == resource) {
            orphans.push(resource.clone());
        }
        existing.insert(resource, c);
    }
    // Infrastructure that the selected services use (all of it when none was named).
    let wanted: Vec<usize> = plan
        .infrastructure
        .iter()
        .enumerate()
        .filter(|(_, i)| {
            options.services.is_empty()
                || selection.iter().any(|s| {
                    let service = &plan.services[s];
                    service.uses.contains(&i.name) || service.depends_on.contains(&i.name)
                })
        })
        .map(|(index, _)| index)
        .collect();

    let ctx = Arc::new(Ctx {
        engine,
        project: project.clone(),
        secrets,
        plan,
        existing,
        reporter: reporter.clone(),
        http: reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap_or_default(),
        health_timeout: options.health_timeout,
        changes: std::sync::Mutex::new(BTreeMap::new()),
    });

    let network = node(ensure_network(ctx.clone()));
    let mut infrastructure: BTreeMap<ServiceName, Node<Reached>> = BTreeMap::new();
    for index in wanted {
        let name = ctx.plan.infrastructure[index].name.clone();
        infrastructure.insert(name, node(run_infra(ctx.clone(), network.clone(), index)));
    }
    let (runtime, binaries) = if selection.is_empty() {
        (None, None)
    } else {
        // Every crate of the platform, whichever services were asked for: Cargo unifies
        // features across one invocation, so building a subset would give a shared crate's
        // binary different code, and `up auth` then `up` would recreate auth for nothing.
        let crates: Vec<String> = ctx
            .plan
            .services
            .values()
            .map(|s| s.crate_name.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        (
            Some(node(resolve_runtime(ctx.clone()))),
            Some(node(cargo_build(ctx.clone(), crates))),
        )
    };

    let mut services: BTreeMap<ServiceName, Node<()>> = BTreeMap::new();
    // `selection` is in dependency order, so every dependency's node exists already.
    for name in &selection {
        let service = &ctx.plan.services[name];
        let mut deps: Vec<(String, Node<()>)> = Vec::new();
        for dep in &service.depends_on {
            if let Some(n) = services.get(dep) {
                deps.push((dep.to_string(), n.clone()));
            }
        }
        let mut uses = Vec::new();
        for used in service.uses.iter().chain(&service.depends_on) {
            if let Some(n) = infrastructure.get(used) {
                if !uses.iter().any(|(u, _): &(ServiceName, _)| u == used) {
                    uses.push((used.clone(), n.clone()));
                }
            }
        }
        let needs = ServiceNeeds {
            name: name.clone(),
            deps,
            uses,
            runtime: runtime.clone(),
            binaries: binaries.clone(),
            network: network.clone(),
        };
        services.insert(name.clone(), node(run_service(ctx.clone(), needs)));
    }

    // Drive every node to the end, then report the root cause first. The build and the base
    // image are driven from the start too (shared futures only run when polled), so cargo
    // compiles while images are made and infrastructure starts.
    let mut all: Vec<BoxFuture<'static, Result<(), Arc<UpError>>>> = vec![network.clone().boxed()];
    all.extend(
        runtime
            .iter()
            .map(|n| n.clone().map(|r| r.map(|_| ())).boxed()),
    );
    all.extend(
        binaries
            .iter()
            .map(|n| n.clone().map(|r| r.map(|_| ())).boxed()),
    );
    all.extend(
        infrastructure
            .values()
            .map(|n| n.clone().map(|r| r.map(|_| ())).boxed()),
    );
    all.extend(services.values().map(|s| s.clone().boxed()));
    let results = futures_util::future::join_all(all).await;
    let mut errors: Vec<Arc<UpError>> = results.into_iter().filter_map(Result::err).collect();
    errors.sort_by_key(|e| matches!(**e, UpError::Skipped { .. }));
    if let Some(first) = errors.into_iter().next() {
        return Err(match Arc::try_unwrap(first) {
            Ok(e) => e,
            Err(shared) => UpError::Shared(shared),
        });
    }
    for orphan in &orphans {
        reporter.note(
            orphan,
            "is running but gravity.toml no longer describes it; `gravity down` removes it",
        );
    }
    let changes = ctx.changes.lock().map(|c| c.clone()).unwrap_or_default();
    Ok(Summary { changes, orphans })
}

/// An infrastructure instance up and answering: where the host reaches it.
#[derive(Debug, Clone, Copy)]
struct Reached {
    index: usize,
    port: u16,
    ui_port: Option<u16>,
}

impl Ctx {
    fn reach(&self, reached: Reached) -> Reach<'_> {
        let plan = &self.plan.infrastructure[reached.index];
        Reach {
            instance: plan.instance(&self.project.manifest),
            secrets: &self.secrets,
            port: reached.port,
            ui_port: reached.ui_port,
        }
    }
}

fn failed<T>(task: Task, e: UpError) -> Result<T, UpError> {
    task.fail(&first_line(&e.to_string()));
    Err(e)
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_owned()
}

async fn ensure_network(ctx: Arc<Ctx>) -> Result<(), UpError> {
    let name = ctx.project.network_name();
    let docker = ctx.engine.api();
    let found = match docker
        .inspect_network(&name, None::<InspectNetworkOptions>)
        .await
    {
        Ok(n) => n,
        Err(e) if is_not_found(&e) => {
            let created = docker
                .create_network(NetworkCreateRequest {
                    name: name.clone(),
                    driver: Some("bridge".to_owned()),
                    labels: Some(ctx.project.labels(None)),
                    ..Default::default()
                })
                .await;
            match created {
                Ok(_) => return Ok(()),
                // Made meanwhile by a concurrent `gravity up`, or by someone else: look again.
                Err(e) if is_conflict(&e) => {
                    docker
                        .inspect_network(&name, None::<InspectNetworkOptions>)
                        .await?
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(e) => return Err(e.into()),
    };
    if found.labels.as_ref().is_some_and(|l| ctx.project.owns(l)) {
        Ok(())
    } else {
        Err(UpError::Foreign {
            kind: "network",
            name,
        })
    }
}

/// Makes the named volume of `resource` exist (it is never deleted here).
async fn ensure_volume(ctx: &Ctx, resource: &str) -> Result<String, UpError> {
    let name = ctx.project.volume_name(resource);
    let docker = ctx.engine.api();
    let found = match docker.inspect_volume(&name).await {
        Ok(v) => v,
        // The engine answers an existing volume's details for a create of its name, so one
        // that appeared since the inspection is checked like any other.
        Err(e) if is_not_found(&e) => {
            docker
                .create_volume(VolumeCreateRequest {
                    name: Some(name.clone()),
                    labels: Some(ctx.project.labels(Some(resource))),
                    ..Default::default()
                })
                .await?
        }
        Err(e) => return Err(e.into()),
    };
    if ctx.project.owns(&found.labels) {
        Ok(name)
    } else {
        Err(UpError::Foreign {
            kind: "volume",
            name,
        })
    }
}

async fn resolve_image(
    ctx: &Ctx,
    resource: &str,
    task: &Task,
    wanted: &ImageRef,
    offline: Option<&Offline>,
) -> Result<Resolved, UpError> {
    let resolved = images::resolve(&ctx.engine, wanted, offline, Some(task)).await?;
    match resolved.obtained {
        Obtained::Present => {}
        Obtained::PresentOffline => {}
        Obtained::Pulled => ctx
            .reporter
            .note(resource, &format!("pulled {}", resolved.image)),
        Obtained::BuiltOffline => ctx.reporter.note(
            resource,
            &format!(
                "no registry reachable: built {} from Debian packages (cached under that tag)",
                resolved.image
            ),
        ),
    }
    Ok(resolved)
}

/// An infrastructure instance: image, volume and network, then the container, then its
/// probe, then what its kind provisions for all its dependents at once.
async fn run_infra(ctx: Arc<Ctx>, network: Node<()>, index: usize) -> Result<Reached, UpError> {
    let plan: &InfraPlan = &ctx.plan.infrastructure[index];
    let resource = plan.name.to_string();
    let task = ctx.reporter.task(&resource, "preparing");
    let result = async {
        let (image, volume, net) = tokio::join!(
            resolve_image(&ctx, &resource, &task, &plan.wanted, plan.offline.as_ref()),
            ensure_volume(&ctx, &resource),
            network,
        );
        let (image, volume) = (image?, volume?);
        net.map_err(UpError::Shared)?;
        let container = ContainerPlan {
            resource: resource.clone(),
            name: ctx.project.container_name(&resource),
            image: image.image.to_string(),
            image_id: image.id,
            env: plan.runtime.env.clone(),
            cmd: plan.runtime.cmd.clone(),
            container_port: plan.container_port,
            host_port: plan.host_port,
            volume: Some((volume, plan.volume_path.to_owned())),
            healthcheck: plan.healthcheck.clone(),
            admin_port: plan.ui_port,
            // Reread when it reloads: nothing of them is only read at start.
            live_files: plan
                .runtime
                .files
                .iter()
                .map(|f| LiveFile {
                    path: f.path.clone(),
                    content: f.content.clone(),
                    read_at_start: String::new(),
                })
                .collect(),
            network: ctx.project.network_name(),
            hostname: plan.hostname.clone(),
            extra_hosts: Vec::new(),
            labels: ctx.project.labels(Some(&resource)),
        };
        task.message("starting");
        let change =
            containers::ensure(&ctx.engine, &container, ctx.existing.get(&resource)).await?;
        ctx.record(&resource, change);
        let ui_port = match plan.ui_port {
            Some(port) => {
                let inspect = ctx
                    .engine
                    .api()
                    .inspect_container(&container.name, None)
                    .await?;
                containers::published_port(&inspect, port)
            }
            None => None,
        };
        let reached = Reached {
            index,
            port: plan.host_port,
            ui_port,
        };
        task.message("waiting until it answers");
        let probe = || -> BoxFuture<'_, Result<bool, UpError>> {
            Box::pin(async { Ok(plan.kind.probe(ctx.reach(reached)).await?) })
        };
        wait_healthy(&ctx, &resource, &container.name, probe).await?;
        if change == Change::Updated {
            task.message("reloading its configuration");
            plan.kind.reload(ctx.reach(reached), &ctx.http).await?;
        }
        let dependents = Plan::dependents(&ctx.project, plan);
        if !dependents.is_empty() {
            task.message("provisioning its users");
            for note in plan
                .kind
                .provision_all(ctx.reach(reached), &dependents)
                .await?
            {
                ctx.reporter.note(&resource, &note);
            }
        }
        Ok((change, reached))
    }
    .await;
    match result {
        Ok((change, reached)) => {
            let ui = reached
                .ui_port
                .zip(plan.kind.ui())
                .map(|(port, ui)| format!(", {} on http://127.0.0.1:{port}", ui.what))
                .unwrap_or_default();
            task.done(&format!("{}{ui}", change.describe()));
            Ok(reached)
        }
        Err(e) => failed(task, e),
    }
}

async fn resolve_runtime(ctx: Arc<Ctx>) -> Result<Resolved, UpError> {
    let task = ctx
        .reporter
        .task("runtime", "resolving the services' base image");
    let (wanted, offline) = infra::runtime_images();
    match resolve_image(&ctx, "runtime", &task, &wanted, Some(&offline)).await {
        Ok(r) => {
            task.done(&r.image.to_string());
            Ok(r)
        }
        Err(e) => failed(task, e),
    }
}

async fn cargo_build(
    ctx: Arc<Ctx>,
    crates: Vec<String>,
) -> Result<Arc<BTreeMap<String, Binary>>, UpError> {
    let task = ctx.reporter.task("build", "cargo build");
    let m = &ctx.project.manifest;
    match build::cargo_build(&ctx.project.workspace, &m.profile, &crates, &task).await {
        Ok(b) => {
            task.done(&format!("{} binaries ({} profile)", b.len(), m.profile));
            Ok(Arc::new(b))
        }
        Err(e) => failed(task, e.into()),
    }
}

struct ServiceNeeds {
    name: ServiceName,
    /// The services it depends on.
    deps: Vec<(String, Node<()>)>,
    /// The infrastructure it uses.
    uses: Vec<(ServiceName, Node<Reached>)>,
    runtime: Option<Node<Resolved>>,
    binaries: Option<Node<Arc<BTreeMap<String, Binary>>>>,
    network: Node<()>,
}

async fn run_service(ctx: Arc<Ctx>, needs: ServiceNeeds) -> Result<(), UpError> {
    let name = needs.name.to_string();
    let task = ctx.reporter.task(&name, "waiting for its dependencies");
    let service = ctx.plan.services[&needs.name].clone();
    let skipped = |dependency: &str| UpError::Skipped {
        resource: name.clone(),
        dependency: dependency.to_owned(),
    };
    let result = async {
        for (dep, n) in &needs.deps {
            n.clone().await.map_err(|_| skipped(dep))?;
        }
        needs
            .network
            .clone()
            .await
            .map_err(|_| skipped("the network"))?;
        // What each piece of infrastructure it uses provisions for it (its database and
        // migrations, its users).
        for (used, n) in &needs.uses {
            let reached = n.clone().await.map_err(|_| skipped(used.as_str()))?;
            let plan = &ctx.plan.infrastructure[reached.index];
            let Some(dependent) = Plan::dependents(&ctx.project, plan)
                .into_iter()
                .find(|d| *d.name == needs.name)
            else {
                continue;
            };
            let notes = plan
                .kind
                .provision(ctx.reach(reached), dependent, &task)
                .await?;
            for note in notes {
                ctx.reporter.note(&name, &note);
            }
        }
        task.message("waiting for the build");
        let (Some(binaries), Some(runtime)) = (&needs.binaries, &needs.runtime) else {
            return Err(skipped("the build"));
        };
        let binaries = binaries.clone().await.map_err(|_| skipped("the build"))?;
        let runtime = runtime
            .clone()
            .await
            .map_err(|_| skipped("the runtime image"))?;
        let Some(binary) = binaries.get(&service.crate_name) else {
            return Err(BuildError::NoBinary(service.crate_name.clone()).into());
        };
        task.message("building its image");
        let (image, image_id) = build::service_image(&ctx.engine, binary, &runtime.image).await?;
        // The gateway reads its configuration from a file Gravity keeps in its container
        // rather than from its environment: a change of routes alone is then written there
        // and reloaded, without a restart.
        let mut env = service.env.clone();
        let live_files: Vec<LiveFile> = service
            .gateway
            .iter()
            .map(|file| {
                env.insert(
                    "GATEWAY_CONFIG".to_owned(),
                    crate::gateway::CONFIG_PATH.to_owned(),
                );
                LiveFile {
                    path: crate::gateway::CONFIG_PATH.to_owned(),
                    content: file.content.clone(),
                    read_at_start: file.read_at_start.clone(),
                }
            })
            .collect();
        let gateway = !live_files.is_empty();
        let plan = ContainerPlan {
            resource: name.clone(),
            name: ctx.project.container_name(&name),
            image: image.to_string(),
            image_id,
            env,
            cmd: None,
            container_port: service.port,
            host_port: service.port,
            volume: None,
            healthcheck: service.healthcheck.clone(),
            // The gateway's admin listener, on an ephemeral loopback port for the dashboard.
            admin_port: gateway.then_some(crate::gateway::ADMIN_PORT),
            live_files,
            network: ctx.project.network_name(),
            hostname: None,
            extra_hosts: service.extra_hosts.clone(),
            labels: ctx.project.labels(Some(&name)),
        };
        task.message("starting");
        let change = containers::ensure(&ctx.engine, &plan, ctx.existing.get(&name)).await?;
        if change == Change::Updated {
            task.message("reloading its routes");
            reload_gateway(&ctx, &plan.name).await?;
        }
        ctx.record(&name, change);
        task.message(format!("waiting for {}", service.health));
        let probe = || -> BoxFuture<'_, Result<bool, UpError>> {
            Box::pin(async {
                Ok(infra::http_answers(&ctx.http, service.port, &service.health).await)
            })
        };
        wait_healthy(&ctx, &name, &plan.name, probe).await?;
        Ok(change)
    }
    .await;
    match result {
        Ok(change) => {
            task.done(&format!(
                "{} on http://127.0.0.1:{}",
                change.describe(),
                service.port
            ));
            Ok(())
        }
        Err(e @ UpError::Skipped { .. }) => {
            task.fail(&e.to_string());
            Err(e)
        }
        Err(e) => failed(task, e),
    }
}

/// Asks a running gateway to reread the configuration file just rewritten in its container
/// (through its admin listener, published on loopback, with the platform's admin token), so
/// `up` returns with the new routes in force. The gateway would also notice the file itself
/// within its reload interval.
async fn reload_gateway(ctx: &Ctx, container: &str) -> Result<(), UpError> {
    let failed = |detail: String| UpError::GatewayReload {
        container: container.to_owned(),
        detail,
    };
    let inspect = ctx
        .engine
        .api()
        .inspect_container(container, None)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let port = crate::gateway::published_admin_port(&inspect)
        .ok_or_else(|| failed("its admin listener is not published".to_owned()))?;
    let response = ctx
        .http
        .post(format!("http://127.0.0.1:{port}/admin/reload"))
        .bearer_auth(&ctx.secrets.gateway_admin_token)
        .send()
        .await
        .map_err(|e| failed(e.to_string()))?;
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    if !status.is_success() {
        return Err(failed(format!(
            "{status}: {}",
            body["detail"].as_str().unwrap_or("no detail")
        )));
    }
    match body["needs_restart"].as_array() {
        Some(sections) if !sections.is_empty() => Err(failed(format!(
            "it reports a change that takes a restart ({})",
            sections
                .iter()
                .filter_map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
        _ => Ok(()),
    }
}

/// Polls `probe` until it answers, the container dies, or the timeout passes.
async fn wait_healthy<'p>(
    ctx: &Ctx,
    resource: &str,
    container: &str,
    probe: impl Fn() -> BoxFuture<'p, Result<bool, UpError>>,
) -> Result<(), UpError> {
    let started = Instant::now();
    let mut last_state_check = Instant::now();
    let restarts_before = containers::restart_count(&ctx.engine, container).await;
    loop {
        if probe().await? {
            return Ok(());
        }
        if last_state_check.elapsed() >= Duration::from_millis(500) {
            last_state_check = Instant::now();
            if let Some(code) = containers::exited(&ctx.engine, container, restarts_before).await {
                return Err(UpError::Died {
                    resource: resource.to_owned(),
                    code,
                    logs: containers::last_logs(&ctx.engine, container, 20).await,
                });
            }
        }
        if started.elapsed() > ctx.health_timeout {
            return Err(UpError::NeverHealthy {
                resource: resource.to_owned(),
                secs: ctx.health_timeout.as_secs(),
                logs: containers::last_logs(&ctx.engine, container, 20).await,
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
