//! `KeyRing`: the Ed25519 keys this service signs with and publishes.
//!
//! Keys live in the `signing_keys` table so every instance signs with the same key and a
//! restart invalidates no token. The newest key signs; every key not yet retired verifies and
//! is published in the JWKS. `rotate` adds a key and schedules the others to retire once the
//! tokens they signed have expired.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, RwLock,
    },
    time::{Duration, Instant},
};

use service_kit::jwt::{AccessClaims, Jwks, SigningKey, TokenError, TokenVerifier};
use sqlx::PgPool;

use crate::error::AuthError;

/// Reloading on an unknown `kid` is rate-limited, so garbage tokens cannot hammer the database.
const RELOAD_AT_MOST_EVERY: Duration = Duration::from_secs(5);
/// Arbitrary constant naming the advisory lock that serialises key creation across instances.
const KEYS_LOCK: i64 = 0x6772_6176_6b65_7973;

struct Loaded {
    signer: SigningKey,
    verifier: TokenVerifier,
    jwks: Jwks,
    loaded_at: Instant,
    /// Changes whenever the set of published keys changes, so caches of verified tokens
    /// can tell that a key they relied on may have been retired.
    version: u64,
}

#[derive(Clone)]
pub struct KeyRing {
    db: PgPool,
    issuer: String,
    audience: String,
    loaded: Arc<RwLock<Arc<Loaded>>>,
    reload: Arc<tokio::sync::Mutex<()>>,
    version: Arc<AtomicU64>,
}

#[derive(sqlx::FromRow)]
struct KeyRow {
    kid: String,
    private_key: Vec<u8>,
}

impl KeyRing {
    /// Loads the active keys, creating the first one if there is none.
    pub async fn load(db: PgPool, issuer: &str, audience: &str) -> Result<Self, AuthError> {
        ensure_one(&db).await?;
        let loaded = fetch(&db, issuer, audience).await?;
        Ok(Self {
            db,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            loaded: Arc::new(RwLock::new(Arc::new(loaded))),
            reload: Arc::new(tokio::sync::Mutex::new(())),
            version: Arc::new(AtomicU64::new(0)),
        })
    }

    fn current(&self) -> Arc<Loaded> {
        match self.loaded.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Read on every authenticated request, so it is an atomic rather than a lock.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    pub fn jwks(&self) -> Jwks {
        self.current().jwks.clone()
    }

    pub fn sign(&self, claims: &AccessClaims) -> Result<String, AuthError> {
        self.current()
            .signer
            .sign(claims)
            .map_err(|e| AuthError::Signing(e.to_string()))
    }

    /// Verifies a token; on an unknown `kid` reloads the keys once (another instance may have
    /// rotated) before refusing.
    pub async fn verify(&self, token: &str) -> Result<AccessClaims, AuthError> {
        let current = self.current();
        match current.verifier.verify(token) {
            Err(TokenError::UnknownKid) if current.loaded_at.elapsed() >= RELOAD_AT_MOST_EVERY => {
                self.reload(false).await?;
                Ok(self.current().verifier.verify(token)?)
            }
            other => Ok(other?),
        }
    }

    /// Reads the active keys again. Unless `force`d, does nothing when they were read less
    /// than five seconds ago.
    pub async fn reload(&self, force: bool) -> Result<(), AuthError> {
        let _guard = self.reload.lock().await;
        if !force && self.current().loaded_at.elapsed() < RELOAD_AT_MOST_EVERY {
            return Ok(());
        }
        let mut fresh = fetch(&self.db, &self.issuer, &self.audience).await?;
        let current = self.current();
        fresh.version = if fresh.jwks.keys == current.jwks.keys {
            current.version
        } else {
            current.version + 1
        };
        self.version.store(fresh.version, Ordering::Release);
        let fresh = Arc::new(fresh);
        match self.loaded.write() {
            Ok(mut guard) => *guard = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
        Ok(())
    }
}

/// Re-reads the keys every `every`, so a rotation done by `auth rotate-keys` reaches every
/// instance: they start signing with the new key and stop publishing retired ones.
pub async fn reload_periodically(ring: KeyRing, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        if let Err(e) = ring.reload(true).await {
            tracing::warn!(error = %e, "could not reload signing keys; keeping the current ones");
        }
    }
}

/// Adds a new signing key; older keys retire after `retire_after` (at least the access-token
/// lifetime, so no valid token loses its key). Returns the new key's id.
pub async fn rotate(db: &PgPool, retire_after: Duration) -> Result<String, AuthError> {
    let mut tx = locked(db).await?;
    sqlx::query(
        "UPDATE signing_keys SET retire_at = now() + make_interval(secs => $1)
         WHERE retire_at IS NULL OR retire_at > now() + make_interval(secs => $1)",
    )
    .bind(retire_after.as_secs_f64())
    .execute(&mut *tx)
    .await?;
    let kid = insert_new_key(&mut tx).await?;
    tx.commit().await?;
    Ok(kid)
}

async fn ensure_one(db: &PgPool) -> Result<(), AuthError> {
    let mut tx = locked(db).await?;
    let active: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM signing_keys WHERE retire_at IS NULL OR retire_at > now()",
    )
    .fetch_one(&mut *tx)
    .await?;
    if active == 0 {
        let kid = insert_new_key(&mut tx).await?;
        tracing::info!(kid, "created the first signing key");
    }
    tx.commit().await?;
    Ok(())
}

/// A transaction holding the lock that serialises key changes across instances.
async fn locked(db: &PgPool) -> Result<sqlx::Transaction<'_, sqlx::Postgres>, AuthError> {
    let mut tx = db.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(KEYS_LOCK)
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

async fn insert_new_key(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
) -> Result<String, AuthError> {
    let (key, der) = SigningKey::generate().map_err(|e| AuthError::Signing(e.to_string()))?;
    sqlx::query("INSERT INTO signing_keys (kid, algorithm, private_key) VALUES ($1, 'EdDSA', $2)")
        .bind(key.kid())
        .bind(&der)
        .execute(&mut **tx)
        .await?;
    Ok(key.kid().to_owned())
}

async fn fetch(db: &PgPool, issuer: &str, audience: &str) -> Result<Loaded, AuthError> {
    let rows: Vec<KeyRow> = sqlx::query_as(
        "SELECT kid, private_key FROM signing_keys
         WHERE retire_at IS NULL OR retire_at > now()
         ORDER BY created_at DESC, kid DESC",
    )
    .fetch_all(db)
    .await?;
    let mut keys = Vec::with_capacity(rows.len());
    for row in rows {
        keys.push(
            SigningKey::from_pkcs8(row.kid, &row.private_key)
                .map_err(|e| AuthError::Signing(e.to_string()))?,
        );
    }
    let jwks = Jwks {
        keys: keys.iter().map(SigningKey::jwk).collect(),
    };
    let verifier = TokenVerifier::new(issuer, audience, &jwks);
    let mut keys = keys.into_iter();
    let signer = keys
        .next()
        .ok_or_else(|| AuthError::Signing("no active signing key".into()))?;
    Ok(Loaded {
        signer,
        verifier,
        jwks,
        loaded_at: Instant::now(),
        version: 0,
    })
}
