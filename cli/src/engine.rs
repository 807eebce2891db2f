//! `Engine`: the Docker Engine, reached through its API (bollard), never through the `docker`
//! binary. Negotiates the API version down to what the engine speaks.
//!
//! **Invariant:** Gravity only ever touches Docker objects that carry its labels.

use bollard::Docker;

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
