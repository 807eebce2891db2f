//! The Audit service's settings, read once from the environment at start-up.

use std::time::Duration;

use secrecy::SecretString;
use service_kit::{
    app::ServiceSettings,
    config::{ConfigError, Env},
};

#[derive(Clone, Debug)]
pub struct Settings {
    /// HTTP, database, migrations and the event broker, read as every service reads them.
    pub service: ServiceSettings,
    /// `PLATFORM_SIGNING_KEY`: the platform's Ed25519 key (PKCS#8, base64url) checkpoints are
    /// signed with. Unset: a key generated once and kept in the database.
    pub signing_key: Option<SecretString>,
    /// `CHECKPOINT_EVERY`: a checkpoint is signed each time the chain grows past a multiple
    /// of this many records (default 1000).
    pub checkpoint_every: i64,
    /// `CHECKPOINT_INTERVAL_SECS`: and at least this often while records come (default 60),
    /// which bounds the tail a cut could hide.
    pub checkpoint_interval: Duration,
}

impl Settings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let signing_key = match env.get("PLATFORM_SIGNING_KEY") {
            Some(_) => Some(env.secret("PLATFORM_SIGNING_KEY")?),
            None => None,
        };
        let checkpoint_every: i64 = env.optional("CHECKPOINT_EVERY", 1000)?;
        if checkpoint_every < 1 {
            return Err(ConfigError {
                var: "CHECKPOINT_EVERY".to_owned(),
                problem: "must be at least 1".to_owned(),
            });
        }
        Ok(Self {
            service: ServiceSettings::from_env(env)?,
            signing_key,
            checkpoint_every,
            checkpoint_interval: env.seconds("CHECKPOINT_INTERVAL_SECS", 60, 24 * 3600)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needs_a_database_url_and_names_it_when_missing() {
        let err = Settings::from_env(&Env::default()).unwrap_err();
        assert_eq!(err.var, "DATABASE_URL");
        let env = Env::from_pairs([("DATABASE_URL", "postgres://u:p@localhost/db")]);
        let settings = Settings::from_env(&env).unwrap();
        assert!(settings.service.migrate_on_start);
        assert!(
            settings.service.events.is_none(),
            "no broker without AMQP_URL"
        );
        assert_eq!(settings.checkpoint_every, 1000);
        assert!(settings.signing_key.is_none());
        let env = env.with("CHECKPOINT_EVERY", "0");
        assert_eq!(
            Settings::from_env(&env).unwrap_err().var,
            "CHECKPOINT_EVERY"
        );
    }
}
