//! Read models listed one by one, and rebuild previews (issue 10, points 7 and 8): a preview
//! reports exactly the rows a rebuild would add, remove and change, swaps nothing, and the real
//! rebuild after it changes exactly those rows (and the feed shows only them); through the API,
//! the CLI and the console.

use crate::console::{csrf, page, post_form, seed, sign_in};
use crate::feed::{burst, read_all};
use crate::support::{
    projection_status, rebuild_and_wait, TestApp, ADMIN_TOKEN, FINANCE_TOKEN, PLATFORM_TOKEN,
};
use serde_json::{json, Value};
use std::time::Duration;

/// Every read model the status route must list, in its order.
const READ_MODELS: [&str; 13] = [
    "tenant_pricing",
    "checkout_sessions",
    "customers",
    "unresolved_events",
    "event_tenants",
    "entitlements",
    "invoices",
    "payments",
    "refunds",
    "disputes",
    "credit_notes",
    "revenue_streams",
    "revenue_movements",
];

/// Three tenants' events, projected.
async fn seeded() -> TestApp {
    let app = TestApp::start().await;
    for event in burst(3) {
        app.deliver(&event).await;
    }
    app.wait_projected().await;
    app
}

/// Queues a preview through the admin API and returns its id.
async fn request_preview(app: &TestApp) -> String {
    let response = app
        .http
        .post(app.url("/api/billing/admin/projections/rebuild"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"preview": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let accepted: Value = response.json().await.unwrap();
    assert_eq!(accepted["preview"], true);
    assert_eq!(accepted["status"], "pending");
    accepted["rebuild_id"].as_str().unwrap().to_owned()
}

/// `GET /api/billing/admin/rebuilds/{id}` once it is done.
async fn finished(app: &TestApp, rebuild_id: &str) -> Value {
    for _ in 0..2_400 {
        let response = app
            .get(
                &format!("/api/billing/admin/rebuilds/{rebuild_id}"),
                ADMIN_TOKEN,
            )
            .await;
        assert_eq!(response.status(), 200);
        let rebuild: Value = response.json().await.unwrap();
        match rebuild["status"].as_str().unwrap() {
            "done" => return rebuild,
            "failed" => panic!("the preview failed: {rebuild}"),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    panic!("the preview did not finish");
}

/// A preview's diff for one read model.
fn model<'a>(diff: &'a Value, name: &str) -> &'a Value {
    diff["read_models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["read_model"] == name)
        .unwrap_or_else(|| panic!("{name} missing from the diff"))
}

/// Rows changed over all read models but `except`.
fn changes_outside(diff: &Value, except: &[&str]) -> i64 {
    diff["read_models"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| !except.contains(&m["read_model"].as_str().unwrap()))
        .map(|m| {
            ["added", "removed", "changed"]
                .iter()
                .map(|k| m[k]["count"].as_i64().unwrap())
                .sum::<i64>()
        })
        .sum()
}

/// Drifts three rows as a changed fold would find them: one changed, one missing, one bogus.
async fn tamper(app: &TestApp) {
    app.db
        .client()
        .await
        .batch_execute(
            "UPDATE tenant_pricing SET quantity = 99 WHERE tenant_id = 'tenant-fd1';
             DELETE FROM checkout_sessions WHERE id = 'cs_fd2';
             INSERT INTO customers (id, tenant_id, email, name, deleted, last_event_id)
                 VALUES ('cus_bogus', NULL, 'nobody@example.com', NULL, false, 'evt_bogus');",
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn each_read_model_is_listed_with_its_exact_row_count_and_version() {
    let app = seeded().await;
    let projection = projection_status(&app).await;
    let models = projection["read_models"].as_array().unwrap();
    let names: Vec<&str> = models.iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(names, READ_MODELS);
    for m in models {
        let name = m["name"].as_str().unwrap();
        let counted = app.db.count(&format!("SELECT count(*) FROM {name}")).await;
        assert_eq!(m["rows"], counted, "{name}");
        assert_eq!(m["rows_counted_by"], "exact", "{name}");
        assert_eq!(m["version"], projection["code_version"], "{name}");
        assert_eq!(m["status"], "live", "{name}");
        assert_eq!(m["checkpoint"], projection["checkpoint"], "{name}");
        assert_eq!(m["lag_events"], 0, "{name}");
    }
    let rows = |name: &str| models.iter().find(|m| m["name"] == name).unwrap()["rows"].clone();
    assert_eq!(
        (rows("tenant_pricing"), rows("checkout_sessions")),
        (json!(3), json!(3))
    );
    // A rebuild records the version it swapped in, per read model.
    let projection = rebuild_and_wait(&app).await;
    for m in projection["read_models"].as_array().unwrap() {
        assert_eq!(m["version"], projection["code_version"]);
        assert!(m["rebuilt_at"].is_string(), "{m}");
    }
}

#[tokio::test]
async fn a_preview_of_an_unchanged_ledger_reports_no_changes() {
    let app = seeded().await;
    let before = crate::support::snapshot(&app.db).await;
    let rebuild_id = request_preview(&app).await;
    let preview = finished(&app, &rebuild_id).await;
    assert_eq!(preview["preview"], true);
    assert_eq!(preview["position_done"], 9);
    assert_eq!(preview["position_target"], 9);
    assert_eq!(preview["seconds_left"], 0.0);
    assert!(preview["rate_events_per_second"].as_f64().unwrap() > 0.0);
    let diff = &preview["diff"];
    assert_eq!(
        diff["read_models"].as_array().unwrap().len(),
        READ_MODELS.len()
    );
    assert_eq!(changes_outside(diff, &[]), 0, "{diff}");
    assert_eq!(crate::support::snapshot(&app.db).await, before);
    // The projection's status shows the preview as its latest rebuild, without `rebuilding`.
    let projection = projection_status(&app).await;
    assert_eq!(projection["rebuild"]["rebuild_id"], rebuild_id.as_str());
    assert_eq!(projection["rebuild"]["preview"], true);
    assert_eq!(projection["status"], "live");
}

#[tokio::test]
async fn a_preview_reports_exactly_the_drifted_rows_and_the_rebuild_repairs_only_those() {
    let app = seeded().await;
    tamper(&app).await;
    let (_, cursor) = read_all(&app, "", 1000).await;
    let rebuild_id = request_preview(&app).await;
    let diff = finished(&app, &rebuild_id).await["diff"].clone();
    let pricing = model(&diff, "tenant_pricing");
    assert_eq!(pricing["changed"]["count"], 1, "{pricing}");
    let changed = &pricing["changed"]["rows"][0];
    assert_eq!(changed["key"], "tenant-fd1");
    assert_eq!(changed["before"]["quantity"], 99);
    assert_eq!(changed["after"]["quantity"], 3);
    let sessions = model(&diff, "checkout_sessions");
    assert_eq!(sessions["added"]["count"], 1, "{sessions}");
    assert_eq!(sessions["added"]["rows"][0]["key"], "cs_fd2");
    assert_eq!(sessions["added"]["rows"][0]["before"], Value::Null);
    assert_eq!(
        sessions["added"]["rows"][0]["after"]["tenant_id"],
        "tenant-fd2"
    );
    let customers = model(&diff, "customers");
    assert_eq!(customers["removed"]["count"], 1, "{customers}");
    assert_eq!(customers["removed"]["rows"][0]["key"], "cus_bogus");
    assert_eq!(customers["removed"]["rows"][0]["after"], Value::Null);
    assert_eq!(
        changes_outside(&diff, &[]),
        3,
        "exactly the three drifted rows: {diff}"
    );
    // The preview swapped nothing.
    let quantity = app
        .db
        .count("SELECT quantity FROM tenant_pricing WHERE tenant_id = 'tenant-fd1'")
        .await;
    assert_eq!(quantity, 99);
    // The real rebuild changes exactly those rows, and the feed shows only them.
    rebuild_and_wait(&app).await;
    let page: Value = app
        .get(
            &format!("/api/billing/changes?after={cursor}&limit=1000"),
            PLATFORM_TOKEN,
        )
        .await
        .json()
        .await
        .unwrap();
    let mut seen: Vec<(String, String)> = page["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            assert_eq!(c["cause"], "rebuild", "{c}");
            (
                c["read_model"].as_str().unwrap().to_owned(),
                c["key"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    seen.sort();
    let expected = [
        ("checkout_sessions", "cs_fd2"),
        ("customers", "cus_bogus"),
        ("tenant_pricing", "tenant-fd1"),
    ]
    .map(|(m, k)| (m.to_owned(), k.to_owned()));
    assert_eq!(seen, expected);
    // And a preview now finds nothing left to change.
    let again = request_preview(&app).await;
    assert_eq!(
        changes_outside(&finished(&app, &again).await["diff"], &[]),
        0
    );
}

#[tokio::test]
async fn a_rebuild_is_read_by_id_and_unknown_or_malformed_ids_are_refused() {
    let app = seeded().await;
    rebuild_and_wait(&app).await;
    let id = projection_status(&app).await["rebuild"]["rebuild_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let rebuild = finished(&app, &id).await;
    assert_eq!(rebuild["preview"], false);
    assert_eq!(rebuild["diff"], Value::Null);
    assert!(rebuild["finished_at"].is_string());
    let unknown = app
        .get(
            "/api/billing/admin/rebuilds/67e55044-10b1-426f-9247-bb680e5fe0c8",
            ADMIN_TOKEN,
        )
        .await;
    assert_eq!(unknown.status(), 404);
    let body: Value = unknown.json().await.unwrap();
    assert_eq!(body["error"], "rebuild not found");
    let malformed = app
        .get("/api/billing/admin/rebuilds/not-a-uuid", ADMIN_TOKEN)
        .await;
    assert_eq!(malformed.status(), 400);
    let body: Value = malformed.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("UUID"), "{body}");
    let finance = app
        .get(&format!("/api/billing/admin/rebuilds/{id}"), FINANCE_TOKEN)
        .await;
    assert_eq!(finance.status(), 403);
    // A body that is not the documented object is a 400, not a rebuild.
    let bad = app
        .http
        .post(app.url("/api/billing/admin/projections/rebuild"))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body("{\"preview\": \"yes\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let untyped = app
        .http
        .post(app.url("/api/billing/admin/projections/rebuild"))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "text/plain")
        .body("{\"preview\": true}")
        .send()
        .await
        .unwrap();
    assert_eq!(untyped.status(), 400);
    let body: Value = untyped.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("application/json"),
        "{body}"
    );
    assert_eq!(
        projection_status(&app).await["rebuild"]["rebuild_id"],
        id.as_str()
    );
}

/// Runs `billing-ledger ARGS` against `url` in a blocking task.
async fn run_cli(url: &str, args: &[&str]) -> std::process::Output {
    let (url, args): (String, Vec<String>) =
        (url.to_owned(), args.iter().map(|a| a.to_string()).collect());
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_billing-ledger"))
            .args(&args)
            .env("DATABASE_URL", url)
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn the_cli_previews_with_its_own_fold_beside_a_running_service_and_alone() {
    let app = seeded().await;
    app.db
        .client()
        .await
        .batch_execute("UPDATE tenant_pricing SET quantity = 99 WHERE tenant_id = 'tenant-fd1'")
        .await
        .unwrap();
    // The service holds the projector; the command still folds with its own binary (a changed
    // fold is previewed before it is deployed) and the service keeps projecting.
    let output = run_cli(&app.db.url, &["rebuild", "--preview"]).await;
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("would change 1 rows"), "{stdout}");
    assert!(
        stdout.contains("changed tenant_pricing tenant-fd1: quantity 99 -> 3"),
        "{stdout}"
    );
    app.deliver(&burst(4)[9]).await;
    app.wait_projected().await;
    let db = app.stop().await;
    // No service at all, and --json prints the API's answer.
    let output = run_cli(&db.url, &["rebuild", "--preview", "--json"]).await;
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(output.status.success(), "{stdout}");
    let preview: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(preview["status"], "done");
    let pricing = model(&preview["diff"], "tenant_pricing");
    assert_eq!(pricing["changed"]["rows"][0]["before"]["quantity"], 99);
    assert_eq!(changes_outside(&preview["diff"], &["tenant_pricing"]), 0);
    assert_eq!(
        db.count("SELECT quantity FROM tenant_pricing WHERE tenant_id = 'tenant-fd1'")
            .await,
        99,
        "a preview swaps nothing"
    );
}

#[tokio::test]
async fn the_operations_page_previews_a_rebuild_and_shows_its_diff_to_admins_only() {
    let app = TestApp::start().await;
    seed(&app).await;
    app.db
        .client()
        .await
        .batch_execute("UPDATE customers SET email = 'drifted@example.com' WHERE id = 'cus_c1'")
        .await
        .unwrap();
    let admin = sign_in(&app, ADMIN_TOKEN).await;
    let (status, html) = page(&app, "/console/operations", Some(&admin)).await;
    assert_eq!(status, 200);
    assert!(html.contains("<code>checkout_sessions</code>"), "{html}");
    assert!(html.contains("Preview rebuild"));
    assert!(html.contains("Outgoing webhooks"));
    let token = csrf(&html);
    let response = post_form(
        &app,
        "/console/operations/preview",
        Some(&admin),
        &format!("csrf={token}"),
    )
    .await;
    assert_eq!(response.status(), 303);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        location.starts_with("/console/operations/rebuilds/"),
        "{location}"
    );
    let mut html = String::new();
    for _ in 0..400 {
        let (status, body) = page(&app, &location, Some(&admin)).await;
        assert_eq!(status, 200);
        html = body;
        if html.contains("What a rebuild would change") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(html.contains("What a rebuild would change"), "{html}");
    assert!(html.contains("Changed (1)"), "{html}");
    assert!(
        html.contains("drifted@example.com"),
        "the before value: {html}"
    );
    assert!(html.contains("ada@example.com"), "the after value: {html}");
    assert!(html.contains(">Rebuild</button>"), "{html}");
    let finance = sign_in(&app, FINANCE_TOKEN).await;
    assert_eq!(page(&app, &location, Some(&finance)).await.0, 403);
    assert_eq!(
        page(&app, "/console/operations", Some(&finance)).await.0,
        403
    );
    let (_, finance_home) = page(&app, "/console/tenants", Some(&finance)).await;
    let refused = post_form(
        &app,
        "/console/operations/preview",
        Some(&finance),
        &format!("csrf={}", csrf(&finance_home)),
    )
    .await;
    assert_eq!(refused.status(), 403);
}

#[tokio::test]
async fn a_preview_left_running_by_a_killed_command_does_not_block_the_queue() {
    let app = seeded().await;
    // What a `rebuild --preview` killed mid-fold leaves: its row running, its lock released.
    let abandoned = "0b9a3c1e-7d7f-4c4e-9d55-3f1f0c2b6a10";
    app.db
        .client()
        .await
        .batch_execute(&format!(
            "INSERT INTO rebuilds (rebuild_id, projection, status, preview, by_command, started_at)
             VALUES ('{abandoned}', 'billing', 'running', true, true, now())"
        ))
        .await
        .unwrap();
    let rebuild_id = request_preview(&app).await;
    assert_eq!(
        changes_outside(&finished(&app, &rebuild_id).await["diff"], &[]),
        0
    );
    let old: Value = app
        .get(
            &format!("/api/billing/admin/rebuilds/{abandoned}"),
            ADMIN_TOKEN,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(old["status"], "failed");
    assert!(
        old["error"].as_str().unwrap().starts_with("abandoned"),
        "{old}"
    );
}

/// A rebuild a leader left `running` when it died (found by the adversarial pass: every later
/// request then answered 409 for good) is queued again by the next leader and runs.
#[tokio::test]
async fn a_rebuild_left_running_by_a_dead_leader_runs_again_under_the_next() {
    let db = crate::support::TestDb::new().await;
    let orphan = uuid::Uuid::new_v4();
    db.client()
        .await
        .execute(
            "INSERT INTO rebuilds (rebuild_id, projection, status, started_at, position_done)
             VALUES ($1, 'billing', 'running', now(), 3000)",
            &[&orphan],
        )
        .await
        .unwrap();
    let config = crate::support::test_config(&db.url);
    let app = TestApp::start_with(db, config).await;
    let path = format!("/api/billing/admin/rebuilds/{orphan}");
    let mut state = serde_json::Value::Null;
    for _ in 0..200 {
        state = app.get(&path, ADMIN_TOKEN).await.json().await.unwrap();
        if state["status"] == "done" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(state["status"], "done", "{state}");
    let again = reqwest::Client::new()
        .post(app.url("/api/billing/admin/projections/rebuild"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 202, "nothing blocks the next request");
}
