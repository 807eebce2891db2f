//! The auth service's settings, read once from the environment at start-up.

use std::time::Duration;

use service_kit::{
    app::ServiceSettings,
    config::{ConfigError, Env, RedisSettings},
};

#[derive(Clone, Debug)]
pub struct Settings {
    /// HTTP, database, migrations and the event broker, read as every service reads them.
    pub service: ServiceSettings,
    pub redis: RedisSettings,
    /// Prepended to every Redis key, so several platforms (or test runs) can share one Redis.
    pub redis_prefix: String,
    pub tokens: TokenSettings,
    pub throttle: ThrottleSettings,
}

#[derive(Clone, Debug)]
pub struct TokenSettings {
    pub issuer: String,
    pub audience: String,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub reset_ttl: Duration,
}

#[derive(Clone, Debug)]
pub struct ThrottleSettings {
    /// Failed logins allowed per account within `window` before further attempts get 429.
    pub per_account: u32,
    /// Failed logins allowed per client address within `window`.
    pub per_client: u32,
    pub window: Duration,
}

impl Settings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let redis_prefix: String = env.optional("REDIS_KEY_PREFIX", "auth:".to_owned())?;
        if redis_prefix.len() > 64 || redis_prefix.chars().any(|c| c.is_whitespace()) {
            return Err(ConfigError {
                var: "REDIS_KEY_PREFIX".into(),
                problem: "must be at most 64 characters without spaces".into(),
            });
        }
        let per_account: u32 = env.optional("LOGIN_MAX_FAILURES_PER_ACCOUNT", 5)?;
        let per_client: u32 = env.optional("LOGIN_MAX_FAILURES_PER_CLIENT", 50)?;
        for (var, v) in [
            ("LOGIN_MAX_FAILURES_PER_ACCOUNT", per_account),
            ("LOGIN_MAX_FAILURES_PER_CLIENT", per_client),
        ] {
            if v == 0 {
                return Err(ConfigError {
                    var: var.into(),
                    problem: "must be at least 1".into(),
                });
            }
        }
        let issuer: String = env.optional("JWT_ISSUER", "gravity-auth".to_owned())?;
        let audience: String = env.optional("JWT_AUDIENCE", "gravity".to_owned())?;
        Ok(Self {
            service: ServiceSettings::from_env(env)?,
            redis: RedisSettings::from_env(env)?,
            redis_prefix,
            tokens: TokenSettings {
                issuer,
                audience,
                access_ttl: env.seconds("ACCESS_TOKEN_TTL_SECS", 15 * 60, 24 * 3600)?,
                refresh_ttl: env.seconds(
                    "REFRESH_TOKEN_TTL_SECS",
                    30 * 24 * 3600,
                    365 * 24 * 3600,
                )?,
                reset_ttl: env.seconds("RESET_TOKEN_TTL_SECS", 30 * 60, 24 * 3600)?,
            },
            throttle: ThrottleSettings {
                per_account,
                per_client,
                window: env.seconds("LOGIN_THROTTLE_WINDOW_SECS", 15 * 60, 24 * 3600)?,
            },
        })
    }
}
