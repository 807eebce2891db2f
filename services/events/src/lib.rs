//! The events Gravity's services tell each other, and nothing else: each payload, its
//! versioned type and its subject. Publishers and consumers share this crate, never each
//! other's code; it depends on serde alone (and `serde_json` for the one payload that
//! carries free-form data) so that linking it costs a service nothing.
//!
//! **Versioning.** A type is `<service>.<entity>.<fact>.v<N>`. A change a consumer could
//! misread (a field removed, renamed or given another meaning) is a new type, `v<N+1>`,
//! published beside the old one until no consumer reads it; adding an optional field is not.
//!
//! On the wire each payload is the `data` of a CloudEvents 1.0 envelope
//! (`service_kit::events::Envelope`), routed by its type on the publisher's exchange.

pub mod auth;
pub mod privacy;
pub mod users;

use serde::{de::DeserializeOwned, Serialize};

/// A fact one service tells the others.
pub trait Event: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// `<service>.<entity>.<fact>.v<N>`, the CloudEvents `type` and the routing key.
    const TYPE: &'static str;

    /// What the event is about (an account's id, say): the CloudEvents `subject`. Events
    /// about one subject reach the broker in the order they were committed.
    fn subject(&self) -> String;
}

/// A fact every service tells in the same shape: an answer to a request made of the whole
/// platform (a privacy export, say). Each service publishes it on its own exchange as
/// `<service>.<FACT>`, so the type still names its publisher, and the asker binds
/// `*.<FACT>` on the exchange every event passes through, which takes in a service added
/// later with no change to the asker.
pub trait Reply: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// `<entity>.<fact>.v<N>`: the type without its publisher.
    const FACT: &'static str;

    /// What the reply is about: the CloudEvents `subject`.
    fn subject(&self) -> String;
}

/// The type of `R` told by `publisher`: `<publisher>.<FACT>`.
pub fn reply_type<R: Reply>(publisher: &str) -> String {
    format!("{publisher}.{}", R::FACT)
}

/// The fields of an event type's payload that a consumer keeping events wholesale (the
/// audit log) must drop: a secret (a reset token), or personal data gathered for its owner
/// alone (a service's part of an account's export).
pub fn secret_fields(event_type: &str) -> &'static [&'static str] {
    if event_type == auth::PasswordResetRequested::TYPE {
        &["token"]
    } else if event_type
        .split_once('.')
        .is_some_and(|(_, fact)| fact == <privacy::Exported as Reply>::FACT)
    {
        &["data"]
    } else {
        &[]
    }
}

/// The service that publishes events of `event_type`: the part before the first dot.
pub fn publisher(event_type: &str) -> &str {
    event_type.split('.').next().unwrap_or(event_type)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_names_its_publisher_and_a_version() {
        for ty in auth::TYPES {
            assert_eq!(publisher(ty), "auth", "{ty}");
            let version = ty.rsplit('.').next().unwrap_or_default();
            assert!(
                version.starts_with('v') && version[1..].parse::<u32>().is_ok(),
                "{ty}"
            );
            assert_eq!(ty.split('.').count(), 4, "{ty}");
        }
    }

    #[test]
    fn an_export_part_is_never_kept_wholesale_whoever_tells_it() {
        assert_eq!(secret_fields("notifications.privacy.exported.v1"), ["data"]);
        assert_eq!(
            secret_fields(&reply_type::<privacy::Exported>("orders")),
            ["data"]
        );
        assert_eq!(secret_fields(auth::PasswordResetRequested::TYPE), ["token"]);
        assert!(secret_fields("users.privacy.erasure_answered.v1").is_empty());
        assert!(secret_fields(auth::UserDeleted::TYPE).is_empty());
    }
}
