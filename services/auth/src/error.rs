//! `AuthError`: every way a request to the auth service can fail, and the problem+json each
//! one becomes. The `type` slugs are stable API.

use std::time::Duration;

use axum::{
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use service_kit::{jwt::TokenError, password::HashError, problem, Problem};

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("request failed validation")]
    Validation(Vec<(&'static str, String)>),
    #[error("email already registered")]
    EmailTaken,
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error("account is disabled")]
    AccountDisabled,
    /// A `grant_type` other than the one the endpoint takes, which it names.
    #[error("unsupported grant type; this endpoint takes {0}")]
    UnsupportedGrant(&'static str),
    #[error("not authenticated: {0}")]
    Unauthenticated(&'static str),
    #[error("invalid refresh token")]
    InvalidRefreshToken,
    #[error("refresh token reused; session revoked")]
    RefreshTokenReused,
    #[error("invalid or expired reset token")]
    InvalidResetToken,
    #[error("missing permission {0}")]
    Forbidden(&'static str),
    #[error("would grant or override permissions the caller does not hold")]
    Escalation,
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("role already exists")]
    RoleExists,
    #[error("unknown role {0}")]
    UnknownRole(String),
    #[error("would leave the platform without an active admin")]
    LastAdmin,
    #[error("too many failed logins")]
    Throttled { retry_after: Duration },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("redis error: {0}")]
    Redis(#[from] redis::RedisError),
    #[error(transparent)]
    Hash(#[from] HashError),
    #[error("token signing failed: {0}")]
    Signing(String),
    #[error("rendering a response failed: {0}")]
    Render(String),
    #[error("recording an event failed: {0}")]
    Events(#[from] service_kit::events::EventsError),
}

impl From<TokenError> for AuthError {
    fn from(e: TokenError) -> Self {
        AuthError::Unauthenticated(match e {
            TokenError::Expired => "token has expired",
            TokenError::UnknownKid => "token was signed by an unknown key",
            TokenError::Algorithm => "token algorithm is not allowed",
            TokenError::Signature => "token signature is invalid",
            TokenError::Issuer => "token issuer is not accepted",
            TokenError::Audience => "token audience is not accepted",
            TokenError::Malformed | TokenError::MissingKid => "token is malformed",
        })
    }
}

/// One field that failed to parse, and why.
pub type FieldError = (&'static str, String);

impl From<FieldError> for AuthError {
    fn from(error: FieldError) -> Self {
        AuthError::Validation(vec![error])
    }
}

impl AuthError {
    pub fn field(field: &'static str, message: impl std::fmt::Display) -> Self {
        AuthError::Validation(vec![(field, message.to_string())])
    }

    pub fn to_problem(&self) -> Problem {
        match self {
            AuthError::Validation(errors) => problem::validation(errors.clone()),
            AuthError::EmailTaken => Problem::new(StatusCode::CONFLICT, "email-taken", "Email already registered")
                .with_detail("An account with this email already exists; log in or reset its password."),
            AuthError::InvalidCredentials => {
                Problem::new(StatusCode::UNAUTHORIZED, "invalid-credentials", "Invalid credentials")
                    .with_detail("The email or password is wrong.")
            }
            AuthError::AccountDisabled => Problem::new(StatusCode::FORBIDDEN, "account-disabled", "Account disabled")
                .with_detail("This account has been disabled by an administrator."),
            AuthError::UnsupportedGrant(grant) => {
                Problem::new(StatusCode::BAD_REQUEST, "unsupported-grant-type", "Unsupported grant type")
                    .with_detail(format!("This endpoint accepts grant_type={grant} only."))
            }
            AuthError::Unauthenticated(why) => {
                Problem::new(StatusCode::UNAUTHORIZED, "unauthenticated", "Authentication required")
                    .with_detail(format!("Send a valid access token as 'Authorization: Bearer <token>' ({why})."))
                    .with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer error=\"invalid_token\""))
            }
            AuthError::InvalidRefreshToken => {
                Problem::new(StatusCode::UNAUTHORIZED, "invalid-refresh-token", "Invalid refresh token")
                    .with_detail("The refresh token is unknown, expired or revoked; log in again.")
            }
            AuthError::RefreshTokenReused => {
                Problem::new(StatusCode::UNAUTHORIZED, "refresh-token-reused", "Refresh token reused")
                    .with_detail("This refresh token was already used, so its session has been revoked; log in again.")
            }
            AuthError::InvalidResetToken => {
                Problem::new(StatusCode::BAD_REQUEST, "invalid-reset-token", "Invalid reset token")
                    .with_detail("The reset token is unknown, expired or already used; request a new one.")
            }
            AuthError::Forbidden(permission) => Problem::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden")
                .with_detail(format!("This action needs the '{permission}' permission.")),
            AuthError::Escalation => Problem::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden").with_detail(
                "This action would grant, or act on an account holding, permissions you do not have.",
            ),
            AuthError::NotFound(what) => {
                Problem::new(StatusCode::NOT_FOUND, "not-found", "Not found").with_detail(format!("No such {what}."))
            }
            AuthError::RoleExists => Problem::new(StatusCode::CONFLICT, "role-exists", "Role already exists")
                .with_detail("A role with this name exists; pick another name."),
            AuthError::UnknownRole(name) => problem::validation(vec![("role", format!("no role named {name:?}"))]),
            AuthError::LastAdmin => Problem::new(StatusCode::CONFLICT, "last-admin", "Last admin")
                .with_detail("This change would leave no active admin; promote another account first."),
            AuthError::Throttled { retry_after } => {
                let secs = retry_after.as_secs().max(1);
                Problem::new(StatusCode::TOO_MANY_REQUESTS, "login-throttled", "Too many failed logins")
                    .with_detail(format!("Too many failed attempts; retry in {secs} seconds."))
                    .with_extension("retry_after", secs)
                    .with_header(header::RETRY_AFTER, HeaderValue::from(secs))
            }
            AuthError::Database(sqlx::Error::PoolTimedOut | sqlx::Error::Io(_)) | AuthError::Redis(_) => {
                Problem::unavailable(self)
            }
            AuthError::Database(_) | AuthError::Hash(_) | AuthError::Signing(_) | AuthError::Render(_) | AuthError::Events(_) => Problem::internal(self),
        }
    }
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        self.to_problem().into_response()
    }
}

impl From<service_kit::pagination::PageError> for AuthError {
    fn from(e: service_kit::pagination::PageError) -> Self {
        AuthError::field(e.field(), e)
    }
}

/// True when a database error is a unique-constraint violation.
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}
