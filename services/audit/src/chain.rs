//! The audit chain: what a record is, the bytes its hash covers, appending, and verifying.
//!
//! `hash(n) = SHA-256(hash(n-1) ‖ canonical(n))`, where `canonical(n)` is the record's RFC 8785
//! (JCS) canonical JSON without its hashes and `hash(0)` is 32 zero bytes. Sequence numbers
//! are contiguous from 1. Changing, removing or reordering a record therefore breaks the
//! link at that record; a signed checkpoint of a later `(seq, hash)` (see `checkpoints`)
//! catches a cut tail, which no link can show.
//!
//! **Invariant:** records are appended under the head row's lock, one after another; nothing
//! in this service updates or deletes one (the migration also takes the privilege away and
//! a trigger refuses it).

use std::io::BufRead;

use chrono::{DateTime, SubsecRound as _, Utc};
use futures_util::TryStreamExt as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use sqlx::{PgConnection, PgPool};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::checkpoints::{Checkpoint, Signer};

/// The hash before the first record.
pub const GENESIS: [u8; 32] = [0; 32];

/// What is told to the log: by an event, or by a direct report.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub event_id: Uuid,
    pub occurred_at: DateTime<Utc>,
    pub source: String,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub origin: Option<String>,
    pub data: serde_json::Value,
}

/// A record as stored and as the API returns it (hashes in lowercase hex).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Record {
    pub seq: i64,
    pub event_id: Uuid,
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub source: String,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub origin: Option<String>,
    pub data: serde_json::Value,
    /// The previous record's hash (64 hex digits; zeros before the first).
    pub prev_hash: String,
    /// SHA-256 of `prev_hash` and this record's canonical JSON.
    pub hash: String,
}

/// The stored row: the payload as its canonical text, hashes as bytes.
#[derive(sqlx::FromRow)]
pub(crate) struct Row {
    seq: i64,
    event_id: Uuid,
    occurred_at: DateTime<Utc>,
    recorded_at: DateTime<Utc>,
    source: String,
    actor: String,
    action: String,
    target: Option<String>,
    origin: Option<String>,
    data: String,
    prev_hash: Vec<u8>,
    hash: Vec<u8>,
}

pub(crate) const COLUMNS: &str = "seq, event_id, occurred_at, recorded_at, source, actor, action, \
                                  target, origin, data, prev_hash, hash";

/// The fields a record's hash covers, in the form RFC 8785 sorts and prints.
#[derive(Serialize)]
struct Canonical<'a> {
    seq: i64,
    event_id: Uuid,
    occurred_at: String,
    recorded_at: String,
    source: &'a str,
    actor: &'a str,
    action: &'a str,
    target: Option<&'a str>,
    origin: Option<&'a str>,
    data: &'a serde_json::Value,
}

#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("canonical JSON: {0}")]
    Canonical(#[from] serde_json::Error),
    #[error("signing a checkpoint: {0}")]
    Sign(#[from] crate::checkpoints::KeyError),
}

/// Timestamps are kept to the microsecond (PostgreSQL's precision), so the bytes hashed
/// when a record is written are the bytes rebuilt when it is read back.
fn micros(at: DateTime<Utc>) -> DateTime<Utc> {
    at.trunc_subsecs(6)
}

fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// The canonical JSON of a record's covered fields: with the previous hash before it, the
/// bytes its hash covers.
pub fn canonical_bytes(record: &Record) -> Result<Vec<u8>, serde_json::Error> {
    serde_json_canonicalizer::to_vec(&Canonical {
        seq: record.seq,
        event_id: record.event_id,
        occurred_at: timestamp(record.occurred_at),
        recorded_at: timestamp(record.recorded_at),
        source: &record.source,
        actor: &record.actor,
        action: &record.action,
        target: record.target.as_deref(),
        origin: record.origin.as_deref(),
        data: &record.data,
    })
}

/// `SHA-256(prev ‖ canonical)`.
pub fn link(prev: &[u8], canonical: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(prev);
    hasher.update(canonical);
    hasher.finalize().into()
}

/// The hash `record` should carry, from its `prev_hash` and fields.
pub fn expected_hash(record: &Record) -> Result<[u8; 32], serde_json::Error> {
    let prev = hex_decode(&record.prev_hash).unwrap_or_default();
    Ok(link(&prev, &canonical_bytes(record)?))
}

impl Row {
    pub(crate) fn seq(&self) -> i64 {
        self.seq
    }

    pub(crate) fn into_record(self) -> Result<Record, serde_json::Error> {
        Ok(Record {
            seq: self.seq,
            event_id: self.event_id,
            occurred_at: self.occurred_at,
            recorded_at: self.recorded_at,
            source: self.source,
            actor: self.actor,
            action: self.action,
            target: self.target,
            origin: self.origin,
            data: serde_json::from_str(&self.data)?,
            prev_hash: hex(&self.prev_hash),
            hash: hex(&self.hash),
        })
    }
}

/// Appends `entries` in order, in `conn`'s transaction, under the head's lock; each one's
/// record, or `None` for an entry whose id is already in the log (told twice: kept once).
/// Signs a checkpoint whenever the head crosses a multiple of `checkpoint_every`.
pub async fn append(
    conn: &mut PgConnection,
    signer: &Signer,
    checkpoint_every: i64,
    entries: &[Entry],
) -> Result<Vec<Option<Record>>, ChainError> {
    let (mut seq, mut prev): (i64, Vec<u8>) =
        sqlx::query_as("SELECT seq, hash FROM audit_head FOR UPDATE")
            .fetch_one(&mut *conn)
            .await?;
    let start = seq;
    let recorded_at = micros(Utc::now());
    let mut appended = Vec::with_capacity(entries.len());
    for entry in entries {
        let mut record = Record {
            seq: seq + 1,
            event_id: entry.event_id,
            occurred_at: micros(entry.occurred_at),
            recorded_at,
            source: entry.source.clone(),
            actor: entry.actor.clone(),
            action: entry.action.clone(),
            target: entry.target.clone(),
            origin: entry.origin.clone(),
            data: entry.data.clone(),
            prev_hash: hex(&prev),
            hash: String::new(),
        };
        let hash = link(&prev, &canonical_bytes(&record)?);
        record.hash = hex(&hash);
        let data = serde_json_canonicalizer::to_string(&record.data)?;
        let written = sqlx::query(
            "INSERT INTO audit_records (seq, event_id, occurred_at, recorded_at, source, actor,
                                        action, target, origin, data, prev_hash, hash)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
             ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(record.seq)
        .bind(record.event_id)
        .bind(record.occurred_at)
        .bind(record.recorded_at)
        .bind(&record.source)
        .bind(&record.actor)
        .bind(&record.action)
        .bind(&record.target)
        .bind(&record.origin)
        .bind(&data)
        .bind(&prev)
        .bind(&hash[..])
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if written == 1 {
            seq += 1;
            prev = hash.to_vec();
            appended.push(Some(record));
        } else {
            appended.push(None);
        }
    }
    if seq > start {
        sqlx::query("UPDATE audit_head SET seq = $1, hash = $2")
            .bind(seq)
            .bind(&prev)
            .execute(&mut *conn)
            .await?;
        if checkpoint_every > 0 && seq / checkpoint_every > start / checkpoint_every {
            crate::checkpoints::sign_head(conn, signer, seq, &prev).await?;
        }
    }
    Ok(appended)
}

/// The record told with `event_id`, if any.
pub async fn by_event_id(db: &PgPool, event_id: Uuid) -> Result<Option<Record>, ChainError> {
    let row: Option<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM audit_records WHERE event_id = $1"
    ))
    .bind(event_id)
    .fetch_optional(db)
    .await?;
    Ok(row.map(Row::into_record).transpose()?)
}

/// Where a chain first fails to hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Broken {
    /// The first record that does not hold (or, for a cut tail, the checkpoint's).
    pub seq: i64,
    pub reason: String,
}

/// What `verify` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Verification {
    /// True when every link holds and the newest checkpoint is signed, covered and matches.
    pub ok: bool,
    /// Records checked.
    pub records: i64,
    /// The last record's seq and hash (as recomputed).
    pub head_seq: i64,
    pub head_hash: String,
    /// The newest checkpoint checked against the chain, if there is one.
    pub checkpoint: Option<Checkpoint>,
    pub first_broken: Option<Broken>,
}

/// Walks the chain record by record, recomputing every hash.
#[derive(Default)]
pub struct Walker {
    expected_seq: i64,
    prev: Vec<u8>,
    records: i64,
    broken: Option<Broken>,
    /// The checkpoint's seq, and the hash recomputed there once the walk passes it.
    wanted: Option<i64>,
    at_wanted: Option<Vec<u8>>,
}

impl Walker {
    /// A walk starting after `(seq, hash)` (the genesis: `(0, GENESIS)`).
    pub fn after(seq: i64, hash: Vec<u8>) -> Self {
        Self {
            expected_seq: seq + 1,
            prev: hash,
            ..Self::default()
        }
    }

    /// Remembers the recomputed hash at `seq`, to check a checkpoint against.
    pub fn want(&mut self, seq: i64) {
        self.wanted = Some(seq);
    }

    /// Checks the next record; false once the chain is broken (the walk can stop).
    pub fn step(&mut self, record: &Record) -> bool {
        if self.broken.is_some() {
            return false;
        }
        let fail = |reason: String| Broken {
            seq: record.seq,
            reason,
        };
        let problem = if record.seq != self.expected_seq {
            Some(fail(format!(
                "sequence number {} where {} was expected (a record is missing or was moved)",
                record.seq, self.expected_seq
            )))
        } else if record.prev_hash != hex(&self.prev) {
            Some(fail(
                "prev_hash is not the previous record's hash (a record before it was changed, removed or inserted)"
                    .to_owned(),
            ))
        } else {
            match canonical_bytes(record) {
                Ok(bytes) => {
                    let hash = link(&self.prev, &bytes);
                    if hex(&hash) == record.hash {
                        self.prev = hash.to_vec();
                        None
                    } else {
                        Some(fail(
                            "hash does not match the record's content (the record was changed)"
                                .to_owned(),
                        ))
                    }
                }
                Err(e) => Some(fail(format!("cannot be put in canonical form: {e}"))),
            }
        };
        match problem {
            Some(broken) => {
                self.broken = Some(broken);
                false
            }
            None => {
                if self.wanted == Some(record.seq) {
                    self.at_wanted = Some(self.prev.clone());
                }
                self.expected_seq += 1;
                self.records += 1;
                true
            }
        }
    }

    /// The verdict, checking `checkpoint` (already known to be validly signed by a trusted
    /// key) against what the walk saw.
    pub fn finish(self, checkpoint: Option<Checkpoint>) -> Verification {
        let head_seq = self.expected_seq - 1;
        let mut broken = self.broken;
        if broken.is_none() {
            if let Some(checkpoint) = &checkpoint {
                if checkpoint.seq > head_seq {
                    broken = Some(Broken {
                        seq: checkpoint.seq,
                        reason: format!(
                            "the chain ends at {head_seq} but a signed checkpoint vouches for record {} (the tail was cut)",
                            checkpoint.seq
                        ),
                    });
                } else if let Some(hash) = &self.at_wanted {
                    if hex(hash) != checkpoint.hash {
                        broken = Some(Broken {
                            seq: checkpoint.seq,
                            reason: "the record at the signed checkpoint has another hash (the chain was rewritten)".to_owned(),
                        });
                    }
                }
            }
        }
        Verification {
            ok: broken.is_none(),
            records: self.records,
            head_seq,
            head_hash: hex(&self.prev),
            checkpoint,
            first_broken: broken,
        }
    }
}

/// Recomputes the whole chain from the first record, and checks the newest checkpoint.
pub async fn verify(db: &PgPool, signer: &Signer) -> Result<Verification, ChainError> {
    let checkpoint = crate::checkpoints::latest(db).await?;
    let mut walker = Walker::after(0, GENESIS.to_vec());
    let mut trusted = None;
    if let Some(checkpoint) = checkpoint {
        match checkpoint.check(signer) {
            Ok(()) => {
                walker.want(checkpoint.seq);
                trusted = Some(checkpoint);
            }
            Err(reason) => {
                return Ok(Verification {
                    ok: false,
                    records: 0,
                    head_seq: 0,
                    head_hash: hex(&GENESIS),
                    first_broken: Some(Broken {
                        seq: checkpoint.seq,
                        reason,
                    }),
                    checkpoint: Some(checkpoint),
                })
            }
        }
    }
    let sql = format!("SELECT {COLUMNS} FROM audit_records ORDER BY seq");
    let mut rows = sqlx::query_as::<_, Row>(&sql).fetch(db);
    while let Some(row) = rows.try_next().await? {
        let seq = row.seq;
        match row.into_record() {
            Ok(record) => {
                if !walker.step(&record) {
                    break;
                }
            }
            Err(e) => {
                walker.broken = Some(Broken {
                    seq,
                    reason: format!("its data is not JSON: {e}"),
                });
                break;
            }
        }
    }
    Ok(walker.finish(trusted))
}

/// One line of an export (JSON lines): where the chain starts, the newest checkpoint within
/// it, then its records, so that the export verifies on its own.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ExportLine {
    /// The record before the first one exported (seq 0 and zeros for the genesis).
    Anchor {
        seq: i64,
        hash: String,
    },
    Record(Record),
    Checkpoint(Checkpoint),
}

/// Verifies an export read from `lines`: every link from the anchor, and the checkpoint's
/// signature and hash. `trusted_key` (base64url), when given, is the only key a
/// checkpoint may be signed with.
pub fn verify_export(
    lines: impl BufRead,
    trusted_key: Option<&str>,
) -> Result<Verification, String> {
    let mut walker = None;
    let mut checkpoint = None;
    for (n, line) in lines.lines().enumerate() {
        let line = line.map_err(|e| format!("reading line {}: {e}", n + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed: ExportLine = serde_json::from_str(&line)
            .map_err(|e| format!("line {} is not an export line: {e}", n + 1))?;
        match parsed {
            ExportLine::Anchor { seq, hash } => {
                let hash = hex_decode(&hash)
                    .ok_or_else(|| format!("line {}: the anchor's hash is not hex", n + 1))?;
                walker = Some(Walker::after(seq, hash));
            }
            ExportLine::Record(record) => {
                let walker = walker
                    .as_mut()
                    .ok_or_else(|| "the export does not start with its anchor".to_owned())?;
                walker.step(&record);
            }
            ExportLine::Checkpoint(c) => {
                let walker = walker
                    .as_mut()
                    .filter(|w| w.records == 0)
                    .ok_or_else(|| "the checkpoint line must follow the anchor".to_owned())?;
                c.check_signature(trusted_key)?;
                walker.want(c.seq);
                checkpoint = Some(c);
            }
        }
    }
    let walker = walker.ok_or_else(|| "the export has no anchor line".to_owned())?;
    Ok(walker.finish(checkpoint))
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

pub fn hex_decode(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: i64, prev: &[u8]) -> Record {
        let mut r = Record {
            seq,
            event_id: Uuid::nil(),
            occurred_at: DateTime::from_timestamp(1_700_000_000, 123_456_000).unwrap(),
            recorded_at: DateTime::from_timestamp(1_700_000_001, 0).unwrap(),
            source: "auth".into(),
            actor: "u1".into(),
            action: "auth.user.registered.v1".into(),
            target: Some("u1".into()),
            origin: None,
            data: serde_json::json!({"b": 1.0, "a": "é"}),
            prev_hash: hex(prev),
            hash: String::new(),
        };
        r.hash = hex(&expected_hash(&r).unwrap());
        r
    }

    #[test]
    fn the_canonical_form_sorts_keys_and_normalises_numbers() {
        let r = record(1, &GENESIS);
        let text = String::from_utf8(canonical_bytes(&r).unwrap()).unwrap();
        assert!(
            text.starts_with(
                r#"{"action":"auth.user.registered.v1","actor":"u1","data":{"a":"é","b":1}"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#""occurred_at":"2023-11-14T22:13:20.123456Z""#),
            "{text}"
        );
    }

    #[test]
    fn a_walk_finds_the_first_changed_record() {
        let a = record(1, &GENESIS);
        let b = record(2, &hex_decode(&a.hash).unwrap());
        let c = record(3, &hex_decode(&b.hash).unwrap());
        let mut walker = Walker::after(0, GENESIS.to_vec());
        assert!([&a, &b, &c].iter().all(|r| walker.step(r)));
        assert!(walker.finish(None).ok);

        let mut changed = b.clone();
        changed.actor = "someone else".into();
        let mut walker = Walker::after(0, GENESIS.to_vec());
        walker.step(&a);
        assert!(!walker.step(&changed));
        let verdict = walker.finish(None);
        assert_eq!(verdict.first_broken.map(|b| b.seq), Some(2));

        let mut walker = Walker::after(0, GENESIS.to_vec());
        walker.step(&a);
        assert!(!walker.step(&c), "a removed record");
    }

    #[test]
    fn hex_round_trips() {
        assert_eq!(hex_decode(&hex(&[0, 15, 255])), Some(vec![0, 15, 255]));
        assert_eq!(hex_decode("abc"), None);
        assert_eq!(hex_decode("zz"), None);
    }
}
