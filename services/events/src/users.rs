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
