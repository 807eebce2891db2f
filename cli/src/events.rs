//! `gravity events`: the messages services' consumers parked after giving up on them, with
//! why, and `gravity events replay`, which sends them back to their queues once the cause is
//! fixed. It reaches the platform's broker (the instance whose kind carries events) on its
//! published ports, as its administrator.

use std::fmt::Write as _;

use crate::{
    engine::{resource_of, Engine, EngineError},
    infra::{ParkedMessage, Reach, Which},
    manifest::{Infra, ServiceName},
    project::{Project, Secrets},
};

#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    #[error("gravity.toml has no message broker; add one ([infrastructure.rabbitmq]) and run `gravity up`")]
    NoBroker,
    #[error("the broker {0} is not running; run `gravity up` first")]
    NotRunning(String),
    #[error("no secrets for this platform ({0}); run `gravity up` first")]
    NoSecrets(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("the broker {broker}: {message}")]
    Broker { broker: String, message: String },
}

/// Every parked message of the platform, queue by queue.
pub async fn parked(project: &Project) -> Result<Vec<ParkedMessage>, EventsError> {
    let broker = Broker::find(project).await?;
    let reach = broker.reach();
    let listing = reach
        .instance
        .infra
        .kind
        .parked(reach, &broker.http)
        .ok_or(EventsError::NoBroker)?;
    listing.await.map_err(|message| broker.error(message))
}

/// Sends the parked messages `which` selects back to their queues; how many.
pub async fn replay(project: &Project, which: Which<'_>) -> Result<u64, EventsError> {
    let broker = Broker::find(project).await?;
    let reach = broker.reach();
    let replay = reach
        .instance
        .infra
        .kind
        .replay(reach, &broker.http, which)
        .ok_or(EventsError::NoBroker)?;
    replay.await.map_err(|message| broker.error(message))
}

/// The platform's running broker: where the engine published it, and its secrets.
struct Broker<'p> {
    platform: &'p crate::manifest::Manifest,
    name: &'p ServiceName,
    infra: &'p Infra,
    ui_port: Option<u16>,
    secrets: Secrets,
    http: reqwest::Client,
}

impl<'p> Broker<'p> {
    async fn find(project: &'p Project) -> Result<Self, EventsError> {
        let manifest = &project.manifest;
        let name = manifest.event_broker().ok_or(EventsError::NoBroker)?;
        let infra = &manifest.infrastructure[name];
        let engine = Engine::connect().await?;
        let found = engine.containers(project.label_filter()).await?;
        let container = found
            .iter()
            .find(|c| {
                resource_of(c) == Some(name.as_str())
                    && c.state == Some(bollard::models::ContainerSummaryStateEnum::RUNNING)
            })
            .ok_or_else(|| EventsError::NotRunning(name.to_string()))?;
        let ui_port = infra.kind.ui().and_then(|ui| {
            container
                .ports
                .iter()
                .flatten()
                .find(|p| p.private_port == ui.port)
                .and_then(|p| p.public_port)
        });
        let secrets = project
            .existing_secrets()
            .ok_or_else(|| EventsError::NoSecrets(project.secrets_path().display().to_string()))?;
        Ok(Self {
            platform: manifest,
            name,
            infra,
            ui_port,
            secrets,
            http: reqwest::Client::new(),
        })
    }

    fn reach(&self) -> Reach<'_> {
        Reach {
            instance: crate::infra::Instance {
                name: self.name,
                infra: self.infra,
                platform: self.platform,
            },
            secrets: &self.secrets,
            port: self.infra.port.get(),
            ui_port: self.ui_port,
        }
    }

    fn error(&self, message: String) -> EventsError {
        EventsError::Broker {
            broker: self.name.to_string(),
            message,
        }
    }
}

/// The parked messages as a table, one per line, with the error last.
pub fn table(rows: &[ParkedMessage]) -> String {
    if rows.is_empty() {
        return "no parked messages\n".to_owned();
    }
    let width = |f: &dyn Fn(&ParkedMessage) -> usize, title: &str| {
        rows.iter().map(f).max().unwrap_or(0).max(title.len())
    };
    let queue = width(&|r| r.queue.len(), "QUEUE");
    let kind = width(&|r| r.event_type.as_deref().unwrap_or("-").len(), "TYPE");
    let id = width(&|r| r.id.as_deref().unwrap_or("-").len(), "EVENT");
    let mut out = format!(
        "{:queue$}  {:kind$}  {:id$}  ATTEMPTS  ERROR\n",
        "QUEUE", "TYPE", "EVENT"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:queue$}  {:kind$}  {:id$}  {:>8}  {}",
            r.queue,
            r.event_type.as_deref().unwrap_or("-"),
            r.id.as_deref().unwrap_or("-"),
            r.attempts,
            r.error.lines().next().unwrap_or_default(),
        );
    }
    let _ = writeln!(
        out,
        "\n{} parked; `gravity events replay` sends them back once the cause is fixed",
        rows.len()
    );
    out
}
