//! The gateway in front of real upstream servers: routing, balancing, breakers, retries,
//! limits, timeouts, upgrades and reloads, all over real HTTP on random ports.

mod support;

use std::{collections::HashMap, time::Duration};

use serde_json::Value;
use support::{eventually, problem, Gateway, Upstream};

fn route(name: &str, prefix: &str, upstreams: &[&std::sync::Arc<Upstream>], extra: &str) -> String {
    let urls: Vec<String> = upstreams.iter().map(|u| format!("{:?}", u.url())).collect();
    format!(
        "[[route]]\nname = \"{name}\"\nprefix = \"{prefix}\"\naccess = \"public\"\nupstreams = [{}]\n{extra}\n",
        urls.join(", ")
    )
}

/// A caller's W3C trace context: trace `4bf92f35…`, parent span `00f067aa0ba902b7`.
const CALLER_TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[tokio::test]
async fn routes_by_prefix_and_strips_or_keeps_it() {
    let users = Upstream::start("users").await;
    let files = Upstream::start("files").await;
    let gw = Gateway::start(&format!(
        "{}{}",
        route("users", "/api/users", &[&users], ""),
        route("files", "/files", &[&files], "strip_prefix = false"),
    ))
    .await;

    let body: Value = gw
        .get("/api/users/7/posts?page=2&x=%20")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["upstream"], "users");
    assert_eq!(body["path"], "/7/posts");
    assert_eq!(body["query"], "page=2&x=%20");

    let body: Value = gw.get("/api/users").await.json().await.unwrap();
    assert_eq!(
        body["path"], "/",
        "the bare prefix maps to the upstream's root"
    );

    let body: Value = gw.get("/files/a.txt").await.json().await.unwrap();
    assert_eq!(body["upstream"], "files");
    assert_eq!(body["path"], "/files/a.txt", "prefix kept");

    // A prefix matches whole segments only.
    let response = gw.get("/api/usersx").await;
    assert_eq!(response.status(), 404);
    let p = problem(response).await;
    assert_eq!(p["type"], "urn:gravity:problem:no-route");
    assert_eq!(users.hits(), 2);
}

#[tokio::test]
async fn request_ids_and_trace_context_are_carried() {
    let up = Upstream::start("a").await;
    let gw = Gateway::start(&route("a", "/a", &[&up], "")).await;

    let response = gw
        .http
        .get(gw.url("/a/x"))
        .header("x-request-id", "req-123")
        .header("traceparent", CALLER_TRACEPARENT)
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "req-123");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["headers"]["x-request-id"], "req-123");
    let tp = body["headers"]["traceparent"].as_str().unwrap();
    assert!(
        tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{tp}"
    );
    assert!(
        !tp.contains("00f067aa0ba902b7"),
        "the gateway is a new span: {tp}"
    );
    assert_eq!(body["headers"]["x-forwarded-for"], "127.0.0.1");

    // Forwarding headers a client makes up are replaced, not passed on beside the gateway's,
    // whether the request is sent by the gateway's own exchange (no body, a small one) or
    // through hyper's client (a body too large to hold).
    let big = vec![b'x'; 100_000];
    for body in [None, Some(&big[..10]), Some(&big[..])] {
        let mut request = match body {
            None => gw.http.get(gw.url("/a/x")),
            Some(b) => gw.http.put(gw.url("/a/x")).body(b.to_vec()),
        };
        for (name, value) in [
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-host", "evil.example"),
            ("x-forwarded-proto", "https"),
            ("x-request-id", "req-456"),
        ] {
            request = request.header(name, value);
        }
        let seen: Value = request.send().await.unwrap().json().await.unwrap();
        let h = &seen["headers"];
        assert_eq!(h["x-forwarded-for"], "127.0.0.1", "{seen}");
        assert_eq!(h["x-forwarded-proto"], "http", "{seen}");
        assert_eq!(
            h["x-forwarded-host"],
            gw.url("").trim_start_matches("http://"),
            "{seen}"
        );
        assert_eq!(h["x-request-id"], "req-456", "{seen}");
        assert_eq!(h["traceparent"].as_str().unwrap().len(), 55, "{seen}");
        assert_eq!(seen["body_len"], body.map_or(0, <[u8]>::len), "{seen}");
    }

    // Without them, both are made up and the id is echoed to the client.
    let response = gw.get("/a/x").await;
    let id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["headers"]["x-request-id"], id.as_str());
    assert_eq!(body["headers"]["traceparent"].as_str().unwrap().len(), 55);
}

#[tokio::test]
async fn round_robin_spreads_evenly_and_least_connections_avoids_busy_hosts() {
    let ups = [
        Upstream::start("u0").await,
        Upstream::start("u1").await,
        Upstream::start("u2").await,
    ];
    let gw = Gateway::start(&format!(
        "{}{}",
        route("rr", "/rr", &[&ups[0], &ups[1], &ups[2]], ""),
        route(
            "lc",
            "/lc",
            &[&ups[0], &ups[1]],
            "balance = \"least_connections\"\ntimeout = \"20s\""
        ),
    ))
    .await;

    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..30 {
        let body: Value = gw.get("/rr/x").await.json().await.unwrap();
        *seen
            .entry(body["upstream"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(seen.values().all(|&n| n == 10), "{seen:?}");

    // Two slow requests in flight: with least-connections, neither lands on a host that is
    // already busy, so they end up one per host; then quick requests still go anywhere.
    let before: Vec<usize> = ups.iter().map(|u| u.hits()).collect();
    let a = tokio::spawn({
        let (http, url) = (gw.http.clone(), gw.url("/lc/slow"));
        async move { http.get(url).send().await.unwrap().status() }
    });
    eventually("the first slow request reaches an upstream", || async {
        ups[0].hits() + ups[1].hits() > before[0] + before[1]
    })
    .await;
    let b = tokio::spawn({
        let (http, url) = (gw.http.clone(), gw.url("/lc/slow"));
        async move { http.get(url).send().await.unwrap().status() }
    });
    eventually("the second slow request reaches an upstream", || async {
        ups[0].hits() + ups[1].hits() == before[0] + before[1] + 2
    })
    .await;
    assert_eq!(ups[0].hits() - before[0], 1, "one slow request per host");
    assert_eq!(ups[1].hits() - before[1], 1, "one slow request per host");
    assert_eq!(a.await.unwrap(), 200);
    assert_eq!(b.await.unwrap(), 200);
}

#[tokio::test]
async fn breaker_opens_after_failures_half_opens_and_closes() {
    let up = Upstream::start("a").await;
    let gw = Gateway::start(&route(
        "a",
        "/a",
        &[&up],
        "retries = 0\nbreaker = { failures = 3, open_for = \"400ms\" }",
    ))
    .await;
    up.status.store(500, std::sync::atomic::Ordering::SeqCst);
    for _ in 0..3 {
        assert_eq!(
            gw.get("/a/flaky").await.status(),
            500,
            "upstream errors pass through"
        );
    }
    assert_eq!(up.hits(), 3);

    // Open: refused at the gateway, the upstream is left alone.
    let response = gw.get("/a/flaky").await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(
        problem(response).await["type"],
        "urn:gravity:problem:circuit-open"
    );
    assert_eq!(up.hits(), 3);
    assert_eq!(
        gw.routes().await["routes"][0]["upstreams"][0]["breaker"],
        "open"
    );

    // Half-open: one trial; it fails, so the breaker opens again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        gw.routes().await["routes"][0]["upstreams"][0]["breaker"],
        "half_open"
    );
    assert_eq!(gw.get("/a/flaky").await.status(), 500);
    assert_eq!(up.hits(), 4);
    assert_eq!(gw.get("/a/flaky").await.status(), 503);
    assert_eq!(up.hits(), 4);

    // The upstream recovers: the next trial succeeds and closes the breaker.
    up.status.store(200, std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(gw.get("/a/flaky").await.status(), 200);
    assert_eq!(
        gw.routes().await["routes"][0]["upstreams"][0]["breaker"],
        "closed"
    );
    for _ in 0..5 {
        assert_eq!(gw.get("/a/flaky").await.status(), 200);
    }
}

#[tokio::test]
async fn retries_go_elsewhere_for_gets_and_never_repeat_a_post() {
    let bad = Upstream::start("bad").await;
    let good = Upstream::start("good").await;
    bad.status.store(503, std::sync::atomic::Ordering::SeqCst);
    let gw = Gateway::start(&route(
        "a",
        "/a",
        &[&bad, &good],
        "retries = 1\nbreaker = { failures = 1000 }",
    ))
    .await;

    // GETs that land on the failing host first are retried on the other.
    for _ in 0..4 {
        let response = gw.get("/a/flaky").await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.json::<Value>().await.unwrap()["upstream"], "good");
    }
    assert!(
        (1..=4).contains(&bad.hits()),
        "{} first attempts failed",
        bad.hits()
    );
    assert_eq!(
        good.hits(),
        4,
        "each GET answered once, by the healthy host"
    );

    // A POST is sent once, whatever it gets back, with a body or without one.
    for body in ["x", ""] {
        let (bad_before, good_before) = (bad.hits(), good.hits());
        let mut statuses = Vec::new();
        for _ in 0..4 {
            let r = gw
                .http
                .post(gw.url("/a/flaky"))
                .body(body)
                .send()
                .await
                .unwrap();
            statuses.push(r.status().as_u16());
        }
        assert_eq!(
            bad.hits() + good.hits() - bad_before - good_before,
            4,
            "each POST once (body {body:?})"
        );
        assert_eq!(
            statuses.iter().filter(|&&s| s == 503).count(),
            2,
            "{statuses:?}"
        );
    }

    // A PUT's body is replayed on the retry.
    let r = gw
        .http
        .put(gw.url("/a/echo"))
        .body("0123456789")
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["body_len"], 10);
    // So is one too long to be sent with its head in one write.
    let r = gw
        .http
        .put(gw.url("/a/echo"))
        .body(vec![b'x'; 100_000])
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["body_len"], 100_000);
}

#[tokio::test]
async fn a_dead_upstream_is_a_prompt_502_and_a_slow_one_a_504() {
    let up = Upstream::start("a").await;
    let dead = Upstream::start("dead").await;
    dead.kill();
    let gw = Gateway::start(&format!(
        "{}{}{}",
        route("a", "/a", &[&up], "timeout = \"300ms\""),
        route("mid", "/mid", &[&up], "timeout = \"30s\""),
        route("dead", "/dead", &[&dead], "retries = 0"),
    ))
    .await;

    let response = gw.get("/dead/x").await;
    assert_eq!(response.status(), 502);
    assert_eq!(
        problem(response).await["type"],
        "urn:gravity:problem:bad-gateway"
    );

    let response = gw.get("/a/slow").await;
    assert_eq!(response.status(), 504);
    assert_eq!(
        problem(response).await["type"],
        "urn:gravity:problem:gateway-timeout"
    );

    // Killed while the request is in flight: the client gets a 502, not a hang until the
    // route's 30 s timeout (the test client gives up after 15 s).
    let pending = tokio::spawn({
        let (http, url) = (gw.http.clone(), gw.url("/mid/slow"));
        async move { http.get(url).send().await.unwrap() }
    });
    eventually("the slow request reaches the upstream", || async {
        up.hits() >= 2
    })
    .await;
    up.kill();
    let response = pending.await.unwrap();
    assert_eq!(response.status(), 502);
    assert_eq!(
        problem(response).await["type"],
        "urn:gravity:problem:bad-gateway"
    );
}

#[tokio::test]
async fn bodies_over_the_limit_are_refused_declared_or_streamed() {
    let up = Upstream::start("a").await;
    let gw = Gateway::start(&route("a", "/a", &[&up], "")).await;
    // The default limit is 10 MiB.
    let big = vec![b'x'; 10 * 1024 * 1024 + 1];
    let response = gw
        .http
        .post(gw.url("/a/echo"))
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(
        problem(response).await["type"],
        "urn:gravity:problem:payload-too-large"
    );

    // Streamed (chunked, no length): cut off while reading.
    let stream = futures_util::stream::iter(
        big.chunks(1024 * 1024)
            .map(|c| Ok::<_, std::io::Error>(bytes::Bytes::copy_from_slice(c)))
            .collect::<Vec<_>>(),
    );
    let response = gw
        .http
        .post(gw.url("/a/echo"))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await;
    match response {
        Ok(r) => assert_eq!(r.status(), 413),
        // The gateway may close the connection before the client finished sending.
        Err(e) => assert!(e.is_request() || e.is_body(), "{e}"),
    }

    let ok = gw
        .http
        .post(gw.url("/a/echo"))
        .body(vec![b'x'; 1000])
        .send()
        .await
        .unwrap();
    assert_eq!(ok.json::<Value>().await.unwrap()["body_len"], 1000);
}

#[tokio::test]
async fn active_health_checks_take_a_host_out_and_put_it_back() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let gw = Gateway::start(&route(
        "h",
        "/h",
        &[&a, &b],
        "health_check = { path = \"/health\", interval = \"50ms\", unhealthy_after = 2, healthy_after = 2 }",
    ))
    .await;
    a.healthy.store(false, std::sync::atomic::Ordering::SeqCst);
    eventually("a is marked unhealthy", || async {
        gw.routes().await["routes"][0]["upstreams"][0]["healthy"] == false
    })
    .await;
    for _ in 0..6 {
        let body: Value = gw.get("/h/x").await.json().await.unwrap();
        assert_eq!(body["upstream"], "b");
    }
    b.healthy.store(false, std::sync::atomic::Ordering::SeqCst);
    eventually("b is marked unhealthy", || async {
        gw.routes().await["routes"][0]["upstreams"][1]["healthy"] == false
    })
    .await;
    let response = gw.get("/h/x").await;
    assert_eq!(response.status(), 503);
    assert_eq!(
        problem(response).await["type"],
        "urn:gravity:problem:upstream-unavailable"
    );

    a.healthy.store(true, std::sync::atomic::Ordering::SeqCst);
    eventually("a is back", || async {
        gw.get("/h/x").await.status() == 200
    })
    .await;
}

#[tokio::test]
async fn connection_errors_eject_a_host_passively() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let gw = Gateway::start(&route(
        "o",
        "/o",
        &[&a, &b],
        "retries = 0\noutlier = { consecutive_errors = 2, base_ejection = \"30s\" }\nbreaker = { failures = 1000 }",
    ))
    .await;
    a.kill();
    let mut failures = 0;
    for _ in 0..10 {
        if gw.get("/o/x").await.status() == 502 {
            failures += 1;
        }
    }
    assert_eq!(
        failures, 2,
        "two connection errors, then the host is ejected"
    );
    let routes = gw.routes().await;
    assert!(
        routes["routes"][0]["upstreams"][0]["ejected_for_ms"]
            .as_u64()
            .unwrap()
            > 0
    );
    // The last host is never ejected, however it fails (max_ejected_percent = 50).
    b.kill();
    for _ in 0..6 {
        assert_eq!(gw.get("/o/x").await.status(), 502);
    }
}

#[tokio::test]
async fn websocket_upgrades_are_proxied() {
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::Message;

    let up = Upstream::start("chat").await;
    let gw = Gateway::start(&route("chat", "/chat", &[&up], "")).await;
    let (mut socket, response) =
        tokio_tungstenite::connect_async(format!("ws://{}/chat/ws", gw.addr))
            .await
            .unwrap();
    assert_eq!(response.status(), 101);
    for i in 0..3 {
        socket
            .send(Message::text(format!("hello {i}")))
            .await
            .unwrap();
        let reply = socket.next().await.unwrap().unwrap();
        assert_eq!(
            reply.into_text().unwrap().as_str(),
            format!("chat: hello {i}")
        );
    }
    socket.close(None).await.unwrap();
}

#[tokio::test]
async fn routes_reload_without_a_restart_and_a_broken_file_changes_nothing() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let gw = Gateway::start(&route("one", "/one", &[&a], "")).await;
    assert_eq!(gw.get("/two/x").await.status(), 404);

    gw.rewrite(&format!(
        "{}{}",
        route("one", "/one", &[&a], ""),
        route("two", "/two", &[&b], "")
    ));
    eventually("the new route answers", || async {
        gw.get("/two/x").await.status() == 200
    })
    .await;

    gw.rewrite("[[route]]\nname = \"broken\"\nprefix = \"nope\"\n");
    eventually("the reload error is reported", || async {
        gw.routes().await["reload_error"].is_string()
    })
    .await;
    assert_eq!(
        gw.get("/two/x").await.status(),
        200,
        "the running routes are kept"
    );
    let response = gw
        .http
        .post(gw.admin_url("/admin/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    assert_eq!(
        problem(response).await["type"],
        "urn:gravity:problem:invalid-config"
    );

    gw.rewrite(&route("two", "/two", &[&b], ""));
    eventually("the fixed file is loaded", || async {
        gw.get("/one/x").await.status() == 404
    })
    .await;
    assert!(gw.routes().await["reload_error"].is_null());
}

#[tokio::test]
async fn metrics_count_requests_by_route_upstream_and_status() {
    let up = Upstream::start("m").await;
    let gw = Gateway::start(&route("metered", "/metered", &[&up], "")).await;
    for _ in 0..3 {
        gw.get("/metered/x").await;
    }
    let text = gw
        .http
        .get(gw.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = text
        .lines()
        .find(|l| {
            l.starts_with("gateway_upstream_requests_total")
                && l.contains("route=\"metered\"")
                && l.contains("status=\"200\"")
        })
        .unwrap_or_else(|| panic!("no upstream counter in:\n{text}"));
    assert!(line.ends_with(" 3"), "{line}");
    assert!(text.contains(
        "http_request_duration_seconds_count{method=\"GET\",route=\"metered\",status=\"200\"} 3"
    ));
}

/// A bare HTTP/1.1 upstream that counts the connections it accepts and answers every
/// request with `ok`; with `close_after_each`, it closes each connection after its first
/// answer without announcing it, as a server whose keep-alive timeout ran out does.
async fn counting_upstream(
    close_after_each: bool,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::{atomic::Ordering, Arc};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = stream.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    // Bodiless requests only: each ends at its blank line.
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if stream.write_all(answer).await.is_err() {
                            return;
                        }
                        if close_after_each {
                            return;
                        }
                    }
                }
            });
        }
    });
    (url, accepted)
}

#[tokio::test]
async fn upstream_connections_are_reused_and_one_closed_while_idle_costs_no_error() {
    use std::sync::atomic::Ordering;

    let (keeps, kept_connections) = counting_upstream(false).await;
    let (closes, closed_connections) = counting_upstream(true).await;
    let gw = Gateway::start(&format!(
        "[[route]]\nname = \"keeps\"\nprefix = \"/keeps\"\naccess = \"public\"\nupstreams = [{keeps:?}]\n\
         [[route]]\nname = \"closes\"\nprefix = \"/closes\"\naccess = \"public\"\nupstreams = [{closes:?}]\n"
    ))
    .await;

    for _ in 0..20 {
        let response = gw.get("/keeps/x").await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.unwrap(), "ok");
    }
    // One client connection is served by one thread, which keeps one upstream connection;
    // a second only if the client itself reconnected (at most one per serving thread).
    let kept = kept_connections.load(Ordering::SeqCst);
    assert!(
        (1..=2).contains(&kept),
        "20 requests took {kept} upstream connections"
    );

    // The upstream drops every connection after one answer: each pooled connection is found
    // closed and the request goes on a new one, never a 502.
    for _ in 0..20 {
        let response = gw.get("/closes/x").await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.unwrap(), "ok");
    }
    assert_eq!(closed_connections.load(Ordering::SeqCst), 20);
}

#[tokio::test]
async fn a_slow_upload_does_not_count_against_the_upstreams_timeout() {
    use futures_util::StreamExt as _;

    let up = Upstream::start("a").await;
    let gw = Gateway::start(&route("a", "/a", &[&up], "timeout = \"300ms\"")).await;

    // A PUT (replayable, so the gateway reads it whole before sending) whose body takes
    // longer than the route's timeout to arrive: the clock starts when the upstream is asked.
    let chunks = futures_util::stream::iter(0..4).then(|_| async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"0123456789"))
    });
    let response = gw
        .http
        .put(gw.url("/a/upload"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["body_len"], 40);

    // And the upstream was not blamed for it.
    let routes = gw.routes().await;
    let upstream = &routes["routes"][0]["upstreams"][0];
    assert_eq!(upstream["breaker"], "closed", "{routes}");
    assert_eq!(upstream["consecutive_failures"], 0, "{routes}");
}

/// Reads until the gateway closes the connection; what it sent on the way.
async fn until_closed(stream: &mut tokio::net::TcpStream) -> Vec<u8> {
    use tokio::io::AsyncReadExt as _;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn a_request_head_not_sent_in_time_and_an_idle_keep_alive_connection_are_closed() {
    use tokio::io::AsyncWriteExt as _;
    let up = Upstream::start("a").await;
    let gw = Gateway::start_with(
        "header_read_timeout = \"1s\"\n",
        &route("a", "/a", &[&up], ""),
    )
    .await;

    // Half a request head, then nothing (slowloris): the connection is closed, unanswered
    // by the upstream.
    let mut slow = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    slow.write_all(b"GET /a/x HTTP/1.1\r\nHost: gateway\r\n")
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), until_closed(&mut slow))
        .await
        .expect("the gateway closes a connection whose request head never completes");
    assert_eq!(up.hits(), 0);

    // A whole request is answered; the connection, then idle, is closed in turn.
    let mut idle = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    idle.write_all(b"GET /a/x HTTP/1.1\r\nHost: gateway\r\n\r\n")
        .await
        .unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), until_closed(&mut idle))
        .await
        .expect("the gateway closes an idle keep-alive connection");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(up.hits(), 1);
}

/// An upstream that answers by the request path with hand-written bytes, one framing each,
/// on keep-alive connections; counts the connections it accepted.
async fn raw_upstream() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::{atomic::Ordering, Arc};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    buf.drain(..end + 4);
                    let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
                    let head_request = head.starts_with("HEAD ");
                    let parts: Vec<Vec<u8>> = match path.as_str() {
                        "/raw/chunked" => vec![
                            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n".to_vec(),
                            b"7\r\n, world\r\n".to_vec(),
                            b"0\r\nx-checksum: abc\r\n\r\n".to_vec(),
                        ],
                        "/raw/big" => {
                            let mut parts =
                                vec![b"HTTP/1.1 200 OK\r\ncontent-length: 1048576\r\n\r\n".to_vec()];
                            parts.extend((0..16).map(|i| vec![b'a' + i as u8; 65536]));
                            parts
                        }
                        "/raw/interim" => vec![
                            b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n".to_vec(),
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(),
                        ],
                        "/raw/head" if head_request => {
                            vec![b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n".to_vec()]
                        }
                        "/raw/no-content" => vec![b"HTTP/1.1 204 No Content\r\n\r\n".to_vec()],
                        "/raw/until-close" => {
                            let _ = stream
                                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nall of ")
                                .await;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            let _ = stream.write_all(b"it").await;
                            return;
                        }
                        "/raw/cut" => {
                            let _ = stream
                                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly ten b")
                                .await;
                            return;
                        }
                        "/raw/stall" => {
                            let _ = stream
                                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly ten b")
                                .await;
                            // Neither the rest nor a close: the connection just goes quiet.
                            tokio::time::sleep(Duration::from_secs(120)).await;
                            return;
                        }
                        "/raw/garbage" => {
                            let _ = stream.write_all(b"SMTP ready\r\n\r\n").await;
                            return;
                        }
                        _ => vec![b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec()],
                    };
                    for part in parts {
                        if stream.write_all(&part).await.is_err() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            });
        }
    });
    (url, accepted)
}

#[tokio::test]
async fn every_response_framing_is_passed_on_whole_and_connections_reused_only_when_safe() {
    use std::sync::atomic::Ordering;

    let (url, accepted) = raw_upstream().await;
    let gw = Gateway::start(&format!(
        "[[route]]\nname = \"raw\"\nprefix = \"/raw\"\naccess = \"public\"\nstrip_prefix = false\n\
         retries = 0\nupstreams = [{url:?}]\n"
    ))
    .await;

    // Chunked, in pieces, with an extension and a trailer: the body whole, and the
    // connection used again for the next request.
    for _ in 0..3 {
        let response = gw.get("/raw/chunked").await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.unwrap(), "hello, world");
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "chunked responses keep the connection"
    );

    let response = gw.get("/raw/big").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.content_length(), Some(1_048_576));
    let body = response.bytes().await.unwrap();
    assert_eq!(body.len(), 1_048_576);
    assert!(body[..65536].iter().all(|b| *b == b'a'));
    assert!(body[body.len() - 65536..].iter().all(|b| *b == b'p'));

    // An interim response is passed over; the final one arrives.
    let response = gw.get("/raw/interim").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "ok");

    // HEAD and 204 carry no body, whatever the length header says.
    let response = gw.http.head(gw.url("/raw/head")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-length"], "5");
    assert_eq!(response.text().await.unwrap(), "");
    let response = gw.get("/raw/no-content").await;
    assert_eq!(response.status(), 204);
    let before = accepted.load(Ordering::SeqCst);
    let response = gw.get("/raw/ok").await;
    assert_eq!(response.text().await.unwrap(), "ok");
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        before,
        "bodiless answers keep the connection"
    );

    // A body that runs until the upstream closes arrives whole; that connection is not
    // reused (the next request opens another).
    let response = gw.get("/raw/until-close").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "all of it");

    // A body cut short ends the client's response in an error (before or after its head,
    // as the gateway had flushed it or not), not a hang.
    let cut = tokio::time::timeout(Duration::from_secs(10), async {
        let response = gw.http.get(gw.url("/raw/cut")).send().await?;
        response.bytes().await
    })
    .await
    .expect("a cut body ends promptly");
    assert!(
        cut.is_err(),
        "a body shorter than announced reads as an error"
    );

    // Something that is not HTTP is the gateway's 502.
    let response = gw.get("/raw/garbage").await;
    assert_eq!(response.status(), 502);
    assert_eq!(
        problem(response).await["type"],
        "urn:gravity:problem:bad-gateway"
    );

    // And the pool is still good afterwards.
    let response = gw.get("/raw/chunked").await;
    assert_eq!(response.text().await.unwrap(), "hello, world");
}

#[tokio::test]
async fn an_upstream_gone_quiet_in_the_middle_of_a_body_cuts_the_response_not_hangs_it() {
    let (url, _) = raw_upstream().await;
    let gw = Gateway::start(&format!(
        "[[route]]\nname = \"raw\"\nprefix = \"/raw\"\naccess = \"public\"\nstrip_prefix = false\n\
         retries = 0\ntimeout = \"500ms\"\nupstreams = [{url:?}]\n"
    ))
    .await;

    // Answered in the request's own task (no body) and through hyper's client (a body too
    // large to hold): either way the head arrives, then the body ends in an error once the
    // upstream has been quiet for the route's timeout. The test gives up at 10 s, before
    // the test client's own 15 s timeout: a hang.
    let big = vec![b'x'; 100_000];
    for body in [None, Some(big)] {
        let request = match body {
            None => gw.http.get(gw.url("/raw/stall")),
            Some(bytes) => gw.http.put(gw.url("/raw/stall")).body(bytes),
        };
        let outcome = tokio::time::timeout(Duration::from_secs(10), async {
            let response = request.send().await.expect("the head arrives");
            assert_eq!(response.status(), 200);
            assert_eq!(response.content_length(), Some(100));
            response.bytes().await
        })
        .await
        .expect("a stalled body is cut, not left hanging");
        assert!(outcome.is_err(), "a body cut short reads as an error");
    }

    // The gateway serves on.
    let response = gw.get("/raw/ok").await;
    assert_eq!(response.text().await.unwrap(), "ok");
}

#[tokio::test]
async fn with_an_admin_token_the_admin_endpoints_answer_only_its_bearer() {
    let up = Upstream::start("a").await;
    let token = "s3cret-admin-token-0123456789";
    let gw = Gateway::start_with_admin_token(&route("a", "/", &[&up], ""), token).await;
    let admin = |path: &str| gw.http.get(gw.admin_url(path));

    for refused in [
        admin("/admin/routes"),
        admin("/admin/routes").bearer_auth("s3cret-admin-token-012345678"),
        admin("/admin/routes").header("authorization", format!("Basic {token}")),
        gw.http.post(gw.admin_url("/admin/reload")),
    ] {
        let response = refused.send().await.unwrap();
        assert_eq!(response.status(), 401);
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        let problem = problem(response).await;
        assert_eq!(problem["type"], "urn:gravity:problem:unauthenticated");
        assert!(!problem.to_string().contains(token), "{problem}");
    }

    let routes: Value = admin("/admin/routes")
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(routes["routes"][0]["name"], "a");
    assert_eq!(routes["routes"][0]["upstreams"][0]["breaker"], "closed");
    let reload = gw
        .http
        .post(gw.admin_url("/admin/reload"))
        .header("authorization", format!("bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(reload.status(), 200);
    // Probes and metrics stay open: orchestrators and scrapers carry no token.
    assert_eq!(admin("/health/ready").send().await.unwrap().status(), 200);
    assert_eq!(admin("/metrics").send().await.unwrap().status(), 200);
    // Proxying is untouched.
    assert_eq!(gw.get("/x").await.status(), 200);
}

/// Log lines the gateway writes in this test process, as JSON objects (a global subscriber,
/// installed once: the serving threads are not the test's own).
fn captured_logs() -> std::sync::Arc<std::sync::Mutex<Vec<u8>>> {
    static LINES: std::sync::OnceLock<std::sync::Arc<std::sync::Mutex<Vec<u8>>>> =
        std::sync::OnceLock::new();
    LINES
        .get_or_init(|| {
            let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            let sink = std::sync::Arc::clone(&lines);
            let subscriber = tracing_subscriber::fmt()
                .json()
                .flatten_event(true)
                .with_writer(move || Sink(std::sync::Arc::clone(&sink)))
                .finish();
            tracing::subscriber::set_global_default(subscriber)
                .expect("no other log subscriber in this test binary: run it without TEST_LOG");
            lines
        })
        .clone()
}

struct Sink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut lines) = self.0.lock() {
            lines.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// With the access log on, a request's line names the trace it was sent upstream in (the
/// caller's, continued), so `gravity logs --trace-id` finds the gateway's line beside the
/// services'; a request refused before any was made has none.
#[tokio::test]
async fn the_access_log_names_the_trace_each_request_was_sent_in() {
    let logs = captured_logs();
    let up = Upstream::start("traced").await;
    let gw = Gateway::start_with("access_log = true", &route("traced", "/t", &[&up], "")).await;
    let sent = gw
        .http
        .get(gw.url("/t/x"))
        .header("x-request-id", "traced-1")
        .header("traceparent", CALLER_TRACEPARENT)
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 200);
    let unrouted = gw
        .http
        .get(gw.url("/nowhere"))
        .header("x-request-id", "traced-2")
        .send()
        .await
        .unwrap();
    assert_eq!(unrouted.status(), 404);
    let line_of = |id: &str| -> Option<Value> {
        let text = String::from_utf8_lossy(&logs.lock().ok()?).into_owned();
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|l| l["request_id"] == id && l["message"] == "request")
    };
    eventually("both access log lines", || async {
        line_of("traced-1").is_some() && line_of("traced-2").is_some()
    })
    .await;
    let traced = line_of("traced-1").unwrap();
    assert_eq!(
        traced["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736",
        "{traced}"
    );
    assert_eq!(traced["status"], 200, "{traced}");
    let refused = line_of("traced-2").unwrap();
    assert!(refused.get("trace_id").is_none(), "{refused}");
}
