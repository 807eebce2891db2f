//! The Users service's settings, read once from the environment at start-up.

use service_kit::{
    app::ServiceSettings,
    config::{ConfigError, Env},
};

#[derive(Clone, Debug)]
pub struct Settings {
    /// HTTP, database, migrations and the event broker, read as every service reads them.
    pub service: ServiceSettings,
}

impl Settings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            service: ServiceSettings::from_env(env)?,
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
    }
}
