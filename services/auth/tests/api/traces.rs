//! Spans over OTLP, as a collector receives them: a request's server span, continuing the
//! caller's `traceparent`, with its database queries, its Redis commands and the event it
//! records as children; nothing for unsampled traces nor for the platform's health checks.

use std::time::Duration;

use serde_json::Value;
use service_kit::testing::OtlpReceiver;
use uuid::Uuid;

use crate::helpers::{spawn_app, unique_email, TestApp, PASSWORD};

const CALLER_SPAN: &str = "00f067aa0ba902b7";

fn traceparent(flags: &str) -> (String, String) {
    let trace = format!("{:032x}", Uuid::new_v4().as_u128());
    (trace.clone(), format!("00-{trace}-{CALLER_SPAN}-{flags}"))
}

async fn login(app: &TestApp, email: &str, traceparent: String) -> reqwest::StatusCode {
    app.client
        .post(app.url("/api/v1/login"))
        .header("traceparent", traceparent)
        .form(&[
            ("username", email),
            ("password", PASSWORD),
            ("grant_type", "password"),
        ])
        .send()
        .await
        .expect("login")
        .status()
}

fn children<'a>(spans: &'a [Value], parent: &Value) -> Vec<&'a Value> {
    spans
        .iter()
        .filter(|s| s["parent_span_id"] == parent["span_id"])
        .collect()
}

fn server_span<'a>(spans: &'a [Value], name: &str) -> Option<&'a Value> {
    spans.iter().find(|s| s["name"] == name && s["kind"] == 2)
}

#[tokio::test]
async fn requests_are_exported_with_their_queries_redis_commands_and_events_as_children() {
    let receiver = OtlpReceiver::start("127.0.0.1").expect("the OTLP receiver");
    service_kit::telemetry::export::start(&receiver.url(), "auth").expect("export spans");
    let app = spawn_app().await;
    let email = unique_email();

    let (registered, header) = traceparent("01");
    let r = app
        .client
        .post(app.url("/api/v1/register"))
        .header("traceparent", header)
        .json(&serde_json::json!({ "email": email, "password": PASSWORD }))
        .send()
        .await
        .expect("register");
    assert_eq!(r.status(), 201);

    // Not sampled by the caller, and a probe: neither is exported.
    let (unsampled, header) = traceparent("00");
    assert_eq!(login(&app, &email, header).await, 200);
    let (probe, header) = traceparent("01");
    let r = app
        .client
        .get(app.url("/health/ready"))
        .header("traceparent", header)
        .send()
        .await
        .expect("probe");
    assert_eq!(r.status(), 200);

    let (logged_in, header) = traceparent("01");
    assert_eq!(login(&app, &email, header).await, 200);

    let wait = Duration::from_secs(20);
    let register = receiver
        .trace(&registered, wait, |spans| {
            server_span(spans, "POST /api/v1/register").is_some()
                && spans.iter().any(|s| s["kind"] == 4)
        })
        .await
        .unwrap_or_else(|got| panic!("the registration's spans did not all arrive: {got:#?}"));
    let server = server_span(&register, "POST /api/v1/register").expect("server span");
    assert_eq!(server["service"], "auth");
    assert_eq!(
        server["parent_span_id"], CALLER_SPAN,
        "continues the caller's trace"
    );
    assert_eq!(server["attributes"]["http.route"], "/api/v1/register");
    assert_eq!(server["attributes"]["http.response.status_code"], 201);
    assert_eq!(server["status"]["code"], 0, "unset: not an error");
    let within = children(&register, server);
    let queries: Vec<_> = within
        .iter()
        .filter(|s| s["attributes"]["db.system.name"] == "postgresql")
        .collect();
    assert!(
        queries.iter().any(|q| q["name"] == "INSERT users"
            && q["attributes"]["db.query.text"]
                .as_str()
                .is_some_and(|t| t.contains("$1"))),
        "the account's insert is a child span: {within:#?}"
    );
    for span in &within {
        assert_eq!(
            span["kind"].as_i64().map(|k| k == 3 || k == 4),
            Some(true),
            "{span}"
        );
        assert!(span["start"].as_u64() >= server["start"].as_u64(), "{span}");
        assert!(span["end"].as_u64() <= server["end"].as_u64(), "{span}");
    }
    let recorded = within
        .iter()
        .find(|s| s["kind"] == 4)
        .expect("the event recorded");
    assert_eq!(recorded["name"], "record auth.user.registered.v1");
    assert_eq!(recorded["attributes"]["messaging.system"], "rabbitmq");

    let login = receiver
        .trace(&logged_in, wait, |spans| {
            server_span(spans, "POST /api/v1/login").is_some_and(|server| {
                children(spans, server)
                    .iter()
                    .any(|s| s["attributes"]["db.system.name"] == "redis")
            })
        })
        .await
        .unwrap_or_else(|got| panic!("the login's spans did not all arrive: {got:#?}"));
    let server = server_span(&login, "POST /api/v1/login").expect("server span");
    let within = children(&login, server);
    assert!(
        within
            .iter()
            .any(|s| s["attributes"]["db.system.name"] == "postgresql"),
        "{within:#?}"
    );
    // Spans are queued and sent in the order they end: had the unsampled login or the probe
    // been exported, they would have arrived before the later login's.
    let all = receiver.spans();
    for (trace, what) in [(unsampled, "an unsampled trace"), (probe, "a health check")] {
        let leaked: Vec<_> = all.iter().filter(|s| s["trace_id"] == trace).collect();
        assert!(leaked.is_empty(), "{what} was exported: {leaked:#?}");
    }
}
