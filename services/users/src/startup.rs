//! `Application`: the service built from its settings (the port bound first, so tests can ask
//! for port 0), serving HTTP, relaying its events and consuming others' until a signal.

use std::{future::Future, net::SocketAddr};

use service_kit::{app, http, privacy::subscription as privacy_subscription};

use crate::{
    config::Settings,
    privacy::{answers, Profiles},
    routes,
    state::{AppState, Handles},
    subscriptions,
};

/// This service's name: its events' source and its exchange.
pub const SERVICE: &str = "users";

/// The migrations of `migrations/users`, embedded at build time.
#[rustfmt::skip] // as written, whatever the length of the service's name
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/users");

pub use service_kit::app::StartupError;

pub struct Application {
    service: app::Service,
    state: AppState,
}

impl Application {
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let db = app::database(&settings.service, &MIGRATOR).await?;
        let state = AppState::new(Handles {
            db: db.clone(),
            settings,
            schemas: Default::default(),
        });
        let settings = &state.settings.service;
        let service = app::Service::bind(SERVICE, &settings.http, routes::router(state.clone()))
            .await?
            .with_events(&db, settings.events.as_ref(), |consumer| {
                consumer
                    .subscribe(subscriptions::accounts())
                    .subscribe(privacy_subscription(SERVICE, Profiles))
                    .subscribe(answers())
            });
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
