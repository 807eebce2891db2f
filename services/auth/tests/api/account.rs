use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{access, assert_problem, refresh_token, spawn_app, unique_email, PASSWORD};

const NEW_PASSWORD: &str = "a much longer passphrase";

#[tokio::test]
async fn me_needs_a_bearer_token() {
    let app = spawn_app().await;
    let r = app.client.get(app.url("/api/v1/me")).send().await.unwrap();
    assert_eq!(
        r.headers()["www-authenticate"],
        "Bearer error=\"invalid_token\""
    );
    assert_problem(r, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    let r = app
        .client
        .get(app.url("/api/v1/me"))
        .header("authorization", "Basic Zm9vOmJhcg==")
        .send()
        .await
        .unwrap();
    assert_problem(r, StatusCode::UNAUTHORIZED, "unauthenticated").await;
}

#[tokio::test]
async fn change_password_keeps_this_session_and_revokes_the_others() {
    let app = spawn_app().await;
    let (email, here) = app.new_user().await;
    let elsewhere = app.login_ok(&email, PASSWORD).await;

    let body = json!({ "current_password": PASSWORD, "new_password": NEW_PASSWORD });
    let r = app
        .send_json(Method::POST, "/api/v1/change-password", access(&here), body)
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);

    assert_eq!(
        app.get("/api/v1/me", access(&here)).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        app.refresh(refresh_token(&here)).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        app.get("/api/v1/me", access(&elsewhere)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.refresh(refresh_token(&elsewhere)).await.status(),
        StatusCode::UNAUTHORIZED
    );

    assert_eq!(
        app.login(&email, PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED
    );
    app.login_ok(&email, NEW_PASSWORD).await;
}

#[tokio::test]
async fn change_password_checks_the_current_one_and_the_policy() {
    let app = spawn_app().await;
    let (email, tokens) = app.new_user().await;
    let body = json!({ "current_password": "wrong horse battery", "new_password": NEW_PASSWORD });
    let r = app
        .send_json(
            Method::POST,
            "/api/v1/change-password",
            access(&tokens),
            body,
        )
        .await;
    assert_problem(r, StatusCode::UNAUTHORIZED, "invalid-credentials").await;
    let body = json!({ "current_password": PASSWORD, "new_password": "weak" });
    let r = app
        .send_json(
            Method::POST,
            "/api/v1/change-password",
            access(&tokens),
            body,
        )
        .await;
    assert_problem(r, StatusCode::UNPROCESSABLE_ENTITY, "validation").await;
    app.login_ok(&email, PASSWORD).await;
}

async fn forgot(app: &crate::helpers::TestApp, email: &str) -> reqwest::Response {
    app.client
        .post(app.url("/api/v1/forgot-password"))
        .json(&json!({ "email": email }))
        .send()
        .await
        .unwrap()
}

async fn reset(app: &crate::helpers::TestApp, token: &str, password: &str) -> reqwest::Response {
    app.client
        .post(app.url("/api/v1/reset-password"))
        .json(&json!({ "token": token, "new_password": password }))
        .send()
        .await
        .unwrap()
}

async fn outbox_token(app: &crate::helpers::TestApp, email: &str) -> String {
    let payload: Value = sqlx::query_scalar(
        "SELECT envelope::jsonb->'data' FROM event_outbox
         WHERE event_type = 'auth.password_reset.requested.v1'
           AND envelope::jsonb->'data'->>'email' = $1
         ORDER BY id DESC LIMIT 1",
    )
    .bind(email)
    .fetch_one(&app.db)
    .await
    .unwrap();
    payload["token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn forgot_password_answers_the_same_for_unknown_emails() {
    let app = spawn_app().await;
    let (email, _) = app.new_user().await;
    let known = forgot(&app, &email).await;
    let unknown = forgot(&app, &unique_email()).await;
    assert_eq!(known.status(), StatusCode::ACCEPTED);
    assert_eq!(unknown.status(), StatusCode::ACCEPTED);
    assert_eq!(
        known.json::<Value>().await.unwrap(),
        unknown.json::<Value>().await.unwrap()
    );
    let rows: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM event_outbox WHERE event_type = 'auth.password_reset.requested.v1'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(rows, 1, "only the known email gets a message");
    // The token is stored only as a digest.
    let token = outbox_token(&app, &email).await;
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM password_reset_tokens WHERE token_hash = $1")
            .bind(token.as_bytes())
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(stored, 0);
}

#[tokio::test]
async fn a_reset_token_works_once_and_ends_every_session() {
    let app = spawn_app().await;
    let (email, tokens) = app.new_user().await;
    assert_eq!(forgot(&app, &email).await.status(), StatusCode::ACCEPTED);
    let token = outbox_token(&app, &email).await;

    assert_problem(
        reset(&app, &token, "weak").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation",
    )
    .await;
    assert_eq!(
        reset(&app, &token, NEW_PASSWORD).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_problem(
        reset(&app, &token, "yet another passphrase").await,
        StatusCode::BAD_REQUEST,
        "invalid-reset-token",
    )
    .await;

    assert_eq!(
        app.get("/api/v1/me", access(&tokens)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.refresh(refresh_token(&tokens)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.login(&email, PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED
    );
    app.login_ok(&email, NEW_PASSWORD).await;
}

#[tokio::test]
async fn an_expired_reset_token_is_refused() {
    let app = spawn_app().await;
    let (email, _) = app.new_user().await;
    forgot(&app, &email).await;
    let token = outbox_token(&app, &email).await;
    sqlx::query("UPDATE password_reset_tokens SET expires_at = now() - interval '1 minute'")
        .execute(&app.db)
        .await
        .unwrap();
    assert_problem(
        reset(&app, &token, NEW_PASSWORD).await,
        StatusCode::BAD_REQUEST,
        "invalid-reset-token",
    )
    .await;
    app.login_ok(&email, PASSWORD).await;
}

#[tokio::test]
async fn reset_tokens_expire_after_thirty_minutes_by_default() {
    let app = spawn_app().await;
    let (email, _) = app.new_user().await;
    forgot(&app, &email).await;
    let minutes: f64 = sqlx::query_scalar(
        "SELECT extract(epoch FROM expires_at - created_at)::float8 / 60 FROM password_reset_tokens",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert!((minutes - 30.0).abs() < 0.1, "{minutes}");
}

#[tokio::test]
async fn guesses_at_the_current_password_are_throttled_like_logins() {
    let env = crate::helpers::test_env()
        .await
        .with("LOGIN_MAX_FAILURES_PER_ACCOUNT", "3");
    let app = crate::helpers::spawn_with(env).await;
    let (_, tokens) = app.new_user().await;
    let guess = json!({ "current_password": "wrong horse battery", "new_password": NEW_PASSWORD });
    for _ in 0..3 {
        let r = app
            .send_json(
                Method::POST,
                "/api/v1/change-password",
                access(&tokens),
                guess.clone(),
            )
            .await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let right = json!({ "current_password": PASSWORD, "new_password": NEW_PASSWORD });
    let r = app
        .send_json(
            Method::POST,
            "/api/v1/change-password",
            access(&tokens),
            right,
        )
        .await;
    assert_problem(r, StatusCode::TOO_MANY_REQUESTS, "login-throttled").await;
}

#[tokio::test]
async fn reset_requests_for_one_account_are_capped() {
    let app = spawn_app().await;
    let (email, _) = app.new_user().await;
    for _ in 0..6 {
        assert_eq!(forgot(&app, &email).await.status(), StatusCode::ACCEPTED);
    }
    let rows: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM event_outbox WHERE event_type = 'auth.password_reset.requested.v1'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(rows, 3);
}
