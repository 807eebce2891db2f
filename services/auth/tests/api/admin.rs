use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{access, assert_problem, refresh_token, spawn_app, PASSWORD};

#[tokio::test]
async fn non_admins_are_refused_on_every_admin_route() {
    let app = spawn_app().await;
    let (_, user) = app.new_user().await;
    let (_, victim) = app.new_user().await;
    let victim_id = app.id_of(access(&victim)).await;
    let id = victim_id.as_str();
    let token = access(&user);
    let requests = [
        (Method::GET, "/api/v1/users".to_owned(), json!(null)),
        (Method::GET, format!("/api/v1/users/{id}"), json!(null)),
        (
            Method::PUT,
            format!("/api/v1/users/{id}"),
            json!({ "is_active": false }),
        ),
        (Method::DELETE, format!("/api/v1/users/{id}"), json!(null)),
        (Method::GET, "/api/v1/roles".to_owned(), json!(null)),
        (
            Method::POST,
            "/api/v1/roles".to_owned(),
            json!({ "name": "hacker" }),
        ),
        (
            Method::PUT,
            format!("/api/v1/users/{id}/role"),
            json!({ "role": "admin" }),
        ),
    ];
    for (method, path, body) in requests {
        let r = app.send_json(method.clone(), &path, token, body).await;
        assert_problem(r, StatusCode::FORBIDDEN, "forbidden").await;
    }
    // The victim is untouched.
    assert_eq!(
        app.get("/api/v1/me", access(&victim)).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn admins_list_and_filter_users_page_by_page() {
    let app = spawn_app().await;
    let (_, admin) = app.new_admin().await;
    for _ in 0..5 {
        app.new_user().await;
    }
    let token = access(&admin);
    let page: Value = app
        .get("/api/v1/users?limit=2&offset=0", token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["total"], 6);
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    assert_eq!(page["limit"], 2);
    let last: Value = app
        .get("/api/v1/users?limit=2&offset=4", token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(last["items"].as_array().unwrap().len(), 2);
    let past: Value = app
        .get("/api/v1/users?limit=2&offset=10", token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(past["items"].as_array().unwrap().len(), 0);
    assert_eq!(past["total"], 6);

    let admins: Value = app
        .get("/api/v1/users?role=admin", token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(admins["total"], 1);
    let users: Value = app
        .get("/api/v1/users?role=user&active=true", token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(users["total"], 5);

    let one = users["items"][0]["email"].as_str().unwrap().to_owned();
    let needle = &one[5..15];
    let found: Value = app
        .get(&format!("/api/v1/users?email={needle}"), token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(found["total"], 1);
    assert_eq!(found["items"][0]["email"], one);
    // LIKE wildcards in the filter match literally.
    let none: Value = app
        .get("/api/v1/users?email=%25", token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(none["total"], 0);

    assert_problem(
        app.get("/api/v1/users?limit=0", token).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation",
    )
    .await;
    assert_problem(
        app.get("/api/v1/users?limit=101", token).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation",
    )
    .await;
    assert_problem(
        app.get("/api/v1/users?limit=abc", token).await,
        StatusCode::BAD_REQUEST,
        "invalid-query",
    )
    .await;
}

#[tokio::test]
async fn admins_read_update_disable_and_delete_users() {
    let app = spawn_app().await;
    let (_, admin) = app.new_admin().await;
    let token = access(&admin);
    let (email, user) = app.new_user().await;
    let id = app.id_of(access(&user)).await;

    let got: Value = app
        .get(&format!("/api/v1/users/{id}"), token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(got["email"], email);

    let r = app
        .send_json(
            Method::PUT,
            &format!("/api/v1/users/{id}"),
            token,
            json!({ "full_name": "Ada Lovelace" }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.json::<Value>().await.unwrap()["full_name"],
        "Ada Lovelace"
    );

    let r = app
        .send_json(
            Method::PUT,
            &format!("/api/v1/users/{id}"),
            token,
            json!({ "nickname": "x" }),
        )
        .await;
    assert_problem(r, StatusCode::UNPROCESSABLE_ENTITY, "validation").await;

    // Disabling ends the account's sessions and stops its logins.
    let r = app
        .send_json(
            Method::PUT,
            &format!("/api/v1/users/{id}"),
            token,
            json!({ "is_active": false }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        app.get("/api/v1/me", access(&user)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_problem(
        app.login(&email, PASSWORD).await,
        StatusCode::FORBIDDEN,
        "account-disabled",
    )
    .await;
    app.send_json(
        Method::PUT,
        &format!("/api/v1/users/{id}"),
        token,
        json!({ "is_active": true }),
    )
    .await;
    let user = app.login_ok(&email, PASSWORD).await;

    let r = app
        .send_json(
            Method::DELETE,
            &format!("/api/v1/users/{id}"),
            token,
            json!(null),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    // A deleted user's tokens are dead at once.
    assert_problem(
        app.get("/api/v1/me", access(&user)).await,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    )
    .await;
    assert_problem(
        app.refresh(refresh_token(&user)).await,
        StatusCode::UNAUTHORIZED,
        "invalid-refresh-token",
    )
    .await;
    assert_problem(
        app.get(&format!("/api/v1/users/{id}"), token).await,
        StatusCode::NOT_FOUND,
        "not-found",
    )
    .await;
    let r = app
        .send_json(
            Method::DELETE,
            &format!("/api/v1/users/{id}"),
            token,
            json!(null),
        )
        .await;
    assert_problem(r, StatusCode::NOT_FOUND, "not-found").await;
    assert_problem(
        app.get("/api/v1/users/not-a-uuid", token).await,
        StatusCode::NOT_FOUND,
        "not-found",
    )
    .await;
}

#[tokio::test]
async fn roles_are_listed_created_and_assigned() {
    let app = spawn_app().await;
    let (_, admin) = app.new_admin().await;
    let token = access(&admin);
    let roles: Value = app.get("/api/v1/roles", token).await.json().await.unwrap();
    let names: Vec<&str> = roles
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["admin", "user"]);

    let body = json!({ "name": "auditor", "description": "Reads accounts", "permissions": ["users:read"] });
    let r = app
        .send_json(Method::POST, "/api/v1/roles", token, body.clone())
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_problem(
        app.send_json(Method::POST, "/api/v1/roles", token, body)
            .await,
        StatusCode::CONFLICT,
        "role-exists",
    )
    .await;
    let r = app
        .send_json(
            Method::POST,
            "/api/v1/roles",
            token,
            json!({ "name": "Bad Name" }),
        )
        .await;
    assert_problem(r, StatusCode::UNPROCESSABLE_ENTITY, "validation").await;
    let r = app
        .send_json(
            Method::POST,
            "/api/v1/roles",
            token,
            json!({ "name": "x2", "permissions": ["nope"] }),
        )
        .await;
    assert_problem(r, StatusCode::UNPROCESSABLE_ENTITY, "validation").await;

    // An auditor can read users but not change them; the change applies to existing tokens.
    let (_, user) = app.new_user().await;
    let id = app.id_of(access(&user)).await;
    assert_eq!(
        app.get("/api/v1/users", access(&user)).await.status(),
        StatusCode::FORBIDDEN
    );
    let r = app
        .send_json(
            Method::PUT,
            &format!("/api/v1/users/{id}/role"),
            token,
            json!({ "role": "auditor" }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["role"], "auditor");
    assert_eq!(
        app.get("/api/v1/users", access(&user)).await.status(),
        StatusCode::OK
    );
    let r = app
        .send_json(
            Method::DELETE,
            &format!("/api/v1/users/{id}"),
            access(&user),
            json!(null),
        )
        .await;
    assert_problem(r, StatusCode::FORBIDDEN, "forbidden").await;

    let r = app
        .send_json(
            Method::PUT,
            &format!("/api/v1/users/{id}/role"),
            token,
            json!({ "role": "ghost" }),
        )
        .await;
    assert_problem(r, StatusCode::UNPROCESSABLE_ENTITY, "validation").await;
}

#[tokio::test]
async fn the_last_admin_cannot_be_removed() {
    let app = spawn_app().await;
    let (_, admin) = app.new_admin().await;
    let token = access(&admin);
    let id = app.id_of(token).await;
    let r = app
        .send_json(
            Method::DELETE,
            &format!("/api/v1/users/{id}"),
            token,
            json!(null),
        )
        .await;
    assert_problem(r, StatusCode::CONFLICT, "last-admin").await;
    let r = app
        .send_json(
            Method::PUT,
            &format!("/api/v1/users/{id}/role"),
            token,
            json!({ "role": "user" }),
        )
        .await;
    assert_problem(r, StatusCode::CONFLICT, "last-admin").await;
    let r = app
        .send_json(
            Method::PUT,
            &format!("/api/v1/users/{id}"),
            token,
            json!({ "is_active": false }),
        )
        .await;
    assert_problem(r, StatusCode::CONFLICT, "last-admin").await;
    assert_eq!(
        app.get("/api/v1/users", token).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn create_superuser_refuses_a_taken_email() {
    let app = spawn_app().await;
    let (email, _) = app.new_user().await;
    let password =
        service_kit::Password::parse(secrecy::SecretString::from(PASSWORD.to_owned())).unwrap();
    let result = auth::accounts::create_superuser(
        &app.db,
        &app.state.hasher,
        &service_kit::Email::parse(&email).unwrap(),
        &password,
    )
    .await;
    assert!(matches!(result, Err(auth::error::AuthError::EmailTaken)));
}

#[tokio::test]
async fn the_create_superuser_subcommand_reads_the_password_from_stdin() {
    use std::{io::Write as _, process::Stdio};

    let app = spawn_app().await;
    let email = crate::helpers::unique_email();
    let database_url = app.env.get("DATABASE_URL").unwrap().to_owned();
    let redis_url = app.env.get("REDIS_URL").unwrap().to_owned();
    let run = move |email: String| {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_auth"))
            .args(["create-superuser", "--email", &email, "--password-stdin"])
            .env_clear()
            .env("DATABASE_URL", &database_url)
            .env("REDIS_URL", &redis_url)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{PASSWORD}\n").as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let first = tokio::task::spawn_blocking({
        let (email, run) = (email.clone(), run.clone());
        move || run(email)
    })
    .await
    .unwrap();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let tokens = app.login_ok(&email, PASSWORD).await;
    let me: Value = app
        .get("/api/v1/me", access(&tokens))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["role"], "admin");

    let again = tokio::task::spawn_blocking(move || run(email))
        .await
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
}

#[tokio::test]
async fn nobody_grants_or_overrides_more_than_they_hold() {
    let app = spawn_app().await;
    let (_, admin) = app.new_admin().await;
    let admin_token = access(&admin);
    let admin_id = app.id_of(admin_token).await;
    let body = json!({ "name": "support", "permissions": ["users:read", "users:write"] });
    assert_eq!(
        app.send_json(Method::POST, "/api/v1/roles", admin_token, body)
            .await
            .status(),
        StatusCode::CREATED
    );

    let (_, support) = app.new_user().await;
    let support_token = access(&support);
    let support_id = app.id_of(support_token).await;
    let r = app
        .send_json(
            Method::PUT,
            &format!("/api/v1/users/{support_id}/role"),
            admin_token,
            json!({ "role": "support" }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);

    // Support may manage plain users...
    let (_, plain) = app.new_user().await;
    let plain_id = app.id_of(access(&plain)).await;
    let r = app
        .send_json(
            Method::PUT,
            &format!("/api/v1/users/{plain_id}"),
            support_token,
            json!({ "full_name": "Plain" }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    // ...but not make itself admin, nor touch an admin.
    let r = app
        .send_json(
            Method::PUT,
            &format!("/api/v1/users/{support_id}/role"),
            support_token,
            json!({ "role": "admin" }),
        )
        .await;
    assert_problem(r, StatusCode::FORBIDDEN, "forbidden").await;
    let r = app
        .send_json(
            Method::PUT,
            &format!("/api/v1/users/{admin_id}"),
            support_token,
            json!({ "email": "mine@example.com" }),
        )
        .await;
    assert_problem(r, StatusCode::FORBIDDEN, "forbidden").await;
    let r = app
        .send_json(
            Method::DELETE,
            &format!("/api/v1/users/{admin_id}"),
            support_token,
            json!(null),
        )
        .await;
    assert_problem(r, StatusCode::FORBIDDEN, "forbidden").await;
    let me: Value = app
        .get("/api/v1/me", admin_token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["role"], "admin");
    assert_ne!(me["email"], "mine@example.com");
}
