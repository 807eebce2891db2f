//! `Application`: builds the service from its settings (binding the listener first, so tests
//! can ask for port 0) and runs it until a shutdown signal.

use std::{future::Future, net::SocketAddr, time::Duration};

use service_kit::{http, password::PasswordHasher};
use sqlx::PgPool;

use crate::{
    authn::PrincipalCache,
    config::Settings,
    error::AuthError,
    events::AuthEvents,
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
    Config(#[from] service_kit::config::ConfigError),
    #[error(
        "cannot bind {addr}: {source}; is another process using the port? set PORT to another one"
    )]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error(
        "cannot reach PostgreSQL at DATABASE_URL: {0}; is it running, and does the database exist?"
    )]
    Database(sqlx::Error),
    #[error("cannot apply migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot reach Redis at REDIS_URL: {0}; is it running?")]
    Redis(redis::RedisError),
    #[error("cannot set up password hashing: {0}")]
    Hasher(#[from] service_kit::password::HashError),
    #[error("cannot load signing keys: {0}")]
    Keys(AuthError),
}

pub struct Application {
    listener: tokio::net::TcpListener,
    router: axum::Router,
    http: service_kit::config::HttpSettings,
    state: AppState,
    redis_client: redis::Client,
}

impl Application {
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let db = settings.database.pool()?;
        if settings.migrate_on_start {
            migrate(&db).await?;
        } else {
            sqlx::query("SELECT 1")
                .execute(&db)
                .await
                .map_err(StartupError::Database)?;
        }
        let redis_client = settings.redis.client()?;
        let redis = http::connect_redis(redis_client.clone(), REDIS_WAIT)
            .await
            .map_err(StartupError::Redis)?;
        let keys = KeyRing::load(
            db.clone(),
            &settings.tokens.issuer,
            &settings.tokens.audience,
        )
        .await
        .map_err(StartupError::Keys)?;
        let redis_for_events = redis.clone();
        let throttle = LoginThrottle::new(
            redis.clone(),
            &settings.redis_prefix,
            settings.throttle.clone(),
        );
        let state = AppState::new(Handles {
            db,
            redis,
            hasher: PasswordHasher::owasp()?,
            keys,
            throttle,
            events: AuthEvents::new(redis_for_events, &settings.redis_prefix),
            principals: PrincipalCache::default(),
            settings,
        });
        let http_settings = &state.settings.http;
        let addr = format!("{}:{}", http_settings.host, http_settings.port);
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .map_err(|source| StartupError::Bind { addr, source })?;
        let router = http::with_standard_layers(routes::router(state.clone()), http_settings);
        Ok(Self {
            listener,
            router,
            http: http_settings.clone(),
            state,
            redis_client,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
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
        let addr = self.listener.local_addr()?;
        tracing::info!(%addr, "auth service listening");
        let reloader = tokio::spawn(keys::reload_periodically(
            self.state.keys.clone(),
            KEY_RELOAD_EVERY,
        ));
        let listener = tokio::spawn(self.state.events.clone().listen(self.redis_client));
        let served = http::serve(self.listener, self.router, &self.http, shutdown).await;
        reloader.abort();
        listener.abort();
        served
    }
}

/// Applies the embedded migrations; safe to run from several instances at once (sqlx holds
/// an advisory lock while migrating).
pub async fn migrate(db: &PgPool) -> Result<(), StartupError> {
    sqlx::query("SELECT 1")
        .execute(db)
        .await
        .map_err(StartupError::Database)?;
    MIGRATOR.run(db).await?;
    Ok(())
}
