//! `/api/v1/preferences` (how the caller wants to be reached) and
//! `/api/v1/unsubscribe/{token}` (RFC 8058 one-click unsubscribe, reached without a token).

use axum::{
    extract::State,
    response::{Html, IntoResponse, Response},
};
use service_kit::{
    extract::{Json, Path},
    Identity,
};

use super::notifications::{valid_key, valid_locale, LOCALE_RULE, PHONE_RULE};
use crate::{
    error::ApiError,
    recipients::{self, Preferences, Unsubscribed},
    state::AppState,
};

/// The caller's preferences.
#[utoipa::path(
    get, path = "/api/v1/preferences", tag = "preferences", security(("gateway_identity" = [])),
    responses(
        (status = 200, body = Preferences),
        (status = 404, description = "The account's registration has not arrived yet", content_type = "application/problem+json"),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    caller: Identity,
) -> Result<Json<Preferences>, ApiError> {
    let mut conn = state.db.acquire().await?;
    let recipient = recipients::find(&mut conn, caller.user_id)
        .await?
        .ok_or(ApiError::NotFound("recipient"))?;
    Ok(Json(recipient.preferences()))
}

/// Replace the caller's preferences: honoured for every message not yet sent.
#[utoipa::path(
    put, path = "/api/v1/preferences", tag = "preferences", security(("gateway_identity" = [])),
    request_body = Preferences,
    responses(
        (status = 200, body = Preferences),
        (status = 404, description = "The account's registration has not arrived yet", content_type = "application/problem+json"),
        (status = 422, description = "An unknown channel, a bad category or locale", content_type = "application/problem+json"),
    )
)]
pub async fn put(
    State(state): State<AppState>,
    caller: Identity,
    Json(preferences): Json<Preferences>,
) -> Result<Json<Preferences>, ApiError> {
    let checks = [
        (
            "locale",
            preferences
                .locale
                .as_deref()
                .filter(|l| !valid_locale(l))
                .map(|_| LOCALE_RULE.to_owned()),
        ),
        (
            "phone",
            preferences
                .phone
                .as_deref()
                .filter(|p| !super::notifications::valid_phone(p))
                .map(|_| PHONE_RULE.to_owned()),
        ),
        (
            "categories",
            (preferences.categories.len() > 100
                || preferences.categories.keys().any(|c| !valid_key(c)))
            .then(|| "at most 100, each 1 to 64 of a-z, 0-9, `_`, `.` and `-`".to_owned()),
        ),
    ];
    if checks.iter().any(|(_, e)| e.is_some()) {
        return Err(ApiError::fields(checks));
    }
    let mut conn = state.db.acquire().await?;
    let saved = recipients::set_preferences(&mut conn, caller.user_id, &preferences)
        .await?
        .ok_or(ApiError::NotFound("recipient"))?;
    Ok(Json(saved.preferences()))
}

fn token_digest(token: &str) -> Result<Vec<u8>, ApiError> {
    // Tokens are what `OpaqueToken` makes: anything longer is not one.
    if token.is_empty() || token.len() > 128 {
        return Err(ApiError::NotFound("unsubscribe link"));
    }
    Ok(service_kit::opaque::digest(token))
}

/// RFC 8058 one-click unsubscribe: what a mail client POSTs (`List-Unsubscribe=One-Click`)
/// to the `List-Unsubscribe` URL. Stops the message's category for its address; needs no
/// access token, the link's token is the proof.
#[utoipa::path(
    post, path = "/api/v1/unsubscribe/{token}", tag = "preferences",
    params(("token" = String, Path, description = "From the mail's List-Unsubscribe header")),
    request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "`List-Unsubscribe=One-Click`"),
    responses(
        (status = 200, description = "Unsubscribed (again, if already)", body = Unsubscribed),
        (status = 404, description = "No message has this link", content_type = "application/problem+json"),
    )
)]
pub async fn unsubscribe(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Result<Json<Unsubscribed>, ApiError> {
    let digest = token_digest(&token)?;
    let mut conn = state.db.acquire().await?;
    let done = recipients::unsubscribe(&mut conn, &digest)
        .await?
        .ok_or(ApiError::NotFound("unsubscribe link"))?;
    tracing::info!(category = %done.category, "an address unsubscribed");
    Ok(Json(done))
}

/// The unsubscribe link opened in a browser: a page with a button that POSTs it. Opening
/// it changes nothing (RFC 8058: mail scanners follow links).
#[utoipa::path(
    get, path = "/api/v1/unsubscribe/{token}", tag = "preferences",
    params(("token" = String, Path, description = "From the mail's List-Unsubscribe header")),
    responses((status = 200, description = "A page asking to confirm", content_type = "text/html", body = String))
)]
pub async fn unsubscribe_page(Path(token): Path<String>) -> Response {
    // The token goes back only as a relative link; it is escaped like any text.
    let escaped: String = token
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        .take(128)
        .collect();
    Html(format!(
        "<!doctype html><meta charset=utf-8><title>Unsubscribe</title>\
         <form method=post action=\"{escaped}\">\
         <input type=hidden name=List-Unsubscribe value=One-Click>\
         <p>Stop receiving these messages?</p><button>Unsubscribe</button></form>"
    ))
    .into_response()
}
