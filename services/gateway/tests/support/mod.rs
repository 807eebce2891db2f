//! Real upstream servers on random ports, a JWKS server with a real signing key, and the
//! gateway started from a real configuration file.

#![allow(dead_code)]

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use axum::{
    extract::{ws::WebSocketUpgrade, Request, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{any, get},
    Json, Router,
};
use gateway::{config::Config, Running};
use serde_json::{json, Value};
use service_kit::jwt::{claims_now, AccessClaims, Jwks, SigningKey};
use tokio::{net::TcpListener, task::JoinSet};
use uuid::Uuid;

/// Serves `router` on a random loopback port; aborting the task closes every connection
/// at once (as a killed process would).
async fn serve(router: Router) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let router = router.clone();
            connections.spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    use tower::ServiceExt as _;
                    router.clone().oneshot(request)
                });
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(stream), service)
                .await;
            });
        }
    });
    (addr, task)
}

/// One upstream server, named so responses tell which one answered.
pub struct Upstream {
    pub addr: SocketAddr,
    pub name: String,
    pub hits: Arc<AtomicUsize>,
    /// Status `/flaky` and `/health` answer with (200 unless set).
    pub status: Arc<AtomicU16>,
    pub healthy: Arc<AtomicBool>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

#[derive(Clone)]
struct UpstreamState {
    name: String,
    hits: Arc<AtomicUsize>,
    status: Arc<AtomicU16>,
    healthy: Arc<AtomicBool>,
}

fn header_map(headers: &HeaderMap) -> Value {
    let mut map = serde_json::Map::new();
    // A header sent more than once shows as one value joined by ", ", so a test sees
    // duplicates.
    for (k, v) in headers {
        let v = v.to_str().unwrap_or("?");
        let joined = match map.get(k.as_str()).and_then(Value::as_str) {
            Some(before) => format!("{before}, {v}"),
            None => v.to_owned(),
        };
        map.insert(k.as_str().to_owned(), json!(joined));
    }
    Value::Object(map)
}

async fn echo(State(s): State<UpstreamState>, request: Request) -> Json<Value> {
    s.hits.fetch_add(1, Ordering::SeqCst);
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 64 * 1024 * 1024)
        .await
        .unwrap_or_default();
    Json(json!({
        "upstream": s.name,
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": header_map(&parts.headers),
        "body_len": body.len(),
    }))
}

async fn flaky(State(s): State<UpstreamState>) -> Response {
    s.hits.fetch_add(1, Ordering::SeqCst);
    let status = StatusCode::from_u16(s.status.load(Ordering::SeqCst)).unwrap();
    (status, Json(json!({ "upstream": s.name }))).into_response()
}

async fn slow(State(s): State<UpstreamState>) -> Json<Value> {
    s.hits.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(5)).await;
    Json(json!({ "upstream": s.name }))
}

async fn health(State(s): State<UpstreamState>) -> StatusCode {
    if s.healthy.load(Ordering::SeqCst) {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

async fn ws(ws: WebSocketUpgrade, State(s): State<UpstreamState>) -> Response {
    ws.on_upgrade(move |mut socket| async move {
        use axum::extract::ws::Message;
        while let Some(Ok(message)) = socket.recv().await {
            let reply = match message {
                Message::Text(t) => Message::Text(format!("{}: {}", s.name, t.as_str()).into()),
                Message::Binary(b) => Message::Binary(b),
                Message::Close(_) => break,
                _ => continue,
            };
            if socket.send(reply).await.is_err() {
                break;
            }
        }
    })
}

impl Upstream {
    pub async fn start(name: &str) -> Arc<Self> {
        let state = UpstreamState {
            name: name.to_owned(),
            hits: Arc::new(AtomicUsize::new(0)),
            status: Arc::new(AtomicU16::new(200)),
            healthy: Arc::new(AtomicBool::new(true)),
        };
        let router = Router::new()
            .route("/flaky", any(flaky))
            .route("/slow", any(slow))
            .route("/health", get(health))
            .route("/ws", get(ws))
            .fallback(echo)
            .with_state(state.clone());
        let (addr, task) = serve(router).await;
        Arc::new(Self {
            addr,
            name: name.to_owned(),
            hits: state.hits,
            status: state.status,
            healthy: state.healthy,
            task: Mutex::new(Some(task)),
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Stops the server and drops every open connection.
    pub fn kill(&self) {
        if let Some(task) = self.task.lock().unwrap().take() {
            task.abort();
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The auth service's side of edge authentication: a key set served over HTTP and tokens
/// signed with its key.
pub struct Issuer {
    pub addr: SocketAddr,
    keys: Arc<Mutex<Vec<SigningKey>>>,
    pub jwks_hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Issuer {
    pub async fn start() -> Self {
        let (key, _) = SigningKey::generate().unwrap();
        let keys = Arc::new(Mutex::new(vec![key]));
        let hits = Arc::new(AtomicUsize::new(0));
        let (k, h) = (Arc::clone(&keys), Arc::clone(&hits));
        let router = Router::new().route(
            "/.well-known/jwks.json",
            get(move || {
                let (k, h) = (Arc::clone(&k), Arc::clone(&h));
                async move {
                    h.fetch_add(1, Ordering::SeqCst);
                    Json(Jwks {
                        keys: k.lock().unwrap().iter().map(|k| k.jwk()).collect(),
                    })
                }
            }),
        );
        let (addr, task) = serve(router).await;
        Self {
            addr,
            keys,
            jwks_hits: hits,
            task,
        }
    }

    pub fn jwks_url(&self) -> String {
        format!("http://{}/.well-known/jwks.json", self.addr)
    }

    pub fn claims(&self, user: Uuid, roles: &[&str]) -> AccessClaims {
        claims_now(
            "gravity-auth",
            "gravity",
            user,
            Uuid::new_v4(),
            roles.iter().map(|r| r.to_string()).collect(),
            Duration::from_secs(900),
        )
    }

    pub fn sign(&self, claims: &AccessClaims) -> String {
        let keys = self.keys.lock().unwrap();
        keys.last().unwrap().sign(claims).unwrap()
    }

    pub fn token(&self, user: Uuid) -> String {
        self.sign(&self.claims(user, &["user"]))
    }

    /// Adds a new key and signs with it from now on (as `auth rotate-keys` does).
    pub fn rotate(&self) {
        let (key, _) = SigningKey::generate().unwrap();
        self.keys.lock().unwrap().push(key);
    }
}

impl Drop for Issuer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A gateway started from a configuration file in a scratch directory.
pub struct Gateway {
    pub running: Option<Running>,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub path: PathBuf,
    pub http: reqwest::Client,
    /// The public key of the identity key this gateway signs callers with.
    pub identity_public_key: String,
}

/// The `[server]` section every test gateway uses: random loopback ports, fast reloads.
pub const SERVER: &str = r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
connect_timeout = "500ms"
shutdown_grace = "1s"
reload_interval = "100ms"
"#;

impl Gateway {
    pub async fn start(config: &str) -> Self {
        Self::start_with("", config).await
    }

    /// With `server` lines added to the `[server]` section.
    pub async fn start_with(server: &str, config: &str) -> Self {
        Self::launch(server, config, None).await
    }

    /// With `/admin/*` requiring `token` (as `GATEWAY_ADMIN_TOKEN` sets it).
    pub async fn start_with_admin_token(config: &str, token: &str) -> Self {
        Self::launch("", config, Some(token)).await
    }

    async fn launch(server: &str, config: &str, admin_token: Option<&str>) -> Self {
        service_kit::telemetry::init_for_tests();
        let dir = std::env::temp_dir().join(format!("gravity-gateway-test-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("gateway.toml");
        let text = format!("{SERVER}{server}\n{config}");
        std::fs::write(&path, &text).unwrap();
        let mut parsed = Config::parse(&text, "gateway.toml").unwrap();
        parsed.admin_token = admin_token.map(|t| gateway::config::AdminToken::parse(t).unwrap());
        let (signer, _) = service_kit::identity::IdentitySigner::generate().unwrap();
        let identity_public_key = signer.public_key();
        let running = gateway::start(parsed, Some(path.clone()), Some(Arc::new(signer)))
            .await
            .unwrap();
        Self {
            identity_public_key,
            addr: running.addr,
            admin: running.admin_addr,
            running: Some(running),
            path,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .build()
                .unwrap(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.unwrap()
    }

    pub async fn routes(&self) -> Value {
        self.http
            .get(self.admin_url("/admin/routes"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Rewrites the configuration file (the `[server]` section is kept).
    pub fn rewrite(&self, config: &str) {
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, format!("{SERVER}\n{config}")).unwrap();
        std::fs::rename(&tmp, &self.path).unwrap();
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        drop(self.running.take());
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Reads a problem+json body, checking its content type.
pub async fn problem(response: reqwest::Response) -> Value {
    let ct = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    assert!(
        ct.starts_with("application/problem+json"),
        "content type {ct}"
    );
    response.json().await.unwrap()
}

/// Polls `check` until it holds, for up to 10 s.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}
