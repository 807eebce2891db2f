//! `AppState`: what every handler can reach. One `Arc`, so the per-request clone axum makes
//! is a single atomic increment rather than one per handle.

use std::{ops::Deref, sync::Arc};

use redis::aio::ConnectionManager;
use service_kit::{password::PasswordHasher, telemetry::export::TracedRedis};
use sqlx::PgPool;

use crate::{
    authn::PrincipalCache, config::Settings, invalidation::AuthEvents, keys::KeyRing,
    throttle::LoginThrottle,
};

/// Redis, its commands client spans of the request that sends them when spans are exported.
pub type Redis = TracedRedis<ConnectionManager>;

pub struct Handles {
    pub db: PgPool,
    pub redis: Redis,
    pub hasher: PasswordHasher,
    pub keys: KeyRing,
    pub throttle: LoginThrottle,
    pub events: AuthEvents,
    pub principals: PrincipalCache,
    pub settings: Settings,
}

#[derive(Clone)]
pub struct AppState(Arc<Handles>);

impl AppState {
    pub fn new(handles: Handles) -> Self {
        Self(Arc::new(handles))
    }
}

impl Deref for AppState {
    type Target = Handles;

    fn deref(&self) -> &Handles {
        &self.0
    }
}
