//! `cargo bench --bench ledger -- history`: what a page of a tenant's history costs at the
//! start and deep into a long history, for a tenant of 100 events and one of 100,000, and what
//! `as_of` (which folds every event up to its bound) costs at both lengths.

use super::{admin, fresh_database, percentile, start_service, url_for, TOKEN};
use billing_ledger::event_log::{append_batch, Delivery};
use std::time::{Duration, Instant};

const DATABASE: &str = "billing_ledger_bench_history";
const SHORT: i64 = 100;
const LONG: i64 = 100_000;
const REQUESTS: usize = 200;
/// `as_of` folds every event: fewer requests.
const AS_OF_REQUESTS: usize = 10;
const T0: i64 = 1_700_000_000;

/// One `customer.subscription.updated` of `tenant`, a second after the previous one.
fn update(tenant: &str, i: i64) -> Delivery {
    let body = format!(
        r#"{{"id":"evt_{tenant}_{i}","object":"event","type":"customer.subscription.updated","created":{created},"livemode":false,"api_version":"2024-06-20","data":{{"object":{{"id":"sub_{tenant}","object":"subscription","customer":"cus_{tenant}","status":"{status}","current_period_end":{end},"created":{T0},"items":{{"data":[{{"price":{{"id":"price_{p}"}},"quantity":1}}]}},"metadata":{{"tenant_id":"{tenant}"}},"description":"{pad}"}}}}}}"#,
        created = T0 + i,
        status = if i % 3 == 2 { "past_due" } else { "active" },
        end = T0 + i + 2_592_000,
        p = i % 2,
        pad = "x".repeat(1_000),
    );
    Delivery::imported(body.into(), chrono::Utc::now()).unwrap()
}

async fn append(pool: &deadpool_postgres::Pool, tenant: &str, events: i64) {
    let ids: Vec<i64> = (0..events).collect();
    for chunk in ids.chunks(2_000) {
        let batch: Vec<Delivery> = chunk.iter().map(|&i| update(tenant, i)).collect();
        append_batch(pool, &batch.iter().collect::<Vec<_>>())
            .await
            .unwrap();
    }
}

/// Median and p99 of `requests` sequential GETs of `path`, in milliseconds.
async fn time(http: &reqwest::Client, base: &str, path: &str, requests: usize) -> (f64, f64) {
    let mut latencies = Vec::with_capacity(requests);
    for _ in 0..requests {
        let sent = Instant::now();
        let r = http
            .get(format!("{base}{path}"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.bytes().await.unwrap();
        latencies.push(sent.elapsed());
    }
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    (
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99)),
    )
}

/// The cursor of the page that starts `skip` events into `tenant`'s history.
async fn cursor_at(http: &reqwest::Client, base: &str, tenant: &str, skip: i64) -> String {
    let mut cursor = String::new();
    let mut seen = 0;
    while seen < skip {
        let limit = (skip - seen).min(1_000);
        let mut path = format!("{base}/api/billing/tenants/{tenant}/history?limit={limit}");
        if !cursor.is_empty() {
            path = format!("{path}&cursor={cursor}");
        }
        let response = http.get(&path).bearer_auth(TOKEN).send().await.unwrap();
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        let page: serde_json::Value = response.json().await.unwrap();
        cursor = page["next_cursor"].as_str().unwrap().to_owned();
        seen += limit;
    }
    cursor
}

pub async fn history() {
    let url = fresh_database(DATABASE).await;
    billing_ledger::db::migrate(&url).await.unwrap();
    let pool = billing_ledger::db::pool(&url).unwrap();
    let started = Instant::now();
    append(&pool, "tenant-short", SHORT).await;
    append(&pool, "tenant-long", LONG).await;
    eprintln!(
        "history: log generated in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let service = start_service(&url).await;
    let (client, connection) = tokio_postgres::connect(&url_for(DATABASE), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    loop {
        let row = client
            .query_one(
                "SELECT (SELECT position FROM log_head), coalesce((SELECT position FROM projections), 0)",
                &[],
            )
            .await
            .unwrap();
        if row.get::<_, i64>(0) == row.get::<_, i64>(1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    client.batch_execute("ANALYZE").await.unwrap();
    let http = reqwest::Client::new();
    let base = service.base.clone();
    println!("history: {REQUESTS} sequential requests each ({AS_OF_REQUESTS} for as_of), pages of 100 events");
    println!("{:<58} {:>8} {:>8}", "request", "p50 ms", "p99 ms");
    for (tenant, events) in [("tenant-short", SHORT), ("tenant-long", LONG)] {
        let history = format!("/api/billing/tenants/{tenant}/history?limit=100");
        let (p50, p99) = time(&http, &base, &history, REQUESTS).await;
        println!(
            "{:<58} {p50:>8.1} {p99:>8.1}",
            format!("{tenant} ({events} events): first page")
        );
        let cursor = cursor_at(&http, &base, tenant, events - 100).await;
        let last_page = match cursor.as_str() {
            "" => history.clone(),
            cursor => format!("{history}&cursor={cursor}"),
        };
        let (p50, p99) = time(&http, &base, &last_page, REQUESTS).await;
        println!(
            "{:<58} {p50:>8.1} {p99:>8.1}",
            format!(
                "{tenant} ({events} events): last page ({} KB cursor)",
                cursor.len() / 1024
            )
        );
        let as_of = format!("/api/billing/tenants/{tenant}/pricing?as_of=2100-01-01T00:00:00Z");
        let (p50, p99) = time(&http, &base, &as_of, AS_OF_REQUESTS).await;
        println!(
            "{:<58} {p50:>8.1} {p99:>8.1}",
            format!("{tenant} ({events} events): as_of")
        );
    }
    let _ = service.stop.send(());
    let _ = service.task.await;
    drop(client);
    admin()
        .await
        .batch_execute(&format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"))
        .await
        .unwrap();
}
