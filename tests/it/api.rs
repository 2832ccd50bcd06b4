//! The read and admin API: tokens, roles, errors, pagination.

use crate::events::envelope;
use crate::support::{TestApp, ADMIN_TOKEN, FINANCE_TOKEN};
use serde_json::{json, Value};

const READ_ROUTES: [&str; 9] = [
    "/api/billing/events",
    "/api/billing/tenants/t-missing/history",
    "/api/billing/tenants/t-missing/pricing?as_of=2024-01-01T00:00:00Z",
    "/api/billing/events/evt_missing",
    "/api/billing/tenants/t-missing/pricing",
    "/api/billing/checkout-sessions/cs_missing",
    "/api/billing/checkout-sessions?tenant_id=t-missing",
    "/api/billing/customers/cus_missing",
    "/api/billing/unresolved",
];

#[tokio::test]
async fn tokens_and_roles_guard_every_route() {
    let app = TestApp::start().await;
    let admin_routes = [
        "/api/billing/admin/projections",
        "/api/billing/admin/verify",
    ];
    for path in READ_ROUTES.iter().chain(&admin_routes) {
        let none = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(none.status(), 401, "{path} without a token");
        assert_eq!(none.headers()["www-authenticate"], "Bearer");
        let body: Value = none.json().await.unwrap();
        assert!(body["error"].is_string(), "{path}: JSON error");
        let wrong = app.get(path, "not-a-token").await;
        assert_eq!(wrong.status(), 401, "{path} with a wrong token");
        assert!(wrong.json::<Value>().await.unwrap()["error"].is_string());
    }
    for path in READ_ROUTES {
        for token in [FINANCE_TOKEN, ADMIN_TOKEN] {
            let status = app.get(path, token).await.status();
            let expected = if path.contains("missing") && !path.contains("?tenant_id=") {
                404
            } else {
                200
            };
            assert_eq!(status, expected, "{path}");
        }
    }
    for path in admin_routes {
        assert_eq!(app.get(path, FINANCE_TOKEN).await.status(), 403, "{path}");
        assert_eq!(app.get(path, ADMIN_TOKEN).await.status(), 200, "{path}");
    }
    let rebuild = "/api/billing/admin/projections/rebuild";
    let post = |token: &'static str| app.http.post(app.url(rebuild)).bearer_auth(token).send();
    let forbidden = post(FINANCE_TOKEN).await.unwrap();
    assert_eq!(forbidden.status(), 403);
    assert!(forbidden.json::<Value>().await.unwrap()["error"]
        .as_str()
        .unwrap()
        .contains("admin"));
    assert_eq!(
        app.http
            .post(app.url(rebuild))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(post(ADMIN_TOKEN).await.unwrap().status(), 202);
    let missing = app
        .get("/api/billing/events/evt_missing", FINANCE_TOKEN)
        .await;
    assert_eq!(
        missing.json::<Value>().await.unwrap(),
        json!({"error": "event not found"})
    );
    let unknown = app.get("/api/billing/nothing-here", FINANCE_TOKEN).await;
    assert_eq!(unknown.status(), 404);
    assert!(unknown.json::<Value>().await.unwrap()["error"].is_string());
}

#[tokio::test]
async fn events_page_by_cursor_and_filter() {
    let app = TestApp::start().await;
    for i in 0..7 {
        let event_type = if i % 2 == 0 {
            "customer.created"
        } else {
            "customer.updated"
        };
        let object = json!({"id": format!("cus_{}", i % 3), "object": "customer"});
        app.deliver(&envelope(
            &format!("evt_page_{i}"),
            event_type,
            1_700_000_000 + i,
            object,
        ))
        .await;
    }
    let mut seen = Vec::new();
    let mut path = "/api/billing/events?limit=3".to_owned();
    loop {
        let page = app.get_json(&path).await;
        let events = page["events"].as_array().unwrap();
        assert!(events.len() <= 3);
        seen.extend(
            events
                .iter()
                .map(|e| e["event_id"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/billing/events?limit=3&cursor={cursor}"),
            None => break,
        }
    }
    let expected: Vec<String> = (0..7).map(|i| format!("evt_page_{i}")).collect();
    assert_eq!(seen, expected);

    let updated = app
        .get_json("/api/billing/events?type=customer.updated")
        .await;
    assert_eq!(updated["events"].as_array().unwrap().len(), 3);
    let one = app
        .get_json("/api/billing/events?type=customer.created&object_id=cus_0")
        .await;
    let ids: Vec<&str> = one["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["evt_page_0", "evt_page_6"]);
    let window = app
        .get_json("/api/billing/events?from=2023-11-14T22:13:21Z&to=2023-11-14T22:13:22Z")
        .await;
    assert_eq!(window["events"].as_array().unwrap().len(), 2);

    for path in [
        "/api/billing/events/%00",
        "/api/billing/customers/a%00b",
        "/api/billing/tenants/%00/pricing",
    ] {
        let response = app.get(path, FINANCE_TOKEN).await;
        assert_eq!(response.status(), 400, "{path}");
        assert!(response.json::<Value>().await.unwrap()["error"]
            .as_str()
            .unwrap()
            .contains("NUL"));
    }
    for bad in [
        "limit=0",
        "limit=1001",
        "cursor=%21%21",
        "from=yesterday",
        "type=%00",
        "from=-5000-01-01T00:00:00Z",
        "to=300000-01-01T00:00:00Z",
    ] {
        let response = app
            .get(&format!("/api/billing/events?{bad}"), FINANCE_TOKEN)
            .await;
        assert_eq!(response.status(), 400, "{bad}");
        assert!(
            response.json::<Value>().await.unwrap()["error"].is_string(),
            "{bad}"
        );
        // The CSV export reads its first page before answering, so it fails the same way.
        let response = app
            .http
            .get(app.url(&format!("/api/billing/events?{bad}")))
            .bearer_auth(FINANCE_TOKEN)
            .header("accept", "text/csv")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "CSV {bad}");
    }
    let response = app
        .get(
            "/api/billing/tenants/t/pricing?as_of=-5000-01-01T00:00:00Z",
            FINANCE_TOKEN,
        )
        .await;
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn event_detail_shows_every_delivery() {
    let app = TestApp::start().await;
    let event = envelope(
        "evt_detail",
        "customer.created",
        1_700_000_000,
        json!({"id": "cus_d", "object": "customer"}),
    );
    app.deliver(&event).await;
    app.deliver(&event).await;
    let detail = app.get_json("/api/billing/events/evt_detail").await;
    assert_eq!(detail["position"], 1);
    assert_eq!(detail["type"], "customer.created");
    assert_eq!(detail["source"], "webhook");
    assert_eq!(detail["secret_index"], 0);
    let deliveries = detail["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 2);
    assert_eq!(deliveries[0]["duplicate"], false);
    assert_eq!(deliveries[1]["duplicate"], true);
    assert_eq!(
        deliveries[1]["body"],
        Value::Null,
        "same bytes are not stored twice"
    );
}

#[tokio::test]
async fn probes_and_docs_answer() {
    let app = TestApp::start().await;
    assert_eq!(
        app.http
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        app.http
            .get(app.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let spec = app.http.get(app.url("/openapi.yaml")).send().await.unwrap();
    assert_eq!(spec.status(), 200);
    assert!(spec.text().await.unwrap().contains("/api/billing/webhook"));
    let docs = app.http.get(app.url("/docs")).send().await.unwrap();
    assert_eq!(docs.status(), 200);
    assert!(docs.text().await.unwrap().contains("swagger"));
}

#[tokio::test]
async fn csv_streams_the_same_rows_as_json() {
    let app = TestApp::start().await;
    for i in 0..5 {
        let object = json!({"id": format!("cus_,\"{i}"), "object": "customer"});
        app.deliver(&envelope(
            &format!("evt_csv_{i}"),
            "customer.created",
            1_700_000_000 + i,
            object,
        ))
        .await;
    }
    let json_rows = app.get_json("/api/billing/events").await["events"].clone();
    let response = app
        .http
        .get(app.url("/api/billing/events"))
        .bearer_auth(FINANCE_TOKEN)
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let text = response.text().await.unwrap();
    let lines: Vec<&str> = text.split("\r\n").collect();
    let rows = json_rows.as_array().unwrap();
    assert_eq!(
        lines.len(),
        rows.len() + 2,
        "a header, one record per event, a final CRLF"
    );
    assert_eq!(lines.last(), Some(&""));
    assert_eq!(lines[0], "position,event_id,type,created,api_version,livemode,account,object_id,object_type,received_at,source,tenant_id,customer_id,amount,currency");
    for (line, row) in lines[1..].iter().zip(rows) {
        let object_id = row["object_id"].as_str().unwrap().replace('"', "\"\"");
        let expected = format!(
            "{},{},{},{},{},{},,\"{}\",customer,{},webhook,,,,",
            row["position"],
            row["event_id"].as_str().unwrap(),
            row["type"].as_str().unwrap(),
            row["created"].as_str().unwrap(),
            row["api_version"].as_str().unwrap(),
            row["livemode"],
            object_id,
            row["received_at"].as_str().unwrap(),
        );
        assert_eq!(*line, expected);
    }
}

#[tokio::test]
async fn paging_while_events_arrive_misses_nothing_and_repeats_nothing() {
    use billing_ledger::event_log::{append_batch, Delivery};
    let app = TestApp::start().await;
    let pool = billing_ledger::db::pool(&app.db.url).unwrap();
    let writer = tokio::spawn(async move {
        for batch in 0..50 {
            let deliveries: Vec<Delivery> = (0..100)
                .map(|i| {
                    let id = format!("evt_conc_{batch}_{i}");
                    let body = envelope(
                        &id,
                        "customer.updated",
                        1_700_000_000 + batch,
                        json!({"id": format!("cus_{i}")}),
                    );
                    Delivery::imported(body.to_string().into(), chrono::Utc::now()).unwrap()
                })
                .collect();
            append_batch(&pool, &deliveries.iter().collect::<Vec<_>>())
                .await
                .unwrap();
        }
    });
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/billing/events?limit=137&cursor={c}"),
            None => "/api/billing/events?limit=137".to_owned(),
        };
        let page = app.get_json(&path).await;
        seen.extend(
            page["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["position"].as_i64().unwrap()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None if writer.is_finished() && seen.len() == 5_000 => break,
            None => {
                // Caught up with the writer: continue from the last row seen.
                if let Some(last) = seen.last() {
                    cursor = Some(billing_ledger::http::paging::encode_cursor(*last));
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
    writer.await.unwrap();
    let expected: Vec<i64> = (1..=5_000).collect();
    assert_eq!(seen, expected, "every position once, in order");
}

#[tokio::test]
async fn metrics_count_outcomes_and_report_the_projection() {
    let app = TestApp::start().await;
    let event = envelope(
        "evt_m1",
        "customer.created",
        1_700_000_000,
        json!({"id": "cus_m", "object": "customer"}),
    );
    app.deliver(&event).await;
    app.deliver(&event).await;
    assert_eq!(
        app.post_signed(b"{}", Some("t=1,v1=00")).await.status(),
        401
    );
    app.wait_projected().await;
    let text = app.metrics().await;
    for line in [
        "billing_ledger_webhooks_total{outcome=\"stored\"} 1",
        "billing_ledger_webhooks_total{outcome=\"duplicate\"} 1",
        "billing_ledger_webhooks_total{outcome=\"bad_signature\"} 1",
        "billing_ledger_append_duration_seconds_count 2",
        "billing_ledger_log_head_position 1",
        "billing_ledger_projection_position 1",
        "billing_ledger_projection_lag_events 0",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
}
