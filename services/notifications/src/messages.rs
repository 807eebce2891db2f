//! Messages: accepted (from the API or an event), queued or scheduled, then taken by the
//! sender (`sender.rs`). Every state a message goes through is a row's `status`:
//!
//! ```text
//! scheduled ──(send_at)──┐
//! queued ────────────────┴─> sending ─> sent
//!                               │  └──> queued (retry, with backoff) ─> ... ─> given_up
//!                               ├────> failed      (the server refused it for good)
//!                               └────> suppressed  (the recipient opted out)
//! cancelled: the recipient's account was deleted before it went out.
//! ```

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgConnection;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::templates::Template;

/// The channel the queue wakes the sender on (`LISTEN`), notified by every commit that
/// queues something.
pub const DUE: &str = "notifications_due";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Email,
    Sms,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
        }
    }
}

/// A message to accept.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub requested_by: Option<Uuid>,
    /// `api`, or the type of the event that caused it.
    pub origin: String,
    pub idempotency: Option<(String, Vec<u8>)>,
    pub user_id: Option<Uuid>,
    pub channel: Channel,
    pub address: String,
    pub template: Template,
    pub data: Value,
    pub send_at: Option<DateTime<Utc>>,
    /// Gathers this message with others to the same address under one key until `send_at`:
    /// `data` becomes one of the digest's `items`.
    pub digest: Option<String>,
}

/// What accepting a message did.
#[derive(Debug)]
pub enum Accepted {
    New(Delivery),
    /// The same Idempotency-Key with the same request: the message accepted the first time.
    Replayed(Delivery),
    /// The same Idempotency-Key with a different request.
    KeyReused,
}

/// A message and where its delivery stands: what its sender and admins see.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
pub struct Delivery {
    pub id: Uuid,
    #[schema(value_type = String, example = "queued")]
    pub status: String,
    #[schema(value_type = String, example = "email")]
    pub channel: String,
    pub address: String,
    pub user_id: Option<Uuid>,
    pub template: String,
    pub template_version: i32,
    pub locale: String,
    pub category: String,
    /// The key the message gathers events under, for a digest.
    pub digest_key: Option<String>,
    /// The subject as sent (set once it is).
    pub subject: Option<String>,
    pub attempts: i32,
    /// The server's answer to the last attempt that did not succeed.
    pub last_error: Option<String>,
    pub provider: Option<String>,
    pub requested_by: Option<Uuid>,
    pub origin: String,
    pub send_at: DateTime<Utc>,
    pub next_attempt_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
}

pub const DELIVERY_COLUMNS: &str = "id, status, channel, address, user_id, template, \
    template_version, locale, category, digest_key, subject, attempts, last_error, provider, \
    requested_by, origin, send_at, next_attempt_at, created_at, sent_at";

/// One attempt at delivery and the server's answer.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
pub struct Attempt {
    pub attempt: i32,
    pub at: DateTime<Utc>,
    /// `sent`, `retry`, `failed` or `given_up`.
    pub outcome: String,
    pub provider: Option<String>,
    pub detail: Option<String>,
}

/// Accepts `new` in the caller's transaction: one message, or one more item in the open
/// digest of its address and key. Wakes the sender when the transaction commits.
pub async fn accept(conn: &mut PgConnection, new: NewMessage) -> Result<Accepted, sqlx::Error> {
    let id = Uuid::now_v7();
    if let (Some(by), Some((key, digest))) = (new.requested_by, &new.idempotency) {
        // A second request with the key waits here for the first one's transaction.
        let claimed = sqlx::query(
            "INSERT INTO requests (requested_by, idempotency_key, request_digest, message_id)
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(by)
        .bind(key)
        .bind(digest)
        .bind(id)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if claimed == 0 {
            // Only an earlier request with the key inserts nothing.
            return earlier(conn, by, key, digest)
                .await?
                .ok_or(sqlx::Error::RowNotFound);
        }
    }
    let now = Utc::now();
    let send_at = new.send_at.unwrap_or(now).max(now);
    let status = if send_at > now || new.digest.is_some() {
        "scheduled"
    } else {
        "queued"
    };
    let data = match &new.digest {
        Some(_) => serde_json::json!({ "items": [new.data] }),
        None => new.data.clone(),
    };
    // An open digest of the address and key (from the same sender, with the same template
    // version and locale) takes the item; its first message's settings (and its id, which
    // the request is then recorded with) stay.
    let delivery: Delivery = sqlx::query_as(&format!(
        "INSERT INTO messages (id, requested_by, origin, user_id, channel, address, template,
                 template_version, locale, category, critical, data, digest_key, status, send_at,
                 next_attempt_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $15)
             ON CONFLICT (address, channel, digest_key, requested_by, template,
                          template_version, locale)
                 WHERE digest_key IS NOT NULL AND status = 'scheduled'
             DO UPDATE SET data = jsonb_set(messages.data, '{{items}}',
                               (messages.data -> 'items') || (EXCLUDED.data -> 'items')),
                           updated_at = now()
             RETURNING {DELIVERY_COLUMNS}"
    ))
    .bind(id)
    .bind(new.requested_by)
    .bind(&new.origin)
    .bind(new.user_id)
    .bind(new.channel.as_str())
    .bind(&new.address)
    .bind(&new.template.key)
    .bind(new.template.version)
    .bind(&new.template.locale)
    .bind(&new.template.category)
    .bind(new.template.critical)
    .bind(&data)
    .bind(&new.digest)
    .bind(status)
    .bind(send_at)
    .fetch_one(&mut *conn)
    .await?;
    if delivery.id != id {
        if let (Some(by), Some((key, _))) = (new.requested_by, &new.idempotency) {
            sqlx::query(
                "UPDATE requests SET message_id = $3 WHERE requested_by = $1 AND idempotency_key = $2",
            )
            .bind(by)
            .bind(key)
            .bind(delivery.id)
            .execute(&mut *conn)
            .await?;
        }
    }
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(DUE)
        .execute(&mut *conn)
        .await?;
    Ok(Accepted::New(delivery))
}

/// What an earlier request with `key` from `by` made, if there was one: its message when
/// the request was the same (`digest`), `KeyReused` when it was another.
pub async fn earlier(
    conn: &mut PgConnection,
    by: Uuid,
    key: &str,
    digest: &[u8],
) -> Result<Option<Accepted>, sqlx::Error> {
    let found: Option<(Vec<u8>, Uuid)> = sqlx::query_as(
        "SELECT request_digest, message_id FROM requests
         WHERE requested_by = $1 AND idempotency_key = $2",
    )
    .bind(by)
    .bind(key)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((earlier, message)) = found else {
        return Ok(None);
    };
    if earlier != digest {
        return Ok(Some(Accepted::KeyReused));
    }
    let delivery = find(conn, message).await?.ok_or(sqlx::Error::RowNotFound)?;
    Ok(Some(Accepted::Replayed(delivery)))
}

pub async fn find(conn: &mut PgConnection, id: Uuid) -> Result<Option<Delivery>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM messages WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await
}

pub async fn attempts(conn: &mut PgConnection, id: Uuid) -> Result<Vec<Attempt>, sqlx::Error> {
    sqlx::query_as(
        "SELECT attempt, at, outcome, provider, detail FROM attempts
         WHERE message_id = $1 ORDER BY attempt",
    )
    .bind(id)
    .fetch_all(conn)
    .await
}

/// Filters of a listing; `requested_by` is forced to the caller's own for non-admins.
#[derive(Debug, Default)]
pub struct Filter {
    pub requested_by: Option<Uuid>,
    pub user_id: Option<Uuid>,
    pub status: Option<String>,
    /// Messages older than this one (ids are time-ordered).
    pub before: Option<Uuid>,
    pub limit: i64,
}

/// Newest first.
pub async fn list(conn: &mut PgConnection, filter: &Filter) -> Result<Vec<Delivery>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM messages
         WHERE ($1::uuid IS NULL OR requested_by = $1)
           AND ($2::uuid IS NULL OR user_id = $2)
           AND ($3::text IS NULL OR status = $3)
           AND ($4::uuid IS NULL OR id < $4)
         ORDER BY id DESC LIMIT $5"
    ))
    .bind(filter.requested_by)
    .bind(filter.user_id)
    .bind(&filter.status)
    .bind(filter.before)
    .bind(filter.limit)
    .fetch_all(conn)
    .await
}

/// The account is gone: what was still to be sent to it is cancelled, its data dropped.
pub async fn cancel_for_user(conn: &mut PgConnection, user_id: Uuid) -> Result<u64, sqlx::Error> {
    sqlx::query(
        "UPDATE messages SET status = 'cancelled', data = NULL, updated_at = now()
         WHERE user_id = $1 AND status IN ('scheduled', 'queued')",
    )
    .bind(user_id)
    .execute(conn)
    .await
    .map(|r| r.rows_affected())
}
