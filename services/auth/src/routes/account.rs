//! The caller's own account: who am I, change my password, forgot and reset it.

use axum::{extract::State, http::StatusCode, Extension};
use secrecy::SecretString;
use service_kit::{extract::Json, http::ClientAddr, Email};

use super::{
    dto::{Accepted, ChangePasswordRequest, ForgotPasswordRequest, ResetPasswordRequest, UserView},
    tokens::parse_new_password,
};
use crate::{accounts, authn::Principal, error::AuthError, resets, sessions, state::AppState};

/// The authenticated caller's account.
#[utoipa::path(
    get, path = "/api/v1/me", tag = "account", security(("bearer" = [])),
    responses((status = 200, body = UserView), (status = 401, content_type = "application/problem+json"))
)]
pub async fn me(principal: Principal) -> Result<axum::response::Response, AuthError> {
    use axum::{http::header, response::IntoResponse as _};
    let body = principal
        .me_json()
        .map_err(|e| AuthError::Render(e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// Change the caller's password. Every other session of the account is revoked; the current
/// one stays logged in.
#[utoipa::path(
    post, path = "/api/v1/change-password", tag = "account", security(("bearer" = [])),
    request_body = ChangePasswordRequest,
    responses(
        (status = 204, description = "Password changed"),
        (status = 401, description = "Not authenticated, or current password wrong", content_type = "application/problem+json"),
        (status = 422, description = "New password too weak", content_type = "application/problem+json"),
        (status = 429, description = "Too many wrong current passwords; see Retry-After", content_type = "application/problem+json"),
    )
)]
pub async fn change_password(
    State(state): State<AppState>,
    principal: Principal,
    client: Option<Extension<ClientAddr>>,
    Json(body): Json<ChangePasswordRequest>,
) -> Result<StatusCode, AuthError> {
    let new_password = parse_new_password("new_password", body.new_password)?;
    let current = SecretString::from(body.current_password);
    // Guesses at the current password count against the same limits as logins: a stolen
    // access token must not become an unthrottled password oracle.
    let client = client.map(|Extension(ClientAddr(ip))| ip);
    let reservation = state
        .throttle
        .reserve(&principal.user.email, client)
        .await?;
    if !accounts::verify_password(&state.db, &state.hasher, principal.user.id, &current).await? {
        return Err(AuthError::InvalidCredentials);
    }
    state.throttle.succeeded(reservation).await?;
    let hash = state.hasher.hash(&new_password).await?;
    let mut tx = state.db.begin().await?;
    accounts::set_password(&mut tx, principal.user.id, &hash).await?;
    let revoked = sessions::revoke_all(
        &mut tx,
        principal.user.id,
        Some(principal.claims.sid),
        "password changed",
    )
    .await?;
    tx.commit().await?;
    state.events.publish("password-changed").await;
    tracing::info!(user = %principal.user.id, revoked_sessions = revoked, "password changed");
    Ok(StatusCode::NO_CONTENT)
}

const FORGOT_ANSWER: &str = "If an account exists for this email, a reset link is on its way.";

/// Ask for a password reset. The answer is the same whether or not the email has an account.
#[utoipa::path(
    post, path = "/api/v1/forgot-password", tag = "account",
    request_body = ForgotPasswordRequest,
    responses((status = 202, body = Accepted), (status = 422, content_type = "application/problem+json"))
)]
pub async fn forgot_password(
    State(state): State<AppState>,
    Json(body): Json<ForgotPasswordRequest>,
) -> Result<(StatusCode, Json<Accepted>), AuthError> {
    let email = Email::parse(&body.email).map_err(|e| AuthError::field("email", e))?;
    // Past a few requests per account and window, answer the same but create nothing, so
    // the endpoint cannot be used to flood someone's inbox or the outbox.
    if state.throttle.reserve_reset(email.as_str()).await? {
        resets::request(&state.db, email.as_str(), state.settings.tokens.reset_ttl).await?;
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            detail: FORGOT_ANSWER.to_owned(),
        }),
    ))
}

/// Set a new password with a reset token. The token works once; every session of the account
/// is revoked.
#[utoipa::path(
    post, path = "/api/v1/reset-password", tag = "account",
    request_body = ResetPasswordRequest,
    responses(
        (status = 204, description = "Password reset"),
        (status = 400, description = "Unknown, expired or used token", content_type = "application/problem+json"),
        (status = 422, description = "New password too weak", content_type = "application/problem+json"),
    )
)]
pub async fn reset_password(
    State(state): State<AppState>,
    Json(body): Json<ResetPasswordRequest>,
) -> Result<StatusCode, AuthError> {
    if body.token.is_empty() || body.token.len() > 256 {
        return Err(AuthError::InvalidResetToken);
    }
    let new_password = parse_new_password("new_password", body.new_password)?;
    let hash = state.hasher.hash(&new_password).await?;
    resets::complete(&state.db, &body.token, &hash).await?;
    state.events.publish("password-reset").await;
    Ok(StatusCode::NO_CONTENT)
}
