//! `AppState`: what every handler can reach. Cheap to clone (handles only).

use std::sync::Arc;

use redis::aio::ConnectionManager;
use service_kit::password::PasswordHasher;
use sqlx::PgPool;

use crate::{
    authn::PrincipalCache, config::Settings, events::AuthEvents, keys::KeyRing,
    throttle::LoginThrottle,
};

#[derive(Clone)]
pub struct AppState {
    pub db: PgPool,
    pub redis: ConnectionManager,
    pub hasher: PasswordHasher,
    pub keys: KeyRing,
    pub throttle: LoginThrottle,
    pub events: AuthEvents,
    pub principals: PrincipalCache,
    pub settings: Arc<Settings>,
}
