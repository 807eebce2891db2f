//! `Application`: builds the service from its settings (binding the listener first, so tests
//! can ask for port 0) and runs it until a shutdown signal.

use std::{future::Future, net::SocketAddr, time::Duration};

use service_kit::{app, http, password::PasswordHasher};
use sqlx::PgPool;

use crate::{
    authn::PrincipalCache,
    config::Settings,
    error::AuthError,
    invalidation::AuthEvents,
    keys::{self, KeyRing},
    routes,
    state::{AppState, Handles},
    throttle::LoginThrottle,
};

/// How long start-up waits for Redis before giving up.
const REDIS_WAIT: Duration = Duration::from_secs(30);
/// How often signing keys are re-read, so rotations reach every instance.
const KEY_RELOAD_EVERY: Duration = Duration::from_secs(60);

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/auth");

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    App(#[from] app::StartupError),
    #[error(transparent)]
    Config(#[from] service_kit::config::ConfigError),
    #[error("cannot reach Redis at REDIS_URL: {0}; is it running?")]
    Redis(redis::RedisError),
    #[error("cannot set up password hashing: {0}")]
    Hasher(#[from] service_kit::password::HashError),
    #[error("cannot load signing keys: {0}")]
    Keys(AuthError),
}

pub struct Application {
    service: app::Service,
    state: AppState,
}

impl Application {
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let db = app::database(&settings.service, &MIGRATOR).await?;
        let redis_client = settings.redis.client()?;
        let redis = http::connect_redis(redis_client.clone(), REDIS_WAIT)
            .await
            .map_err(StartupError::Redis)
            .map(service_kit::telemetry::export::TracedRedis)?;
        let keys = KeyRing::load(
            db.clone(),
            &settings.tokens.issuer,
            &settings.tokens.audience,
        )
        .await
        .map_err(StartupError::Keys)?;
        let throttle = LoginThrottle::new(
            redis.clone(),
            &settings.redis_prefix,
            settings.throttle.clone(),
        );
        let state = AppState::new(Handles {
            db: db.clone(),
            events: AuthEvents::new(redis.clone(), &settings.redis_prefix),
            redis,
            hasher: PasswordHasher::owasp()?,
            keys,
            throttle,
            principals: PrincipalCache::default(),
            settings,
        });
        let service = &state.settings.service;
        let service = app::Service::bind("auth", &service.http, routes::router(state.clone()))
            .await?
            // Publishes what other services need to know; answers the users service's
            // export and erasure requests.
            .with_events(&db, service.events.as_ref(), |consumer| {
                consumer.subscribe(service_kit::privacy::subscription(
                    "auth",
                    crate::privacy::Accounts {
                        events: state.events.clone(),
                    },
                ))
            })
            .with_task(keys::reload_periodically(
                state.keys.clone(),
                KEY_RELOAD_EVERY,
            ))
            .with_task(state.events.clone().listen(redis_client));
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

/// Applies the embedded migrations; safe to run from several instances at once.
pub async fn migrate(db: &PgPool) -> Result<(), StartupError> {
    Ok(app::migrate(db, &MIGRATOR).await?)
}
