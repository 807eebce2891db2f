use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{
    access, assert_problem, refresh_token, spawn_app, spawn_with, test_env, unique_email, PASSWORD,
};

#[tokio::test]
async fn register_answers_oauth2_tokens_that_work() {
    let app = spawn_app().await;
    let email = unique_email();
    let r = app.register(&email, PASSWORD).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let tokens: Value = r.json().await.unwrap();
    assert_eq!(tokens["token_type"], "bearer");
    assert_eq!(tokens["expires_in"], 900);
    assert!(tokens["refresh_token"].as_str().unwrap().len() >= 43);

    let me: Value = app
        .get("/api/v1/me", access(&tokens))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["email"], email);
    assert_eq!(me["role"], "user");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE email = $1")
        .bind(&email)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(rows, 1);
}

#[tokio::test]
async fn register_accepts_an_oauth2_style_form_and_normalises_the_email() {
    let app = spawn_app().await;
    let email = unique_email();
    let r = app
        .client
        .post(app.url("/api/v1/register"))
        .form(&[
            ("username", email.to_uppercase().as_str()),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    app.login_ok(&email, PASSWORD).await;
}

#[tokio::test]
async fn a_taken_email_is_a_conflict() {
    let app = spawn_app().await;
    let (email, _) = app.new_user().await;
    assert_problem(
        app.register(&email, PASSWORD).await,
        StatusCode::CONFLICT,
        "email-taken",
    )
    .await;
}

#[tokio::test]
async fn of_two_concurrent_registrations_of_one_email_exactly_one_wins() {
    let app = spawn_app().await;
    for _ in 0..5 {
        let email = unique_email();
        let (a, b) = tokio::join!(
            app.register(&email, PASSWORD),
            app.register(&email, PASSWORD)
        );
        let mut statuses = [a.status(), b.status()];
        statuses.sort();
        assert_eq!(statuses, [StatusCode::CREATED, StatusCode::CONFLICT]);
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE email = $1")
            .bind(&email)
            .fetch_one(&app.db)
            .await
            .unwrap();
        assert_eq!(rows, 1);
    }
}

#[tokio::test]
async fn invalid_email_and_weak_password_are_reported_together() {
    let app = spawn_app().await;
    let r = app.register("not-an-email", "short").await;
    let body = assert_problem(r, StatusCode::UNPROCESSABLE_ENTITY, "validation").await;
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["email", "password"]);

    for weak in ["password123", "aaaaaaaaaaaaaa", "123"] {
        let r = app.register(&unique_email(), weak).await;
        assert_problem(r, StatusCode::UNPROCESSABLE_ENTITY, "validation").await;
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(count, 0, "nothing was stored for refused registrations");
}

#[tokio::test]
async fn login_follows_the_oauth2_password_grant() {
    let app = spawn_app().await;
    let (email, _) = app.new_user().await;
    let r = app
        .client
        .post(app.url("/api/v1/login"))
        .form(&[
            ("username", email.as_str()),
            ("password", PASSWORD),
            ("grant_type", "password"),
            ("scope", ""),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let tokens: Value = r.json().await.unwrap();
    assert_eq!(tokens["token_type"], "bearer");
    assert_eq!(
        app.get("/api/v1/me", access(&tokens)).await.status(),
        StatusCode::OK
    );

    let r = app
        .client
        .post(app.url("/api/v1/login"))
        .form(&[
            ("username", email.as_str()),
            ("password", PASSWORD),
            ("grant_type", "client_credentials"),
        ])
        .send()
        .await
        .unwrap();
    assert_problem(r, StatusCode::BAD_REQUEST, "unsupported-grant-type").await;
}

#[tokio::test]
async fn wrong_password_and_unknown_email_get_the_same_answer() {
    let app = spawn_app().await;
    let (email, _) = app.new_user().await;
    let wrong = assert_problem(
        app.login(&email, "wrong horse battery").await,
        StatusCode::UNAUTHORIZED,
        "invalid-credentials",
    )
    .await;
    let unknown = assert_problem(
        app.login(&unique_email(), PASSWORD).await,
        StatusCode::UNAUTHORIZED,
        "invalid-credentials",
    )
    .await;
    assert_eq!(wrong, unknown);
}

#[tokio::test]
async fn failed_logins_are_throttled_per_account() {
    let env = test_env().await.with("LOGIN_MAX_FAILURES_PER_ACCOUNT", "3");
    let app = spawn_with(env).await;
    let (email, _) = app.new_user().await;
    for _ in 0..3 {
        assert_eq!(
            app.login(&email, "wrong horse battery").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    // Even the right password is refused while the account is throttled.
    let r = app.login(&email, PASSWORD).await;
    let retry_after: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after > 0 && retry_after <= 900);
    assert_problem(r, StatusCode::TOO_MANY_REQUESTS, "login-throttled").await;
    // Other accounts are unaffected.
    let (other, _) = app.new_user().await;
    app.login_ok(&other, PASSWORD).await;
}

#[tokio::test]
async fn failed_logins_are_throttled_per_client_address() {
    let env = test_env().await.with("LOGIN_MAX_FAILURES_PER_CLIENT", "4");
    let app = spawn_with(env).await;
    for _ in 0..4 {
        assert_eq!(
            app.login(&unique_email(), "wrong horse battery")
                .await
                .status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let (email, _) = app.new_user().await;
    assert_problem(
        app.login(&email, PASSWORD).await,
        StatusCode::TOO_MANY_REQUESTS,
        "login-throttled",
    )
    .await;
}

#[tokio::test]
async fn refresh_rotates_and_a_reused_token_revokes_the_family() {
    let app = spawn_app().await;
    let (_, first) = app.new_user().await;

    let r = app.refresh(refresh_token(&first)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let second: Value = r.json().await.unwrap();
    assert_ne!(refresh_token(&first), refresh_token(&second));
    assert_eq!(
        app.get("/api/v1/me", access(&second)).await.status(),
        StatusCode::OK
    );

    // The first token again: someone copied it. The whole session goes.
    assert_problem(
        app.refresh(refresh_token(&first)).await,
        StatusCode::UNAUTHORIZED,
        "refresh-token-reused",
    )
    .await;
    assert_problem(
        app.refresh(refresh_token(&second)).await,
        StatusCode::UNAUTHORIZED,
        "invalid-refresh-token",
    )
    .await;
    assert_problem(
        app.get("/api/v1/me", access(&second)).await,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    )
    .await;
}

#[tokio::test]
async fn refresh_accepts_the_oauth2_form_and_refuses_garbage() {
    let app = spawn_app().await;
    let (_, tokens) = app.new_user().await;
    let r = app
        .client
        .post(app.url("/api/v1/refresh"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token(&tokens)),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_problem(
        app.refresh("not-a-token").await,
        StatusCode::UNAUTHORIZED,
        "invalid-refresh-token",
    )
    .await;
}

#[tokio::test]
async fn logout_ends_the_session_and_blocks_the_access_token() {
    let app = spawn_app().await;
    let (email, tokens) = app.new_user().await;
    let other_session = app.login_ok(&email, PASSWORD).await;

    let r = app
        .client
        .post(app.url("/api/v1/logout"))
        .bearer_auth(access(&tokens))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);

    assert_problem(
        app.get("/api/v1/me", access(&tokens)).await,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    )
    .await;
    assert_problem(
        app.refresh(refresh_token(&tokens)).await,
        StatusCode::UNAUTHORIZED,
        "invalid-refresh-token",
    )
    .await;
    // Only that session: the user's other login is untouched.
    assert_eq!(
        app.get("/api/v1/me", access(&other_session)).await.status(),
        StatusCode::OK
    );

    let mut redis = app.state.redis.clone();
    let blocked: i64 = redis::cmd("EXISTS")
        .arg(format!(
            "{}revoked-jti:{}",
            app.state.settings.redis_prefix,
            jti_of(access(&tokens))
        ))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(blocked, 1);
}

fn jti_of(token: &str) -> String {
    use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
    let payload = token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    claims["jti"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_successful_login_clears_the_accounts_failures() {
    let env = test_env().await.with("LOGIN_MAX_FAILURES_PER_ACCOUNT", "3");
    let app = spawn_with(env).await;
    let (email, _) = app.new_user().await;
    for _ in 0..2 {
        assert_eq!(
            app.login(&email, "wrong horse battery").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    app.login_ok(&email, PASSWORD).await;
    for _ in 0..2 {
        assert_eq!(
            app.login(&email, "wrong horse battery").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    app.login_ok(&email, PASSWORD).await;
}

#[tokio::test]
async fn a_cached_token_is_refused_as_soon_as_its_session_ends_elsewhere() {
    // Two instances share the database and Redis; the second has authenticated (and cached)
    // the token before the first revokes it.
    let app = spawn_app().await;
    let other = spawn_with(app.env.clone()).await;
    let (_, tokens) = app.new_user().await;
    // Wait until both instances are subscribed to auth events, so the cache is in use.
    for _ in 0..100 {
        if app.state.events.generation().is_some() && other.state.events.generation().is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        other.state.events.generation().is_some(),
        "auth events never subscribed"
    );
    assert_eq!(
        other.get("/api/v1/me", access(&tokens)).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        other.get("/api/v1/me", access(&tokens)).await.status(),
        StatusCode::OK
    );

    let r = app
        .client
        .post(app.url("/api/v1/logout"))
        .bearer_auth(access(&tokens))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    // The event travels through Redis; allow it a moment, then the cached entry must be gone.
    let mut status = StatusCode::OK;
    for _ in 0..50 {
        status = other.get("/api/v1/me", access(&tokens)).await.status();
        if status == StatusCode::UNAUTHORIZED {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn concurrent_guesses_cannot_outrun_the_throttle() {
    let env = test_env().await.with("LOGIN_MAX_FAILURES_PER_ACCOUNT", "3");
    let app = spawn_with(env).await;
    let (email, _) = app.new_user().await;
    let guesses = (0..10).map(|_| app.login(&email, "wrong horse battery"));
    let statuses: Vec<StatusCode> = futures_util::future::join_all(guesses)
        .await
        .iter()
        .map(|r| r.status())
        .collect();
    let checked = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    let throttled = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!((checked, throttled), (3, 7), "{statuses:?}");
    assert_eq!(
        app.login(&email, PASSWORD).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}
