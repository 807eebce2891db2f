//! Gravity's Audit service: a tamper-evident record of who did what to what, when and from
//! where, fed by every event of every service and by direct reports.
//!
//! `main.rs` only parses arguments; everything it runs is here so tests drive the same code.
//! Callers are verified by the gateway, which passes their identity on in headers
//! (`service_kit::Identity`). The log is a hash chain (`chain`) with signed checkpoints
//! (`checkpoints`); entries are made from events in `subscriptions` and from requests in
//! `routes`.

pub mod chain;
pub mod checkpoints;
pub mod config;
pub mod entries;
pub mod error;
pub mod privacy;
pub mod routes;
pub mod startup;
pub mod state;
pub mod subscriptions;
