//! Consumers: every event's effect exactly once, whatever the broker redelivers.
//!
//! Each [`Subscription`] of a service is one durable queue, `<service>.<subscription>`,
//! bound to the publishers' exchanges by event type. A delivery is handled in one database
//! transaction that also writes its id to the inbox (`event_inbox`); the message is
//! acknowledged only after that transaction commits, and a redelivered event finds its id
//! there and changes nothing.
//!
//! A handler that fails is retried with exponential backoff through `<queue>.retry`, a queue
//! whose messages expire back into the subscription's queue; after
//! [`ConsumerSettings::max_attempts`] attempts the message goes to `<queue>.parked` with its
//! last error, where `gravity events` shows it and `gravity events replay` sends it back. A
//! message no handler can ever take (not a CloudEvent, an unknown type or version, a payload
//! that does not parse) is parked at once with the reason. Nothing blocks the queue.
//!
//! Deliveries are handled concurrently on [`ConsumerSettings::lanes`] lanes; events about
//! one subject always share a lane, so they are handled in the order they arrive (a retried
//! event comes back after the ones behind it). A [`Subscription::batched`] one handles what
//! waits in a lane in one transaction, on [`ConsumerSettings::batched_lanes`] lanes.

use std::{
    collections::HashMap,
    future::Future,
    hash::{Hash as _, Hasher as _},
    pin::Pin,
    sync::Arc,
    time::Duration,
};

use events::{Event, Reply};
use futures_util::StreamExt as _;
use lapin::{
    message::Delivery,
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
        ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
    },
    types::{AMQPValue, FieldTable, ShortString},
    BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind,
};
use secrecy::{ExposeSecret as _, SecretString};
use sqlx::{PgPool, Postgres, Transaction};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::telemetry::export::{self, KeyValue};

use super::{outbox::Backoff, BadMessage, Envelope, EventsError};

/// The exchange every service's exchange is bound to (with `#`): every event of the
/// platform passes through it. A bare name no service can take (`services/events` is the
/// payload crate).
pub const EVERY_EVENT_EXCHANGE: &str = "events";

/// The header carrying how many times a message has been tried.
pub const ATTEMPT_HEADER: &str = "x-gravity-attempt";
/// The header carrying a parked message's last error.
pub const ERROR_HEADER: &str = "x-gravity-error";
/// The header naming the queue a parked message belongs back in.
pub const QUEUE_HEADER: &str = "x-gravity-queue";

/// An error a handler returns: the message is retried, then parked with its text.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// What a handler receives: the event, what the envelope says about it, and the open
/// transaction in which to make its effect. Return the transaction to commit it.
pub struct Handled<E> {
    pub event: E,
    pub id: Uuid,
    /// The event's type: for a reply ([`Subscription::on_reply`]), it names who replied.
    pub event_type: String,
    pub subject: Option<String>,
    pub traceparent: Option<String>,
    pub attempt: u32,
    pub tx: Transaction<'static, Postgres>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type Outcome = Result<Result<Transaction<'static, Postgres>, HandlerError>, BadMessage>;
type Erased =
    Arc<dyn Fn(&Envelope, u32, Transaction<'static, Postgres>) -> BoxFuture<Outcome> + Send + Sync>;

/// A delivery and its envelope, decoded once when it arrives.
struct Incoming {
    delivery: Delivery,
    envelope: Result<Envelope, BadMessage>,
}

/// What a handler of every event receives ([`Subscription::on_every`]): the envelope as it
/// arrived (its payload undecoded), and the open transaction in which to make its effect.
pub struct HandledEnvelope {
    pub envelope: Envelope,
    pub attempt: u32,
    pub tx: Transaction<'static, Postgres>,
}

/// One durable queue of a consuming service and the handlers of the event types it takes.
pub struct Subscription {
    name: String,
    handlers: HashMap<&'static str, Erased>,
    /// Replies by their fact ([`Reply::FACT`]), whoever tells them.
    replies: HashMap<&'static str, Erased>,
    /// Takes every event that no typed handler takes, from the platform's firehose.
    every: Option<Erased>,
    batched: bool,
}

impl Subscription {
    /// `name` becomes the queue `<service>.<name>`: lowercase letters, digits and `-`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            handlers: HashMap::new(),
            replies: HashMap::new(),
            every: None,
            batched: false,
        }
    }

    /// Handles every event of every service, whatever its type (an audit log, say): binds
    /// the queue with `#` to [`EVERY_EVENT_EXCHANGE`], to which `gravity up` binds every
    /// service's exchange, so a service added later is included without a change here.
    /// Typed handlers ([`Self::on`]) still take the types they name.
    pub fn on_every<F, Fut>(mut self, handler: F) -> Self
    where
        F: Fn(HandledEnvelope) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Transaction<'static, Postgres>, HandlerError>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let erased: Erased = Arc::new(move |envelope: &Envelope, attempt, tx| {
            let handled = HandledEnvelope {
                envelope: envelope.clone(),
                attempt,
                tx,
            };
            let handler = Arc::clone(&handler);
            Box::pin(async move { Ok(handler(handled).await) })
        });
        self.every = Some(erased);
        self
    }

    /// The handler for events of `event_type`, if this subscription takes them.
    fn handler(&self, event_type: &str) -> Option<&Erased> {
        self.handlers
            .get(event_type)
            .or_else(|| {
                let (_, fact) = event_type.split_once('.')?;
                self.replies.get(fact)
            })
            .or(self.every.as_ref())
    }

    /// Handles deliveries that wait together in one transaction (up to
    /// [`ConsumerSettings::batch`]): one commit for many events, several times the throughput.
    /// When one of them fails, the batch is rolled back and its events are handled one by one,
    /// so a handler may run more than once for one event. Only for handlers whose every
    /// effect is in the transaction: never for one that sends mail or calls another system.
    pub fn batched(mut self) -> Self {
        self.batched = true;
        self
    }

    /// Handles events of type `E`: binds the queue to `E`'s publisher's exchange with
    /// `E::TYPE`.
    pub fn on<E, F, Fut>(mut self, handler: F) -> Self
    where
        E: Event,
        F: Fn(Handled<E>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Transaction<'static, Postgres>, HandlerError>> + Send + 'static,
    {
        self.handlers.insert(E::TYPE, typed(handler));
        self
    }

    /// Handles the reply `R` from every service that tells it (`<service>.<R::FACT>`, see
    /// [`Reply`]): binds the queue with `*.<R::FACT>` to [`EVERY_EVENT_EXCHANGE`], so a
    /// service added later is heard too. [`Handled::event_type`] names who replied.
    pub fn on_reply<R, F, Fut>(mut self, handler: F) -> Self
    where
        R: Reply,
        F: Fn(Handled<R>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Transaction<'static, Postgres>, HandlerError>> + Send + 'static,
    {
        self.replies.insert(R::FACT, typed(handler));
        self
    }
}

/// `handler` behind the erased signature every subscription keeps.
fn typed<E, F, Fut>(handler: F) -> Erased
where
    E: serde::de::DeserializeOwned + Send + 'static,
    F: Fn(Handled<E>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Transaction<'static, Postgres>, HandlerError>> + Send + 'static,
{
    let handler = Arc::new(handler);
    Arc::new(move |envelope: &Envelope, attempt, tx| {
        let handler = Arc::clone(&handler);
        let handled = envelope.data::<E>().map(|event| Handled {
            event,
            id: envelope.id,
            event_type: envelope.event_type.clone(),
            subject: envelope.subject.clone(),
            traceparent: envelope.traceparent.clone(),
            attempt,
            tx,
        });
        Box::pin(async move { Ok(handler(handled?).await) })
    })
}

/// How a service consumes.
#[derive(Clone)]
pub struct ConsumerSettings {
    pub amqp_url: SecretString,
    /// The consuming service: its queues are `<service>.*`, its retry exchange
    /// `<service>.retry`.
    pub service: String,
    /// Unacknowledged deliveries per subscription (the broker's prefetch).
    pub prefetch: u16,
    /// Deliveries handled at once per subscription.
    pub lanes: usize,
    /// Lanes of a batched subscription: few, so that each transaction carries many events.
    /// Every commit is a flush of PostgreSQL's log; on 8 lanes the benchmark's batches held
    /// ~4 events and the database spent its time committing (2 lanes: +25 % events/s).
    pub batched_lanes: usize,
    /// Deliveries waiting in one lane handled in one transaction at most.
    pub batch: usize,
    /// Attempts before a failing message is parked.
    pub max_attempts: u32,
    /// The first retry's delay; each next one doubles, up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// The exchange each publishing service's events come from, where it is not the one
    /// named after the service (as `gravity up` declares them).
    pub exchanges: HashMap<String, String>,
}

impl ConsumerSettings {
    pub fn new(amqp_url: SecretString, service: impl Into<String>) -> Self {
        Self {
            amqp_url,
            service: service.into(),
            prefetch: 256,
            lanes: 8,
            batched_lanes: 2,
            batch: 64,
            max_attempts: 5,
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(60),
            exchanges: HashMap::new(),
        }
    }

    fn exchange_of<'a>(&'a self, event_type: &'a str) -> &'a str {
        let publisher = events::publisher(event_type);
        self.exchanges
            .get(publisher)
            .map_or(publisher, String::as_str)
    }

    fn delay(&self, attempt: u32) -> Duration {
        self.backoff
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
            .min(self.max_backoff)
    }
}

/// Runs a service's subscriptions.
pub struct Consumer {
    pool: PgPool,
    settings: ConsumerSettings,
    subscriptions: Vec<Arc<Subscription>>,
}

impl Consumer {
    pub fn new(pool: PgPool, settings: ConsumerSettings) -> Self {
        Self {
            pool,
            settings,
            subscriptions: Vec::new(),
        }
    }

    pub fn subscribe(mut self, subscription: Subscription) -> Self {
        self.subscriptions.push(Arc::new(subscription));
        self
    }

    pub fn has_subscriptions(&self) -> bool {
        !self.subscriptions.is_empty()
    }

    /// The queue a subscription reads.
    pub fn queue(&self, subscription: &str) -> String {
        format!("{}.{subscription}", self.settings.service)
    }

    /// Declares every subscription's queues and bindings; `run` does it too. Useful to
    /// make sure nothing published from now on is missed before consuming starts.
    /// A subscription that cannot be declared (its publisher's exchange does not exist yet)
    /// does not keep the others from being declared; the first error is returned.
    pub async fn declare(&self) -> Result<(), EventsError> {
        let broker = self.connect().await?;
        let mut failed = None;
        for subscription in &self.subscriptions {
            // A channel each: a refused binding closes the channel it was asked on.
            let declared = match broker.create_channel().await {
                Ok(channel) => self.declare_one(&channel, subscription).await,
                Err(e) => Err(e.into()),
            };
            if let Err(e) = declared {
                failed.get_or_insert(e);
            }
        }
        let _ = broker.close(200, "declared".into()).await;
        failed.map_or(Ok(()), Err)
    }

    /// Consumes until `stop` completes, surviving database and broker outages.
    pub async fn run(self, stop: impl Future<Output = ()>) {
        let this = Arc::new(self);
        let all = futures_util::future::join_all(
            this.subscriptions
                .iter()
                .map(|s| Arc::clone(&this).forever(Arc::clone(s))),
        );
        tokio::select! {
            _ = all => {}
            () = stop => {}
        }
    }

    async fn forever(self: Arc<Self>, subscription: Arc<Subscription>) {
        let mut backoff = Backoff::default();
        loop {
            match self.consume(&subscription).await {
                Ok(()) => backoff.reset(),
                Err(e) => {
                    metrics::counter!("events_consumer_errors_total").increment(1);
                    tracing::warn!(
                        subscription = %subscription.name, error = %e,
                        "event consumer interrupted; retrying"
                    );
                    tokio::time::sleep(backoff.next()).await;
                }
            }
        }
    }

    async fn connect(&self) -> Result<Connection, EventsError> {
        Ok(Connection::connect(
            self.settings.amqp_url.expose_secret(),
            ConnectionProperties::default(),
        )
        .await?)
    }

    fn retry_exchange(&self) -> String {
        format!("{}.retry", self.settings.service)
    }

    async fn declare_one(
        &self,
        channel: &Channel,
        subscription: &Subscription,
    ) -> Result<(), EventsError> {
        let queue = self.queue(&subscription.name);
        let retry_exchange = self.retry_exchange();
        let durable = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        channel
            .exchange_declare(
                retry_exchange.as_str().into(),
                ExchangeKind::Direct,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        channel
            .queue_declare(queue.as_str().into(), durable, FieldTable::default())
            .await?;
        // Retries wait in `<queue>.retry` until their expiration, then dead-letter back.
        let mut retry_args = FieldTable::default();
        retry_args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(retry_exchange.as_str().into()),
        );
        retry_args.insert(
            "x-dead-letter-routing-key".into(),
            AMQPValue::LongString(queue.as_str().into()),
        );
        let retry = format!("{queue}.retry");
        let parked = format!("{queue}.parked");
        channel
            .queue_declare(retry.as_str().into(), durable, retry_args)
            .await?;
        channel
            .queue_declare(parked.as_str().into(), durable, FieldTable::default())
            .await?;
        for (target, key) in [(&queue, &queue), (&retry, &retry), (&parked, &parked)] {
            channel
                .queue_bind(
                    target.as_str().into(),
                    retry_exchange.as_str().into(),
                    key.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        for event_type in subscription.handlers.keys() {
            channel
                .queue_bind(
                    queue.as_str().into(),
                    self.settings.exchange_of(event_type).into(),
                    (*event_type).into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        let every_event = self
            .settings
            .exchanges
            .get(EVERY_EVENT_EXCHANGE)
            .map_or(EVERY_EVENT_EXCHANGE, String::as_str);
        let mut firehose_keys: Vec<String> = subscription
            .replies
            .keys()
            .map(|fact| format!("*.{fact}"))
            .collect();
        if subscription.every.is_some() {
            firehose_keys.push("#".to_owned());
        }
        for key in firehose_keys {
            channel
                .queue_bind(
                    queue.as_str().into(),
                    every_event.into(),
                    key.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        Ok(())
    }

    /// One connection's worth of consuming: declares, then hands deliveries to the lanes
    /// until the connection or a lane fails.
    async fn consume(
        self: &Arc<Self>,
        subscription: &Arc<Subscription>,
    ) -> Result<(), EventsError> {
        let broker = self.connect().await?;
        let channel = broker.create_channel().await?;
        self.declare_one(&channel, subscription).await?;
        channel
            .basic_qos(self.settings.prefetch, BasicQosOptions::default())
            .await?;
        // Retries and parked messages go out on a channel of their own, with confirms.
        let publisher = broker.create_channel().await?;
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let link = Arc::new(Link {
            publisher,
            acks: Acks {
                channel: channel.clone(),
                state: tokio::sync::Mutex::default(),
            },
        });
        let queue = self.queue(&subscription.name);
        let mut deliveries = channel
            .basic_consume(
                queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        tracing::info!(%queue, "consuming events");
        let (failed_tx, mut failed_rx) = mpsc::channel::<EventsError>(1);
        let lanes = if subscription.batched {
            self.settings.batched_lanes
        } else {
            self.settings.lanes
        };
        let lanes: Vec<mpsc::Sender<Incoming>> = (0..lanes.max(1))
            .map(|_| {
                let (tx, mut rx) = mpsc::channel::<Incoming>(usize::from(self.settings.prefetch));
                let this = Arc::clone(self);
                let subscription = Arc::clone(subscription);
                let link = Arc::clone(&link);
                let failed = failed_tx.clone();
                let queue = queue.clone();
                tokio::spawn(async move {
                    while let Some(first) = rx.recv().await {
                        // What else already waits in this lane joins the first one's
                        // transaction.
                        let mut batch = vec![first];
                        let most = if subscription.batched {
                            this.settings.batch.max(1)
                        } else {
                            1
                        };
                        while batch.len() < most {
                            match rx.try_recv() {
                                Ok(incoming) => batch.push(incoming),
                                Err(_) => break,
                            }
                        }
                        if let Err(e) = this.handle_batch(&subscription, &queue, &link, batch).await
                        {
                            let _ = failed.send(e).await;
                            return;
                        }
                    }
                });
                tx
            })
            .collect();
        loop {
            tokio::select! {
                delivery = deliveries.next() => {
                    let delivery = match delivery {
                        Some(delivery) => delivery?,
                        None => return Err(EventsError::ConsumerEnded(queue)),
                    };
                    link.acks.dispatched(delivery.delivery_tag).await;
                    let envelope = Envelope::decode(&delivery.data);
                    let lane = &lanes[lane_of(&delivery.data, envelope.as_ref().ok(), lanes.len())];
                    if lane.send(Incoming { delivery, envelope }).await.is_err() {
                        return Err(EventsError::ConsumerEnded(queue));
                    }
                }
                failed = failed_rx.recv() => {
                    return Err(failed.unwrap_or(EventsError::ConsumerEnded(queue)));
                }
            }
        }
    }

    /// Handles deliveries that arrived together in one transaction: one inbox statement, the
    /// handlers one after the other, one commit, then every acknowledgement. Anything that
    /// cannot go that way (a message to park, a handler's error, a failed commit) sends the
    /// batch, rolled back, through [`Self::handle`] one by one, so a failure costs only its
    /// own message a retry.
    async fn handle_batch(
        &self,
        subscription: &Subscription,
        queue: &str,
        link: &Link,
        batch: Vec<Incoming>,
    ) -> Result<(), EventsError> {
        let (together, mut one_by_one): (Vec<_>, Vec<_>) = batch.into_iter().partition(|i| {
            i.envelope
                .as_ref()
                .is_ok_and(|e| subscription.handler(&e.event_type).is_some())
        });
        if together.len() > 1 {
            match self.try_together(subscription, queue, &together).await? {
                Some(tags) => link.acks.done(&tags).await?,
                None => one_by_one.extend(together),
            }
        } else {
            one_by_one.extend(together);
        }
        for incoming in one_by_one {
            self.handle(subscription, queue, link, incoming).await?;
        }
        Ok(())
    }

    /// The batch in one transaction: `Some(delivery tags)` committed, to acknowledge; `None`
    /// rolled back, to handle one by one.
    async fn try_together(
        &self,
        subscription: &Subscription,
        queue: &str,
        batch: &[Incoming],
    ) -> Result<Option<Vec<u64>>, EventsError> {
        let decoded: Vec<(&Delivery, &Envelope)> = batch
            .iter()
            .filter_map(|i| Some((&i.delivery, i.envelope.as_ref().ok()?)))
            .collect();
        if decoded.len() < batch.len() {
            return Ok(None);
        }
        let mut tx = self.pool.begin().await?;
        let ids: Vec<Uuid> = decoded.iter().map(|(_, e)| e.id).collect();
        let fresh: Vec<Uuid> = sqlx::query_scalar(
            "INSERT INTO event_inbox (consumer, event_id)
             SELECT $1, id FROM unnest($2::uuid[]) AS id
             ON CONFLICT DO NOTHING RETURNING event_id",
        )
        .bind(queue)
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?;
        let mut fresh: std::collections::HashSet<Uuid> = fresh.into_iter().collect();
        let mut duplicates = 0u64;
        for (delivery, envelope) in &decoded {
            // An id seen before, or twice in this batch, is a duplicate: acknowledged, not
            // handled again.
            if !fresh.remove(&envelope.id) {
                duplicates += 1;
                continue;
            }
            let Some(handler) = subscription.handler(&envelope.event_type) else {
                return Ok(None);
            };
            let attempt = attempt_of(delivery);
            match in_span(queue, envelope, handler(envelope, attempt, tx)).await {
                Ok(Ok(back)) => tx = back,
                // The transaction went with the failure: the batch is rolled back.
                _ => return Ok(None),
            }
        }
        if tx.commit().await.is_err() {
            return Ok(None);
        }
        let handled = decoded.len() as u64 - duplicates;
        metrics::counter!("events_handled_total", "queue" => queue.to_owned()).increment(handled);
        if duplicates > 0 {
            metrics::counter!("events_duplicates_total", "queue" => queue.to_owned())
                .increment(duplicates);
        }
        Ok(Some(decoded.iter().map(|(d, _)| d.delivery_tag).collect()))
    }

    /// Handles one delivery to its end: acknowledged after its effect commits (or after it
    /// is safely in the retry or parking queue). An error means the broker or database is
    /// unreachable; the message stays unacknowledged and is redelivered.
    async fn handle(
        &self,
        subscription: &Subscription,
        queue: &str,
        link: &Link,
        incoming: Incoming,
    ) -> Result<(), EventsError> {
        let Incoming { delivery, envelope } = incoming;
        let attempt = attempt_of(&delivery);
        let envelope = match envelope {
            Ok(envelope) => envelope,
            Err(bad) => {
                return self
                    .park(queue, link, delivery, attempt, &bad.to_string())
                    .await
            }
        };
        let Some(handler) = subscription.handler(&envelope.event_type) else {
            let bad = BadMessage::UnknownType(envelope.event_type.clone());
            return self
                .park(queue, link, delivery, attempt, &bad.to_string())
                .await;
        };
        let mut tx = self.pool.begin().await?;
        let fresh = sqlx::query(
            "INSERT INTO event_inbox (consumer, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(queue)
        .bind(envelope.id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !fresh {
            tx.rollback().await?;
            metrics::counter!("events_duplicates_total", "queue" => queue.to_owned()).increment(1);
            link.acks.done(&[delivery.delivery_tag]).await?;
            return Ok(());
        }
        let event_id = envelope.id;
        let outcome = in_span(queue, &envelope, handler(&envelope, attempt, tx)).await;
        let failure = match outcome {
            Err(bad) => {
                return self
                    .park(queue, link, delivery, attempt, &bad.to_string())
                    .await
            }
            Ok(Ok(tx)) => match tx.commit().await {
                Ok(()) => None,
                Err(e) => Some(format!("committing the handler's transaction: {e}")),
            },
            Ok(Err(e)) => Some(e.to_string()),
        };
        match failure {
            None => {
                metrics::counter!("events_handled_total", "queue" => queue.to_owned()).increment(1);
                link.acks.done(&[delivery.delivery_tag]).await?;
                Ok(())
            }
            Some(error) if attempt >= self.settings.max_attempts => {
                tracing::warn!(%queue, event = %event_id, attempt, %error, "event handler failed; parking it");
                self.park(queue, link, delivery, attempt, &error).await
            }
            Some(error) => {
                tracing::info!(%queue, event = %event_id, attempt, %error, "event handler failed; retrying");
                let delay = self.settings.delay(attempt);
                let properties = with_headers(&delivery, attempt + 1, Some(&error), queue)
                    .with_expiration(delay.as_millis().to_string().into());
                self.forward(link, &format!("{queue}.retry"), &delivery, properties)
                    .await?;
                metrics::counter!("events_retried_total", "queue" => queue.to_owned()).increment(1);
                link.acks.done(&[delivery.delivery_tag]).await?;
                Ok(())
            }
        }
    }

    async fn park(
        &self,
        queue: &str,
        link: &Link,
        delivery: Delivery,
        attempt: u32,
        error: &str,
    ) -> Result<(), EventsError> {
        let properties = with_headers(&delivery, attempt, Some(error), queue);
        self.forward(link, &format!("{queue}.parked"), &delivery, properties)
            .await?;
        metrics::counter!("events_parked_total", "queue" => queue.to_owned()).increment(1);
        link.acks.done(&[delivery.delivery_tag]).await?;
        Ok(())
    }

    /// Publishes `delivery`'s body to `routing_key` on the service's retry exchange and
    /// waits for the broker's confirm.
    async fn forward(
        &self,
        link: &Link,
        routing_key: &str,
        delivery: &Delivery,
        properties: BasicProperties,
    ) -> Result<(), EventsError> {
        let confirm = link
            .publisher
            .basic_publish(
                self.retry_exchange().as_str().into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                &delivery.data,
                properties,
            )
            .await?
            .await?;
        if confirm.is_ack() {
            Ok(())
        } else {
            Err(EventsError::Refused(Uuid::nil()))
        }
    }
}

/// What the lanes of one consuming channel share: the channel retries and parked messages
/// go out on, and the acknowledgements.
struct Link {
    publisher: Channel,
    acks: Acks,
}

/// Acknowledges in bulk: once every delivery up to a tag has been dealt with, whichever lane
/// dealt with it, one `basic.ack` with `multiple` covers them all, instead of a frame and a
/// round trip through the client's I/O thread per message.
struct Acks {
    channel: Channel,
    state: tokio::sync::Mutex<AckState>,
}

#[derive(Default)]
struct AckState {
    /// Handed to a lane and not dealt with yet.
    outstanding: std::collections::BTreeSet<u64>,
    /// The highest tag dealt with.
    done: u64,
    /// Everything up to this tag is acknowledged.
    acked: u64,
}

impl Acks {
    async fn dispatched(&self, tag: u64) {
        self.state.lock().await.outstanding.insert(tag);
    }

    /// Marks `tags` dealt with (handled, retried or parked) and acknowledges as far as every
    /// lower tag is too. Acknowledgements go out under the lock, so they leave in order.
    async fn done(&self, tags: &[u64]) -> Result<(), lapin::Error> {
        let mut state = self.state.lock().await;
        for tag in tags {
            state.outstanding.remove(tag);
            state.done = state.done.max(*tag);
        }
        let upto = match state.outstanding.first() {
            Some(lowest) => state.done.min(lowest.saturating_sub(1)),
            None => state.done,
        };
        if upto > state.acked {
            self.channel
                .basic_ack(upto, BasicAckOptions { multiple: true })
                .await?;
            state.acked = upto;
        }
        Ok(())
    }
}

/// Runs a handler in the event's context and span (logged with the span when spans are,
/// with whether the handler succeeded: a failed attempt is retried or parked).
async fn in_span(queue: &str, envelope: &Envelope, work: impl Future<Output = Outcome>) -> Outcome {
    let context = context_of(envelope);
    let span = context.span;
    let started = std::time::Instant::now();
    let out = crate::telemetry::scope_request(context, work).await;
    let outcome = match &out {
        Ok(Ok(_)) => "handled",
        Ok(Err(_)) => "failed",
        Err(_) => "unreadable",
    };
    if export::exporting() && span.sampled() {
        let finished = export::Finished::ending_now(
            span,
            export::Kind::Consumer,
            format!("process {}", envelope.event_type),
            started.elapsed(),
        )
        .with(KeyValue::new("messaging.system", "rabbitmq"))
        .with(KeyValue::new("messaging.operation.type", "process"))
        .with(KeyValue::new(
            "messaging.consumer.group.name",
            queue.to_owned(),
        ))
        .with(KeyValue::new(
            "messaging.message.id",
            envelope.id.to_string(),
        ))
        .with(KeyValue::new("gravity.outcome", outcome));
        export::export(match outcome {
            "handled" => finished,
            other => finished.failed(other),
        });
    }
    if crate::telemetry::spans_logged() {
        tracing::info!(
            outcome,
            request_id = %envelope.id,
            trace_id = span.trace_id(),
            span_id = span.id(),
            parent_span_id = span.parent_id(),
            queue,
            event_type = %envelope.event_type,
            latency_ms = started.elapsed().as_secs_f64() * 1000.0,
            "event handled"
        );
    }
    out
}

/// What a handler runs within: its log lines carry the event's id, and what it publishes
/// continues the event's trace.
fn context_of(envelope: &Envelope) -> crate::telemetry::RequestContext {
    crate::telemetry::RequestContext {
        id: axum::http::HeaderValue::from_str(&envelope.id.to_string())
            .unwrap_or_else(|_| axum::http::HeaderValue::from_static("-")),
        span: crate::telemetry::Span::child_of(envelope.traceparent.as_deref()),
    }
}

/// The lane of a delivery: by its subject, so one subject's events keep their order.
fn lane_of(body: &[u8], envelope: Option<&Envelope>, lanes: usize) -> usize {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    match envelope.and_then(|e| e.subject.as_deref()) {
        Some(subject) => subject.hash(&mut hasher),
        None => body.hash(&mut hasher),
    }
    (hasher.finish() % lanes.max(1) as u64) as usize
}

fn attempt_of(delivery: &Delivery) -> u32 {
    let value = delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(&ShortString::from(ATTEMPT_HEADER)).cloned());
    match value {
        Some(AMQPValue::LongUInt(n)) => n.max(1),
        Some(AMQPValue::LongLongInt(n)) => u32::try_from(n).unwrap_or(1).max(1),
        Some(AMQPValue::LongInt(n)) => u32::try_from(n).unwrap_or(1).max(1),
        _ => 1,
    }
}

/// The delivery's properties with the attempt, the last error and the home queue set.
fn with_headers(
    delivery: &Delivery,
    attempt: u32,
    error: Option<&str>,
    queue: &str,
) -> BasicProperties {
    let mut headers = delivery.properties.headers().clone().unwrap_or_default();
    headers.insert(ATTEMPT_HEADER.into(), AMQPValue::LongUInt(attempt));
    if let Some(error) = error {
        let error: String = error.chars().take(2000).collect();
        headers.insert(ERROR_HEADER.into(), AMQPValue::LongString(error.into()));
    }
    headers.insert(QUEUE_HEADER.into(), AMQPValue::LongString(queue.into()));
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/cloudevents+json".into())
        .with_headers(headers)
}
