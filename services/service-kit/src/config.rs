//! Typed configuration read from the environment, once, at start-up.
//!
//! Written by hand rather than with `envy` or `figment`: the one thing this module must do well
//! is name the exact variable that is wrong and say why, and those crates report serde
//! messages that lose the variable's name for values that fail to parse.

use std::{collections::HashMap, fmt, str::FromStr, time::Duration};

use secrecy::SecretString;

/// A variable that is missing or does not parse.
#[derive(Debug, thiserror::Error)]
#[error("configuration variable {var}: {problem}")]
pub struct ConfigError {
    pub var: String,
    pub problem: String,
}

/// A view of the environment that reads typed values and names the variable on failure.
///
/// Built from the process environment in binaries and from a map in tests, so tests never
/// mutate global state.
#[derive(Clone, Debug, Default)]
pub struct Env {
    vars: HashMap<String, String>,
}

impl Env {
    pub fn from_process() -> Self {
        Self {
            vars: std::env::vars().collect(),
        }
    }

    pub fn from_pairs<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Self {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// Returns a copy with `var` set to `value`.
    pub fn with(mut self, var: &str, value: impl Into<String>) -> Self {
        self.vars.insert(var.to_owned(), value.into());
        self
    }

    /// The raw value of a variable, if set and not blank.
    pub fn get(&self, var: &str) -> Option<&str> {
        self.raw(var)
    }

    fn raw(&self, var: &str) -> Option<&str> {
        self.vars
            .get(var)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
    }

    pub fn required<T>(&self, var: &str) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        let raw = self.raw(var).ok_or_else(|| ConfigError {
            var: var.to_owned(),
            problem: "is not set; set it in the environment".to_owned(),
        })?;
        parse(var, raw)
    }

    pub fn optional<T>(&self, var: &str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        match self.raw(var) {
            Some(raw) => parse(var, raw),
            None => Ok(default),
        }
    }

    pub fn secret(&self, var: &str) -> Result<SecretString, ConfigError> {
        // The value itself is never echoed back, not even in an error.
        let raw = self.raw(var).ok_or_else(|| ConfigError {
            var: var.to_owned(),
            problem: "is not set; set it in the environment".to_owned(),
        })?;
        Ok(SecretString::from(raw.to_owned()))
    }

    /// A whole number of seconds, bounded to `1..=max_secs`.
    pub fn seconds(&self, var: &str, default: u64, max_secs: u64) -> Result<Duration, ConfigError> {
        let secs: u64 = self.optional(var, default)?;
        if secs == 0 || secs > max_secs {
            return Err(ConfigError {
                var: var.to_owned(),
                problem: format!("must be between 1 and {max_secs} seconds, got {secs}"),
            });
        }
        Ok(Duration::from_secs(secs))
    }

    /// A boolean written as `true`/`false`, `1`/`0`, `yes`/`no`.
    pub fn flag(&self, var: &str, default: bool) -> Result<bool, ConfigError> {
        match self.raw(var).map(|v| v.trim().to_ascii_lowercase()) {
            None => Ok(default),
            Some(v) => match v.as_str() {
                "true" | "1" | "yes" | "on" => Ok(true),
                "false" | "0" | "no" | "off" => Ok(false),
                _ => Err(ConfigError {
                    var: var.to_owned(),
                    problem: format!("must be true or false, got {v:?}"),
                }),
            },
        }
    }
}

fn parse<T>(var: &str, raw: &str) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    raw.trim().parse().map_err(|e: T::Err| ConfigError {
        var: var.to_owned(),
        problem: format!("cannot be parsed ({e})"),
    })
}

/// How the HTTP server listens and what it accepts. Shared by every service.
#[derive(Clone, Debug)]
pub struct HttpSettings {
    pub host: String,
    /// 0 picks a free port (tests do this).
    pub port: u16,
    pub request_timeout: Duration,
    pub body_limit_bytes: usize,
    /// Time given to in-flight requests after a shutdown signal.
    pub shutdown_grace: Duration,
    /// Time a client gets to send a request's headers before its connection is closed.
    pub header_read_timeout: Duration,
    /// Take the client address from the last `X-Forwarded-For` hop (only behind the gateway).
    pub trust_forwarded_for: bool,
    /// Log one line per request. Off by default: the gateway writes the platform's access log,
    /// and a JSON line per request costs a service about a quarter of its peak throughput.
    /// Failed requests (5xx) are always logged, with their cause and request id.
    pub access_log: bool,
    /// The gateway's public key for the callers' identity assertions (`IDENTITY_PUBLIC_KEY`,
    /// unpadded base64url), checked when read. Without it every identity is refused.
    pub identity_public_key: Option<String>,
}

impl HttpSettings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let body_limit_bytes: usize = env.optional("BODY_LIMIT_BYTES", 64 * 1024)?;
        if body_limit_bytes == 0 || body_limit_bytes > 64 * 1024 * 1024 {
            return Err(ConfigError {
                var: "BODY_LIMIT_BYTES".into(),
                problem: format!("must be between 1 and 67108864, got {body_limit_bytes}"),
            });
        }
        Ok(Self {
            host: env.optional("HOST", "0.0.0.0".to_owned())?,
            port: env.optional("PORT", 8000)?,
            request_timeout: env.seconds("REQUEST_TIMEOUT_SECS", 30, 3600)?,
            body_limit_bytes,
            shutdown_grace: env.seconds("SHUTDOWN_GRACE_SECS", 20, 600)?,
            header_read_timeout: env.seconds("HEADER_READ_TIMEOUT_SECS", 10, 600)?,
            trust_forwarded_for: env.flag("TRUST_FORWARDED_FOR", false)?,
            access_log: env.flag("ACCESS_LOG", false)?,
            identity_public_key: match env.get("IDENTITY_PUBLIC_KEY") {
                Some(key) if !key.trim().is_empty() => {
                    crate::identity::IdentityVerifier::from_base64(key).map_err(|e| {
                        ConfigError {
                            var: "IDENTITY_PUBLIC_KEY".into(),
                            problem: e.to_string(),
                        }
                    })?;
                    Some(key.trim().to_owned())
                }
                _ => None,
            },
        })
    }
}

/// Where the service's own PostgreSQL database is.
#[derive(Clone, Debug)]
pub struct DatabaseSettings {
    pub url: SecretString,
    pub max_connections: u32,
    pub acquire_timeout: Duration,
}

impl DatabaseSettings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let url = env.secret("DATABASE_URL")?;
        {
            use secrecy::ExposeSecret;
            let u = url.expose_secret();
            if !(u.starts_with("postgres://") || u.starts_with("postgresql://")) {
                return Err(ConfigError {
                    var: "DATABASE_URL".into(),
                    problem: "must start with postgres:// (e.g. postgres://user:pass@localhost:5432/auth)"
                        .into(),
                });
            }
        }
        let max_connections: u32 = env.optional("DATABASE_MAX_CONNECTIONS", 20)?;
        if max_connections == 0 || max_connections > 1000 {
            return Err(ConfigError {
                var: "DATABASE_MAX_CONNECTIONS".into(),
                problem: format!("must be between 1 and 1000, got {max_connections}"),
            });
        }
        Ok(Self {
            url,
            max_connections,
            acquire_timeout: env.seconds("DATABASE_ACQUIRE_TIMEOUT_SECS", 5, 300)?,
        })
    }

    /// A lazily connecting pool: the service starts even when the database is briefly down,
    /// and `/health/ready` says so.
    pub fn pool(&self) -> Result<sqlx::PgPool, ConfigError> {
        use secrecy::ExposeSecret;
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(self.max_connections)
            .acquire_timeout(self.acquire_timeout)
            .connect_lazy(self.url.expose_secret())
            .map_err(|e| ConfigError {
                var: "DATABASE_URL".into(),
                problem: format!("is not a valid URL ({e})"),
            })
    }
}

/// Where Redis is.
#[derive(Clone, Debug)]
pub struct RedisSettings {
    pub url: SecretString,
}

impl RedisSettings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let url = env.secret("REDIS_URL")?;
        {
            use secrecy::ExposeSecret;
            if redis::Client::open(url.expose_secret()).is_err() {
                return Err(ConfigError {
                    var: "REDIS_URL".into(),
                    problem: "is not a valid Redis URL (e.g. redis://localhost:6379/0)".into(),
                });
            }
        }
        Ok(Self { url })
    }

    pub fn client(&self) -> Result<redis::Client, ConfigError> {
        use secrecy::ExposeSecret;
        redis::Client::open(self.url.expose_secret()).map_err(|e| ConfigError {
            var: "REDIS_URL".into(),
            problem: format!("is not valid ({e})"),
        })
    }
}

/// Where the event broker is, and the service's exchange on it: `AMQP_URL` and
/// `AMQP_EXCHANGE`, which `gravity up` sets for a service that depends on a broker.
#[derive(Clone, Debug)]
pub struct EventSettings {
    pub amqp_url: SecretString,
    /// The service's own exchange, named after the service.
    pub exchange: String,
    /// `AMQP_EVERY_EVENT_EXCHANGE`: the exchange every service's exchange is bound to
    /// (default `events`, as `gravity up` declares it); a subscription to every event binds
    /// there.
    pub every_event_exchange: String,
}

impl EventSettings {
    /// `None` without `AMQP_URL`: the service then keeps its events in its outbox, to be
    /// published once it runs with a broker.
    pub fn from_env(env: &Env) -> Result<Option<Self>, ConfigError> {
        if env.get("AMQP_URL").is_none_or(str::is_empty) {
            return Ok(None);
        }
        let amqp_url = env.secret("AMQP_URL")?;
        {
            use secrecy::ExposeSecret;
            let url = amqp_url.expose_secret();
            if !(url.starts_with("amqp://") || url.starts_with("amqps://")) {
                return Err(ConfigError {
                    var: "AMQP_URL".into(),
                    problem: "is not an AMQP URL (amqp://user:password@host:5672/%2f)".into(),
                });
            }
        }
        let exchange: String = env.required("AMQP_EXCHANGE")?;
        let valid = !exchange.is_empty()
            && exchange.len() <= 64
            && exchange
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if !valid {
            return Err(ConfigError {
                var: "AMQP_EXCHANGE".into(),
                problem: "must be the service's name: 1 to 64 of a-z, 0-9, '-' and '_'".into(),
            });
        }
        let every_event_exchange: String = env.optional(
            "AMQP_EVERY_EVENT_EXCHANGE",
            crate::events::EVERY_EVENT_EXCHANGE.to_owned(),
        )?;
        Ok(Some(Self {
            amqp_url,
            exchange,
            every_event_exchange,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_off_without_a_broker_and_need_an_exchange_with_one() {
        assert!(matches!(EventSettings::from_env(&Env::default()), Ok(None)));
        let env = Env::from_pairs([("AMQP_URL", "amqp://u:p@localhost:5672/%2f")]);
        assert_eq!(
            EventSettings::from_env(&env).map(|_| ()).map_err(|e| e.var),
            Err("AMQP_EXCHANGE".to_owned())
        );
        let env = Env::from_pairs([
            ("AMQP_URL", "http://localhost"),
            ("AMQP_EXCHANGE", "orders"),
        ]);
        assert_eq!(
            EventSettings::from_env(&env).map(|_| ()).map_err(|e| e.var),
            Err("AMQP_URL".to_owned())
        );
        let env = Env::from_pairs([
            ("AMQP_URL", "amqp://u:p@localhost:5672/%2f"),
            ("AMQP_EXCHANGE", "orders"),
        ]);
        let settings = EventSettings::from_env(&env).ok().flatten();
        assert_eq!(settings.map(|s| s.exchange), Some("orders".to_owned()));
    }

    #[test]
    fn names_the_variable_that_does_not_parse() {
        let env = Env::from_pairs([("PORT", "eighty")]);
        let err = HttpSettings::from_env(&env).unwrap_err();
        assert_eq!(err.var, "PORT");
        assert!(err.to_string().contains("PORT"), "{err}");
    }

    #[test]
    fn names_a_missing_variable() {
        let err = DatabaseSettings::from_env(&Env::default()).unwrap_err();
        assert_eq!(err.var, "DATABASE_URL");
        assert!(err.problem.contains("not set"));
    }

    #[test]
    fn never_echoes_a_secret() {
        let env = Env::from_pairs([("DATABASE_URL", "mysql://root:hunter2@x")]);
        let err = DatabaseSettings::from_env(&env).unwrap_err();
        assert!(!err.to_string().contains("hunter2"));
    }

    #[test]
    fn flags_accept_words_and_refuse_anything_else() {
        let env = Env::from_pairs([("ACCESS_LOG", "yes")]);
        assert!(HttpSettings::from_env(&env).unwrap().access_log);
        let env = Env::from_pairs([("ACCESS_LOG", "maybe")]);
        assert_eq!(HttpSettings::from_env(&env).unwrap_err().var, "ACCESS_LOG");
    }

    #[test]
    fn bounds_durations() {
        let env = Env::from_pairs([("REQUEST_TIMEOUT_SECS", "0")]);
        let err = HttpSettings::from_env(&env).unwrap_err();
        assert_eq!(err.var, "REQUEST_TIMEOUT_SECS");
    }
}
