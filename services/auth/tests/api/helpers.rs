//! `spawn_app()`: the real application on port 0 with its own database and Redis namespace.

use std::{net::SocketAddr, time::Duration};

use auth::{accounts, config::Settings, startup::Application, state::AppState};
use reqwest::{Response, StatusCode};
use secrecy::SecretString;
use serde_json::{json, Value};
use service_kit::{config::Env, Email, Password};
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

pub const PASSWORD: &str = "correct horse battery";

pub fn admin_database_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://gravity:gravity@127.0.0.1:5432/postgres".into())
}

pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    pub db: PgPool,
    pub state: AppState,
    pub env: Env,
}

/// Settings for a fresh app; tests override variables with `Env::with` before spawning.
pub async fn test_env() -> Env {
    let name = format!("auth_test_{}", Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(&admin_database_url())
        .await
        .expect("cannot reach PostgreSQL; set TEST_DATABASE_URL (see README)");
    sqlx::query(&format!(r#"CREATE DATABASE "{name}""#))
        .execute(&mut admin)
        .await
        .expect("create test database");
    let base = admin_database_url();
    let url = match base.rsplit_once('/') {
        Some((server, _)) => format!("{server}/{name}"),
        None => panic!("TEST_DATABASE_URL has no database part"),
    };
    Env::from_pairs([
        ("DATABASE_URL", url),
        ("REDIS_URL", redis_url()),
        (
            "REDIS_KEY_PREFIX",
            format!("test:{}:", Uuid::new_v4().simple()),
        ),
        ("HOST", "127.0.0.1".into()),
        ("PORT", "0".into()),
        ("DATABASE_MAX_CONNECTIONS", "5".into()),
    ])
}

pub async fn spawn_app() -> TestApp {
    spawn_with(test_env().await).await
}

pub async fn spawn_with(env: Env) -> TestApp {
    service_kit::telemetry::init_for_tests();
    let settings = Settings::from_env(&env).expect("test settings");
    let app = Application::build(settings).await.expect("build the app");
    let addr = app.local_addr().expect("local addr");
    let state = app.state().clone();
    let db = state.db.clone();
    tokio::spawn(app.run_until(std::future::pending()));
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    TestApp {
        addr,
        client,
        db,
        state,
        env,
    }
}

pub fn unique_email() -> String {
    format!("user-{}@example.com", Uuid::new_v4().simple())
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn register(&self, email: &str, password: &str) -> Response {
        self.client
            .post(self.url("/api/v1/register"))
            .json(&json!({ "email": email, "password": password }))
            .send()
            .await
            .expect("register request")
    }

    /// Registers a fresh account and returns its email and token response.
    pub async fn new_user(&self) -> (String, Value) {
        let email = unique_email();
        let r = self.register(&email, PASSWORD).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        (email, r.json().await.expect("token json"))
    }

    pub async fn login(&self, email: &str, password: &str) -> Response {
        self.client
            .post(self.url("/api/v1/login"))
            .form(&[
                ("username", email),
                ("password", password),
                ("grant_type", "password"),
            ])
            .send()
            .await
            .expect("login request")
    }

    pub async fn login_ok(&self, email: &str, password: &str) -> Value {
        let r = self.login(email, password).await;
        assert_eq!(r.status(), StatusCode::OK, "login failed");
        r.json().await.expect("token json")
    }

    /// Creates an admin through the library function and logs it in.
    pub async fn new_admin(&self) -> (String, Value) {
        let email = unique_email();
        let password = Password::parse(SecretString::from(PASSWORD.to_owned())).expect("password");
        accounts::create_superuser(
            &self.db,
            &self.state.hasher,
            &Email::parse(&email).expect("email"),
            &password,
        )
        .await
        .expect("create superuser");
        let tokens = self.login_ok(&email, PASSWORD).await;
        (email, tokens)
    }

    pub async fn get(&self, path: &str, token: &str) -> Response {
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("GET")
    }

    /// The id of the account a token belongs to, as `GET /api/v1/me` reports it.
    pub async fn id_of(&self, token: &str) -> String {
        let me: Value = self
            .get("/api/v1/me", token)
            .await
            .json()
            .await
            .expect("me json");
        me["id"].as_str().expect("id").to_owned()
    }

    pub async fn send_json(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Value,
    ) -> Response {
        self.client
            .request(method, self.url(path))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("request")
    }

    pub async fn refresh(&self, refresh_token: &str) -> Response {
        self.client
            .post(self.url("/api/v1/refresh"))
            .json(&json!({ "refresh_token": refresh_token }))
            .send()
            .await
            .expect("refresh")
    }
}

pub fn access(tokens: &Value) -> &str {
    tokens["access_token"].as_str().expect("access_token")
}

pub fn refresh_token(tokens: &Value) -> &str {
    tokens["refresh_token"].as_str().expect("refresh_token")
}

/// Asserts an RFC 9457 problem response with the given status and `type` slug; returns it.
pub async fn assert_problem(response: Response, status: StatusCode, slug: &str) -> Value {
    assert_eq!(response.status(), status, "unexpected status");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = response.json().await.expect("problem json");
    assert_eq!(
        body["type"],
        format!("urn:gravity:problem:{slug}"),
        "body: {body}"
    );
    assert_eq!(body["status"], status.as_u16());
    assert!(body["title"].is_string());
    body
}
