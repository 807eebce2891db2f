//! `gravity export compose`: the platform as a docker-compose file, for users who leave (and
//! for the benchmark against `docker-compose up`). It uses the images `gravity up` made, so
//! run that first.
//!
//! Compose cannot create each service's database and role, so the file adds a one-shot
//! `db-init` service that does, and lets services apply their own migrations on start.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::{
    engine::{resource_of, Engine, EngineError},
    infra,
    project::{Project, ProjectError, POSTGRES, REDIS},
    up::{postgres_env, service_env},
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
    let m = &project.manifest;
    let mut file = File {
        services: BTreeMap::new(),
        volumes: BTreeMap::new(),
    };
    if let Some(pg) = &m.postgres {
        let volume = format!("{POSTGRES}-data");
        file.services.insert(
            POSTGRES.to_owned(),
            Service {
                image: image_of(POSTGRES)?,
                command: Some(infra::postgres_command(pg)),
                environment: postgres_env(&secrets),
                ports: vec![format!("127.0.0.1:{}:5432", pg.port.get())],
                volumes: vec![format!("{volume}:{}", infra::PG_VOLUME_PATH)],
                healthcheck: healthcheck(infra::postgres_healthcheck()),
                restart: Some("unless-stopped".to_owned()),
                init: true,
                ..Service::default()
            },
        );
        file.volumes.insert(volume, Volume::default());
        let mut sql = String::new();
        for spec in m.services.values() {
            if let Some(db) = &spec.database {
                let pw = secrets.role_password(db);
                sql.push_str(&format!(
                    "SELECT 'CREATE ROLE \"{db}\" LOGIN PASSWORD ''{pw}''' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{db}')\\gexec\n\
                     SELECT 'CREATE DATABASE \"{db}\" OWNER \"{db}\"' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '{db}')\\gexec\n\
                     REVOKE ALL ON DATABASE \"{db}\" FROM PUBLIC;\n"
                ));
            }
        }
        if !sql.is_empty() {
            file.services.insert(
                "db-init".to_owned(),
                Service {
                    image: image_of(POSTGRES)?,
                    entrypoint: Some(vec![
                        "sh".to_owned(),
                        "-ec".to_owned(),
                        format!(
                            "psql -q -v ON_ERROR_STOP=1 -h {POSTGRES} -U postgres -d postgres <<'SQL'\n{sql}SQL\n"
                        ),
                    ]),
                    environment: BTreeMap::from([(
                        "PGPASSWORD".to_owned(),
                        secrets.postgres_password.clone(),
                    )]),
                    depends_on: BTreeMap::from([(POSTGRES.to_owned(), healthy())]),
                    init: true,
                    ..Service::default()
                },
            );
        }
    }
    if let Some(redis) = &m.redis {
        let volume = format!("{REDIS}-data");
        file.services.insert(
            REDIS.to_owned(),
            Service {
                image: image_of(REDIS)?,
                command: Some(infra::redis_command(redis)),
                ports: vec![format!("127.0.0.1:{}:6379", redis.port.get())],
                volumes: vec![format!("{volume}:{}", infra::REDIS_VOLUME_PATH)],
                healthcheck: healthcheck(infra::redis_healthcheck()),
                restart: Some("unless-stopped".to_owned()),
                init: true,
                ..Service::default()
            },
        );
        file.volumes.insert(volume, Volume::default());
    }
    for (name, spec) in &m.services {
        let mut environment = service_env(project, &secrets, name);
        if spec.database.is_some() {
            // Compose has no migration step of its own: the service applies them on start.
            environment.insert("MIGRATE_ON_START".to_owned(), "true".to_owned());
        }
        let mut depends_on = BTreeMap::new();
        for dep in &spec.depends_on {
            depends_on.insert(dep.to_string(), healthy());
        }
        if spec.database.is_some() {
            depends_on.insert(
                "db-init".to_owned(),
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
                ports: vec![format!("127.0.0.1:{0}:{0}", spec.port.get())],
                healthcheck: healthcheck(infra::http_healthcheck(spec.port.get(), &spec.health)),
                depends_on,
                restart: Some("unless-stopped".to_owned()),
                init: true,
                ..Service::default()
            },
        );
    }
    let value = serde_json::to_value(&file).map_err(|e| ComposeError::Yaml(e.to_string()))?;
    let mut yaml = String::new();
    yaml_rust2::YamlEmitter::new(&mut yaml)
        .dump(&to_yaml(value))
        .map_err(|e| ComposeError::Yaml(e.to_string()))?;
    let yaml = yaml.trim_start_matches("---").trim_start();
    Ok(format!(
        "# Exported by `gravity export compose` from gravity.toml (platform {}).\n# Holds the platform's database passwords and gateway admin token: keep it private.\n# Run with: docker-compose -p {} up -d\n{yaml}",
        project.name(),
        project.name()
    ))
}

/// YAML through an emitter that quotes what YAML 1.1 readers (docker-compose 1.x) would take
/// for booleans: Redis's `--appendonly yes` must stay the string "yes".
fn to_yaml(value: serde_json::Value) -> yaml_rust2::Yaml {
    use serde_json::Value;
    use yaml_rust2::Yaml;
    match value {
        Value::Null => Yaml::Null,
        Value::Bool(b) => Yaml::Boolean(b),
        Value::Number(n) => n
            .as_i64()
            .map(Yaml::Integer)
            .unwrap_or_else(|| Yaml::Real(n.to_string())),
        Value::String(s) => Yaml::String(s),
        Value::Array(items) => Yaml::Array(items.into_iter().map(to_yaml).collect()),
        Value::Object(map) => Yaml::Hash(
            map.into_iter()
                .map(|(k, v)| (Yaml::String(k), to_yaml(v)))
                .collect(),
        ),
    }
}
