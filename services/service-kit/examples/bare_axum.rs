//! The baseline for `scripts/bench-auth.sh`: a bare axum server whose `GET /me` answers a
//! constant, so the benchmark can tell what the auth service's `GET /api/v1/me` costs beyond
//! HTTP itself (middleware, token verification, the database and Redis round trips).
//!
//! Listens on `BIND` (default `127.0.0.1:8790`) on tokio's multi-threaded runtime, one worker
//! per core, as the auth service does.

use std::process::ExitCode;

use axum::{http::header, routing::get, Router};

/// Shaped and sized like the auth service's `UserView`, so both servers send about as many
/// bytes per response.
const ME: &str = r#"{"id":"01936b2e-7c4a-7d3e-9f1a-2b3c4d5e6f70","email":"bench@example.com","full_name":null,"role":"user","permissions":[],"is_active":true,"created_at":"2025-01-01T00:00:00.000000Z","updated_at":"2025-01-01T00:00:00.000000Z"}"#;

#[tokio::main]
async fn main() -> ExitCode {
    let addr = std::env::var("BIND").unwrap_or_else(|_| "127.0.0.1:8790".to_owned());
    let listener = match tokio::net::TcpListener::bind(&addr).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("error: cannot bind {addr}: {e}; set BIND to a free address");
            return ExitCode::FAILURE;
        }
    };
    let mut app = Router::new().route(
        "/me",
        get(|| async { ([(header::CONTENT_TYPE, "application/json")], ME) }),
    );
    // With STANDARD_LAYERS=1 the same handler sits behind the stack every service runs
    // (request id, trace, timeout, panic catcher, body limit, metrics), which separates what
    // that stack costs from what a service's own work costs.
    // The service's log lines too (with ACCESS_LOG=true, one per request, with its span).
    let mut _logs = None;
    if std::env::var("STANDARD_LAYERS").is_ok_and(|v| v == "1") {
        _logs = Some(service_kit::telemetry::init("info"));
        let env = service_kit::config::Env::from_process();
        let settings = match service_kit::config::HttpSettings::from_env(&env) {
            Ok(settings) => settings,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        app = service_kit::http::with_standard_layers(app, &settings);
    }
    let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    match axum::serve(listener, app).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: serving HTTP on {addr}: {e}");
            ExitCode::FAILURE
        }
    }
}
