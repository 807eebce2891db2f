//! Signed checkpoints: the chain's head `(seq, hash)` at a moment, signed with Ed25519.
//!
//! A link between records cannot show that records were cut off the end: the shorter chain
//! is still a valid chain. A checkpoint can: once record `n` is vouched for by a signature,
//! a chain that ends before `n`, or whose record `n` has another hash, is caught by
//! `verify` and by an export's own verification.
//!
//! The key is the platform's (`PLATFORM_SIGNING_KEY`, PKCS#8 in base64url, which `gravity up`
//! passes to services with `signing_key = true`). A service run on its own without one generates a key once and keeps it in its
//! database, so its checkpoints stay verifiable across restarts.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use chrono::{DateTime, SubsecRound as _, Utc};
use ring::{
    rand::SystemRandom,
    signature::{Ed25519KeyPair, KeyPair as _, UnparsedPublicKey, ED25519},
};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use sqlx::{PgConnection, PgPool};
use utoipa::ToSchema;

use crate::chain::hex;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("PLATFORM_SIGNING_KEY is not an Ed25519 PKCS#8 key in base64url")]
    Invalid,
    #[error("cannot generate a signing key")]
    Generate,
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// The key checkpoints are signed with, and the public keys of earlier ones this service
/// still trusts (those it generated itself, before a platform key was configured).
pub struct Signer {
    pair: Ed25519KeyPair,
    key_id: String,
    earlier: Vec<String>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// A key's id: the first 16 hex digits of its public key's SHA-256.
fn key_id(public: &[u8]) -> String {
    hex(&Sha256::digest(public)[..8])
}

impl Signer {
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, KeyError> {
        let pair =
            Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).map_err(|_| KeyError::Invalid)?;
        let key_id = key_id(pair.public_key().as_ref());
        Ok(Self {
            pair,
            key_id,
            earlier: Vec::new(),
        })
    }

    pub fn from_base64(encoded: &str) -> Result<Self, KeyError> {
        let der = URL_SAFE_NO_PAD
            .decode(encoded.trim())
            .map_err(|_| KeyError::Invalid)?;
        Self::from_pkcs8(&der)
    }

    /// The configured key, or the one this database keeps (generated on first use); either
    /// way it also trusts the keys this database kept.
    pub async fn load(db: &PgPool, configured: Option<&str>) -> Result<Self, KeyError> {
        let mut signer = Self::chosen(db, configured).await?;
        let kept: Vec<Vec<u8>> = sqlx::query_scalar("SELECT pkcs8 FROM audit_keys")
            .fetch_all(db)
            .await?;
        signer.earlier = kept
            .iter()
            .filter_map(|der| Self::from_pkcs8(der).ok())
            .map(|s| s.public_key())
            .collect();
        Ok(signer)
    }

    async fn chosen(db: &PgPool, configured: Option<&str>) -> Result<Self, KeyError> {
        if let Some(encoded) = configured {
            return Self::from_base64(encoded);
        }
        let kept: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT pkcs8 FROM audit_keys ORDER BY created_at LIMIT 1")
                .fetch_optional(db)
                .await?;
        if let Some(der) = kept {
            return Self::from_pkcs8(&der);
        }
        let der =
            Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| KeyError::Generate)?;
        let signer = Self::from_pkcs8(der.as_ref())?;
        // Two instances starting at once: the first key written wins, both use it.
        sqlx::query(
            "INSERT INTO audit_keys (key_id, pkcs8) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(&signer.key_id)
        .bind(der.as_ref())
        .execute(db)
        .await?;
        let first: Vec<u8> =
            sqlx::query_scalar("SELECT pkcs8 FROM audit_keys ORDER BY created_at, key_id LIMIT 1")
                .fetch_one(db)
                .await?;
        Self::from_pkcs8(&first)
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The public key, base64url.
    pub fn public_key(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.pair.public_key().as_ref())
    }
}

/// A signed head of the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Checkpoint {
    pub seq: i64,
    /// The hash of record `seq` (hex).
    pub hash: String,
    pub signed_at: DateTime<Utc>,
    pub key_id: String,
    /// The signing key's public half (base64url).
    pub public_key: String,
    /// Ed25519 over the canonical JSON `{"hash":…,"key_id":…,"seq":…,"signed_at":…}`
    /// (base64url).
    pub signature: String,
}

#[derive(Serialize)]
struct Signed<'a> {
    seq: i64,
    hash: &'a str,
    signed_at: String,
    key_id: &'a str,
}

fn signed_bytes(seq: i64, hash: &str, signed_at: DateTime<Utc>, key_id: &str) -> Vec<u8> {
    let signed = Signed {
        seq,
        hash,
        signed_at: signed_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        key_id,
    };
    // A struct of strings and an integer always serialises.
    serde_json_canonicalizer::to_vec(&signed).unwrap_or_default()
}

impl Checkpoint {
    /// Checks the signature, with `trusted_key` (base64url) the only key accepted when given.
    pub fn check_signature(&self, trusted_key: Option<&str>) -> Result<(), String> {
        if let Some(trusted) = trusted_key {
            if trusted.trim() != self.public_key {
                return Err(format!(
                    "checkpoint {} is signed with key {}, not the trusted one",
                    self.seq, self.key_id
                ));
            }
        }
        let public = URL_SAFE_NO_PAD
            .decode(&self.public_key)
            .map_err(|_| format!("checkpoint {}: the public key is not base64url", self.seq))?;
        if key_id(&public) != self.key_id {
            return Err(format!(
                "checkpoint {}: key id does not match its key",
                self.seq
            ));
        }
        let signature = URL_SAFE_NO_PAD
            .decode(&self.signature)
            .map_err(|_| format!("checkpoint {}: the signature is not base64url", self.seq))?;
        let message = signed_bytes(self.seq, &self.hash, self.signed_at, &self.key_id);
        UnparsedPublicKey::new(&ED25519, &public)
            .verify(&message, &signature)
            .map_err(|_| format!("checkpoint {}: the signature does not verify", self.seq))
    }

    /// Checks the signature against this service's key, or one it kept.
    pub fn check(&self, signer: &Signer) -> Result<(), String> {
        let current = signer.public_key();
        let trusted = std::iter::once(&current)
            .chain(&signer.earlier)
            .find(|k| **k == self.public_key)
            .unwrap_or(&current);
        self.check_signature(Some(trusted))
    }
}

#[derive(sqlx::FromRow)]
struct Row {
    seq: i64,
    hash: Vec<u8>,
    signed_at: DateTime<Utc>,
    key_id: String,
    public_key: Vec<u8>,
    signature: Vec<u8>,
}

impl From<Row> for Checkpoint {
    fn from(row: Row) -> Self {
        Self {
            seq: row.seq,
            hash: hex(&row.hash),
            signed_at: row.signed_at,
            key_id: row.key_id,
            public_key: URL_SAFE_NO_PAD.encode(&row.public_key),
            signature: URL_SAFE_NO_PAD.encode(&row.signature),
        }
    }
}

const COLUMNS: &str = "seq, hash, signed_at, key_id, public_key, signature";

/// Signs `(seq, hash)` and stores the checkpoint, in `conn`'s transaction.
pub async fn sign_head(
    conn: &mut PgConnection,
    signer: &Signer,
    seq: i64,
    hash: &[u8],
) -> Result<Checkpoint, KeyError> {
    let signed_at = Utc::now().trunc_subsecs(6);
    let hash_hex = hex(hash);
    let message = signed_bytes(seq, &hash_hex, signed_at, &signer.key_id);
    let signature = signer.pair.sign(&message);
    // The head is locked by the caller, so no other checkpoint of this seq is being written;
    // one written before (the same head, signed again) is kept as it is.
    sqlx::query(
        "INSERT INTO audit_checkpoints (seq, hash, signed_at, key_id, public_key, signature)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (seq) DO NOTHING",
    )
    .bind(seq)
    .bind(hash)
    .bind(signed_at)
    .bind(&signer.key_id)
    .bind(signer.pair.public_key().as_ref())
    .bind(signature.as_ref())
    .execute(&mut *conn)
    .await?;
    let row: Row = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM audit_checkpoints WHERE seq = $1"
    ))
    .bind(seq)
    .fetch_one(conn)
    .await?;
    Ok(row.into())
}

/// Checkpoints the head if records were appended since the last checkpoint; the newest
/// checkpoint either way.
pub async fn checkpoint_head(db: &PgPool, signer: &Signer) -> Result<Option<Checkpoint>, KeyError> {
    let mut tx = db.begin().await?;
    let (seq, hash): (i64, Vec<u8>) = sqlx::query_as("SELECT seq, hash FROM audit_head FOR UPDATE")
        .fetch_one(&mut *tx)
        .await?;
    let last: Option<i64> = sqlx::query_scalar("SELECT max(seq) FROM audit_checkpoints")
        .fetch_one(&mut *tx)
        .await?;
    let checkpoint = if seq > last.unwrap_or(0) {
        Some(sign_head(&mut tx, signer, seq, &hash).await?)
    } else {
        None
    };
    tx.commit().await?;
    match checkpoint {
        Some(checkpoint) => Ok(Some(checkpoint)),
        None => Ok(latest(db).await?),
    }
}

/// The newest checkpoint.
pub async fn latest(db: &PgPool) -> Result<Option<Checkpoint>, sqlx::Error> {
    latest_up_to(db, i64::MAX).await
}

/// The newest checkpoint at or before record `seq`.
pub async fn latest_up_to<'c>(
    db: impl sqlx::PgExecutor<'c>,
    seq: i64,
) -> Result<Option<Checkpoint>, sqlx::Error> {
    let row: Option<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM audit_checkpoints WHERE seq <= $1 ORDER BY seq DESC LIMIT 1"
    ))
    .bind(seq)
    .fetch_optional(db)
    .await?;
    Ok(row.map(Into::into))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> Signer {
        let der = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        Signer::from_pkcs8(der.as_ref()).unwrap()
    }

    fn checkpoint(signer: &Signer, seq: i64) -> Checkpoint {
        let signed_at = Utc::now().trunc_subsecs(6);
        let hash = hex(&[7; 32]);
        let message = signed_bytes(seq, &hash, signed_at, &signer.key_id);
        Checkpoint {
            seq,
            hash,
            signed_at,
            key_id: signer.key_id.clone(),
            public_key: signer.public_key(),
            signature: URL_SAFE_NO_PAD.encode(signer.pair.sign(&message).as_ref()),
        }
    }

    #[test]
    fn a_checkpoint_verifies_only_as_signed_and_only_with_the_trusted_key() {
        let key = signer();
        let good = checkpoint(&key, 10);
        assert_eq!(good.check(&key), Ok(()));
        let mut moved = good.clone();
        moved.seq = 9;
        assert!(moved.check(&key).is_err(), "seq is covered");
        let other = signer();
        let forged = checkpoint(&other, 10);
        assert_eq!(forged.check_signature(None), Ok(()));
        assert!(forged.check(&key).is_err(), "another key is not trusted");
    }

    #[test]
    fn a_bad_key_is_refused_without_echoing_it() {
        let err = Signer::from_base64("not-a-key").unwrap_err();
        assert!(!err.to_string().contains("not-a-key"));
    }
}
