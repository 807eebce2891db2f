//! `gravity export compose`: the platform as a docker-compose file, for users who leave (and
//! for the benchmark against `docker-compose up`). It uses the images `gravity up` made, so
//! run that first.
//!
//! It writes out the same plan `gravity up` runs (`plan::Plan`). Compose cannot provision
//! what each kind gives its dependents (a database and role, broker users), so each kind
//! that needs it adds a one-shot `<name>-init` service, and services apply their own
//! migrations on start.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::{
    engine::{resource_of, Engine, EngineError},
    infra::Runtime,
    plan::Plan,
    project::{Project, ProjectError},
};

#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Project(#[from] ProjectError),
    #[error("{0} has no container yet, so its image is unknown; run `gravity up` first")]
    NotUp(String),
    #[error("writing YAML: {0}")]
    Yaml(String),
}

#[derive(Serialize)]
struct File {
    services: BTreeMap<String, Service>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    volumes: BTreeMap<String, Volume>,
}

#[derive(Serialize, Default)]
struct Volume {}

#[derive(Serialize, Default)]
struct Service {
    image: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    hostname: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    extra_hosts: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    entrypoint: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    command: Option<Vec<String>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    environment: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ports: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    volumes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    healthcheck: Option<Healthcheck>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    depends_on: BTreeMap<String, Condition>,
    #[serde(skip_serializing_if = "Option::is_none")]
    restart: Option<String>,
    init: bool,
}

#[derive(Serialize)]
struct Healthcheck {
    test: Vec<String>,
    interval: String,
    timeout: String,
    retries: u32,
}

#[derive(Serialize)]
struct Condition {
    condition: &'static str,
}

/// The files `gravity up` writes into a container (Prometheus's configuration), written by
/// the container itself in an export: each from an environment variable, before the image's
/// program starts. Returns the entrypoint that does it and the environment holding them.
fn with_files(runtime: &Runtime) -> (Option<Vec<String>>, BTreeMap<String, String>) {
    let mut environment = runtime.env.clone();
    let (false, Some(program)) = (runtime.files.is_empty(), runtime.program) else {
        return (None, environment);
    };
    let mut script = String::new();
    for (i, file) in runtime.files.iter().enumerate() {
        let var = format!("GRAVITY_FILE_{i}");
        script.push_str(&format!("printf '%s' \"${var}\" > '{}' && ", file.path));
        environment.insert(var, file.content.clone());
    }
    script.push_str("exec \"$0\" \"$@\"");
    let entrypoint = ["/bin/sh", "-c", &script, program].map(str::to_owned);
    (Some(entrypoint.to_vec()), environment)
}

fn healthcheck(test: Vec<String>) -> Option<Healthcheck> {
    Some(Healthcheck {
        test,
        interval: "1s".to_owned(),
        timeout: "3s".to_owned(),
        retries: 60,
    })
}

fn healthy() -> Condition {
    Condition {
        condition: "service_healthy",
    }
}

/// The compose file's text for the platform as it runs now.
pub async fn export(project: &Project) -> Result<String, ComposeError> {
    let engine = Engine::connect().await?;
    let secrets = project.secrets()?;
    let mut images: BTreeMap<String, String> = BTreeMap::new();
    for c in engine.containers(project.label_filter()).await? {
        if let (Some(resource), Some(image)) = (resource_of(&c), &c.image) {
            images.insert(resource.to_owned(), image.clone());
        }
    }
    let image_of = |resource: &str| {
        images
            .get(resource)
            .cloned()
            .ok_or_else(|| ComposeError::NotUp(resource.to_owned()))
    };
    let plan = Plan::build(project, &secrets);
    let mut file = File {
        services: BTreeMap::new(),
        volumes: BTreeMap::new(),
    };
    // One-shot provisioning jobs each dependent waits for, by dependent.
    let mut inits: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for infra in &plan.infrastructure {
        let name = infra.name.to_string();
        let volume = format!("{name}-data");
        let image = image_of(&name)?;
        let (entrypoint, environment) = with_files(&infra.runtime);
        file.services.insert(
            name.clone(),
            Service {
                image: image.clone(),
                hostname: infra.hostname.clone(),
                entrypoint,
                command: infra.runtime.cmd.clone(),
                environment,
                ports: std::iter::once(format!(
                    "127.0.0.1:{}:{}",
                    infra.host_port, infra.container_port
                ))
                .chain(infra.ui_port.map(|p| format!("127.0.0.1::{p}")))
                .collect(),
                volumes: vec![format!("{volume}:{}", infra.volume_path)],
                healthcheck: healthcheck(infra.healthcheck.clone()),
                restart: Some("unless-stopped".to_owned()),
                init: true,
                ..Service::default()
            },
        );
        file.volumes.insert(volume, Volume::default());
        if let Some(job) = &infra.init {
            let init = format!("{name}-init");
            file.services.insert(
                init.clone(),
                Service {
                    image,
                    entrypoint: Some(job.entrypoint.clone()),
                    environment: job.env.clone(),
                    depends_on: BTreeMap::from([(name.clone(), healthy())]),
                    init: true,
                    ..Service::default()
                },
            );
            for dependent in &infra.dependents {
                inits
                    .entry(dependent.to_string())
                    .or_default()
                    .push(init.clone());
            }
        }
    }
    for (name, service) in &plan.services {
        let mut environment = service.env.clone();
        if service.has_database {
            // Compose has no migration step of its own: the service applies them on start.
            environment.insert("MIGRATE_ON_START".to_owned(), "true".to_owned());
        }
        if let Some(gateway) = &service.gateway {
            environment.insert("GATEWAY_CONFIG_TOML".to_owned(), gateway.content.clone());
        }
        let mut depends_on = BTreeMap::new();
        for dep in service.depends_on.iter().chain(&service.uses) {
            depends_on.insert(dep.to_string(), healthy());
        }
        for init in inits.remove(name.as_str()).unwrap_or_default() {
            depends_on.insert(
                init,
                Condition {
                    condition: "service_completed_successfully",
                },
            );
        }
        file.services.insert(
            name.to_string(),
            Service {
                image: image_of(name.as_str())?,
                environment,
                ports: vec![format!("127.0.0.1:{0}:{0}", service.port)],
                extra_hosts: service.extra_hosts.clone(),
                healthcheck: healthcheck(service.healthcheck.clone()),
                depends_on,
                restart: Some("unless-stopped".to_owned()),
                init: true,
                ..Service::default()
            },
        );
    }
    // Compose interpolates `$NAME` in every value; `$$` is a literal `$` (broker permission
    // patterns end in `$`, the provisioning jobs read their own variables).
    let yaml =
        crate::yaml::to_string(&file, |s| s.replace('$', "$$")).map_err(ComposeError::Yaml)?;
    Ok(format!(
        "# Exported by `gravity export compose` from gravity.toml (platform {}).\n# Holds the platform's passwords and gateway admin token: keep it private.\n# Run with: docker-compose -p {} up -d\n{yaml}",
        project.name(),
        project.name()
    ))
}
