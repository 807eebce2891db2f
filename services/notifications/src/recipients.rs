//! Recipients: the platform's accounts as this service knows them (from the auth service's
//! events), with how each wants to be reached; and the addresses that unsubscribed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sqlx::{types::Json, PgConnection};
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Recipient {
    pub user_id: Uuid,
    pub email: String,
    pub phone: Option<String>,
    pub locale: Option<String>,
    pub opted_out: bool,
    pub channels: Json<Channels>,
    pub categories: Json<BTreeMap<String, bool>>,
}

/// How a user wants to be reached. Critical messages (a password reset they asked for) are
/// sent whatever these say.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Preferences {
    /// Nothing but critical messages.
    pub opted_out: bool,
    /// The locale messages are written in when a template has it (BCP 47, e.g. `fr-CA`);
    /// null for the platform's default.
    #[schema(max_length = 35, pattern = r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$")]
    pub locale: Option<String>,
    /// Where text messages go: an E.164 number (`+15550001111`); null for none.
    #[schema(pattern = r"^\+[1-9][0-9]{6,14}$")]
    pub phone: Option<String>,
    /// Channels turned on or off; one not named is on.
    pub channels: Channels,
    /// Categories turned on or off (`general`, `account`, `digest`, ...; each 1 to 64 of
    /// a-z, 0-9, `_`, `.` and `-`, at most 100); one not named is on.
    pub categories: BTreeMap<String, bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Channels {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sms: Option<bool>,
}

const COLUMNS: &str = "user_id, email, phone, locale, opted_out, channels, categories";

impl Recipient {
    pub fn preferences(&self) -> Preferences {
        Preferences {
            opted_out: self.opted_out,
            locale: self.locale.clone(),
            phone: self.phone.clone(),
            channels: self.channels.0.clone(),
            categories: self.categories.0.clone(),
        }
    }
}

pub async fn find(
    conn: &mut PgConnection,
    user_id: Uuid,
) -> Result<Option<Recipient>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM recipients WHERE user_id = $1"
    ))
    .bind(user_id)
    .fetch_optional(conn)
    .await
}

/// An account registered or changed its address.
pub async fn upsert(
    conn: &mut PgConnection,
    user_id: Uuid,
    email: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO recipients (user_id, email) VALUES ($1, $2)
         ON CONFLICT (user_id) DO UPDATE SET email = EXCLUDED.email, updated_at = now()",
    )
    .bind(user_id)
    .bind(email)
    .execute(conn)
    .await
    .map(|_| ())
}

pub async fn delete(conn: &mut PgConnection, user_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM recipients WHERE user_id = $1")
        .bind(user_id)
        .execute(conn)
        .await
        .map(|_| ())
}

pub async fn set_preferences(
    conn: &mut PgConnection,
    user_id: Uuid,
    preferences: &Preferences,
) -> Result<Option<Recipient>, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE recipients SET opted_out = $2, locale = $3, channels = $4, categories = $5,
             phone = $6, updated_at = now()
         WHERE user_id = $1 RETURNING {COLUMNS}"
    ))
    .bind(user_id)
    .bind(preferences.opted_out)
    .bind(&preferences.locale)
    .bind(Json(&preferences.channels))
    .bind(Json(&preferences.categories))
    .bind(&preferences.phone)
    .fetch_optional(conn)
    .await
}

/// What an unsubscribe link stopped: the address, and the category (`*` for everything).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Unsubscribed {
    pub address: String,
    pub category: String,
}

/// The address and category of the message whose unsubscribe link holds `digest`, now
/// suppressed. `None` when no message has that link.
pub async fn unsubscribe(
    conn: &mut PgConnection,
    digest: &[u8],
) -> Result<Option<Unsubscribed>, sqlx::Error> {
    let found: Option<(String, String)> = sqlx::query_as(
        "SELECT lower(address), category FROM messages WHERE unsubscribe_digest = $1",
    )
    .bind(digest)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((address, category)) = found else {
        return Ok(None);
    };
    sqlx::query(
        "INSERT INTO suppressions (address, category) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(&address)
    .bind(&category)
    .execute(conn)
    .await?;
    Ok(Some(Unsubscribed { address, category }))
}
