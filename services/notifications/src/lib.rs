//! Gravity's Notifications service: mail from versioned templates (MiniJinja) over SMTP
//! (lettre), sent on the platform's events and from the API, every delivery tracked and
//! retried, recipients' preferences and one-click unsubscribe honoured.
//!
//! `main.rs` only parses arguments; everything it runs is here so tests drive the same code.
//! Callers are verified by the gateway, which passes their identity on in headers
//! (`service_kit::Identity`); this service keeps its data in its own database and tells other services what changed
//! through events (`service_kit::events`).

pub mod config;
pub mod email;
pub mod error;
pub mod messages;
pub mod privacy;
pub mod recipients;
pub mod routes;
pub mod sender;
pub mod sms;
pub mod startup;
pub mod state;
pub mod subscriptions;
pub mod templates;
