//! `/api/v1/users/me` (the caller's own profile, preferences and activity) and
//! `/api/v1/users` (admins: search, read and change any profile).

use axum::extract::State;
use events::{users::ProfileUpdated, Event as _};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use service_kit::{
    extract::{Json, Path, Query},
    Identity,
};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::{
    activity::{self, Activity},
    error::ApiError,
    profiles::{self, PatchError, Profile, COLUMNS},
    schema,
    startup::SERVICE,
    state::AppState,
};

/// The role that may read and change every profile and set the schema.
pub const ADMIN: &str = "admin";

/// A JSON Merge Patch (RFC 7396) of a profile: a field set to `null` is removed, one left
/// out is kept; `attributes` is merged attribute by attribute.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)] // documents the body; the handler reads it as JSON to keep null apart from absent
pub struct ProfilePatch {
    /// At most 100 characters, no control characters; blank or null removes it.
    #[schema(max_length = 100, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")]
    display_name: Option<String>,
    /// An `http(s)` URL; empty or null removes it.
    #[schema(max_length = 2000, pattern = r"^(https?://[^\s\x00-\x1f\x7f-\x9f]+)?$")]
    avatar_url: Option<String>,
    /// A BCP 47 language tag, e.g. `en-GB`; empty or null removes it.
    #[schema(max_length = 35, pattern = r"^([A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*)?$")]
    locale: Option<String>,
    /// An IANA time zone name, e.g. `Europe/Paris`; empty or null removes it.
    #[schema(max_length = 64, pattern = r"^[^\s]*$")]
    time_zone: Option<String>,
    /// Custom attributes, checked against the schema (`GET /api/v1/schema`).
    #[schema(value_type = Option<Object>)]
    attributes: Option<Value>,
}

fn patch_error(e: PatchError) -> ApiError {
    match e {
        PatchError::Invalid(errors) => ApiError::Fields(errors),
        PatchError::Forbidden(attribute) => ApiError::Forbidden(
            service_kit::identity::MissingRole(format!("{ADMIN} (to write attribute {attribute})")),
        ),
    }
}

/// Reads, checks, applies and tells one profile's change, in one transaction.
async fn change(
    state: &AppState,
    caller: &Identity,
    user_id: Uuid,
    patch: &Value,
    admin: bool,
) -> Result<Profile, ApiError> {
    let mut tx = state.db.begin().await?;
    let schema = schema::current(&mut tx, true).await?;
    let row = profiles::find(&mut tx, user_id, true)
        .await?
        .ok_or(ApiError::NotFound("profile"))?;
    let change = profiles::apply(&row, patch, &schema, admin).map_err(patch_error)?;
    let row = if change.changed.is_empty() {
        row
    } else {
        let saved = profiles::save(&mut tx, user_id, &change).await?;
        let event = ProfileUpdated {
            user_id,
            changed: change.changed.clone(),
            actor_id: caller.user_id,
            updated_at: saved.updated_at,
        };
        let id = service_kit::events::record(&mut tx, SERVICE, &event).await?;
        let summary = serde_json::json!({ "changed": change.changed, "by": caller.user_id });
        activity::add(
            &mut tx,
            user_id,
            id,
            ProfileUpdated::TYPE,
            saved.updated_at,
            summary,
        )
        .await?;
        saved
    };
    tx.commit().await?;
    Ok(row.seen_by(&schema, admin))
}

/// The caller's profile.
#[utoipa::path(
    get, path = "/api/v1/users/me", tag = "profiles", security(("gateway_identity" = [])),
    responses(
        (status = 200, body = Profile),
        (status = 404, description = "No profile yet: the account's registration has not arrived", content_type = "application/problem+json"),
    )
)]
pub async fn me(
    State(state): State<AppState>,
    caller: Identity,
) -> Result<Json<Profile>, ApiError> {
    let mut conn = state.db.acquire().await?;
    let found = profiles::find_with_schema_version(&mut conn, caller.user_id)
        .await?
        .ok_or(ApiError::NotFound("profile"))?;
    let schema = state.schemas.at(&mut conn, found.schema_version).await?;
    Ok(Json(found.row.seen_by(&schema, caller.has_role(ADMIN))))
}

/// Change the caller's profile with a JSON Merge Patch.
#[utoipa::path(
    patch, path = "/api/v1/users/me", tag = "profiles", security(("gateway_identity" = [])),
    request_body(content = ProfilePatch, content_type = "application/merge-patch+json"),
    responses(
        (status = 200, body = Profile),
        (status = 403, description = "An attribute only admins may write", content_type = "application/problem+json"),
        (status = 404, description = "No profile yet", content_type = "application/problem+json"),
        (status = 422, content_type = "application/problem+json"),
    )
)]
pub async fn patch_me(
    State(state): State<AppState>,
    caller: Identity,
    Json(patch): Json<Value>,
) -> Result<Json<Profile>, ApiError> {
    let admin = caller.has_role(ADMIN);
    Ok(Json(
        change(&state, &caller, caller.user_id, &patch, admin).await?,
    ))
}

/// Any profile: admins only.
#[utoipa::path(
    get, path = "/api/v1/users/{id}", tag = "profiles", security(("gateway_identity" = [])),
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, body = Profile),
        (status = 403, description = "Not an admin", content_type = "application/problem+json"),
        (status = 404, content_type = "application/problem+json"),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    caller: Identity,
    Path(id): Path<Uuid>,
) -> Result<Json<Profile>, ApiError> {
    caller.require_role(ADMIN)?;
    let mut conn = state.db.acquire().await?;
    let schema = schema::current(&mut conn, false).await?;
    let row = profiles::find(&mut conn, id, false)
        .await?
        .ok_or(ApiError::NotFound("profile"))?;
    Ok(Json(row.seen_by(&schema, true)))
}

/// Change any profile with a JSON Merge Patch: admins only.
#[utoipa::path(
    patch, path = "/api/v1/users/{id}", tag = "profiles", security(("gateway_identity" = [])),
    params(("id" = Uuid, Path)),
    request_body(content = ProfilePatch, content_type = "application/merge-patch+json"),
    responses(
        (status = 200, body = Profile),
        (status = 403, description = "Not an admin", content_type = "application/problem+json"),
        (status = 404, content_type = "application/problem+json"),
        (status = 422, content_type = "application/problem+json"),
    )
)]
pub async fn patch(
    State(state): State<AppState>,
    caller: Identity,
    Path(id): Path<Uuid>,
    Json(patch): Json<Value>,
) -> Result<Json<Profile>, ApiError> {
    caller.require_role(ADMIN)?;
    Ok(Json(change(&state, &caller, id, &patch, true).await?))
}

/// Which profiles to find; filters combine.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct Search {
    /// The email, whole, any case.
    #[param(max_length = 320)]
    pub email: Option<String>,
    /// Part of the display name, any case.
    #[param(max_length = 100)]
    pub name: Option<String>,
    /// A custom attribute's name; with `value`, profiles where it equals `value` (read as
    /// JSON when it parses, as a string otherwise); alone, profiles that have it.
    #[param(max_length = 100)]
    pub attribute: Option<String>,
    #[param(max_length = 1000)]
    pub value: Option<String>,
    /// From a previous page's `next_cursor`.
    pub cursor: Option<Uuid>,
    /// 1 to 200; default 50.
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
}

/// A page of profiles, in account order.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProfilePage {
    pub profiles: Vec<Profile>,
    /// Pass as `cursor` for the next page; absent on the last one.
    pub next_cursor: Option<Uuid>,
}

/// Search profiles by email, name or attribute: admins only.
#[utoipa::path(
    get, path = "/api/v1/users", tag = "profiles", security(("gateway_identity" = [])),
    params(Search),
    responses(
        (status = 200, body = ProfilePage),
        (status = 403, description = "Not an admin", content_type = "application/problem+json"),
        (status = 422, content_type = "application/problem+json"),
    )
)]
pub async fn search(
    State(state): State<AppState>,
    caller: Identity,
    Query(search): Query<Search>,
) -> Result<Json<ProfilePage>, ApiError> {
    caller.require_role(ADMIN)?;
    let limit = search.limit.unwrap_or(50);
    let too_long =
        |v: &Option<String>, max: usize| v.as_ref().is_some_and(|s| s.chars().count() > max);
    let checks = [
        (
            "limit",
            (!(1..=200).contains(&limit)).then(|| "must be 1 to 200".to_owned()),
        ),
        (
            "email",
            too_long(&search.email, 320).then(|| "must be at most 320 characters".to_owned()),
        ),
        (
            "name",
            too_long(&search.name, 100).then(|| "must be at most 100 characters".to_owned()),
        ),
        (
            "attribute",
            too_long(&search.attribute, 100).then(|| "must be at most 100 characters".to_owned()),
        ),
        (
            "value",
            too_long(&search.value, 1000).then(|| "must be at most 1000 characters".to_owned()),
        ),
        (
            "value",
            (search.value.is_some() && search.attribute.is_none())
                .then(|| "needs `attribute`".to_owned()),
        ),
    ];
    if checks.iter().any(|(_, e)| e.is_some()) {
        return Err(ApiError::fields(checks));
    }
    // `name` is matched as a substring: LIKE's wildcards in it are taken literally.
    let name = search.name.as_ref().map(|n| {
        let escaped = n
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        format!("%{}%", escaped.to_lowercase())
    });
    let attribute_match = match (&search.attribute, &search.value) {
        (Some(attribute), Some(value)) => {
            let value =
                serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.clone()));
            Some(serde_json::json!({ attribute: value }))
        }
        _ => None,
    };
    let mut conn = state.db.acquire().await?;
    let schema = schema::current(&mut conn, false).await?;
    let rows: Vec<profiles::Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM profiles
         WHERE ($1::text IS NULL OR lower(email) = lower($1))
           AND ($2::text IS NULL OR lower(display_name) LIKE $2)
           AND ($3::jsonb IS NULL OR attributes @> $3)
           AND ($4::text IS NULL OR attributes ? $4)
           AND ($5::uuid IS NULL OR user_id > $5)
         ORDER BY user_id LIMIT $6"
    ))
    .bind(&search.email)
    .bind(&name)
    .bind(&attribute_match)
    .bind(&search.attribute)
    .bind(search.cursor)
    .bind(limit + 1)
    .fetch_all(&mut *conn)
    .await?;
    let mut profiles: Vec<Profile> = rows.iter().map(|r| r.seen_by(&schema, true)).collect();
    let next_cursor = if profiles.len() as i64 > limit {
        profiles.truncate(limit as usize);
        profiles.last().map(|p| p.user_id)
    } else {
        None
    };
    Ok(Json(ProfilePage {
        profiles,
        next_cursor,
    }))
}

/// How the user wants to be reached and shown things.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Preferences {
    /// Mail the platform sends about the account and its activity.
    #[serde(default = "yes")]
    pub email_notifications: bool,
    #[serde(default)]
    pub sms_notifications: bool,
    #[serde(default)]
    pub push_notifications: bool,
    /// News and offers.
    #[serde(default)]
    pub marketing: bool,
    #[serde(default)]
    pub theme: Theme,
    /// How often events are gathered into one digest mail.
    #[serde(default)]
    pub digest: Digest,
}

fn yes() -> bool {
    true
}

impl Default for Preferences {
    fn default() -> Self {
        Self {
            email_notifications: true,
            sms_notifications: false,
            push_notifications: false,
            marketing: false,
            theme: Theme::System,
            digest: Digest::Never,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Theme {
    Light,
    Dark,
    #[default]
    System,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Digest {
    #[default]
    Never,
    Daily,
    Weekly,
}

/// The caller's preferences (defaults for what was never set).
#[utoipa::path(
    get, path = "/api/v1/users/me/preferences", tag = "profiles", security(("gateway_identity" = [])),
    responses(
        (status = 200, body = Preferences),
        (status = 404, description = "No profile yet", content_type = "application/problem+json"),
    )
)]
pub async fn preferences(
    State(state): State<AppState>,
    caller: Identity,
) -> Result<Json<Preferences>, ApiError> {
    let stored: Option<Value> =
        sqlx::query_scalar("SELECT preferences FROM profiles WHERE user_id = $1")
            .bind(caller.user_id)
            .fetch_optional(&state.db)
            .await?;
    let stored = stored.ok_or(ApiError::NotFound("profile"))?;
    // Stored by this service only, from a `Preferences`; a field added later takes its default.
    let preferences = serde_json::from_value(stored).unwrap_or_default();
    Ok(Json(preferences))
}

/// Replace the caller's preferences (fields left out take their defaults).
#[utoipa::path(
    put, path = "/api/v1/users/me/preferences", tag = "profiles", security(("gateway_identity" = [])),
    request_body = Preferences,
    responses(
        (status = 200, body = Preferences),
        (status = 404, description = "No profile yet", content_type = "application/problem+json"),
    )
)]
pub async fn set_preferences(
    State(state): State<AppState>,
    caller: Identity,
    Json(preferences): Json<Preferences>,
) -> Result<Json<Preferences>, ApiError> {
    let stored =
        serde_json::to_value(&preferences).map_err(|e| ApiError::Internal(e.to_string()))?;
    let done =
        sqlx::query("UPDATE profiles SET preferences = $2, updated_at = now() WHERE user_id = $1")
            .bind(caller.user_id)
            .bind(stored)
            .execute(&state.db)
            .await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::NotFound("profile"));
    }
    Ok(Json(preferences))
}

/// Which part of the feed.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ActivityQuery {
    /// From a previous page's `next_cursor`.
    #[param(minimum = 0)]
    pub cursor: Option<i64>,
    /// 1 to 200; default 50.
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
}

/// A page of the activity feed, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActivityPage {
    pub items: Vec<Activity>,
    pub next_cursor: Option<i64>,
}

/// What happened to the caller's account, newest first.
#[utoipa::path(
    get, path = "/api/v1/users/me/activity", tag = "profiles", security(("gateway_identity" = [])),
    params(ActivityQuery),
    responses(
        (status = 200, body = ActivityPage),
        (status = 422, content_type = "application/problem+json"),
    )
)]
pub async fn activity(
    State(state): State<AppState>,
    caller: Identity,
    Query(query): Query<ActivityQuery>,
) -> Result<Json<ActivityPage>, ApiError> {
    let limit = query.limit.unwrap_or(50);
    let checks = [
        (
            "limit",
            (!(1..=200).contains(&limit)).then(|| "must be 1 to 200".to_owned()),
        ),
        (
            "cursor",
            query
                .cursor
                .is_some_and(|c| c < 0)
                .then(|| "must not be negative".to_owned()),
        ),
    ];
    if checks.iter().any(|(_, e)| e.is_some()) {
        return Err(ApiError::fields(checks));
    }
    let mut conn = state.db.acquire().await?;
    let mut items = activity::page(&mut conn, caller.user_id, query.cursor, limit + 1).await?;
    let next_cursor = if items.len() as i64 > limit {
        items.truncate(limit as usize);
        items.last().map(|a| a.id)
    } else {
        None
    };
    Ok(Json(ActivityPage { items, next_cursor }))
}
