//! Request and response bodies: the wire format, kept apart from the domain types.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::accounts::UserRecord;

/// OAuth2 token response (RFC 6749 §5.1), so standard OAuth2 clients work unchanged.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    pub refresh_token: String,
    /// Always `bearer`.
    pub token_type: String,
    /// Access-token lifetime in seconds.
    pub expires_in: u64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UserView {
    pub id: Uuid,
    pub email: String,
    pub full_name: Option<String>,
    pub role: String,
    pub permissions: Vec<String>,
    pub is_active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<UserRecord> for UserView {
    fn from(u: UserRecord) -> Self {
        Self {
            id: u.id,
            email: u.email,
            full_name: u.full_name,
            role: u.role,
            permissions: u.permissions,
            is_active: u.is_active,
            created_at: u.created_at,
            updated_at: u.updated_at,
        }
    }
}

/// Registration, as JSON (`email`) or as an OAuth2-style form (`username`).
#[derive(Deserialize, ToSchema)]
pub struct RegisterRequest {
    #[serde(alias = "username")]
    #[schema(format = Email, max_length = 254)]
    pub email: String,
    #[schema(min_length = 10, max_length = 128)]
    pub password: String,
    #[serde(default)]
    pub full_name: Option<String>,
}

/// OAuth2 password grant (RFC 6749 §4.3.2): `username` is the email.
#[derive(Deserialize, ToSchema)]
pub struct LoginRequest {
    #[serde(alias = "email")]
    pub username: String,
    pub password: String,
    /// Optional; when sent it must be `password`.
    #[serde(default)]
    #[schema(pattern = "^password$", nullable = false)]
    pub grant_type: Option<String>,
    /// Accepted and ignored: every token carries the account's own permissions.
    #[serde(default)]
    #[schema(nullable = false)]
    pub scope: Option<String>,
}

#[derive(Deserialize, ToSchema)]
pub struct RefreshRequest {
    pub refresh_token: String,
    /// Optional; when sent it must be `refresh_token`.
    #[serde(default)]
    #[schema(pattern = "^refresh_token$")]
    pub grant_type: Option<String>,
}

#[derive(Deserialize, ToSchema)]
pub struct ChangePasswordRequest {
    pub current_password: String,
    #[schema(min_length = 10, max_length = 128)]
    pub new_password: String,
}

#[derive(Deserialize, ToSchema)]
pub struct ForgotPasswordRequest {
    #[schema(format = Email, max_length = 254)]
    pub email: String,
}

#[derive(Deserialize, ToSchema)]
pub struct ResetPasswordRequest {
    #[schema(min_length = 1, max_length = 256)]
    pub token: String,
    #[schema(min_length = 10, max_length = 128)]
    pub new_password: String,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct Accepted {
    pub detail: String,
}

/// Admin update of an account; absent fields are left as they are.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUserRequest {
    #[serde(default)]
    #[schema(format = Email, max_length = 254)]
    pub email: Option<String>,
    /// `null` clears the name.
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub full_name: Option<Option<String>>,
    #[serde(default)]
    pub is_active: Option<bool>,
}

#[derive(Deserialize, ToSchema)]
pub struct SetRoleRequest {
    /// The name of an existing role.
    #[schema(pattern = "^[a-z][a-z0-9_-]{1,31}$")]
    pub role: String,
}

#[derive(Deserialize, ToSchema)]
pub struct CreateRoleRequest {
    /// Lowercase, starting with a letter: 2 to 32 of a-z, 0-9, `_` and `-`.
    #[schema(pattern = "^[a-z][a-z0-9_-]{1,31}$")]
    pub name: String,
    #[serde(default)]
    #[schema(max_length = 500)]
    pub description: String,
    /// `resource:action` pairs, each of which the caller must hold itself.
    #[serde(default)]
    #[schema(max_items = 100, inline)]
    pub permissions: Vec<PermissionName>,
}

/// A permission as the wire carries it, `resource:action` (parsed by `domain::Permission`).
#[derive(Deserialize, ToSchema)]
#[serde(transparent)]
#[schema(pattern = "^[a-z][a-z0-9_-]{0,31}:[a-z][a-z0-9_-]{0,31}$")]
pub struct PermissionName(pub String);

#[derive(Debug, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct RoleView {
    pub id: Uuid,
    pub name: String,
    pub description: String,
    pub permissions: Vec<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UserFilter {
    /// Items per page, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// Items to skip (default 0, at most 1,000,000).
    #[param(maximum = 1_000_000)]
    pub offset: Option<u64>,
    /// Case-insensitive substring of the email.
    #[param(max_length = 254)]
    pub email: Option<String>,
    /// Exact role name.
    pub role: Option<String>,
    /// Only active (`true`) or only disabled (`false`) accounts.
    pub active: Option<bool>,
}

/// Tells "absent" (leave as is) from `null` (clear) for optional fields of an update.
mod double_option {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de>,
    {
        Option::<T>::deserialize(d).map(Some)
    }
}
