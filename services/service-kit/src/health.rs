//! `/health/live` (the process answers) and `/health/ready` (its database and Redis answer).

use std::time::Duration;

use axum::{extract::State, http::StatusCode, response::IntoResponse, routing::get, Json, Router};
use serde_json::json;

use crate::problem::Problem;

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The dependencies readiness checks.
#[derive(Clone)]
pub struct Readiness {
    pub db: Option<sqlx::PgPool>,
    pub redis: Option<redis::aio::ConnectionManager>,
}

async fn live() -> impl IntoResponse {
    Json(json!({ "status": "live" }))
}

async fn ready(State(readiness): State<Readiness>) -> axum::response::Response {
    let db = async {
        match &readiness.db {
            None => "skipped".to_owned(),
            Some(pool) => {
                match tokio::time::timeout(CHECK_TIMEOUT, sqlx::query("SELECT 1").execute(pool))
                    .await
                {
                    Ok(Ok(_)) => "ok".to_owned(),
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "readiness: database check failed");
                        "failing".to_owned()
                    }
                    Err(_) => "timed out".to_owned(),
                }
            }
        }
    };
    let redis = async {
        match readiness.redis.clone() {
            None => "skipped".to_owned(),
            Some(mut conn) => {
                let ping = redis::cmd("PING");
                match tokio::time::timeout(CHECK_TIMEOUT, ping.query_async::<String>(&mut conn))
                    .await
                {
                    Ok(Ok(_)) => "ok".to_owned(),
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "readiness: redis check failed");
                        "failing".to_owned()
                    }
                    Err(_) => "timed out".to_owned(),
                }
            }
        }
    };
    let (db, redis) = tokio::join!(db, redis);
    let checks = json!({ "database": db, "redis": redis });
    let healthy = [&db, &redis].iter().all(|s| *s == "ok" || *s == "skipped");
    if healthy {
        (
            StatusCode::OK,
            Json(json!({ "status": "ready", "checks": checks })),
        )
            .into_response()
    } else {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not-ready",
            "Service not ready",
        )
        .with_detail("One or more dependencies are failing; see checks.")
        .with_extension("checks", checks)
        .into_response()
    }
}

pub fn router<S>(readiness: Readiness) -> Router<S> {
    Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .with_state(readiness)
}
