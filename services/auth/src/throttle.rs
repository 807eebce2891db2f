//! Throttling of password guesses in Redis, shared by every instance of the service.
//!
//! Each attempt *reserves* a slot in two fixed windows, one per account and one per client
//! address, before the password is checked: concurrent guesses therefore count at once,
//! instead of all passing a read-only check while the first is still being hashed. A correct
//! password gives its slots back (the account's window is cleared, the client's slot
//! returned), so only failures accumulate. Once either window is full, attempts answer 429
//! until it ends.
//!
//! The same mechanism limits reset-token requests per account (`reserve_reset`).

use std::{net::IpAddr, time::Duration};

use crate::state::Redis;
use sha2::{Digest, Sha256};

use crate::{config::ThrottleSettings, error::AuthError};

/// For each key: increment, start its window on the first increment, and return the new count
/// and the window's remaining milliseconds. Atomic, so concurrent attempts each get a slot.
const RESERVE: &str = r"
local out = {}
for i, key in ipairs(KEYS) do
  local n = redis.call('INCR', key)
  if n == 1 then redis.call('PEXPIRE', key, ARGV[1]) end
  out[2 * i - 1] = n
  out[2 * i] = redis.call('PTTL', key)
end
return out
";

/// Reset-token requests allowed per account and window; further requests are answered the
/// same way but create nothing.
const RESETS_PER_WINDOW: i64 = 3;

#[derive(Clone)]
pub struct LoginThrottle {
    redis: Redis,
    prefix: String,
    settings: ThrottleSettings,
    reserve: redis::Script,
}

/// Slots held by one attempt, to be given back if the password was right.
pub struct Reservation {
    account: String,
    client: Option<String>,
}

impl LoginThrottle {
    pub fn new(redis: Redis, prefix: &str, settings: ThrottleSettings) -> Self {
        Self {
            redis,
            prefix: prefix.to_owned(),
            settings,
            reserve: redis::Script::new(RESERVE),
        }
    }

    fn hashed(&self, kind: &str, email: &str) -> String {
        // Hashed so Redis never holds the list of emails people tried.
        let digest = Sha256::digest(email.as_bytes());
        format!("{}{kind}:{}", self.prefix, hex(&digest[..16]))
    }

    /// Reserves a password attempt for `email` from `client`, or refuses with `Throttled`.
    pub async fn reserve(
        &self,
        email: &str,
        client: Option<IpAddr>,
    ) -> Result<Reservation, AuthError> {
        let reservation = Reservation {
            account: self.hashed("login-fail:acct", email),
            client: client.map(|c| format!("{}login-fail:ip:{c}", self.prefix)),
        };
        let mut invocation = self.reserve.key(&reservation.account);
        if let Some(key) = &reservation.client {
            invocation.key(key);
        }
        let window_ms = self.settings.window.as_millis() as u64;
        let mut conn = self.redis.clone();
        let counts: Vec<i64> = invocation.arg(window_ms).invoke_async(&mut conn).await?;
        let limits = [self.settings.per_account, self.settings.per_client];
        for (pair, limit) in counts.chunks(2).zip(limits) {
            if let [count, ttl_ms] = pair {
                if *count > i64::from(limit) {
                    let ms = u64::try_from(*ttl_ms).unwrap_or(1000).max(1000);
                    return Err(AuthError::Throttled {
                        retry_after: Duration::from_millis(ms),
                    });
                }
            }
        }
        Ok(reservation)
    }

    /// The password was right: clears the account's failures and returns the client's slot
    /// (one good password must not reset an address that is guessing at other accounts).
    pub async fn succeeded(&self, reservation: Reservation) -> Result<(), AuthError> {
        let mut pipe = redis::pipe();
        pipe.del(&reservation.account).ignore();
        if let Some(key) = &reservation.client {
            pipe.decr(key, 1).ignore();
        }
        let mut conn = self.redis.clone();
        pipe.query_async::<()>(&mut conn).await?;
        Ok(())
    }

    /// Whether another reset token may be created for `email` in this window.
    pub async fn reserve_reset(&self, email: &str) -> Result<bool, AuthError> {
        let key = self.hashed("reset:acct", email);
        let window_ms = self.settings.window.as_millis() as u64;
        let mut conn = self.redis.clone();
        let counts: Vec<i64> = self
            .reserve
            .key(key)
            .arg(window_ms)
            .invoke_async(&mut conn)
            .await?;
        Ok(counts.first().is_some_and(|n| *n <= RESETS_PER_WINDOW))
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
