//! The audit log's two figures: records ingested per second from events (published to the
//! exchange every event passes through, recorded by the running service), and the time to
//! verify a chain of 1,000,000 records beside `sha256sum` of the same bytes (the bound: one
//! hash over everything `verify` hashes, without reading, parsing or canonicalising).
//!
//! ```text
//! TEST_DATABASE_URL=... TEST_AMQP_URL=... \
//!     cargo run --release -p audit --example audit_bench -- 20000 1000000
//! ```
//!
//! Prints `key=value` lines. `scripts/bench-audit.sh` runs it and keeps the output.

use std::{
    io::Write as _,
    process::ExitCode,
    time::{Duration, Instant},
};

use audit::{
    chain::{self, Record, GENESIS},
    config::Settings,
    startup::Application,
};
use chrono::{SubsecRound as _, Utc};
use events::{auth::UserUpdated, Event as _};
use lapin::{
    options::{BasicPublishOptions, ConfirmSelectOptions},
    BasicProperties, Connection, ConnectionProperties,
};
use service_kit::{config::Env, events::Envelope, testing};
use sqlx::{Connection as _, PgConnection, PgPool};
use uuid::Uuid;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let events: usize = args
        .next()
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(20_000);
    let chain_len: i64 = args
        .next()
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let server = std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://gravity:gravity@127.0.0.1:5432/postgres".into());

    ingest(&server, events).await?;
    verify(&server, chain_len).await?;
    Ok(())
}

async fn fresh_database(server: &str) -> Result<String, BoxError> {
    let name = format!("audit_bench_{}", Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(server).await?;
    sqlx::query(&format!(r#"CREATE DATABASE "{name}""#))
        .execute(&mut admin)
        .await?;
    match server.rsplit_once('/') {
        Some((base, _)) => Ok(format!("{base}/{name}")),
        None => Err("the database URL has no database part".into()),
    }
}

/// Events published with confirms into the exchange every event passes through; the clock
/// runs from the first publish to the last record committed.
async fn ingest(server: &str, total: usize) -> Result<(), BoxError> {
    let amqp = testing::amqp_url();
    let broker = Connection::connect(&amqp, ConnectionProperties::default()).await?;
    let channel = broker.create_channel().await?;
    let id = Uuid::new_v4().simple().to_string();
    let exchange = format!("bench-audit-{id}");
    let every = format!("bench-every-{id}");
    for name in [&exchange, &every] {
        testing::declare_exchange(&channel, name).await?;
    }
    let url = fresh_database(server).await?;
    let env = Env::from_pairs([
        ("DATABASE_URL", url.as_str()),
        ("HOST", "127.0.0.1"),
        ("PORT", "0"),
        ("AMQP_URL", amqp.as_str()),
        ("AMQP_EXCHANGE", exchange.as_str()),
        ("AMQP_EVERY_EVENT_EXCHANGE", every.as_str()),
    ]);
    let app = Application::build(Settings::from_env(&env)?).await?;
    let db = app.state().db.clone();
    let service = tokio::spawn(app.run_until(std::future::pending()));
    // The subscription's queue is bound once the service's consumer has declared it.
    let queue = format!("{exchange}.all");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let probe = broker.create_channel().await?;
        let declared = probe
            .queue_declare(
                queue.as_str().into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await;
        if declared.is_ok() {
            break;
        }
        if Instant::now() > deadline {
            return Err("the service's queue was never declared".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let started = Instant::now();
    let mut confirms = Vec::with_capacity(500);
    for n in 0..total {
        let event = UserUpdated {
            user_id: Uuid::now_v7(),
            email: format!("user{n}@example.com"),
            full_name: Some(format!("User {n}")),
            is_active: true,
            updated_at: Utc::now(),
        };
        let envelope = Envelope::new("auth", &event, None)?;
        confirms.push(
            channel
                .basic_publish(
                    every.as_str().into(),
                    UserUpdated::TYPE.into(),
                    BasicPublishOptions::default(),
                    &serde_json::to_vec(&envelope)?,
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await?,
        );
        if confirms.len() == 500 {
            for confirm in confirms.drain(..) {
                confirm.await?;
            }
        }
    }
    for confirm in confirms.drain(..) {
        confirm.await?;
    }
    let published = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(600);
    let recorded = loop {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM audit_records WHERE action = 'auth.user.updated.v1'",
        )
        .fetch_one(&db)
        .await?;
        if n as usize >= total {
            break n;
        }
        if Instant::now() > deadline {
            return Err(format!("only {n} of {total} recorded after 10 minutes").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let elapsed = started.elapsed();
    println!("ingest_events={total}");
    println!(
        "ingest_published_per_sec={:.0}",
        total as f64 / published.as_secs_f64()
    );
    println!(
        "ingest_records_per_sec={:.0}",
        total as f64 / elapsed.as_secs_f64()
    );
    println!("ingest_exactly_once={}", recorded as usize == total);
    let verdict = chain::verify(&db, &audit::checkpoints::Signer::load(&db, None).await?).await?;
    println!("ingest_chain_ok={}", verdict.ok);

    service.abort();
    for q in [
        queue.clone(),
        format!("{queue}.retry"),
        format!("{queue}.parked"),
    ] {
        let _ = channel
            .queue_delete(q.as_str().into(), Default::default())
            .await;
    }
    for e in [exchange.clone(), every, format!("{exchange}.retry")] {
        let _ = channel
            .exchange_delete(e.as_str().into(), Default::default())
            .await;
    }
    Ok(())
}

/// Builds a valid chain of `len` records straight into a fresh database (the same records
/// the service would write), then times `verify` over it and `sha256sum` over the bytes it
/// hashes.
async fn verify(server: &str, len: i64) -> Result<(), BoxError> {
    let url = fresh_database(server).await?;
    let db = PgPool::connect(&url).await?;
    audit::startup::MIGRATOR.run(&db).await?;
    let signer = audit::checkpoints::Signer::load(&db, None).await?;
    let bytes_path = std::env::temp_dir().join(format!("audit-bench-{}.bin", Uuid::new_v4()));
    let mut bytes = std::io::BufWriter::new(std::fs::File::create(&bytes_path)?);
    let mut prev = GENESIS.to_vec();
    let mut seq = 0i64;
    let now = Utc::now().trunc_subsecs(6);
    let building = Instant::now();
    while seq < len {
        let mut batch: Vec<Record> = Vec::with_capacity(10_000);
        while batch.len() < 10_000 && seq < len {
            seq += 1;
            let user = Uuid::now_v7();
            let mut record = Record {
                seq,
                event_id: Uuid::now_v7(),
                occurred_at: now,
                recorded_at: now,
                source: "auth".into(),
                actor: user.to_string(),
                action: "auth.user.updated.v1".into(),
                target: Some(user.to_string()),
                origin: Some("/gravity/auth".into()),
                data: serde_json::json!({
                    "user_id": user, "email": format!("user{seq}@example.com"),
                    "full_name": format!("User {seq}"), "is_active": true, "updated_at": now,
                }),
                prev_hash: chain::hex(&prev),
                hash: String::new(),
            };
            let canonical = chain::canonical_bytes(&record)?;
            bytes.write_all(&prev)?;
            bytes.write_all(&canonical)?;
            let hash = chain::link(&prev, &canonical);
            record.hash = chain::hex(&hash);
            prev = hash.to_vec();
            batch.push(record);
        }
        insert(&db, &batch).await?;
    }
    bytes.flush()?;
    drop(bytes);
    sqlx::query("UPDATE audit_head SET seq = $1, hash = $2")
        .bind(seq)
        .bind(&prev)
        .execute(&db)
        .await?;
    audit::checkpoints::checkpoint_head(&db, &signer).await?;
    sqlx::query("VACUUM ANALYZE audit_records")
        .execute(&db)
        .await?;
    println!("chain_records={len}");
    println!("chain_build_secs={:.1}", building.elapsed().as_secs_f64());

    let verifying = Instant::now();
    let verdict = chain::verify(&db, &signer).await?;
    let verify_secs = verifying.elapsed().as_secs_f64();
    println!("verify_ok={}", verdict.ok && verdict.records == len);
    println!("verify_secs={verify_secs:.2}");

    let size = std::fs::metadata(&bytes_path)?.len();
    let hashing = Instant::now();
    let out = std::process::Command::new("sha256sum")
        .arg(&bytes_path)
        .output()?;
    let sha_secs = hashing.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&bytes_path);
    if !out.status.success() {
        return Err("sha256sum failed".into());
    }
    println!("hashed_bytes={size}");
    println!("sha256sum_secs={sha_secs:.2}");
    println!("verify_over_sha256sum={:.1}", verify_secs / sha_secs);
    Ok(())
}

/// A batch of records, column by column, for one `unnest` insert.
#[derive(Default)]
struct Columns {
    seq: Vec<i64>,
    event_id: Vec<Uuid>,
    at: Vec<chrono::DateTime<Utc>>,
    source: Vec<String>,
    actor: Vec<String>,
    action: Vec<String>,
    target: Vec<Option<String>>,
    origin: Vec<Option<String>>,
    data: Vec<String>,
    prev_hash: Vec<Vec<u8>>,
    hash: Vec<Vec<u8>>,
}

async fn insert(db: &PgPool, batch: &[Record]) -> Result<(), BoxError> {
    let mut c = Columns::default();
    for r in batch {
        c.seq.push(r.seq);
        c.event_id.push(r.event_id);
        c.at.push(r.occurred_at);
        c.source.push(r.source.clone());
        c.actor.push(r.actor.clone());
        c.action.push(r.action.clone());
        c.target.push(r.target.clone());
        c.origin.push(r.origin.clone());
        c.data.push(serde_json_canonicalizer::to_string(&r.data)?);
        c.prev_hash
            .push(chain::hex_decode(&r.prev_hash).unwrap_or_default());
        c.hash.push(chain::hex_decode(&r.hash).unwrap_or_default());
    }
    sqlx::query(
        "INSERT INTO audit_records (seq, event_id, occurred_at, recorded_at, source, actor,
                                    action, target, origin, data, prev_hash, hash)
         SELECT s, e, t, t, so, a, ac, ta, o, d, p, h
         FROM unnest($1::bigint[], $2::uuid[], $3::timestamptz[], $4::text[], $5::text[],
                     $6::text[], $7::text[], $8::text[], $9::text[], $10::bytea[], $11::bytea[])
              AS x(s, e, t, so, a, ac, ta, o, d, p, h)",
    )
    .bind(&c.seq)
    .bind(&c.event_id)
    .bind(&c.at)
    .bind(&c.source)
    .bind(&c.actor)
    .bind(&c.action)
    .bind(&c.target)
    .bind(&c.origin)
    .bind(&c.data)
    .bind(&c.prev_hash)
    .bind(&c.hash)
    .execute(db)
    .await?;
    Ok(())
}
