//! Mails per second the SMTP server accepts from the notifications service, against a bare
//! lettre client sending the same message to the same server over as many connections (the
//! bound: no queue, no database, no rendering, no tracking).
//!
//! The service's figure is a drain: MAILS messages are queued in its database first, then the
//! service starts and the clock runs until the last one is recorded `sent` (the server's
//! answer kept). The bound's clock runs from the first send to the last answer.
//!
//! ```text
//! TEST_DATABASE_URL=... BENCH_SMTP_URL=smtp://127.0.0.1:2525 \
//!     cargo run --release -p notifications --example mail_bench -- 5000 3
//! ```
//!
//! Prints `key=value` lines. `scripts/bench-mail.sh` runs it against a fresh mail catcher.

use std::{
    process::ExitCode,
    time::{Duration, Instant},
};

use futures_util::{stream, StreamExt as _};
use lettre::{
    message::{
        header::{ContentType, HeaderName, HeaderValue},
        Mailbox, MultiPart, SinglePart,
    },
    transport::smtp::PoolConfig,
    AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor,
};
use notifications::{config::Settings, startup::Application, templates};
use serde_json::json;
use service_kit::config::Env;
use sqlx::{Connection as _, PgConnection, PgPool};
use uuid::Uuid;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// SMTP connections on both sides.
const CONNECTIONS: u32 = 8;

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
    let mails: i64 = args.next().map(|n| n.parse()).transpose()?.unwrap_or(5000);
    let rounds: usize = args.next().map(|n| n.parse()).transpose()?.unwrap_or(3);
    let server = std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://gravity:gravity@127.0.0.1:5432/postgres".into());
    let smtp = std::env::var("BENCH_SMTP_URL").unwrap_or_else(|_| "smtp://127.0.0.1:2525".into());
    println!("mails={mails} rounds={rounds} connections={CONNECTIONS}");
    let (mut bare, mut service) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let b = bound(&smtp, mails).await?;
        let s = drain(&server, &smtp, mails).await?;
        println!(
            "round={round} bare_lettre_per_s={b:.0} service_per_s={s:.0} share={:.0}%",
            100.0 * s / b
        );
        bare.push(b);
        service.push(s);
    }
    let (b, s) = (median(&mut bare), median(&mut service));
    println!(
        "median bare_lettre_per_s={b:.0} service_per_s={s:.0} share={:.0}%",
        100.0 * s / b
    );
    Ok(())
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The welcome mail as the service renders it, to one address.
fn content() -> Result<templates::Rendered, BoxError> {
    let template = templates::Template {
        key: "welcome".into(),
        locale: "en".into(),
        version: 1,
        subject: "Welcome{% if name %}, {{ name }}{% endif %}".into(),
        html: Some("<p>Welcome{% if name %}, {{ name }}{% endif %}!</p><p>Your account {{ email }} is ready.</p>".into()),
        text: "Welcome{% if name %}, {{ name }}{% endif %}!\n\nYour account {{ email }} is ready.".into(),
        critical: false,
        category: "account".into(),
    };
    Ok(templates::render_once(
        &template,
        &json!({ "email": "bench@example.com", "name": "Ann" }),
    )?)
}

/// The bare client: lettre's pooled transport, `mails` messages, CONNECTIONS at a time.
async fn bound(smtp: &str, mails: i64) -> Result<f64, BoxError> {
    let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(smtp)?
        .pool_config(PoolConfig::new().max_size(CONNECTIONS))
        .build();
    let content = content()?;
    let from: Mailbox = "Gravity <no-reply@gravity.local>".parse()?;
    let build = |i: i64| -> Result<Message, BoxError> {
        let header = |name: &'static str, value: String| {
            HeaderValue::new(HeaderName::new_from_ascii_str(name), value)
        };
        Ok(Message::builder()
            .from(from.clone())
            .to("bench@example.com".parse()?)
            .subject(content.subject.clone())
            .message_id(Some(format!("<{}-{i}@gravity.local>", Uuid::new_v4())))
            .raw_header(header(
                "List-Unsubscribe",
                "<http://localhost:8080/notifications/api/v1/unsubscribe/x>".into(),
            ))
            .raw_header(header(
                "List-Unsubscribe-Post",
                "List-Unsubscribe=One-Click".into(),
            ))
            .multipart(
                MultiPart::alternative()
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_PLAIN)
                            .body(content.text.clone()),
                    )
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_HTML)
                            .body(content.html.clone().unwrap_or_default()),
                    ),
            )?)
    };
    // Connections are opened before the clock starts, as the service's are by its first batch.
    transport.send(build(-1)?).await?;
    let started = Instant::now();
    let failures = stream::iter(0..mails)
        .map(|i| {
            let transport = &transport;
            let message = build(i);
            async move { transport.send(message?).await.map_err(BoxError::from) }
        })
        .buffer_unordered(CONNECTIONS as usize)
        .filter(|r| std::future::ready(r.is_err()))
        .count()
        .await;
    let elapsed = started.elapsed();
    if failures > 0 {
        return Err(format!("{failures} of {mails} sends failed").into());
    }
    Ok(mails as f64 / elapsed.as_secs_f64())
}

/// The service: `mails` welcome mails queued, then the service started; until all are sent.
async fn drain(server: &str, smtp: &str, mails: i64) -> Result<f64, BoxError> {
    let url = fresh_database(server).await?;
    let env = Env::from_pairs([
        ("DATABASE_URL", url.clone()),
        ("HOST", "127.0.0.1".into()),
        ("PORT", "0".into()),
        ("SMTP_URL", smtp.to_owned()),
        ("SMTP_CONNECTIONS", CONNECTIONS.to_string()),
        ("DATABASE_MAX_CONNECTIONS", "10".into()),
    ]);
    let settings = Settings::from_env(&env)?;
    // Migrated by a first build, which is dropped before its sender starts.
    drop(Application::build(settings.clone()).await?);
    let db = PgPool::connect(&url).await?;
    sqlx::query(
        "INSERT INTO messages (id, origin, channel, address, template, template_version, locale,
             category, data, status, send_at, next_attempt_at)
         SELECT gen_random_uuid(), 'bench', 'email', 'bench@example.com', 'welcome', 1, 'en',
             'account', '{\"email\": \"bench@example.com\", \"name\": \"Ann\"}', 'queued', now(), now()
         FROM generate_series(1, $1)",
    )
    .bind(mails)
    .execute(&db)
    .await?;
    let app = Application::build(settings).await?;
    let started = Instant::now();
    let serving = tokio::spawn(app.run_until(std::future::pending()));
    loop {
        let (sent, other): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE status = 'sent'),
                    count(*) FILTER (WHERE status NOT IN ('sent', 'queued', 'sending'))
             FROM messages",
        )
        .fetch_one(&db)
        .await?;
        if other > 0 {
            serving.abort();
            return Err(format!("{other} messages did not go out").into());
        }
        if sent == mails {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    serving.abort();
    db.close().await;
    Ok(mails as f64 / elapsed.as_secs_f64())
}

async fn fresh_database(server: &str) -> Result<String, BoxError> {
    let name = format!("mail_bench_{}", Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(server).await?;
    sqlx::query(&format!(r#"CREATE DATABASE "{name}""#))
        .execute(&mut admin)
        .await?;
    match server.rsplit_once('/') {
        Some((base, _)) => Ok(format!("{base}/{name}")),
        None => Err("TEST_DATABASE_URL has no database part".into()),
    }
}
