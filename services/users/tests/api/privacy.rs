//! An account's export and erasure, coordinated over a real RabbitMQ: this service asks
//! every service, answers for itself through the same events, and gathers every answer,
//! including one from a service it has no code for (`orders`, told here as that service would).

use std::time::Duration;

use events::privacy::{ErasureAnswered, Exported, Outcome};
use lapin::{
    options::{BasicPublishOptions, ExchangeBindOptions},
    types::FieldTable,
    BasicProperties, Channel, Connection, ConnectionProperties,
};
use reqwest::StatusCode;
use serde_json::{json, Value};
use service_kit::{
    events::Envelope,
    testing::{amqp_url, declare_exchange, until_consumed},
};
use uuid::Uuid;

use crate::helpers::{caller, problem_type, spawn_with, TestApp};

/// Polls `path` as `who` until `done` holds of its body; the last body.
async fn until(
    app: &TestApp,
    who: &service_kit::Identity,
    path: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let mut last = Value::Null;
    for _ in 0..150 {
        let (status, body) = app.get_json(who, path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        if done(&body) {
            return body;
        }
        last = body;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{path} never got there: {last}");
}

/// Tells `reply` as the `orders` service would: on its own exchange, which the platform's
/// every-event exchange is bound to.
async fn tell_as_orders<R: events::Reply>(channel: &Channel, orders: &str, reply: &R) {
    let envelope = Envelope::reply("orders", reply, None).expect("envelope");
    channel
        .basic_publish(
            orders.into(),
            envelope.event_type.as_str().into(),
            BasicPublishOptions::default(),
            &serde_json::to_vec(&envelope).expect("json"),
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .expect("publish");
}

#[tokio::test]
async fn an_export_gathers_every_services_part_and_an_erasure_reports_who_confirmed() {
    let broker = Connection::connect(&amqp_url(), ConnectionProperties::default())
        .await
        .expect("cannot reach RabbitMQ; set TEST_AMQP_URL (see README)");
    let channel = broker.create_channel().await.expect("channel");
    // This test's platform: the users service's exchange, another service's, and the
    // exchange every event passes through, bound as `gravity up` binds them.
    let id = Uuid::new_v4().simple().to_string();
    let (users, orders, every) = (
        format!("test-{id}"),
        format!("test-{id}-orders"),
        format!("test-{id}-every"),
    );
    for name in [users.as_str(), orders.as_str(), every.as_str(), "auth"] {
        declare_exchange(&channel, name).await.expect("declare");
    }
    for source in [&users, &orders] {
        channel
            .exchange_bind(
                every.as_str().into(),
                source.as_str().into(),
                "#".into(),
                ExchangeBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("bind to every event");
    }
    let url = amqp_url();
    let app = spawn_with(&[
        ("AMQP_URL", &url),
        ("AMQP_EXCHANGE", &users),
        ("AMQP_EVERY_EVENT_EXCHANGE", &every),
        ("PRIVACY_SERVICES", "users,orders"),
    ])
    .await;
    for queue in ["privacy", "answers"] {
        assert!(
            until_consumed(&broker, &format!("{users}.{queue}")).await,
            "{queue}"
        );
    }
    let ada = caller(&[]);
    app.seed(&ada, "ada@example.com").await;

    // Nothing asked yet.
    let (status, _) = app.get_json(&ada, "/api/v1/users/me/export").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let asked = app
        .send(&ada, app.client.post(app.url("/api/v1/users/me/export")))
        .await;
    assert_eq!(asked.status(), StatusCode::ACCEPTED);
    assert_eq!(asked.headers()["location"], "export", "this same path");
    let asked: Value = asked.json().await.expect("json");
    assert_eq!(asked["pending"], json!(["orders", "users"]));
    assert_eq!(asked["complete"], false);
    let export_id: Uuid = asked["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("id");

    // This service answers for itself through the broker; `orders` has not answered yet.
    let export = until(&app, &ada, "/api/v1/users/me/export", |e| {
        !e["services"]["users"].is_null()
    })
    .await;
    assert_eq!(
        export["services"]["users"]["data"]["profile"]["email"],
        "ada@example.com"
    );
    assert_eq!(export["pending"], json!(["orders"]));
    assert_eq!(export["complete"], false);

    let part = json!({ "orders": [{ "id": "o-1", "total": "12.50" }] });
    let exported = Exported {
        export_id,
        user_id: ada.user_id,
        data: part.clone(),
    };
    // An answer for someone else's export, or for an export that does not exist, is dropped.
    let stray = Exported {
        export_id: Uuid::now_v7(),
        user_id: ada.user_id,
        data: json!({ "stray": true }),
    };
    tell_as_orders(&channel, &orders, &stray).await;
    tell_as_orders(&channel, &orders, &exported).await;
    let export = until(&app, &ada, "/api/v1/users/me/export", |e| {
        e["complete"] == true
    })
    .await;
    assert_eq!(export["services"]["orders"]["data"], part);
    assert_eq!(export["pending"], json!([]));
    let parts: i64 = sqlx::query_scalar("SELECT count(*) FROM export_parts")
        .fetch_one(&app.db)
        .await
        .expect("count");
    assert_eq!(parts, 2, "the stray answer is not kept");

    // Erasure needs the account's email as confirmation; a wrong one erases nothing.
    let wrong = app
        .send(
            &ada,
            app.client
                .post(app.url("/api/v1/users/me/erasure"))
                .json(&json!({ "confirm": "someone@example.com" })),
        )
        .await;
    assert_eq!(wrong.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = app.get_json(&ada, "/api/v1/users/me").await;
    assert_eq!(status, StatusCode::OK, "nothing was erased");

    let erase = || {
        app.send(
            &ada,
            app.client
                .post(app.url("/api/v1/users/me/erasure"))
                .json(&json!({ "confirm": "ADA@example.com" })),
        )
    };
    let asked = erase().await;
    assert_eq!(asked.status(), StatusCode::ACCEPTED);
    let location = reqwest::Url::parse(&app.url("/api/v1/users/me/erasure"))
        .and_then(|base| base.join(asked.headers()["location"].to_str().unwrap_or("")))
        .expect("a Location relative to the request")
        .path()
        .to_owned();
    let asked: Value = asked.json().await.expect("json");
    assert_eq!(asked["status"], "pending");
    assert_eq!(
        location,
        format!("/api/v1/erasures/{}", asked["id"].as_str().unwrap_or(""))
    );
    let erasure_id: Uuid = asked["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("id");

    // Asking again answers the same erasure.
    let again: Value = erase().await.json().await.expect("json");
    assert_eq!(again["id"], asked["id"]);

    let report = until(&app, &ada, &location, |r| {
        !r["answers"].as_array().is_none_or(Vec::is_empty)
    })
    .await;
    assert_eq!(report["answers"][0]["service"], "users");
    assert_eq!(report["answers"][0]["outcome"], "erased");
    assert_eq!(report["pending"], json!(["orders"]));
    assert_eq!(report["status"], "pending");
    let (status, _) = app.get_json(&ada, "/api/v1/users/me").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "the profile is gone");
    let held: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM exports WHERE user_id = $1)
              + (SELECT count(*) FROM profiles WHERE user_id = $1)",
    )
    .bind(ada.user_id)
    .fetch_one(&app.db)
    .await
    .expect("count");
    assert_eq!(held, 0, "neither profile nor export is kept");

    // While it is under way nothing more is gathered.
    let refused = app
        .send(&ada, app.client.post(app.url("/api/v1/users/me/export")))
        .await;
    assert_eq!(refused.status(), StatusCode::CONFLICT);
    assert_eq!(
        problem_type(refused).await,
        "urn:gravity:problem:erasure-in-progress"
    );

    let kept = ErasureAnswered {
        erasure_id,
        user_id: ada.user_id,
        outcome: Outcome::Retained,
        detail: "invoices are kept for ten years".into(),
    };
    tell_as_orders(&channel, &orders, &kept).await;
    let report = until(&app, &ada, &location, |r| r["status"] == "complete").await;
    let orders_answer = report["answers"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["service"] == "orders"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(orders_answer["outcome"], "retained");
    assert_eq!(orders_answer["detail"], "invoices are kept for ten years");

    // Someone else cannot read it; an admin can.
    let (status, _) = app.get_json(&caller(&[]), &location).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app.get_json(&caller(&["admin"]), &location).await;
    assert_eq!(status, StatusCode::OK);

    for queue in ["accounts", "privacy", "answers"] {
        for suffix in ["", ".retry", ".parked"] {
            let _ = channel
                .queue_delete(
                    format!("{users}.{queue}{suffix}").as_str().into(),
                    Default::default(),
                )
                .await;
        }
    }
    for name in [format!("{users}.retry"), users, orders, every] {
        let _ = channel
            .exchange_delete(name.as_str().into(), Default::default())
            .await;
    }
}

#[tokio::test]
async fn admins_erase_any_account_and_others_may_not() {
    let app = spawn_with(&[]).await;
    let ada = caller(&[]);
    app.seed(&ada, "ada@example.com").await;
    let path = format!("/api/v1/users/{}/erasure", ada.user_id);
    let body = json!({ "confirm": "ada@example.com" });
    let refused = app
        .send(&caller(&[]), app.client.post(app.url(&path)).json(&body))
        .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let admin = caller(&["admin"]);
    let missing = app
        .send(
            &admin,
            app.client
                .post(app.url(&format!("/api/v1/users/{}/erasure", Uuid::now_v7())))
                .json(&body),
        )
        .await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let asked = app
        .send(&admin, app.client.post(app.url(&path)).json(&body))
        .await;
    assert_eq!(asked.status(), StatusCode::ACCEPTED);
    let report: Value = asked.json().await.expect("json");
    assert_eq!(report["requested_by"], admin.user_id.to_string());
    assert_eq!(report["user_id"], ada.user_id.to_string());
    // Without a broker the request waits in the outbox, in the transaction that made it.
    let told: Vec<String> = sqlx::query_scalar("SELECT event_type FROM event_outbox")
        .fetch_all(&app.db)
        .await
        .expect("outbox");
    assert_eq!(told, ["users.erasure.requested.v1"]);
    // The account itself may follow it.
    let (status, _) = app
        .get_json(
            &ada,
            &format!("/api/v1/erasures/{}", report["id"].as_str().unwrap_or("")),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
}
