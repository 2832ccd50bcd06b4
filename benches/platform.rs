//! Benchmarks of what the platform receives (they print figures; they never fail):
//!
//! ```sh
//! cargo bench --bench platform -- push    # webhook in -> signed push out, p50/p99, paced load
//! cargo bench --bench platform -- feed    # the change feed's cost per change (write and read)
//! ```
//!
//! `DATABASE_URL` names the server (`./dev` provisions one); each mode makes its own database.
//! The load generator and the receiver run in this process, on the same cores as the service.

use billing_ledger::signature::{sign, WebhookSecret};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_postgres::NoTls;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SECRET: &str = "whsec_bench";
const TOKEN: &str = "bench-token";
/// Tenants the push load spreads over.
const TENANTS: usize = 500;
/// Changes written per transaction in the feed benchmark, and transactions.
const FEED_ROWS: usize = 10_000;

fn server_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| billing_ledger::config::DATABASE_URL_DEFAULT.to_owned())
}

async fn fresh_database(name: &str) -> String {
    let mut config: tokio_postgres::Config = server_url().parse().unwrap();
    config.dbname("postgres");
    let (admin, connection) = config.connect(NoTls).await.unwrap();
    tokio::spawn(connection);
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
        .unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let mut config: tokio_postgres::Config = server_url().parse().unwrap();
    config.dbname(name);
    let host = match &config.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(h) => h.clone(),
        tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or("postgres");
    format!("host={host} port={port} user={user} dbname={name}")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn event_body(id: &str, n: usize) -> String {
    format!(
        r#"{{"id":"{id}","object":"event","api_version":"2024-06-20","created":{created},"livemode":false,"type":"customer.subscription.updated","data":{{"object":{{"id":"sub_{t}","object":"subscription","customer":"cus_{t}","status":"active","current_period_end":{end},"cancel_at_period_end":false,"items":{{"object":"list","data":[{{"id":"si_{t}","price":{{"id":"price_pro"}},"quantity":{q}}}]}},"metadata":{{"tenant_id":"tenant-{t}"}}}}}}}}"#,
        created = 1_700_000_000 + n as i64,
        t = n % TENANTS,
        end = 1_702_592_000 + n as i64,
        q = 1 + n,
    )
}

/// Starts the service in this process; returns its base URL.
async fn start_service(database_url: &str) -> String {
    let mut config = billing_ledger::config::Config {
        admin_tokens: vec![TOKEN.into()],
        instance_id: "bench".into(),
        ..billing_ledger::config::Config::local(
            database_url,
            vec![WebhookSecret::parse(SECRET).unwrap()],
        )
    };
    config.platform.platform_tokens = vec![TOKEN.into()];
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(billing_ledger::run(
        config,
        listener,
        std::future::pending(),
    ));
    let http = reqwest::Client::new();
    for _ in 0..400 {
        if http.get(format!("{base}/healthz")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    base
}

/// A receiver that notes when each event's `tenant_pricing` change arrived.
async fn start_receiver(arrived: Arc<Mutex<HashMap<String, Instant>>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let app = poem::Route::new().at(
        "/hook",
        poem::post(poem::endpoint::make(move |mut request: poem::Request| {
            let arrived = arrived.clone();
            async move {
                let body = request.take_body().into_bytes().await.unwrap_or_default();
                let message: serde_json::Value = serde_json::from_slice(&body).unwrap();
                if message["data"]["read_model"] == "tenant_pricing" {
                    let event = message["data"]["event_id"]
                        .as_str()
                        .unwrap_or("")
                        .to_owned();
                    arrived
                        .lock()
                        .unwrap()
                        .entry(event)
                        .or_insert_with(Instant::now);
                }
                poem::http::StatusCode::NO_CONTENT
            }
        })),
    );
    let acceptor = poem::listener::TcpAcceptor::from_tokio(listener).unwrap();
    tokio::spawn(poem::Server::new_with_acceptor(acceptor).run(app));
    url
}

/// Posts `rate` events per second for `seconds`; returns when each was answered 200.
async fn paced_load(base: &str, rate: f64, seconds: u64) -> HashMap<String, Instant> {
    let http = reqwest::Client::new();
    let key = WebhookSecret::parse(SECRET).unwrap();
    let total = (rate * seconds as f64) as usize;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for n in 0..total {
        tokio::time::sleep_until((started + interval * n as u32).into()).await;
        let (http, key, url) = (
            http.clone(),
            key.clone(),
            format!("{base}/api/billing/webhook"),
        );
        tasks.push(tokio::spawn(async move {
            let id = format!("evt_push_{n}");
            let body = event_body(&id, n);
            let header = sign(&key, chrono::Utc::now().timestamp(), body.as_bytes());
            let sent = Instant::now();
            let ok = http
                .post(&url)
                .header("stripe-signature", header)
                .body(body)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            ok.then_some((id, sent))
        }));
    }
    let mut sent = HashMap::new();
    for task in tasks {
        if let Some((id, at)) = task.await.unwrap() {
            sent.insert(id, at);
        }
    }
    sent
}

async fn push() {
    println!("push: webhook posted -> its tenant_pricing change received by an outgoing webhook endpoint");
    println!(
        "{:>10} {:>8} {:>10} {:>10} {:>10}",
        "events/s", "events", "received", "p50 ms", "p99 ms"
    );
    for rate in [20.0, 100.0, 300.0] {
        let url = fresh_database(&format!("billing_ledger_bench_push_{rate}")).await;
        let base = start_service(&url).await;
        let arrived = Arc::new(Mutex::new(HashMap::new()));
        let hook = start_receiver(arrived.clone()).await;
        let created = reqwest::Client::new()
            .post(format!("{base}/api/billing/admin/endpoints"))
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({"url": hook, "read_models": ["tenant_pricing"]}))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
        let sent = paced_load(&base, rate, 10).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let arrived = arrived.lock().unwrap().clone();
        let mut latencies: Vec<Duration> = sent
            .iter()
            .filter_map(|(id, at)| {
                arrived
                    .get(id)
                    .map(|got| got.saturating_duration_since(*at))
            })
            .collect();
        latencies.sort();
        println!(
            "{rate:>10.0} {:>8} {:>10} {:>10.1} {:>10.1}",
            sent.len(),
            latencies.len(),
            percentile(&latencies, 0.5).as_secs_f64() * 1e3,
            percentile(&latencies, 0.99).as_secs_f64() * 1e3
        );
    }
    println!("(events of one tenant within one projector batch merge into one change, so fewer may be received than sent)");
}

/// Times `FEED_ROWS` upserts of `tenant_pricing` in one transaction, captured or not.
async fn upsert_rows(client: &mut tokio_postgres::Client, round: usize) -> Duration {
    let started = Instant::now();
    let tx = client.transaction().await.unwrap();
    tx.execute(
        "INSERT INTO tenant_pricing (tenant_id, status, stripe_subscription_id, price_id, quantity,
             cancel_at_period_end, last_event_id, updated_at, resolved_by)
         SELECT 'tenant-' || i, 'active', 'sub_' || i, 'price_pro', $1, false, 'evt_' || i, now(),
             'subscription_metadata'
         FROM generate_series(1, $2::int) i
         ON CONFLICT (tenant_id) DO UPDATE SET quantity = excluded.quantity",
        &[&(round as i64), &(FEED_ROWS as i32)],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    started.elapsed()
}

async fn feed() {
    let url = fresh_database("billing_ledger_bench_feed").await;
    billing_ledger::db::migrate(&url).await.unwrap();
    let (mut client, connection) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    tokio::spawn(connection);
    upsert_rows(&mut client, 0).await; // the rows exist; every later round updates them all
    let mut plain = Vec::new();
    let mut captured = Vec::new();
    for round in 1..=6 {
        client.batch_execute("ALTER TABLE tenant_pricing DISABLE TRIGGER tenant_pricing_insert_changes, DISABLE TRIGGER tenant_pricing_update_changes").await.unwrap();
        plain.push(upsert_rows(&mut client, round * 2).await);
        client.batch_execute("ALTER TABLE tenant_pricing ENABLE TRIGGER tenant_pricing_insert_changes, ENABLE TRIGGER tenant_pricing_update_changes").await.unwrap();
        captured.push(upsert_rows(&mut client, round * 2 + 1).await);
    }
    plain.sort();
    captured.sort();
    let per = |d: Duration| d.as_secs_f64() * 1e6 / FEED_ROWS as f64;
    let (p, c) = (
        per(plain[plain.len() / 2]),
        per(captured[captured.len() / 2]),
    );
    println!("feed write: {FEED_ROWS} row updates per transaction, median of 6");
    println!(
        "  without capture {p:.1} us/row, with capture {c:.1} us/row: {:.1} us per change",
        c - p
    );
    let row = client
        .query_one(
            "SELECT count(*), pg_total_relation_size('changes') FROM changes",
            &[],
        )
        .await
        .unwrap();
    let (count, bytes): (i64, i64) = (row.get(0), row.get(1));
    println!(
        "  {count} changes take {} bytes on disk: {} bytes per change (table and indexes)",
        bytes,
        bytes / count.max(1)
    );
    let base = start_service(&url).await;
    let http = reqwest::Client::new();
    let started = Instant::now();
    let mut cursor = "0".to_owned();
    let mut read = 0;
    loop {
        let page: serde_json::Value = http
            .get(format!(
                "{base}/api/billing/changes?limit=1000&after={cursor}"
            ))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let n = page["changes"].as_array().unwrap().len();
        if n == 0 {
            break;
        }
        read += n;
        cursor = page["next_cursor"].as_str().unwrap().to_owned();
    }
    let elapsed = started.elapsed();
    println!(
        "feed read: {read} changes in pages of 1,000 over HTTP in {:.2} s: {:.1} us per change",
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e6 / read.max(1) as f64
    );
}

fn main() {
    let mode = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .unwrap_or_else(|| "all".into());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        match mode.as_str() {
            "push" => push().await,
            "feed" => feed().await,
            "all" => {
                push().await;
                feed().await;
            }
            other => eprintln!("unknown benchmark {other:?}: push, feed or all"),
        }
    });
}
