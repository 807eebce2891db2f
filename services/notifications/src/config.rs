//! The Notifications service's settings, read once from the environment at start-up.

use std::time::Duration;

use lettre::message::Mailbox;
use secrecy::SecretString;
use service_kit::{
    app::ServiceSettings,
    config::{ConfigError, Env},
};

#[derive(Clone, Debug)]
pub struct Settings {
    /// HTTP, database, migrations and the event broker, read as every service reads them.
    pub service: ServiceSettings,
    /// The SMTP server mail goes out through; without one, mail is refused (`SMTP_URL`).
    pub smtp: Option<SmtpSettings>,
    /// Where this service is reached from outside (through the gateway), for the links it
    /// puts in messages: `NOTIFICATIONS_PUBLIC_URL`.
    pub public_url: String,
    /// The page a password reset mail links to; `{token}` is replaced by the reset token
    /// (`PASSWORD_RESET_URL`).
    pub reset_url: String,
    /// The locale used when neither the request nor the recipient names one
    /// (`DEFAULT_LOCALE`, `en`).
    pub default_locale: String,
    pub sender: SenderSettings,
    /// Text message providers, in failover order (`SMS_PROVIDERS`; see `sms.rs`); none
    /// means SMS is refused.
    pub sms: Vec<crate::sms::Provider>,
    /// Per provider request (`SMS_TIMEOUT_SECONDS`, 10).
    pub sms_timeout: Duration,
}

#[derive(Clone, Debug)]
pub struct SmtpSettings {
    /// `smtp://host:port` (plain, for a local catcher), `smtp://...?tls=required` (STARTTLS)
    /// or `smtps://...`; may carry a user and password. A secret: it is never logged.
    pub url: SecretString,
    /// `MAIL_FROM`: `Name <address>` or an address.
    pub from: Mailbox,
    /// Connections kept to the server (`SMTP_CONNECTIONS`, 8).
    pub connections: u32,
    /// Per SMTP command (`SMTP_TIMEOUT_SECONDS`, 30).
    pub timeout: Duration,
}

#[derive(Clone, Debug)]
pub struct SenderSettings {
    /// Messages taken from the queue at once (`SEND_BATCH`, 64).
    pub batch: u32,
    /// Attempts before a message is given up (`SEND_MAX_ATTEMPTS`, 6).
    pub max_attempts: u32,
    /// The wait before the first retry, doubled for each next one up to an hour
    /// (`SEND_RETRY_SECONDS`, 30).
    pub retry_after: Duration,
    /// How often the queue is looked at when nothing wakes the sender (`SEND_POLL_SECONDS`, 1).
    pub poll: Duration,
}

impl Settings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let smtp = match env.get("SMTP_URL") {
            None => None,
            Some(_) => {
                let from = env
                    .get("MAIL_FROM")
                    .unwrap_or("Gravity <no-reply@gravity.local>");
                let from = from.parse::<Mailbox>().map_err(|e| ConfigError {
                    var: "MAIL_FROM".to_owned(),
                    problem: format!("is not a mailbox (`Name <address>` or an address): {e}"),
                })?;
                let connections: u32 = env.optional("SMTP_CONNECTIONS", 8)?;
                if !(1..=100).contains(&connections) {
                    return Err(ConfigError {
                        var: "SMTP_CONNECTIONS".to_owned(),
                        problem: format!("must be 1 to 100, got {connections}"),
                    });
                }
                Some(SmtpSettings {
                    url: env.secret("SMTP_URL")?,
                    from,
                    connections,
                    timeout: env.seconds("SMTP_TIMEOUT_SECONDS", 30, 600)?,
                })
            }
        };
        let public_url = env
            .get("NOTIFICATIONS_PUBLIC_URL")
            .unwrap_or("http://localhost:8080/notifications")
            .trim_end_matches('/')
            .to_owned();
        url::Url::parse(&public_url).map_err(|e| ConfigError {
            var: "NOTIFICATIONS_PUBLIC_URL".to_owned(),
            problem: format!("is not a URL: {e}"),
        })?;
        let reset_url = env
            .get("PASSWORD_RESET_URL")
            .unwrap_or("http://localhost:8080/reset-password?token={token}")
            .to_owned();
        if !reset_url.contains("{token}") {
            return Err(ConfigError {
                var: "PASSWORD_RESET_URL".to_owned(),
                problem: "must contain {token}, where the reset token goes".to_owned(),
            });
        }
        let batch: u32 = env.optional("SEND_BATCH", 64)?;
        let max_attempts: u32 = env.optional("SEND_MAX_ATTEMPTS", 6)?;
        for (var, value, max) in [
            ("SEND_BATCH", batch, 1000),
            ("SEND_MAX_ATTEMPTS", max_attempts, 50),
        ] {
            if !(1..=max).contains(&value) {
                return Err(ConfigError {
                    var: var.to_owned(),
                    problem: format!("must be 1 to {max}, got {value}"),
                });
            }
        }
        let sms = env
            .get("SMS_PROVIDERS")
            .map(|list| {
                list.split(',')
                    .filter(|p| !p.trim().is_empty())
                    .enumerate()
                    .map(|(i, p)| crate::sms::Provider::parse(i + 1, p))
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()
            .map_err(|e| ConfigError {
                var: "SMS_PROVIDERS".to_owned(),
                problem: e.to_string(),
            })?
            .unwrap_or_default();
        let mut service = ServiceSettings::from_env(env)?;
        if env.get("BODY_LIMIT_BYTES").is_none() {
            // A template (three parts, up to 50,000 characters each, up to 6 bytes each as
            // JSON escapes) is larger than the kit's default limit.
            service.http.body_limit_bytes = 1024 * 1024;
        }
        Ok(Self {
            service,
            smtp,
            public_url,
            reset_url,
            default_locale: env.get("DEFAULT_LOCALE").unwrap_or("en").to_owned(),
            sender: SenderSettings {
                batch,
                max_attempts,
                retry_after: env.seconds("SEND_RETRY_SECONDS", 30, 3600)?,
                poll: env.seconds("SEND_POLL_SECONDS", 1, 60)?,
            },
            sms,
            sms_timeout: env.seconds("SMS_TIMEOUT_SECONDS", 10, 120)?,
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
        assert!(settings.smtp.is_none(), "no mail without SMTP_URL");
    }

    #[test]
    fn names_the_variable_that_is_wrong() {
        let base = Env::from_pairs([
            ("DATABASE_URL", "postgres://u:p@localhost/db"),
            ("SMTP_URL", "smtp://127.0.0.1:1025"),
        ]);
        let ok = Settings::from_env(&base).unwrap();
        assert_eq!(
            ok.smtp.unwrap().from.email.to_string(),
            "no-reply@gravity.local"
        );
        for (var, value) in [
            ("MAIL_FROM", "not a mailbox"),
            ("PASSWORD_RESET_URL", "https://app.example.com/reset"),
            ("NOTIFICATIONS_PUBLIC_URL", "nowhere"),
            ("SEND_BATCH", "0"),
            ("SMTP_CONNECTIONS", "1000"),
            ("SMS_PROVIDERS", "twilio+https://api.twilio.com/?from=x"),
        ] {
            let err = Settings::from_env(&base.clone().with(var, value)).unwrap_err();
            assert_eq!(err.var, var, "{err}");
        }
    }
}
