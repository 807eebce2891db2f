//! `/api/v1/verify`, `/api/v1/export`, `/api/v1/checkpoints` and `/api/v1/key`: proving the
//! log is whole. Readers only (`admin` or `auditor`); verifying and exporting are recorded.

use axum::{
    extract::State,
    http::{header, HeaderMap},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use service_kit::{
    extract::{Json, Query},
    Identity,
};
use utoipa::{IntoParams, ToSchema};

use crate::{
    chain::{self, ExportLine, Verification, COLUMNS},
    checkpoints::{self, Checkpoint},
    error::ApiError,
    routes::records::{record_access, require_any, READERS},
    state::AppState,
};

/// Recompute the whole chain and check it against the newest signed checkpoint; the answer
/// names the first broken link. Recorded as `audit.chain.verified`.
#[utoipa::path(
    get, path = "/api/v1/verify", tag = "chain", security(("gateway_identity" = [])),
    responses(
        (status = 200, body = Verification, description = "`ok` is false when a link is broken"),
        (status = 403, description = "Neither admin nor auditor", content_type = "application/problem+json"),
    )
)]
pub async fn verify(
    State(state): State<AppState>,
    caller: Identity,
    headers: HeaderMap,
) -> Result<Json<Verification>, ApiError> {
    require_any(&caller, &READERS)?;
    let verdict = chain::verify(&state.db, &state.signer).await?;
    let data = serde_json::json!({
        "ok": verdict.ok,
        "records": verdict.records,
        "first_broken": verdict.first_broken.as_ref().map(|b| b.seq),
    });
    record_access(&state, &caller, &headers, "audit.chain.verified", data).await?;
    Ok(Json(verdict))
}

/// Which records to export.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    /// The first record (default 1).
    #[param(minimum = 1)]
    pub from_seq: Option<i64>,
    /// At most this many records: 1 to 100000 (default 10000).
    #[param(minimum = 1, maximum = 100000)]
    pub limit: Option<i64>,
}

pub const MAX_EXPORT: i64 = 100_000;

/// Export records as JSON lines that verify on their own: first the anchor (the hash before
/// the first record), then the newest checkpoint among the exported records, then the
/// records. `audit verify-export FILE` checks such a file. Recorded as
/// `audit.records.exported`.
#[utoipa::path(
    get, path = "/api/v1/export", tag = "chain", security(("gateway_identity" = [])),
    params(ExportQuery),
    responses(
        (status = 200, content_type = "application/x-ndjson", body = String, description = "JSON lines: `anchor`, then `checkpoint` (if any), then each `record`"),
        (status = 403, description = "Neither admin nor auditor", content_type = "application/problem+json"),
        (status = 404, description = "No record before `from_seq`: the log is shorter", content_type = "application/problem+json"),
        (status = 422, content_type = "application/problem+json"),
    )
)]
pub async fn export(
    State(state): State<AppState>,
    caller: Identity,
    headers: HeaderMap,
    Query(query): Query<ExportQuery>,
) -> Result<Response, ApiError> {
    require_any(&caller, &READERS)?;
    let from = query.from_seq.unwrap_or(1);
    let limit = query.limit.unwrap_or(10_000);
    let checks = [
        (
            "from_seq",
            (from < 1).then(|| "must be at least 1".to_owned()),
        ),
        (
            "limit",
            (!(1..=MAX_EXPORT).contains(&limit)).then(|| format!("must be 1 to {MAX_EXPORT}")),
        ),
    ];
    if checks.iter().any(|(_, e)| e.is_some()) {
        return Err(ApiError::fields(checks));
    }
    // One snapshot for the anchor, the records and the checkpoint.
    let mut tx = state.db.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .execute(&mut *tx)
        .await?;
    let anchor: Option<Vec<u8>> = if from == 1 {
        Some(chain::GENESIS.to_vec())
    } else {
        sqlx::query_scalar("SELECT hash FROM audit_records WHERE seq = $1")
            .bind(from - 1)
            .fetch_optional(&mut *tx)
            .await?
    };
    let anchor = anchor.ok_or(ApiError::NotFound("record before from_seq"))?;
    let rows: Vec<chain::Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM audit_records WHERE seq >= $1 ORDER BY seq LIMIT $2"
    ))
    .bind(from)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    let last = rows.last().map_or(from - 1, |r| r.seq());
    let checkpoint: Option<Checkpoint> = checkpoints::latest_up_to(&mut *tx, last)
        .await?
        .filter(|c| c.seq >= from);
    tx.commit().await?;

    let mut body = String::new();
    let mut push = |line: &ExportLine| -> Result<(), ApiError> {
        body.push_str(&serde_json::to_string(line).map_err(|e| ApiError::Chain(e.into()))?);
        body.push('\n');
        Ok(())
    };
    push(&ExportLine::Anchor {
        seq: from - 1,
        hash: chain::hex(&anchor),
    })?;
    if let Some(checkpoint) = checkpoint {
        push(&ExportLine::Checkpoint(checkpoint))?;
    }
    let exported = rows.len();
    for row in rows {
        let record = row.into_record().map_err(|e| ApiError::Chain(e.into()))?;
        push(&ExportLine::Record(record))?;
    }
    let data = serde_json::json!({ "from_seq": from, "records": exported });
    record_access(&state, &caller, &headers, "audit.records.exported", data).await?;
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
}

/// Sign the chain's head now, if records came since the last checkpoint (the service also
/// does so on its own, regularly); the newest checkpoint.
#[utoipa::path(
    post, path = "/api/v1/checkpoints", tag = "chain", security(("gateway_identity" = [])),
    responses(
        (status = 200, body = Checkpoint),
        (status = 403, description = "Not an admin", content_type = "application/problem+json"),
        (status = 404, description = "The log is empty", content_type = "application/problem+json"),
    )
)]
pub async fn checkpoint(
    State(state): State<AppState>,
    caller: Identity,
) -> Result<Json<Checkpoint>, ApiError> {
    caller.require_role("admin")?;
    let checkpoint = checkpoints::checkpoint_head(&state.db, &state.signer)
        .await
        .map_err(|e| ApiError::Chain(e.into()))?;
    Ok(Json(checkpoint.ok_or(ApiError::NotFound("checkpoint"))?))
}

/// The newest signed checkpoint.
#[utoipa::path(
    get, path = "/api/v1/checkpoints/latest", tag = "chain", security(("gateway_identity" = [])),
    responses(
        (status = 200, body = Checkpoint),
        (status = 403, description = "Neither admin nor auditor", content_type = "application/problem+json"),
        (status = 404, description = "None signed yet", content_type = "application/problem+json"),
    )
)]
pub async fn latest_checkpoint(
    State(state): State<AppState>,
    caller: Identity,
) -> Result<Json<Checkpoint>, ApiError> {
    require_any(&caller, &READERS)?;
    let checkpoint = checkpoints::latest(&state.db).await?;
    Ok(Json(checkpoint.ok_or(ApiError::NotFound("checkpoint"))?))
}

/// The key checkpoints are signed with.
#[derive(Debug, Serialize, ToSchema)]
pub struct SigningKey {
    pub key_id: String,
    /// Ed25519 public key, base64url: pass to `audit verify-export --key` to pin it.
    pub public_key: String,
}

/// The public half of the signing key.
#[utoipa::path(
    get, path = "/api/v1/key", tag = "chain", security(("gateway_identity" = [])),
    responses(
        (status = 200, body = SigningKey),
        (status = 403, description = "Neither admin nor auditor", content_type = "application/problem+json"),
    )
)]
pub async fn key(
    State(state): State<AppState>,
    caller: Identity,
) -> Result<Json<SigningKey>, ApiError> {
    require_any(&caller, &READERS)?;
    Ok(Json(SigningKey {
        key_id: state.signer.key_id().to_owned(),
        public_key: state.signer.public_key(),
    }))
}
