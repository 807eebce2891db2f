//! A profile follows its account through the auth service's events, over a real RabbitMQ:
//! made on registration, its activity fed by what happens to the account, gone with it.

use std::time::Duration;

use chrono::Utc;
use events::{
    auth::{PasswordResetRequested, UserDeleted, UserRegistered},
    Event,
};
use lapin::{
    options::BasicPublishOptions, BasicProperties, Channel, Connection, ConnectionProperties,
};
use reqwest::StatusCode;
use service_kit::{
    events::Envelope,
    testing::{amqp_url, declare_exchange},
};
use uuid::Uuid;

use crate::helpers::{caller, spawn_with, TestApp};

/// Publishes `event` as the auth service would, until `done` says it took effect (the
/// subscription may not be bound when the first copy goes; the inbox makes every later copy
/// a no-op).
async fn tell<E: Event>(
    channel: &Channel,
    app: &TestApp,
    event: &E,
    done: impl Fn(StatusCode) -> bool,
    who: &service_kit::Identity,
) {
    let envelope = Envelope::new("auth", event, None).expect("envelope");
    let body = serde_json::to_vec(&envelope).expect("json");
    for _ in 0..100 {
        channel
            .basic_publish(
                "auth".into(),
                E::TYPE.into(),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .expect("publish");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (status, _) = app.get_json(who, "/api/v1/users/me").await;
        if done(status) {
            return;
        }
    }
    panic!("{} never took effect", E::TYPE);
}

#[tokio::test]
async fn a_profile_is_made_fed_and_removed_by_its_accounts_events() {
    let broker = Connection::connect(&amqp_url(), ConnectionProperties::default())
        .await
        .expect("cannot reach RabbitMQ; set TEST_AMQP_URL (see README)");
    let channel = broker.create_channel().await.expect("channel");
    let exchange = format!("test-{}", Uuid::new_v4().simple());
    for name in [exchange.as_str(), "auth", "events"] {
        declare_exchange(&channel, name)
            .await
            .expect("declare an exchange");
    }
    let url = amqp_url();
    let app = spawn_with(&[("AMQP_URL", &url), ("AMQP_EXCHANGE", &exchange)]).await;
    let ada = caller(&[]);

    let registered = UserRegistered {
        user_id: ada.user_id,
        email: "ada@example.com".into(),
        full_name: Some("Ada".into()),
        role: "user".into(),
        registered_at: Utc::now(),
    };
    tell(&channel, &app, &registered, |s| s == StatusCode::OK, &ada).await;
    let (_, profile) = app.get_json(&ada, "/api/v1/users/me").await;
    assert_eq!(profile["email"], "ada@example.com");
    assert_eq!(profile["display_name"], "Ada");

    let reset = PasswordResetRequested {
        user_id: ada.user_id,
        email: "ada@example.com".into(),
        token: "the-secret-token".into(),
        expires_at: Utc::now(),
    };
    let envelope = Envelope::new("auth", &reset, None).expect("envelope");
    channel
        .basic_publish(
            "auth".into(),
            PasswordResetRequested::TYPE.into(),
            BasicPublishOptions::default(),
            &serde_json::to_vec(&envelope).expect("json"),
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .expect("publish");
    let mut feed = serde_json::Value::Null;
    for _ in 0..100 {
        (_, feed) = app.get_json(&ada, "/api/v1/users/me/activity").await;
        if feed["items"].as_array().is_some_and(|i| i.len() == 2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        feed["items"][0]["event_type"],
        PasswordResetRequested::TYPE,
        "{feed}"
    );
    assert_eq!(feed["items"][1]["event_type"], UserRegistered::TYPE);
    assert!(
        !feed.to_string().contains("the-secret-token"),
        "never the token"
    );

    let deleted = UserDeleted {
        user_id: ada.user_id,
        deleted_at: Utc::now(),
    };
    tell(
        &channel,
        &app,
        &deleted,
        |s| s == StatusCode::NOT_FOUND,
        &ada,
    )
    .await;
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM activity WHERE user_id = $1")
        .bind(ada.user_id)
        .fetch_one(&app.db)
        .await
        .expect("count");
    assert_eq!(left, 0, "the account's activity goes with it");

    for queue in ["accounts", "privacy", "answers"]
        .into_iter()
        .flat_map(|q| [q.to_owned(), format!("{q}.retry"), format!("{q}.parked")])
    {
        let _ = channel
            .queue_delete(
                format!("{exchange}.{queue}").as_str().into(),
                Default::default(),
            )
            .await;
    }
    for name in [format!("{exchange}.retry"), exchange] {
        let _ = channel
            .exchange_delete(name.as_str().into(), Default::default())
            .await;
    }
}
