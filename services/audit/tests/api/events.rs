//! Every event of every service reaches the log once, through a real RabbitMQ, with its
//! secrets removed.

use std::time::Duration;

use chrono::Utc;
use events::{
    auth::{PasswordResetRequested, UserRegistered},
    Event as _,
};
use lapin::{options::BasicPublishOptions, BasicProperties, Connection, ConnectionProperties};
use service_kit::{
    events::Envelope,
    testing::{amqp_url, declare_exchange},
};
use uuid::Uuid;

use crate::helpers::{caller, spawn_with};

#[tokio::test]
async fn every_event_is_recorded_once_without_its_secrets() {
    let broker = Connection::connect(&amqp_url(), ConnectionProperties::default())
        .await
        .expect("cannot reach RabbitMQ; set TEST_AMQP_URL (see README)");
    let channel = broker.create_channel().await.expect("channel");
    // This test's own exchanges: the service's, and the one every event passes through.
    let id = Uuid::new_v4().simple().to_string();
    let exchange = format!("test-{id}");
    let every = format!("test-every-{id}");
    for name in [exchange.as_str(), every.as_str()] {
        declare_exchange(&channel, name).await.expect("declare");
    }
    let url = amqp_url();
    let app = spawn_with(&[
        ("AMQP_URL", &url),
        ("AMQP_EXCHANGE", &exchange),
        ("AMQP_EVERY_EVENT_EXCHANGE", &every),
    ])
    .await;

    let user = Uuid::now_v7();
    let registered = Envelope::new(
        "auth",
        &UserRegistered {
            user_id: user,
            email: "ada@example.com".into(),
            full_name: None,
            role: "user".into(),
            registered_at: Utc::now(),
        },
        None,
    )
    .expect("envelope");
    let reset = Envelope::new(
        "auth",
        &PasswordResetRequested {
            user_id: user,
            email: "ada@example.com".into(),
            token: "the-secret-token".into(),
            expires_at: Utc::now(),
        },
        None,
    )
    .expect("envelope");
    // The subscription may not be bound yet when the first copies go out, so they are sent
    // until both are recorded (the inbox makes every copy after the first a no-op).
    let mut recorded = 0;
    for _ in 0..100 {
        for (envelope, event_type) in [
            (&registered, UserRegistered::TYPE),
            (&reset, PasswordResetRequested::TYPE),
        ] {
            channel
                .basic_publish(
                    every.as_str().into(),
                    event_type.into(),
                    BasicPublishOptions::default(),
                    &serde_json::to_vec(envelope).expect("json"),
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await
                .expect("publish");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        recorded = sqlx::query_scalar::<_, i64>(
            "SELECT count(DISTINCT event_id) FROM audit_records WHERE event_id = ANY($1)",
        )
        .bind([registered.id, reset.id])
        .fetch_one(&app.db)
        .await
        .expect("count");
        if recorded == 2 {
            break;
        }
    }
    assert_eq!(recorded, 2, "both events recorded");
    // A moment for any redelivered copy to land, then: each once.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_records WHERE action LIKE 'auth.%'")
            .fetch_one(&app.db)
            .await
            .expect("count");
    assert_eq!(rows, 2, "each event once");

    let auditor = caller(&["auditor"]);
    let page = app
        .get_json(&auditor, &format!("/api/v1/records?target={user}"))
        .await;
    let records = page["records"].as_array().expect("records");
    assert_eq!(records.len(), 2, "{page}");
    let reset_record = &records[0];
    assert_eq!(reset_record["action"], PasswordResetRequested::TYPE);
    assert_eq!(reset_record["actor"], user.to_string());
    assert_eq!(reset_record["source"], "auth");
    assert_eq!(reset_record["data"]["token"], "[redacted]");
    let text: String = sqlx::query_scalar("SELECT string_agg(data, ' ') FROM audit_records")
        .fetch_one(&app.db)
        .await
        .expect("data");
    assert!(
        !text.contains("the-secret-token"),
        "the token is never stored"
    );
    let verdict = app.get_json(&auditor, "/api/v1/verify").await;
    assert_eq!(verdict["ok"], true, "{verdict}");

    for queue in ["all", "all.retry", "all.parked"] {
        let _ = channel
            .queue_delete(
                format!("{exchange}.{queue}").as_str().into(),
                Default::default(),
            )
            .await;
    }
    for name in [format!("{exchange}.retry"), exchange, every] {
        let _ = channel
            .exchange_delete(name.as_str().into(), Default::default())
            .await;
    }
}
