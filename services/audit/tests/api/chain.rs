//! The log as an auditor sees it: reports chained in order, searched page by page, every
//! read recorded, a changed or cut record found by `verify`, and an export that proves itself.

use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{caller, problem_type, spawn_app, spawn_with};

#[tokio::test]
async fn reports_are_chained_searchable_once_per_id_and_reading_is_recorded() {
    let app = spawn_app().await;
    let reporter = caller(&["reporter"]);
    let auditor = caller(&["auditor"]);
    let id = Uuid::now_v7();
    let r = app
        .report(
            &reporter,
            json!({ "id": id, "actor": "alice", "action": "orders.order.refunded", "target": "order-1", "data": { "amount": 12.5, "api_token": "t" } }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let first: Value = r.json().await.expect("json");
    assert_eq!(
        (first["seq"].as_i64(), first["duplicate"].as_bool()),
        (Some(1), Some(false))
    );
    // The same id again: recorded once.
    let again = app
        .report(
            &reporter,
            json!({ "id": id, "action": "orders.order.refunded" }),
        )
        .await;
    assert_eq!(again.status(), StatusCode::OK);
    let again: Value = again.json().await.expect("json");
    assert_eq!(
        (again["seq"].as_i64(), again["duplicate"].as_bool()),
        (Some(1), Some(true))
    );

    let batch = app
        .send(
            &reporter,
            app.client
                .post(app.url("/api/v1/events/batch"))
                .json(&json!({ "events": [
                    { "actor": "alice", "action": "orders.order.shipped", "target": "order-1" },
                    { "actor": "bob", "action": "orders.order.refunded", "target": "order-2" },
                ]})),
        )
        .await;
    assert_eq!(batch.status(), StatusCode::CREATED);
    let batch: Value = batch.json().await.expect("json");
    let seqs: Vec<i64> = batch["records"]
        .as_array()
        .expect("records")
        .iter()
        .filter_map(|r| r["seq"].as_i64())
        .collect();
    assert_eq!(seqs, [2, 3]);

    // Bad input is refused, and nothing is written.
    let bad = app
        .report(&reporter, json!({ "action": "Not An Action" }))
        .await;
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem_type(bad).await, "urn:gravity:problem:validation");
    let no_action = app.report(&reporter, json!({ "actor": "alice" })).await;
    assert_eq!(no_action.status(), StatusCode::UNPROCESSABLE_ENTITY);

    // Only readers read; only reporters report.
    let r = app
        .send(&reporter, app.client.get(app.url("/api/v1/records")))
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = app.report(&auditor, json!({ "action": "x" })).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    // Alice's refunds, newest first, one per page.
    let page = app
        .get_json(&auditor, "/api/v1/records?actor=alice&limit=1")
        .await;
    assert_eq!(page["records"][0]["action"], "orders.order.shipped");
    let cursor = page["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let page = app
        .get_json(
            &auditor,
            &format!("/api/v1/records?actor=alice&limit=1&cursor={cursor}"),
        )
        .await;
    assert_eq!(page["records"][0]["action"], "orders.order.refunded");
    assert_eq!(page["records"][0]["data"]["amount"], 12.5);
    assert_eq!(page["records"][0]["data"]["api_token"], "[redacted]");
    assert!(page["next_cursor"].is_null(), "{page}");

    // Both searches were recorded, by whom and with what.
    let reads = app
        .get_json(&auditor, "/api/v1/records?action=audit.records.read")
        .await;
    let reads = reads["records"].as_array().expect("records");
    assert_eq!(reads.len(), 2, "{reads:?}");
    assert_eq!(reads[0]["actor"], auditor.user_id.to_string());
    assert_eq!(reads[1]["data"]["actor"], "alice");
}

#[tokio::test]
async fn the_services_own_role_cannot_change_or_remove_a_record() {
    let app = spawn_app().await;
    let reporter = caller(&["reporter"]);
    let r = app.report(&reporter, json!({ "action": "x.y" })).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    for statement in [
        "UPDATE audit_records SET actor = 'mallory'",
        "DELETE FROM audit_records",
        "TRUNCATE audit_records",
        "DELETE FROM audit_checkpoints",
    ] {
        let refused = sqlx::query(statement).execute(&app.db).await;
        assert!(refused.is_err(), "{statement} must be refused");
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_records")
        .fetch_one(&app.db)
        .await
        .expect("count");
    assert_eq!(count, 1);
}

#[tokio::test]
async fn verify_names_the_first_changed_record_and_a_cut_tail() {
    let app = spawn_app().await;
    let (reporter, admin) = (caller(&["reporter"]), caller(&["admin"]));
    for n in 1..=5 {
        let r = app
            .report(&reporter, json!({ "action": "x.step", "data": { "n": n } }))
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let checkpoint = app
        .send(&admin, app.client.post(app.url("/api/v1/checkpoints")))
        .await;
    assert_eq!(checkpoint.status(), StatusCode::OK);
    let checkpoint: Value = checkpoint.json().await.expect("json");
    assert_eq!(checkpoint["seq"], 5);

    let verdict = app.get_json(&admin, "/api/v1/verify").await;
    assert_eq!(verdict["ok"], true, "{verdict}");
    assert_eq!(verdict["checkpoint"]["seq"], 5);

    // Someone with the owner's powers edits record 3.
    app.tamper("UPDATE audit_records SET data = '{\"n\":30}' WHERE seq = 3")
        .await;
    let verdict = app.get_json(&admin, "/api/v1/verify").await;
    assert_eq!(verdict["ok"], false);
    assert_eq!(verdict["first_broken"]["seq"], 3, "{verdict}");

    // Records cut off the end: every remaining link holds, the checkpoint does not.
    let app = spawn_with(&[]).await;
    for _ in 1..=4 {
        app.report(&reporter, json!({ "action": "x.step" })).await;
    }
    app.send(&admin, app.client.post(app.url("/api/v1/checkpoints")))
        .await;
    app.tamper("DELETE FROM audit_records WHERE seq >= 3").await;
    sqlx::query(
        "UPDATE audit_head SET seq = 2, hash = (SELECT hash FROM audit_records WHERE seq = 2)",
    )
    .execute(&app.db)
    .await
    .expect("move the head back");
    let verdict = app.get_json(&admin, "/api/v1/verify").await;
    assert_eq!(verdict["ok"], false, "{verdict}");
    assert_eq!(verdict["first_broken"]["seq"], 4, "{verdict}");
    assert!(
        verdict["first_broken"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("tail was cut")),
        "{verdict}"
    );
}

#[tokio::test]
async fn an_export_verifies_on_its_own_and_a_changed_line_does_not() {
    let app = spawn_app().await;
    let (reporter, auditor, admin) = (
        caller(&["reporter"]),
        caller(&["auditor"]),
        caller(&["admin"]),
    );
    for n in 1..=3 {
        app.report(&reporter, json!({ "action": "x.step", "data": { "n": n } }))
            .await;
    }
    app.send(&admin, app.client.post(app.url("/api/v1/checkpoints")))
        .await;
    let key = app.get_json(&auditor, "/api/v1/key").await;
    let key = key["public_key"].as_str().expect("a key").to_owned();
    let r = app
        .send(
            &auditor,
            app.client.get(app.url("/api/v1/export?from_seq=2")),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "application/x-ndjson");
    let export = r.text().await.expect("text");
    let lines: Vec<&str> = export.lines().collect();
    assert!(
        lines[0].contains("\"anchor\"") && lines[1].contains("\"checkpoint\""),
        "{export}"
    );

    let dir = std::env::temp_dir().join(format!("audit-export-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("a folder");
    let whole = dir.join("whole.jsonl");
    std::fs::write(&whole, &export).expect("write");
    let run = |file: &std::path::Path, key: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_audit"))
            .args(["verify-export", &file.to_string_lossy(), "--key", key])
            .output()
            .expect("run the audit binary")
    };
    let out = run(&whole, &key);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("whole: 2 records up to 3"));

    let changed = dir.join("changed.jsonl");
    std::fs::write(&changed, export.replacen("{\"n\":2}", "{\"n\":20}", 1)).expect("write");
    let out = run(&changed, &key);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("broken at record 2"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Signed with another key than the one pinned: refused.
    let other = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let out = run(&whole, other);
    assert!(!out.status.success());
    let _ = std::fs::remove_dir_all(&dir);
}
