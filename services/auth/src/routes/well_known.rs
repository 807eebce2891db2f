//! `GET /.well-known/jwks.json`: the public keys that verify this service's access tokens.

use axum::{extract::State, http::header, response::IntoResponse};
use service_kit::jwt::Jwks;

use crate::state::AppState;

/// The JSON Web Key Set. Cacheable for five minutes; verifiers should refetch on an unknown
/// `kid`.
#[utoipa::path(
    get, path = "/.well-known/jwks.json", tag = "keys",
    responses((status = 200, body = Jwks))
)]
pub async fn jwks(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "public, max-age=300")],
        axum::Json(state.keys.jwks()),
    )
}
