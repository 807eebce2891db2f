//! What the auth service holds about an account, for the users service's export and
//! erasure requests (`service_kit::privacy`): the account itself, its sessions and its
//! password resets. Erasure removes the account, as an admin's deletion does
//! (`auth.user.deleted.v1`, which the other services follow), unless it is the platform's
//! last admin. Never a password hash or a token digest.

use serde_json::{json, Value};
use service_kit::{
    events::HandlerError,
    privacy::{Erasure, PersonalData},
};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{accounts, error::AuthError, invalidation::AuthEvents};

/// The most recent sessions and resets an export carries (with the totals).
const EXPORTED_ROWS: i64 = 1000;

pub struct Accounts {
    /// Told after an erasure so that every instance forgets the account's cached principal.
    pub events: AuthEvents,
}

impl PersonalData for Accounts {
    async fn export(&self, conn: &mut PgConnection, user: Uuid) -> Result<Value, HandlerError> {
        let account: Option<Value> = sqlx::query_scalar(
            "SELECT jsonb_build_object('email', u.email, 'full_name', u.full_name, 'role', r.name,
                    'is_active', u.is_active, 'created_at', u.created_at,
                    'updated_at', u.updated_at, 'password_changed_at', u.password_changed_at)
             FROM users u JOIN roles r ON r.id = u.role_id WHERE u.id = $1",
        )
        .bind(user)
        .fetch_optional(&mut *conn)
        .await?;
        let sessions: (i64, Value) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM refresh_families WHERE user_id = $1),
                    coalesce(jsonb_agg(s ORDER BY s.created_at DESC), '[]'::jsonb)
             FROM (SELECT created_at, expires_at, revoked_at, revoked_reason
                   FROM refresh_families WHERE user_id = $1
                   ORDER BY created_at DESC LIMIT $2) s",
        )
        .bind(user)
        .bind(EXPORTED_ROWS)
        .fetch_one(&mut *conn)
        .await?;
        let resets: (i64, Value) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM password_reset_tokens WHERE user_id = $1),
                    coalesce(jsonb_agg(r ORDER BY r.created_at DESC), '[]'::jsonb)
             FROM (SELECT created_at, expires_at, used_at
                   FROM password_reset_tokens WHERE user_id = $1
                   ORDER BY created_at DESC LIMIT $2) r",
        )
        .bind(user)
        .bind(EXPORTED_ROWS)
        .fetch_one(&mut *conn)
        .await?;
        Ok(json!({
            "account": account,
            "sessions": { "total": sessions.0, "items": sessions.1 },
            "password_resets": { "total": resets.0, "items": resets.1 },
        }))
    }

    async fn erase(&self, conn: &mut PgConnection, user: Uuid) -> Result<Erasure, HandlerError> {
        match accounts::ensure_other_admin(conn, user).await {
            Ok(()) => {}
            Err(AuthError::LastAdmin) => {
                return Ok(Erasure::refused(
                    "the account is the platform's last active admin: give another account \
                     the admin role, then ask again",
                ))
            }
            Err(e) => return Err(e.into()),
        }
        if !accounts::remove(conn, user).await? {
            return Ok(Erasure::nothing_held());
        }
        // Other instances drop the account's cached principal now; one that reads it again
        // before this transaction commits keeps it at most `PRINCIPAL_TTL`.
        self.events.publish("user-deleted").await;
        tracing::info!(%user, "account erased");
        Ok(Erasure::erased(
            "the account, its sessions and its password resets were deleted",
        ))
    }
}
