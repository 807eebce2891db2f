//! `/api/v1/notifications`: send a message (idempotently), and follow its delivery.

use axum::{
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use service_kit::{
    email::Email,
    extract::{Json, Path, Query},
    Identity,
};
use sha2::{Digest as _, Sha256};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::{
    error::ApiError,
    messages::{self, Accepted, Attempt, Channel, Delivery, Filter, NewMessage},
    recipients,
    state::AppState,
    templates,
};

/// May read and send everything.
pub const ADMIN: &str = "admin";
/// May send messages and follow its own (a service account, say).
pub const NOTIFIER: &str = "notifier";

pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// What a refused template key, category, locale or phone number is told.
pub const KEY_RULE: &str = "must be 1 to 64 of a-z, 0-9, `_`, `.` and `-`";
pub const LOCALE_RULE: &str = "must be a BCP 47 language tag such as en or fr-CA";
pub const PHONE_RULE: &str = "must be an E.164 number such as +15550001111";

/// Who a message goes to: an account (its address, number and locale are this service's),
/// or an address (`email`) or number (`phone`). Exactly one.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct To {
    pub user_id: Option<Uuid>,
    /// An E.164 number, for `sms`.
    #[schema(pattern = r"^\+[1-9][0-9]{6,14}$")]
    pub phone: Option<String>,
    /// An email address (with a dot in its domain).
    #[schema(max_length = 254, pattern = r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]
    pub email: Option<String>,
}

/// Gather this message with the others sent to the same address under `key` into one
/// message, sent `window_seconds` after the first (with the `digest` template's `items`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DigestRequest {
    #[schema(min_length = 1, max_length = 100)]
    pub key: String,
    #[schema(minimum = 1, maximum = 604800)]
    pub window_seconds: u32,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    pub to: To,
    /// `email` (the default) or `sms`.
    #[serde(default = "email")]
    pub channel: Channel,
    /// The template's key (`GET /api/v1/templates`).
    #[schema(pattern = r"^[a-z0-9][a-z0-9_.-]{0,63}$")]
    pub template: String,
    /// The locale to write it in when the template has it; the recipient's otherwise.
    #[schema(max_length = 35, pattern = r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$")]
    pub locale: Option<String>,
    /// What the template prints.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub data: Map<String, Value>,
    /// When to send it; now when left out or past.
    pub send_at: Option<DateTime<Utc>>,
    pub digest: Option<DigestRequest>,
}

fn email() -> Channel {
    Channel::Email
}

/// A message, its delivery and every attempt.
#[derive(Debug, Serialize, ToSchema)]
pub struct Message {
    #[serde(flatten)]
    pub delivery: Delivery,
    pub attempt_log: Vec<Attempt>,
}

/// Send a message from a template. Needs the `admin` or `notifier` role and an
/// `Idempotency-Key`: the same key with the same request answers what the first did; with
/// another request, 409.
#[utoipa::path(
    post, path = "/api/v1/notifications", tag = "notifications",
    security(("gateway_identity" = [])),
    params(
        ("Idempotency-Key" = String, Header, description = "1 to 255 visible ASCII characters, unique per request", pattern = r"^[\x21-\x7e]{1,255}$"),
    ),
    request_body = SendRequest,
    responses(
        (status = 202, description = "Accepted: queued, scheduled or added to an open digest", body = Delivery),
        (status = 403, description = "Neither admin nor notifier", content_type = "application/problem+json"),
        (status = 409, description = "The Idempotency-Key was used for another request", content_type = "application/problem+json"),
        (status = 422, description = "A missing key, an unknown template or recipient, data the template cannot print, or a channel with no server or provider configured (`channel-unavailable`)", content_type = "application/problem+json"),
    )
)]
pub async fn send(
    State(state): State<AppState>,
    caller: Identity,
    headers: HeaderMap,
    Json(request): Json<SendRequest>,
) -> Result<Response, ApiError> {
    if !caller.has_role(ADMIN) {
        caller.require_role(NOTIFIER)?;
    }
    let key = headers
        .get(IDEMPOTENCY_KEY)
        .and_then(|v| v.to_str().ok())
        .filter(|k| (1..=255).contains(&k.len()) && k.bytes().all(|b| (0x21..=0x7e).contains(&b)));
    let Some(key) = key.map(str::to_owned) else {
        return Err(ApiError::field(
            "Idempotency-Key",
            "the header is required: 1 to 255 visible ASCII characters, new for each request",
        ));
    };
    let checks = [
        (
            "to",
            ([
                request.to.user_id.is_some(),
                request.to.email.is_some(),
                request.to.phone.is_some(),
            ]
            .iter()
            .filter(|given| **given)
            .count()
                != 1)
                .then(|| "give one of user_id, email or phone".to_owned()),
        ),
        (
            "to.phone",
            match (&request.to.phone, request.channel) {
                (Some(p), _) if !valid_phone(p) => Some(PHONE_RULE.to_owned()),
                (Some(_), Channel::Email) => Some("is for sms; email needs an address".to_owned()),
                _ => None,
            },
        ),
        (
            "to.email",
            request
                .to
                .email
                .as_deref()
                .and_then(|e| match request.channel {
                    Channel::Sms => Some("is for email; sms needs a phone".to_owned()),
                    Channel::Email => Email::parse(e).err().map(|e| e.to_string()),
                }),
        ),
        (
            "template",
            (!valid_key(&request.template)).then(|| {
                "must be 1 to 64 of a-z, 0-9, `_`, `.` and `-`, starting with a letter or digit"
                    .to_owned()
            }),
        ),
        (
            "locale",
            request
                .locale
                .as_deref()
                .filter(|l| !valid_locale(l))
                .map(|_| LOCALE_RULE.to_owned()),
        ),
        (
            "digest.key",
            request
                .digest
                .as_ref()
                .filter(|d| d.key.is_empty() || d.key.chars().count() > 100)
                .map(|_| "must be 1 to 100 characters".to_owned()),
        ),
        (
            "digest.window_seconds",
            request
                .digest
                .as_ref()
                .filter(|d| !(1..=604_800).contains(&d.window_seconds))
                .map(|_| "must be 1 to 604800".to_owned()),
        ),
    ];
    if checks.iter().any(|(_, e)| e.is_some()) {
        return Err(ApiError::fields(checks));
    }
    // The request as sent, for telling a replay from a reuse of its key.
    let digest = Sha256::digest(
        serde_json::to_vec(&serde_json::json!({
            "to": [
                serde_json::json!(request.to.user_id),
                serde_json::json!(request.to.email),
                serde_json::json!(request.to.phone),
            ],
            "channel": request.channel,
            "template": request.template,
            "locale": request.locale,
            "data": request.data,
            "send_at": request.send_at,
            "digest": request.digest.as_ref().map(|d| (&d.key, d.window_seconds)),
        }))
        .unwrap_or_default(),
    )
    .to_vec();

    let mut tx = state.db.begin().await?;
    // A request seen before answers as it did, whatever changed since (a template, an
    // account, the configuration): first.
    if let Some(earlier) = messages::earlier(&mut tx, caller.user_id, &key, &digest).await? {
        tx.rollback().await?;
        return replayed(earlier);
    }
    match request.channel {
        Channel::Email if state.mailer.is_none() => {
            return Err(ApiError::ChannelUnavailable(
                "No SMTP server is configured: set SMTP_URL (and MAIL_FROM) for the notifications service."
                    .to_owned(),
            ))
        }
        Channel::Sms if state.texter.is_none() => {
            return Err(ApiError::ChannelUnavailable(
                "No SMS provider is configured: set SMS_PROVIDERS for the notifications service."
                    .to_owned(),
            ))
        }
        Channel::Email | Channel::Sms => {}
    }
    let (user_id, address, recipient_locale) =
        match (request.to.user_id, &request.to.email, &request.to.phone) {
            (Some(user), _, _) => {
                let recipient = recipients::find(&mut tx, user)
                    .await?
                    .ok_or_else(|| ApiError::field("to.user_id", "no such account"))?;
                let address = match request.channel {
                    Channel::Email => recipient.email.clone(),
                    Channel::Sms => recipient.phone.clone().ok_or_else(|| {
                        ApiError::field("to.user_id", "the account has no phone number")
                    })?,
                };
                (Some(user), address, recipient.locale.clone())
            }
            (None, Some(email), _) => (None, email.trim().to_lowercase(), None),
            (None, None, Some(phone)) => (None, phone.clone(), None),
            (None, None, None) => {
                return Err(ApiError::field("to", "give one of user_id, email or phone"))
            }
        };
    let fallback = &state.settings.default_locale;
    let locale = request
        .locale
        .clone()
        .or(recipient_locale)
        .unwrap_or_else(|| fallback.clone());
    let template = templates::resolve(&mut tx, &request.template, &locale, fallback)
        .await?
        .ok_or_else(|| ApiError::field("template", "no such template"))?;
    let data = Value::Object(request.data);
    // What the template prints must be there now, not found missing at send time.
    let probe = match &request.digest {
        Some(_) => serde_json::json!({ "items": [data] }),
        None => data.clone(),
    };
    state
        .templates
        .render(&template, &probe)
        .map_err(|e| ApiError::field("data", e))?;
    let send_at = match &request.digest {
        Some(d) => Some(Utc::now() + chrono::Duration::seconds(i64::from(d.window_seconds))),
        None => request.send_at,
    };
    let accepted = messages::accept(
        &mut tx,
        NewMessage {
            requested_by: Some(caller.user_id),
            origin: "api".to_owned(),
            idempotency: Some((key, digest)),
            user_id,
            channel: request.channel,
            address,
            template,
            data,
            send_at,
            digest: request.digest.map(|d| d.key),
        },
    )
    .await?;
    match accepted {
        Accepted::New(delivery) => {
            tx.commit().await?;
            Ok((StatusCode::ACCEPTED, axum::Json(delivery)).into_response())
        }
        earlier => {
            tx.rollback().await?;
            replayed(earlier)
        }
    }
}

/// The answer to a request whose Idempotency-Key was seen before.
fn replayed(earlier: Accepted) -> Result<Response, ApiError> {
    match earlier {
        Accepted::New(delivery) | Accepted::Replayed(delivery) => {
            let mut response = (StatusCode::ACCEPTED, axum::Json(delivery)).into_response();
            response
                .headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            Ok(response)
        }
        Accepted::KeyReused => Err(ApiError::KeyReused),
    }
}

pub fn valid_key(key: &str) -> bool {
    let mut bytes = key.bytes();
    (1..=64).contains(&key.len())
        && bytes
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b))
}

/// E.164: a plus, then 7 to 15 digits, the first not zero.
pub fn valid_phone(phone: &str) -> bool {
    phone.strip_prefix('+').is_some_and(|digits| {
        (7..=15).contains(&digits.len())
            && !digits.starts_with('0')
            && digits.bytes().all(|b| b.is_ascii_digit())
    })
}

pub fn valid_locale(locale: &str) -> bool {
    let mut parts = locale.split('-');
    let language = parts.next().unwrap_or("");
    locale.len() <= 35
        && (2..=3).contains(&language.len())
        && language.bytes().all(|b| b.is_ascii_alphabetic())
        && parts.all(|p| (1..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// A message and its delivery: for whoever sent it, and admins.
#[utoipa::path(
    get, path = "/api/v1/notifications/{id}", tag = "notifications",
    security(("gateway_identity" = [])),
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, body = Message),
        (status = 404, description = "No such message, or not the caller's", content_type = "application/problem+json"),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    caller: Identity,
    Path(id): Path<Uuid>,
) -> Result<Json<Message>, ApiError> {
    let mut conn = state.db.acquire().await?;
    let delivery = messages::find(&mut conn, id)
        .await?
        .filter(|d| caller.has_role(ADMIN) || d.requested_by == Some(caller.user_id))
        .ok_or(ApiError::NotFound("message"))?;
    let attempt_log = messages::attempts(&mut conn, id).await?;
    Ok(Json(Message {
        delivery,
        attempt_log,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// `scheduled`, `queued`, `sending`, `sent`, `failed`, `given_up`, `suppressed` or
    /// `cancelled`.
    #[param(inline)]
    pub status: Option<StatusFilter>,
    /// Messages to one account (admins only see others' messages).
    pub user_id: Option<Uuid>,
    /// From a previous page's `next_cursor`.
    pub cursor: Option<Uuid>,
    /// 1 to 200; default 50.
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StatusFilter {
    Scheduled,
    Queued,
    Sending,
    Sent,
    Failed,
    GivenUp,
    Suppressed,
    Cancelled,
}

impl StatusFilter {
    fn as_str(self) -> &'static str {
        match self {
            StatusFilter::Scheduled => "scheduled",
            StatusFilter::Queued => "queued",
            StatusFilter::Sending => "sending",
            StatusFilter::Sent => "sent",
            StatusFilter::Failed => "failed",
            StatusFilter::GivenUp => "given_up",
            StatusFilter::Suppressed => "suppressed",
            StatusFilter::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryPage {
    pub messages: Vec<Delivery>,
    /// Pass as `cursor` for the next page; absent on the last one.
    pub next_cursor: Option<Uuid>,
}

/// Messages, newest first: the caller's own, or everyone's for admins.
#[utoipa::path(
    get, path = "/api/v1/notifications", tag = "notifications",
    security(("gateway_identity" = [])),
    params(ListQuery),
    responses(
        (status = 200, body = DeliveryPage),
        (status = 422, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Identity,
    Query(query): Query<ListQuery>,
) -> Result<Json<DeliveryPage>, ApiError> {
    let limit = query.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::field("limit", "must be 1 to 200"));
    }
    let filter = Filter {
        requested_by: (!caller.has_role(ADMIN)).then_some(caller.user_id),
        user_id: query.user_id,
        status: query.status.map(|s| s.as_str().to_owned()),
        before: query.cursor,
        limit: limit + 1,
    };
    let mut conn = state.db.acquire().await?;
    let mut found = messages::list(&mut conn, &filter).await?;
    let next_cursor = if found.len() as i64 > limit {
        found.truncate(limit as usize);
        found.last().map(|d| d.id)
    } else {
        None
    };
    Ok(Json(DeliveryPage {
        messages: found,
        next_cursor,
    }))
}
