//! `Engine`: the Docker Engine, reached through its API (bollard), never through the `docker`
//! binary. Negotiates the API version down to what the engine speaks.
//!
//! **Invariant:** Gravity only ever touches Docker objects that carry its labels.

use std::collections::HashMap;

use bollard::{models::ContainerSummary, query_parameters::ListContainersOptions, Docker};

/// Set on every object Gravity creates.
pub const LABEL_MANAGED: &str = "dev.gravity.managed";
/// The platform (gravity.toml's `[platform] name`) an object belongs to.
pub const LABEL_PROJECT: &str = "dev.gravity.project";
/// The service or infrastructure piece an object belongs to.
pub const LABEL_SERVICE: &str = "dev.gravity.service";

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(
        "cannot reach the Docker Engine ({0}); start it (e.g. `sudo systemctl start docker`) or set DOCKER_HOST"
    )]
    NotRunning(String),
    #[error("Docker Engine API: {0}")]
    Api(#[from] bollard::errors::Error),
}

#[derive(Clone)]
pub struct Engine {
    docker: Docker,
}

impl Engine {
    /// Connects to the local engine (or `DOCKER_HOST`) and checks that it answers.
    pub async fn connect() -> Result<Self, EngineError> {
        let docker = Docker::connect_with_local_defaults()
            .map_err(|e| EngineError::NotRunning(e.to_string()))?;
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|e| EngineError::NotRunning(e.to_string()))?;
        docker
            .ping()
            .await
            .map_err(|e| EngineError::NotRunning(e.to_string()))?;
        Ok(Self { docker })
    }

    pub fn api(&self) -> &Docker {
        &self.docker
    }
}

/// A hash of everything a container was created from; a different hash means recreate it.
pub const LABEL_SPEC: &str = "dev.gravity.spec";

/// True when the engine answered 404 (no such object).
pub fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// True when the engine answered 409 (conflict: exists already, in use).
pub fn is_conflict(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 409,
            ..
        }
    )
}

/// True when the engine answered 304 (already started or stopped).
pub fn is_not_modified(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 304,
            ..
        }
    )
}

/// The resource (`postgres`, `redis`, a service) a container of Gravity's runs.
pub fn resource_of(c: &ContainerSummary) -> Option<&str> {
    c.labels
        .as_ref()
        .and_then(|l| l.get(LABEL_SERVICE))
        .map(String::as_str)
}

impl Engine {
    /// All containers (running or not) carrying `filters`' labels.
    pub async fn containers(
        &self,
        filters: HashMap<String, Vec<String>>,
    ) -> Result<Vec<ContainerSummary>, EngineError> {
        Ok(self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await?)
    }
}
