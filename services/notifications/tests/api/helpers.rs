//! `spawn_app()`: the real application on port 0 with its own, fresh database.

use std::{net::SocketAddr, sync::OnceLock, time::Duration};

use reqwest::{RequestBuilder, Response};
use serde_json::Value;
use service_kit::{config::Env, identity::IdentitySigner, Identity};
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

use notifications::{config::Settings, startup::Application};

pub fn admin_database_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://gravity:gravity@127.0.0.1:5432/postgres".into())
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    /// The app's own database, to check what a request stored.
    pub db: PgPool,
}

/// Creates a database of its own for one test and returns the URL to reach it.
async fn fresh_database() -> String {
    let name = format!("test_{}", Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(&admin_database_url())
        .await
        .expect("cannot reach PostgreSQL; set TEST_DATABASE_URL (see README)");
    sqlx::query(&format!(r#"CREATE DATABASE "{name}""#))
        .execute(&mut admin)
        .await
        .expect("create test database");
    match admin_database_url().rsplit_once('/') {
        Some((server, _)) => format!("{server}/{name}"),
        None => panic!("TEST_DATABASE_URL has no database part"),
    }
}

/// The key these tests sign callers with, standing in for the gateway's (one per test
/// process: a process checks identities with one key).
pub fn gateway_key() -> &'static IdentitySigner {
    static KEY: OnceLock<IdentitySigner> = OnceLock::new();
    KEY.get_or_init(|| IdentitySigner::generate().expect("an identity key").0)
}

/// Seconds since the epoch, five minutes from now: when test assertions expire.
pub fn in_five_minutes() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
        + 300
}

/// The app sending mail to the catcher, retrying after a second.
pub async fn spawn_app() -> TestApp {
    let smtp = smtp_url();
    spawn_with(&[("SMTP_URL", &smtp), ("SEND_RETRY_SECONDS", "1")]).await
}

/// The app with `extra` variables set (a broker, say).
pub async fn spawn_with(extra: &[(&str, &str)]) -> TestApp {
    service_kit::telemetry::init_for_tests();
    let mut env = Env::from_pairs([
        ("DATABASE_URL", fresh_database().await),
        ("HOST", "127.0.0.1".into()),
        ("PORT", "0".into()),
        ("DATABASE_MAX_CONNECTIONS", "5".into()),
        ("IDENTITY_PUBLIC_KEY", gateway_key().public_key()),
    ]);
    for (var, value) in extra {
        env = env.with(var, *value);
    }
    let settings = Settings::from_env(&env).expect("test settings");
    let app = Application::build(settings).await.expect("build the app");
    let addr = app.local_addr().expect("local addr");
    let db = app.state().db.clone();
    tokio::spawn(app.run_until(std::future::pending()));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    TestApp { addr, client, db }
}

/// A caller as the gateway would pass it on, with `roles`.
pub fn caller(roles: &[&str]) -> Identity {
    Identity {
        user_id: Uuid::new_v4(),
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        session_id: Uuid::new_v4(),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// A request carrying `who`'s identity as the gateway passes it: signed.
    pub fn as_caller(&self, who: &Identity, request: RequestBuilder) -> RequestBuilder {
        who.to_signed_headers(gateway_key(), in_five_minutes())
            .expect("a signed identity")
            .into_iter()
            .fold(request, |request, (name, value)| {
                request.header(name, value)
            })
    }

    pub async fn send(&self, who: &Identity, request: RequestBuilder) -> Response {
        self.as_caller(who, request).send().await.expect("request")
    }

    /// Sends `body` as `who` with `key` as its Idempotency-Key.
    pub async fn notify(&self, who: &Identity, key: &str, body: Value) -> Response {
        let request = self
            .client
            .post(self.url("/api/v1/notifications"))
            .header("Idempotency-Key", key)
            .json(&body);
        self.send(who, request).await
    }

    /// Waits until message `id` is done with (sent, failed, given up, suppressed or
    /// cancelled) and returns it with its attempts, as `who` sees it.
    pub async fn settled(&self, who: &Identity, id: &str) -> Value {
        let mut last = Value::Null;
        for _ in 0..200 {
            last = self
                .send(
                    who,
                    self.client
                        .get(self.url(&format!("/api/v1/notifications/{id}"))),
                )
                .await
                .json()
                .await
                .expect("a message");
            let status = last["status"].as_str().unwrap_or_default();
            if !matches!(status, "queued" | "scheduled" | "sending") {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("message {id} was not settled in 20 s: {last}");
    }

    /// Puts `recipient` in this service's database as its registration would.
    pub async fn add_recipient(&self, user: Uuid, email: &str) {
        sqlx::query("INSERT INTO recipients (user_id, email) VALUES ($1, $2)")
            .bind(user)
            .bind(email)
            .execute(&self.db)
            .await
            .expect("a recipient");
    }
}

/// The mail catcher `scripts/dev-deps.sh` starts (or a Mailpit): its SMTP URL.
pub fn smtp_url() -> String {
    std::env::var("TEST_SMTP_URL").unwrap_or_else(|_| "smtp://127.0.0.1:1025".into())
}

fn mail_api() -> String {
    std::env::var("TEST_MAIL_API").unwrap_or_else(|_| "http://127.0.0.1:8025".into())
}

/// An address no other test sends to.
pub fn fresh_address(prefix: &str) -> String {
    format!("{prefix}{}@example.com", Uuid::new_v4().simple())
}

/// The mail the catcher holds for `address`, newest first, once there are `count`.
pub async fn caught(address: &str, count: usize) -> Vec<Value> {
    let client = reqwest::Client::new();
    let mut found = Vec::new();
    for _ in 0..200 {
        let page: Value = client
            .get(format!("{}/api/v1/search", mail_api()))
            .query(&[
                ("query", format!("to:{address}")),
                ("limit", "100".to_owned()),
            ])
            .send()
            .await
            .expect("cannot reach the mail catcher; run scripts/dev-deps.sh (see README)")
            .json()
            .await
            .expect("a page of mail");
        found = page["messages"].as_array().cloned().unwrap_or_default();
        if found.len() >= count {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{count} mail(s) to {address} not caught in 20 s; caught {found:?}");
}

/// One caught mail: its summary, `Text`, `HTML` and `Headers`.
pub async fn mail(id: &str) -> Value {
    reqwest::get(format!("{}/api/v1/message/{id}", mail_api()))
        .await
        .expect("the mail catcher")
        .json()
        .await
        .expect("a mail")
}

/// The `type` of a problem+json response, after checking its content type.
pub async fn problem_type(r: Response) -> String {
    let content_type = r.headers()[reqwest::header::CONTENT_TYPE].clone();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = r.json().await.expect("problem json");
    body["type"].as_str().unwrap_or_default().to_owned()
}
