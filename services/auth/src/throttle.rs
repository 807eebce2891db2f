//! Login throttling in Redis: failed attempts are counted per account and per client address
//! in fixed windows; once either count reaches its limit, logins answer 429 until the window
//! ends. Shared by every instance of the service, because it lives in Redis.

use std::{net::IpAddr, time::Duration};

use redis::aio::ConnectionManager;
use sha2::{Digest, Sha256};

use crate::{config::ThrottleSettings, error::AuthError};

/// Increments a counter and starts its window on the first increment, atomically.
const RECORD: &str = r"
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return n
";

#[derive(Clone)]
pub struct LoginThrottle {
    redis: ConnectionManager,
    prefix: String,
    settings: ThrottleSettings,
    record: redis::Script,
}

impl LoginThrottle {
    pub fn new(redis: ConnectionManager, prefix: &str, settings: ThrottleSettings) -> Self {
        Self {
            redis,
            prefix: prefix.to_owned(),
            settings,
            record: redis::Script::new(RECORD),
        }
    }

    fn account_key(&self, email: &str) -> String {
        // Hashed so Redis never holds the list of emails people tried.
        let digest = Sha256::digest(email.as_bytes());
        format!("{}login-fail:acct:{}", self.prefix, hex(&digest[..16]))
    }

    fn client_key(&self, client: IpAddr) -> String {
        format!("{}login-fail:ip:{client}", self.prefix)
    }

    /// Refuses with `Throttled` when the account or the client is over its limit; otherwise
    /// says whether the account has recent failures (which a successful login clears).
    pub async fn check(&self, email: &str, client: Option<IpAddr>) -> Result<bool, AuthError> {
        let mut conn = self.redis.clone();
        let mut pipe = redis::pipe();
        let account = self.account_key(email);
        pipe.get(&account).pttl(&account);
        let client_key = client.map(|c| self.client_key(c));
        if let Some(key) = &client_key {
            pipe.get(key).pttl(key);
        }
        let values: Vec<Option<i64>> = pipe.query_async(&mut conn).await?;
        let limits = [self.settings.per_account, self.settings.per_client];
        for (pair, limit) in values.chunks(2).zip(limits) {
            if let [count, ttl_ms] = pair {
                if count.unwrap_or(0) >= i64::from(limit) {
                    let ms = ttl_ms.filter(|t| *t > 0).unwrap_or(1000) as u64;
                    return Err(AuthError::Throttled {
                        retry_after: Duration::from_millis(ms).max(Duration::from_secs(1)),
                    });
                }
            }
        }
        Ok(values.first().copied().flatten().unwrap_or(0) > 0)
    }

    pub async fn record_failure(
        &self,
        email: &str,
        client: Option<IpAddr>,
    ) -> Result<(), AuthError> {
        let mut conn = self.redis.clone();
        let window = self.settings.window.as_secs();
        self.record
            .key(self.account_key(email))
            .arg(window)
            .invoke_async::<i64>(&mut conn)
            .await?;
        if let Some(c) = client {
            self.record
                .key(self.client_key(c))
                .arg(window)
                .invoke_async::<i64>(&mut conn)
                .await?;
        }
        Ok(())
    }

    /// A successful login clears the account's failures (not the client's: one good password
    /// must not reset an address that is guessing at others).
    pub async fn clear_account(&self, email: &str) -> Result<(), AuthError> {
        let mut conn = self.redis.clone();
        redis::cmd("DEL")
            .arg(self.account_key(email))
            .query_async::<i64>(&mut conn)
            .await?;
        Ok(())
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}
