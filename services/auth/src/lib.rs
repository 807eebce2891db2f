//! Gravity's auth service: accounts, sessions (refresh-token families), EdDSA access tokens
//! published as a JWKS, roles and permissions, password resets, and the events other services react to (through the outbox).
//!
//! `main.rs` only parses arguments; everything it runs is here so tests drive the same code.

pub mod accounts;
pub mod authn;
pub mod config;
pub mod domain;
pub mod error;
pub mod invalidation;
pub mod keys;
pub mod privacy;
pub mod published;
pub mod resets;
pub mod routes;
pub mod sessions;
pub mod startup;
pub mod state;
pub mod throttle;
