//! Text messages through providers speaking Twilio's and Vonage's wire formats (served here on
//! loopback, since the vendors' APIs are not reachable from tests), with failover from one to
//! the next.

use std::sync::{Arc, Mutex};

use axum::{
    extract::State,
    http::{HeaderMap, StatusCode, Uri},
    response::IntoResponse,
    routing::post,
    Router,
};
use serde_json::{json, Value};

use crate::helpers::{caller, spawn_with};

/// What a provider received: path, Authorization header, form fields.
type Seen = Arc<Mutex<Vec<(String, String, Vec<(String, String)>)>>>;

/// A provider on a random port answering every request with `status` and `body`.
async fn provider(status: StatusCode, body: Value) -> (u16, Seen) {
    let seen: Seen = Arc::default();
    let app = Router::new()
        .fallback(post(
            |State((seen, status, body)): State<(Seen, StatusCode, Value)>,
             uri: Uri,
             headers: HeaderMap,
             form: String| async move {
                let fields = url::form_urlencoded::parse(form.as_bytes())
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect();
                let auth = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                seen.lock()
                    .unwrap()
                    .push((uri.path().to_owned(), auth, fields));
                (status, axum::Json(body)).into_response()
            },
        ))
        .with_state((seen.clone(), status, body));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, seen)
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> &'a str {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map_or("", |(_, v)| v.as_str())
}

#[tokio::test]
async fn a_failing_provider_fails_over_to_the_next_and_a_refusal_by_all_fails() {
    let (twilio, twilio_seen) = provider(
        StatusCode::SERVICE_UNAVAILABLE,
        json!({ "code": 20503, "message": "Service unavailable", "status": 503 }),
    )
    .await;
    let (vonage, vonage_seen) = provider(
        StatusCode::OK,
        json!({ "message-count": "1", "messages": [{ "status": "0", "message-id": "v-123" }] }),
    )
    .await;
    let providers = format!(
        "twilio+http://AC1:secret@127.0.0.1:{twilio}/?from=%2B15550000001, vonage+http://key:sec@127.0.0.1:{vonage}/?from=Gravity"
    );
    let app = spawn_with(&[("SMS_PROVIDERS", &providers), ("SEND_RETRY_SECONDS", "1")]).await;
    let notifier = caller(&["notifier"]);
    let body = json!({
        "to": { "phone": "+15551234567" }, "channel": "sms", "template": "welcome",
        "data": { "email": "ann@example.com", "name": "Ann" },
    });
    let r: Value = app
        .notify(&notifier, "s1", body)
        .await
        .json()
        .await
        .unwrap();
    let sent = app.settled(&notifier, r["id"].as_str().unwrap()).await;
    assert_eq!(sent["status"], "sent", "{sent}");
    assert_eq!(sent["provider"], "vonage");
    assert_eq!(sent["attempt_log"][0]["detail"], "vonage 0 v-123");

    let (path, auth, fields) = twilio_seen.lock().unwrap()[0].clone();
    assert_eq!(path, "/2010-04-01/Accounts/AC1/Messages.json");
    assert_eq!(auth, "Basic QUMxOnNlY3JldA==", "the account and its token");
    assert_eq!(field(&fields, "To"), "+15551234567");
    assert_eq!(field(&fields, "From"), "+15550000001");
    assert!(
        field(&fields, "Body").starts_with("Welcome, Ann!"),
        "{fields:?}"
    );
    let (path, _, fields) = vonage_seen.lock().unwrap()[0].clone();
    assert_eq!(path, "/sms/json");
    assert_eq!(
        (
            field(&fields, "api_key"),
            field(&fields, "to"),
            field(&fields, "from")
        ),
        ("key", "15551234567", "Gravity")
    );

    // Both refuse for good: failed, with both answers.
    let (bad, _) = provider(
        StatusCode::BAD_REQUEST,
        json!({ "code": 21211, "message": "Invalid 'To' Phone Number", "status": 400 }),
    )
    .await;
    let (worse, _) = provider(
        StatusCode::OK,
        json!({ "messages": [{ "status": "3", "error-text": "Invalid to number" }] }),
    )
    .await;
    let providers = format!(
        "twilio+http://AC1:secret@127.0.0.1:{bad}/?from=%2B15550000001,vonage+http://key:sec@127.0.0.1:{worse}/?from=Gravity"
    );
    let app = spawn_with(&[("SMS_PROVIDERS", &providers)]).await;
    let body = json!({
        "to": { "phone": "+15551234567" }, "channel": "sms", "template": "welcome",
        "data": { "email": "ann@example.com" },
    });
    let r: Value = app
        .notify(&notifier, "s2", body)
        .await
        .json()
        .await
        .unwrap();
    let failed = app.settled(&notifier, r["id"].as_str().unwrap()).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    let error = failed["last_error"].as_str().unwrap();
    assert!(
        error.contains("Invalid 'To' Phone Number") && error.contains("Invalid to number"),
        "{error}"
    );
}

#[tokio::test]
async fn an_account_is_texted_at_the_number_it_gave_and_sms_to_an_address_is_refused() {
    let (port, seen) = provider(
        StatusCode::CREATED,
        json!({ "sid": "SM1", "status": "queued" }),
    )
    .await;
    let providers = format!("twilio+http://AC9:t@127.0.0.1:{port}/?from=%2B15550000009");
    let app = spawn_with(&[("SMS_PROVIDERS", &providers)]).await;
    let notifier = caller(&["notifier"]);
    let user = caller(&[]);
    app.add_recipient(user.user_id, "bo@example.com").await;
    let to_user = json!({
        "to": { "user_id": user.user_id }, "channel": "sms", "template": "welcome",
        "data": { "email": "bo@example.com" },
    });
    let r = app.notify(&notifier, "u0", to_user.clone()).await;
    assert_eq!(r.status(), 422, "no number yet");
    let prefs = json!({ "opted_out": false, "locale": null, "phone": "+447700900123", "channels": {}, "categories": {} });
    let set = app
        .send(
            &user,
            app.client.put(app.url("/api/v1/preferences")).json(&prefs),
        )
        .await;
    assert_eq!(set.status(), 200);
    let r: Value = app
        .notify(&notifier, "u1", to_user)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(r["address"], "+447700900123");
    let sent = app.settled(&notifier, r["id"].as_str().unwrap()).await;
    assert_eq!(
        (sent["status"].as_str(), sent["provider"].as_str()),
        (Some("sent"), Some("twilio"))
    );
    assert_eq!(field(&seen.lock().unwrap()[0].2, "To"), "+447700900123");

    let wrong = json!({
        "to": { "email": "bo@example.com" }, "channel": "sms", "template": "welcome",
    });
    let r = app.notify(&notifier, "u2", wrong).await;
    assert_eq!(r.status(), 422);
    let problem: Value = r.json().await.unwrap();
    assert_eq!(problem["errors"][0]["field"], "to.email", "{problem}");
}
