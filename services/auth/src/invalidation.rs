//! `AuthEvents`: tells every instance of the service that something affecting authentication
//! changed (a logout, a revoked session, a changed or deleted account), so each can drop the
//! principals it has cached. Cache invalidation between instances of this one service, not
//! the platform's event backbone (what other services learn goes through `published`).
//!
//! Events travel over Redis pub/sub. Caching is only trusted while this instance is
//! subscribed: while the subscription is down, `generation()` is `None` and every request is
//! checked against PostgreSQL and Redis as if there were no cache. On (re)subscribing the
//! generation moves on, so nothing cached before an outage survives it.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use crate::state::Redis;
use futures_util::StreamExt as _;

#[derive(Default)]
struct Shared {
    generation: AtomicU64,
    live: AtomicBool,
}

#[derive(Clone)]
pub struct AuthEvents {
    shared: Arc<Shared>,
    redis: Redis,
    channel: String,
}

impl AuthEvents {
    pub fn new(redis: Redis, prefix: &str) -> Self {
        Self {
            shared: Arc::default(),
            redis,
            channel: format!("{prefix}auth-events"),
        }
    }

    /// The current generation, or `None` while events may be missed (not subscribed).
    pub fn generation(&self) -> Option<u64> {
        self.shared
            .live
            .load(Ordering::Acquire)
            .then(|| self.shared.generation.load(Ordering::Acquire))
    }

    fn bump(&self) {
        self.shared.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Announces a change. This instance forgets its cache at once; the others when the
    /// message reaches them. A failure to publish is logged: the change itself is already
    /// committed, and other instances' caches expire within `principal_ttl` regardless.
    pub async fn publish(&self, what: &str) {
        self.bump();
        let mut conn = self.redis.clone();
        if let Err(e) = redis::cmd("PUBLISH")
            .arg(&self.channel)
            .arg(what)
            .query_async::<i64>(&mut conn)
            .await
        {
            tracing::warn!(error = %e, event = what, "could not publish an auth event");
        }
    }

    /// Keeps this instance subscribed for as long as it runs, reconnecting after failures.
    pub async fn listen(self, client: redis::Client) {
        loop {
            match client.get_async_pubsub().await {
                Ok(mut pubsub) => match pubsub.subscribe(&self.channel).await {
                    Ok(()) => {
                        self.bump();
                        self.shared.live.store(true, Ordering::Release);
                        let mut messages = pubsub.on_message();
                        while messages.next().await.is_some() {
                            self.bump();
                        }
                        tracing::warn!(
                            "auth event subscription ended; caching paused until it is back"
                        );
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot subscribe to auth events"),
                },
                Err(e) => tracing::warn!(error = %e, "cannot connect to Redis for auth events"),
            }
            self.shared.live.store(false, Ordering::Release);
            self.bump();
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}
