//! The activity feed: what happened to an account, from the events that concern it.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgConnection;
use utoipa::ToSchema;
use uuid::Uuid;

/// One thing that happened to the account.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Activity {
    pub id: i64,
    /// The event's type, e.g. `auth.user.role_changed.v1`.
    pub event_type: String,
    pub occurred_at: DateTime<Utc>,
    /// What the event said that concerns the user (never a secret).
    #[schema(value_type = Object)]
    pub summary: Value,
}

/// Adds an entry, once per event.
pub async fn add(
    conn: &mut PgConnection,
    user_id: Uuid,
    event_id: Uuid,
    event_type: &str,
    occurred_at: DateTime<Utc>,
    summary: Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO activity (user_id, event_id, event_type, occurred_at, summary)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(user_id)
    .bind(event_id)
    .bind(event_type)
    .bind(occurred_at)
    .bind(summary)
    .execute(conn)
    .await?;
    Ok(())
}

/// A page of the feed, newest first, before `cursor` (an entry's id).
pub async fn page(
    conn: &mut PgConnection,
    user_id: Uuid,
    cursor: Option<i64>,
    limit: i64,
) -> Result<Vec<Activity>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, event_type, occurred_at, summary FROM activity
         WHERE user_id = $1 AND ($2::bigint IS NULL OR id < $2)
         ORDER BY id DESC LIMIT $3",
    )
    .bind(user_id)
    .bind(cursor)
    .bind(limit)
    .fetch_all(conn)
    .await
}
