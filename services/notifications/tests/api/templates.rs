//! Templates: versions kept, previews in the best locale, parts that do not compile refused.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{caller, problem_type, spawn_app};

#[tokio::test]
async fn a_new_version_is_used_from_then_on_and_previews_pick_the_best_locale() {
    let app = spawn_app().await;
    let admin = caller(&["admin"]);
    let put = |who, key: &str, locale: &str, body: Value| {
        let request = app
            .client
            .put(app.url(&format!("/api/v1/templates/{key}/{locale}")))
            .json(&body);
        app.send(who, request)
    };
    let preview = |locale: &str, data: Value| {
        let request = app
            .client
            .post(app.url("/api/v1/templates/welcome/preview"))
            .json(&json!({ "locale": locale, "data": data }));
        app.send(&admin, request)
    };

    let before: Value = preview("fr-CA", json!({ "email": "a@example.com" }))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (before["locale"].as_str(), before["version"].as_i64()),
        (Some("fr"), Some(1))
    );
    assert_eq!(before["subject"], "Bienvenue");

    let saved = put(
        &admin,
        "welcome",
        "en",
        json!({ "subject": "Hello {{ name }}", "text": "Hi {{ name }}", "html": "<b>{{ name }}</b>" }),
    )
    .await;
    assert_eq!(saved.status(), StatusCode::CREATED);
    let saved: Value = saved.json().await.unwrap();
    assert_eq!(saved["version"], 2);
    assert_eq!(saved["category"], "general");
    let after: Value = preview("de", json!({ "name": "<Ann>" }))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        after["version"], 2,
        "a locale without a translation gets the default's"
    );
    assert_eq!(after["subject"], "Hello <Ann>");
    assert_eq!(after["html"], "<b>&lt;Ann&gt;</b>");
    let missing = preview("en", json!({})).await;
    assert_eq!(missing.status(), StatusCode::UNPROCESSABLE_ENTITY);

    let broken = put(
        &admin,
        "welcome",
        "en",
        json!({ "subject": "Hi {{ name", "text": "x" }),
    )
    .await;
    assert_eq!(broken.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = broken.json().await.unwrap();
    assert_eq!(problem["errors"][0]["field"], "subject", "{problem}");
    let someone = caller(&["notifier"]);
    let notifier = put(
        &someone,
        "welcome",
        "en",
        json!({ "subject": "a", "text": "b" }),
    )
    .await;
    assert_eq!(notifier.status(), StatusCode::FORBIDDEN);
    let bad_key = put(
        &admin,
        "Bad Key",
        "en",
        json!({ "subject": "a", "text": "b" }),
    )
    .await;
    assert_eq!(bad_key.status(), StatusCode::UNPROCESSABLE_ENTITY);

    let listed: Value = app
        .send(&admin, app.client.get(app.url("/api/v1/templates")))
        .await
        .json()
        .await
        .unwrap();
    let welcome_en = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["key"] == "welcome" && t["locale"] == "en")
        .cloned()
        .unwrap();
    assert_eq!(welcome_en["version"], 2);
    let unknown = app
        .send(
            &admin,
            app.client
                .post(app.url("/api/v1/templates/nope/preview"))
                .json(&json!({})),
        )
        .await;
    assert_eq!(problem_type(unknown).await, "urn:gravity:problem:not-found");
    let not_a_key = app
        .send(
            &admin,
            app.client
                .post(app.url("/api/v1/templates/%00/preview"))
                .json(&json!({})),
        )
        .await;
    assert_eq!(not_a_key.status(), StatusCode::NOT_FOUND);
}
