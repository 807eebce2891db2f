//! The admin listener: routes with their upstreams' health and breaker states, reloads,
//! Prometheus metrics and the gateway's own health probes. Bind it to a private address.

use std::{sync::Arc, time::Instant};

use axum::{
    extract::{Request, State},
    http::{header, HeaderValue, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use serde::Serialize;
use service_kit::Problem;

use crate::{
    config::{Access, Balance},
    control::Control,
    probes,
    upstream::UpstreamView,
};

#[derive(Serialize)]
struct RouteView {
    name: String,
    prefix: String,
    host: Option<String>,
    strip_prefix: bool,
    access: Access,
    public_paths: Vec<String>,
    balance: Balance,
    timeout_ms: u64,
    retries: u32,
    upstreams: Vec<UpstreamView>,
}

#[derive(Serialize)]
struct RoutesView {
    config_path: Option<String>,
    /// The last reload's error, while the file on disk is broken.
    reload_error: Option<String>,
    keys_loaded: Option<bool>,
    rate_limit_backend: &'static str,
    routes: Vec<RouteView>,
}

async fn routes(State(control): State<Arc<Control>>) -> Json<RoutesView> {
    let now = Instant::now();
    let table = control.gateway.table.load_full();
    let routes = table
        .routes()
        .iter()
        .map(|r| RouteView {
            name: r.config.name.to_string(),
            prefix: r.config.prefix.to_string(),
            host: r.config.host.clone(),
            strip_prefix: r.config.strip_prefix,
            access: r.config.access,
            public_paths: r.config.public_paths.clone(),
            balance: r.config.balance,
            timeout_ms: r.config.timeout.as_millis() as u64,
            retries: r.config.retries,
            upstreams: r.pool.upstreams.iter().map(|u| u.view(now)).collect(),
        })
        .collect();
    Json(RoutesView {
        config_path: control.config_path().map(|p| p.display().to_string()),
        reload_error: control.last_error(),
        keys_loaded: control.gateway.keys.as_ref().map(|k| k.has_keys()),
        rate_limit_backend: control.gateway.limiter.backend(),
        routes,
    })
}

async fn reload(State(control): State<Arc<Control>>) -> Response {
    match control.reload().await {
        Ok(report) => Json(report).into_response(),
        Err(e) => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-config",
            "Configuration not reloaded",
        )
        .with_detail(format!("{e}; the running routes are unchanged."))
        .into_response(),
    }
}

async fn live() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "live" }))
}

/// Ready once the auth service's keys are loaded (when any route checks tokens).
async fn ready(State(control): State<Arc<Control>>) -> Response {
    probes::readiness(control.gateway.keys.as_ref().is_none_or(|k| k.has_keys()))
}

/// With an admin token configured, `/admin/*` answers only requests that bear it (the
/// listener may then be published, as `gravity up` does for the dashboard). Health probes and
/// metrics stay open.
async fn require_token(
    State(control): State<Arc<Control>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(token) = control.admin_token() else {
        return next.run(request).await;
    };
    match crate::headers::bearer(request.headers()) {
        Some(Ok(presented)) if token.matches(presented) => next.run(request).await,
        _ => Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "Authentication required",
        )
        .with_detail("The admin endpoints need the gateway's admin token as a bearer token.")
        .with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))
        .into_response(),
    }
}

pub fn router(control: Arc<Control>) -> Router {
    let admin = Router::new()
        .route("/admin/routes", get(routes))
        .route("/admin/reload", post(reload))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&control),
            require_token,
        ));
    Router::new()
        .merge(admin)
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .with_state(control)
        .merge(service_kit::metrics::router())
}
