//! Gravity's API gateway: the platform's one public entry point.
//!
//! Codemap, in layers: a module uses only those of the layers below it, so the request path
//! can be read (and changed) from the bottom up without a cycle.
//!
//! 1. Leaves: `config` (gateway.toml, checked types), `headers` (what is stripped, added and
//!    read: the bearer token, identity, forwarding), `metrics` (the Prometheus series),
//!    `coarse_timer` (each serving thread's clock and header-read deadlines), `pool` (idle
//!    upstream connections per serving thread, and dialling).
//! 2. Upstream I/O: `exchange` (requests with no body or one in memory, sent and answered in
//!    the request's own task), `connections` (hyper's connections, for streamed bodies and
//!    upgrades); `upstream` (health, outlier ejection, breaker, balancing), `keys` (JWKS and
//!    token verification), `ratelimit` (GCRA, local and Redis).
//! 3. `routes` (the table, rebuilt on reload with upstream state carried over), `refusal`
//!    (every answer of the gateway's own, as problem+json), `probes` (readiness, metrics).
//! 4. `proxy`: the request path in stages: route, `admit` (target, `authenticate`, rate
//!    limits), `read_body`, send (pick an upstream, deadline, retries), `relay`.
//! 5. `control` (reloads, health-check tasks), then `admin` (the operator's view), then this
//!    module, which starts it all.
//!
//! **Boundary:** the gateway knows services only as upstream URLs from its configuration; it
//! never reads a service's database and never issues tokens.

pub mod admin;
pub mod coarse_timer;
pub mod control;
/// The configuration file's schema, shared with the platform manager.
pub use gateway_config as config;
pub mod connections;
pub mod exchange;
pub mod headers;
pub mod keys;
pub mod metrics;
pub mod pool;
pub mod probes;
pub mod proxy;
pub mod ratelimit;
pub mod refusal;
pub mod routes;
pub mod upstream;

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

pub use crate::control::{Control, ReloadReport};
use crate::{config::Config, keys::KeySet, proxy::Gateway, ratelimit::Limiter, routes::RouteTable};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}; is another process using the port?")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot build the HTTP client for the auth service's keys: {0}")]
    Http(#[from] reqwest::Error),
}

/// A running gateway: its addresses, and a handle to stop it.
pub struct Running {
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub gateway: Arc<Gateway>,
    pub control: Arc<Control>,
    stop: Option<oneshot::Sender<()>>,
    /// Tells the serving threads to drain and stop.
    workers_stop: Arc<tokio::sync::watch::Sender<bool>>,
    task: JoinHandle<std::io::Result<()>>,
    background: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stops accepting, drains in-flight requests (up to the grace period) and returns.
    pub async fn stop(mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let result = (&mut self.task).await.unwrap_or(Ok(()));
        self.shutdown_background();
        result
    }

    /// Serves until the process is asked to stop (SIGTERM or Ctrl-C).
    pub async fn wait(mut self) -> std::io::Result<()> {
        let result = (&mut self.task).await.unwrap_or(Ok(()));
        self.shutdown_background();
        result
    }

    fn shutdown_background(&mut self) {
        for task in self.background.drain(..) {
            task.abort();
        }
        self.control.stop_health_checks();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.workers_stop.send(true);
        self.task.abort();
        self.shutdown_background();
    }
}

/// Starts the gateway: binds both listeners, loads keys and Redis in the background, starts
/// health checks and the file watcher. `path` is the file routes are reloaded from.
pub async fn start(
    config: Config,
    path: Option<PathBuf>,
    identity: Option<Arc<service_kit::identity::IdentitySigner>>,
) -> Result<Running, StartError> {
    let workers = config.server.worker_count();
    let (sockets, addr) =
        bind_workers(config.server.listen, workers).map_err(|source| StartError::Bind {
            addr: config.server.listen,
            source,
        })?;
    let admin_listener = TcpListener::bind(config.server.admin_listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.server.admin_listen,
            source,
        })?;
    let admin_addr = admin_listener
        .local_addr()
        .map_err(|source| StartError::Bind {
            addr: config.server.admin_listen,
            source,
        })?;
    // The recorder must exist before the first metric handle is taken.
    let _ = service_kit::metrics::handle();

    if identity.is_none() && config.auth.is_some() {
        tracing::warn!(
            "no GATEWAY_IDENTITY_KEY: upstreams get the verified caller without a signed assertion, and services refuse such callers"
        );
    }
    let keys = config
        .auth
        .clone()
        .map(|auth| KeySet::new(auth, identity))
        .transpose()?;
    let limiter = Limiter::new(&config.rate_limit);
    let table = RouteTable::build(&config.routes, None);
    let gateway = Arc::new(Gateway::new(
        table,
        config.server.clone(),
        keys.clone(),
        Arc::clone(&limiter),
    ));
    let control = Arc::new(Control::new(Arc::clone(&gateway), path, config.clone()));
    control.restart_health_checks();

    let mut background = Vec::new();
    if let Some(keys) = keys {
        background.push(tokio::spawn(keys.maintain()));
    }
    background.push(tokio::spawn(
        Arc::clone(&limiter).maintain(config.rate_limit.redis_url.clone()),
    ));
    background.push(tokio::spawn(
        Arc::clone(&control).watch(config.server.reload_interval),
    ));
    background.push(tokio::spawn(sighup(Arc::clone(&control))));

    let admin = admin::router(Arc::clone(&control));
    let (admin_stop, admin_stopped) = oneshot::channel::<()>();
    let admin_settings = (
        config.server.header_read_timeout,
        config.server.shutdown_grace,
    );
    background.push(tokio::spawn(async move {
        let shutdown = async {
            let _ = admin_stopped.await;
        };
        let handler = move |request: hyper::Request<hyper::body::Incoming>, _peer: SocketAddr| {
            use tower::ServiceExt as _;
            admin.clone().oneshot(request)
        };
        if let Err(e) = service_kit::http::serve_with(
            admin_listener,
            admin_settings.0,
            admin_settings.1,
            hyper_util::rt::TokioTimer::new(),
            shutdown,
            handler,
        )
        .await
        {
            tracing::error!(error = %e, "admin listener failed");
        }
    }));

    let (stop, stopped) = oneshot::channel::<()>();
    let (workers_stop, workers_stopped) = tokio::sync::watch::channel(false);
    let workers_stop = Arc::new(workers_stop);
    let mut finished = Vec::with_capacity(sockets.len());
    for (n, socket) in sockets.into_iter().enumerate() {
        let (done, done_rx) = oneshot::channel();
        finished.push(done_rx);
        spawn_worker(
            n,
            socket,
            Arc::clone(&gateway),
            workers_stopped.clone(),
            done,
        )
        .map_err(|source| StartError::Bind { addr, source })?;
    }
    let stop_workers = Arc::clone(&workers_stop);
    let task = tokio::spawn(async move {
        tokio::select! {
            _ = stopped => {},
            () = service_kit::http::shutdown_signal() => {},
        }
        let _ = admin_stop.send(());
        let _ = stop_workers.send(true);
        let mut result = Ok(());
        for done in finished {
            if let Ok(Err(e)) = done.await {
                result = Err(e);
            }
        }
        result
    });
    tracing::info!(%addr, %admin_addr, routes = config.routes.len(),
        workers, "gateway listening");
    Ok(Running {
        addr,
        admin_addr,
        gateway,
        control,
        stop: Some(stop),
        workers_stop,
        task,
        background,
    })
}

/// One listening socket per serving thread, all on one port (`SO_REUSEPORT`), so the kernel
/// spreads new connections evenly over the threads, as with nginx's `reuseport`. (Threads
/// sharing one socket race for each connection, and one that is awake tends to take them
/// all while the others idle.) Port 0 picks one free port for the whole group.
fn bind_workers(
    listen: SocketAddr,
    workers: usize,
) -> std::io::Result<(Vec<std::net::TcpListener>, SocketAddr)> {
    // SO_REUSEPORT would let this group join a port another process of the same user
    // listens on with it too; a plain bind first keeps "port in use" an error.
    if listen.port() != 0 {
        drop(socket_for(listen, false)?);
    }
    let first = listen_reusable(listen)?;
    let addr = first.local_addr()?;
    let mut listeners = Vec::with_capacity(workers.max(1));
    for _ in 1..workers.max(1) {
        // Elsewhere SO_REUSEPORT does not spread connections (or does not exist): the
        // threads share the one socket.
        #[cfg(target_os = "linux")]
        listeners.push(listen_reusable(addr)?);
        #[cfg(not(target_os = "linux"))]
        listeners.push(first.try_clone()?);
    }
    listeners.push(first);
    Ok((listeners, addr))
}

fn socket_for(addr: SocketAddr, reuse_port: bool) -> std::io::Result<tokio::net::TcpSocket> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    #[cfg(target_os = "linux")]
    if reuse_port {
        socket.set_reuseport(true)?;
    }
    #[cfg(not(target_os = "linux"))]
    let _ = reuse_port;
    socket.bind(addr)?;
    Ok(socket)
}

fn listen_reusable(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    socket_for(addr, true)?.listen(4096)?.into_std()
}

/// Sweeps the calling thread's pools of idle upstream connections (hyper's and the lean
/// exchanges') every `pool::IDLE_TIMEOUT / 2`; spawned once per serving thread's runtime.
async fn sweep_forever() {
    let mut tick = tokio::time::interval(pool::IDLE_TIMEOUT / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = std::time::Instant::now();
        connections::sweep(now);
        exchange::sweep(now);
    }
}

/// A serving thread: its own single-threaded runtime, listener and upstream connections
/// (`connections`), so the tasks of one request never hop between threads. Reports its result on `done`.
fn spawn_worker(
    n: usize,
    socket: std::net::TcpListener,
    gateway: Arc<Gateway>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
    done: oneshot::Sender<std::io::Result<()>>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name(format!("gateway-worker-{n}"))
        .spawn(move || {
            let serve = || -> std::io::Result<()> {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                runtime.block_on(async move {
                    let listener = TcpListener::from_std(socket)?;
                    tokio::spawn(sweep_forever());
                    tokio::spawn(coarse_timer::tick_forever());
                    let server = gateway.server.clone();
                    let shutdown = async move {
                        let _ = stopped.wait_for(|stop| *stop).await;
                    };
                    let handler = move |request: hyper::Request<hyper::body::Incoming>,
                                        peer: SocketAddr| {
                        let gateway = Arc::clone(&gateway);
                        async move {
                            Ok::<_, std::convert::Infallible>(gateway.handle(request, peer).await)
                        }
                    };
                    service_kit::http::serve_with(
                        listener,
                        server.header_read_timeout,
                        server.shutdown_grace,
                        coarse_timer::CoarseTimer,
                        shutdown,
                        handler,
                    )
                    .await
                })
            };
            let result = serve();
            if let Err(e) = &result {
                tracing::error!(worker = n, error = %e, "a serving thread stopped");
            }
            let _ = done.send(result);
        })
        .map(|_| ())
}

/// SIGHUP reloads the routes, as with nginx.
async fn sighup(control: Arc<Control>) {
    #[cfg(unix)]
    {
        let Ok(mut signal) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        while signal.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading routes");
            let _ = control.reload().await;
        }
    }
    #[cfg(not(unix))]
    std::future::pending::<()>().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    // Inside a runtime: the sockets pass through tokio's listener on their way to the threads.
    #[tokio::test]
    async fn serving_threads_share_one_port_and_a_taken_port_is_refused() {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let (listeners, addr) = bind_workers(any, 3).unwrap();
        assert_eq!(listeners.len(), 3);
        assert_ne!(addr.port(), 0);
        for l in &listeners {
            assert_eq!(l.local_addr().unwrap(), addr);
        }

        // Taken by someone else, with or without SO_REUSEPORT: an error, not a shared port.
        let plain = std::net::TcpListener::bind(any).unwrap();
        let taken = plain.local_addr().unwrap();
        assert!(bind_workers(taken, 2).is_err());
        assert!(
            bind_workers(addr, 2).is_err(),
            "joined another group's port"
        );

        // Free again once the holders are gone.
        drop(listeners);
        let (again, _) = bind_workers(addr, 2).unwrap();
        assert_eq!(again.len(), 2);
    }
}

/// The codemap's layers, checked: a module names only modules of lower layers.
#[cfg(test)]
mod layering {
    use std::collections::BTreeSet;

    /// Every module but `config` (another crate), by layer, with its source.
    const LAYERS: &[&[(&str, &str)]] = &[
        &[
            ("headers", include_str!("headers.rs")),
            ("metrics", include_str!("metrics.rs")),
            ("coarse_timer", include_str!("coarse_timer.rs")),
            ("pool", include_str!("pool.rs")),
        ],
        &[
            ("exchange", include_str!("exchange.rs")),
            ("connections", include_str!("connections.rs")),
            ("upstream", include_str!("upstream.rs")),
            ("keys", include_str!("keys.rs")),
            ("ratelimit", include_str!("ratelimit.rs")),
        ],
        &[
            ("routes", include_str!("routes.rs")),
            ("refusal", include_str!("refusal.rs")),
            ("probes", include_str!("probes.rs")),
        ],
        &[("proxy", include_str!("proxy.rs"))],
        &[("control", include_str!("control.rs"))],
        &[("admin", include_str!("admin.rs"))],
    ];

    /// The modules of this crate that `source` names through `crate::`, in a path or in a
    /// `use crate::{...}` group (first segments only).
    fn named(source: &str) -> BTreeSet<String> {
        let ident = |text: &str| -> String {
            text.trim_start()
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect()
        };
        let mut found = BTreeSet::new();
        for (at, _) in source.match_indices("crate::") {
            let rest = &source[at + "crate::".len()..];
            let Some(group) = rest.strip_prefix('{') else {
                found.insert(ident(rest));
                continue;
            };
            // The group up to its closing brace, split at its own commas.
            let mut depth = 0;
            let mut start = 0;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth > 0 => depth -= 1,
                    '}' | ',' if depth == 0 => {
                        found.insert(ident(&group[start..i]));
                        start = i + 1;
                        if c == '}' {
                            break;
                        }
                    }
                    _ => {}
                }
            }
        }
        found.remove("");
        found
    }

    #[test]
    fn the_parser_finds_paths_and_groups() {
        let source = "use crate::{\n    config::{A, B},\n    connections, exchange,\n    upstream::{self, Attempt},\n};\nlet x = crate::metrics::f(); use crate::{pool, keys};";
        let expected: BTreeSet<String> = [
            "config",
            "connections",
            "exchange",
            "upstream",
            "metrics",
            "pool",
            "keys",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        assert_eq!(named(source), expected);
    }

    #[test]
    fn every_module_uses_only_lower_layers() {
        let layer_of = |name: &str| {
            LAYERS
                .iter()
                .position(|layer| layer.iter().any(|(n, _)| *n == name))
        };
        for (layer, modules) in LAYERS.iter().enumerate() {
            for (name, source) in *modules {
                for used in named(source) {
                    if used == "config" || used == *name {
                        continue;
                    }
                    match layer_of(&used) {
                        Some(below) if below < layer => {}
                        Some(other) => panic!(
                            "`{name}` (layer {layer}) uses `{used}` (layer {other}): only lower layers"
                        ),
                        None => panic!("`{name}` uses `crate::{used}`, which is in no layer"),
                    }
                }
            }
        }
    }
}
