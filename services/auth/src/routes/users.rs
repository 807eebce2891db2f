//! Admin: accounts. Every handler checks a permission of the caller's role first.

use axum::{extract::State, http::StatusCode};
use chrono::{DateTime, Utc};
use events::auth::{UserRoleChanged, UserUpdated};
use service_kit::{
    extract::{Json, Path, Query},
    pagination::{Page, PageQuery, PageRequest},
    Email,
};
use uuid::Uuid;

use super::dto::{SetRoleRequest, UpdateUserRequest, UserFilter, UserView};
use crate::{
    accounts::{self, UserRecord, USER_COLUMNS},
    authn::Principal,
    domain::{permissions, RoleName, ADMIN_ROLE},
    error::{is_unique_violation, AuthError},
    published, sessions,
    state::AppState,
};

/// The accounts matching the list filters: `$1` email substring (LIKE-escaped), `$2` role,
/// `$3` active.
const FILTERED_USERS: &str = "FROM users u JOIN roles r ON r.id = u.role_id
     WHERE ($1::text IS NULL OR u.email LIKE '%' || $1 || '%')
       AND ($2::text IS NULL OR r.name = $2)
       AND ($3::bool IS NULL OR u.is_active = $3)";

/// Escapes `%`, `_` and `\` so user input matches literally inside a LIKE pattern.
fn like_literal(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

#[derive(sqlx::FromRow)]
struct Counted {
    #[sqlx(flatten)]
    user: UserRecord,
    total: i64,
}

/// List accounts, newest first, filtered by email, role and active state.
#[utoipa::path(
    get, path = "/api/v1/users", tag = "admin", security(("bearer" = [])),
    params(UserFilter),
    responses(
        (status = 200, body = Page<UserView>),
        (status = 403, description = "Missing users:read", content_type = "application/problem+json"),
        (status = 422, description = "`limit` or `offset` out of bounds, or `email` too long", content_type = "application/problem+json"),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    Query(filter): Query<UserFilter>,
) -> Result<Json<Page<UserView>>, AuthError> {
    principal.require(permissions::USERS_READ)?;
    let page = PageRequest::parse(PageQuery {
        limit: filter.limit,
        offset: filter.offset,
    })?;
    if filter.email.as_ref().is_some_and(|e| e.len() > 254) {
        return Err(AuthError::field("email", "must be at most 254 characters"));
    }
    let (limit, offset) = page.sql();
    let email = filter
        .email
        .as_deref()
        .map(|e| like_literal(&e.to_lowercase()));
    let page_sql = format!(
        "SELECT {USER_COLUMNS}, count(*) OVER () AS total {FILTERED_USERS}
         ORDER BY u.created_at DESC, u.id DESC LIMIT $4 OFFSET $5"
    );
    let rows = sqlx::query_as::<_, Counted>(&page_sql)
        .bind(&email)
        .bind(filter.role.as_deref())
        .bind(filter.active)
        .bind(limit)
        .bind(offset)
        .fetch_all(&state.db)
        .await?;
    let total = match rows.first() {
        Some(r) => r.total,
        // An empty page past the end still reports the true total.
        None if offset > 0 => {
            let count_sql = format!("SELECT count(*) {FILTERED_USERS}");
            sqlx::query_scalar(&count_sql)
                .bind(&email)
                .bind(filter.role.as_deref())
                .bind(filter.active)
                .fetch_one(&state.db)
                .await?
        }
        None => 0,
    };
    let items = rows.into_iter().map(|r| r.user.into()).collect();
    Ok(Json(page.into_page(items, total)))
}

/// One account.
#[utoipa::path(
    get, path = "/api/v1/users/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = UserView), (status = 404, content_type = "application/problem+json"))
)]
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
) -> Result<Json<UserView>, AuthError> {
    principal.require(permissions::USERS_READ)?;
    let user = accounts::find(&state.db, id)
        .await?
        .ok_or(AuthError::NotFound("user"))?;
    Ok(Json(user.into()))
}

/// Update an account's email, name or active state. Disabling an account ends its sessions.
#[utoipa::path(
    put, path = "/api/v1/users/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    request_body = UpdateUserRequest,
    responses(
        (status = 200, body = UserView),
        (status = 404, content_type = "application/problem+json"),
        (status = 409, description = "Email taken, or last admin", content_type = "application/problem+json"),
    )
)]
pub async fn update(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
    Json(body): Json<UpdateUserRequest>,
) -> Result<Json<UserView>, AuthError> {
    principal.require(permissions::USERS_WRITE)?;
    let email = body
        .email
        .as_deref()
        .map(Email::parse)
        .transpose()
        .map_err(|e| AuthError::field("email", e))?;
    let full_name = match body.full_name {
        Some(Some(n)) if n.chars().count() > 200 => {
            return Err(AuthError::field(
                "full_name",
                "must be at most 200 characters",
            ))
        }
        other => other,
    };
    let mut tx = state.db.begin().await?;
    accounts::ensure_can_manage(&mut tx, &principal, id).await?;
    if body.is_active == Some(false) {
        accounts::ensure_other_admin(&mut tx, id).await?;
    }
    // What the account looks like now, for the event that tells it.
    let updated: Result<Option<Updated>, _> = sqlx::query_as(
        "UPDATE users SET
             email = COALESCE($2, email),
             full_name = CASE WHEN $3 THEN $4 ELSE full_name END,
             is_active = COALESCE($5, is_active),
             updated_at = now()
         WHERE id = $1
         RETURNING email, full_name, is_active, updated_at",
    )
    .bind(id)
    .bind(email.as_ref().map(Email::as_str))
    .bind(full_name.is_some())
    .bind(full_name.flatten())
    .bind(body.is_active)
    .fetch_optional(&mut *tx)
    .await;
    let Updated {
        email,
        full_name,
        is_active,
        updated_at,
    } = match updated {
        Ok(Some(now)) => now,
        Ok(None) => return Err(AuthError::NotFound("user")),
        Err(e) if is_unique_violation(&e) => return Err(AuthError::EmailTaken),
        Err(e) => return Err(e.into()),
    };
    if body.is_active == Some(false) {
        sessions::revoke_all(&mut tx, id, None, "account disabled").await?;
    }
    let event = UserUpdated {
        user_id: id,
        email,
        full_name,
        is_active,
        updated_at,
    };
    published::tell(&mut tx, &event).await?;
    tx.commit().await?;
    state.events.publish("user-updated").await;
    let user = accounts::find(&state.db, id)
        .await?
        .ok_or(AuthError::NotFound("user"))?;
    Ok(Json(user.into()))
}

/// An account as an update left it.
#[derive(sqlx::FromRow)]
struct Updated {
    email: String,
    full_name: Option<String>,
    is_active: bool,
    updated_at: DateTime<Utc>,
}

/// Delete an account and everything that hangs off it (sessions, reset tokens). Its tokens
/// stop working at once.
#[utoipa::path(
    delete, path = "/api/v1/users/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, content_type = "application/problem+json"),
        (status = 409, description = "Last admin", content_type = "application/problem+json"),
    )
)]
pub async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, AuthError> {
    principal.require(permissions::USERS_WRITE)?;
    let mut tx = state.db.begin().await?;
    accounts::ensure_can_manage(&mut tx, &principal, id).await?;
    accounts::ensure_other_admin(&mut tx, id).await?;
    if !accounts::remove(&mut tx, id).await? {
        return Err(AuthError::NotFound("user"));
    }
    tx.commit().await?;
    state.events.publish("user-deleted").await;
    tracing::info!(user = %id, by = %principal.user.id, "account deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Give an account a role. Takes effect on the account's next request.
#[utoipa::path(
    put, path = "/api/v1/users/{user_id}/role", tag = "admin", security(("bearer" = [])),
    params(("user_id" = Uuid, Path)),
    request_body = SetRoleRequest,
    responses(
        (status = 200, body = UserView),
        (status = 404, content_type = "application/problem+json"),
        (status = 409, description = "Last admin", content_type = "application/problem+json"),
        (status = 422, description = "Unknown role", content_type = "application/problem+json"),
    )
)]
pub async fn set_role(
    State(state): State<AppState>,
    principal: Principal,
    Path(user_id): Path<Uuid>,
    Json(body): Json<SetRoleRequest>,
) -> Result<Json<UserView>, AuthError> {
    principal.require(permissions::USERS_WRITE)?;
    let role = RoleName::parse(&body.role).map_err(|e| AuthError::field("role", e))?;
    let mut tx = state.db.begin().await?;
    accounts::ensure_can_manage(&mut tx, &principal, user_id).await?;
    if role.as_str() != ADMIN_ROLE {
        accounts::ensure_other_admin(&mut tx, user_id).await?;
    }
    let found: Option<(Uuid, bool)> =
        sqlx::query_as("SELECT id, permissions <@ $2::text[] FROM roles WHERE name = $1")
            .bind(role.as_str())
            .bind(&principal.user.permissions)
            .fetch_optional(&mut *tx)
            .await?;
    let (role_id, grantable) = found.ok_or_else(|| AuthError::UnknownRole(role.to_string()))?;
    // Nobody hands out permissions they do not hold themselves.
    if !grantable {
        return Err(AuthError::Escalation);
    }
    // The previous role, read under the row's lock, for the event.
    let previous: Option<String> = sqlx::query_scalar(
        "WITH before AS (
             SELECT u.id, r.name FROM users u JOIN roles r ON r.id = u.role_id
             WHERE u.id = $1 FOR UPDATE OF u
         )
         UPDATE users SET role_id = $2, updated_at = now()
         FROM before WHERE users.id = before.id
         RETURNING before.name",
    )
    .bind(user_id)
    .bind(role_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(previous_role) = previous else {
        return Err(AuthError::NotFound("user"));
    };
    if previous_role != role.as_str() {
        let event = UserRoleChanged {
            user_id,
            role: role.to_string(),
            previous_role,
            changed_by: principal.user.id,
            changed_at: Utc::now(),
        };
        published::tell(&mut tx, &event).await?;
    }
    tx.commit().await?;
    state.events.publish("role-changed").await;
    let user = accounts::find(&state.db, user_id)
        .await?
        .ok_or(AuthError::NotFound("user"))?;
    Ok(Json(user.into()))
}
