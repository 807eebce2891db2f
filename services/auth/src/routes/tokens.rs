//! Register, log in, refresh, log out: the endpoints that hand out and take back tokens.

use axum::{extract::State, http::StatusCode, response::IntoResponse, Extension};
use secrecy::SecretString;
use service_kit::{
    extract::JsonOrForm, http::ClientAddr, jwt, opaque::OpaqueToken, Email, Password,
};
use uuid::Uuid;

use super::dto::{LoginRequest, RefreshRequest, RegisterRequest, TokenResponse};
use crate::{
    accounts::{self, UserRecord},
    authn::Principal,
    domain::DEFAULT_ROLE,
    error::{AuthError, FieldError},
    sessions,
    state::AppState,
};

/// Signs an access token for `user` in session `family` and pairs it with `refresh`.
pub fn token_response(
    state: &AppState,
    user: &UserRecord,
    family: Uuid,
    refresh: &OpaqueToken,
) -> Result<TokenResponse, AuthError> {
    let t = &state.settings.tokens;
    let claims = jwt::claims_now(
        &t.issuer,
        &t.audience,
        user.id,
        family,
        vec![user.role.clone()],
        t.access_ttl,
    );
    Ok(TokenResponse {
        access_token: state.keys.sign(&claims)?,
        refresh_token: refresh.expose().to_owned(),
        token_type: "bearer".to_owned(),
        expires_in: t.access_ttl.as_secs(),
    })
}

pub fn parse_new_password(field: &'static str, raw: String) -> Result<Password, FieldError> {
    Password::parse(SecretString::from(raw)).map_err(|e| (field, e.to_string()))
}

fn parse_full_name(raw: Option<String>) -> Result<Option<String>, FieldError> {
    match raw.map(|n| n.trim().to_owned()) {
        Some(n) if n.chars().count() > 200 => {
            Err(("full_name", "must be at most 200 characters".to_owned()))
        }
        Some(n) if n.chars().any(char::is_control) => Err((
            "full_name",
            "must not contain control characters".to_owned(),
        )),
        Some(n) if n.is_empty() => Ok(None),
        other => Ok(other),
    }
}

/// Create an account and start a session.
#[utoipa::path(
    post, path = "/api/v1/register", tag = "tokens",
    request_body(content = RegisterRequest, content_type = "application/json",
        description = "JSON, or a form with `username` for the email"),
    responses(
        (status = 201, body = TokenResponse, description = "Account created; tokens for it"),
        (status = 409, description = "Email already registered", content_type = "application/problem+json"),
        (status = 422, description = "Invalid email or weak password", content_type = "application/problem+json"),
    )
)]
pub async fn register(
    State(state): State<AppState>,
    JsonOrForm(body): JsonOrForm<RegisterRequest>,
) -> Result<impl IntoResponse, AuthError> {
    // Report every invalid field at once rather than one per round trip.
    let email = Email::parse(&body.email).map_err(|e| ("email", e.to_string()));
    let password = parse_new_password("password", body.password);
    let full_name = parse_full_name(body.full_name);
    let (email, password, full_name) = match (email, password, full_name) {
        (Ok(e), Ok(p), Ok(n)) => (e, p, n),
        (e, p, n) => {
            let errors = [e.err(), p.err(), n.err()].into_iter().flatten().collect();
            return Err(AuthError::Validation(errors));
        }
    };
    // Hash before taking a connection: a pooled connection held through 15 ms of argon2id
    // would starve the pool under a burst of registrations.
    let hash = state.hasher.hash(&password).await?;
    let mut tx = state.db.begin().await?;
    let user = accounts::insert(&mut tx, &email, &hash, full_name.as_deref(), DEFAULT_ROLE).await?;
    accounts::tell_registered(&mut tx, &user).await?;
    let (family, refresh) =
        sessions::start(&mut *tx, user.id, state.settings.tokens.refresh_ttl).await?;
    tx.commit().await?;
    tracing::info!(user = %user.id, "account registered");
    Ok((
        StatusCode::CREATED,
        axum::Json(token_response(&state, &user, family, &refresh)?),
    ))
}

/// OAuth2 password grant: exchange email and password for tokens.
#[utoipa::path(
    post, path = "/api/v1/login", tag = "tokens",
    request_body(content = LoginRequest, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, body = TokenResponse),
        (status = 401, description = "Wrong email or password", content_type = "application/problem+json"),
        (status = 429, description = "Too many failed attempts; see Retry-After", content_type = "application/problem+json"),
    )
)]
pub async fn login(
    State(state): State<AppState>,
    client: Option<Extension<ClientAddr>>,
    JsonOrForm(body): JsonOrForm<LoginRequest>,
) -> Result<axum::Json<TokenResponse>, AuthError> {
    if body.grant_type.as_deref().is_some_and(|g| g != "password") {
        return Err(AuthError::UnsupportedGrant("password"));
    }
    // Scopes are accepted for OAuth2 compatibility; permissions come from the account's role.
    let _ = body.scope;
    let client = client.map(|Extension(ClientAddr(ip))| ip);
    // An email that does not parse cannot have an account: same answer, same cost, as a
    // wrong password, so the endpoint reveals nothing about which inputs are well-formed.
    let email = Email::parse(&body.username)
        .map(|e| e.as_str().to_owned())
        .unwrap_or_else(|_| body.username.to_lowercase());
    // The attempt is counted before the password is checked, so concurrent guesses cannot
    // all slip through while the first is being hashed; a right password gives it back.
    let reservation = state.throttle.reserve(&email, client).await?;
    let password = SecretString::from(body.password);
    let user = accounts::authenticate(&state.db, &state.hasher, &email, &password).await?;
    state.throttle.succeeded(reservation).await?;
    let (family, refresh) =
        sessions::start(&state.db, user.id, state.settings.tokens.refresh_ttl).await?;
    Ok(axum::Json(token_response(&state, &user, family, &refresh)?))
}

/// Exchange a refresh token for a new pair. The old refresh token stops working; using it
/// again revokes the whole session.
#[utoipa::path(
    post, path = "/api/v1/refresh", tag = "tokens",
    request_body(content = RefreshRequest, content_type = "application/json"),
    responses(
        (status = 200, body = TokenResponse),
        (status = 401, description = "Unknown, expired, revoked or reused refresh token", content_type = "application/problem+json"),
    )
)]
pub async fn refresh(
    State(state): State<AppState>,
    JsonOrForm(body): JsonOrForm<RefreshRequest>,
) -> Result<axum::Json<TokenResponse>, AuthError> {
    if body
        .grant_type
        .as_deref()
        .is_some_and(|g| g != "refresh_token")
    {
        return Err(AuthError::UnsupportedGrant("refresh_token"));
    }
    if body.refresh_token.is_empty() || body.refresh_token.len() > 256 {
        return Err(AuthError::InvalidRefreshToken);
    }
    let rotated = match sessions::rotate(
        &state.db,
        &body.refresh_token,
        state.settings.tokens.refresh_ttl,
    )
    .await
    {
        Ok(rotated) => rotated,
        Err(e @ AuthError::RefreshTokenReused) => {
            state.events.publish("session-revoked").await;
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    let user = accounts::find(&state.db, rotated.user)
        .await?
        .ok_or(AuthError::InvalidRefreshToken)?;
    Ok(axum::Json(token_response(
        &state,
        &user,
        rotated.family,
        &rotated.token,
    )?))
}

/// End the caller's session: its refresh tokens stop working and the presented access token
/// is refused from now on.
#[utoipa::path(
    post, path = "/api/v1/logout", tag = "tokens", security(("bearer" = [])),
    responses((status = 204, description = "Logged out"), (status = 401, content_type = "application/problem+json"))
)]
pub async fn logout(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<StatusCode, AuthError> {
    let mut tx = state.db.begin().await?;
    sessions::revoke_family(&mut tx, principal.claims.sid, "logout").await?;
    tx.commit().await?;
    // Published as soon as the session is revoked, so no instance keeps the token cached
    // even if blocking its jti below fails.
    state.events.publish("logout").await;
    sessions::block_access_token(
        &state.redis,
        &state.settings.redis_prefix,
        principal.claims.jti,
        principal.claims.exp,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
