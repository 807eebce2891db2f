//! The Users service's settings, read once from the environment at start-up.

use crate::startup::SERVICE;
use service_kit::{
    app::ServiceSettings,
    config::{ConfigError, Env},
};

#[derive(Clone, Debug)]
pub struct Settings {
    /// HTTP, database, migrations and the event broker, read as every service reads them.
    pub service: ServiceSettings,
    /// The services asked for an account's export and erasure (`PRIVACY_SERVICES`, comma
    /// separated; `gravity up` names every service on the platform's broker). This service
    /// is always among them.
    pub privacy_services: Vec<String>,
}

impl Settings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            service: ServiceSettings::from_env(env)?,
            privacy_services: privacy_services(env.get("PRIVACY_SERVICES").unwrap_or(""))?,
        })
    }
}

fn privacy_services(list: &str) -> Result<Vec<String>, ConfigError> {
    let mut services = vec![SERVICE.to_owned()];
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let shaped = name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !shaped {
            return Err(ConfigError {
                var: "PRIVACY_SERVICES".to_owned(),
                problem: format!(
                    "names {name:?}, which is not a service name (lowercase letters, digits and -)"
                ),
            });
        }
        if !services.iter().any(|s| s == name) {
            services.push(name.to_owned());
        }
    }
    services.sort();
    Ok(services)
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
        assert_eq!(settings.privacy_services, ["users"]);
    }

    #[test]
    fn privacy_services_always_include_this_one_and_refuse_what_is_not_a_name() {
        let env = Env::from_pairs([
            ("DATABASE_URL", "postgres://u:p@localhost/db"),
            ("PRIVACY_SERVICES", " auth, audit ,users,,notifications"),
        ]);
        let settings = Settings::from_env(&env).unwrap();
        assert_eq!(
            settings.privacy_services,
            ["audit", "auth", "notifications", "users"]
        );
        let env = Env::from_pairs([
            ("DATABASE_URL", "postgres://u:p@localhost/db"),
            ("PRIVACY_SERVICES", "auth,Orders"),
        ]);
        let err = Settings::from_env(&env).unwrap_err();
        assert_eq!(err.var, "PRIVACY_SERVICES");
        assert!(err.problem.contains("\"Orders\""), "{}", err.problem);
    }
}
