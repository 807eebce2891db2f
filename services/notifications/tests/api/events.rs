//! The mail the platform's events cause, through a real RabbitMQ and a real SMTP server: a
//! welcome mail when an account registers, the reset mail (with its token) when a reset is
//! asked for, once each however often the event comes; a deleted account is forgotten.

use std::time::Duration;

use events::{
    auth::{PasswordResetRequested, UserDeleted, UserRegistered},
    Event,
};
use lapin::{
    options::BasicPublishOptions, BasicProperties, Channel, Connection, ConnectionProperties,
};
use service_kit::{
    events::Envelope,
    testing::{amqp_url, declare_exchange},
};
use uuid::Uuid;

use crate::helpers::{caller, caught, fresh_address, mail, smtp_url, spawn_with, TestApp};

/// Publishes `event` as the auth service would until `done` says it took effect (the
/// subscription may not be bound yet; the inbox makes every copy after the first a no-op).
async fn publish_until<E: Event>(channel: &Channel, app: &TestApp, event: &E, done: &str) -> Uuid {
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
        let seen: bool = sqlx::query_scalar(done)
            .fetch_one(&app.db)
            .await
            .expect("a check");
        if seen {
            return envelope.id;
        }
    }
    panic!("{} did not take effect", E::TYPE);
}

#[tokio::test]
async fn registering_sends_a_welcome_and_a_reset_request_sends_its_token_once() {
    let broker = Connection::connect(&amqp_url(), ConnectionProperties::default())
        .await
        .expect("cannot reach RabbitMQ; set TEST_AMQP_URL (see README)");
    let channel = broker.create_channel().await.expect("channel");
    let exchange = format!("test-{}", Uuid::new_v4().simple());
    for name in [exchange.as_str(), "auth"] {
        declare_exchange(&channel, name)
            .await
            .expect("declare an exchange");
    }
    let (url, smtp) = (amqp_url(), smtp_url());
    let app = spawn_with(&[
        ("AMQP_URL", &url),
        ("AMQP_EXCHANGE", &exchange),
        ("SMTP_URL", &smtp),
        (
            "PASSWORD_RESET_URL",
            "https://app.example.com/reset?token={token}",
        ),
    ])
    .await;

    let user = Uuid::new_v4();
    let address = fresh_address("new");
    let registered = UserRegistered {
        user_id: user,
        email: address.clone(),
        full_name: Some("Ann Smith".into()),
        role: "user".into(),
        registered_at: chrono::Utc::now(),
    };
    let check = format!(
        "SELECT count(*) > 0 FROM messages WHERE user_id = '{user}' AND template = 'welcome'"
    );
    publish_until(&channel, &app, &registered, &check).await;
    let mails = caught(&address, 1).await;
    assert_eq!(mails[0]["Subject"], "Welcome, Ann Smith");

    let token = format!("tok-{}", Uuid::new_v4().simple());
    let reset = PasswordResetRequested {
        user_id: user,
        email: address.clone(),
        token: token.clone(),
        expires_at: chrono::Utc::now() + chrono::Duration::minutes(30),
    };
    let check = format!(
        "SELECT count(*) > 0 FROM messages WHERE user_id = '{user}' AND template = 'password_reset'"
    );
    publish_until(&channel, &app, &reset, &check).await;
    let mails = caught(&address, 2).await;
    let got = mail(mails[0]["ID"].as_str().unwrap()).await;
    assert_eq!(got["Subject"], "Reset your password");
    let text = got["Text"].as_str().unwrap();
    assert!(
        text.contains(&format!("https://app.example.com/reset?token={token}")),
        "{text}"
    );
    // However often the events came, one message each.
    let ids: Vec<Uuid> =
        sqlx::query_scalar("SELECT id FROM messages WHERE user_id = $1 ORDER BY id")
            .bind(user)
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert_eq!(ids.len(), 2);
    let sent = app.settled(&caller(&["admin"]), &ids[1].to_string()).await;
    assert_eq!(sent["status"], "sent", "{sent}");
    assert_eq!(sent["origin"], "auth.password_reset.requested.v1");
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM messages WHERE data::text LIKE $1")
        .bind(format!("%{token}%"))
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(kept, 0, "the token is not kept once the mail is sent");

    let deleted = UserDeleted {
        user_id: user,
        deleted_at: chrono::Utc::now(),
    };
    let check = format!("SELECT count(*) = 0 FROM recipients WHERE user_id = '{user}'");
    publish_until(&channel, &app, &deleted, &check).await;

    for queue in ["accounts", "accounts.retry", "accounts.parked"] {
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
