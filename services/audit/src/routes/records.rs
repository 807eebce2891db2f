//! `/api/v1/events` (direct reports, one or a batch) and `/api/v1/records` (search).
//!
//! Reporting needs the `admin` or `reporter` role; reading needs `admin` or `auditor`, and
//! every read is itself recorded (`audit.records.read`).

use axum::{
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use service_kit::{
    extract::{Json, Query},
    Identity,
};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::{
    chain::{self, Entry, Record, COLUMNS},
    entries::Report,
    error::ApiError,
    startup::SERVICE,
    state::AppState,
};

/// Roles that may read the log.
pub const READERS: [&str; 2] = ["admin", "auditor"];
/// Roles that may report to it directly.
pub const REPORTERS: [&str; 2] = ["admin", "reporter"];
/// The most reports one batch may carry.
pub const MAX_BATCH: usize = 1000;

/// Requires one of `roles`; the 403 names the first.
pub fn require_any(caller: &Identity, roles: &[&str]) -> Result<(), ApiError> {
    if roles.iter().any(|r| caller.has_role(r)) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(service_kit::identity::MissingRole(
            roles.join(" or "),
        )))
    }
}

/// Where a request came from: the first address the gateway saw (`X-Forwarded-For`).
pub fn origin_of(headers: &HeaderMap) -> Option<String> {
    let first = headers
        .get("x-forwarded-for")?
        .to_str()
        .ok()?
        .split(',')
        .next()?
        .trim();
    (!first.is_empty() && first.len() <= 100 && !first.chars().any(char::is_control))
        .then(|| first.to_owned())
}

/// Appends what a caller did to the log (a read of it, say), in its own transaction.
pub async fn record_access(
    state: &AppState,
    caller: &Identity,
    headers: &HeaderMap,
    action: &str,
    data: serde_json::Value,
) -> Result<(), ApiError> {
    let entry = Entry {
        event_id: Uuid::now_v7(),
        occurred_at: Utc::now(),
        source: SERVICE.to_owned(),
        actor: caller.user_id.to_string(),
        action: action.to_owned(),
        target: None,
        origin: origin_of(headers),
        data,
    };
    let mut tx = state.db.begin().await?;
    chain::append(
        &mut tx,
        &state.signer,
        state.settings.checkpoint_every,
        &[entry],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Something a service did, told directly rather than by an event.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportBody {
    /// Recorded once per id: the same report sent again is not recorded twice. Default: a
    /// new id.
    pub id: Option<Uuid>,
    /// When it happened, as the reporter says; default: now. Every record also carries
    /// `recorded_at`, this service's clock.
    pub occurred_at: Option<DateTime<Utc>>,
    /// Who acted; default: the caller.
    #[schema(
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub actor: Option<String>,
    /// What was done, e.g. `orders.order.refunded`: lowercase letters, digits, `.`, `_`, `-`.
    #[schema(max_length = 200, pattern = r"^[a-z0-9][a-z0-9._-]*$")]
    pub action: String,
    /// What it was done to.
    #[schema(
        max_length = 500,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub target: Option<String>,
    /// Anything else worth keeping (secrets, by their key's name, are redacted).
    #[schema(value_type = Option<Object>)]
    pub data: Option<serde_json::Map<String, serde_json::Value>>,
}

fn text(field: &'static str, value: &str, max: usize) -> Result<String, (&'static str, String)> {
    let ok = regex_like_text(value);
    if !ok {
        return Err((
            field,
            "must not be blank or contain control characters".to_owned(),
        ));
    }
    if value.chars().count() > max {
        return Err((field, format!("must be at most {max} characters")));
    }
    Ok(value.to_owned())
}

/// What the schema's pattern says: not all blank, no control characters.
fn regex_like_text(value: &str) -> bool {
    !value.chars().any(char::is_control) && value.chars().any(|c| !c.is_whitespace())
}

impl ReportBody {
    fn parse(self, caller: &Identity, now: DateTime<Utc>) -> Result<Report, ApiError> {
        let mut errors = Vec::new();
        let actor = match self.actor.as_deref() {
            None => caller.user_id.to_string(),
            Some(actor) => text("actor", actor, 200).unwrap_or_else(|e| {
                errors.push(e);
                String::new()
            }),
        };
        let action_ok = !self.action.is_empty()
            && self.action.len() <= 200
            && self
                .action
                .starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && self
                .action
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || ".-_".contains(c));
        if !action_ok {
            errors.push((
                "action",
                "must be 1 to 200 of a-z, 0-9, '.', '_', '-', starting with a letter or digit"
                    .to_owned(),
            ));
        }
        let target = match self.target.as_deref() {
            None => None,
            Some(target) => match text("target", target, 500) {
                Ok(t) => Some(t),
                Err(e) => {
                    errors.push(e);
                    None
                }
            },
        };
        // What the reporter says; `recorded_at`, this service's own clock, is beside it.
        let occurred_at = self.occurred_at.unwrap_or(now);
        if !errors.is_empty() {
            return Err(ApiError::Validation(errors));
        }
        Ok(Report {
            id: self.id.unwrap_or_else(Uuid::now_v7),
            occurred_at,
            actor,
            action: self.action,
            target,
            data: serde_json::Value::Object(self.data.unwrap_or_default()),
        })
    }
}

/// Where a report landed in the chain.
#[derive(Debug, Serialize, ToSchema)]
pub struct Recorded {
    pub event_id: Uuid,
    pub seq: i64,
    pub hash: String,
    /// True when this id had been recorded before (nothing new was written).
    pub duplicate: bool,
}

async fn report_all(
    state: &AppState,
    caller: &Identity,
    headers: &HeaderMap,
    bodies: Vec<ReportBody>,
) -> Result<Vec<Recorded>, ApiError> {
    let now = Utc::now();
    let reports = bodies
        .into_iter()
        .map(|body| body.parse(caller, now))
        .collect::<Result<Vec<_>, _>>()?;
    let origin = origin_of(headers);
    let entries: Vec<Entry> = reports
        .into_iter()
        .map(|report| report.into_entry("api", origin.clone()))
        .collect();
    let mut tx = state.db.begin().await?;
    let written = chain::append(
        &mut tx,
        &state.signer,
        state.settings.checkpoint_every,
        &entries,
    )
    .await?;
    tx.commit().await?;
    let mut recorded = Vec::with_capacity(entries.len());
    for (entry, written) in entries.iter().zip(written) {
        let (record, duplicate) = match written {
            Some(record) => (record, false),
            None => match chain::by_event_id(&state.db, entry.event_id).await? {
                Some(record) => (record, true),
                None => return Err(ApiError::NotFound("record")),
            },
        };
        recorded.push(Recorded {
            event_id: record.event_id,
            seq: record.seq,
            hash: record.hash,
            duplicate,
        });
    }
    Ok(recorded)
}

/// Record one thing a service did.
#[utoipa::path(
    post, path = "/api/v1/events", tag = "records", security(("gateway_identity" = [])),
    request_body = ReportBody,
    responses(
        (status = 201, body = Recorded, description = "Recorded"),
        (status = 200, body = Recorded, description = "Recorded before with this id; nothing new written"),
        (status = 403, description = "Neither admin nor reporter", content_type = "application/problem+json"),
        (status = 422, content_type = "application/problem+json"),
    )
)]
pub async fn report(
    State(state): State<AppState>,
    caller: Identity,
    headers: HeaderMap,
    Json(body): Json<ReportBody>,
) -> Result<Response, ApiError> {
    require_any(&caller, &REPORTERS)?;
    let mut recorded = report_all(&state, &caller, &headers, vec![body]).await?;
    let recorded = recorded.pop().ok_or(ApiError::NotFound("record"))?;
    let status = if recorded.duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(recorded)).into_response())
}

/// Reports sent together: recorded in one transaction, in order.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    #[schema(min_items = 1, max_items = 1000)]
    pub events: Vec<ReportBody>,
}

/// What a batch became, in the order sent.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchRecorded {
    pub records: Vec<Recorded>,
}

/// Record several things at once: all or none.
#[utoipa::path(
    post, path = "/api/v1/events/batch", tag = "records", security(("gateway_identity" = [])),
    request_body = Batch,
    responses(
        (status = 201, body = BatchRecorded),
        (status = 403, description = "Neither admin nor reporter", content_type = "application/problem+json"),
        (status = 422, content_type = "application/problem+json"),
    )
)]
pub async fn report_batch(
    State(state): State<AppState>,
    caller: Identity,
    headers: HeaderMap,
    Json(batch): Json<Batch>,
) -> Result<Response, ApiError> {
    require_any(&caller, &REPORTERS)?;
    if batch.events.is_empty() || batch.events.len() > MAX_BATCH {
        return Err(ApiError::field(
            "events",
            format!("must hold 1 to {MAX_BATCH} reports"),
        ));
    }
    let records = report_all(&state, &caller, &headers, batch.events).await?;
    Ok((StatusCode::CREATED, Json(BatchRecorded { records })).into_response())
}

/// Which records to find; all filters are exact and combine.
#[derive(Debug, Deserialize, IntoParams, Serialize)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct Search {
    #[param(max_length = 200)]
    pub actor: Option<String>,
    #[param(max_length = 200)]
    pub action: Option<String>,
    #[param(max_length = 500)]
    pub target: Option<String>,
    /// Occurred at or after.
    pub from: Option<DateTime<Utc>>,
    /// Occurred before.
    pub to: Option<DateTime<Utc>>,
    /// From a previous page's `next_cursor`.
    #[param(max_length = 18, pattern = r"^[0-9]{1,18}$")]
    pub cursor: Option<String>,
    /// 1 to 500; default 50.
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
}

/// A page of records, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecordPage {
    pub records: Vec<Record>,
    /// Pass as `cursor` for the next (older) page; absent on the last one.
    pub next_cursor: Option<String>,
}

/// Search the log, newest first. The search itself is recorded.
#[utoipa::path(
    get, path = "/api/v1/records", tag = "records", security(("gateway_identity" = [])),
    params(Search),
    responses(
        (status = 200, body = RecordPage),
        (status = 403, description = "Neither admin nor auditor", content_type = "application/problem+json"),
        (status = 422, content_type = "application/problem+json"),
    )
)]
pub async fn search(
    State(state): State<AppState>,
    caller: Identity,
    headers: HeaderMap,
    Query(search): Query<Search>,
) -> Result<Json<RecordPage>, ApiError> {
    require_any(&caller, &READERS)?;
    let limit = search.limit.unwrap_or(50);
    let cursor = match search.cursor.as_deref() {
        None => None,
        Some(c) => Some(
            c.parse::<i64>()
                .ok()
                .filter(|seq| *seq >= 0)
                .ok_or_else(|| ApiError::field("cursor", "is not a cursor this service gave"))?,
        ),
    };
    let checks = [
        (
            "limit",
            (!(1..=500).contains(&limit)).then(|| "must be 1 to 500".to_owned()),
        ),
        (
            "actor",
            (search
                .actor
                .as_ref()
                .is_some_and(|a| a.chars().count() > 200))
            .then(|| "must be at most 200 characters".to_owned()),
        ),
        (
            "action",
            (search
                .action
                .as_ref()
                .is_some_and(|a| a.chars().count() > 200))
            .then(|| "must be at most 200 characters".to_owned()),
        ),
        (
            "target",
            (search
                .target
                .as_ref()
                .is_some_and(|a| a.chars().count() > 500))
            .then(|| "must be at most 500 characters".to_owned()),
        ),
    ];
    if checks.iter().any(|(_, e)| e.is_some()) {
        return Err(ApiError::fields(checks));
    }
    let rows: Vec<chain::Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM audit_records
         WHERE ($1::text IS NULL OR actor = $1)
           AND ($2::text IS NULL OR action = $2)
           AND ($3::text IS NULL OR target = $3)
           AND ($4::timestamptz IS NULL OR occurred_at >= $4)
           AND ($5::timestamptz IS NULL OR occurred_at < $5)
           AND ($6::bigint IS NULL OR seq < $6)
         ORDER BY seq DESC LIMIT $7"
    ))
    .bind(&search.actor)
    .bind(&search.action)
    .bind(&search.target)
    .bind(search.from)
    .bind(search.to)
    .bind(cursor)
    .bind(limit + 1)
    .fetch_all(&state.db)
    .await?;
    let mut records = rows
        .into_iter()
        .map(chain::Row::into_record)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::Chain(e.into()))?;
    let next_cursor = if records.len() as i64 > limit {
        records.truncate(limit as usize);
        records.last().map(|r| r.seq.to_string())
    } else {
        None
    };
    let query = serde_json::to_value(&search).unwrap_or_default();
    record_access(&state, &caller, &headers, "audit.records.read", query).await?;
    Ok(Json(RecordPage {
        records,
        next_cursor,
    }))
}
