//! The event backbone: services tell each other what happened through RabbitMQ, never
//! through each other's databases.
//!
//! - [`Envelope`]: CloudEvents 1.0 (JSON), with `traceparent`. Payload types live in the
//!   serde-only `events` crate that publishers and consumers share.
//! - [`record`] and [`Relay`]: the transactional outbox. An event is written in the
//!   transaction of the change it reports; the relay publishes it to the service's own
//!   exchange with publisher confirms.
//! - [`Consumer`] and [`Subscription`]: durable queues bound by event type, an inbox that
//!   makes every effect happen once, retries with backoff and a parking queue.
//!
//! The tables both need are in every service's migrations (the template's
//! `migrations/20261202000000_events.sql` and `20261202120000_outbox_deletes.sql`).

mod consumer;
mod envelope;
mod outbox;

pub use consumer::{
    Consumer, ConsumerSettings, Handled, HandledEnvelope, HandlerError, Subscription,
    ATTEMPT_HEADER, ERROR_HEADER, EVERY_EVENT_EXCHANGE, QUEUE_HEADER,
};
pub use envelope::{BadMessage, Envelope};
pub use outbox::{record, record_reply, Relay, RelaySettings};
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("broker: {0}")]
    Broker(#[from] lapin::Error),
    #[error("encoding an event: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("the broker refused event {0}")]
    Refused(Uuid),
    #[error("the broker ended consuming {0}")]
    ConsumerEnded(String),
}
