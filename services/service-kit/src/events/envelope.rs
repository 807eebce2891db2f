//! The CloudEvents 1.0 envelope (JSON event format) every event travels in.

use chrono::{DateTime, Utc};
use events::{Event, Reply};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use uuid::Uuid;

/// Why a message cannot be handled, whatever the handler: it is parked at once, with this
/// reason, instead of being retried.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BadMessage {
    #[error("not a CloudEvent: {0}")]
    NotACloudEvent(String),
    #[error("CloudEvents specversion {0:?} is not 1.0")]
    SpecVersion(String),
    #[error("no handler for event type {0:?} (unknown type or version)")]
    UnknownType(String),
    #[error("payload of {event_type} does not parse: {reason}")]
    Payload { event_type: String, reason: String },
}

/// A CloudEvents 1.0 event in its JSON format, with the W3C `traceparent` extension so a
/// trace continues across the broker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub specversion: String,
    /// Unique per event; consumers deduplicate on it.
    pub id: Uuid,
    /// `/gravity/<service>`.
    pub source: String,
    /// `<service>.<entity>.<fact>.v<N>`.
    #[serde(rename = "type")]
    pub event_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    pub time: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datacontenttype: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    #[serde(default)]
    pub data: serde_json::Value,
}

impl Envelope {
    /// A new event from `service`, continuing the trace `traceparent` when there is one.
    pub fn new<E: Event>(
        service: &str,
        event: &E,
        traceparent: Option<&str>,
    ) -> Result<Self, serde_json::Error> {
        Self::of_type(
            service,
            E::TYPE.to_owned(),
            event.subject(),
            event,
            traceparent,
        )
    }

    /// `service`'s reply `R` (typed `<service>.<R::FACT>`, see [`Reply`]).
    pub fn reply<R: Reply>(
        service: &str,
        reply: &R,
        traceparent: Option<&str>,
    ) -> Result<Self, serde_json::Error> {
        let event_type = events::reply_type::<R>(service);
        Self::of_type(service, event_type, reply.subject(), reply, traceparent)
    }

    fn of_type(
        service: &str,
        event_type: String,
        subject: String,
        data: &impl Serialize,
        traceparent: Option<&str>,
    ) -> Result<Self, serde_json::Error> {
        Ok(Self {
            specversion: "1.0".to_owned(),
            id: Uuid::now_v7(),
            source: format!("/gravity/{service}"),
            event_type,
            subject: Some(subject),
            time: Utc::now(),
            datacontenttype: Some("application/json".to_owned()),
            traceparent: traceparent.map(str::to_owned),
            data: serde_json::to_value(data)?,
        })
    }

    /// Reads a message body; anything but a CloudEvents 1.0 JSON event is a [`BadMessage`].
    pub fn decode(body: &[u8]) -> Result<Self, BadMessage> {
        let envelope: Self =
            serde_json::from_slice(body).map_err(|e| BadMessage::NotACloudEvent(e.to_string()))?;
        if envelope.specversion != "1.0" {
            return Err(BadMessage::SpecVersion(envelope.specversion));
        }
        Ok(envelope)
    }

    /// The payload as `E`.
    pub fn data<E: DeserializeOwned>(&self) -> Result<E, BadMessage> {
        E::deserialize(&self.data).map_err(|e| BadMessage::Payload {
            event_type: self.event_type.clone(),
            reason: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use events::auth::UserDeleted;

    use super::*;

    #[test]
    fn an_event_round_trips_and_anything_else_is_named_for_what_it_is() {
        let event = UserDeleted {
            user_id: Uuid::now_v7(),
            deleted_at: Utc::now(),
        };
        let envelope = Envelope::new("auth", &event, Some("00-abc-def-01")).unwrap_or_else(|e| {
            panic!("{e}");
        });
        let wire = serde_json::to_vec(&envelope).unwrap_or_default();
        let text = String::from_utf8_lossy(&wire);
        assert!(text.contains(r#""type":"auth.user.deleted.v1""#), "{text}");
        assert!(text.contains(r#""source":"/gravity/auth""#), "{text}");
        let back = Envelope::decode(&wire);
        assert_eq!(back.as_ref(), Ok(&envelope));
        assert_eq!(envelope.data::<UserDeleted>(), Ok(event));

        assert!(matches!(
            Envelope::decode(b"hello"),
            Err(BadMessage::NotACloudEvent(_))
        ));
        let v2 = text.replace(r#""specversion":"1.0""#, r#""specversion":"0.3""#);
        assert_eq!(
            Envelope::decode(v2.as_bytes()),
            Err(BadMessage::SpecVersion("0.3".to_owned()))
        );
        let mut wrong = envelope.clone();
        wrong.data = serde_json::json!({ "user_id": 7 });
        assert!(matches!(
            wrong.data::<UserDeleted>(),
            Err(BadMessage::Payload { .. })
        ));
    }
}
