//! Password resets: a single-use token, stored hashed, valid for 30 minutes by default, handed
//! to the notifications service as an `auth.password_reset.requested.v1` event, written to the
//! outbox in the same transaction that creates it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use service_kit::opaque::{self, OpaqueToken};
use sqlx::PgPool;
use uuid::Uuid;

use events::auth::PasswordResetRequested;

use crate::{accounts, error::AuthError, published, sessions};

/// Creates a reset token for the account with this email, if there is one. The caller answers
/// the same either way.
pub async fn request(db: &PgPool, email: &str, ttl: Duration) -> Result<(), AuthError> {
    let mut tx = db.begin().await?;
    let user: Option<Uuid> =
        sqlx::query_scalar("SELECT id FROM users WHERE email = $1 AND is_active")
            .bind(email)
            .fetch_optional(&mut *tx)
            .await?;
    let Some(user) = user else {
        return Ok(());
    };
    let token = OpaqueToken::generate();
    let expires_at = Utc::now() + ttl;
    sqlx::query("INSERT INTO password_reset_tokens (id, user_id, token_hash, expires_at) VALUES ($1, $2, $3, $4)")
        .bind(Uuid::now_v7())
        .bind(user)
        .bind(token.digest())
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
    let event = PasswordResetRequested {
        user_id: user,
        email: email.to_owned(),
        token: token.expose().to_owned(),
        expires_at,
    };
    published::tell(&mut tx, &event).await?;
    tx.commit().await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct ResetRow {
    id: Uuid,
    user_id: Uuid,
    expires_at: DateTime<Utc>,
    used_at: Option<DateTime<Utc>>,
}

/// Spends a reset token: sets the new password, revokes every session of the account and
/// every other outstanding reset token. Returns the account's id.
pub async fn complete(db: &PgPool, presented: &str, new_hash: &str) -> Result<Uuid, AuthError> {
    let mut tx = db.begin().await?;
    let row = sqlx::query_as::<_, ResetRow>(
        "SELECT id, user_id, expires_at, used_at FROM password_reset_tokens WHERE token_hash = $1 FOR UPDATE",
    )
    .bind(opaque::digest(presented))
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        return Err(AuthError::InvalidResetToken);
    };
    if row.used_at.is_some() || row.expires_at <= Utc::now() {
        return Err(AuthError::InvalidResetToken);
    }
    sqlx::query(
        "UPDATE password_reset_tokens SET used_at = now() WHERE user_id = $1 AND used_at IS NULL",
    )
    .bind(row.user_id)
    .execute(&mut *tx)
    .await?;
    accounts::set_password(&mut tx, row.user_id, new_hash).await?;
    sessions::revoke_all(&mut tx, row.user_id, None, "password reset").await?;
    tx.commit().await?;
    tracing::info!(user = %row.user_id, reset = %row.id, "password reset completed");
    Ok(row.user_id)
}
