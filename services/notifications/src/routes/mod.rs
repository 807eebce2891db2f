//! The Notifications service's HTTP surface, and the OpenAPI 3.1 document generated from it.

pub mod notifications;
pub mod preferences;
pub mod templates;

use axum::{http::header, response::IntoResponse, routing::get, Router};
use service_kit::openapi::{GatewayIdentity, StandardResponses};
use utoipa::{Modify as _, OpenApi};
use utoipa_axum::{router::OpenApiRouter, routes};
use utoipa_scalar::{Scalar, Servable as _};

use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Gravity Notifications service",
        description = "Mail from versioned templates, sent from the API (idempotently) and on \
            the platform's events, with each delivery tracked, preferences honoured and \
            one-click unsubscribe. Called through the gateway, which verifies the caller's \
            access token (the unsubscribe links need none)."
    ),
    modifiers(&GatewayIdentity),
    tags(
        (name = "notifications", description = "Send messages and follow their delivery"),
        (name = "templates", description = "Versioned templates and previews"),
        (name = "preferences", description = "How recipients want to be reached, and unsubscribing")
    )
)]
struct ApiDoc;

/// The API routes with their OpenAPI description.
pub fn api() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, mut openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(notifications::send, notifications::list))
        .routes(routes!(notifications::get))
        .routes(routes!(templates::list))
        .routes(routes!(templates::put))
        .routes(routes!(templates::preview))
        .routes(routes!(preferences::get, preferences::put))
        .routes(routes!(
            preferences::unsubscribe,
            preferences::unsubscribe_page
        ))
        .split_for_parts();
    // The answers service-kit gives on the handlers' behalf (bad bodies, no caller, ...).
    StandardResponses.modify(&mut openapi);
    (router, openapi)
}

/// The whole application: API, `/openapi.json`, `/docs`, health and metrics.
pub fn router(state: AppState) -> Router {
    let (api, openapi) = api();
    let document = openapi.to_pretty_json().unwrap_or_else(|_| "{}".to_owned());
    let readiness = service_kit::health::Readiness {
        db: Some(state.db.clone()),
        redis: None,
    };
    api.with_state(state)
        .route(
            "/openapi.json",
            get(move || {
                let document = document.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], document).into_response() }
            }),
        )
        .merge(Scalar::with_url("/docs", openapi))
        .merge(service_kit::health::router(readiness))
        .merge(service_kit::metrics::router())
        .fallback(|| async { service_kit::Problem::for_status(axum::http::StatusCode::NOT_FOUND) })
}
