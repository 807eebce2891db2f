//! The edges every request passes: content types, body limits, problem+json, request ids,
//! token forgery, health, metrics and the OpenAPI document.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use reqwest::StatusCode;
use serde_json::Value;
use service_kit::jwt::{self, SigningKey};
use std::time::Duration;

use crate::helpers::{access, assert_problem, spawn_app, spawn_with, test_env};

#[tokio::test]
async fn malformed_json_is_a_400_problem() {
    let app = spawn_app().await;
    let r = app
        .client
        .post(app.url("/api/v1/register"))
        .header("content-type", "application/json")
        .body("{\"email\": ")
        .send()
        .await
        .unwrap();
    assert_problem(r, StatusCode::BAD_REQUEST, "malformed-body").await;
    let r = app
        .client
        .post(app.url("/api/v1/forgot-password"))
        .header("content-type", "application/json")
        .body("{\"email\": 42}")
        .send()
        .await
        .unwrap();
    assert_problem(r, StatusCode::UNPROCESSABLE_ENTITY, "validation").await;
}

#[tokio::test]
async fn a_wrong_content_type_is_a_415_problem() {
    let app = spawn_app().await;
    let r = app
        .client
        .post(app.url("/api/v1/register"))
        .header("content-type", "text/plain")
        .body("email=a@example.com")
        .send()
        .await
        .unwrap();
    assert_problem(
        r,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported-media-type",
    )
    .await;
    let r = app
        .client
        .post(app.url("/api/v1/forgot-password"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_problem(
        r,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported-media-type",
    )
    .await;
}

#[tokio::test]
async fn an_oversized_body_is_a_413_problem() {
    let app = spawn_with(test_env().await.with("BODY_LIMIT_BYTES", "1024")).await;
    let huge = format!(
        "{{\"email\":\"a@example.com\",\"password\":\"{}\"}}",
        "x".repeat(4096)
    );
    let r = app
        .client
        .post(app.url("/api/v1/register"))
        .header("content-type", "application/json")
        .body(huge.clone())
        .send()
        .await
        .unwrap();
    assert_problem(r, StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large").await;
    // Without a Content-Length (chunked) the limit still holds while streaming.
    let status = chunked_post(app.addr, "/api/v1/register", huge.as_bytes()).await;
    assert_eq!(status, 413);
}

/// Sends a chunked HTTP/1.1 POST by hand (no client here streams without a length) and
/// returns the status code.
async fn chunked_post(addr: std::net::SocketAddr, path: &str, body: &[u8]) -> u16 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    for chunk in body.chunks(512) {
        // The server may answer and close before the whole body is sent.
        if stream
            .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .await
            .is_err()
            || stream.write_all(chunk).await.is_err()
            || stream.write_all(b"\r\n").await.is_err()
        {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems() {
    let app = spawn_app().await;
    let r = app
        .client
        .get(app.url("/api/v1/nope"))
        .send()
        .await
        .unwrap();
    assert_problem(r, StatusCode::NOT_FOUND, "not-found").await;
    let r = app
        .client
        .delete(app.url("/api/v1/login"))
        .send()
        .await
        .unwrap();
    assert_problem(r, StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed").await;
}

#[tokio::test]
async fn request_ids_are_echoed_or_generated() {
    let app = spawn_app().await;
    let r = app
        .client
        .get(app.url("/health/live"))
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "trace-me-42");
    let r = app
        .client
        .get(app.url("/health/live"))
        .send()
        .await
        .unwrap();
    let generated = r.headers()["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(generated).is_ok(), "{generated}");
}

fn claims_for(app: &crate::helpers::TestApp, me: &Value, sid: &str) -> jwt::AccessClaims {
    let t = &app.state.settings.tokens;
    jwt::claims_now(
        &t.issuer,
        &t.audience,
        me["id"].as_str().unwrap().parse().unwrap(),
        sid.parse().unwrap(),
        vec!["admin".into()],
        Duration::from_secs(900),
    )
}

fn payload(token: &str) -> Value {
    serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn forged_tokens_are_refused() {
    let app = spawn_app().await;
    let (_, tokens) = app.new_user().await;
    let token = access(&tokens);
    let me: Value = app.get("/api/v1/me", token).await.json().await.unwrap();
    let sid = payload(token)["sid"].as_str().unwrap().to_owned();

    // Tampered payload: role raised to admin, signature left as it was.
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut claims = payload(token);
    claims["roles"] = serde_json::json!(["admin"]);
    parts[1] = URL_SAFE_NO_PAD.encode(claims.to_string());
    let tampered = parts.join(".");
    assert_problem(
        app.get("/api/v1/me", &tampered).await,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    )
    .await;

    // alg: none with no signature.
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
    let none = format!("{header}.{}.", parts[1]);
    assert_problem(
        app.get("/api/v1/me", &none).await,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    )
    .await;

    // A well-formed token signed by a key the service never published.
    let (stranger, _) = SigningKey::generate().unwrap();
    let foreign = stranger.sign(&claims_for(&app, &me, &sid)).unwrap();
    assert_problem(
        app.get("/api/v1/me", &foreign).await,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    )
    .await;

    // Signed by the service's own key, but expired, or for another audience or issuer.
    let mut expired = claims_for(&app, &me, &sid);
    expired.exp = chrono::Utc::now().timestamp() - 120;
    expired.iat = expired.exp - 900;
    let r = app
        .get("/api/v1/me", &app.state.keys.sign(&expired).unwrap())
        .await;
    let body = assert_problem(r, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    assert!(body["detail"].as_str().unwrap().contains("expired"));
    let mut audience = claims_for(&app, &me, &sid);
    audience.aud = "another-platform".into();
    let r = app
        .get("/api/v1/me", &app.state.keys.sign(&audience).unwrap())
        .await;
    assert_problem(r, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    let mut issuer = claims_for(&app, &me, &sid);
    issuer.iss = "someone-else".into();
    let r = app
        .get("/api/v1/me", &app.state.keys.sign(&issuer).unwrap())
        .await;
    assert_problem(r, StatusCode::UNAUTHORIZED, "unauthenticated").await;

    // The genuine article still works: the refusals above were about the forgeries.
    assert_eq!(app.get("/api/v1/me", token).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn health_reports_liveness_and_readiness() {
    let app = spawn_app().await;
    let live: Value = app
        .client
        .get(app.url("/health/live"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(live["status"], "live");
    let r = app
        .client
        .get(app.url("/health/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let ready: Value = r.json().await.unwrap();
    assert_eq!(ready["checks"]["database"], "ok");
    assert_eq!(ready["checks"]["redis"], "ok");
}

#[tokio::test]
async fn readiness_fails_when_the_database_goes_away() {
    let app = spawn_app().await;
    app.db.close().await;
    let r = app
        .client
        .get(app.url("/health/ready"))
        .send()
        .await
        .unwrap();
    let body = assert_problem(r, StatusCode::SERVICE_UNAVAILABLE, "not-ready").await;
    assert_eq!(body["checks"]["database"], "failing");
    assert_eq!(body["checks"]["redis"], "ok");
}

#[tokio::test]
async fn metrics_count_and_time_requests_per_route() {
    let app = spawn_app().await;
    let (_, tokens) = app.new_user().await;
    app.get("/api/v1/me", access(&tokens)).await;
    // Clients pick methods; unknown ones share one label so they cannot grow the series.
    let odd = reqwest::Method::from_bytes(b"BREW").unwrap();
    app.client
        .request(odd, app.url("/health/live"))
        .send()
        .await
        .unwrap();
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(r#"method="_OTHER",route="/health/live",status="405""#),
        "{text}"
    );
    assert!(!text.contains("BREW"), "{text}");
    assert!(
        text.contains(
            r#"http_request_duration_seconds_count{method="POST",route="/api/v1/register",status="201"}"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"http_request_duration_seconds_bucket{method="GET",route="/api/v1/me",status="200",le="0.005"}"#
        ),
        "{text}"
    );
}

#[tokio::test]
async fn the_openapi_document_describes_every_endpoint() {
    let app = spawn_app().await;
    let doc: Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = doc["paths"].as_object().unwrap();
    for path in [
        "/api/v1/register",
        "/api/v1/login",
        "/api/v1/refresh",
        "/api/v1/logout",
        "/api/v1/me",
        "/api/v1/change-password",
        "/api/v1/forgot-password",
        "/api/v1/reset-password",
        "/api/v1/users",
        "/api/v1/users/{id}",
        "/api/v1/users/{user_id}/role",
        "/api/v1/roles",
        "/.well-known/jwks.json",
    ] {
        assert!(
            paths.contains_key(path),
            "{path} missing from the OpenAPI document"
        );
    }
    let docs = app.client.get(app.url("/docs")).send().await.unwrap();
    assert_eq!(docs.status(), StatusCode::OK);
    let html = docs.text().await.unwrap();
    assert!(
        html.contains("<html") && html.contains("Gravity auth service"),
        "{html}"
    );
}

#[tokio::test]
async fn shutdown_drains_a_request_in_flight_then_stops() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let env = test_env().await;
    let settings = auth::config::Settings::from_env(&env).unwrap();
    let app = auth::startup::Application::build(settings).await.unwrap();
    let addr = app.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));

    // A registration whose body is only half sent when the shutdown signal arrives.
    let body = format!(
        r#"{{"email":"{}","password":"correct horse battery"}}"#,
        crate::helpers::unique_email()
    );
    let (first, second) = body.as_bytes().split_at(body.len() / 2);
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /api/v1/register HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(first).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    // New connections are no longer served...
    let refused = match tokio::net::TcpStream::connect(addr).await {
        Err(_) => true,
        Ok(mut s) => {
            let _ = s
                .write_all(b"GET /health/live HTTP/1.1\r\nHost: test\r\n\r\n")
                .await;
            // Accepted by the kernel's backlog perhaps, but never answered.
            let mut buf = vec![0u8; 256];
            !matches!(
                tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await,
                Ok(Ok(n)) if n > 0
            )
        }
    };
    assert!(
        refused,
        "a new connection was served after the shutdown signal"
    );

    // ...but the one in flight completes.
    stream.write_all(second).await.unwrap();
    let mut response = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut response))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&response[..n]);
    assert!(text.starts_with("HTTP/1.1 201"), "{text}");
    drop(stream);
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the server did not stop after draining")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn logs_are_json_lines_carrying_the_request_id_and_trace_id() {
    use tokio::io::{AsyncBufReadExt as _, BufReader};

    let env = test_env().await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_auth"))
        .env_clear()
        .env("DATABASE_URL", env.get("DATABASE_URL").unwrap())
        .env("REDIS_URL", env.get("REDIS_URL").unwrap())
        .env("REDIS_KEY_PREFIX", env.get("REDIS_KEY_PREFIX").unwrap())
        .env("HOST", "127.0.0.1")
        .env("PORT", "0")
        .env("ACCESS_LOG", "true")
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = loop {
        let line = next_json_line(&mut lines).await;
        if line["message"] == "auth service listening" {
            break line["addr"].as_str().unwrap().to_owned();
        }
    };
    let client = reqwest::Client::new();
    client
        .get(format!("http://{addr}/api/v1/me"))
        .header("x-request-id", "find-me-in-the-logs")
        .send()
        .await
        .unwrap();
    let line = loop {
        let line = next_json_line(&mut lines).await;
        if line["message"] == "request" {
            break line;
        }
    };
    assert_eq!(line["request_id"], "find-me-in-the-logs", "{line}");
    // No traceparent: the request is the root of a new trace, its span logged with it.
    let hex = |v: &serde_json::Value, len: usize| {
        v.as_str()
            .is_some_and(|s| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit()))
    };
    assert!(hex(&line["trace_id"], 32), "a new trace: {line}");
    assert!(hex(&line["span_id"], 16), "{line}");
    assert!(line.get("parent_span_id").is_none(), "a root: {line}");
    assert_eq!(line["status"], 401, "{line}");
    assert_eq!(line["path"], "/api/v1/me", "{line}");
    assert_eq!(line["level"], "INFO");

    // A line written by a handler, not by the edge, carries the id too.
    client
        .post(format!("http://{addr}/api/v1/register"))
        .header("x-request-id", "registration-42")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .json(&serde_json::json!({ "email": crate::helpers::unique_email(), "password": "correct horse battery" }))
        .send()
        .await
        .unwrap();
    let (line, access) = {
        let mut written = None;
        loop {
            let line = next_json_line(&mut lines).await;
            if line["message"] == "account registered" {
                written = Some(line);
            } else if line["message"] == "request" && line["request_id"] == "registration-42" {
                break (written.expect("the handler's line first"), line);
            }
        }
    };
    // Its span is the caller's span's child, in the caller's trace.
    assert_eq!(
        access["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736",
        "{access}"
    );
    assert_eq!(access["parent_span_id"], "00f067aa0ba902b7", "{access}");
    assert!(
        access["span_id"]
            .as_str()
            .is_some_and(|s| s.len() == 16 && s != "00f067aa0ba902b7"),
        "{access}"
    );
    assert_eq!(line["request_id"], "registration-42", "{line}");
    // And the caller's trace, so `gravity logs --trace-id` finds it.
    assert_eq!(
        line["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736",
        "{line}"
    );
    child.kill().await.unwrap();
}

async fn next_json_line(
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
) -> Value {
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("no log line within 20 s")
        .unwrap()
        .expect("the service's stdout closed");
    serde_json::from_str::<Value>(&line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"))
}

#[tokio::test]
async fn a_client_trickling_headers_is_cut_off() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let app = spawn_with(test_env().await.with("HEADER_READ_TIMEOUT_SECS", "1")).await;
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    stream
        .write_all(b"GET /health/live HTTP/1.1\r\nHost: test\r\n")
        .await
        .unwrap();
    // The headers never end; the server must close the connection rather than wait forever.
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf)).await;
    assert!(closed.is_ok(), "the connection was still open after 5 s");
    // A well-behaved client is unaffected.
    let r = app
        .client
        .get(app.url("/health/live"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}
