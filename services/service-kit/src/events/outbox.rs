//! The transactional outbox and its relay.
//!
//! [`record`] writes an event in the caller's transaction: it exists if and only if the
//! change it reports was committed. The [`Relay`] (one in every instance) publishes what was
//! committed, with publisher confirms, and deletes it once the broker has confirmed it: the
//! outbox holds only what is still to be published, and keeps no event (a reset token
//! included) past its publication. Deleting costs PostgreSQL a fraction of what marking a
//! row costs (no new row version, no index entries), which is most of the relay's share of
//! the database's work.
//!
//! **One publisher at a time.** Instances hold a PostgreSQL advisory lock while they relay;
//! the others stand by and take over within [`RelaySettings::standby_poll`] when the holder's
//! connection ends. A row is therefore never published by two instances at once, and rows go
//! out in the order of their ids, which keeps the commit order of events about one subject
//! (their transactions lock the subject's row, so they commit in id order).
//!
//! **Delivery is at least once.** A crash between the broker's confirm and the `DELETE`
//! publishes a row again; consumers drop the duplicate by its id (see `consumer`). A broker
//! outage only delays: rows wait, the relay reconnects with backoff.

use std::{future::Future, time::Duration};

use lapin::{
    options::{BasicPublishOptions, ConfirmSelectOptions},
    BasicProperties, Connection, ConnectionProperties,
};
use secrecy::{ExposeSecret as _, SecretString};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::telemetry::export::{self, KeyValue};

use super::{Envelope, EventsError};
use events::{Event, Reply};

/// The advisory lock key the relaying instance holds ("gravoutb").
const LEASE: i64 = 0x6772_6176_6f75_7462;

/// Writes `event`, published by `service`, to the outbox inside `conn`'s transaction; the
/// event's id. The event continues the trace of the request (or event) being handled on
/// this task.
///
/// No `NOTIFY` wakes the relay: PostgreSQL serialises the commits of notifying transactions
/// on one lock, which halved the commit rate of a busy service in the benchmark. The relay
/// polls instead, at once while there is work and every few milliseconds after.
pub async fn record<E: Event>(
    conn: &mut PgConnection,
    service: &str,
    event: &E,
) -> Result<Uuid, EventsError> {
    let span = crate::telemetry::current_span().map(|s| s.child());
    let traceparent = span.map(|s| s.traceparent());
    let envelope = Envelope::new(service, event, traceparent.as_deref())?;
    traced(span, &envelope, insert(conn, &envelope)).await
}

/// Records the event in its own span, the parent of its consumers' (logged with the span
/// when spans are).
async fn traced(
    span: Option<crate::telemetry::Span>,
    envelope: &Envelope,
    insert: impl Future<Output = Result<Uuid, EventsError>>,
) -> Result<Uuid, EventsError> {
    let started = std::time::Instant::now();
    let recorded = insert.await;
    // Only what was written: an insert that failed recorded nothing. (Its transaction may
    // still roll back; then no consumer's span follows it.)
    let sampled = span.filter(crate::telemetry::Span::sampled);
    if let (Some(span), true, Ok(_)) = (sampled, export::exporting(), &recorded) {
        export::export(
            export::Finished::ending_now(
                span,
                export::Kind::Producer,
                format!("record {}", envelope.event_type),
                started.elapsed(),
            )
            .with(KeyValue::new("messaging.system", "rabbitmq"))
            .with(KeyValue::new("messaging.operation.type", "create"))
            .with(KeyValue::new(
                "messaging.message.id",
                envelope.id.to_string(),
            ))
            .with(KeyValue::new(
                "cloudevents.event_type",
                envelope.event_type.clone(),
            )),
        );
    }
    if let (Some(span), true, Ok(_)) = (span, crate::telemetry::spans_logged(), &recorded) {
        tracing::info!(
            span_id = span.id(),
            parent_span_id = span.parent_id(),
            event_id = %envelope.id,
            event_type = %envelope.event_type,
            latency_ms = started.elapsed().as_secs_f64() * 1000.0,
            "event recorded"
        );
    }
    recorded
}

/// Records `service`'s reply `R` (typed `<service>.<R::FACT>`), as [`record`] does an event.
pub async fn record_reply<R: Reply>(
    conn: &mut PgConnection,
    service: &str,
    reply: &R,
) -> Result<Uuid, EventsError> {
    let span = crate::telemetry::current_span().map(|s| s.child());
    let traceparent = span.map(|s| s.traceparent());
    let envelope = Envelope::reply(service, reply, traceparent.as_deref())?;
    traced(span, &envelope, insert(conn, &envelope)).await
}

async fn insert(conn: &mut PgConnection, envelope: &Envelope) -> Result<Uuid, EventsError> {
    let body = serde_json::to_string(envelope)?;
    sqlx::query(
        "INSERT INTO event_outbox (event_id, event_type, subject, envelope)
         VALUES ($1, $2, $3, $4)",
    )
    .bind(envelope.id)
    .bind(&envelope.event_type)
    .bind(&envelope.subject)
    .bind(body)
    .execute(conn)
    .await?;
    Ok(envelope.id)
}

/// How the relay publishes.
#[derive(Clone)]
pub struct RelaySettings {
    pub amqp_url: SecretString,
    /// The service's own exchange: the only one its broker user may publish to.
    pub exchange: String,
    /// Rows read and published per round trip.
    pub batch: i64,
    /// The longest an idle relay waits before looking for rows again: after a look that
    /// found none it waits 2 ms, then twice as long each time, up to this. Bounds the
    /// latency of an event after a quiet spell.
    pub idle_poll: Duration,
    /// How often a standing-by instance tries to take the lease.
    pub standby_poll: Duration,
}

impl RelaySettings {
    pub fn new(amqp_url: SecretString, exchange: impl Into<String>) -> Self {
        Self {
            amqp_url,
            exchange: exchange.into(),
            batch: 500,
            idle_poll: Duration::from_millis(50),
            standby_poll: Duration::from_secs(1),
        }
    }
}

/// Publishes the outbox of one service's database.
pub struct Relay {
    pool: PgPool,
    settings: RelaySettings,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: i64,
    event_id: Uuid,
    event_type: String,
    envelope: String,
}

impl Relay {
    pub fn new(pool: PgPool, settings: RelaySettings) -> Self {
        Self { pool, settings }
    }

    /// Relays until `stop` completes, surviving database and broker outages.
    pub async fn run(self, stop: impl Future<Output = ()>) {
        tokio::select! {
            () = self.forever() => {}
            () = stop => {}
        }
    }

    async fn forever(&self) {
        let mut backoff = Backoff::default();
        loop {
            match self.lead().await {
                Ok(()) => backoff.reset(),
                Err(e) => {
                    metrics::counter!("events_relay_errors_total").increment(1);
                    tracing::warn!(error = %e, "event relay interrupted; retrying");
                    tokio::time::sleep(backoff.next()).await;
                }
            }
        }
    }

    /// Takes the lease (waiting while another instance holds it), then publishes until an
    /// error ends it; the lease goes with the connection.
    async fn lead(&self) -> Result<(), EventsError> {
        let mut lease = self.pool.acquire().await?.detach();
        loop {
            let held: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(LEASE)
                .fetch_one(&mut lease)
                .await?;
            if held {
                break;
            }
            tokio::time::sleep(self.settings.standby_poll).await;
        }
        tracing::info!(exchange = %self.settings.exchange, "relaying the event outbox");
        let broker = Connection::connect(
            self.settings.amqp_url.expose_secret(),
            ConnectionProperties::default(),
        )
        .await?;
        let channel = broker.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let mut idle = Duration::from_millis(2);
        loop {
            let published = self.publish_batch(&mut lease, &channel).await?;
            if published == 0 {
                // Nothing: look again soon, then less and less often while nothing comes.
                tokio::time::sleep(idle).await;
                idle = (idle * 2).min(self.settings.idle_poll);
            } else {
                idle = Duration::from_millis(2);
                if published < self.settings.batch {
                    // Drained: a moment lets the next rows gather into one batch.
                    tokio::time::sleep(idle).await;
                }
            }
        }
    }

    /// Publishes up to one batch and deletes what the broker confirmed; how many were read.
    async fn publish_batch(
        &self,
        lease: &mut PgConnection,
        channel: &lapin::Channel,
    ) -> Result<i64, EventsError> {
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT id, event_id, event_type, envelope FROM event_outbox ORDER BY id LIMIT $1",
        )
        .bind(self.settings.batch)
        .fetch_all(&mut *lease)
        .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        // Publish the whole batch, then wait for the confirms: one round trip per batch.
        let mut confirms = Vec::with_capacity(rows.len());
        let started = std::time::Instant::now();
        for row in &rows {
            let properties = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type("application/cloudevents+json".into())
                .with_message_id(row.event_id.to_string().into())
                .with_type(row.event_type.as_str().into());
            let confirm = channel
                .basic_publish(
                    self.settings.exchange.as_str().into(),
                    row.event_type.as_str().into(),
                    BasicPublishOptions::default(),
                    row.envelope.as_bytes(),
                    properties,
                )
                .await?;
            confirms.push(confirm);
        }
        let mut confirmed = Vec::with_capacity(rows.len());
        let mut refused = None;
        for (row, confirm) in rows.iter().zip(confirms) {
            let confirmation = confirm.await?;
            if export::exporting() {
                if let Some(span) = send_span(row, started.elapsed(), confirmation.is_ack()) {
                    export::export(span);
                }
            }
            if confirmation.is_ack() && refused.is_none() {
                confirmed.push(row.id);
            } else if !confirmation.is_ack() {
                refused.get_or_insert(row.event_id);
            }
        }
        // Only the confirmed prefix goes, so a refused row and those after it go again, in
        // order.
        sqlx::query("DELETE FROM event_outbox WHERE id = ANY($1)")
            .bind(&confirmed)
            .execute(&mut *lease)
            .await?;
        metrics::counter!("events_published_total").increment(confirmed.len() as u64);
        match refused {
            Some(event) => Err(EventsError::Refused(event)),
            None => Ok(rows.len() as i64),
        }
    }
}

/// The span of one event's publication, from its batch's start to the broker's confirm: a
/// child of the span that recorded it, a sibling of its consumers'.
fn send_span(row: &Row, took: Duration, confirmed: bool) -> Option<export::Finished> {
    #[derive(serde::Deserialize)]
    struct Traced {
        traceparent: Option<String>,
    }
    let traceparent = serde_json::from_str::<Traced>(&row.envelope)
        .ok()
        .and_then(|t| t.traceparent);
    // An event recorded outside any trace is not one of a trace's spans.
    let span = crate::telemetry::Span::child_of(Some(traceparent.as_deref()?));
    if !span.sampled() {
        return None;
    }
    let finished = export::Finished::ending_now(
        span,
        export::Kind::Producer,
        format!("send {}", row.event_type),
        took,
    )
    .with(KeyValue::new("messaging.system", "rabbitmq"))
    .with(KeyValue::new("messaging.operation.type", "send"))
    .with(KeyValue::new(
        "messaging.message.id",
        row.event_id.to_string(),
    ))
    .with(KeyValue::new(
        "messaging.destination.name",
        row.event_type.clone(),
    ));
    Some(if confirmed {
        finished
    } else {
        finished.failed("the broker refused the event")
    })
}

/// Exponential backoff from 100 ms to 5 s.
#[derive(Default)]
pub(crate) struct Backoff(u32);

impl Backoff {
    pub(crate) fn next(&mut self) -> Duration {
        let delay = Duration::from_millis(100u64 << self.0.min(6)).min(Duration::from_secs(5));
        self.0 = self.0.saturating_add(1);
        delay
    }

    pub(crate) fn reset(&mut self) {
        self.0 = 0;
    }
}
