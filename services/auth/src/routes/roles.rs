//! Admin: roles and the permissions they grant.

use axum::{extract::State, http::StatusCode};
use service_kit::extract::Json;
use uuid::Uuid;

use super::dto::{CreateRoleRequest, RoleView};
use crate::{
    authn::Principal,
    domain::{permissions, Permission, RoleName},
    error::{is_unique_violation, AuthError},
    state::AppState,
};

/// Every role.
#[utoipa::path(
    get, path = "/api/v1/roles", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = Vec<RoleView>), (status = 403, content_type = "application/problem+json"))
)]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<Vec<RoleView>>, AuthError> {
    principal.require(permissions::ROLES_READ)?;
    let roles = sqlx::query_as::<_, RoleView>(
        "SELECT id, name, description, permissions, created_at FROM roles ORDER BY name",
    )
    .fetch_all(&state.db)
    .await?;
    Ok(Json(roles))
}

/// Create a role.
#[utoipa::path(
    post, path = "/api/v1/roles", tag = "admin", security(("bearer" = [])),
    request_body = CreateRoleRequest,
    responses(
        (status = 201, body = RoleView),
        (status = 409, description = "Name taken", content_type = "application/problem+json"),
        (status = 422, content_type = "application/problem+json"),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    Json(body): Json<CreateRoleRequest>,
) -> Result<(StatusCode, Json<RoleView>), AuthError> {
    principal.require(permissions::ROLES_WRITE)?;
    let name = RoleName::parse(&body.name).map_err(|e| AuthError::field("name", e))?;
    if body.description.chars().count() > 500 {
        return Err(AuthError::field(
            "description",
            "must be at most 500 characters",
        ));
    }
    if body.permissions.len() > 100 {
        return Err(AuthError::field(
            "permissions",
            "at most 100 permissions per role",
        ));
    }
    let mut perms = body
        .permissions
        .iter()
        .map(|p| Permission::parse(&p.0).map(Permission::into_inner))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| AuthError::field("permissions", e))?;
    perms.sort();
    perms.dedup();
    // A role may only carry permissions its creator holds, or `roles:write` would be a way
    // to mint any power at all.
    if let Some(missing) = perms
        .iter()
        .find(|p| !principal.user.permissions.contains(p))
    {
        return Err(AuthError::field(
            "permissions",
            format!("you cannot grant {missing:?}, which you do not hold"),
        ));
    }
    let created = sqlx::query_as::<_, RoleView>(
        "INSERT INTO roles (id, name, description, permissions) VALUES ($1, $2, $3, $4)
         RETURNING id, name, description, permissions, created_at",
    )
    .bind(Uuid::now_v7())
    .bind(name.as_str())
    .bind(&body.description)
    .bind(&perms)
    .fetch_one(&state.db)
    .await;
    match created {
        Ok(role) => Ok((StatusCode::CREATED, Json(role))),
        Err(e) if is_unique_violation(&e) => Err(AuthError::RoleExists),
        Err(e) => Err(e.into()),
    }
}
