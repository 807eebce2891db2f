//! Rate limiting per client address and per user, by GCRA (the generic cell rate algorithm:
//! a token bucket kept as one timestamp per key).
//!
//! With `redis_url` set, every gateway instance counts in one Redis through an atomic script
//! (so N instances enforce one limit, not N). When Redis errors or is slower than
//! `redis_timeout`, the instance keeps serving with its local limiter, logs the switch once,
//! sets `gateway_rate_limit_redis_up` to 0 and tries Redis again a second later.

use std::{
    net::IpAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use arc_swap::ArcSwapOption;
use governor::{clock::Clock as _, DefaultKeyedRateLimiter};
use redis::aio::ConnectionManager;
use uuid::Uuid;

use crate::config::{Quota, RateLimit};

/// GCRA over a Redis key, with Redis's own clock so that instances need not agree on time.
/// Returns `{allowed, retry_after_microseconds}`.
const GCRA: &str = r"
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
local interval = tonumber(ARGV[1])
local tolerance = interval * (tonumber(ARGV[2]) - 1)
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then tat = now end
local allow_at = tat - tolerance
if now < allow_at then
  return {0, allow_at - now}
end
local new_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
return {1, 0}
";

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Client,
    User,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::User => "user",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub scope: Scope,
    pub retry_after: Duration,
}

/// Keys hashed with foldhash rather than the default SipHash, which costs more than the rest
/// of a check; a key is an address or a verified user id, and the seed is random per process.
type Keyed<K> = DefaultKeyedRateLimiter<
    K,
    governor::middleware::NoOpMiddleware<
        <governor::clock::DefaultClock as governor::clock::Clock>::Instant,
    >,
    foldhash::fast::RandomState,
>;

struct Local<K: std::hash::Hash + Eq + Clone> {
    quota: Quota,
    limiter: Keyed<K>,
}

impl<K: std::hash::Hash + Eq + Clone> Local<K> {
    fn new(quota: Quota) -> Self {
        let g = governor::Quota::with_period(quota.emission_interval())
            .unwrap_or_else(|| governor::Quota::per_second(quota.requests))
            .allow_burst(quota.burst());
        Self {
            quota,
            limiter: Keyed::dashmap_with_hasher(g, foldhash::fast::RandomState::default()),
        }
    }

    fn check(&self, key: &K) -> Result<(), Duration> {
        self.limiter.check_key(key).map_err(|not_until| {
            not_until.wait_time_from(governor::clock::DefaultClock::default().now())
        })
    }
}

pub struct Limiter {
    client: Option<Local<IpAddr>>,
    user: Option<Local<Uuid>>,
    redis: Option<Shared>,
}

struct Shared {
    connection: ArcSwapOption<ConnectionManager>,
    script: redis::Script,
    timeout: Duration,
    prefix: String,
    up: AtomicBool,
    /// While down: milliseconds since `epoch` before which Redis is not tried again.
    retry_at_ms: AtomicU64,
    epoch: Instant,
}

impl Limiter {
    pub fn new(config: &RateLimit) -> Arc<Self> {
        let redis = config.redis_url.as_ref().map(|_| Shared {
            connection: ArcSwapOption::empty(),
            script: redis::Script::new(GCRA),
            timeout: config.redis_timeout,
            prefix: config.key_prefix.clone(),
            up: AtomicBool::new(false),
            retry_at_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        });
        Arc::new(Self {
            client: config.per_client.map(Local::new),
            user: config.per_user.map(Local::new),
            redis,
        })
    }

    /// Where limits are counted right now: `local` (no Redis configured), `redis`, or
    /// `local-fallback` (Redis configured but not answering).
    pub fn backend(&self) -> &'static str {
        match &self.redis {
            None => "local",
            Some(shared) if shared.up.load(Ordering::Relaxed) => "redis",
            Some(_) => "local-fallback",
        }
    }

    pub fn is_active(&self) -> bool {
        self.client.is_some() || self.user.is_some()
    }

    /// Connects to Redis in the background (retrying until it answers) and forgets idle keys
    /// of the local limiters every minute.
    pub async fn maintain(self: Arc<Self>, redis_url: Option<String>) {
        if let (Some(shared), Some(url)) = (&self.redis, redis_url) {
            match redis::Client::open(url.as_str()) {
                Ok(client) => {
                    let config = redis::aio::ConnectionManagerConfig::new()
                        .set_connection_timeout(Duration::from_secs(1))
                        .set_response_timeout(shared.timeout)
                        .set_number_of_retries(1);
                    let mut backoff = Duration::from_millis(200);
                    loop {
                        match ConnectionManager::new_with_config(client.clone(), config.clone())
                            .await
                        {
                            Ok(conn) => {
                                shared.connection.store(Some(Arc::new(conn)));
                                shared.up.store(true, Ordering::Relaxed);
                                crate::metrics::redis_up(true);
                                tracing::info!("rate limits shared through Redis");
                                break;
                            }
                            Err(e) => {
                                crate::metrics::redis_up(false);
                                tracing::warn!(error = %e,
                                    "Redis unreachable; rate limiting locally until it answers");
                                tokio::time::sleep(backoff).await;
                                backoff = (backoff * 2).min(Duration::from_secs(5));
                            }
                        }
                    }
                }
                Err(e) => tracing::error!(error = %e, "rate_limit.redis_url is not usable"),
            }
        }
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            if let Some(l) = &self.client {
                l.limiter.retain_recent();
            }
            if let Some(l) = &self.user {
                l.limiter.retain_recent();
            }
        }
    }

    /// Checks the client's limit and, for an authenticated request, the user's.
    pub async fn check(&self, client: IpAddr, user: Option<Uuid>) -> Result<(), Refused> {
        if let Some(local) = &self.client {
            self.check_one(Scope::Client, local, &client, || format!("ip:{client}"))
                .await?;
        }
        if let (Some(local), Some(user)) = (&self.user, user) {
            self.check_one(Scope::User, local, &user, || format!("user:{user}"))
                .await?;
        }
        Ok(())
    }

    async fn check_one<K: std::hash::Hash + Eq + Clone>(
        &self,
        scope: Scope,
        local: &Local<K>,
        key: &K,
        redis_key: impl FnOnce() -> String,
    ) -> Result<(), Refused> {
        let refused = |retry_after| {
            crate::metrics::rate_limited(scope.as_str());
            Refused { scope, retry_after }
        };
        if let Some(shared) = &self.redis {
            // Boxed: the Redis call's future is large; it stays out of every local check.
            if let Some(answer) = Box::pin(shared.check(&redis_key(), local.quota)).await {
                return answer.map_err(refused);
            }
            crate::metrics::fallback();
        }
        local.check(key).map_err(refused)
    }
}

impl Shared {
    /// `None` when Redis could not answer in time: the caller falls back to the local limit.
    async fn check(&self, key: &str, quota: Quota) -> Option<Result<(), Duration>> {
        let now_ms = self.epoch.elapsed().as_millis() as u64;
        if !self.up.load(Ordering::Relaxed) && now_ms < self.retry_at_ms.load(Ordering::Relaxed) {
            return None;
        }
        let conn = self.connection.load_full()?;
        let mut conn = (*conn).clone();
        let interval = quota.emission_interval().as_micros().max(1) as u64;
        let mut invocation = self.script.key(format!("{}:{key}", self.prefix));
        invocation.arg(interval).arg(quota.burst().get());
        let result: Result<Result<(i64, i64), redis::RedisError>, _> =
            tokio::time::timeout(self.timeout, invocation.invoke_async(&mut conn)).await;
        match result {
            Ok(Ok((allowed, retry_us))) => {
                if !self.up.swap(true, Ordering::Relaxed) {
                    crate::metrics::redis_up(true);
                    tracing::info!("Redis answers again; rate limits are shared again");
                }
                Some(if allowed == 1 {
                    Ok(())
                } else {
                    Err(Duration::from_micros(retry_us.max(0) as u64))
                })
            }
            Ok(Err(e)) => {
                self.down(now_ms, &e.to_string());
                None
            }
            Err(_) => {
                self.down(now_ms, "timed out");
                None
            }
        }
    }

    fn down(&self, now_ms: u64, why: &str) {
        self.retry_at_ms.store(now_ms + 1000, Ordering::Relaxed);
        if self.up.swap(false, Ordering::Relaxed) {
            crate::metrics::redis_up(false);
            tracing::warn!(
                error = why,
                "Redis rate limiting failed; limiting locally per instance until it answers"
            );
        }
    }
}
