//! Sending through the API to a real SMTP server (the platform's mail catcher): once per
//! Idempotency-Key, tracked attempt by attempt, with preferences, opt-outs and one-click
//! unsubscribe honoured, and schedules and digests kept.

use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{
    caller, caught, fresh_address, mail, problem_type, smtp_url, spawn_app, spawn_with,
};

fn welcome(address: &str) -> Value {
    json!({
        "to": { "email": address },
        "template": "welcome",
        "data": { "email": address, "name": "Ann" },
    })
}

#[tokio::test]
async fn a_message_is_sent_once_per_key_tracked_and_its_unsubscribe_link_works() {
    let app = spawn_app().await;
    let notifier = caller(&["notifier"]);
    let address = fresh_address("ann");

    let first = app.notify(&notifier, "order-1", welcome(&address)).await;
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["template_version"], 1);
    let id = first["id"].as_str().unwrap().to_owned();

    // The same request again: the same message, and nothing more is sent.
    let replay = app.notify(&notifier, "order-1", welcome(&address)).await;
    assert_eq!(replay.status(), StatusCode::ACCEPTED);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    let replay: Value = replay.json().await.unwrap();
    assert_eq!(replay["id"], first["id"]);
    // The key with another request: refused.
    let other = welcome(&fresh_address("bob"));
    let reused = app.notify(&notifier, "order-1", other).await;
    assert_eq!(reused.status(), StatusCode::CONFLICT);
    assert_eq!(
        problem_type(reused).await,
        "urn:gravity:problem:idempotency-key-reused"
    );

    // A replay answers as the first request did, even once the template has changed.
    let admin = caller(&["admin"]);
    let changed = app
        .send(
            &admin,
            app.client
                .put(app.url("/api/v1/templates/welcome/en"))
                .json(&json!({ "subject": "Hi {{ nickname }}", "text": "{{ nickname }}", "category": "account" })),
        )
        .await;
    assert_eq!(changed.status(), StatusCode::CREATED);
    let again = app.notify(&notifier, "order-1", welcome(&address)).await;
    assert_eq!(again.status(), StatusCode::ACCEPTED);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);

    let sent = app.settled(&notifier, &id).await;
    assert_eq!(sent["status"], "sent", "{sent}");
    assert_eq!(
        sent["subject"], "Welcome, Ann",
        "sent with the version it was accepted with"
    );
    assert_eq!(sent["attempts"], 1);
    assert_eq!(sent["attempt_log"][0]["outcome"], "sent");
    assert!(
        sent["attempt_log"][0]["detail"]
            .as_str()
            .unwrap()
            .starts_with("250"),
        "the server's answer is kept: {sent}"
    );

    let mails = caught(&address, 1).await;
    assert_eq!(mails.len(), 1, "sent once: {mails:?}");
    let got = mail(mails[0]["ID"].as_str().unwrap()).await;
    assert_eq!(got["Subject"], "Welcome, Ann");
    assert!(
        got["Text"].as_str().unwrap().contains("Your account"),
        "{got}"
    );
    assert!(
        got["HTML"]
            .as_str()
            .unwrap()
            .contains("<p>Welcome, Ann!</p>"),
        "{got}"
    );
    assert_eq!(
        got["Headers"]["List-Unsubscribe-Post"][0],
        "List-Unsubscribe=One-Click"
    );
    let link = got["Headers"]["List-Unsubscribe"][0]
        .as_str()
        .unwrap()
        .trim_matches(['<', '>'])
        .to_owned();
    let token = link
        .strip_prefix("http://localhost:8080/notifications/api/v1/unsubscribe/")
        .unwrap_or_else(|| panic!("a link through the gateway: {link}"));

    // Who may see it: its sender and admins.
    let stranger = app
        .send(
            &caller(&["notifier"]),
            app.client
                .get(app.url(&format!("/api/v1/notifications/{id}"))),
        )
        .await;
    assert_eq!(stranger.status(), StatusCode::NOT_FOUND);
    let admin = app
        .send(
            &caller(&["admin"]),
            app.client
                .get(app.url(&format!("/api/v1/notifications/{id}"))),
        )
        .await;
    assert_eq!(admin.status(), StatusCode::OK);
    let mine: Value = app
        .send(
            &notifier,
            app.client.get(app.url("/api/v1/notifications?status=sent")),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(mine["messages"].as_array().unwrap().len(), 1, "{mine}");

    // Opening the link changes nothing; the one-click POST unsubscribes, with no token.
    let page = app
        .client
        .get(app.url(&format!("/api/v1/unsubscribe/{token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    // The template's new version prints `nickname`, which later requests must give.
    let welcome_v2 = |a: &str| {
        let mut body = welcome(a);
        body["data"]["nickname"] = json!("Annie");
        body
    };
    let next = app.notify(&notifier, "order-2", welcome_v2(&address)).await;
    let next: Value = next.json().await.unwrap();
    assert_eq!(
        app.settled(&notifier, next["id"].as_str().unwrap()).await["status"],
        "sent"
    );
    let clicked = app
        .client
        .post(app.url(&format!("/api/v1/unsubscribe/{token}")))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(clicked.status(), StatusCode::OK);
    let clicked: Value = clicked.json().await.unwrap();
    assert_eq!(clicked["category"], "account");
    assert_eq!(clicked["address"], address);
    let after = app.notify(&notifier, "order-3", welcome_v2(&address)).await;
    let after: Value = after.json().await.unwrap();
    let after = app.settled(&notifier, after["id"].as_str().unwrap()).await;
    assert_eq!(after["status"], "suppressed", "{after}");
    assert_eq!(
        caught(&address, 2).await.len(),
        2,
        "nothing sent after unsubscribing"
    );
    let forged = app
        .client
        .post(app.url("/api/v1/unsubscribe/not-a-token"))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn bad_requests_and_missing_channels_are_refused_with_what_to_do() {
    let app = spawn_app().await;
    let notifier = caller(&["notifier"]);
    let address = fresh_address("refused");

    let plain = app.notify(&caller(&[]), "k", welcome(&address)).await;
    assert_eq!(plain.status(), StatusCode::FORBIDDEN);
    let no_key = app
        .send(
            &notifier,
            app.client
                .post(app.url("/api/v1/notifications"))
                .json(&welcome(&address)),
        )
        .await;
    assert_eq!(no_key.status(), StatusCode::UNPROCESSABLE_ENTITY);
    for (body, field) in [
        (
            json!({ "to": { "email": address }, "template": "nope" }),
            "template",
        ),
        (
            json!({ "to": { "email": address }, "template": "password_reset", "data": { "email": address } }),
            "data",
        ),
        (
            json!({ "to": { "email": address, "user_id": Uuid::new_v4() }, "template": "welcome" }),
            "to",
        ),
        (
            json!({ "to": { "email": "nobody" }, "template": "welcome" }),
            "to.email",
        ),
        (
            json!({ "to": { "user_id": Uuid::new_v4() }, "template": "welcome" }),
            "to.user_id",
        ),
    ] {
        let r = app
            .notify(&notifier, &Uuid::new_v4().to_string(), body.clone())
            .await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        let problem: Value = r.json().await.unwrap();
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
    }
    let sms = json!({ "to": { "phone": "+15551234567" }, "channel": "sms", "template": "welcome" });
    let r = app.notify(&notifier, "sms", sms).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        problem_type(r).await,
        "urn:gravity:problem:channel-unavailable"
    );

    let mute = spawn_with(&[]).await;
    let r = mute.notify(&notifier, "k", welcome(&address)).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = r.json().await.unwrap();
    assert!(
        problem["detail"].as_str().unwrap().contains("SMTP_URL"),
        "{problem}"
    );
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM messages")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(count, 0, "nothing refused was queued");
}

#[tokio::test]
async fn a_refusal_fails_at_once_and_a_deferral_is_retried_then_given_up() {
    let smtp = smtp_url();
    let app = spawn_with(&[
        ("SMTP_URL", &smtp),
        ("SEND_RETRY_SECONDS", "1"),
        ("SEND_MAX_ATTEMPTS", "2"),
    ])
    .await;
    let notifier = caller(&["notifier"]);

    let refused = fresh_address("reject-");
    let r: Value = app
        .notify(&notifier, "a", welcome(&refused))
        .await
        .json()
        .await
        .unwrap();
    let failed = app.settled(&notifier, r["id"].as_str().unwrap()).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["attempts"], 1);
    assert!(
        failed["last_error"].as_str().unwrap().contains("550"),
        "{failed}"
    );

    let deferred = fresh_address("defer-");
    let r: Value = app
        .notify(&notifier, "b", welcome(&deferred))
        .await
        .json()
        .await
        .unwrap();
    let gone = app.settled(&notifier, r["id"].as_str().unwrap()).await;
    assert_eq!(gone["status"], "given_up", "{gone}");
    let outcomes: Vec<&str> = gone["attempt_log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["retry", "given_up"]);
    assert!(
        gone["last_error"].as_str().unwrap().contains("451"),
        "{gone}"
    );
    // A message done with keeps no data (a reset mail's would hold its token).
    let data: Option<Value> = sqlx::query_scalar("SELECT data FROM messages WHERE id = $1")
        .bind(r["id"].as_str().unwrap().parse::<Uuid>().unwrap())
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(data, None);
}

#[tokio::test]
async fn preferences_are_honoured_but_critical_mail_goes_out_in_the_users_locale() {
    let app = spawn_app().await;
    let notifier = caller(&["notifier"]);
    let user = caller(&[]);
    let address = fresh_address("pref");
    app.add_recipient(user.user_id, &address).await;
    let to_user = |template: &str, data: Value| json!({ "to": { "user_id": user.user_id }, "template": template, "data": data });
    let set = |prefs: Value| {
        app.send(
            &user,
            app.client.put(app.url("/api/v1/preferences")).json(&prefs),
        )
    };

    let r = set(json!({ "opted_out": true, "locale": "fr-CA", "channels": {}, "categories": {} }))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let r: Value = app
        .notify(
            &notifier,
            "w1",
            to_user("welcome", json!({ "email": address })),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        app.settled(&notifier, r["id"].as_str().unwrap()).await["status"],
        "suppressed"
    );
    let reset = json!({ "email": address, "token": "t0k3n", "reset_url": "https://x.example/r", "expires_at": "soon" });
    let r: Value = app
        .notify(&notifier, "r1", to_user("password_reset", reset))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        r["locale"], "fr",
        "the user's language, as no fr-CA version exists"
    );
    let sent = app.settled(&notifier, r["id"].as_str().unwrap()).await;
    assert_eq!(
        sent["status"], "sent",
        "critical mail ignores the opt-out: {sent}"
    );
    let mails = caught(&address, 1).await;
    assert_eq!(mails[0]["Subject"], "Réinitialisez votre mot de passe");

    set(json!({ "opted_out": false, "locale": null, "channels": {}, "categories": { "account": false } })).await;
    let r: Value = app
        .notify(
            &notifier,
            "w2",
            to_user("welcome", json!({ "email": address })),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        app.settled(&notifier, r["id"].as_str().unwrap()).await["status"],
        "suppressed"
    );
    set(json!({ "opted_out": false, "locale": null, "channels": { "email": false }, "categories": {} })).await;
    let r: Value = app
        .notify(
            &notifier,
            "w3",
            to_user("welcome", json!({ "email": address })),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        app.settled(&notifier, r["id"].as_str().unwrap()).await["status"],
        "suppressed"
    );

    let bad = set(json!({ "opted_out": false, "locale": null, "channels": { "pigeon": true }, "categories": {} })).await;
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let stranger = app
        .send(&caller(&[]), app.client.get(app.url("/api/v1/preferences")))
        .await;
    assert_eq!(stranger.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_scheduled_message_waits_and_a_digest_gathers_its_window_into_one_mail() {
    let app = spawn_app().await;
    let notifier = caller(&["notifier"]);
    let address = fresh_address("later");
    let at = chrono::Utc::now() + chrono::Duration::seconds(2);
    let mut body = welcome(&address);
    body["send_at"] = json!(at);
    let r: Value = app.notify(&notifier, "s", body).await.json().await.unwrap();
    assert_eq!(r["status"], "scheduled");
    let sent = app.settled(&notifier, r["id"].as_str().unwrap()).await;
    assert_eq!(sent["status"], "sent");
    let sent_at: chrono::DateTime<chrono::Utc> = sent["sent_at"].as_str().unwrap().parse().unwrap();
    assert!(sent_at >= at, "not before its time: {sent}");

    let digested = fresh_address("digest");
    let mut ids = Vec::new();
    for (i, text) in ["Ann commented", "Bob liked", "Cid shared"]
        .iter()
        .enumerate()
    {
        let body = json!({
            "to": { "email": digested },
            "template": "digest",
            "data": { "text": text },
            "digest": { "key": "activity", "window_seconds": 2 },
        });
        let r: Value = app
            .notify(&notifier, &format!("d{i}"), body)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(r["status"], "scheduled");
        ids.push(r["id"].clone());
    }
    assert!(ids.iter().all(|id| *id == ids[0]), "one digest: {ids:?}");
    // Another sender's items under the same key gather apart, into a message of its own.
    let someone = caller(&["notifier"]);
    let other = json!({
        "to": { "email": digested },
        "template": "digest",
        "data": { "text": "Eve wrote" },
        "digest": { "key": "activity", "window_seconds": 2 },
    });
    let apart: Value = app
        .notify(&someone, "d-other", other)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(apart["status"], "scheduled", "{apart}");
    assert_ne!(apart["id"], ids[0], "{apart}");
    let sent = app.settled(&notifier, ids[0].as_str().unwrap()).await;
    assert_eq!(sent["status"], "sent");
    assert_eq!(
        app.settled(&someone, apart["id"].as_str().unwrap()).await["status"],
        "sent"
    );
    let mails = caught(&digested, 2).await;
    assert_eq!(mails.len(), 2);
    assert!(
        mails.iter().any(|m| m["Subject"] == "1 new notification"),
        "{mails:?}"
    );
    let digest = mails
        .iter()
        .find(|m| m["Subject"] == "3 new notifications")
        .unwrap_or_else(|| panic!("the digest among {mails:?}"));
    let got = mail(digest["ID"].as_str().unwrap()).await;
    assert_eq!(got["Subject"], "3 new notifications");
    let text = got["Text"].as_str().unwrap();
    for item in ["Ann commented", "Bob liked", "Cid shared"] {
        assert!(text.contains(item), "{text}");
    }
}
