//! `Application`: the service built from its settings (the port bound first, so tests can ask
//! for port 0), serving HTTP, relaying its events and consuming others' until a signal.

use std::{future::Future, net::SocketAddr};

use service_kit::{app, http};

use crate::{
    config::Settings,
    email::Mailer,
    routes, sender,
    sms::Texter,
    state::{AppState, Handles},
    subscriptions,
};

/// This service's name: its events' source and its exchange.
pub const SERVICE: &str = "notifications";

/// The migrations of `migrations/notifications`, embedded at build time.
#[rustfmt::skip] // as written, whatever the length of the service's name
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/notifications");

pub use service_kit::app::StartupError;

pub struct Application {
    service: app::Service,
    state: AppState,
}

impl Application {
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let db = app::database(&settings.service, &MIGRATOR).await?;
        let mailer = match &settings.smtp {
            Some(smtp) => Some(Mailer::new(smtp).map_err(|e| {
                StartupError::Config(service_kit::config::ConfigError {
                    var: "SMTP_URL".to_owned(),
                    problem: e.to_string(),
                })
            })?),
            None => {
                tracing::warn!("SMTP_URL is not set: mail is refused until it is");
                None
            }
        };
        let texter = if settings.sms.is_empty() {
            None
        } else {
            let texter = Texter::new(settings.sms.clone(), settings.sms_timeout).map_err(|e| {
                StartupError::Config(service_kit::config::ConfigError {
                    var: "SMS_PROVIDERS".to_owned(),
                    problem: format!("cannot make an HTTP client: {e}"),
                })
            })?;
            Some(texter)
        };
        let state = AppState::new(Handles {
            db: db.clone(),
            settings,
            mailer,
            texter,
            templates: Default::default(),
        });
        let settings = &state.settings.service;
        let service = app::Service::bind(SERVICE, &settings.http, routes::router(state.clone()))
            .await?
            .with_events(&db, settings.events.as_ref(), |consumer| {
                consumer
                    .subscribe(subscriptions::accounts(&state.settings))
                    .subscribe(service_kit::privacy::subscription(
                        SERVICE,
                        crate::privacy::Recipients,
                    ))
            })
            .with_task(sender::run(state.clone()));
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
