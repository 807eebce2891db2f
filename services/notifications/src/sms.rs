//! Text messages through HTTP providers, tried in the order configured: when one fails, the
//! next is asked (failover). Two providers' wire formats are spoken: Twilio's Messages API
//! and Vonage's SMS API. Written by hand: each is one form POST, and the vendors' Rust SDKs
//! are unofficial and pull in far more than that.
//!
//! `SMS_PROVIDERS` lists them, comma separated, each a URL whose scheme names the provider
//! and the protocol its API is reached with:
//!
//! ```text
//! twilio+https://ACCOUNT_SID:AUTH_TOKEN@api.twilio.com/?from=%2B15550001111
//! vonage+https://API_KEY:API_SECRET@rest.nexmo.com/?from=Gravity
//! ```

use std::time::Duration;

use secrecy::{ExposeSecret as _, SecretString};
use serde_json::Value;

use crate::email::Outcome;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Twilio,
    Vonage,
}

#[derive(Clone)]
pub struct Provider {
    pub kind: Kind,
    /// `https://api.twilio.com`, without a trailing slash.
    base: String,
    user: String,
    secret: SecretString,
    from: String,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The account and its secret stay out of logs.
        write!(f, "{} at {}", self.name(), self.base)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProviderError {
    #[error("provider {index}: not a URL")]
    NotAUrl { index: usize },
    #[error("provider {index}: the scheme must be twilio+https, vonage+https (or +http), got {scheme:?}")]
    Scheme { index: usize, scheme: String },
    #[error("provider {index}: needs the account and its secret as the URL's user and password")]
    Credentials { index: usize },
    #[error("provider {index}: needs the sender as `?from=`")]
    From { index: usize },
}

impl Provider {
    /// One `SMS_PROVIDERS` entry; errors never quote it (it holds a secret).
    pub fn parse(index: usize, raw: &str) -> Result<Self, ProviderError> {
        let url = url::Url::parse(raw.trim()).map_err(|_| ProviderError::NotAUrl { index })?;
        let (kind, protocol) = match url.scheme() {
            "twilio+https" => (Kind::Twilio, "https"),
            "twilio+http" => (Kind::Twilio, "http"),
            "vonage+https" => (Kind::Vonage, "https"),
            "vonage+http" => (Kind::Vonage, "http"),
            other => {
                return Err(ProviderError::Scheme {
                    index,
                    scheme: other.to_owned(),
                })
            }
        };
        let decode = |s: &str| percent_decode(s).ok_or(ProviderError::Credentials { index });
        let user = decode(url.username())?;
        let secret = decode(url.password().unwrap_or(""))?;
        if user.is_empty() || secret.is_empty() {
            return Err(ProviderError::Credentials { index });
        }
        let from = url
            .query_pairs()
            .find(|(k, _)| k == "from")
            .map(|(_, v)| v.into_owned())
            .filter(|v| !v.is_empty())
            .ok_or(ProviderError::From { index })?;
        let host = url.host_str().ok_or(ProviderError::NotAUrl { index })?;
        let base = match url.port() {
            Some(port) => format!("{protocol}://{host}:{port}"),
            None => format!("{protocol}://{host}"),
        };
        Ok(Self {
            kind,
            base,
            user,
            secret: SecretString::from(secret),
            from,
        })
    }

    pub fn name(&self) -> &'static str {
        match self.kind {
            Kind::Twilio => "twilio",
            Kind::Vonage => "vonage",
        }
    }

    async fn send(&self, http: &reqwest::Client, to: &str, text: &str) -> Outcome {
        let request = match self.kind {
            Kind::Twilio => http
                .post(format!(
                    "{}/2010-04-01/Accounts/{}/Messages.json",
                    self.base, self.user
                ))
                .basic_auth(&self.user, Some(self.secret.expose_secret()))
                .form(&[("To", to), ("From", &self.from), ("Body", text)]),
            Kind::Vonage => http.post(format!("{}/sms/json", self.base)).form(&[
                ("api_key", self.user.as_str()),
                ("api_secret", self.secret.expose_secret()),
                ("from", &self.from),
                ("to", to.trim_start_matches('+')),
                ("text", text),
            ]),
        };
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => return Outcome::Retry(format!("{}: {}", self.name(), without_url(&e))),
        };
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        match self.kind {
            Kind::Twilio => {
                let answer = |b: &Value| {
                    b["sid"]
                        .as_str()
                        .or(b["message"].as_str())
                        .unwrap_or("")
                        .to_owned()
                };
                if status.is_success() {
                    Outcome::Sent(format!("twilio {} {}", status.as_u16(), answer(&body)))
                } else if matches!(status.as_u16(), 401 | 403 | 429) || status.is_server_error() {
                    // Refused credentials are the platform's to fix, not the message's fault.
                    Outcome::Retry(format!("twilio {} {}", status.as_u16(), answer(&body)))
                } else {
                    Outcome::Failed(format!("twilio {} {}", status.as_u16(), answer(&body)))
                }
            }
            Kind::Vonage => {
                let first = &body["messages"][0];
                let code = first["status"].as_str().unwrap_or("");
                let detail = first["error-text"]
                    .as_str()
                    .or(first["message-id"].as_str())
                    .unwrap_or("");
                match (status.is_success(), code) {
                    (true, "0") => Outcome::Sent(format!("vonage 0 {detail}")),
                    // 1: throttled; 4: credentials refused; 5: the provider's internal
                    // error; 9: the account's quota.
                    (true, "1" | "4" | "5" | "9") => {
                        Outcome::Retry(format!("vonage {code} {detail}"))
                    }
                    (true, _) => Outcome::Failed(format!("vonage {code} {detail}")),
                    (false, _) if status.as_u16() == 429 || status.is_server_error() => {
                        Outcome::Retry(format!("vonage {}", status.as_u16()))
                    }
                    (false, _) => Outcome::Failed(format!("vonage {}", status.as_u16())),
                }
            }
        }
    }
}

/// reqwest's message may carry the URL, which may carry an account id.
fn without_url(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "cannot connect".to_owned()
    } else {
        "the request failed".to_owned()
    }
}

fn percent_decode(s: &str) -> Option<String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(|decoded| decoded.into_owned())
}

/// Every configured provider, in failover order.
pub struct Texter {
    providers: Vec<Provider>,
    http: reqwest::Client,
}

impl Texter {
    pub fn new(providers: Vec<Provider>, timeout: Duration) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder().timeout(timeout).build()?;
        Ok(Self { providers, http })
    }

    /// Tries each provider in turn until one takes the message. `Failed` only when every
    /// provider refused it for good; otherwise the last answer, to retry later. The
    /// provider that took it is named first in the answer.
    pub async fn send(&self, to: &str, text: &str) -> (Outcome, Option<&'static str>) {
        let mut answers = Vec::new();
        let mut retry = false;
        for provider in &self.providers {
            match provider.send(&self.http, to, text).await {
                Outcome::Sent(answer) => return (Outcome::Sent(answer), Some(provider.name())),
                Outcome::Retry(answer) => {
                    tracing::warn!(provider = provider.name(), %answer, "an SMS provider failed; trying the next");
                    retry = true;
                    answers.push(answer);
                }
                Outcome::Failed(answer) => {
                    tracing::warn!(provider = provider.name(), %answer, "an SMS provider refused; trying the next");
                    answers.push(answer);
                }
            }
        }
        let joined = answers.join("; ");
        if retry {
            (Outcome::Retry(joined), None)
        } else {
            (Outcome::Failed(joined), None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_urls_name_the_api_the_account_and_the_sender() {
        let p = Provider::parse(
            0,
            "twilio+https://AC1:s%2Fecret@api.twilio.com/?from=%2B15550001111",
        )
        .unwrap();
        assert_eq!(
            (p.kind, p.base.as_str(), p.user.as_str()),
            (Kind::Twilio, "https://api.twilio.com", "AC1")
        );
        assert_eq!(p.secret.expose_secret(), "s/ecret");
        assert_eq!(p.from, "+15550001111");
        let v = Provider::parse(1, "vonage+http://k:s@127.0.0.1:9000?from=Gravity").unwrap();
        assert_eq!(
            (v.kind, v.base.as_str()),
            (Kind::Vonage, "http://127.0.0.1:9000")
        );
        assert_eq!(format!("{v:?}"), "vonage at http://127.0.0.1:9000");

        assert_eq!(
            Provider::parse(2, "smtp://a:b@h?from=x").unwrap_err(),
            ProviderError::Scheme {
                index: 2,
                scheme: "smtp".into()
            }
        );
        assert_eq!(
            Provider::parse(0, "twilio+https://api.twilio.com/?from=x").unwrap_err(),
            ProviderError::Credentials { index: 0 }
        );
        assert_eq!(
            Provider::parse(0, "twilio+https://a:b@api.twilio.com/").unwrap_err(),
            ProviderError::From { index: 0 }
        );
    }
}
