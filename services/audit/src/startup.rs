//! `Application`: the service built from its settings (the port bound first, so tests can ask
//! for port 0), serving HTTP, consuming every event and signing checkpoints until a signal.

use std::{future::Future, net::SocketAddr};

use secrecy::ExposeSecret as _;
use service_kit::{app, http};

use crate::{
    checkpoints::{self, Signer},
    config::Settings,
    routes,
    state::{AppState, Handles},
    subscriptions,
};

/// This service's name: its events' source and its exchange.
pub const SERVICE: &str = "audit";

/// The migrations of `migrations/audit`, embedded at build time.
#[rustfmt::skip] // as written, whatever the length of the service's name
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/audit");

pub use service_kit::app::StartupError;

pub struct Application {
    service: app::Service,
    state: AppState,
}

impl Application {
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let db = app::database(&settings.service, &MIGRATOR).await?;
        let key = settings.signing_key.as_ref().map(|k| k.expose_secret());
        let signer = Signer::load(&db, key).await.map_err(|e| match e {
            checkpoints::KeyError::Database(e) => StartupError::Database(e),
            other => StartupError::Config(service_kit::config::ConfigError {
                var: "PLATFORM_SIGNING_KEY".to_owned(),
                problem: other.to_string(),
            }),
        })?;
        let state = AppState::new(Handles {
            db: db.clone(),
            settings,
            signer,
        });
        let settings = &state.settings.service;
        let every_event = subscriptions::every_event(state.clone());
        let service = app::Service::bind(SERVICE, &settings.http, routes::router(state.clone()))
            .await?
            .with_events(&db, settings.events.as_ref(), |consumer| {
                consumer
                    .subscribe(every_event)
                    .subscribe(service_kit::privacy::subscription(
                        SERVICE,
                        crate::privacy::Records,
                    ))
            })
            .with_task(checkpoint_regularly(state.clone()));
        Ok(Self { service, state })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.service.local_addr()
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.run_until(http::shutdown_signal()).await
    }

    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        self.service.run_until(shutdown).await
    }
}

/// Signs the head every `checkpoint_interval` when records came since the last checkpoint,
/// so that a cut tail is caught even when fewer than `checkpoint_every` records came.
async fn checkpoint_regularly(state: AppState) {
    let mut every = tokio::time::interval(state.settings.checkpoint_interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if let Err(e) = checkpoints::checkpoint_head(&state.db, &state.signer).await {
            tracing::warn!(error = %e, "signing a checkpoint failed; trying again later");
        }
    }
}
