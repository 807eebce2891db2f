//! Sessions: refresh-token families with rotation and reuse detection, and the access-token
//! blocklist.
//!
//! A login starts a family. Every refresh marks the presented token used and issues the next
//! one in the same family. Presenting a token that was already used means it was copied, so
//! the whole family is revoked: both the thief and the user must log in again.

use std::time::Duration;

use crate::state::Redis;
use chrono::{DateTime, Utc};
use events::auth::SessionRevoked;
use service_kit::opaque::{self, OpaqueToken};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::{error::AuthError, published};

/// Starts a session for `user` and returns its id with its first refresh token. One
/// statement, so it is atomic on its own and costs one round trip.
pub async fn start<'e>(
    db: impl sqlx::PgExecutor<'e>,
    user: Uuid,
    ttl: Duration,
) -> Result<(Uuid, OpaqueToken), AuthError> {
    let family = Uuid::now_v7();
    let expires_at = Utc::now() + ttl;
    let token = OpaqueToken::generate();
    sqlx::query(
        "WITH family AS (
             INSERT INTO refresh_families (id, user_id, expires_at) VALUES ($1, $2, $3) RETURNING id
         )
         INSERT INTO refresh_tokens (id, family_id, token_hash, expires_at)
         SELECT $4, family.id, $5, $3 FROM family",
    )
    .bind(family)
    .bind(user)
    .bind(expires_at)
    .bind(Uuid::now_v7())
    .bind(token.digest())
    .execute(db)
    .await?;
    Ok((family, token))
}

async fn issue(
    tx: &mut Transaction<'_, Postgres>,
    family: Uuid,
    expires_at: DateTime<Utc>,
) -> Result<OpaqueToken, AuthError> {
    let token = OpaqueToken::generate();
    sqlx::query("INSERT INTO refresh_tokens (id, family_id, token_hash, expires_at) VALUES ($1, $2, $3, $4)")
        .bind(Uuid::now_v7())
        .bind(family)
        .bind(token.digest())
        .bind(expires_at)
        .execute(&mut **tx)
        .await?;
    Ok(token)
}

#[derive(sqlx::FromRow)]
struct Presented {
    token_id: Uuid,
    family_id: Uuid,
    user_id: Uuid,
    used_at: Option<DateTime<Utc>>,
    token_expires_at: DateTime<Utc>,
    family_revoked: bool,
}

/// What a successful rotation yields.
pub struct Rotated {
    pub user: Uuid,
    pub family: Uuid,
    pub token: OpaqueToken,
}

/// Exchanges a refresh token for the next one in its family.
pub async fn rotate(db: &PgPool, presented: &str, ttl: Duration) -> Result<Rotated, AuthError> {
    let mut tx = db.begin().await?;
    // The row lock makes two concurrent uses of one token line up: the second sees `used_at`
    // set by the first and is treated as reuse.
    let found = sqlx::query_as::<_, Presented>(
        "SELECT t.id AS token_id, t.family_id, f.user_id, t.used_at, t.expires_at AS token_expires_at,
                (f.revoked_at IS NOT NULL) AS family_revoked
         FROM refresh_tokens t JOIN refresh_families f ON f.id = t.family_id
         WHERE t.token_hash = $1
         FOR UPDATE OF t, f",
    )
    .bind(opaque::digest(presented))
    .fetch_optional(&mut *tx)
    .await?;
    let Some(found) = found else {
        return Err(AuthError::InvalidRefreshToken);
    };
    if found.family_revoked {
        return Err(AuthError::InvalidRefreshToken);
    }
    if found.used_at.is_some() {
        revoke_family(&mut tx, found.family_id, "refresh token reused").await?;
        tx.commit().await?;
        tracing::warn!(user = %found.user_id, session = %found.family_id, "refresh token reused; session revoked");
        return Err(AuthError::RefreshTokenReused);
    }
    if found.token_expires_at <= Utc::now() {
        return Err(AuthError::InvalidRefreshToken);
    }
    let active: Option<bool> = sqlx::query_scalar("SELECT is_active FROM users WHERE id = $1")
        .bind(found.user_id)
        .fetch_optional(&mut *tx)
        .await?;
    if active != Some(true) {
        return Err(AuthError::InvalidRefreshToken);
    }
    sqlx::query("UPDATE refresh_tokens SET used_at = now() WHERE id = $1")
        .bind(found.token_id)
        .execute(&mut *tx)
        .await?;
    let expires_at = Utc::now() + ttl;
    sqlx::query("UPDATE refresh_families SET expires_at = $2 WHERE id = $1")
        .bind(found.family_id)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
    let token = issue(&mut tx, found.family_id, expires_at).await?;
    tx.commit().await?;
    Ok(Rotated {
        user: found.user_id,
        family: found.family_id,
        token,
    })
}

/// Revokes one session: its refresh tokens stop working, and so do access tokens issued in it.
pub async fn revoke_family(
    conn: &mut PgConnection,
    family: Uuid,
    reason: &str,
) -> Result<(), AuthError> {
    let user: Option<Uuid> = sqlx::query_scalar(
        "UPDATE refresh_families SET revoked_at = now(), revoked_reason = $2
         WHERE id = $1 AND revoked_at IS NULL RETURNING user_id",
    )
    .bind(family)
    .bind(reason)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(user_id) = user {
        let event = SessionRevoked {
            user_id,
            session_id: Some(family),
            kept: None,
            reason: reason.to_owned(),
            revoked_at: Utc::now(),
        };
        published::tell(conn, &event).await?;
    }
    Ok(())
}

/// Revokes every session of `user`, except `keep` when given.
pub async fn revoke_all(
    tx: &mut Transaction<'_, Postgres>,
    user: Uuid,
    keep: Option<Uuid>,
    reason: &str,
) -> Result<u64, AuthError> {
    let done = sqlx::query(
        "UPDATE refresh_families SET revoked_at = now(), revoked_reason = $3
         WHERE user_id = $1 AND revoked_at IS NULL AND ($2::uuid IS NULL OR id <> $2)",
    )
    .bind(user)
    .bind(keep)
    .bind(reason)
    .execute(&mut **tx)
    .await?;
    if done.rows_affected() > 0 {
        let event = SessionRevoked {
            user_id: user,
            session_id: None,
            kept: keep,
            reason: reason.to_owned(),
            revoked_at: Utc::now(),
        };
        published::tell(tx, &event).await?;
    }
    Ok(done.rows_affected())
}

/// Blocks one access token until it would have expired anyway.
pub async fn block_access_token(
    redis: &Redis,
    prefix: &str,
    jti: Uuid,
    expires_at_unix: i64,
) -> Result<(), AuthError> {
    let remaining = (expires_at_unix - Utc::now().timestamp()).max(1) as u64;
    let mut conn = redis.clone();
    redis::cmd("SET")
        .arg(format!("{prefix}revoked-jti:{jti}"))
        .arg(1)
        .arg("EX")
        .arg(remaining)
        .query_async::<()>(&mut conn)
        .await?;
    Ok(())
}

pub async fn is_access_token_blocked(
    redis: &Redis,
    prefix: &str,
    jti: Uuid,
) -> Result<bool, AuthError> {
    let mut conn = redis.clone();
    Ok(redis::cmd("EXISTS")
        .arg(format!("{prefix}revoked-jti:{jti}"))
        .query_async::<bool>(&mut conn)
        .await?)
}
