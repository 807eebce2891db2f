//! Published by the auth service, on its exchange `auth`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Event;

/// Every type this module defines.
pub const TYPES: [&str; 6] = [
    UserRegistered::TYPE,
    UserUpdated::TYPE,
    UserDeleted::TYPE,
    UserRoleChanged::TYPE,
    SessionRevoked::TYPE,
    PasswordResetRequested::TYPE,
];

/// An account was created (by registration or by an admin).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRegistered {
    pub user_id: Uuid,
    pub email: String,
    pub full_name: Option<String>,
    pub role: String,
    pub registered_at: DateTime<Utc>,
}

impl Event for UserRegistered {
    const TYPE: &'static str = "auth.user.registered.v1";
    fn subject(&self) -> String {
        self.user_id.to_string()
    }
}

/// An account's email, name or active flag changed; every field is its value now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserUpdated {
    pub user_id: Uuid,
    pub email: String,
    pub full_name: Option<String>,
    pub is_active: bool,
    pub updated_at: DateTime<Utc>,
}

impl Event for UserUpdated {
    const TYPE: &'static str = "auth.user.updated.v1";
    fn subject(&self) -> String {
        self.user_id.to_string()
    }
}

/// An account was deleted: consumers forget what they hold about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserDeleted {
    pub user_id: Uuid,
    pub deleted_at: DateTime<Utc>,
}

impl Event for UserDeleted {
    const TYPE: &'static str = "auth.user.deleted.v1";
    fn subject(&self) -> String {
        self.user_id.to_string()
    }
}

/// An account's role, and with it its permissions, changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRoleChanged {
    pub user_id: Uuid,
    pub role: String,
    pub previous_role: String,
    /// Who changed it.
    pub changed_by: Uuid,
    pub changed_at: DateTime<Utc>,
}

impl Event for UserRoleChanged {
    const TYPE: &'static str = "auth.user.role_changed.v1";
    fn subject(&self) -> String {
        self.user_id.to_string()
    }
}

/// Sessions of an account were revoked (logout, password change or reset, reuse of a
/// refresh token, disabling): `session_id` is the one session, or `None` for every session
/// of the account but `kept` (the one that changed its password, say).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRevoked {
    pub user_id: Uuid,
    pub session_id: Option<Uuid>,
    pub kept: Option<Uuid>,
    pub reason: String,
    pub revoked_at: DateTime<Utc>,
}

impl Event for SessionRevoked {
    const TYPE: &'static str = "auth.session.revoked.v1";
    fn subject(&self) -> String {
        self.user_id.to_string()
    }
}

/// Someone asked to reset an account's password: the notifications service mails `token`.
///
/// **The token is a secret.** It travels only in this event. It is protected by what the
/// broker enforces: only the auth service may publish on its exchange, and only queues
/// bound by a service's own broker user receive it, so a service reads it only if it
/// subscribes to this type. The auth service stores only its SHA-256 digest, and its outbox
/// deletes the event once the broker has confirmed it; the token works once and
/// expires at `expires_at`, and no service may log it or store it beyond sending it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasswordResetRequested {
    pub user_id: Uuid,
    pub email: String,
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

impl std::fmt::Debug for PasswordResetRequested {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordResetRequested")
            .field("user_id", &self.user_id)
            .field("email", &self.email)
            .field("token", &"[redacted]")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl Event for PasswordResetRequested {
    const TYPE: &'static str = "auth.password_reset.requested.v1";
    fn subject(&self) -> String {
        self.user_id.to_string()
    }
}
