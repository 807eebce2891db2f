//! Privacy rights across the platform, coordinated here: an account's export and its
//! erasure are asked of every service over events (`users.export.requested.v1`,
//! `users.erasure.requested.v1`), and each service's answer
//! (`<service>.privacy.exported.v1`, `<service>.privacy.erasure_answered.v1`) is kept as it
//! arrives. The services asked are `PRIVACY_SERVICES`, which `gravity up` sets to every
//! service on the platform's broker; this service answers too, through the same events, with
//! what it holds itself ([`Profiles`]).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use events::{
    privacy::{ErasureAnswered, Exported, Outcome},
    users::{ErasureRequested, ExportRequested},
};
use serde::Serialize;
use serde_json::{json, Value};
use service_kit::{
    events::{Handled, HandlerError, Subscription},
    privacy::{Erasure, PersonalData},
};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{error::ApiError, startup::SERVICE};

/// The most recent activity entries an export carries (with the total).
const EXPORTED_ACTIVITY: i64 = 1000;

/// What this service holds about an account: its profile and its activity feed (and the
/// exports gathered for it, which erasure removes too).
pub struct Profiles;

impl PersonalData for Profiles {
    async fn export(&self, conn: &mut PgConnection, user: Uuid) -> Result<Value, HandlerError> {
        let profile: Option<Value> =
            sqlx::query_scalar("SELECT to_jsonb(p) - 'user_id' FROM profiles p WHERE user_id = $1")
                .bind(user)
                .fetch_optional(&mut *conn)
                .await?;
        let total: i64 = sqlx::query_scalar("SELECT count(*) FROM activity WHERE user_id = $1")
            .bind(user)
            .fetch_one(&mut *conn)
            .await?;
        let items: Vec<Value> = sqlx::query_scalar(
            "SELECT jsonb_build_object('event_type', event_type, 'occurred_at', occurred_at,
                                       'summary', summary)
             FROM activity WHERE user_id = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(user)
        .bind(EXPORTED_ACTIVITY)
        .fetch_all(&mut *conn)
        .await?;
        Ok(json!({
            "profile": profile,
            "activity": { "total": total, "items": items },
        }))
    }

    async fn erase(&self, conn: &mut PgConnection, user: Uuid) -> Result<Erasure, HandlerError> {
        let profiles = sqlx::query("DELETE FROM profiles WHERE user_id = $1")
            .bind(user)
            .execute(&mut *conn)
            .await?
            .rows_affected();
        let activity = sqlx::query("DELETE FROM activity WHERE user_id = $1")
            .bind(user)
            .execute(&mut *conn)
            .await?
            .rows_affected();
        let exports = sqlx::query("DELETE FROM exports WHERE user_id = $1")
            .bind(user)
            .execute(&mut *conn)
            .await?
            .rows_affected();
        if profiles + activity + exports == 0 {
            return Ok(Erasure::nothing_held());
        }
        Ok(Erasure::erased(format!(
            "{profiles} profile, {activity} activity entries and {exports} exports deleted"
        )))
    }
}

/// `users.answers`: every service's answers to this service's requests, whoever they are.
/// Batched: every effect is in the transaction.
pub fn answers() -> Subscription {
    Subscription::new("answers")
        .batched()
        .on_reply(exported)
        .on_reply(erasure_answered)
}

type Done = Result<Transaction<'static, Postgres>, HandlerError>;

/// One service's part of an export; kept only while the export is (a newer one, or the
/// account's erasure, removes it).
async fn exported(mut handled: Handled<Exported>) -> Done {
    let service = events::publisher(&handled.event_type);
    let answer = &handled.event;
    sqlx::query(
        "INSERT INTO export_parts (export_id, service, data)
         SELECT id, $2, $3 FROM exports WHERE id = $1 AND user_id = $4
         ON CONFLICT DO NOTHING",
    )
    .bind(answer.export_id)
    .bind(service)
    .bind(&answer.data)
    .bind(answer.user_id)
    .execute(&mut *handled.tx)
    .await?;
    Ok(handled.tx)
}

async fn erasure_answered(mut handled: Handled<ErasureAnswered>) -> Done {
    let service = events::publisher(&handled.event_type);
    let answer = &handled.event;
    sqlx::query(
        "INSERT INTO erasure_answers (erasure_id, service, outcome, detail)
         SELECT id, $2, $3, $4 FROM erasures WHERE id = $1 AND user_id = $5
         ON CONFLICT DO NOTHING",
    )
    .bind(answer.erasure_id)
    .bind(service)
    .bind(outcome_name(answer.outcome))
    .bind(&answer.detail)
    .bind(answer.user_id)
    .execute(&mut *handled.tx)
    .await?;
    if answer.outcome == Outcome::Refused {
        tracing::warn!(erasure = %answer.erasure_id, %service, detail = %answer.detail, "erasure refused");
    }
    Ok(handled.tx)
}

fn outcome_name(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Erased => "erased",
        Outcome::NothingHeld => "nothing_held",
        Outcome::Retained => "retained",
        Outcome::Refused => "refused",
    }
}

/// Everything the platform holds about an account, as far as it has been gathered.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Export {
    pub id: Uuid,
    pub user_id: Uuid,
    pub requested_at: DateTime<Utc>,
    /// Every service asked has answered.
    pub complete: bool,
    /// The services asked that have not answered yet.
    pub pending: Vec<String>,
    /// Each answering service's part, by service name, in that service's own shape.
    pub services: BTreeMap<String, ExportPart>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ExportPart {
    pub answered_at: DateTime<Utc>,
    #[schema(value_type = Object)]
    pub data: Value,
}

/// Where an erasure stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErasureStatus {
    /// Some services have not answered yet.
    Pending,
    /// Every service asked has answered, and none refused.
    Complete,
    /// A service refused (its answer says why); the others went ahead.
    Refused,
}

/// An account's erasure and each service's answer. Kept after the account is gone, as the
/// proof that it was erased: ids and outcomes only.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErasureReport {
    pub id: Uuid,
    pub user_id: Uuid,
    /// The account itself, or the admin who asked.
    pub requested_by: Uuid,
    pub requested_at: DateTime<Utc>,
    pub status: ErasureStatus,
    pub answers: Vec<ErasureAnswer>,
    /// The services asked that have not answered yet.
    pub pending: Vec<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct ErasureAnswer {
    pub service: String,
    /// `erased`, `nothing_held`, `retained` (the detail says why) or `refused` (likewise).
    #[schema(pattern = "^(erased|nothing_held|retained|refused)$")]
    pub outcome: String,
    pub detail: String,
    pub answered_at: DateTime<Utc>,
}

/// The services asked that have not answered.
fn pending<'a>(expected: &[String], answered: impl Iterator<Item = &'a String>) -> Vec<String> {
    let answered: BTreeSet<&String> = answered.collect();
    expected
        .iter()
        .filter(|s| !answered.contains(s))
        .cloned()
        .collect()
}

/// Asks every service for what it holds about `user`; replaces the account's earlier
/// exports. Refused while the account is being erased.
pub async fn request_export(
    db: &PgPool,
    user: Uuid,
    by: Uuid,
    expected: &[String],
) -> Result<Export, ApiError> {
    let mut tx = db.begin().await?;
    // One request at a time per account: the erasure check below cannot miss a concurrent
    // erasure, which takes the same lock.
    lock_account(&mut tx, user).await?;
    if open_erasure(&mut tx, user).await?.is_some() {
        return Err(ApiError::ErasureInProgress);
    }
    sqlx::query("DELETE FROM exports WHERE user_id = $1")
        .bind(user)
        .execute(&mut *tx)
        .await?;
    let id = Uuid::now_v7();
    let requested_at: DateTime<Utc> = sqlx::query_scalar(
        "INSERT INTO exports (id, user_id, requested_by, expected) VALUES ($1, $2, $3, $4)
         RETURNING requested_at",
    )
    .bind(id)
    .bind(user)
    .bind(by)
    .bind(expected)
    .fetch_one(&mut *tx)
    .await?;
    let event = ExportRequested {
        export_id: id,
        user_id: user,
        requested_at,
    };
    service_kit::events::record(&mut tx, SERVICE, &event).await?;
    tx.commit().await?;
    Ok(Export {
        id,
        user_id: user,
        requested_at,
        complete: expected.is_empty(),
        pending: expected.to_vec(),
        services: BTreeMap::new(),
    })
}

/// The account's latest export, as far as it has been gathered.
pub async fn latest_export(
    conn: &mut PgConnection,
    user: Uuid,
) -> Result<Option<Export>, ApiError> {
    let found: Option<(Uuid, DateTime<Utc>, Vec<String>)> = sqlx::query_as(
        "SELECT id, requested_at, expected FROM exports WHERE user_id = $1
         ORDER BY requested_at DESC LIMIT 1",
    )
    .bind(user)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((id, requested_at, expected)) = found else {
        return Ok(None);
    };
    let parts: Vec<(String, DateTime<Utc>, Value)> =
        sqlx::query_as("SELECT service, answered_at, data FROM export_parts WHERE export_id = $1")
            .bind(id)
            .fetch_all(&mut *conn)
            .await?;
    let services: BTreeMap<String, ExportPart> = parts
        .into_iter()
        .map(|(service, answered_at, data)| (service, ExportPart { answered_at, data }))
        .collect();
    let pending = pending(&expected, services.keys());
    Ok(Some(Export {
        id,
        user_id: user,
        requested_at,
        complete: pending.is_empty(),
        pending,
        services,
    }))
}

/// Asks every service to erase `user`, once `confirm` is the account's email address.
/// An erasure already under way (not refused) is answered again rather than asked twice.
pub async fn request_erasure(
    db: &PgPool,
    user: Uuid,
    by: Uuid,
    confirm: &str,
    expected: &[String],
) -> Result<ErasureReport, ApiError> {
    let mut tx = db.begin().await?;
    lock_account(&mut tx, user).await?;
    if let Some(id) = open_erasure(&mut tx, user).await? {
        let report = erasure(&mut tx, id)
            .await?
            .ok_or(ApiError::NotFound("erasure"))?;
        tx.commit().await?;
        return Ok(report);
    }
    let email: String = sqlx::query_scalar("SELECT email FROM profiles WHERE user_id = $1")
        .bind(user)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(ApiError::NotFound("profile"))?;
    if !email.eq_ignore_ascii_case(confirm.trim()) {
        return Err(ApiError::field(
            "confirm",
            "must be the account's email address, to confirm that this account is to be erased",
        ));
    }
    let id = Uuid::now_v7();
    let requested_at: DateTime<Utc> = sqlx::query_scalar(
        "INSERT INTO erasures (id, user_id, requested_by, expected) VALUES ($1, $2, $3, $4)
         RETURNING requested_at",
    )
    .bind(id)
    .bind(user)
    .bind(by)
    .bind(expected)
    .fetch_one(&mut *tx)
    .await?;
    let event = ErasureRequested {
        erasure_id: id,
        user_id: user,
        requested_by: by,
        requested_at,
    };
    service_kit::events::record(&mut tx, SERVICE, &event).await?;
    tx.commit().await?;
    tracing::info!(erasure = %id, %user, %by, "erasure requested");
    Ok(ErasureReport {
        id,
        user_id: user,
        requested_by: by,
        requested_at,
        status: if expected.is_empty() {
            ErasureStatus::Complete
        } else {
            ErasureStatus::Pending
        },
        answers: Vec::new(),
        pending: expected.to_vec(),
    })
}

/// Serialises export and erasure requests of one account (a transaction-scoped advisory
/// lock on its id).
async fn lock_account(conn: &mut PgConnection, user: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1::text, 0))")
        .bind(user)
        .execute(conn)
        .await?;
    Ok(())
}

/// The account's erasure that no service refused, if there is one.
async fn open_erasure(conn: &mut PgConnection, user: Uuid) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT e.id FROM erasures e WHERE e.user_id = $1
         AND NOT EXISTS (SELECT 1 FROM erasure_answers a
                         WHERE a.erasure_id = e.id AND a.outcome = 'refused')
         ORDER BY e.requested_at DESC LIMIT 1",
    )
    .bind(user)
    .fetch_optional(conn)
    .await
}

/// An erasure and the answers it has had.
pub async fn erasure(conn: &mut PgConnection, id: Uuid) -> Result<Option<ErasureReport>, ApiError> {
    let found: Option<(Uuid, Uuid, DateTime<Utc>, Vec<String>)> = sqlx::query_as(
        "SELECT user_id, requested_by, requested_at, expected FROM erasures WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((user_id, requested_by, requested_at, expected)) = found else {
        return Ok(None);
    };
    let answers: Vec<ErasureAnswer> = sqlx::query_as(
        "SELECT service, outcome, detail, answered_at FROM erasure_answers
         WHERE erasure_id = $1 ORDER BY answered_at, service",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    let pending = pending(&expected, answers.iter().map(|a| &a.service));
    let status = if answers.iter().any(|a| a.outcome == "refused") {
        ErasureStatus::Refused
    } else if pending.is_empty() {
        ErasureStatus::Complete
    } else {
        ErasureStatus::Pending
    };
    Ok(Some(ErasureReport {
        id,
        user_id,
        requested_by,
        requested_at,
        status,
        answers,
        pending,
    }))
}
