//! The event backbone against a real RabbitMQ and real PostgreSQL: outbox, relay, consumers,
//! inbox, retries and parking. Each test uses service names of its own, so its exchanges and
//! queues are its own, and a database of its own per service.
//!
//! The outage test runs a RabbitMQ node of its own (`OwnBroker`), which it stops and starts;
//! the others share the broker `scripts/dev-deps.sh` starts.

use std::{
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc,
    },
    time::Duration,
};

use events::{auth::UserDeleted, Event};
use futures_util::StreamExt as _;
use lapin::{
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions,
        QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
    },
    types::{AMQPValue, FieldTable, ShortString},
    BasicProperties, Connection, ConnectionProperties,
};
use secrecy::SecretString;
use service_kit::{
    events::{
        record, Consumer, ConsumerSettings, Handled, HandlerError, Relay, RelaySettings,
        Subscription, ERROR_HEADER,
    },
    testing,
};
use sqlx::{Connection as _, PgConnection, PgPool};
use tokio::task::JoinHandle;
use uuid::Uuid;

const EVENTS_SQL: &str = concat!(
    include_str!("../../../templates/service/migrations/20261202000000_events.sql"),
    include_str!("../../../templates/service/migrations/20261202120000_outbox_deletes.sql"),
);

fn database_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://gravity:gravity@127.0.0.1:5432/postgres".into())
}

/// A fresh database with the events tables and `effects`, where handlers write.
async fn fresh_database() -> PgPool {
    let name = format!("events_test_{}", Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(&database_url())
        .await
        .expect("cannot reach PostgreSQL; set TEST_DATABASE_URL (see README)");
    sqlx::query(&format!(r#"CREATE DATABASE "{name}""#))
        .execute(&mut admin)
        .await
        .expect("create test database");
    let url = match database_url().rsplit_once('/') {
        Some((server, _)) => format!("{server}/{name}"),
        None => panic!("TEST_DATABASE_URL has no database part"),
    };
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(12)
        .connect(&url)
        .await
        .expect("connect to the test database");
    sqlx::raw_sql(EVENTS_SQL)
        .execute(&pool)
        .await
        .expect("events tables");
    sqlx::raw_sql(
        "CREATE TABLE effects (event_id uuid NOT NULL, user_id uuid NOT NULL, n int NOT NULL DEFAULT 1)",
    )
    .execute(&pool)
    .await
    .expect("effects table");
    pool
}

/// A unique service name for one test: `p<hex>` (a publisher) or `c<hex>` (a consumer).
fn name(prefix: char) -> String {
    format!("{prefix}{}", &Uuid::new_v4().simple().to_string()[..12])
}

async fn broker() -> Connection {
    Connection::connect(&testing::amqp_url(), ConnectionProperties::default())
        .await
        .expect("cannot reach RabbitMQ; set TEST_AMQP_URL (see README)")
}

/// Declares a publisher's topic exchange, as `gravity up` does for every service.
async fn declare_exchange(conn: &Connection, exchange: &str) {
    let channel = conn.create_channel().await.expect("channel");
    testing::declare_exchange(&channel, exchange)
        .await
        .expect("declare the publisher's exchange");
}

/// A RabbitMQ node of one test's own: Debian's `rabbitmq-server` script run with every
/// directory (data, logs, Erlang cookie) in a folder of the test's, on ports of its own, so
/// the test can really stop it and start it again with its data, while the broker the other
/// tests share keeps running.
struct OwnBroker {
    dir: std::path::PathBuf,
    port: u16,
    dist_port: u16,
    node: String,
    child: Option<tokio::process::Child>,
}

const RABBITMQ_SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";

impl OwnBroker {
    async fn start() -> Self {
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("a free port")
        };
        let id = &Uuid::new_v4().simple().to_string()[..10];
        let dir = std::env::temp_dir().join(format!("gravity-rabbit-{id}"));
        std::fs::create_dir_all(dir.join("home")).expect("the node's folder");
        let mut broker = Self {
            dir,
            port: free(),
            dist_port: free(),
            node: format!("gtest{id}@localhost"),
            child: None,
        };
        broker.up().await;
        broker
    }

    /// Starts the node (again) and waits until it takes an AMQP connection.
    async fn up(&mut self) {
        let child = tokio::process::Command::new(RABBITMQ_SERVER)
            .env("HOME", self.dir.join("home"))
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", self.dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", self.dir.join("log"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", self.dir.join("plugins"))
            .env("RABBITMQ_PID_FILE", self.dir.join("pid"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run {RABBITMQ_SERVER} ({e}); scripts/dev-deps.sh installs it")
            });
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(conn) =
                Connection::connect(&self.amqp_url(), ConnectionProperties::default()).await
            {
                let _ = conn.close(200, "up".into()).await;
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the test's RabbitMQ node did not start within a minute (logs in {})",
                self.dir.display()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Stops the node as an operator would (SIGTERM to its VM: a clean shutdown) and waits
    /// until it is gone.
    async fn down(&mut self) {
        self.signal("TERM");
        if let Some(mut child) = self.child.take() {
            let _ = tokio::time::timeout(Duration::from_secs(60), child.wait()).await;
        }
    }

    fn signal(&self, signal: &str) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("pid")) {
            let _ = std::process::Command::new("kill")
                .args([format!("-{signal}"), pid.trim().to_owned()])
                .status();
        }
    }

    fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    fn url(&self) -> SecretString {
        SecretString::from(self.amqp_url())
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.signal("KILL");
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn relay_settings(url: SecretString, exchange: &str) -> RelaySettings {
    let mut settings = RelaySettings::new(url, exchange);
    settings.standby_poll = Duration::from_millis(100);
    settings.idle_poll = Duration::from_millis(200);
    settings
}

/// A consumer whose `auth.*` events come from the test's own `publisher` exchange.
fn consumer_settings(url: SecretString, service: &str, publisher: &str) -> ConsumerSettings {
    let mut settings = ConsumerSettings::new(url, service);
    settings
        .exchanges
        .insert("auth".to_owned(), publisher.to_owned());
    settings.backoff = Duration::from_millis(50);
    settings.max_backoff = Duration::from_millis(200);
    settings.max_attempts = 3;
    settings
}

fn spawn<F: std::future::Future<Output = ()> + Send + 'static>(f: F) -> JoinHandle<()> {
    tokio::spawn(f)
}

/// The effect of a `UserDeleted`: one row in `effects`, in the handler's transaction.
async fn count_effect(
    mut handled: Handled<UserDeleted>,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, HandlerError> {
    sqlx::query("INSERT INTO effects (event_id, user_id) VALUES ($1, $2)")
        .bind(handled.id)
        .bind(handled.event.user_id)
        .execute(&mut *handled.tx)
        .await?;
    Ok(handled.tx)
}

/// Writes `n` events to the outbox, `per_tx` per transaction, about `subjects` users.
async fn publish_events(
    pool: &PgPool,
    publisher: &str,
    n: usize,
    per_tx: usize,
    subjects: &[Uuid],
) {
    let mut written = 0;
    while written < n {
        let mut tx = pool.begin().await.expect("begin");
        for i in written..(written + per_tx).min(n) {
            let event = UserDeleted {
                user_id: subjects[i % subjects.len()],
                deleted_at: chrono::Utc::now(),
            };
            record(&mut tx, publisher, &event)
                .await
                .expect("record an event");
        }
        tx.commit().await.expect("commit");
        written = (written + per_tx).min(n);
    }
}

async fn wait_until<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn scalar(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.expect(sql)
}

/// Deletes a consumer's queues and exchange (best effort: the test's outcome is decided).
async fn clean_up(conn: &Connection, queues: &[String], exchanges: &[String]) {
    if let Ok(channel) = conn.create_channel().await {
        for queue in queues {
            let _ = channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        for exchange in exchanges {
            let _ = channel
                .exchange_delete(exchange.as_str().into(), Default::default())
                .await;
        }
    }
}

fn queues_of(queue: &str) -> Vec<String> {
    vec![
        queue.to_owned(),
        format!("{queue}.retry"),
        format!("{queue}.parked"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_events_survive_the_broker_stopped_twice_and_a_killed_consumer_with_each_effect_once(
) {
    let mut broker = OwnBroker::start().await;
    let (publisher, consumer) = (name('p'), name('c'));
    {
        let conn = Connection::connect(&broker.amqp_url(), ConnectionProperties::default())
            .await
            .expect("the test's broker");
        declare_exchange(&conn, &publisher).await;
        let _ = conn.close(200, "declared".into()).await;
    }
    let (source, sink) = (fresh_database().await, fresh_database().await);
    let url = broker.url();
    let consumers = || {
        Consumer::new(
            sink.clone(),
            consumer_settings(url.clone(), &consumer, &publisher),
        )
        .subscribe(Subscription::new("deletions").on(count_effect))
    };
    consumers()
        .declare()
        .await
        .expect("declare the subscription");

    let relay = spawn(
        Relay::new(source.clone(), relay_settings(url.clone(), &publisher))
            .run(std::future::pending()),
    );
    let mut worker = spawn(consumers().run(std::future::pending()));
    let subjects: Vec<Uuid> = (0..50).map(|_| Uuid::now_v7()).collect();
    let total: usize = 10_000;

    // Written steadily, 50 per transaction, while the broker goes down and up twice: the
    // last tenth waits until both outages are over, so both happen mid-stream.
    let outages_over = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let source = source.clone();
        let publisher = publisher.clone();
        let subjects = subjects.clone();
        let outages_over = Arc::clone(&outages_over);
        tokio::spawn(async move {
            for chunk in 0..total / 250 {
                while chunk * 250 >= total * 9 / 10 && !outages_over.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                publish_events(&source, &publisher, 250, 50, &subjects[..]).await;
                if !outages_over.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        })
    };
    let effects = |at_least: i64| {
        let sink = sink.clone();
        async move { scalar(&sink, "SELECT count(*) FROM effects").await >= at_least }
    };
    for _ in 0..2 {
        let now = scalar(&sink, "SELECT count(*) FROM effects").await;
        wait_until("effects between outages", Duration::from_secs(90), || {
            effects(now + 1)
        })
        .await;
        assert!(
            !writer.is_finished(),
            "the broker stops while events are written"
        );
        broker.down().await;
        // Changes go on committing while the broker is away: their events wait.
        tokio::time::sleep(Duration::from_millis(500)).await;
        broker.up().await;
    }
    outages_over.store(true, Ordering::SeqCst);
    // The consumer killed mid-batch: its unacknowledged deliveries are redelivered.
    let now = scalar(&sink, "SELECT count(*) FROM effects").await;
    wait_until("effects after the outages", Duration::from_secs(90), || {
        effects(now + 1)
    })
    .await;
    let before = scalar(&sink, "SELECT count(*) FROM effects").await;
    worker.abort();
    let _ = (&mut worker).await;
    worker = spawn(consumers().run(std::future::pending()));
    writer.await.expect("every event written");

    wait_until("every event handled", Duration::from_secs(180), || {
        effects(total as i64)
    })
    .await;
    // Anything still in flight would show up as a second effect now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        before < total as i64,
        "the consumer was killed mid-stream ({before} handled)"
    );
    assert_eq!(
        scalar(&sink, "SELECT count(*) FROM effects").await,
        total as i64
    );
    assert_eq!(
        scalar(&sink, "SELECT count(DISTINCT event_id) FROM effects").await,
        total as i64,
        "each event's effect exactly once"
    );
    assert_eq!(
        scalar(&source, "SELECT count(*) FROM event_outbox").await,
        0
    );
    // Nothing was parked, and the relay and the consumer still work.
    let conn = Connection::connect(&broker.amqp_url(), ConnectionProperties::default())
        .await
        .expect("the test's broker");
    let channel = conn.create_channel().await.expect("channel");
    let parked = channel
        .queue_declare(
            format!("{}.parked", consumers().queue("deletions"))
                .as_str()
                .into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("the parking queue");
    assert_eq!(parked.message_count(), 0);
    publish_events(&source, &publisher, 10, 10, &subjects).await;
    wait_until("events after the chaos", Duration::from_secs(30), || {
        effects(total as i64 + 10)
    })
    .await;
    assert!(
        !relay.is_finished() && !worker.is_finished(),
        "neither died"
    );
    relay.abort();
    worker.abort();
    let _ = conn.close(200, "done".into()).await;
    broker.down().await;
}

#[tokio::test]
async fn two_relays_of_one_outbox_never_publish_an_event_twice() {
    let conn = broker().await;
    let publisher = name('p');
    declare_exchange(&conn, &publisher).await;
    let source = fresh_database().await;
    // A plain queue with no inbox in front of it: every copy the broker got is counted.
    let channel = conn.create_channel().await.expect("channel");
    let queue = format!("{publisher}.all");
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("queue");
    channel
        .queue_bind(
            queue.as_str().into(),
            publisher.as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind");
    let url = SecretString::from(testing::amqp_url());
    let relays: Vec<_> = (0..2)
        .map(|_| {
            spawn(
                Relay::new(source.clone(), relay_settings(url.clone(), &publisher))
                    .run(std::future::pending()),
            )
        })
        .collect();
    let subjects = [Uuid::now_v7(), Uuid::now_v7()];
    publish_events(&source, &publisher, 2_000, 20, &subjects).await;

    let mut seen = std::collections::HashMap::<Uuid, u32>::new();
    let mut order = std::collections::HashMap::<String, Vec<Uuid>>::new();
    let mut deliveries = channel
        .basic_consume(
            queue.as_str().into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("consume");
    while seen.len() < 2_000 {
        let delivery = tokio::time::timeout(Duration::from_secs(30), deliveries.next())
            .await
            .expect("events keep coming")
            .expect("a delivery")
            .expect("a delivery");
        let envelope = service_kit::events::Envelope::decode(&delivery.data).expect("an envelope");
        *seen.entry(envelope.id).or_default() += 1;
        order
            .entry(envelope.subject.clone().unwrap_or_default())
            .or_default()
            .push(envelope.id);
    }
    // Anything published twice would arrive within this wait.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let channel2 = conn.create_channel().await.expect("channel");
    let extra = channel2
        .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .expect("get");
    assert!(extra.is_none(), "a copy arrived after all 2000");
    assert!(seen.values().all(|n| *n == 1), "every event once");
    // Ids are v7 (time-ordered): each subject's events arrived in the order written.
    for ids in order.values() {
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "per-subject order");
    }
    for relay in relays {
        relay.abort();
    }
    clean_up(&conn, &[queue], &[publisher]).await;
}

#[tokio::test]
async fn a_failing_handler_is_parked_after_its_attempts_and_bad_messages_at_once() {
    let conn = broker().await;
    let (publisher, consumer) = (name('p'), name('c'));
    declare_exchange(&conn, &publisher).await;
    let sink = fresh_database().await;
    let url = SecretString::from(testing::amqp_url());
    let attempts = Arc::new(AtomicU32::new(0));
    let consumer_for = |attempts: Arc<AtomicU32>| {
        Consumer::new(
            sink.clone(),
            consumer_settings(url.clone(), &consumer, &publisher),
        )
        .subscribe(
            Subscription::new("flaky").on(move |handled: Handled<UserDeleted>| {
                let attempts = Arc::clone(&attempts);
                async move {
                    attempts.fetch_add(1, Ordering::SeqCst);
                    Err::<sqlx::Transaction<'static, sqlx::Postgres>, HandlerError>(
                        format!("the mail server refused {}", handled.event.user_id).into(),
                    )
                }
            }),
        )
    };
    let subscription = consumer_for(Arc::clone(&attempts));
    subscription.declare().await.expect("declare");
    let queue = subscription.queue("flaky");
    let worker = spawn(subscription.run(std::future::pending()));

    // One event that always fails, then three messages no handler can take.
    let channel = conn.create_channel().await.expect("channel");
    let user = Uuid::now_v7();
    let good = service_kit::events::Envelope::new(
        &publisher,
        &UserDeleted {
            user_id: user,
            deleted_at: chrono::Utc::now(),
        },
        None,
    )
    .expect("envelope");
    let mut unknown = good.clone();
    unknown.id = Uuid::now_v7();
    unknown.event_type = "auth.user.deleted.v9".to_owned();
    let mut broken = good.clone();
    broken.id = Uuid::now_v7();
    broken.data = serde_json::json!({ "user_id": "not a uuid" });
    let bodies = [
        serde_json::to_vec(&good).expect("json"),
        b"this is not a CloudEvent".to_vec(),
        serde_json::to_vec(&unknown).expect("json"),
        serde_json::to_vec(&broken).expect("json"),
    ];
    for body in &bodies {
        channel
            .basic_publish(
                publisher.as_str().into(),
                UserDeleted::TYPE.into(),
                BasicPublishOptions::default(),
                body,
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .expect("publish");
    }

    let parked = format!("{queue}.parked");
    let mut reasons = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while reasons.len() < 4 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "parked so far: {reasons:?}"
        );
        match channel
            .basic_get(parked.as_str().into(), BasicGetOptions::default())
            .await
            .expect("get")
        {
            Some(message) => {
                let error = message
                    .properties
                    .headers()
                    .as_ref()
                    .and_then(|h| h.inner().get(&ShortString::from(ERROR_HEADER)).cloned());
                let error = match error {
                    Some(AMQPValue::LongString(s)) => s.to_string(),
                    other => format!("{other:?}"),
                };
                reasons.push(error);
                message.ack(BasicAckOptions::default()).await.expect("ack");
            }
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let all = reasons.join("\n");
    assert!(
        all.contains(&format!("the mail server refused {user}")),
        "{all}"
    );
    assert!(all.contains("not a CloudEvent"), "{all}");
    assert!(all.contains("auth.user.deleted.v9"), "{all}");
    assert!(all.contains("does not parse"), "{all}");
    assert_eq!(
        attempts.load(Ordering::SeqCst),
        3,
        "three attempts, then parked"
    );
    assert_eq!(
        scalar(&sink, "SELECT count(*) FROM event_inbox").await,
        0,
        "nothing handled"
    );
    assert!(!worker.is_finished(), "the consumer kept running");
    worker.abort();
    clean_up(
        &conn,
        &queues_of(&queue),
        &[publisher, format!("{consumer}.retry")],
    )
    .await;
}

#[tokio::test]
async fn a_failure_inside_a_batch_retries_only_its_own_event_and_every_effect_happens_once() {
    let conn = broker().await;
    let (publisher, consumer) = (name('p'), name('c'));
    declare_exchange(&conn, &publisher).await;
    let (source, sink) = (fresh_database().await, fresh_database().await);
    let url = SecretString::from(testing::amqp_url());
    // Every third user's first attempt fails; the rest succeed at once.
    let failed_once = Arc::new(std::sync::Mutex::new(
        std::collections::HashSet::<Uuid>::new(),
    ));
    let retried = Arc::new(AtomicU32::new(0));
    let subscriber = {
        let failed_once = Arc::clone(&failed_once);
        let retried = Arc::clone(&retried);
        Consumer::new(
            sink.clone(),
            consumer_settings(url.clone(), &consumer, &publisher),
        )
        .subscribe(Subscription::new("batches").batched().on(
            move |handled: Handled<UserDeleted>| {
                let failed_once = Arc::clone(&failed_once);
                let retried = Arc::clone(&retried);
                async move {
                    let user = handled.event.user_id;
                    let fail = user.as_u128().is_multiple_of(3)
                        && failed_once
                            .lock()
                            .map(|mut s| s.insert(user))
                            .unwrap_or(false);
                    if fail {
                        retried.fetch_add(1, Ordering::SeqCst);
                        return Err::<sqlx::Transaction<'static, sqlx::Postgres>, HandlerError>(
                            "not yet".into(),
                        );
                    }
                    count_effect(handled).await
                }
            },
        ))
    };
    subscriber.declare().await.expect("declare");
    let queue = subscriber.queue("batches");
    // Written before anything consumes, so the consumer finds full lanes and batches them.
    let subjects: Vec<Uuid> = (0..300).map(|_| Uuid::new_v4()).collect();
    publish_events(&source, &publisher, 300, 300, &subjects).await;
    let relay = spawn(
        Relay::new(source.clone(), relay_settings(url.clone(), &publisher))
            .run(std::future::pending()),
    );
    wait_until("all published", Duration::from_secs(30), || {
        let source = source.clone();
        async move { scalar(&source, "SELECT count(*) FROM event_outbox").await == 0 }
    })
    .await;
    let worker = spawn(subscriber.run(std::future::pending()));
    wait_until("every event handled", Duration::from_secs(60), || {
        let sink = sink.clone();
        async move { scalar(&sink, "SELECT count(*) FROM effects").await >= 300 }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(scalar(&sink, "SELECT count(*) FROM effects").await, 300);
    assert_eq!(
        scalar(&sink, "SELECT count(DISTINCT event_id) FROM effects").await,
        300
    );
    let expected_retries = subjects
        .iter()
        .filter(|u| u.as_u128().is_multiple_of(3))
        .count() as u32;
    assert!(expected_retries > 0);
    assert_eq!(
        retried.load(Ordering::SeqCst),
        expected_retries,
        "each failing event retried once"
    );
    relay.abort();
    worker.abort();
    clean_up(
        &conn,
        &queues_of(&queue),
        &[publisher, format!("{consumer}.retry")],
    )
    .await;
}

/// A service answers HTTP only once its queues are bound, so an event published the moment
/// it is ready (as `gravity up` reports it) reaches its consumer instead of no queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_is_served_only_once_its_queues_are_bound() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let conn = broker().await;
    let (own, every) = (name('s'), name('e'));
    declare_exchange(&conn, &own).await;
    declare_exchange(&conn, &every).await;
    let db = fresh_database().await;
    let http =
        service_kit::config::HttpSettings::from_env(&service_kit::config::Env::from_pairs([
            ("HOST", "127.0.0.1"),
            ("PORT", "0"),
        ]))
        .expect("settings");
    let events = service_kit::config::EventSettings {
        amqp_url: SecretString::from(testing::amqp_url()),
        exchange: own.clone(),
        every_event_exchange: every.clone(),
    };
    let seen = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&seen);
    let router = axum::Router::new().route("/", axum::routing::get(|| async { "up" }));
    let service = service_kit::app::Service::bind("bound", &http, router)
        .await
        .expect("bind")
        .with_events(&db, Some(&events), move |consumer| {
            consumer.subscribe(Subscription::new("all").on_every(move |handled| {
                let counter = Arc::clone(&counter);
                async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    Ok(handled.tx)
                }
            }))
        });
    let addr = service.local_addr().expect("an address");
    let server = tokio::spawn(service.run_until(std::future::pending()));

    // The first answer to a request sent at once (it waits in the backlog until served).
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_string(&mut answer))
        .await
        .expect("served within the bind wait")
        .expect("read");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // Served means bound: an event published now reaches the consumer.
    let envelope = service_kit::events::Envelope::new(
        "auth",
        &UserDeleted {
            user_id: Uuid::now_v7(),
            deleted_at: chrono::Utc::now(),
        },
        None,
    )
    .expect("envelope");
    let channel = conn.create_channel().await.expect("channel");
    channel
        .basic_publish(
            every.as_str().into(),
            UserDeleted::TYPE.into(),
            BasicPublishOptions::default(),
            &serde_json::to_vec(&envelope).expect("json"),
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .expect("publish")
        .await
        .expect("confirmed");
    wait_until(
        "the event published at once is consumed",
        Duration::from_secs(10),
        || {
            let seen = Arc::clone(&seen);
            async move { seen.load(Ordering::SeqCst) == 1 }
        },
    )
    .await;
    server.abort();
    clean_up(
        &conn,
        &queues_of(&format!("{own}.all")),
        &[own.clone(), every, format!("{own}.retry")],
    )
    .await;
}
