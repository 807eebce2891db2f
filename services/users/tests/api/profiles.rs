//! Profiles through the API: merge patches under the admin's schema and rules, the schema
//! replaced with the misfits named, admin search page by page, preferences.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{caller, problem_type, spawn_app};

#[tokio::test]
async fn a_merge_patch_changes_only_what_it_names_and_is_told() {
    let app = spawn_app().await;
    let ada = caller(&[]);
    app.seed(&ada, "ada@example.com").await;
    let r = app
        .merge(&ada, "/api/v1/users/me", json!({ "display_name": "Ada L.", "locale": "en-GB", "time_zone": "Europe/London", "attributes": { "team": "core" } }))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = app
        .merge(
            &ada,
            "/api/v1/users/me",
            json!({ "locale": null, "attributes": { "pets": 2 } }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let profile: Value = r.json().await.expect("json");
    assert_eq!(profile["display_name"], "Ada L.");
    assert_eq!(profile["locale"], Value::Null);
    assert_eq!(profile["time_zone"], "Europe/London");
    assert_eq!(profile["attributes"], json!({ "team": "core", "pets": 2 }));

    // Bad values are refused, naming the field, and nothing changes.
    for (patch, field) in [
        (json!({ "time_zone": "Mars/Olympus" }), "time_zone"),
        (json!({ "avatar_url": "ftp://x" }), "avatar_url"),
        (json!({ "locale": "english please" }), "locale"),
        (json!({ "email": "x@y.z" }), "email"),
    ] {
        let r = app.merge(&ada, "/api/v1/users/me", patch).await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let body: Value = r.json().await.expect("problem");
        assert_eq!(body["errors"][0]["field"], field, "{body}");
    }
    let (_, now) = app.get_json(&ada, "/api/v1/users/me").await;
    assert_eq!(now, profile);

    // Each change was told, in the change's transaction, and is in the feed.
    let told: Vec<String> = sqlx::query_scalar("SELECT event_type FROM event_outbox ORDER BY id")
        .fetch_all(&app.db)
        .await
        .expect("outbox");
    assert_eq!(
        told,
        ["users.profile.updated.v1", "users.profile.updated.v1"]
    );
    let (_, feed) = app
        .get_json(&ada, "/api/v1/users/me/activity?limit=1")
        .await;
    assert_eq!(
        feed["items"][0]["summary"]["changed"],
        json!(["locale", "attributes.pets"])
    );
    let cursor = feed["next_cursor"].as_i64().expect("a second page");
    let (_, older) = app
        .get_json(&ada, &format!("/api/v1/users/me/activity?cursor={cursor}"))
        .await;
    assert_eq!(older["items"].as_array().map(Vec::len), Some(1));
    assert!(older["next_cursor"].is_null());
}

#[tokio::test]
async fn the_schema_and_rules_decide_what_may_be_stored_read_and_written() {
    let app = spawn_app().await;
    let (ada, bob, admin) = (caller(&[]), caller(&[]), caller(&["admin"]));
    app.seed(&ada, "ada@example.com").await;
    app.seed(&bob, "bob@example.com").await;
    app.merge(
        &ada,
        "/api/v1/users/me",
        json!({ "attributes": { "age": 36 } }),
    )
    .await;
    app.merge(
        &bob,
        "/api/v1/users/me",
        json!({ "attributes": { "age": "old" } }),
    )
    .await;

    // Only admins set the schema; the answer names the profiles that no longer fit.
    let schema = json!({
        "schema": { "type": "object", "properties": { "age": { "type": "integer", "minimum": 0 }, "employee_id": { "type": "string" } } },
        "rules": { "risk": { "read": "admin", "write": "admin" }, "employee_id": { "immutable": true } }
    });
    let request = app.client.put(app.url("/api/v1/schema")).json(&schema);
    assert_eq!(
        app.send(&ada, request).await.status(),
        StatusCode::FORBIDDEN
    );
    let request = app.client.put(app.url("/api/v1/schema")).json(&schema);
    let r = app.send(&admin, request).await;
    assert_eq!(r.status(), StatusCode::OK);
    let replaced: Value = r.json().await.expect("json");
    assert_eq!(replaced["schema"]["version"], 2);
    assert_eq!(replaced["misfit_count"], 1);
    assert_eq!(replaced["misfits"][0]["user_id"], bob.user_id.to_string());
    let bad = app
        .client
        .put(app.url("/api/v1/schema"))
        .json(&json!({ "schema": { "type": 12 } }));
    assert_eq!(
        app.send(&admin, bad).await.status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );

    // The schema is enforced on the next change.
    let r = app
        .merge(
            &ada,
            "/api/v1/users/me",
            json!({ "attributes": { "age": -1 } }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    // Admin-only attributes: a user cannot write or see them; an admin can.
    let r = app
        .merge(
            &ada,
            "/api/v1/users/me",
            json!({ "attributes": { "risk": "low" } }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(problem_type(r).await, "urn:gravity:problem:forbidden");
    let path = format!("/api/v1/users/{}", ada.user_id);
    let r = app
        .merge(
            &admin,
            &path,
            json!({ "attributes": { "risk": "high", "employee_id": "E1" } }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let (_, mine) = app.get_json(&ada, "/api/v1/users/me").await;
    assert_eq!(
        mine["attributes"],
        json!({ "age": 36, "employee_id": "E1" })
    );
    let (_, theirs) = app.get_json(&admin, &path).await;
    assert_eq!(theirs["attributes"]["risk"], "high");
    // Immutable once set, even for an admin.
    let r = app
        .merge(
            &admin,
            &path,
            json!({ "attributes": { "employee_id": "E2" } }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn admins_search_by_email_name_or_attribute_page_by_page() {
    let app = spawn_app().await;
    let admin = caller(&["admin"]);
    let people: Vec<_> = (0..5).map(|_| caller(&[])).collect();
    for (n, who) in people.iter().enumerate() {
        app.seed(who, &format!("p{n}@example.com")).await;
        let team = if n % 2 == 0 { "core" } else { "web" };
        app.merge(who, "/api/v1/users/me", json!({ "display_name": format!("Person_{n}"), "attributes": { "team": team, "level": n } }))
            .await;
    }
    let (status, _) = app.get_json(&people[0], "/api/v1/users").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, found) = app
        .get_json(&admin, "/api/v1/users?email=P3@EXAMPLE.com")
        .await;
    assert_eq!(
        found["profiles"][0]["user_id"],
        people[3].user_id.to_string()
    );
    let (_, found) = app.get_json(&admin, "/api/v1/users?name=son_4").await;
    assert_eq!(found["profiles"].as_array().map(Vec::len), Some(1));
    // A `%` in the name is taken literally.
    let (_, found) = app.get_json(&admin, "/api/v1/users?name=person%25").await;
    assert_eq!(found["profiles"].as_array().map(Vec::len), Some(0));
    let (_, found) = app
        .get_json(&admin, "/api/v1/users?attribute=level&value=2")
        .await;
    assert_eq!(
        found["profiles"][0]["user_id"],
        people[2].user_id.to_string()
    );

    let mut seen = Vec::new();
    let mut path = "/api/v1/users?attribute=team&value=core&limit=2".to_owned();
    loop {
        let (status, page) = app.get_json(&admin, &path).await;
        assert_eq!(status, StatusCode::OK);
        for p in page["profiles"].as_array().expect("profiles") {
            seen.push(p["user_id"].as_str().unwrap_or_default().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => {
                path = format!("/api/v1/users?attribute=team&value=core&limit=2&cursor={cursor}")
            }
            None => break,
        }
    }
    let mut core: Vec<String> = [0, 2, 4]
        .iter()
        .map(|n| people[*n].user_id.to_string())
        .collect();
    core.sort();
    seen.sort();
    assert_eq!(seen, core);
}

#[tokio::test]
async fn preferences_have_defaults_and_refuse_what_they_do_not_know() {
    let app = spawn_app().await;
    let ada = caller(&[]);
    let (status, _) = app.get_json(&ada, "/api/v1/users/me/preferences").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no profile yet");
    app.seed(&ada, "ada@example.com").await;
    let (_, defaults) = app.get_json(&ada, "/api/v1/users/me/preferences").await;
    assert_eq!(defaults["email_notifications"], true);
    assert_eq!(defaults["theme"], "system");
    let put = |body: Value| {
        app.client
            .put(app.url("/api/v1/users/me/preferences"))
            .json(&body)
    };
    let r = app
        .send(&ada, put(json!({ "marketing": true, "theme": "dark" })))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let (_, now) = app.get_json(&ada, "/api/v1/users/me/preferences").await;
    assert_eq!(
        (now["marketing"].as_bool(), now["theme"].as_str()),
        (Some(true), Some("dark"))
    );
    let r = app.send(&ada, put(json!({ "telepathy": true }))).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
}

/// Instances keep the attribute schema by version: one changed through another instance is
/// in force on this one's next read.
#[tokio::test]
async fn a_schema_changed_through_another_instance_is_in_force_on_the_next_read() {
    let first = spawn_app().await;
    let second = first.another_instance().await;
    let (ada, admin) = (caller(&[]), caller(&["admin"]));
    first.seed(&ada, "ada@example.com").await;
    let r = first
        .merge(
            &ada,
            "/api/v1/users/me",
            json!({ "attributes": { "risk": "low" } }),
        )
        .await;
    assert_eq!(r.status(), 200);
    let (_, me) = first.get_json(&ada, "/api/v1/users/me").await;
    assert_eq!(me["attributes"]["risk"], "low", "{me}");

    let schema = json!({
        "schema": { "type": "object" },
        "rules": { "risk": { "read": "admin", "write": "admin" } }
    });
    let request = second
        .client
        .put(second.url("/api/v1/schema"))
        .json(&schema);
    let r = second.send(&admin, request).await;
    assert!(r.status().is_success(), "{}", r.status());

    let (_, me) = first.get_json(&ada, "/api/v1/users/me").await;
    assert!(
        me["attributes"].get("risk").is_none(),
        "hidden from the user now: {me}"
    );
    let (_, seen) = first
        .get_json(&admin, &format!("/api/v1/users/{}", ada.user_id))
        .await;
    assert_eq!(seen["attributes"]["risk"], "low", "{seen}");
}
