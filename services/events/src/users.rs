//! Published by the Users service, on its exchange `users`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Event;

/// A profile changed: which fields (custom attributes as `attributes.<name>`), by whom.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileUpdated {
    pub user_id: Uuid,
    pub changed: Vec<String>,
    /// Who changed it: the user, or an admin.
    pub actor_id: Uuid,
    pub updated_at: DateTime<Utc>,
}

impl Event for ProfileUpdated {
    const TYPE: &'static str = "users.profile.updated.v1";
    fn subject(&self) -> String {
        self.user_id.to_string()
    }
}

/// An account's owner (or an admin) asked for everything the platform holds about it: each
/// service answers with `<service>.privacy.exported.v1` ([`crate::privacy::Exported`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportRequested {
    pub export_id: Uuid,
    pub user_id: Uuid,
    pub requested_at: DateTime<Utc>,
}

impl Event for ExportRequested {
    const TYPE: &'static str = "users.export.requested.v1";
    fn subject(&self) -> String {
        self.user_id.to_string()
    }
}

/// An account is to be erased: each service forgets what it holds about it (or says why it
/// keeps it) and answers with `<service>.privacy.erasure_answered.v1`
/// ([`crate::privacy::ErasureAnswered`]); the auth service removes the account itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErasureRequested {
    pub erasure_id: Uuid,
    pub user_id: Uuid,
    /// Who asked: the account itself, or an admin.
    pub requested_by: Uuid,
    pub requested_at: DateTime<Utc>,
}

impl Event for ErasureRequested {
    const TYPE: &'static str = "users.erasure.requested.v1";
    fn subject(&self) -> String {
        self.user_id.to_string()
    }
}
