//! What the auth service tells other services: one event per change, written in the change's
//! transaction, and published on its exchange once a broker is configured.

use std::time::Duration;

use futures_util::StreamExt as _;
use lapin::{
    options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions},
    types::FieldTable,
};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use service_kit::{events::Envelope, testing};
use uuid::Uuid;

use crate::helpers::{access, spawn_app, spawn_with, test_env, PASSWORD};

/// The types of the events about `subject`, in the order they were written.
async fn told(app: &crate::helpers::TestApp, subject: &str) -> Vec<String> {
    sqlx::query_scalar("SELECT event_type FROM event_outbox WHERE subject = $1 ORDER BY id")
        .bind(subject)
        .fetch_all(&app.db)
        .await
        .expect("the outbox")
}

#[tokio::test]
async fn every_change_to_an_account_is_told_once_in_order() {
    let app = spawn_app().await;
    let (_, admin) = app.new_admin().await;
    let admin = access(&admin);
    let (email, tokens) = app.new_user().await;
    let id = app.id_of(access(&tokens)).await;

    let r = app
        .send_json(
            Method::PUT,
            &format!("/api/v1/users/{id}"),
            admin,
            json!({ "full_name": "Ada" }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = app
        .send_json(
            Method::PUT,
            &format!("/api/v1/users/{id}/role"),
            admin,
            json!({ "role": "admin" }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = app
        .client
        .post(app.url("/api/v1/forgot-password"))
        .json(&json!({ "email": email }))
        .send()
        .await
        .expect("forgot");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = app
        .client
        .post(app.url("/api/v1/logout"))
        .bearer_auth(access(&tokens))
        .send()
        .await
        .expect("logout");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    // Demote, then delete: a role change back, and the deletion.
    let r = app
        .send_json(
            Method::PUT,
            &format!("/api/v1/users/{id}/role"),
            admin,
            json!({ "role": "user" }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = app
        .send_json(
            Method::DELETE,
            &format!("/api/v1/users/{id}"),
            admin,
            json!(null),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);

    assert_eq!(
        told(&app, &id).await,
        [
            "auth.user.registered.v1",
            "auth.user.updated.v1",
            "auth.user.role_changed.v1",
            "auth.password_reset.requested.v1",
            "auth.session.revoked.v1",
            "auth.user.role_changed.v1",
            "auth.user.deleted.v1",
        ]
    );
    // A request refused changes nothing and tells nothing.
    let r = app
        .send_json(
            Method::PUT,
            &format!("/api/v1/users/{id}"),
            admin,
            json!({ "full_name": "x" }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(told(&app, &id).await.len(), 7);
    // The reset token is in its event (for the notifications service) and nowhere in clear
    // in the auth service's own tables.
    let data: Value = sqlx::query_scalar(
        "SELECT envelope::jsonb->'data' FROM event_outbox WHERE event_type = 'auth.password_reset.requested.v1' AND subject = $1",
    )
    .bind(&id)
    .fetch_one(&app.db)
    .await
    .expect("the reset event");
    assert_eq!(data["email"], email);
    assert!(
        data["token"].as_str().is_some_and(|t| t.len() >= 32),
        "{data}"
    );
}

#[tokio::test]
async fn with_a_broker_a_registration_reaches_a_subscriber_as_a_cloud_event() {
    let amqp = testing::amqp_url();
    let broker = lapin::Connection::connect(&amqp, lapin::ConnectionProperties::default())
        .await
        .expect("cannot reach RabbitMQ; set TEST_AMQP_URL (see README)");
    let channel = broker.create_channel().await.expect("channel");
    // This test's own exchange, standing in for the platform's `auth`.
    let exchange = format!("auth-test-{}", Uuid::new_v4().simple());
    testing::declare_exchange(&channel, &exchange)
        .await
        .expect("exchange");
    let queue = format!("{exchange}.registered");
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("queue");
    for event_type in [
        "auth.user.registered.v1",
        "auth.password_reset.requested.v1",
    ] {
        channel
            .queue_bind(
                queue.as_str().into(),
                exchange.as_str().into(),
                event_type.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("bind");
    }

    let env = test_env()
        .await
        .with("AMQP_URL", &amqp)
        .with("AMQP_EXCHANGE", &exchange);
    let app = spawn_with(env).await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let email = format!("events-{}@example.com", Uuid::new_v4().simple());
    let r = app
        .client
        .post(app.url("/api/v1/register"))
        .header("traceparent", traceparent)
        .json(&json!({ "email": email, "password": PASSWORD }))
        .send()
        .await
        .expect("register");
    assert_eq!(r.status(), StatusCode::CREATED);

    let mut deliveries = channel
        .basic_consume(
            queue.as_str().into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let delivery = tokio::time::timeout(Duration::from_secs(20), deliveries.next())
        .await
        .expect("the event is published")
        .expect("a delivery")
        .expect("a delivery");
    let envelope = Envelope::decode(&delivery.data).expect("a CloudEvent");
    assert_eq!(envelope.event_type, "auth.user.registered.v1");
    assert_eq!(envelope.source, "/gravity/auth");
    assert_eq!(envelope.data["email"], email);
    assert_eq!(
        envelope.subject.as_deref(),
        envelope.data["user_id"].as_str()
    );
    // The trace goes on, from a span of its own (the event's recording, within the
    // request's span).
    let continued = envelope.traceparent.as_deref().unwrap_or_default();
    assert_eq!(
        continued.split('-').nth(1),
        traceparent.split('-').nth(1),
        "{continued}"
    );
    let parent = continued.split('-').nth(2).unwrap_or_default();
    assert!(
        parent.len() == 16 && parent != "00f067aa0ba902b7",
        "{continued}"
    );
    // The relay deletes the row once the broker confirmed it, which may be just after the
    // delivery.
    let in_outbox = |id: Uuid| {
        let db = app.db.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM event_outbox WHERE event_id = $1")
                .bind(id)
                .fetch_one(&db)
                .await
                .expect("the outbox")
        }
    };
    let mut kept = 1;
    for _ in 0..100 {
        kept = in_outbox(envelope.id).await;
        if kept == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(kept, 0, "gone from the outbox once published");

    // A reset request's event carries its token: once the broker has it, the outbox keeps
    // no copy.
    let r = app
        .client
        .post(app.url("/api/v1/forgot-password"))
        .json(&json!({ "email": email }))
        .send()
        .await
        .expect("forgot");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let delivery = tokio::time::timeout(Duration::from_secs(20), deliveries.next())
        .await
        .expect("the reset event is published")
        .expect("a delivery")
        .expect("a delivery");
    let reset = Envelope::decode(&delivery.data).expect("a CloudEvent");
    assert_eq!(reset.event_type, "auth.password_reset.requested.v1");
    assert!(reset.data["token"].as_str().is_some_and(|t| !t.is_empty()));
    let mut kept = 1;
    for _ in 0..100 {
        kept = in_outbox(reset.id).await;
        if kept == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(kept, 0, "the token is not kept once published");

    let _ = channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await;
    let _ = channel
        .exchange_delete(exchange.as_str().into(), Default::default())
        .await;
}
