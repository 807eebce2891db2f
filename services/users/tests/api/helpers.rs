//! `spawn_app()`: the real application on port 0 with its own, fresh database.

use std::{net::SocketAddr, sync::OnceLock, time::Duration};

use reqwest::{RequestBuilder, Response};
use serde_json::Value;
use service_kit::{config::Env, identity::IdentitySigner, Identity};
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

use users::{config::Settings, startup::Application};

pub fn admin_database_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://gravity:gravity@127.0.0.1:5432/postgres".into())
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    /// The app's own database, to check what a request stored.
    pub db: PgPool,
    database_url: String,
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

pub async fn spawn_app() -> TestApp {
    spawn_with(&[]).await
}

/// The app with `extra` variables set (a broker, say).
pub async fn spawn_with(extra: &[(&str, &str)]) -> TestApp {
    spawn_on(fresh_database().await, extra).await
}

async fn spawn_on(database_url: String, extra: &[(&str, &str)]) -> TestApp {
    service_kit::telemetry::init_for_tests();
    let mut env = Env::from_pairs([
        ("DATABASE_URL", database_url.clone()),
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
    TestApp {
        addr,
        client,
        db,
        database_url,
    }
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
    /// A second instance of the service on this one's database, as replicas run.
    pub async fn another_instance(&self) -> TestApp {
        spawn_on(self.database_url.clone(), &[]).await
    }

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

    /// A profile for `who`, as the auth service's registration event makes it.
    pub async fn seed(&self, who: &Identity, email: &str) {
        sqlx::query("INSERT INTO profiles (user_id, email, display_name) VALUES ($1, $2, 'Seed')")
            .bind(who.user_id)
            .bind(email)
            .execute(&self.db)
            .await
            .expect("seed a profile");
    }

    /// A merge patch of `path` as `who`.
    pub async fn merge(&self, who: &Identity, path: &str, patch: Value) -> Response {
        let request = self
            .client
            .patch(self.url(path))
            .header("content-type", "application/merge-patch+json")
            .body(patch.to_string());
        self.send(who, request).await
    }

    /// A GET of `path` as `who`: its status and JSON body.
    pub async fn get_json(&self, who: &Identity, path: &str) -> (reqwest::StatusCode, Value) {
        let r = self.send(who, self.client.get(self.url(path))).await;
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }
}

/// The `type` of a problem+json response, after checking its content type.
pub async fn problem_type(r: Response) -> String {
    let content_type = r.headers()[reqwest::header::CONTENT_TYPE].clone();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = r.json().await.expect("problem json");
    body["type"].as_str().unwrap_or_default().to_owned()
}
