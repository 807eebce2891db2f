//! `/api/v1/schema`: the admin's JSON Schema for custom attributes and the rules per
//! attribute. Replacing it checks every profile and names those that no longer fit.

use std::collections::BTreeMap;

use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use service_kit::{extract::Json, Identity};
use utoipa::ToSchema;

use crate::{
    error::ApiError,
    routes::profiles::ADMIN,
    schema::{self, AttributeSchema, Misfit, Rule, SchemaError},
    state::AppState,
};

/// Profiles listed in an answer (all are counted).
const MISFITS_LISTED: usize = 100;

/// The schema for custom attributes (anyone signed in may read it, to fill a form).
#[utoipa::path(
    get, path = "/api/v1/schema", tag = "schema", security(("gateway_identity" = [])),
    responses((status = 200, body = AttributeSchema))
)]
pub async fn get(
    State(state): State<AppState>,
    _caller: Identity,
) -> Result<Json<AttributeSchema>, ApiError> {
    let mut conn = state.db.acquire().await?;
    Ok(Json(schema::current(&mut conn, false).await?.schema))
}

/// A new schema.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSchema {
    /// A JSON Schema for the `attributes` object.
    #[schema(value_type = Object)]
    pub schema: Value,
    /// Per attribute: who reads it, who writes it, whether it is fixed once set.
    #[serde(default)]
    pub rules: BTreeMap<String, Rule>,
}

/// The schema now in force, and the profiles that do not fit it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Replaced {
    pub schema: AttributeSchema,
    /// How many profiles no longer fit.
    pub misfit_count: i64,
    /// The first of them, with why (at most 100).
    pub misfits: Vec<Misfit>,
}

/// Replace the schema: admins only. Profiles that no longer fit are kept as they are and
/// named in the answer; each must be fixed before its next change is accepted.
#[utoipa::path(
    put, path = "/api/v1/schema", tag = "schema", security(("gateway_identity" = [])),
    request_body = NewSchema,
    responses(
        (status = 200, body = Replaced),
        (status = 403, description = "Not an admin", content_type = "application/problem+json"),
        (status = 422, description = "Not a valid JSON Schema", content_type = "application/problem+json"),
    )
)]
pub async fn put(
    State(state): State<AppState>,
    caller: Identity,
    Json(body): Json<NewSchema>,
) -> Result<Json<Replaced>, ApiError> {
    caller.require_role(ADMIN)?;
    let mut tx = state.db.begin().await?;
    let (schema, misfits, misfit_count) =
        match schema::replace(&mut tx, body.schema, body.rules, MISFITS_LISTED).await {
            Ok(done) => done,
            Err(SchemaError::Invalid(reason)) => return Err(ApiError::field("schema", reason)),
            Err(e) => return Err(e.into()),
        };
    tx.commit().await?;
    Ok(Json(Replaced {
        schema,
        misfit_count,
        misfits,
    }))
}
