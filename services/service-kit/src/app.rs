//! What every service's start-up does, once: read the shared settings, reach (and migrate)
//! its database, bind its port, put the standard layers around its router, relay its
//! events and run its consumers beside HTTP, and stop all of it on a signal.
//!
//! A service's `startup.rs` is then its own state and router, and a few lines:
//!
//! ```text
//! let db = app::database(&settings.service, &MIGRATOR).await?;
//! let state = AppState::new(Handles { db: db.clone(), settings });
//! let service = app::Service::bind("orders", &state.settings.service.http, routes::router(state.clone()))
//!     .await?
//!     .with_events(&db, state.settings.service.events.as_ref(), |consumer| {
//!         consumer.subscribe(Subscription::new("payments").on(payments::settled))
//!     });
//! service.run_until(http::shutdown_signal()).await
//! ```

use std::{future::Future, net::SocketAddr, pin::Pin};

use sqlx::{migrate::Migrator, PgPool};

use crate::{
    config::{ConfigError, DatabaseSettings, Env, EventSettings, HttpSettings},
    events::{Consumer, ConsumerSettings, Relay, RelaySettings},
    http,
};

/// The settings every service reads the same way.
#[derive(Clone, Debug)]
pub struct ServiceSettings {
    pub http: HttpSettings,
    pub database: DatabaseSettings,
    /// Apply pending migrations before serving (Gravity applies them itself and sets false).
    pub migrate_on_start: bool,
    /// The broker, when the service has one (`AMQP_URL`).
    pub events: Option<EventSettings>,
}

impl ServiceSettings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            http: HttpSettings::from_env(env)?,
            database: DatabaseSettings::from_env(env)?,
            migrate_on_start: env.flag("MIGRATE_ON_START", true)?,
            events: EventSettings::from_env(env)?,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
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
}

/// The service's database pool, reached (and migrated, when `migrate_on_start`) before the
/// service binds its port.
pub async fn database(
    settings: &ServiceSettings,
    migrator: &'static Migrator,
) -> Result<PgPool, StartupError> {
    let db = settings.database.pool()?;
    crate::metrics::watch_pool(&db);
    if settings.migrate_on_start {
        migrate(&db, migrator).await?;
    } else {
        sqlx::query("SELECT 1")
            .execute(&db)
            .await
            .map_err(StartupError::Database)?;
    }
    Ok(db)
}

/// Applies the embedded migrations; safe from several instances at once (sqlx holds an
/// advisory lock while migrating).
pub async fn migrate(db: &PgPool, migrator: &'static Migrator) -> Result<(), StartupError> {
    sqlx::query("SELECT 1")
        .execute(db)
        .await
        .map_err(StartupError::Database)?;
    migrator.run(db).await?;
    Ok(())
}

type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A bound, ready service: HTTP behind the standard layers, and the tasks that run beside it.
pub struct Service {
    name: &'static str,
    listener: tokio::net::TcpListener,
    router: axum::Router,
    http: HttpSettings,
    tasks: Vec<Task>,
    /// Fires once the consumer's queues are bound (or binding gave up for now).
    bound: Option<tokio::sync::oneshot::Receiver<()>>,
}

/// How long start-up waits for the broker to bind the service's queues before it serves
/// anyway (its consumers keep trying).
const BIND_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

impl Service {
    /// Binds the port first (so tests can ask for port 0) and wraps `router` in
    /// [`http::with_standard_layers`].
    pub async fn bind(
        name: &'static str,
        settings: &HttpSettings,
        router: axum::Router,
    ) -> Result<Self, StartupError> {
        let addr = format!("{}:{}", settings.host, settings.port);
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .map_err(|source| StartupError::Bind { addr, source })?;
        Ok(Self {
            name,
            listener,
            router: http::with_standard_layers(router, settings),
            http: settings.clone(),
            tasks: Vec::new(),
            bound: None,
        })
    }

    /// Relays the service's outbox and runs the consumer `subscribe` builds (return it
    /// unchanged for a service that only publishes). Without a broker the events wait in
    /// the outbox, and nothing is consumed.
    pub fn with_events(
        mut self,
        db: &PgPool,
        events: Option<&EventSettings>,
        subscribe: impl FnOnce(Consumer) -> Consumer,
    ) -> Self {
        let Some(events) = events else {
            tracing::warn!(
                "AMQP_URL is not set: events stay in the outbox until the service runs with a broker"
            );
            return self;
        };
        let relay = Relay::new(
            db.clone(),
            RelaySettings::new(events.amqp_url.clone(), events.exchange.clone()),
        );
        self.tasks.push(Box::pin(relay.run(std::future::pending())));
        let mut settings = ConsumerSettings::new(events.amqp_url.clone(), events.exchange.clone());
        settings.exchanges.insert(
            crate::events::EVERY_EVENT_EXCHANGE.to_owned(),
            events.every_event_exchange.clone(),
        );
        // Its own events come from its own exchange (named after it under `gravity up`; a
        // test's own otherwise).
        settings
            .exchanges
            .insert(self.name.to_owned(), events.exchange.clone());
        let consumer = subscribe(Consumer::new(db.clone(), settings));
        if consumer.has_subscriptions() {
            // Queues bound before HTTP is served: an event published before this service's
            // queue is bound reaches none of its queues and is lost to it, so the service is
            // not ready (and `gravity up` not done) until they are.
            let (declared, bound) = tokio::sync::oneshot::channel();
            self.bound = Some(bound);
            self.tasks.push(Box::pin(async move {
                match tokio::time::timeout(BIND_WAIT, consumer.declare()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e,
                        "event queues not bound yet; serving anyway, the consumers keep trying"),
                    Err(_) => tracing::warn!(
                        "the broker did not bind the event queues within {} s; serving anyway, \
                         the consumers keep trying",
                        BIND_WAIT.as_secs()
                    ),
                }
                let _ = declared.send(());
                consumer.run(std::future::pending()).await;
            }));
        }
        self
    }

    /// Runs `task` beside HTTP (a cache reloader, say), stopped with the service.
    pub fn with_task(mut self, task: impl Future<Output = ()> + Send + 'static) -> Self {
        self.tasks.push(Box::pin(task));
        self
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes and in-flight requests are done; the tasks beside
    /// it are stopped then (the relay and consumers are safe to stop at any point: what they
    /// had not finished is done again).
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let addr = self.listener.local_addr()?;
        let tasks: Vec<_> = self.tasks.into_iter().map(tokio::spawn).collect();
        if let Some(bound) = self.bound {
            // Connections wait in the listener's backlog meanwhile; health checks see the
            // service not ready yet.
            let _ = bound.await;
        }
        tracing::info!(%addr, "{} service listening", self.name);
        let served = http::serve(self.listener, self.router, &self.http, shutdown).await;
        for task in tasks {
            task.abort();
        }
        served
    }
}
