//! The auth service's HTTP surface, and the OpenAPI 3.1 document generated from it.

pub mod account;
pub mod dto;
pub mod roles;
pub mod tokens;
pub mod users;
pub mod well_known;

use axum::{http::header, response::IntoResponse, routing::get, Router};
use service_kit::openapi::StandardResponses;
use utoipa::{
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
    Modify, OpenApi,
};
use utoipa_axum::{router::OpenApiRouter, routes};
use utoipa_scalar::{Scalar, Servable as _};

use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(title = "Gravity auth service", description = "Accounts, sessions, tokens and roles."),
    modifiers(&BearerAuth),
    tags(
        (name = "tokens", description = "Register, log in, refresh and log out"),
        (name = "account", description = "The caller's own account"),
        (name = "admin", description = "Accounts and roles, for holders of the matching permissions"),
        (name = "keys", description = "Public keys for verifying access tokens"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// The API routes with their OpenAPI description.
pub fn api() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, mut openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(tokens::register))
        .routes(routes!(tokens::login))
        .routes(routes!(tokens::refresh))
        .routes(routes!(tokens::logout))
        .routes(routes!(account::me))
        .routes(routes!(account::change_password))
        .routes(routes!(account::forgot_password))
        .routes(routes!(account::reset_password))
        .routes(routes!(users::list))
        .routes(routes!(users::get, users::update, users::delete))
        .routes(routes!(users::set_role))
        .routes(routes!(roles::list, roles::create))
        .routes(routes!(well_known::jwks))
        .split_for_parts();
    StandardResponses.modify(&mut openapi);
    (router, openapi)
}

/// The whole application: API, `/openapi.json`, `/docs`, health and metrics.
pub fn router(state: AppState) -> Router {
    let (api, openapi) = api();
    let document = openapi.to_pretty_json().unwrap_or_else(|_| "{}".to_owned());
    let readiness = service_kit::health::Readiness {
        db: Some(state.db.clone()),
        redis: Some(state.redis.0.clone()),
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
