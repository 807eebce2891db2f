//! The gateway's own readiness and metrics answers: on the admin listener, and on the main
//! one where `health_path` and `metrics_path` are configured.

use axum::{
    response::{IntoResponse as _, Response},
    Json,
};
use http::StatusCode;
use service_kit::Problem;

/// Ready once the auth service's keys are loaded (`ready`); a problem+json 503 until then.
pub fn readiness(ready: bool) -> Response {
    if !ready {
        return Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Service unavailable",
        )
        .with_detail("The auth service's keys are not loaded yet.")
        .into_response();
    }
    Json(serde_json::json!({ "status": "ready" })).into_response()
}

/// The Prometheus text page of every series the gateway records.
pub fn metrics_page() -> Response {
    match service_kit::metrics::handle() {
        Some(h) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            h.render(),
        )
            .into_response(),
        None => Problem::internal("no metrics recorder").into_response(),
    }
}
