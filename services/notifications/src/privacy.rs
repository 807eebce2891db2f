//! What the notifications service holds about an account, for the users service's export
//! and erasure requests (`service_kit::privacy`): the recipient and its preferences, the
//! unsubscriptions of its address, and the messages sent to it (never their template data,
//! which may hold a token). Erasure deletes all of it; a mail already handed to the SMTP
//! server cannot be called back, but nothing of it is kept.

use serde_json::{json, Value};
use service_kit::{
    events::HandlerError,
    privacy::{Erasure, PersonalData},
};
use sqlx::PgConnection;
use uuid::Uuid;

/// The most recent messages an export carries (with the total).
const EXPORTED_MESSAGES: i64 = 1000;

pub struct Recipients;

impl PersonalData for Recipients {
    async fn export(&self, conn: &mut PgConnection, user: Uuid) -> Result<Value, HandlerError> {
        let recipient: Option<Value> = sqlx::query_scalar(
            "SELECT jsonb_build_object('email', email, 'phone', phone, 'locale', locale,
                    'opted_out', opted_out, 'channels', channels, 'categories', categories,
                    'updated_at', updated_at)
             FROM recipients WHERE user_id = $1",
        )
        .bind(user)
        .fetch_optional(&mut *conn)
        .await?;
        let unsubscribed: Value = sqlx::query_scalar(
            "SELECT coalesce(jsonb_agg(jsonb_build_object('address', s.address,
                    'category', s.category, 'created_at', s.created_at) ORDER BY s.created_at), '[]')
             FROM suppressions s JOIN recipients r ON s.address = lower(r.email)
             WHERE r.user_id = $1",
        )
        .bind(user)
        .fetch_one(&mut *conn)
        .await?;
        let messages: (i64, Value) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM messages WHERE user_id = $1),
                    coalesce(jsonb_agg(m ORDER BY m.created_at DESC), '[]'::jsonb)
             FROM (SELECT id, channel, address, template, locale, category, status, subject,
                          attempts, last_error, created_at, sent_at
                   FROM messages WHERE user_id = $1
                   ORDER BY created_at DESC LIMIT $2) m",
        )
        .bind(user)
        .bind(EXPORTED_MESSAGES)
        .fetch_one(&mut *conn)
        .await?;
        Ok(json!({
            "recipient": recipient,
            "unsubscriptions": unsubscribed,
            "messages": { "total": messages.0, "items": messages.1 },
        }))
    }

    async fn erase(&self, conn: &mut PgConnection, user: Uuid) -> Result<Erasure, HandlerError> {
        let suppressions = sqlx::query(
            "DELETE FROM suppressions s USING recipients r
             WHERE r.user_id = $1 AND s.address = lower(r.email)",
        )
        .bind(user)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        let recipients = sqlx::query("DELETE FROM recipients WHERE user_id = $1")
            .bind(user)
            .execute(&mut *conn)
            .await?
            .rows_affected();
        // Attempts go with their messages; a message being sent right now is deleted too
        // (its outcome is then not recorded).
        let messages = sqlx::query("DELETE FROM messages WHERE user_id = $1")
            .bind(user)
            .execute(&mut *conn)
            .await?
            .rows_affected();
        // What the account asked to send to others stays theirs; only the asker is forgotten.
        sqlx::query("DELETE FROM requests WHERE requested_by = $1")
            .bind(user)
            .execute(&mut *conn)
            .await?;
        sqlx::query("UPDATE messages SET requested_by = NULL WHERE requested_by = $1")
            .bind(user)
            .execute(&mut *conn)
            .await?;
        if recipients + messages + suppressions == 0 {
            return Ok(Erasure::nothing_held());
        }
        Ok(Erasure::erased(format!(
            "{recipients} recipient, {messages} messages and {suppressions} unsubscriptions deleted"
        )))
    }
}
