//! The sender: takes due messages from the queue in batches, checks the recipient's
//! preferences, renders, sends them side by side, and records every outcome of a batch in
//! one transaction.
//!
//! A message taken is leased for longer than a batch can take with every send running into
//! its timeouts, and an outcome is recorded only while its lease holds. If this process dies
//! while sending, another (or this one, restarted) takes the message again once the lease
//! ends, and the SMTP server may then have it twice: mail has no exactly-once, so the
//! message id (its `Message-ID`) stays the same for receivers that drop duplicates.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use futures_util::{stream, StreamExt as _};
use serde_json::Value;
use service_kit::opaque::OpaqueToken;
use sqlx::postgres::PgListener;
use uuid::Uuid;

use crate::{
    email::{Mail, Outcome},
    messages::DUE,
    state::AppState,
    templates::{self, Compiled},
};

/// The shortest time a taken message is someone's.
const MIN_LEASE: Duration = Duration::from_secs(300);
/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

#[derive(sqlx::FromRow)]
struct Due {
    id: Uuid,
    channel: String,
    address: String,
    template: String,
    template_version: i32,
    locale: String,
    data: Option<Value>,
    attempts: i32,
    suppressed: bool,
    /// This sender's lease: outcomes are recorded only while it still holds.
    leased_until: DateTime<Utc>,
}

/// What to record of one message.
struct Done {
    id: Uuid,
    attempt: i32,
    status: &'static str,
    outcome: Option<&'static str>,
    detail: Option<String>,
    next_attempt_at: DateTime<Utc>,
    subject: Option<String>,
    unsubscribe: Option<Vec<u8>>,
    /// Who took (or last refused) it: `smtp`, or the SMS provider.
    provider: Option<&'static str>,
    leased_until: DateTime<Utc>,
}

/// How long a batch may take, at worst, with every send running into its timeouts: the
/// lease is longer, so no other sender takes a message this one is still sending.
fn lease(state: &AppState) -> Duration {
    let settings = &state.settings;
    let concurrency = settings.smtp.as_ref().map_or(8, |s| s.connections.max(1));
    let rounds = settings.sender.batch.div_ceil(concurrency);
    // An SMTP send is a handful of commands, each with its own timeout; a text message
    // asks each provider once.
    let smtp = settings
        .smtp
        .as_ref()
        .map_or(Duration::ZERO, |s| s.timeout * 6);
    let sms = settings.sms_timeout * settings.sms.len() as u32;
    (smtp.max(sms) * rounds + Duration::from_secs(60)).max(MIN_LEASE)
}

/// Runs until the task is dropped: a batch whenever the queue is notified, at least every
/// `poll`.
pub async fn run(state: AppState) {
    let mut listener = listen(&state).await;
    loop {
        let full = match deliver_due(&state).await {
            Ok(taken) => taken >= state.settings.sender.batch as usize,
            Err(e) => {
                tracing::error!(error = %e, "sending due messages failed; trying again");
                false
            }
        };
        if full {
            continue;
        }
        match listener.as_mut() {
            Some(l) => match tokio::time::timeout(state.settings.sender.poll, l.recv()).await {
                Ok(Ok(_)) | Err(_) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "lost the queue's notifications; polling");
                    listener = None;
                }
            },
            None => {
                tokio::time::sleep(state.settings.sender.poll).await;
                listener = listen(&state).await;
            }
        }
    }
}

async fn listen(state: &AppState) -> Option<PgListener> {
    let mut listener = PgListener::connect_with(&state.db).await.ok()?;
    listener.listen(DUE).await.ok()?;
    Some(listener)
}

/// Takes, sends and records one batch of due messages; how many it took.
pub async fn deliver_due(state: &AppState) -> Result<usize, sqlx::Error> {
    let due: Vec<Due> = sqlx::query_as(
        "WITH due AS (
             SELECT id FROM messages
             WHERE (status IN ('queued', 'scheduled') AND next_attempt_at <= now())
                OR (status = 'sending' AND leased_until < now())
             ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED)
         UPDATE messages m SET status = 'sending', attempts = m.attempts + 1,
             leased_until = now() + $2, updated_at = now()
         FROM due WHERE m.id = due.id
         RETURNING m.id, m.channel, m.address, m.template, m.template_version, m.locale,
             m.data, m.attempts, m.leased_until,
             (NOT m.critical AND (
                 EXISTS (SELECT 1 FROM suppressions s
                         WHERE s.address = lower(m.address) AND s.category IN (m.category, '*'))
                 OR EXISTS (SELECT 1 FROM recipients r WHERE r.user_id = m.user_id
                         AND (r.opted_out OR r.channels ->> m.channel = 'false'
                              OR r.categories ->> m.category = 'false')))) AS suppressed",
    )
    .bind(i64::from(state.settings.sender.batch))
    .bind(lease(state))
    .fetch_all(&state.db)
    .await?;
    if due.is_empty() {
        return Ok(0);
    }
    let taken = due.len();
    let concurrency = state
        .settings
        .smtp
        .as_ref()
        .map_or(8, |s| s.connections as usize);
    let done: Vec<Done> = stream::iter(due)
        .map(|message| deliver(state, message))
        .buffer_unordered(concurrency)
        .collect()
        .await;
    // What was sent must be recorded, or it is sent again once the lease ends: a failing
    // write is tried again a few times first.
    let mut tries = 0u32;
    loop {
        match record(state, &done).await {
            Ok(()) => break,
            Err(e) if tries < 3 => {
                tries += 1;
                tracing::warn!(error = %e, tries, "recording sent messages failed; trying again");
                tokio::time::sleep(Duration::from_secs(u64::from(tries))).await;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(taken)
}

async fn deliver(state: &AppState, message: Due) -> Done {
    let mut done = Done {
        id: message.id,
        attempt: message.attempts,
        status: "sent",
        outcome: Some("sent"),
        detail: None,
        next_attempt_at: Utc::now(),
        subject: None,
        unsubscribe: None,
        provider: None,
        leased_until: message.leased_until,
    };
    if message.suppressed {
        done.status = "suppressed";
        done.outcome = None;
        return done;
    }
    // Taken again after a sender stopped during its attempts: past the last one, it is over.
    if message.attempts > state.settings.sender.max_attempts as i32 {
        done.status = "given_up";
        done.outcome = Some("given_up");
        done.detail = Some("its sender stopped during the last attempt".to_owned());
        return done;
    }
    let outcome = attempt(state, &message, &mut done).await;
    match outcome {
        Outcome::Sent(answer) => done.detail = Some(answer),
        Outcome::Failed(reason) => {
            done.status = "failed";
            done.outcome = Some("failed");
            done.detail = Some(reason);
        }
        Outcome::Retry(reason) => {
            done.detail = Some(reason);
            if message.attempts >= state.settings.sender.max_attempts as i32 {
                done.status = "given_up";
                done.outcome = Some("given_up");
            } else {
                done.status = "queued";
                done.outcome = Some("retry");
                done.next_attempt_at = Utc::now() + backoff(state, message.attempts);
            }
        }
    }
    done
}

/// The wait after `attempts` failed attempts: the first wait doubled each time, at most an
/// hour.
fn backoff(state: &AppState, attempts: i32) -> chrono::Duration {
    let base = state.settings.sender.retry_after;
    let factor = 2u32.saturating_pow(attempts.saturating_sub(1).clamp(0, 16) as u32);
    let wait = base.saturating_mul(factor).min(MAX_BACKOFF);
    chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::hours(1))
}

async fn attempt(state: &AppState, message: &Due, done: &mut Done) -> Outcome {
    // What can carry the message, before anything is rendered.
    match message.channel.as_str() {
        "email" if state.mailer.is_none() => {
            return Outcome::Failed(
                "no SMTP server is configured: set SMTP_URL (and MAIL_FROM)".to_owned(),
            )
        }
        "sms" if state.texter.is_none() => {
            return Outcome::Failed("no SMS provider is configured: set SMS_PROVIDERS".to_owned())
        }
        "email" | "sms" => {}
        other => return Outcome::Failed(format!("no channel {other}")),
    }
    let kept = state
        .templates
        .kept(&message.template, &message.locale, message.template_version);
    let compiled = match kept {
        Some(compiled) => compiled,
        None => match load(state, message).await {
            Ok(compiled) => compiled,
            Err(outcome) => return outcome,
        },
    };
    let data = message.data.clone().unwrap_or(Value::Null);
    let content = match compiled.render(&data) {
        Ok(c) => c,
        Err(e) => return Outcome::Failed(format!("the template does not render: {e}")),
    };
    if let Some(texter) = state.texter.as_ref().filter(|_| message.channel == "sms") {
        done.subject = Some(content.subject.clone());
        let (outcome, provider) = texter.send(&message.address, &content.text).await;
        done.provider = provider;
        return outcome;
    }
    let Some(mailer) = state.mailer.as_ref() else {
        return Outcome::Failed("no SMTP server is configured".to_owned());
    };
    done.provider = Some("smtp");
    let token = OpaqueToken::generate();
    let unsubscribe = format!(
        "{}/api/v1/unsubscribe/{}",
        state.settings.public_url,
        token.expose()
    );
    done.subject = Some(content.subject.clone());
    done.unsubscribe = Some(token.digest());
    mailer
        .send(Mail {
            id: message.id,
            to: &message.address,
            content: &content,
            unsubscribe: &unsubscribe,
        })
        .await
}

/// The message's template version from the database, compiled and kept; what to record
/// when it cannot be had.
async fn load(state: &AppState, message: &Due) -> Result<Arc<Compiled>, Outcome> {
    let mut conn = state
        .db
        .acquire()
        .await
        .map_err(|e| Outcome::Retry(format!("the database: {e}")))?;
    let found = templates::version(
        &mut conn,
        &message.template,
        &message.locale,
        message.template_version,
    )
    .await
    .map_err(|e| Outcome::Retry(format!("the database: {e}")))?;
    let template = found.ok_or_else(|| {
        Outcome::Failed(format!(
            "template {} ({}) version {} is gone",
            message.template, message.locale, message.template_version
        ))
    })?;
    state
        .templates
        .keep(template)
        .map_err(|e| Outcome::Failed(format!("the template does not render: {e}")))
}

/// Every outcome of a batch, in one transaction: the messages' states and their attempts.
/// A message that is done with loses its data (which may hold a token).
async fn record(state: &AppState, done: &[Done]) -> Result<(), sqlx::Error> {
    let mut ids = Vec::with_capacity(done.len());
    let mut attempts = Vec::with_capacity(done.len());
    let mut statuses = Vec::with_capacity(done.len());
    let mut outcomes = Vec::with_capacity(done.len());
    let mut details = Vec::with_capacity(done.len());
    let mut next = Vec::with_capacity(done.len());
    let mut subjects = Vec::with_capacity(done.len());
    let mut unsubscribes = Vec::with_capacity(done.len());
    let mut providers = Vec::with_capacity(done.len());
    let mut leases = Vec::with_capacity(done.len());
    for d in done {
        ids.push(d.id);
        attempts.push(d.attempt);
        statuses.push(d.status);
        outcomes.push(d.outcome);
        details.push(d.detail.clone());
        next.push(d.next_attempt_at);
        subjects.push(d.subject.clone());
        unsubscribes.push(d.unsubscribe.clone());
        providers.push(d.provider);
        leases.push(d.leased_until);
    }
    let mut tx = state.db.begin().await?;
    sqlx::query(
        "UPDATE messages m SET status = d.status, leased_until = NULL, updated_at = now(),
             next_attempt_at = d.next_at,
             last_error = CASE WHEN d.status = 'sent' THEN NULL ELSE coalesce(d.detail, m.last_error) END,
             sent_at = CASE WHEN d.status = 'sent' THEN now() ELSE m.sent_at END,
             subject = coalesce(d.subject, m.subject),
             unsubscribe_digest = coalesce(d.unsubscribe, m.unsubscribe_digest),
             provider = coalesce(d.provider, m.provider),
             data = CASE WHEN d.status = 'queued' THEN m.data END
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::bytea[], $7::text[], $8::timestamptz[])
             AS d(id, status, detail, next_at, subject, unsubscribe, provider, leased)
         WHERE m.id = d.id AND m.status = 'sending' AND m.leased_until = d.leased",
    )
    .bind(&ids)
    .bind(&statuses)
    .bind(&details)
    .bind(&next)
    .bind(&subjects)
    .bind(&unsubscribes)
    .bind(&providers)
    .bind(&leases)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO attempts (message_id, attempt, outcome, provider, detail)
         SELECT d.id, d.attempt, d.outcome, d.provider, d.detail
         FROM UNNEST($1::uuid[], $2::int[], $3::text[], $4::text[], $5::text[])
             AS d(id, attempt, outcome, detail, provider)
         WHERE d.outcome IS NOT NULL
             -- A message erased while it was being sent (its account's erasure) keeps no trace.
             AND EXISTS (SELECT 1 FROM messages m WHERE m.id = d.id)
         ON CONFLICT (message_id, attempt) DO UPDATE SET outcome = EXCLUDED.outcome,
             detail = EXCLUDED.detail, at = now()",
    )
    .bind(&ids)
    .bind(&attempts)
    .bind(&outcomes)
    .bind(&details)
    .bind(&providers)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}
