//! Edge authentication against a real key set, identity headers, and rate limits local and
//! shared through a real Redis.

mod support;

use std::time::Duration;

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use serde_json::Value;
use support::{eventually, problem, redis_url, Gateway, Issuer, Upstream};
use uuid::Uuid;

fn auth_section(issuer: &Issuer) -> String {
    format!(
        "[auth]\njwks_url = \"{}\"\nmin_refetch_interval = \"200ms\"\n",
        issuer.jwks_url()
    )
}

fn token_route(up: &Upstream) -> String {
    format!(
        "[[route]]\nname = \"api\"\nprefix = \"/api\"\nupstreams = [\"{}\"]\npublic_paths = [\"/open\", \"/docs/*\"]\n\
         [[route]]\nname = \"pub\"\nprefix = \"/pub\"\naccess = \"public\"\nupstreams = [\"{}\"]\n",
        up.url(),
        up.url()
    )
}

async fn ready(gw: &Gateway) {
    eventually("the key set is loaded", || async {
        gw.http
            .get(gw.admin_url("/health/ready"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
}

async fn call(gw: &Gateway, path: &str, token: Option<&str>) -> reqwest::Response {
    let mut request = gw
        .http
        .get(gw.url(path))
        .header("x-user-id", "00000000-0000-0000-0000-000000000001")
        .header("x-user-roles", "admin")
        .header("x-session-id", "forged")
        .header("x-identity-assertion", "forged.by.client");
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn verified_identity_is_passed_on_and_spoofed_headers_are_stripped() {
    let issuer = Issuer::start().await;
    let up = Upstream::start("svc").await;
    let gw = Gateway::start(&format!("{}{}", auth_section(&issuer), token_route(&up))).await;
    ready(&gw).await;

    let user = Uuid::new_v4();
    let claims = issuer.claims(user, &["user", "editor"]);
    let token = issuer.sign(&claims);
    let body: Value = call(&gw, "/api/me", Some(&token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["headers"]["x-user-id"], user.to_string());
    assert_eq!(body["headers"]["x-user-roles"], "user,editor");
    assert_eq!(body["headers"]["x-session-id"], claims.sid.to_string());
    // The caller as the gateway signed it: what a service trusts, with the gateway's key.
    let verifier =
        service_kit::identity::IdentityVerifier::from_base64(&gw.identity_public_key).unwrap();
    let asserted = verifier
        .verify(body["headers"]["x-identity-assertion"].as_str().unwrap())
        .expect("a valid assertion");
    assert_eq!(asserted.user_id, user);
    assert_eq!(asserted.roles, ["user", "editor"]);
    assert_eq!(asserted.session_id, claims.sid);
    assert_eq!(
        body["headers"]["authorization"],
        format!("Bearer {token}"),
        "the token itself still reaches the service"
    );

    // Public routes and public paths: forged identity headers never reach the upstream.
    for path in ["/pub/x", "/api/open", "/api/docs/index.html"] {
        let response = call(&gw, path, None).await;
        assert_eq!(response.status(), 200, "{path}");
        let body: Value = response.json().await.unwrap();
        for h in [
            "x-user-id",
            "x-user-roles",
            "x-session-id",
            "x-identity-assertion",
        ] {
            assert!(body["headers"][h].is_null(), "{path} leaked {h}: {body}");
        }
    }

    // No token on a protected path.
    let response = call(&gw, "/api/me", None).await;
    assert_eq!(response.status(), 401);
    assert!(response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Bearer"));
    assert_eq!(
        problem(response).await["type"],
        "urn:gravity:problem:unauthenticated"
    );
    assert_eq!(up.hits(), 4);
}

#[tokio::test]
async fn tampered_expired_and_wrong_audience_tokens_are_refused() {
    let issuer = Issuer::start().await;
    let up = Upstream::start("svc").await;
    let gw = Gateway::start(&format!("{}{}", auth_section(&issuer), token_route(&up))).await;
    ready(&gw).await;
    let user = Uuid::new_v4();

    // Tampered: roles rewritten in the payload, signature kept.
    let token = issuer.token(user);
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut claims = issuer.claims(user, &["admin"]);
    claims.sub = user;
    parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
    let tampered = parts.join(".");

    let mut expired = issuer.claims(user, &["user"]);
    expired.exp = chrono_now() - 120;
    let expired = issuer.sign(&expired);

    let mut other_audience = issuer.claims(user, &["user"]);
    other_audience.aud = "another-app".into();
    let other_audience = issuer.sign(&other_audience);

    let mut other_issuer = issuer.claims(user, &["user"]);
    other_issuer.iss = "someone-else".into();
    let other_issuer = issuer.sign(&other_issuer);

    let stranger = Issuer::start().await.token(user);

    for (what, bad) in [
        ("tampered", tampered.as_str()),
        ("expired", expired.as_str()),
        ("wrong audience", other_audience.as_str()),
        ("wrong issuer", other_issuer.as_str()),
        ("unknown key", stranger.as_str()),
        ("garbage", "not.a.token"),
    ] {
        let response = call(&gw, "/api/me", Some(bad)).await;
        assert_eq!(response.status(), 401, "{what}");
        assert_eq!(
            problem(response).await["type"],
            "urn:gravity:problem:unauthenticated"
        );
    }
    // Not a bearer token at all, or bytes that are not text where the token should be.
    let mut genuine_but_latin1 = format!("Bearer {token}").into_bytes();
    genuine_but_latin1.push(0xe9);
    for (what, header) in [
        (
            "basic",
            reqwest::header::HeaderValue::from_static("Basic dXNlcjpwdw=="),
        ),
        (
            "no token",
            reqwest::header::HeaderValue::from_static("Bearer "),
        ),
        (
            "not text",
            reqwest::header::HeaderValue::from_bytes(&genuine_but_latin1).unwrap(),
        ),
    ] {
        let response = gw
            .http
            .get(gw.url("/api/me"))
            .header(reqwest::header::AUTHORIZATION, header)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{what}");
        assert_eq!(
            problem(response).await["type"],
            "urn:gravity:problem:unauthenticated"
        );
    }
    assert_eq!(up.hits(), 0, "nothing refused reached the upstream");

    // The genuine token still works, and again from the cache.
    for _ in 0..2 {
        assert_eq!(call(&gw, "/api/me", Some(&token)).await.status(), 200);
    }
}

#[tokio::test]
async fn a_new_key_is_fetched_on_an_unknown_kid_at_a_limited_rate() {
    let issuer = Issuer::start().await;
    let up = Upstream::start("svc").await;
    let gw = Gateway::start(&format!("{}{}", auth_section(&issuer), token_route(&up))).await;
    ready(&gw).await;
    let fetched_at_start = issuer.jwks_hits.load(std::sync::atomic::Ordering::SeqCst);

    tokio::time::sleep(Duration::from_millis(250)).await;
    issuer.rotate();
    let token = issuer.token(Uuid::new_v4());
    assert_eq!(call(&gw, "/api/me", Some(&token)).await.status(), 200);
    let after_rotation = issuer.jwks_hits.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(after_rotation, fetched_at_start + 1);

    // A burst of tokens from unknown keys causes at most one more fetch per interval.
    let stranger = Issuer::start().await;
    for _ in 0..20 {
        let t = stranger.token(Uuid::new_v4());
        assert_eq!(call(&gw, "/api/me", Some(&t)).await.status(), 401);
    }
    let after_burst = issuer.jwks_hits.load(std::sync::atomic::Ordering::SeqCst);
    assert!(after_burst <= after_rotation + 1, "{after_burst} fetches");
}

fn limited_route(up: &Upstream, limits: &str) -> String {
    format!(
        "[rate_limit]\n{limits}\n[[route]]\nname = \"api\"\nprefix = \"/api\"\naccess = \"optional\"\nupstreams = [\"{}\"]\n",
        up.url()
    )
}

#[tokio::test]
async fn one_limit_is_shared_by_two_gateways_through_redis() {
    let issuer = Issuer::start().await;
    let up = Upstream::start("svc").await;
    let prefix = format!("gravity-test:{}", Uuid::new_v4());
    let limits = format!(
        "redis_url = \"{}\"\nkey_prefix = \"{prefix}\"\nper_client = {{ requests = 4, period = \"1m\" }}\n",
        redis_url()
    );
    let config = format!("{}{}", auth_section(&issuer), limited_route(&up, &limits));
    let a = Gateway::start(&config).await;
    let b = Gateway::start(&config).await;
    for gw in [&a, &b] {
        ready(gw).await;
        eventually("Redis is connected", || async { redis_up(gw).await }).await;
    }

    let mut statuses = Vec::new();
    for i in 0..6 {
        let gw = if i % 2 == 0 { &a } else { &b };
        let response = gw.get("/api/x").await;
        statuses.push(response.status().as_u16());
        if response.status() == 429 {
            let retry: u64 = response.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((1..=60).contains(&retry), "{retry}");
            assert_eq!(
                problem(response).await["type"],
                "urn:gravity:problem:rate-limited"
            );
        }
    }
    assert_eq!(
        statuses,
        [200, 200, 200, 200, 429, 429],
        "four in all across both"
    );
}

#[tokio::test]
async fn users_are_limited_apart_from_their_address() {
    let issuer = Issuer::start().await;
    let up = Upstream::start("svc").await;
    let limits = "per_user = { requests = 2, period = \"1m\" }\n";
    let gw = Gateway::start(&format!(
        "{}{}",
        auth_section(&issuer),
        limited_route(&up, limits)
    ))
    .await;
    ready(&gw).await;
    let alice = issuer.token(Uuid::new_v4());
    let bob = issuer.token(Uuid::new_v4());
    let status = |t: String| {
        let gw = &gw;
        async move {
            gw.http
                .get(gw.url("/api/x"))
                .bearer_auth(t)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(status(alice.clone()).await, 200);
    assert_eq!(status(alice.clone()).await, 200);
    assert_eq!(status(alice.clone()).await, 429);
    assert_eq!(
        status(bob.clone()).await,
        200,
        "another user has their own budget"
    );
    assert_eq!(
        gw.get("/api/x").await.status(),
        200,
        "anonymous requests have no user limit"
    );
}

async fn redis_up(gw: &Gateway) -> bool {
    gw.routes().await["rate_limit_backend"] == "redis"
}

#[tokio::test]
async fn without_redis_the_local_limiter_keeps_serving() {
    let up = Upstream::start("svc").await;
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("redis://{}", closed.local_addr().unwrap());
    drop(closed);
    let limits = format!(
        "redis_url = \"{dead}\"\nredis_timeout = \"50ms\"\nper_client = {{ requests = 3, period = \"1m\" }}\n"
    );
    let config = format!(
        "[rate_limit]\n{limits}\n[[route]]\nname = \"api\"\nprefix = \"/api\"\naccess = \"public\"\nupstreams = [\"{}\"]\n",
        up.url()
    );
    let gw = Gateway::start(&config).await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(gw.get("/api/x").await.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    assert_eq!(gw.routes().await["rate_limit_backend"], "local-fallback");
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}
