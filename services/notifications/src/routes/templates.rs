//! `/api/v1/templates`: the message templates, their versions and previews.

use axum::{extract::State, http::StatusCode};
use serde::Deserialize;
use serde_json::{Map, Value};
use service_kit::{
    extract::{Json, Path},
    Identity,
};
use utoipa::ToSchema;

use super::notifications::{valid_key, valid_locale, ADMIN, KEY_RULE, LOCALE_RULE, NOTIFIER};
use crate::{
    error::ApiError,
    state::AppState,
    templates::{self, RenderError, Rendered, Template, MAX_PART},
};

/// The newest version of every template in every locale: admins and notifiers.
#[utoipa::path(
    get, path = "/api/v1/templates", tag = "templates", security(("gateway_identity" = [])),
    responses(
        (status = 200, body = Vec<Template>),
        (status = 403, description = "Neither admin nor notifier", content_type = "application/problem+json"),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Identity,
) -> Result<Json<Vec<Template>>, ApiError> {
    if !caller.has_role(ADMIN) {
        caller.require_role(NOTIFIER)?;
    }
    let mut conn = state.db.acquire().await?;
    Ok(Json(templates::latest(&mut conn).await?))
}

/// A new version of a template in a locale.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateBody {
    /// One line once rendered (line breaks become spaces).
    #[schema(min_length = 1, max_length = 1000, pattern = r"\S")]
    pub subject: String,
    #[schema(min_length = 1, max_length = 50000, pattern = r"\S")]
    pub text: String,
    #[schema(max_length = 50000)]
    pub html: Option<String>,
    /// Sent even to recipients who opted out; default false.
    #[serde(default)]
    pub critical: bool,
    /// What recipients opt out of; default `general`.
    #[schema(pattern = r"^[a-z0-9][a-z0-9_.-]{0,63}$")]
    pub category: Option<String>,
}

fn part_error(e: RenderError) -> ApiError {
    let RenderError::Template { part, reason } = e;
    ApiError::field(part, reason)
}

/// Save a new version of a template in a locale (admins). Every part must compile; the
/// versions before stay, for messages accepted with them.
#[utoipa::path(
    put, path = "/api/v1/templates/{key}/{locale}", tag = "templates",
    security(("gateway_identity" = [])),
    params(
        ("key" = String, Path, pattern = r"^[a-z0-9][a-z0-9_.-]{0,63}$"),
        ("locale" = String, Path, pattern = r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$", max_length = 35),
    ),
    request_body = TemplateBody,
    responses(
        (status = 201, description = "Saved as the next version", body = Template),
        (status = 403, description = "Not an admin", content_type = "application/problem+json"),
        (status = 422, description = "A part that does not compile, or a bad key or locale", content_type = "application/problem+json"),
    )
)]
pub async fn put(
    State(state): State<AppState>,
    caller: Identity,
    Path((key, locale)): Path<(String, String)>,
    Json(body): Json<TemplateBody>,
) -> Result<(StatusCode, Json<Template>), ApiError> {
    caller.require_role(ADMIN)?;
    let category = body
        .category
        .clone()
        .unwrap_or_else(|| "general".to_owned());
    let too_long = |s: &str| s.chars().count() > MAX_PART;
    let checks = [
        ("key", (!valid_key(&key)).then(|| KEY_RULE.to_owned())),
        (
            "locale",
            (!valid_locale(&locale)).then(|| LOCALE_RULE.to_owned()),
        ),
        (
            "subject",
            (body.subject.trim().is_empty() || body.subject.chars().count() > 1000)
                .then(|| "must be 1 to 1000 characters, not all blank".to_owned()),
        ),
        (
            "text",
            (body.text.trim().is_empty() || too_long(&body.text))
                .then(|| "must be 1 to 50000 characters, not all blank".to_owned()),
        ),
        (
            "html",
            body.html
                .as_deref()
                .filter(|h| too_long(h))
                .map(|_| "must be at most 50000 characters".to_owned()),
        ),
        (
            "category",
            (!valid_key(&category)).then(|| KEY_RULE.to_owned()),
        ),
    ];
    if checks.iter().any(|(_, e)| e.is_some()) {
        return Err(ApiError::fields(checks));
    }
    let template = Template {
        key,
        locale,
        version: 0,
        subject: body.subject,
        html: body.html.filter(|h| !h.trim().is_empty()),
        text: body.text,
        critical: body.critical,
        category,
    };
    templates::check(&template).map_err(part_error)?;
    let mut tx = state.db.begin().await?;
    let saved = templates::save(&mut tx, template, caller.user_id).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(saved)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreviewRequest {
    /// The locale wanted; the platform's default when left out.
    #[schema(max_length = 35, pattern = r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$")]
    pub locale: Option<String>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub data: Map<String, Value>,
}

#[derive(Debug, serde::Serialize, ToSchema)]
pub struct Preview {
    /// The locale and version that would be used.
    pub locale: String,
    pub version: i32,
    #[serde(flatten)]
    pub rendered: Rendered,
}

/// Render the template that a message in `locale` would use, with `data`: admins and
/// notifiers.
#[utoipa::path(
    post, path = "/api/v1/templates/{key}/preview", tag = "templates",
    security(("gateway_identity" = [])),
    params(("key" = String, Path, pattern = r"^[a-z0-9][a-z0-9_.-]{0,63}$")),
    request_body = PreviewRequest,
    responses(
        (status = 200, body = Preview),
        (status = 403, description = "Neither admin nor notifier", content_type = "application/problem+json"),
        (status = 404, description = "No such template", content_type = "application/problem+json"),
        (status = 422, description = "Data the template cannot print, or a bad locale", content_type = "application/problem+json"),
    )
)]
pub async fn preview(
    State(state): State<AppState>,
    caller: Identity,
    Path(key): Path<String>,
    Json(request): Json<PreviewRequest>,
) -> Result<Json<Preview>, ApiError> {
    if !caller.has_role(ADMIN) {
        caller.require_role(NOTIFIER)?;
    }
    if !valid_key(&key) {
        return Err(ApiError::NotFound("template"));
    }
    if let Some(locale) = request.locale.as_deref().filter(|l| !valid_locale(l)) {
        return Err(ApiError::field(
            "locale",
            format!("{locale:?} is not a BCP 47 language tag such as en or fr-CA"),
        ));
    }
    let fallback = &state.settings.default_locale;
    let locale = request.locale.unwrap_or_else(|| fallback.clone());
    let mut conn = state.db.acquire().await?;
    let template = templates::resolve(&mut conn, &key, &locale, fallback)
        .await?
        .ok_or(ApiError::NotFound("template"))?;
    let rendered = state
        .templates
        .render(&template, &Value::Object(request.data))
        .map_err(|e| ApiError::field("data", e))?;
    Ok(Json(Preview {
        locale: template.locale,
        version: template.version,
        rendered,
    }))
}
