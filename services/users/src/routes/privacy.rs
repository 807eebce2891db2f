//! The caller's privacy rights: `/api/v1/users/me/export` (everything the platform holds
//! about the account, gathered from every service) and `/api/v1/users/me/erasure`; admins
//! erase any account (`/api/v1/users/{id}/erasure`); `/api/v1/erasures/{id}` reports which
//! services confirmed.

use axum::{
    extract::State,
    http::{header, StatusCode},
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use service_kit::{
    extract::{Json, Path},
    Identity,
};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    error::ApiError,
    privacy::{self, ErasureReport, Export},
    routes::profiles::ADMIN,
    state::AppState,
};

/// Confirms an erasure: nothing is erased by a stray request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErasureRequest {
    /// The account's email address, as its profile has it (any case).
    #[schema(max_length = 320)]
    pub confirm: String,
}

/// 202 with `Location` a relative reference (RFC 3986 §4.2), so that it holds behind the
/// gateway's prefix as well as on the service's own port.
fn accepted<T: serde::Serialize>(location: String, body: T) -> Response {
    (
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(body),
    )
        .into_response()
}

/// Ask every service for what it holds about the caller. The answers arrive over events;
/// `GET` shows them as they come (`complete` once every service has answered). Replaces the
/// caller's earlier export.
#[utoipa::path(
    post, path = "/api/v1/users/me/export", tag = "privacy", security(("gateway_identity" = [])),
    responses(
        (status = 202, body = Export, description = "Asked; read it at the Location",
            headers(("Location" = String, description = "`export`: this same path, relative"))),
        (status = 409, description = "The account is being erased", content_type = "application/problem+json"),
    )
)]
pub async fn request_export(
    State(state): State<AppState>,
    caller: Identity,
) -> Result<Response, ApiError> {
    let export = privacy::request_export(
        &state.db,
        caller.user_id,
        caller.user_id,
        &state.settings.privacy_services,
    )
    .await?;
    Ok(accepted("export".to_owned(), export))
}

/// The caller's latest export, with every service's part that has arrived.
#[utoipa::path(
    get, path = "/api/v1/users/me/export", tag = "privacy", security(("gateway_identity" = [])),
    responses(
        (status = 200, body = Export),
        (status = 404, description = "No export asked for yet: POST first", content_type = "application/problem+json"),
    )
)]
pub async fn export(
    State(state): State<AppState>,
    caller: Identity,
) -> Result<Json<Export>, ApiError> {
    let mut conn = state.db.acquire().await?;
    let export = privacy::latest_export(&mut conn, caller.user_id)
        .await?
        .ok_or(ApiError::NotFound("export"))?;
    Ok(Json(export))
}

async fn erase(
    state: &AppState,
    caller: &Identity,
    user: Uuid,
    request: &ErasureRequest,
) -> Result<Response, ApiError> {
    let report = privacy::request_erasure(
        &state.db,
        user,
        caller.user_id,
        &request.confirm,
        &state.settings.privacy_services,
    )
    .await?;
    // From `/api/v1/users/{me or id}/erasure`.
    Ok(accepted(format!("../../erasures/{}", report.id), report))
}

/// Erase the caller's account on every service: the auth service removes the account, each
/// other service forgets what it holds about it or says why it keeps it (the audit log
/// does). Asking again while it is under way answers the same erasure.
#[utoipa::path(
    post, path = "/api/v1/users/me/erasure", tag = "privacy", security(("gateway_identity" = [])),
    request_body = ErasureRequest,
    responses(
        (status = 202, body = ErasureReport, description = "Asked; follow it at the Location",
            headers(("Location" = String, description = "`../../erasures/{id}`: the report, relative to this path"))),
        (status = 404, description = "No profile", content_type = "application/problem+json"),
        (status = 422, description = "`confirm` is not the account's email address", content_type = "application/problem+json"),
    )
)]
pub async fn erase_me(
    State(state): State<AppState>,
    caller: Identity,
    Json(request): Json<ErasureRequest>,
) -> Result<Response, ApiError> {
    erase(&state, &caller, caller.user_id, &request).await
}

/// Erase any account (admins).
#[utoipa::path(
    post, path = "/api/v1/users/{id}/erasure", tag = "privacy", security(("gateway_identity" = [])),
    params(("id" = Uuid, Path)),
    request_body = ErasureRequest,
    responses(
        (status = 202, body = ErasureReport, description = "Asked; follow it at the Location",
            headers(("Location" = String, description = "`../../erasures/{id}`: the report, relative to this path"))),
        (status = 403, content_type = "application/problem+json"),
        (status = 404, description = "No profile", content_type = "application/problem+json"),
        (status = 422, description = "`confirm` is not the account's email address", content_type = "application/problem+json"),
    )
)]
pub async fn erase_user(
    State(state): State<AppState>,
    caller: Identity,
    Path(id): Path<Uuid>,
    Json(request): Json<ErasureRequest>,
) -> Result<Response, ApiError> {
    caller.require_role(ADMIN)?;
    erase(&state, &caller, id, &request).await
}

/// Where an erasure stands: each service's answer, and those still to answer. For admins,
/// the erased account and whoever asked.
#[utoipa::path(
    get, path = "/api/v1/erasures/{id}", tag = "privacy", security(("gateway_identity" = [])),
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, body = ErasureReport),
        (status = 404, content_type = "application/problem+json"),
    )
)]
pub async fn erasure(
    State(state): State<AppState>,
    caller: Identity,
    Path(id): Path<Uuid>,
) -> Result<Json<ErasureReport>, ApiError> {
    let mut conn = state.db.acquire().await?;
    let report = privacy::erasure(&mut conn, id)
        .await?
        .filter(|r| {
            caller.has_role(ADMIN)
                || r.user_id == caller.user_id
                || r.requested_by == caller.user_id
        })
        .ok_or(ApiError::NotFound("erasure"))?;
    Ok(Json(report))
}
