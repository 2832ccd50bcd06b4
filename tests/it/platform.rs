//! What the platform reads: the platform token role, tenant queries, and entitlements from the
//! plans file (price mapping, grace periods, unknown prices, reloads), each change in the feed.

use crate::events::subscription;
use crate::support::{test_config, TestApp, TestDb, ADMIN_TOKEN, FINANCE_TOKEN, PLATFORM_TOKEN};
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

const T0: i64 = 1_700_000_000;
const MONTH: i64 = 2_592_000;

const PLANS: &str = r#"
[plans.basic]
prices = ["price_basic"]
features = ["courses"]

[plans.pro]
prices = ["price_pro"]
features = ["courses", "analytics"]
grace_period = "6s"
"#;

/// A plans file of this test's own.
fn plans_file(text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("blt-plans-{}.toml", uuid::Uuid::new_v4()));
    std::fs::write(&path, text).unwrap();
    path
}

async fn start_with_plans(path: &std::path::Path) -> TestApp {
    let db = TestDb::new().await;
    let mut config = test_config(&db.url);
    config.platform.plans_file = Some(path.to_path_buf());
    TestApp::start_with(db, config).await
}

/// A subscription event naming its tenant, on `price`.
fn sub_event(id: &str, created: i64, tenant: &str, status: &str, price: &str) -> Value {
    let sub = format!("sub_{tenant}");
    let mut event = subscription(
        id,
        "customer.subscription.updated",
        created,
        &sub,
        &format!("cus_{tenant}"),
        status,
        T0 + MONTH,
    );
    event["data"]["object"]["metadata"]["tenant_id"] = tenant.into();
    event["data"]["object"]["items"]["data"][0]["price"]["id"] = price.into();
    event
}

/// A renewal's `invoice.payment_failed` at `created` for `tenant`'s subscription.
fn payment_failed(id: &str, created: i64, tenant: &str) -> Value {
    crate::events::invoice(
        id,
        "invoice.payment_failed",
        created,
        &format!("in_{id}"),
        &format!("cus_{tenant}"),
        &format!("sub_{tenant}"),
        "subscription_cycle",
        false,
    )
}

#[tokio::test]
async fn a_platform_token_reads_the_feed_tenants_and_entitlements_but_no_finance_data() {
    let app = TestApp::start().await;
    for path in ["/api/billing/changes", "/api/billing/tenants"] {
        for token in [PLATFORM_TOKEN, FINANCE_TOKEN, ADMIN_TOKEN] {
            assert_eq!(app.get(path, token).await.status(), 200, "{path}");
        }
        assert_eq!(
            app.http.get(app.url(path)).send().await.unwrap().status(),
            401
        );
    }
    for path in [
        "/api/billing/events",
        "/api/billing/unresolved",
        "/api/billing/tenants/t/pricing",
        "/api/billing/admin/projections",
    ] {
        let refused = app.get(path, PLATFORM_TOKEN).await;
        assert_eq!(refused.status(), 403, "{path}");
        assert!(refused.json::<Value>().await.unwrap()["error"].is_string());
    }
    // Without a plans file, entitlements say so.
    let missing = app
        .get("/api/billing/tenants/t/entitlements", PLATFORM_TOKEN)
        .await;
    assert_eq!(missing.status(), 404);
    assert!(missing.text().await.unwrap().contains("LEDGER_PLANS_FILE"));
}

#[tokio::test]
async fn tenants_filter_by_status_price_plan_and_time_and_page_as_json_and_csv() {
    let path = plans_file(PLANS);
    let app = start_with_plans(&path).await;
    app.deliver(&sub_event("evt_t1", T0, "tenant-a", "active", "price_pro"))
        .await;
    app.deliver(&sub_event(
        "evt_t2",
        T0 + 10,
        "tenant-b",
        "past_due",
        "price_basic",
    ))
    .await;
    app.deliver(&sub_event(
        "evt_t3",
        T0 + 20,
        "tenant-c",
        "active",
        "price_basic",
    ))
    .await;
    app.deliver(&sub_event(
        "evt_t4",
        T0 + 30,
        "tenant-d",
        "canceled",
        "price_gone",
    ))
    .await;
    app.wait_projected().await;
    let keys = |page: &Value| -> Vec<String> {
        page["tenants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["tenant_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let app = &app;
    let get = |query: &'static str| async move {
        let response = app
            .get(&format!("/api/billing/tenants{query}"), PLATFORM_TOKEN)
            .await;
        assert_eq!(response.status(), 200, "{query}");
        response.json::<Value>().await.unwrap()
    };
    assert_eq!(
        keys(&get("").await),
        ["tenant-a", "tenant-b", "tenant-c", "tenant-d"]
    );
    assert_eq!(keys(&get("?status=active").await), ["tenant-a", "tenant-c"]);
    assert_eq!(
        keys(&get("?price_id=price_basic").await),
        ["tenant-b", "tenant-c"]
    );
    assert_eq!(keys(&get("?plan=basic&status=active").await), ["tenant-c"]);
    assert_eq!(
        keys(&get("?updated_since=2023-11-14T22:13:40Z").await),
        ["tenant-c", "tenant-d"]
    );
    let first = get("?limit=3").await;
    assert_eq!(keys(&first), ["tenant-a", "tenant-b", "tenant-c"]);
    assert_eq!(first["tenants"][0]["plan"], "pro");
    assert_eq!(first["tenants"][0]["access"], "full");
    let cursor = first["next_cursor"].as_str().unwrap();
    let rest = app
        .get(
            &format!("/api/billing/tenants?limit=3&cursor={cursor}"),
            PLATFORM_TOKEN,
        )
        .await;
    let rest: Value = rest.json().await.unwrap();
    assert_eq!(keys(&rest), ["tenant-d"]);
    assert_eq!(rest["next_cursor"], Value::Null);
    let csv = app
        .http
        .get(app.url("/api/billing/tenants?status=active"))
        .bearer_auth(PLATFORM_TOKEN)
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert!(csv.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let text = csv.text().await.unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].starts_with("tenant_id,status,price_id,quantity,plan,access"));
    assert!(lines[1].starts_with("tenant-a,active,price_pro,3,pro,full,"));
    std::fs::remove_file(path).unwrap();
}

async fn entitlement(app: &TestApp, tenant: &str) -> Value {
    let response = app
        .get(
            &format!("/api/billing/tenants/{tenant}/entitlements"),
            PLATFORM_TOKEN,
        )
        .await;
    assert_eq!(response.status(), 200, "{tenant}");
    response.json().await.unwrap()
}

/// The feed's entitlement changes of `tenant`.
async fn entitlement_changes(app: &TestApp, tenant: &str) -> Vec<Value> {
    let page: Value = app
        .get(
            &format!("/api/billing/changes?read_model=entitlements&tenant_id={tenant}"),
            PLATFORM_TOKEN,
        )
        .await
        .json()
        .await
        .unwrap();
    page["changes"].as_array().unwrap().clone()
}

#[tokio::test]
async fn entitlements_map_prices_keep_grace_then_expire_and_report_unknown_prices() {
    let path = plans_file(PLANS);
    let app = start_with_plans(&path).await;
    let now = chrono::Utc::now().timestamp();
    app.deliver(&sub_event(
        "evt_e1",
        now - 100,
        "tenant-pro",
        "active",
        "price_pro",
    ))
    .await;
    app.deliver(&sub_event(
        "evt_e2",
        now - 100,
        "tenant-odd",
        "active",
        "price_unknown",
    ))
    .await;
    app.deliver(&sub_event(
        "evt_e3",
        now - 100,
        "tenant-old",
        "past_due",
        "price_basic",
    ))
    .await;
    app.deliver(&payment_failed("evt_e4", now - 30 * 86_400, "tenant-old"))
        .await;
    app.wait_projected().await;
    let pro = entitlement(&app, "tenant-pro").await;
    assert_eq!(
        (&pro["plan"], &pro["access"], &pro["reason"]),
        (&"pro".into(), &"full".into(), &"active".into())
    );
    assert_eq!(pro["features"], serde_json::json!(["courses", "analytics"]));
    let odd = entitlement(&app, "tenant-odd").await;
    assert_eq!(
        (&odd["plan"], &odd["access"], &odd["reason"]),
        (&Value::Null, &"none".into(), &"unknown_price".into())
    );
    assert_eq!(odd["price_id"], "price_unknown");
    // basic's grace period is the default 7 days; the failure was 30 days ago.
    let old = entitlement(&app, "tenant-old").await;
    assert_eq!(
        (&old["access"], &old["reason"]),
        (&"none".into(), &"past_due_grace_expired".into())
    );

    // pro's grace period is 6 s: grace now, none once it has passed, each change in the feed.
    let failed_at = chrono::Utc::now().timestamp();
    app.deliver(&sub_event(
        "evt_e5",
        failed_at,
        "tenant-pro",
        "past_due",
        "price_pro",
    ))
    .await;
    app.deliver(&payment_failed("evt_e6", failed_at, "tenant-pro"))
        .await;
    app.wait_projected().await;
    let grace = entitlement(&app, "tenant-pro").await;
    assert_eq!(grace["access"], "grace");
    let until =
        chrono::DateTime::parse_from_rfc3339(grace["grace_until"].as_str().unwrap()).unwrap();
    assert_eq!(until.timestamp(), failed_at + 6);
    let mut expired = Value::Null;
    for _ in 0..200 {
        expired = entitlement(&app, "tenant-pro").await;
        if expired["access"] == "none" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        (&expired["access"], &expired["reason"]),
        (&"none".into(), &"past_due_grace_expired".into())
    );
    let changes = entitlement_changes(&app, "tenant-pro").await;
    // The payment failure may fold in the subscription's batch or the next (then it only
    // moves `last_event_id`): consecutive repeats of one state are merged.
    let mut access: Vec<(&str, &str)> = changes
        .iter()
        .map(|c| {
            (
                c["after"]["access"].as_str().unwrap(),
                c["cause"].as_str().unwrap(),
            )
        })
        .collect();
    access.dedup_by_key(|(state, _)| *state);
    assert_eq!(
        access,
        [
            ("full", "event"),
            ("grace", "event"),
            ("none", "grace_expired")
        ]
    );
    std::fs::remove_file(path).unwrap();
}

#[tokio::test]
async fn a_reloaded_plans_file_rewrites_entitlements_and_a_bad_one_changes_nothing() {
    let path = plans_file(PLANS);
    let app = start_with_plans(&path).await;
    app.deliver(&sub_event(
        "evt_r1",
        T0,
        "tenant-r",
        "active",
        "price_basic",
    ))
    .await;
    app.wait_projected().await;
    assert_eq!(
        entitlement(&app, "tenant-r").await["features"],
        serde_json::json!(["courses"])
    );
    let reload = || {
        app.http
            .post(app.url("/api/billing/admin/plans/reload"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
    };
    // A broken file: 400 naming the line, the plans in force stay.
    std::fs::write(&path, "[plans.basic]\nprices = [\"price_basic\"]\nfeatures = [\"courses\", \"quizzes\"]\ngrace = 3\n").unwrap();
    let refused = reload().await.unwrap();
    assert_eq!(refused.status(), 400);
    let error = refused.json::<Value>().await.unwrap()["error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(error.contains("line 4"), "{error}");
    assert_eq!(
        entitlement(&app, "tenant-r").await["features"],
        serde_json::json!(["courses"])
    );
    // A good one: the entitlement changes, and the feed says why.
    std::fs::write(
        &path,
        "[plans.basic]\nprices = [\"price_basic\"]\nfeatures = [\"courses\", \"quizzes\"]\n",
    )
    .unwrap();
    let reloaded = reload().await.unwrap();
    assert_eq!(reloaded.status(), 200);
    assert_eq!(reloaded.json::<Value>().await.unwrap()["changed"], true);
    assert_eq!(
        entitlement(&app, "tenant-r").await["features"],
        serde_json::json!(["courses", "quizzes"])
    );
    let changes = entitlement_changes(&app, "tenant-r").await;
    assert_eq!(changes.len(), 2);
    assert_eq!(changes[1]["cause"], "plans_reload");
    assert_eq!(
        changes[1]["before"]["features"],
        serde_json::json!(["courses"])
    );
    // The same file again changes nothing.
    let again: Value = reload().await.unwrap().json().await.unwrap();
    assert_eq!(again["changed"], false);
    assert_eq!(entitlement_changes(&app, "tenant-r").await.len(), 2);
    // Only admins reload.
    let finance = app
        .http
        .post(app.url("/api/billing/admin/plans/reload"))
        .bearer_auth(FINANCE_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(finance.status(), 403);
    std::fs::remove_file(path).unwrap();
}

#[tokio::test]
async fn a_plans_file_that_does_not_check_stops_start_up_naming_the_line() {
    let path = plans_file("[plans.a]\nprices = [\"p\"]\n\n[plans.b]\nprices = [\"p\"]\n");
    let db = TestDb::new().await;
    let mut config = test_config(&db.url);
    config.platform.plans_file = Some(path.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let error = billing_ledger::run(config, listener, std::future::pending())
        .await
        .unwrap_err();
    let message = format!("{error:#}");
    assert!(
        message.starts_with("LEDGER_PLANS_FILE") && message.contains("line 5"),
        "{message}"
    );
    std::fs::remove_file(path).unwrap();
}

#[tokio::test]
async fn entitlements_map_products_and_a_price_mapping_outranks_its_product() {
    let path = plans_file(
        "[plans.basic]\nprices = [\"price_promo\"]\nfeatures = [\"courses\"]\n\
         [plans.pro]\nproducts = [\"prod_pro\"]\nfeatures = [\"courses\", \"sso\"]\n",
    );
    let app = start_with_plans(&path).await;
    let now = chrono::Utc::now().timestamp();
    let on_product = |id: &str, tenant: &str, price: &str, product: Value| {
        let mut event = sub_event(id, now - 100, tenant, "active", price);
        event["data"]["object"]["items"]["data"][0]["price"]["product"] = product;
        event
    };
    let expanded = serde_json::json!({"id": "prod_pro", "object": "product"});
    app.deliver(&on_product(
        "evt_p1",
        "tenant-a",
        "price_pro_new",
        "prod_pro".into(),
    ))
    .await;
    app.deliver(&on_product("evt_p2", "tenant-b", "price_promo", expanded))
        .await;
    app.deliver(&on_product(
        "evt_p3",
        "tenant-c",
        "price_x",
        "prod_x".into(),
    ))
    .await;
    app.wait_projected().await;
    let a = entitlement(&app, "tenant-a").await;
    assert_eq!((&a["plan"], &a["access"]), (&"pro".into(), &"full".into()));
    assert_eq!(a["features"], serde_json::json!(["courses", "sso"]));
    // price_promo is mapped itself: its plan wins over its product's.
    assert_eq!(entitlement(&app, "tenant-b").await["plan"], "basic");
    let c = entitlement(&app, "tenant-c").await;
    assert_eq!(
        (&c["plan"], &c["reason"]),
        (&Value::Null, &"unknown_price".into())
    );

    let pricing: Value = app
        .get("/api/billing/tenants/tenant-b/pricing", FINANCE_TOKEN)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(pricing["product_id"], "prod_pro");
    let page: Value = app
        .get("/api/billing/tenants?plan=pro", PLATFORM_TOKEN)
        .await
        .json()
        .await
        .unwrap();
    let tenants = page["tenants"].as_array().unwrap();
    assert_eq!(tenants.len(), 1, "{page}");
    assert_eq!(tenants[0]["product_id"], "prod_pro");
    let _ = std::fs::remove_file(&path);
}
