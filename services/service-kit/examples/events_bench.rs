//! The event backbone's throughput and latency end to end (a change committed with its event
//! in the outbox → relayed with confirms → consumed into an inbox with the handler's effect
//! committed), beside the raw bound of the same broker on the same machine: a bare publisher
//! with confirms and a bare consumer with manual acknowledgements, no database.
//!
//! ```text
//! TEST_DATABASE_URL=... TEST_AMQP_URL=... \
//!     cargo run --release -p service-kit --example events_bench -- 20000
//! ```
//!
//! Prints `key=value` lines: events per second and p50/p99 latency in milliseconds for both
//! paths, whether every effect happened exactly once, and the resident memory of the broker
//! and of this process (which runs the relay and the consumer, as a service does) idle and
//! at its peak under the load. `scripts/bench-events.sh` runs it and keeps the output.

use std::{
    process::ExitCode,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use events::Event;
use futures_util::StreamExt as _;
use lapin::{
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
        ConfirmSelectOptions, QueueBindOptions, QueueDeclareOptions,
    },
    types::FieldTable,
    BasicProperties, Connection, ConnectionProperties,
};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use service_kit::{
    events::{
        record, Consumer, ConsumerSettings, Handled, HandlerError, Relay, RelaySettings,
        Subscription,
    },
    testing,
};
use sqlx::{postgres::PgPoolOptions, Connection as _, PgConnection, PgPool};
use uuid::Uuid;

const EVENTS_SQL: &str = concat!(
    include_str!("../../../templates/service/migrations/20261202000000_events.sql"),
    include_str!("../../../templates/service/migrations/20261202120000_outbox_deletes.sql"),
);
/// Concurrent writers, each committing one event per transaction.
const WRITERS: usize = 16;
/// Publishes in flight before the raw publisher waits for their confirms (the relay's batch).
const WINDOW: usize = 500;

/// The benchmark's event: made at `sent_at`, just before its transaction commits.
#[derive(Serialize, Deserialize)]
struct Tick {
    n: u64,
    sent_at: DateTime<Utc>,
}

impl Event for Tick {
    const TYPE: &'static str = "bench.tick.made.v1";
    fn subject(&self) -> String {
        format!("tick-{}", self.n % 64)
    }
}

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
    let total: u64 = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(20_000);
    let amqp = testing::amqp_url();
    let database = std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://gravity:gravity@127.0.0.1:5432/postgres".into());
    let broker = Connection::connect(&amqp, ConnectionProperties::default()).await?;
    let id = Uuid::new_v4().simple().to_string();

    let memory = Memory::start();
    // The bound: the broker doing what it does for Gravity (a durable queue, persistent
    // messages, so nothing confirmed is lost if it restarts). The same through a transient
    // queue, which the broker keeps in memory only, is printed for reference.
    let (raw_rate, raw_p50, raw_p99) =
        raw_bound(&broker, &format!("bench-raw-{id}"), total, true).await?;
    let (transient_rate, _, _) =
        raw_bound(&broker, &format!("bench-rawt-{id}"), total, false).await?;
    println!("raw_events_per_sec={raw_rate:.0}");
    println!("raw_transient_queue_events_per_sec={transient_rate:.0}");
    println!("raw_p50_ms={raw_p50:.2}");
    println!("raw_p99_ms={raw_p99:.2}");

    let exchange = format!("bench-{id}");
    declare_exchange(&broker, &exchange).await?;
    let source = fresh_database(&database, 32).await?;
    let sink = fresh_database(&database, 32).await?;
    let url = SecretString::from(amqp.clone());
    let mut consumer_settings = ConsumerSettings::new(url.clone(), format!("benchc{}", &id[..8]));
    consumer_settings
        .exchanges
        .insert("bench".to_owned(), exchange.clone());
    let knob = |var: &str| {
        std::env::var(var)
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
    };
    if let Some(lanes) = knob("LANES") {
        consumer_settings.batched_lanes = lanes;
    }
    if let Some(prefetch) = knob("PREFETCH") {
        consumer_settings.prefetch = u16::try_from(prefetch).unwrap_or(u16::MAX);
    }
    if let Some(batch) = knob("BATCH") {
        consumer_settings.batch = batch;
    }
    let consumer = Consumer::new(sink.clone(), consumer_settings)
        .subscribe(Subscription::new("ticks").batched().on(effect));
    consumer.declare().await?;
    let queue = consumer.queue("ticks");
    let mut relay_settings = RelaySettings::new(url, exchange.clone());
    if let Some(batch) = knob("RELAY_BATCH") {
        relay_settings.batch = batch as i64;
    }
    // DRAIN=1: the relay starts only once every change committed, to measure how fast the
    // backbone empties a full outbox, apart from how fast changes commit.
    let drain = knob("DRAIN") == Some(1);
    let relay_task = Relay::new(source.clone(), relay_settings).run(std::future::pending());
    let mut relay_task = Some(relay_task);
    let mut relay = None;
    if !drain {
        relay = relay_task.take().map(tokio::spawn);
    }
    let worker = tokio::spawn(consumer.run(std::future::pending()));
    tokio::time::sleep(Duration::from_secs(2)).await;
    memory.mark_idle();

    memory.sample_while_loaded(true);
    let written = Arc::new(AtomicU64::new(0));
    // Events each change commits (1: every event its own transaction).
    let per_change: u64 = std::env::var("EVENTS_PER_CHANGE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1);
    println!("events_per_change={per_change}");
    let writers: Vec<_> = (0..WRITERS as u64)
        .map(|w| {
            let source = source.clone();
            let exchange = exchange.clone();
            let written = Arc::clone(&written);
            tokio::spawn(async move {
                let mut n = w;
                while n < total {
                    let mut tx = source.begin().await?;
                    for _ in 0..per_change {
                        if n >= total {
                            break;
                        }
                        let tick = Tick {
                            n,
                            sent_at: Utc::now(),
                        };
                        record(&mut tx, &exchange, &tick).await?;
                        written.fetch_add(1, Ordering::Relaxed);
                        n += WRITERS as u64;
                    }
                    tx.commit().await?;
                }
                Ok::<(), BoxError>(())
            })
        })
        .collect();
    let writing = Instant::now();
    for writer in writers {
        writer.await??;
    }
    // How fast the changes themselves commit (events per second): no path carries more.
    println!(
        "written_events_per_sec={:.0}",
        total as f64 / writing.elapsed().as_secs_f64()
    );
    let drain_started = chrono::Utc::now();
    if let Some(task) = relay_task.take() {
        relay = Some(tokio::spawn(task));
    }
    let behind: (i64,) = sqlx::query_as("SELECT count(*) FROM event_outbox")
        .fetch_one(&source)
        .await?;
    let handled: (i64,) = sqlx::query_as("SELECT count(*) FROM effects")
        .fetch_one(&sink)
        .await?;
    // Where the backlog was when the last change committed: in the outbox (the relay behind)
    // or in the broker (the consumer behind).
    println!("unpublished_when_writes_ended={}", behind.0);
    println!("handled_when_writes_ended={}", handled.0);
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let done: i64 = sqlx::query_scalar("SELECT count(*) FROM effects")
            .fetch_one(&sink)
            .await?;
        if done as u64 >= total {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("only {done} of {total} effects after 10 minutes").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    memory.sample_while_loaded(false);
    let (rate, p50, p99, distinct): (f64, f64, f64, i64) = sqlx::query_as(
        "SELECT count(*) / extract(epoch FROM max(handled_at) - min(sent_at))::float8,
                1000 * extract(epoch FROM percentile_cont(0.5) WITHIN GROUP (ORDER BY handled_at - sent_at))::float8,
                1000 * extract(epoch FROM percentile_cont(0.99) WITHIN GROUP (ORDER BY handled_at - sent_at))::float8,
                count(DISTINCT n)
         FROM effects",
    )
    .fetch_one(&sink)
    .await?;
    println!("gravity_events_per_sec={rate:.0}");
    if drain {
        let drained: f64 = sqlx::query_scalar(
            "SELECT count(*) / extract(epoch FROM max(handled_at) - $1)::float8 FROM effects",
        )
        .bind(drain_started)
        .fetch_one(&sink)
        .await?;
        println!("drain_events_per_sec={drained:.0}");
        println!("drain_share_of_raw_pct={:.0}", 100.0 * drained / raw_rate);
    }
    println!("gravity_p50_ms={p50:.2}");
    println!("gravity_p99_ms={p99:.2}");
    println!("gravity_share_of_raw_pct={:.0}", 100.0 * rate / raw_rate);
    let effects: i64 = sqlx::query_scalar("SELECT count(*) FROM effects")
        .fetch_one(&sink)
        .await?;
    println!(
        "exactly_once={}",
        effects as u64 == total && distinct as u64 == total
    );
    memory.print();

    if let Some(relay) = relay {
        relay.abort();
    }
    worker.abort();
    let channel = broker.create_channel().await?;
    for q in [
        queue.clone(),
        format!("{queue}.retry"),
        format!("{queue}.parked"),
    ] {
        let _ = channel
            .queue_delete(q.as_str().into(), Default::default())
            .await;
    }
    for e in [exchange, format!("benchc{}.retry", &id[..8])] {
        let _ = channel
            .exchange_delete(e.as_str().into(), Default::default())
            .await;
    }
    Ok(())
}

/// The handler's effect: one row, stamped when it is written (just before its commit).
async fn effect(
    mut handled: Handled<Tick>,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, HandlerError> {
    sqlx::query("INSERT INTO effects (n, sent_at) VALUES ($1, $2)")
        .bind(handled.event.n as i64)
        .bind(handled.event.sent_at)
        .execute(&mut *handled.tx)
        .await?;
    Ok(handled.tx)
}

/// A bare publisher with confirms (`WINDOW` in flight) and a bare consumer with manual acks,
/// through a durable queue (as every subscription's) or a transient one.
async fn raw_bound(
    broker: &Connection,
    exchange: &str,
    total: u64,
    durable: bool,
) -> Result<(f64, f64, f64), BoxError> {
    declare_exchange(broker, exchange).await?;
    let consuming = broker.create_channel().await?;
    consuming.basic_qos(64, BasicQosOptions::default()).await?;
    let queue = format!("{exchange}.all");
    consuming
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                durable,
                exclusive: !durable,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    consuming
        .queue_bind(
            queue.as_str().into(),
            exchange.into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let start = Instant::now();
    let mut deliveries = consuming
        .basic_consume(
            queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let consumer = tokio::spawn(async move {
        let mut latencies = Vec::with_capacity(total as usize);
        while (latencies.len() as u64) < total {
            let Some(delivery) = deliveries.next().await else {
                break;
            };
            let delivery = delivery?;
            let sent = u64::from_le_bytes(
                delivery
                    .data
                    .get(..8)
                    .and_then(|b| b.try_into().ok())
                    .unwrap_or_default(),
            );
            delivery.ack(BasicAckOptions::default()).await?;
            latencies.push(start.elapsed().as_nanos() as u64 - sent);
        }
        Ok::<_, lapin::Error>((latencies, start.elapsed()))
    });
    let publishing = broker.create_channel().await?;
    publishing
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let mut sent = 0;
    let first = start.elapsed();
    while sent < total {
        let mut confirms = Vec::with_capacity(WINDOW);
        for _ in 0..WINDOW.min((total - sent) as usize) {
            let mut body = (start.elapsed().as_nanos() as u64).to_le_bytes().to_vec();
            body.extend_from_slice(&[b'x'; 300]);
            confirms.push(
                publishing
                    .basic_publish(
                        exchange.into(),
                        "bench.raw".into(),
                        BasicPublishOptions::default(),
                        &body,
                        BasicProperties::default().with_delivery_mode(2),
                    )
                    .await?,
            );
            sent += 1;
        }
        for confirm in confirms {
            confirm.await?;
        }
    }
    let (mut latencies, last) = consumer.await??;
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1e6
    };
    let rate = latencies.len() as f64 / (last - first).as_secs_f64();
    let channel = broker.create_channel().await?;
    let _ = channel
        .queue_delete(queue.as_str().into(), Default::default())
        .await;
    let _ = channel
        .exchange_delete(exchange.into(), Default::default())
        .await;
    Ok((rate, pct(0.5), pct(0.99)))
}

async fn declare_exchange(broker: &Connection, exchange: &str) -> Result<(), lapin::Error> {
    testing::declare_exchange(&broker.create_channel().await?, exchange).await
}

async fn fresh_database(server: &str, connections: u32) -> Result<PgPool, BoxError> {
    let name = format!("events_bench_{}", Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(server).await?;
    sqlx::query(&format!(r#"CREATE DATABASE "{name}""#))
        .execute(&mut admin)
        .await?;
    let url = match server.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => return Err("the database URL has no database part".into()),
    };
    let pool = PgPoolOptions::new()
        .max_connections(connections)
        .connect(&url)
        .await?;
    sqlx::raw_sql(EVENTS_SQL).execute(&pool).await?;
    sqlx::raw_sql(
        "CREATE TABLE effects (n bigint NOT NULL, sent_at timestamptz NOT NULL,
                               handled_at timestamptz NOT NULL DEFAULT clock_timestamp())",
    )
    .execute(&pool)
    .await?;
    Ok(pool)
}

/// Resident memory of the broker (its Erlang VM) and of this process, idle and at the peak
/// of the load, sampled every 100 ms from /proc.
struct Memory {
    state: Arc<MemoryState>,
}

#[derive(Default)]
struct MemoryState {
    loaded: AtomicBool,
    idle_self: AtomicU64,
    idle_broker: AtomicU64,
    peak_self: AtomicU64,
    peak_broker: AtomicU64,
}

impl Memory {
    fn start() -> Self {
        let state = Arc::new(MemoryState::default());
        let sampler = Arc::clone(&state);
        tokio::spawn(async move {
            loop {
                if sampler.loaded.load(Ordering::Relaxed) {
                    sampler
                        .peak_self
                        .fetch_max(rss_kib("self"), Ordering::Relaxed);
                    sampler
                        .peak_broker
                        .fetch_max(broker_rss_kib(), Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Self { state }
    }

    fn mark_idle(&self) {
        self.state
            .idle_self
            .store(rss_kib("self"), Ordering::Relaxed);
        self.state
            .idle_broker
            .store(broker_rss_kib(), Ordering::Relaxed);
    }

    fn sample_while_loaded(&self, loaded: bool) {
        self.state.loaded.store(loaded, Ordering::Relaxed);
    }

    fn print(&self) {
        let mib = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64 / 1024.0;
        println!("broker_rss_idle_mib={:.0}", mib(&self.state.idle_broker));
        println!("broker_rss_peak_mib={:.0}", mib(&self.state.peak_broker));
        println!("service_rss_idle_mib={:.1}", mib(&self.state.idle_self));
        println!("service_rss_peak_mib={:.1}", mib(&self.state.peak_self));
    }
}

fn rss_kib(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse().ok())
        })
        .unwrap_or(0)
}

/// The RabbitMQ node's Erlang VM (`beam.smp`), found by its command name in /proc.
fn broker_rss_kib() -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|pid| pid.chars().all(|c| c.is_ascii_digit()))
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.contains("beam.smp") && c.contains("rabbit"))
        })
        .map(|pid| rss_kib(&pid))
        .max()
        .unwrap_or(0)
}
