//! Edge authentication: access tokens verified against the auth service's JWKS.
//!
//! The key set is fetched at start (retried in the background until the auth service
//! answers), refreshed periodically, and refetched when a token names an unknown `kid` — at
//! most once per `min_refetch_interval`, one fetch at a time, so a flood of forged `kid`s
//! cannot turn the gateway into a load generator against the auth service.
//!
//! Verified tokens are remembered (by their full text, so only the identical token hits)
//! until they expire; a changed key set forgets them all. Clients reuse one token for many
//! requests, and an Ed25519 verification costs more than the rest of the proxying together.
//! Each serving thread keeps its own copy of what it recently used: a shared cache entry
//! (its lock, its reference counts) touched by every thread costs a cross-core cache miss
//! per access, more than the lookup itself.

use std::{
    cell::RefCell,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use arc_swap::ArcSwapOption;
use http::HeaderValue;
use service_kit::{
    identity::IdentitySigner,
    jwt::{Jwks, TokenError, TokenVerifier},
};
use uuid::Uuid;

use crate::config::Auth;

/// The identity the gateway passes upstream.
#[derive(Debug, Clone)]
pub struct Identity {
    pub user: Uuid,
    pub user_header: HeaderValue,
    pub roles_header: HeaderValue,
    pub session_header: HeaderValue,
    /// The assertion of this caller the gateway signed, when it holds an identity key.
    pub assertion_header: Option<HeaderValue>,
    exp: i64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error(transparent)]
    Token(#[from] TokenError),
    /// No key set has been fetched yet (the auth service is unreachable).
    #[error("the auth service's keys are not available yet")]
    KeysUnavailable,
}

impl Identity {
    /// A copy sharing nothing with `self` (header values are reference counted).
    fn detached(&self) -> Result<Self, TokenError> {
        let copy = |v: &HeaderValue| HeaderValue::from_bytes(v.as_bytes());
        Ok(Self {
            user: self.user,
            user_header: copy(&self.user_header).map_err(|_| TokenError::Malformed)?,
            roles_header: copy(&self.roles_header).map_err(|_| TokenError::Malformed)?,
            session_header: copy(&self.session_header).map_err(|_| TokenError::Malformed)?,
            assertion_header: match &self.assertion_header {
                Some(v) => Some(copy(v).map_err(|_| TokenError::Malformed)?),
                None => None,
            },
            exp: self.exp,
        })
    }
}

/// Leeway on `exp` for remembered tokens, the same as the verifier's.
const LEEWAY_SECS: i64 = 5;

/// Tokens the shared cache remembers.
const SHARED_CACHE: usize = 50_000;

/// Tokens a serving thread remembers on its own: a share of the shared cache's size, so many
/// threads do not multiply the memory.
fn thread_cache_capacity() -> usize {
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    (SHARED_CACHE / threads).clamp(1_000, 10_000)
}

/// Distinguishes key sets, so a thread's cache never answers for another one.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A thread's remembered identities: whose (key set id), of which generation of its keys.
struct ThreadCache {
    owner: u64,
    generation: u64,
    verified: ThreadTokens,
}

/// Hashed with foldhash rather than the default SipHash: a token is a few hundred bytes,
/// looked up on every request, and SipHash over it costs more than the rest of the lookup.
/// Flooding attacks need keys of the attacker's choosing in the table; only tokens that
/// passed verification are ever inserted, and the seed is random per process.
type ThreadTokens = quick_cache::unsync::Cache<
    Box<[u8]>,
    Identity,
    quick_cache::UnitWeighter,
    foldhash::fast::RandomState,
>;

fn thread_tokens() -> ThreadTokens {
    let capacity = thread_cache_capacity();
    quick_cache::unsync::Cache::with(
        capacity,
        capacity as u64,
        quick_cache::UnitWeighter,
        foldhash::fast::RandomState::default(),
        quick_cache::unsync::DefaultLifecycle::default(),
    )
}

thread_local! {
    static THREAD: RefCell<Option<ThreadCache>> = const { RefCell::new(None) };
}

pub struct KeySet {
    config: Auth,
    /// Signs the assertion of each verified caller (once per token: it is remembered with
    /// the identity).
    signer: Option<Arc<IdentitySigner>>,
    http: reqwest::Client,
    verifier: ArcSwapOption<TokenVerifier>,
    keys: Mutex<Option<Jwks>>,
    last_fetch: Mutex<Option<Instant>>,
    fetching: tokio::sync::Mutex<()>,
    verified: quick_cache::sync::Cache<Box<[u8]>, Arc<Identity>>,
    id: u64,
    /// Bumped whenever the key set changes: threads then forget what they remembered.
    generation: AtomicU64,
}

impl KeySet {
    pub fn new(
        config: Auth,
        signer: Option<Arc<IdentitySigner>>,
    ) -> Result<Arc<Self>, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(5))
            .build()?;
        Ok(Arc::new(Self {
            config,
            signer,
            http,
            verifier: ArcSwapOption::empty(),
            keys: Mutex::new(None),
            last_fetch: Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
            verified: quick_cache::sync::Cache::new(SHARED_CACHE),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            generation: AtomicU64::new(0),
        }))
    }

    pub fn has_keys(&self) -> bool {
        self.verifier.load().is_some()
    }

    /// Keeps the key set fresh: fetches until the first success (backing off to 5 s), then
    /// every `refresh`.
    pub async fn maintain(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(200);
        loop {
            match self.fetch().await {
                Ok(()) => {
                    backoff = Duration::from_millis(200);
                    tokio::time::sleep(self.config.refresh).await;
                }
                Err(e) => {
                    if !self.has_keys() {
                        tracing::warn!(error = %e, url = %self.config.jwks_url,
                            "cannot fetch the auth service's keys yet; retrying");
                    } else {
                        tracing::warn!(error = %e, "key set refresh failed; keeping the known keys");
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    async fn fetch(&self) -> Result<(), String> {
        let _one = self.fetching.lock().await;
        if let Ok(mut last) = self.last_fetch.lock() {
            *last = Some(Instant::now());
        }
        let result = async {
            let response = self
                .http
                .get(&self.config.jwks_url)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if !response.status().is_success() {
                return Err(format!("the key set answered {}", response.status()));
            }
            response.json::<Jwks>().await.map_err(|e| e.to_string())
        }
        .await;
        let jwks = match result {
            Ok(jwks) => jwks,
            Err(e) => {
                crate::metrics::jwks_fetch("error");
                return Err(e);
            }
        };
        crate::metrics::jwks_fetch("ok");
        let changed = self
            .keys
            .lock()
            .map(|k| k.as_ref() != Some(&jwks))
            .unwrap_or(true);
        if changed {
            let verifier = TokenVerifier::new(&self.config.issuer, &self.config.audience, &jwks);
            self.verifier.store(Some(Arc::new(verifier)));
            // A key may have been withdrawn: what it verified is verified again.
            // The generation first: a verification that began under the old keys sees it
            // changed and remembers nothing, wherever it was when the cache was cleared.
            self.generation.fetch_add(1, Ordering::AcqRel);
            self.verified.clear();
            tracing::info!(keys = jwks.keys.len(), "auth service key set loaded");
            if let Ok(mut k) = self.keys.lock() {
                *k = Some(jwks);
            }
        }
        Ok(())
    }

    /// Refetches for an unknown `kid`, unless a fetch happened within the minimum interval.
    async fn refetch_for_unknown_kid(&self) -> bool {
        let recent = self
            .last_fetch
            .lock()
            .map(|l| l.is_some_and(|t| t.elapsed() < self.config.min_refetch_interval))
            .unwrap_or(true);
        if recent {
            return false;
        }
        self.fetch().await.is_ok()
    }

    /// The identity a token proves, verifying it unless it was verified before. The token
    /// is taken as bytes: a remembered one is found by its exact bytes, and only one not seen
    /// before is checked as text.
    pub async fn verify(&self, token: &[u8]) -> Result<Identity, AuthError> {
        let now = chrono_now();
        let generation = self.generation.load(Ordering::Acquire);
        if let Some(found) = self.thread_get(token, generation) {
            return self.unless_expired(token, found, now);
        }
        let text = std::str::from_utf8(token).map_err(|_| TokenError::Malformed)?;
        let shared = self.verify_shared(text, now, generation).await?;
        let identity = shared.detached()?;
        if self.generation.load(Ordering::Acquire) == generation {
            self.thread_put(token, generation, identity.clone());
        }
        Ok(identity)
    }

    /// A remembered identity while its token is live; an expired one is forgotten.
    fn unless_expired<I: std::borrow::Borrow<Identity>>(
        &self,
        token: &[u8],
        found: I,
        now: i64,
    ) -> Result<I, AuthError> {
        if now < found.borrow().exp + LEEWAY_SECS {
            return Ok(found);
        }
        self.verified.remove(token);
        Err(TokenError::Expired.into())
    }

    fn thread_get(&self, token: &[u8], generation: u64) -> Option<Identity> {
        THREAD.with(|cache| {
            let cache = cache.try_borrow().ok()?;
            let cache = cache.as_ref()?;
            if cache.owner != self.id || cache.generation != generation {
                return None;
            }
            cache.verified.get(token).cloned()
        })
    }

    fn thread_put(&self, token: &[u8], generation: u64, identity: Identity) {
        THREAD.with(|cache| {
            let Ok(mut cache) = cache.try_borrow_mut() else {
                return;
            };
            let mine = cache.as_ref().filter(|c| c.owner == self.id);
            if mine.is_some_and(|c| c.generation > generation) {
                return;
            }
            if mine.is_none_or(|c| c.generation != generation) {
                *cache = Some(ThreadCache {
                    owner: self.id,
                    generation,
                    verified: thread_tokens(),
                });
            }
            if let Some(cache) = cache.as_mut() {
                cache.verified.insert(token.into(), identity);
            }
        });
    }

    async fn verify_shared(
        &self,
        token: &str,
        now: i64,
        generation: u64,
    ) -> Result<Arc<Identity>, AuthError> {
        if let Some(identity) = self.verified.get(token.as_bytes()) {
            return self.unless_expired(token.as_bytes(), identity, now);
        }
        let verifier = self
            .verifier
            .load_full()
            .ok_or(AuthError::KeysUnavailable)?;
        let claims = match verifier.verify(token) {
            Err(TokenError::UnknownKid) => {
                // Boxed: the fetch is rare and large, and would otherwise make every
                // verification's future as large as an HTTP request's.
                if !Box::pin(self.refetch_for_unknown_kid()).await {
                    return Err(TokenError::UnknownKid.into());
                }
                let verifier = self
                    .verifier
                    .load_full()
                    .ok_or(AuthError::KeysUnavailable)?;
                verifier.verify(token)?
            }
            other => other?,
        };
        let assertion_header = match &self.signer {
            Some(signer) => {
                let caller = service_kit::Identity {
                    user_id: claims.sub,
                    roles: claims.roles.clone(),
                    session_id: claims.sid,
                };
                let signed = signer
                    .sign(&caller, claims.exp)
                    .map_err(|_| TokenError::Malformed)?;
                Some(header_value(&signed)?)
            }
            None => None,
        };
        let identity = Arc::new(Identity {
            user: claims.sub,
            user_header: header_value(&claims.sub.to_string())?,
            roles_header: header_value(&claims.roles.join(","))?,
            session_header: header_value(&claims.sid.to_string())?,
            assertion_header,
            exp: claims.exp,
        });
        if self.generation.load(Ordering::Acquire) == generation {
            self.verified
                .insert(token.as_bytes().into(), Arc::clone(&identity));
        }
        Ok(identity)
    }
}

fn header_value(s: &str) -> Result<HeaderValue, TokenError> {
    HeaderValue::from_str(s).map_err(|_| TokenError::Malformed)
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
