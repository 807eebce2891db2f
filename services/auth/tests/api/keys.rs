use reqwest::StatusCode;
use serde_json::Value;
use std::time::Duration;

use crate::helpers::{access, spawn_app};

fn kid_of(token: &str) -> String {
    service_kit::jwt::TokenVerifier::kid_of(token).unwrap()
}

#[tokio::test]
async fn the_jwks_publishes_the_signing_key() {
    let app = spawn_app().await;
    let r = app
        .client
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()["cache-control"]
        .to_str()
        .unwrap()
        .contains("max-age"));
    let jwks: Value = r.json().await.unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["kty"], "OKP");
    assert_eq!(keys[0]["crv"], "Ed25519");
    assert_eq!(keys[0]["alg"], "EdDSA");
    assert!(
        keys[0].get("d").is_none(),
        "the private part must never be published"
    );

    let (_, tokens) = app.new_user().await;
    assert_eq!(kid_of(access(&tokens)), keys[0]["kid"].as_str().unwrap());
    // A verifier built from the JWKS alone (as the gateway does) accepts the token.
    let jwks: service_kit::jwt::Jwks = serde_json::from_value(jwks).unwrap();
    let t = &app.state.settings.tokens;
    let verifier = service_kit::jwt::TokenVerifier::new(&t.issuer, &t.audience, &jwks);
    assert!(verifier.verify(access(&tokens)).is_ok());
}

#[tokio::test]
async fn rotation_signs_with_the_new_key_and_still_verifies_the_old_one() {
    let app = spawn_app().await;
    let (email, before) = app.new_user().await;
    let old_kid = kid_of(access(&before));

    let new_kid = auth::keys::rotate(&app.db, Duration::from_secs(960))
        .await
        .unwrap();
    app.state.keys.reload(true).await.unwrap();

    let jwks: Value = app
        .client
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids, [new_kid.as_str(), old_kid.as_str()]);

    let after = app.login_ok(&email, crate::helpers::PASSWORD).await;
    assert_eq!(kid_of(access(&after)), new_kid);
    assert_eq!(
        app.get("/api/v1/me", access(&before)).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        app.get("/api/v1/me", access(&after)).await.status(),
        StatusCode::OK
    );

    // Once retired, the old key is no longer published, and its tokens no longer verify.
    sqlx::query("UPDATE signing_keys SET retire_at = now() - interval '1 second' WHERE kid = $1")
        .bind(&old_kid)
        .execute(&app.db)
        .await
        .unwrap();
    app.state.keys.reload(true).await.unwrap();
    assert_eq!(
        app.get("/api/v1/me", access(&before)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.get("/api/v1/me", access(&after)).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_second_instance_picks_up_a_rotation_on_an_unknown_kid() {
    let app = spawn_app().await;
    // A second instance on the same database, as behind a load balancer.
    let other = crate::helpers::spawn_with(app.env.clone()).await;
    let (email, _) = app.new_user().await;
    auth::keys::rotate(&app.db, Duration::from_secs(960))
        .await
        .unwrap();
    app.state.keys.reload(true).await.unwrap();
    let fresh = app.login_ok(&email, crate::helpers::PASSWORD).await;
    // The other instance loaded its keys at start-up; it reloads when it meets the new kid
    // (rate-limited to once per five seconds).
    tokio::time::sleep(Duration::from_millis(5100)).await;
    assert_eq!(
        other.get("/api/v1/me", access(&fresh)).await.status(),
        StatusCode::OK
    );
}
