//! Gravity's Users service: a profile per account (made and removed by the auth service's
//! events), custom attributes under an admin's JSON Schema, preferences and an activity feed.
//!
//! `main.rs` only parses arguments; everything it runs is here so tests drive the same code.
//! Callers are verified by the gateway, which passes their identity on in headers
//! (`service_kit::Identity`); this service keeps its data in its own database and tells other services what changed
//! through events (`service_kit::events`).

pub mod activity;
pub mod config;
pub mod error;
pub mod privacy;
pub mod profiles;
pub mod routes;
pub mod schema;
pub mod startup;
pub mod state;
pub mod subscriptions;
