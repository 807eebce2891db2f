//! Route reloading (the file watcher, SIGHUP and `/admin/reload`) and the upstreams'
//! health-check tasks.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::SystemTime,
};

use tokio::task::JoinHandle;

use crate::{
    config::{self, Config, ConfigError},
    proxy::Gateway,
    routes::RouteTable,
    upstream,
};

/// What a reload did.
#[derive(Debug, serde::Serialize)]
pub struct ReloadReport {
    pub routes: usize,
    /// Sections that changed but only take effect after a restart.
    pub needs_restart: Vec<&'static str>,
}

/// Route reloading and health-check tasks: shared by the file watcher, SIGHUP and the admin
/// endpoint.
pub struct Control {
    pub(crate) gateway: Arc<Gateway>,
    path: Option<PathBuf>,
    started_with: Config,
    admin_token: Option<config::AdminToken>,
    health_tasks: Mutex<Vec<JoinHandle<()>>>,
    last_error: Mutex<Option<String>>,
    /// Serialises reloads.
    reloading: tokio::sync::Mutex<Option<(SystemTime, u64)>>,
}

impl Control {
    /// The control of `gateway`, started with `config`, read from `path` if any.
    pub fn new(gateway: Arc<Gateway>, path: Option<PathBuf>, config: Config) -> Self {
        Self {
            gateway,
            path,
            admin_token: config.admin_token.clone(),
            started_with: config,
            health_tasks: Mutex::new(Vec::new()),
            last_error: Mutex::new(None),
            reloading: tokio::sync::Mutex::new(None),
        }
    }

    pub fn config_path(&self) -> Option<&std::path::Path> {
        self.path.as_deref()
    }

    /// The token `/admin/*` requires, if any.
    pub fn admin_token(&self) -> Option<&config::AdminToken> {
        self.admin_token.as_ref()
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    /// Rereads the configuration file and swaps the route table in. On any error the
    /// running table stays as it was.
    pub async fn reload(&self) -> Result<ReloadReport, ConfigError> {
        let _one = self.reloading.lock().await;
        let Some(path) = &self.path else {
            return Ok(ReloadReport {
                routes: self.gateway.table.load().routes().len(),
                needs_restart: Vec::new(),
            });
        };
        let result = Config::load(path);
        let config = match result {
            Ok(c) => c,
            Err(e) => {
                crate::metrics::reload("error");
                tracing::error!(error = %e, "configuration reload failed; keeping the running routes");
                if let Ok(mut last) = self.last_error.lock() {
                    *last = Some(e.to_string());
                }
                return Err(e);
            }
        };
        Ok(self.apply(&config))
    }

    fn apply(&self, config: &Config) -> ReloadReport {
        let mut needs_restart = Vec::new();
        if config.server != self.started_with.server {
            needs_restart.push("server");
        }
        if config.auth != self.started_with.auth {
            needs_restart.push("auth");
        }
        if config.rate_limit != self.started_with.rate_limit {
            needs_restart.push("rate_limit");
        }
        if !needs_restart.is_empty() {
            tracing::warn!(sections = ?needs_restart,
                "these sections changed and take effect only after a restart");
        }
        let previous = self.gateway.table.load_full();
        let table = RouteTable::build(&config.routes, Some(&previous));
        self.gateway.table.store(Arc::new(table));
        self.restart_health_checks();
        if let Ok(mut last) = self.last_error.lock() {
            *last = None;
        }
        crate::metrics::reload("ok");
        tracing::info!(routes = config.routes.len(), "routes reloaded");
        ReloadReport {
            routes: config.routes.len(),
            needs_restart,
        }
    }

    pub(crate) fn restart_health_checks(&self) {
        let Ok(mut tasks) = self.health_tasks.lock() else {
            return;
        };
        for task in tasks.drain(..) {
            task.abort();
        }
        let table = self.gateway.table.load_full();
        for route in table.routes() {
            for upstream in &route.pool.upstreams {
                crate::metrics::upstream_healthy(&upstream.label, upstream.is_healthy());
                if let Some(check) = &route.config.health_check {
                    tasks.push(tokio::spawn(upstream::health_loop(
                        Arc::clone(upstream),
                        self.gateway.client.clone(),
                        check.clone(),
                    )));
                }
            }
        }
    }

    pub(crate) fn stop_health_checks(&self) {
        if let Ok(mut tasks) = self.health_tasks.lock() {
            for task in tasks.drain(..) {
                task.abort();
            }
        }
    }

    /// Polls the file's modification time and length; reloads when either changes.
    pub(crate) async fn watch(self: Arc<Self>, interval: std::time::Duration) {
        let Some(path) = self.path.clone() else {
            return;
        };
        let stamp = |p: &std::path::Path| {
            std::fs::metadata(p)
                .ok()
                .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()))
        };
        *self.reloading.lock().await = stamp(&path);
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = stamp(&path);
            let changed = {
                let mut seen = self.reloading.lock().await;
                let changed = now.is_some() && now != *seen;
                if changed {
                    *seen = now;
                }
                changed
            };
            if changed {
                let _ = self.reload().await;
            }
        }
    }
}
