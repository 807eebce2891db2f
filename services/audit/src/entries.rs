//! Entries: what the log records of an event and of a direct report, with secrets removed.
//!
//! Of an event: the action is its type, the target its subject, the source its publishing
//! service, and the actor who acted where the payload says (`actor_id`, `changed_by`), else
//! the account it is about (`user_id`: the user acted on their own account), else the
//! publishing service itself.

use chrono::{DateTime, Utc};
use serde_json::Value;
use service_kit::events::Envelope;
use uuid::Uuid;

use crate::chain::Entry;

/// What replaces a secret's value.
pub const REDACTED: &str = "[redacted]";

/// Payload keys dropped whatever the event type: a secret reaching the log by mistake is
/// caught by its name.
fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "token", "secret"]
        .iter()
        .any(|word| key.contains(word))
}

/// `value` with every secret replaced by [`REDACTED`]: the fields `secret_fields` names at
/// the top level, and any key whose name says it is one, at any depth.
pub fn redact(mut value: Value, secret_fields: &[&str]) -> Value {
    if let Value::Object(map) = &mut value {
        for field in secret_fields {
            if let Some(v) = map.get_mut(*field) {
                *v = Value::String(REDACTED.to_owned());
            }
        }
    }
    redact_named(&mut value);
    value
}

fn redact_named(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if is_secret_key(key) && !v.is_null() {
                    *v = Value::String(REDACTED.to_owned());
                } else {
                    redact_named(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_named),
        _ => {}
    }
}

/// The publishing service of an envelope (`/gravity/<service>`).
fn source_of(envelope: &Envelope) -> String {
    envelope
        .source
        .strip_prefix("/gravity/")
        .unwrap_or(&envelope.source)
        .to_owned()
}

/// The log entry an event makes.
pub fn of_event(envelope: &Envelope) -> Entry {
    let source = source_of(envelope);
    let data = redact(
        envelope.data.clone(),
        events::secret_fields(&envelope.event_type),
    );
    let actor = ["actor_id", "changed_by", "user_id"]
        .iter()
        .find_map(|key| data.get(*key).and_then(Value::as_str))
        .map_or_else(|| source.clone(), str::to_owned);
    Entry {
        event_id: envelope.id,
        occurred_at: envelope.time,
        actor,
        action: envelope.event_type.clone(),
        target: envelope.subject.clone(),
        origin: Some(envelope.source.clone()),
        source,
        data,
    }
}

/// A direct report, parsed: see `routes::records::Report` for the rules.
#[derive(Debug, Clone)]
pub struct Report {
    pub id: Uuid,
    pub occurred_at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub data: Value,
}

impl Report {
    pub fn into_entry(self, source: &str, origin: Option<String>) -> Entry {
        Entry {
            event_id: self.id,
            occurred_at: self.occurred_at,
            source: source.to_owned(),
            actor: self.actor,
            action: self.action,
            target: self.target,
            origin,
            data: redact(self.data, &[]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_are_redacted_by_type_and_by_name() {
        let data = json!({"user_id": "u", "token": "t0k", "nested": {"newPassword": "p", "ok": 1}, "list": [{"client_secret": "s"}]});
        let clean = redact(data, &["user_id"]);
        assert_eq!(clean["user_id"], REDACTED);
        assert_eq!(clean["token"], REDACTED);
        assert_eq!(clean["nested"]["newPassword"], REDACTED);
        assert_eq!(clean["nested"]["ok"], 1);
        assert_eq!(clean["list"][0]["client_secret"], REDACTED);
    }

    #[test]
    fn an_event_names_its_actor_target_and_source() {
        let envelope: Envelope = serde_json::from_value(json!({
            "specversion": "1.0", "id": Uuid::now_v7(), "source": "/gravity/auth",
            "type": "auth.user.role_changed.v1", "subject": "u1", "time": "2026-12-02T10:00:00Z",
            "data": {"user_id": "u1", "changed_by": "admin1", "role": "admin"}
        }))
        .unwrap();
        let entry = of_event(&envelope);
        assert_eq!(
            (entry.actor.as_str(), entry.source.as_str()),
            ("admin1", "auth")
        );
        assert_eq!(entry.target.as_deref(), Some("u1"));
        assert_eq!(entry.action, "auth.user.role_changed.v1");
    }

    #[test]
    fn a_reset_token_never_reaches_the_log() {
        let envelope: Envelope = serde_json::from_value(json!({
            "specversion": "1.0", "id": Uuid::now_v7(), "source": "/gravity/auth",
            "type": "auth.password_reset.requested.v1", "subject": "u1", "time": "2026-12-02T10:00:00Z",
            "data": {"user_id": "u1", "email": "a@b.c", "token": "secret", "expires_at": "2026-12-02T11:00:00Z"}
        }))
        .unwrap();
        let entry = of_event(&envelope);
        assert_eq!(entry.data["token"], REDACTED);
        assert_eq!(entry.actor, "u1");
    }
}
