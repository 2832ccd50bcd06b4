//! Election to live on the rebuild benchmark's log (issue 10 point 5): a `serve` process is
//! started on the rebuilt log, and the time from its start until it has projected a new event
//! is printed against [`super::ELECTION_TARGET_SECS`], with its resident memory while tailing.
//! Once from the snapshot the rebuild wrote, once with the snapshot deleted (a full fold of the
//! log, as every election did before), which writes the snapshot again. Then a takeover: a
//! leader and a follower with a warm standby run side by side, the leader is killed, and the
//! time from the kill until the follower has projected a new event is printed against the same
//! target (what a deploy or a crash of the leader costs the read models).

use super::{sign, WebhookSecret, ELECTION_TARGET_SECS, SECRET};
use std::time::{Duration, Instant};
use tokio_postgres::NoTls;

/// Events posted while tailing, before the resident memory is read.
const TAIL_EVENTS: usize = 200;

/// One election's figures.
struct Election {
    /// From the process's start until a new event was projected.
    live: Duration,
    /// The projector's own resume time, and what it did (`projector_elections`).
    resume_ms: i64,
    snapshot_position: Option<i64>,
    events_folded: i64,
    /// Resident and peak resident memory of the process after tailing, KiB.
    rss_kib: u64,
    peak_kib: u64,
}

/// Runs both elections on `url` and prints their figures.
pub async fn election(url: &str) {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(connection);
    let row = client
        .query_opt(
            "SELECT position, length(state)::int8 FROM projection_snapshots",
            &[],
        )
        .await
        .unwrap();
    let Some(row) = row else {
        println!("election: no snapshot after the rebuild; skipped");
        return;
    };
    let (position, bytes): (i64, i64) = (row.get(0), row.get(1));
    println!(
        "election: snapshot at position {position}, {:.1} MiB",
        bytes as f64 / 1_048_576.0
    );
    let from_snapshot = elect(url, &client, "snap").await;
    report("from the snapshot", &from_snapshot);
    client
        .batch_execute("DELETE FROM projection_snapshots")
        .await
        .unwrap();
    let full = elect(url, &client, "full").await;
    report("no snapshot (full fold) ", &full);
    takeover(url, &client).await;
}

/// A `serve` process on `url` listening on a free port; returns it and its base URL.
fn serve(url: &str) -> (std::process::Child, String) {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_billing-ledger"))
        .arg("serve")
        .env("DATABASE_URL", url)
        .env("STRIPE_WEBHOOK_SECRET", SECRET)
        .env("LEDGER_LISTEN", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    (child, format!("http://127.0.0.1:{port}"))
}

/// Posts marker event `n` to `base` until it is accepted.
async fn post_marker(base: &str, tag: &str, n: usize) {
    let http = reqwest::Client::new();
    let body = format!(
        r#"{{"id":"evt_bench_{tag}_{n}","object":"event","type":"bench.marker","created":1700000000,"livemode":false,"data":{{"object":{{"id":"x"}}}}}}"#
    );
    loop {
        let header = sign(
            &WebhookSecret::parse(SECRET).unwrap(),
            chrono::Utc::now().timestamp(),
            body.as_bytes(),
        );
        let sent = http
            .post(format!("{base}/api/billing/webhook"))
            .header("stripe-signature", header)
            .body(body.clone())
            .send()
            .await;
        if sent.is_ok_and(|r| r.status().is_success()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A leader and a follower with a warm standby; the leader is killed (SIGKILL) and the time
/// until the follower has projected a new event is printed, with the follower's memory.
async fn takeover(url: &str, client: &tokio_postgres::Client) {
    let tag = format!("takeover_{}", chrono::Utc::now().timestamp_millis());
    let (mut leader, leader_base) = serve(url);
    post_marker(&leader_base, &tag, 0).await;
    wait_projected(client).await;
    let (mut follower, follower_base) = serve(url);
    let standing = Instant::now();
    loop {
        let row = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM projector_standbys s, projections p
                                WHERE s.position = p.position)",
                &[],
            )
            .await
            .unwrap();
        if row.get::<_, bool>(0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let loaded = standing.elapsed();
    leader.kill().unwrap();
    leader.wait().unwrap();
    let killed = Instant::now();
    post_marker(&follower_base, &tag, 1).await;
    wait_projected(client).await;
    let live = killed.elapsed().as_secs_f64();
    let (rss_kib, peak_kib) = memory_kib(follower.id());
    follower.kill().unwrap();
    follower.wait().unwrap();
    let row = client
        .query_one(
            "SELECT duration_ms, standby_position, checkpoint FROM projector_elections
             ORDER BY elected_at DESC LIMIT 1",
            &[],
        )
        .await
        .unwrap();
    let (resume_ms, standby, checkpoint): (i64, Option<i64>, i64) =
        (row.get(0), row.get(1), row.get(2));
    println!(
        "  takeover by a warm standby, leader killed to a new event projected: {live:.2} s \
         (target {ELECTION_TARGET_SECS} s: {}); election {resume_ms} ms, standby at {standby:?}, \
         checkpoint {checkpoint}; the standby took {:.1} s to load beside the leader",
        if live < ELECTION_TARGET_SECS {
            "met"
        } else {
            "missed"
        },
        loaded.as_secs_f64()
    );
    println!(
        "    follower process after taking over: RSS {:.0} MiB (peak {:.0} MiB)",
        rss_kib as f64 / 1024.0,
        peak_kib as f64 / 1024.0
    );
}

fn report(label: &str, e: &Election) {
    let seconds = e.live.as_secs_f64();
    println!(
        "  election to live, {label}: {seconds:.2} s (target {ELECTION_TARGET_SECS} s: {}); resume {} ms, snapshot {:?}, {} events folded",
        if seconds < ELECTION_TARGET_SECS { "met" } else { "missed" },
        e.resume_ms,
        e.snapshot_position,
        e.events_folded,
    );
    println!(
        "    projector process while tailing: RSS {:.0} MiB (peak {:.0} MiB)",
        e.rss_kib as f64 / 1024.0,
        e.peak_kib as f64 / 1024.0
    );
}

/// Starts `serve`, posts a marker and waits until it is projected; then posts
/// [`TAIL_EVENTS`] more, waits for them, reads the process's memory and kills it.
async fn elect(url: &str, client: &tokio_postgres::Client, tag: &str) -> Election {
    let started = Instant::now();
    let (mut child, base) = serve(url);
    let tag = format!("election_{tag}_{}", chrono::Utc::now().timestamp_millis());
    post_marker(&base, &tag, 0).await;
    wait_projected(client).await;
    let live = started.elapsed();
    for n in 1..=TAIL_EVENTS {
        post_marker(&base, &tag, n).await;
    }
    wait_projected(client).await;
    let (rss_kib, peak_kib) = memory_kib(child.id());
    child.kill().unwrap();
    child.wait().unwrap();
    let row = client
        .query_one(
            "SELECT duration_ms, snapshot_position, events_folded FROM projector_elections
             ORDER BY elected_at DESC LIMIT 1",
            &[],
        )
        .await
        .unwrap();
    Election {
        live,
        resume_ms: row.get(0),
        snapshot_position: row.get(1),
        events_folded: row.get(2),
        rss_kib,
        peak_kib,
    }
}

async fn wait_projected(client: &tokio_postgres::Client) {
    loop {
        let row = client
            .query_one(
                "SELECT (SELECT position FROM log_head), coalesce((SELECT position FROM projections), 0)",
                &[],
            )
            .await
            .unwrap();
        if row.get::<_, i64>(0) == row.get::<_, i64>(1) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `VmRSS` and `VmHWM` of process `pid`, KiB (0 when /proc is not there).
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}
