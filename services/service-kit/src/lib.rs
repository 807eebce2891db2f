//! What every Gravity service needs, in one place: typed configuration, RFC 9457 errors,
//! extractors that answer in the same shape, pagination, health checks, Prometheus metrics,
//! structured logs with request ids, graceful shutdown, password hashing, JWTs, and the
//! caller's identity as the gateway verified it.
//!
//! **Boundary:** this crate knows HTTP (axum), PostgreSQL (sqlx) and Redis, and nothing about
//! Docker or any one service's domain.

pub mod alloc;
pub mod app;
pub mod config;
pub mod email;
pub mod events;
pub mod extract;
pub mod health;
pub mod http;
pub mod identity;
pub mod jwt;
pub mod metrics;
pub mod opaque;
pub mod openapi;
pub mod pagination;
pub mod password;
pub mod privacy;
pub mod problem;
pub mod telemetry;
pub mod testing;

pub use email::Email;
pub use identity::Identity;
pub use password::Password;
pub use problem::Problem;
