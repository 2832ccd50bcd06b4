//! The ingest benchmark: signed webhooks against `pgbench`'s durable single-row insert of the
//! same body on the same database, at the concurrencies Stripe's deliveries use. Two load
//! generators: tasks in this process (reqwest) and `wrk`, an external one, replaying
//! pre-signed distinct events (`bench/wrk-webhook.lua`). Each concurrency runs the service
//! under both and then pgbench, back to back, so the ratios compare one window of a shared
//! machine.

use super::{
    event_body, fresh_database, percentile, server_url, start_service, INGEST_SECONDS, SECRET,
};
use billing_ledger::signature::{sign, WebhookSecret};
use std::io::Write;
use std::time::{Duration, Instant};
use tokio_postgres::NoTls;

/// (concurrency, target ratio to pgbench): issue 14's targets.
const TARGETS: [(usize, f64); 3] = [(4, 0.6), (16, 0.7), (64, 0.8)];
/// Target p99 at half the maximum rate, milliseconds.
const PACED_P99_TARGET_MS: f64 = 50.0;
/// Pre-signed events written for one `wrk` run; past them `wrk` replays (duplicates), which
/// the rate below does not count.
const WRK_EVENTS: usize = 80_000;

/// Posts signed events from `workers` tasks for `seconds`, optionally paced to `rate` per
/// second overall; returns (accepted per second, sorted latencies).
async fn load(
    base: &str,
    workers: usize,
    seconds: u64,
    rate: Option<f64>,
    run: usize,
) -> (f64, Vec<Duration>) {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(workers)
        .build()
        .unwrap();
    let key = WebhookSecret::parse(SECRET).unwrap();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..workers {
        let (http, key, url) = (
            http.clone(),
            key.clone(),
            format!("{base}/api/billing/webhook"),
        );
        let interval = rate.map(|r| Duration::from_secs_f64(workers as f64 / r));
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut n = 0usize;
            // Paced workers start evenly spread over one interval, not all at once.
            let mut next =
                started + interval.map_or(Duration::ZERO, |i| i * worker as u32 / workers as u32);
            while Instant::now() < deadline {
                if let Some(interval) = interval {
                    tokio::time::sleep_until(next.into()).await;
                    next += interval;
                }
                let id = format!("evt_r{run}_w{worker}_{n}");
                let body = event_body(&id, worker * 1_000_000 + n, 2_200);
                let header = sign(&key, chrono::Utc::now().timestamp(), body.as_bytes());
                let sent = Instant::now();
                let response = http
                    .post(&url)
                    .header("stripe-signature", header)
                    .body(body)
                    .send()
                    .await;
                if response.map(|r| r.status().is_success()).unwrap_or(false) {
                    latencies.push(sent.elapsed());
                }
                n += 1;
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    (latencies.len() as f64 / elapsed, latencies)
}

/// Samples the projection's lag every 50 ms for `during`, then times its catch-up:
/// (most events behind, most seconds behind, seconds to reach the head afterwards).
async fn sample_lag(url: String, during: Duration) -> (i64, f64, f64) {
    let (client, connection) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    tokio::spawn(connection);
    let sql = "SELECT h.position - coalesce(p.position, 0),
                      coalesce(extract(epoch FROM now() - (SELECT received_at FROM events
                          WHERE position = coalesce(p.position, 0) + 1))::float8, 0)
               FROM log_head h LEFT JOIN projections p ON p.name = 'billing'";
    let (mut max_events, mut max_seconds) = (0i64, 0f64);
    let end = Instant::now() + during;
    while Instant::now() < end {
        let row = client.query_one(sql, &[]).await.unwrap();
        max_events = max_events.max(row.get(0));
        max_seconds = max_seconds.max(row.get(1));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stopped = Instant::now();
    while client.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (max_events, max_seconds, stopped.elapsed().as_secs_f64())
}

/// pgbench's transactions per second for the shipped durable single-row insert.
fn pgbench(database: &str, clients: usize, seconds: u64) -> Option<f64> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/pgbench-insert.sql");
    let config: tokio_postgres::Config = server_url().parse().unwrap();
    let host = match &config.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(h) => h.clone(),
        tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
    };
    let port = config
        .get_ports()
        .first()
        .copied()
        .unwrap_or(5432)
        .to_string();
    let user = config.get_user().unwrap_or("postgres").to_owned();
    let bin = std::fs::read_dir("/usr/lib/postgresql")
        .ok()
        .and_then(|dirs| {
            dirs.filter_map(|d| d.ok())
                .map(|d| d.path().join("bin/pgbench"))
                .find(|p| p.exists())
        })
        .unwrap_or_else(|| "pgbench".into());
    let output = std::process::Command::new(bin)
        .args([
            "-n",
            "-h",
            &host,
            "-p",
            &port,
            "-U",
            &user,
            "-c",
            &clients.to_string(),
            "-j",
            "2",
        ])
        .args(["-T", &seconds.to_string(), "-f", script, database])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !text.contains("tps = ") {
        let error = String::from_utf8_lossy(&output.stderr);
        let reason = error
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no output");
        println!("pgbench -c {clients} gave no rate: {reason}");
    }
    text.lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| {
            l.trim_start_matches("tps = ")
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
}

/// The events stored in the log so far.
async fn stored(url: &str) -> i64 {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
        .query_one("SELECT position FROM log_head", &[])
        .await
        .unwrap()
        .get(0)
}

/// Writes [`WRK_EVENTS`] distinct deliveries, signed now, for `bench/wrk-webhook.lua`.
fn write_deliveries(path: &std::path::Path, run: usize) -> std::io::Result<()> {
    let key = WebhookSecret::parse(SECRET).unwrap();
    let now = chrono::Utc::now().timestamp();
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    for n in 0..WRK_EVENTS {
        let body = event_body(&format!("evt_wrk{run}_{n}"), 5_000_000 + n, 2_200);
        let header = sign(&key, now, body.as_bytes());
        writeln!(file, "{header}\t{body}")?;
    }
    file.flush()
}

/// A duration as wrk prints it (`850.12us`, `4.61ms`, `1.02s`), in milliseconds.
fn wrk_milliseconds(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let value: f64 = text[..split].parse().ok()?;
    match &text[split..] {
        "us" => Some(value / 1e3),
        "ms" => Some(value),
        "s" => Some(value * 1e3),
        "m" => Some(value * 60e3),
        _ => None,
    }
}

/// What one wrk run measured.
struct External {
    events_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// Runs wrk with `connections` against the service for [`INGEST_SECONDS`]; None (with a line
/// saying why) when wrk is not installed or fails.
async fn wrk(base: &str, url: &str, connections: usize, run: usize) -> Option<External> {
    let threads = connections.min(2);
    let path = std::env::temp_dir().join(format!(
        "billing-ledger-wrk-{}-{run}.tsv",
        std::process::id()
    ));
    write_deliveries(&path, run).ok()?;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/wrk-webhook.lua");
    let args = vec![
        format!("-t{threads}"),
        format!("-c{connections}"),
        format!("-d{INGEST_SECONDS}s"),
        "--latency".to_owned(),
        "-s".to_owned(),
        script.to_owned(),
        base.to_owned(),
        "--".to_owned(),
        path.display().to_string(),
        threads.to_string(),
    ];
    let before = stored(url).await;
    let output =
        tokio::task::spawn_blocking(move || std::process::Command::new("wrk").args(&args).output())
            .await
            .unwrap();
    let after = stored(url).await;
    std::fs::remove_file(&path).ok();
    let output = match output {
        Ok(output) if output.status.success() => output,
        Ok(output) => {
            println!("wrk failed: {}", String::from_utf8_lossy(&output.stderr));
            return None;
        }
        Err(error) => {
            println!(
                "wrk not run ({error}); install it (apt-get install wrk) for the external load"
            );
            return None;
        }
    };
    let text = String::from_utf8_lossy(&output.stdout);
    let percentile = |label: &str| {
        text.lines()
            .map(str::split_whitespace)
            .find_map(|mut words| {
                (words.next() == Some(label))
                    .then(|| words.next())
                    .flatten()
            })
            .and_then(wrk_milliseconds)
    };
    // "  123456 requests in 8.00s, 12.34MB read"
    let seconds = text
        .lines()
        .find_map(|l| l.split(" requests in ").nth(1))
        .and_then(|rest| rest.split(',').next())
        .and_then(wrk_milliseconds)
        .map_or(INGEST_SECONDS as f64, |ms| ms / 1e3);
    Some(External {
        events_per_second: (after - before) as f64 / seconds,
        p50_ms: percentile("50%")?,
        p99_ms: percentile("99%")?,
    })
}

/// One line of the ingest table.
struct Row<'a> {
    concurrency: usize,
    generator: &'a str,
    events_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    pgbench_tps: Option<f64>,
    target: f64,
}

impl Row<'_> {
    fn print(&self) {
        let ratio = self.pgbench_tps.map(|t| self.events_per_second / t);
        println!(
            "{:>11} {:>10} {:>9.0} {:>8.1} {:>8.1} {:>12} {:>6} {:>7} {:>6}",
            self.concurrency,
            self.generator,
            self.events_per_second,
            self.p50_ms,
            self.p99_ms,
            self.pgbench_tps.map_or("n/a".into(), |t| format!("{t:.0}")),
            ratio.map_or("n/a".into(), |r| format!("{r:.2}")),
            format!("{:.1}", self.target),
            ratio.map_or("n/a", |r| if r >= self.target { "met" } else { "below" }),
        );
    }
}

pub async fn ingest() {
    let url = fresh_database("billing_ledger_bench_ingest").await;
    let service = start_service(&url).await;
    let client = {
        let (c, conn) = tokio_postgres::connect(&url, NoTls).await.unwrap();
        tokio::spawn(conn);
        c
    };
    client
        .batch_execute("CREATE TABLE IF NOT EXISTS pgbench_events (id bigserial PRIMARY KEY, event_id text UNIQUE NOT NULL, body bytea NOT NULL, received_at timestamptz NOT NULL DEFAULT now())")
        .await
        .unwrap();
    println!("ingest: signed ~3 KB events, {INGEST_SECONDS} s per run, service + PostgreSQL + load on one machine; per concurrency: in-process load, wrk, then pgbench");
    println!(
        "{:>11} {:>10} {:>9} {:>8} {:>8} {:>12} {:>6} {:>7} {:>6}",
        "concurrency", "load", "events/s", "p50 ms", "p99 ms", "pgbench tps", "ratio", "target", ""
    );
    let mut max_rate: f64 = 0.0;
    let mut lag_lines = Vec::new();
    for (run, (workers, target)) in TARGETS.into_iter().enumerate() {
        let sampler = tokio::spawn(sample_lag(url.clone(), Duration::from_secs(INGEST_SECONDS)));
        let (rate, latencies) = load(&service.base, workers, INGEST_SECONDS, None, run).await;
        lag_lines.push((workers, sampler.await.unwrap()));
        max_rate = max_rate.max(rate);
        let external = wrk(&service.base, &url, workers, run).await;
        let tps = pgbench("billing_ledger_bench_ingest", workers, INGEST_SECONDS);
        Row {
            concurrency: workers,
            generator: "in-process",
            events_per_second: rate,
            p50_ms: percentile(&latencies, 0.50).as_secs_f64() * 1e3,
            p99_ms: percentile(&latencies, 0.99).as_secs_f64() * 1e3,
            pgbench_tps: tps,
            target,
        }
        .print();
        if let Some(external) = external {
            Row {
                concurrency: workers,
                generator: "wrk",
                events_per_second: external.events_per_second,
                p50_ms: external.p50_ms,
                p99_ms: external.p99_ms,
                pgbench_tps: tps,
                target,
            }
            .print();
        }
    }
    for (workers, (max_events, max_seconds, catch_up)) in lag_lines {
        println!(
            "projection lag at concurrency {workers}: at most {max_events} events / {max_seconds:.3} s behind; caught up {catch_up:.2} s after the load stopped"
        );
    }
    let half = max_rate / 2.0;
    let (rate, latencies) = load(&service.base, 64, INGEST_SECONDS, Some(half), 9).await;
    let p99_ms = percentile(&latencies, 0.99).as_secs_f64() * 1e3;
    println!(
        "paced at half the maximum ({half:.0}/s, 64 workers): {rate:.0} events/s, p50 {:.1} ms, p99 {p99_ms:.1} ms (target under {PACED_P99_TARGET_MS} ms: {})",
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        if p99_ms < PACED_P99_TARGET_MS { "met" } else { "missed" },
    );
    let _ = service.stop.send(());
    let _ = service.task.await;
}
