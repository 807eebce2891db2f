//! `Principal`: the authenticated caller of a request, extracted from its bearer token.
//!
//! A token is accepted only if its signature, `kid`, `iss`, `aud` and `exp` check out, its
//! `jti` is not blocked (logout), its session is not revoked (reuse, password change, reset),
//! and its user still exists and is active. Role and permissions are read fresh, so a role
//! change takes effect on the next request, not at the next login.

use std::sync::LazyLock;

use crate::{
    accounts::{UserRecord, USER_COLUMNS},
    error::AuthError,
    sessions,
    state::AppState,
};
use axum::{
    extract::FromRequestParts,
    http::{header, request::Parts},
};
use service_kit::jwt::AccessClaims;

pub struct Principal {
    pub user: UserRecord,
    pub claims: AccessClaims,
}

impl Principal {
    pub fn require(&self, permission: &'static str) -> Result<(), AuthError> {
        if self.user.permissions.iter().any(|p| p == permission) {
            Ok(())
        } else {
            Err(AuthError::Forbidden(permission))
        }
    }
}

#[derive(sqlx::FromRow)]
struct PrincipalRow {
    #[sqlx(flatten)]
    user: UserRecord,
    session_active: Option<bool>,
}

static PRINCIPAL_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {USER_COLUMNS}, (f.revoked_at IS NULL AND f.expires_at > now()) AS session_active
         FROM users u JOIN roles r ON r.id = u.role_id
         LEFT JOIN refresh_families f ON f.id = $2 AND f.user_id = u.id
         WHERE u.id = $1"
    )
});

pub fn bearer(parts: &Parts) -> Result<&str, AuthError> {
    let value = parts
        .headers
        .get(header::AUTHORIZATION)
        .ok_or(AuthError::Unauthenticated("no Authorization header"))?
        .to_str()
        .map_err(|_| AuthError::Unauthenticated("Authorization header is not ASCII"))?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or(AuthError::Unauthenticated("expected a Bearer token"))?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(AuthError::Unauthenticated("expected a Bearer token"));
    }
    Ok(token.trim())
}

pub async fn authenticate(state: &AppState, token: &str) -> Result<Principal, AuthError> {
    let claims = state.keys.verify(token).await?;
    let blocked =
        sessions::is_access_token_blocked(&state.redis, &state.settings.redis_prefix, claims.jti);
    let row = sqlx::query_as::<_, PrincipalRow>(&PRINCIPAL_SQL)
        .bind(claims.sub)
        .bind(claims.sid)
        .fetch_optional(&state.db);
    let (blocked, row) = tokio::join!(blocked, row);
    if blocked? {
        return Err(AuthError::Unauthenticated("token has been revoked"));
    }
    let row = row?.ok_or(AuthError::Unauthenticated("account no longer exists"))?;
    if !row.user.is_active {
        return Err(AuthError::Unauthenticated("account is disabled"));
    }
    if row.session_active != Some(true) {
        return Err(AuthError::Unauthenticated("session has been revoked"));
    }
    Ok(Principal {
        user: row.user,
        claims,
    })
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = AuthError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(parts)?;
        authenticate(state, token).await
    }
}
