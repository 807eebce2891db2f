//! The Users service's HTTP surface, and the OpenAPI 3.1 document generated from it.

pub mod privacy;
pub mod profiles;
pub mod schema;

use axum::{http::header, response::IntoResponse, routing::get, Router};
use service_kit::openapi::{GatewayIdentity, StandardResponses};
use utoipa::{Modify as _, OpenApi};
use utoipa_axum::{router::OpenApiRouter, routes};
use utoipa_scalar::{Scalar, Servable as _};

use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Gravity Users service",
        description = "A profile per account, made from the auth service's events. \
            Called through the gateway, which verifies the caller's access token."
    ),
    modifiers(&GatewayIdentity),
    tags(
        (name = "profiles", description = "Profiles, preferences and activity"),
        (name = "schema", description = "The schema of custom attributes"),
        (name = "privacy", description = "An account's export and erasure, across every service")
    )
)]
struct ApiDoc;

/// The API routes with their OpenAPI description.
pub fn api() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, mut openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(profiles::me, profiles::patch_me))
        .routes(routes!(profiles::preferences, profiles::set_preferences))
        .routes(routes!(profiles::activity))
        .routes(routes!(profiles::search))
        .routes(routes!(profiles::get, profiles::patch))
        .routes(routes!(schema::get, schema::put))
        .routes(routes!(privacy::request_export, privacy::export))
        .routes(routes!(privacy::erase_me))
        .routes(routes!(privacy::erase_user))
        .routes(routes!(privacy::erasure))
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
