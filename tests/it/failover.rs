//! Failover without re-folding the log: a new leader loads the latest fold-state snapshot and
//! folds only the events after it, and its rows equal a rebuild's (issue 10, point 5).

use crate::events::{checkout_completed, invoice, subscription};
use crate::process::ServeProcess;
use crate::support::{post_to, rebuild_and_wait, snapshot, test_config, TestApp, TestDb};
use serde_json::Value;
use std::time::Duration;

const T0: i64 = 1_700_000_000;
/// Snapshot interval the tests run with, so a few hundred events write several.
const EVERY_EVENTS: i64 = 40;

/// The `n`th event of a stream where every fourth event starts a tenant's subscription and the
/// others move it along (invoices included, so money state is carried too). Tenants are
/// reused, so later subscriptions replace earlier ones on a tenant's row.
fn event(prefix: &str, n: usize) -> Value {
    let (k, step) = (n / 4, n % 4);
    let (tenant, cus, sub) = (
        format!("t{}", k % 7),
        format!("cus_{prefix}{k}"),
        format!("sub_{prefix}{k}"),
    );
    let id = format!("evt_{prefix}{n}");
    let at = T0 + n as i64;
    match step {
        0 => subscription(
            &id,
            "customer.subscription.created",
            at,
            &sub,
            &cus,
            "incomplete",
            at + 2_592_000,
        ),
        1 => invoice(
            &id,
            "invoice.paid",
            at,
            &format!("in_{prefix}{k}"),
            &cus,
            &sub,
            "subscription_create",
            true,
        ),
        // The tenant arrives after the subscription: its events resolve here.
        2 => checkout_completed(&id, at, &format!("cs_{prefix}{k}"), &tenant, &cus, &sub),
        _ => subscription(
            &id,
            "customer.subscription.updated",
            at,
            &sub,
            &cus,
            "active",
            at + 2_592_000,
        ),
    }
}

/// These instances resume cold (snapshot plus tail), the path every election took before warm
/// standbys and the one a follower still takes when it has none; `standby.rs` tests the warm one.
fn config(db: &TestDb) -> billing_ledger::config::Config {
    billing_ledger::config::Config {
        snapshot_every_events: EVERY_EVENTS,
        projector_standby: false,
        ..test_config(&db.url)
    }
}

async fn deliver(app: &TestApp, prefix: &str, events: std::ops::Range<usize>) {
    for n in events {
        app.deliver(&event(prefix, n)).await;
    }
}

/// The election of instance `instance_id`, once it is recorded: `(snapshot position, fallback
/// reason, checkpoint, events folded)`.
async fn election(db: &TestDb, instance_id: &str) -> (Option<i64>, Option<String>, i64, i64) {
    let client = db.client().await;
    for _ in 0..400 {
        let row = client
            .query_opt(
                "SELECT snapshot_position, fallback_reason, checkpoint, events_folded
                 FROM projector_elections WHERE instance_id = $1",
                &[&instance_id],
            )
            .await
            .unwrap();
        if let Some(row) = row {
            return (row.get(0), row.get(1), row.get(2), row.get(3));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{instance_id} was not elected");
}

/// The stored snapshot's position, if any.
async fn snapshot_position(db: &TestDb) -> Option<i64> {
    db.client()
        .await
        .query_opt("SELECT position FROM projection_snapshots", &[])
        .await
        .unwrap()
        .map(|r| r.get(0))
}

/// Waits until the live projector has written a snapshot at `position` or later.
async fn wait_snapshot(db: &TestDb, position: i64) {
    for _ in 0..2_400 {
        if snapshot_position(db).await.is_some_and(|p| p >= position) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "no snapshot at {position} or later: {:?}",
        snapshot_position(db).await
    );
}

/// Waits until the instance `instance_id` holds the projection and has caught up.
async fn wait_led_by(app: &TestApp, instance_id: &str) {
    let client = app.db.client().await;
    for _ in 0..400 {
        let row = client
            .query_one(
                "SELECT owner, position = (SELECT position FROM log_head) FROM projections",
                &[],
            )
            .await
            .unwrap();
        if row.get::<_, Option<String>>(0).as_deref() == Some(instance_id) && row.get::<_, bool>(1)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{instance_id} did not take over");
}

/// Polls `sql` (one boolean) for up to 10 s; returns whether it came true.
async fn wait_until(
    client: &tokio_postgres::Client,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> bool {
    for _ in 0..400 {
        if client
            .query_one(sql, params)
            .await
            .unwrap()
            .get::<_, bool>(0)
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

/// Another handle on the same database (the test databases are swept on the next run).
fn same(db: &TestDb) -> TestDb {
    TestDb {
        name: db.name.clone(),
        url: db.url.clone(),
    }
}

/// An instance of the service on `db` with the tests' snapshot interval.
async fn instance(db: &TestDb) -> TestApp {
    TestApp::start_with(same(db), config(db)).await
}

#[tokio::test]
async fn a_new_leader_resumes_from_the_snapshot_and_equals_a_rebuild() {
    let db = TestDb::new().await;
    let first = instance(&db).await;
    deliver(&first, "a", 0..130).await;
    first.wait_projected().await;
    wait_snapshot(&db, 120).await;
    let second = instance(&db).await;
    // The first leader stops outright: its lock connection goes with it.
    first.stop().await;
    deliver(&second, "b", 0..25).await;
    wait_led_by(&second, &second.instance_id).await;
    let (from, reason, checkpoint, folded) = election(&db, &second.instance_id).await;
    assert_eq!(reason, None, "a snapshot was usable");
    let from = from.expect("resumed from a snapshot");
    assert!(from >= 120, "the latest snapshot, at {from}");
    assert_eq!(
        folded,
        checkpoint - from,
        "only the events after the snapshot were folded"
    );
    assert!(
        folded < EVERY_EVENTS,
        "not from 0: {folded} of {checkpoint}"
    );
    let live = snapshot(&db).await;
    let head = db.count("SELECT position FROM log_head").await;
    rebuild_and_wait(&second).await;
    assert_eq!(
        snapshot(&db).await,
        live,
        "equal to a fold of the whole log"
    );
    // The rebuild writes its snapshot right after the swap commits (and marks it done), so
    // wait for it before checking where it is.
    wait_snapshot(&db, head).await;
    assert_eq!(
        snapshot_position(&db).await,
        Some(head),
        "the rebuild replaced the snapshot with one at its checkpoint"
    );
}

#[tokio::test]
async fn a_leader_killed_mid_batch_is_replaced_by_snapshot_plus_tail_equal_to_a_rebuild() {
    let db = TestDb::new().await;
    let every = EVERY_EVENTS.to_string();
    let leader = ServeProcess::start(&db.url, &[("LEDGER_SNAPSHOT_EVERY_EVENTS", &every)]).await;
    let follower = instance(&db).await;
    // Senders keep posting to the leader's process; it is killed in the middle of it.
    let http = reqwest::Client::new();
    let mut senders = Vec::new();
    for sender in 0..3 {
        let (http, url) = (http.clone(), leader.url("/api/billing/webhook"));
        senders.push(tokio::spawn(async move {
            for n in 0.. {
                let body = event(&format!("k{sender}_"), n).to_string();
                if post_to(&http, &url, body).await != 200 {
                    break;
                }
            }
        }));
    }
    wait_snapshot(&db, 2 * EVERY_EVENTS).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    leader.kill(); // SIGKILL
    for sender in senders {
        let _ = sender.await; // each ends when the service is gone
    }
    deliver(&follower, "after", 0..12).await;
    wait_led_by(&follower, &follower.instance_id).await;
    let (from, reason, checkpoint, folded) = election(&db, &follower.instance_id).await;
    assert_eq!(reason, None, "a snapshot was usable");
    let from = from.expect("resumed from a snapshot");
    assert!(from >= 2 * EVERY_EVENTS, "resumed at {from}");
    assert_eq!(folded, checkpoint - from);
    // The killed process may have left an append PostgreSQL committed after it died; the
    // follower folds it like any other event.
    follower.wait_projected().await;
    let live = snapshot(&db).await;
    rebuild_and_wait(&follower).await;
    assert_eq!(
        snapshot(&db).await,
        live,
        "snapshot plus tail equals a fold of the whole log"
    );
}

/// Restarts the service on `db` after `tamper` changed the stored snapshot; returns the new
/// election's fallback reason, having checked it folded the whole log into the same rows.
async fn restart_after(db: &TestDb, tamper: &str, prefix: &str) -> String {
    let client = db.client().await;
    client.batch_execute(tamper).await.unwrap();
    let tampered_at: chrono::DateTime<chrono::Utc> =
        client.query_one("SELECT now()", &[]).await.unwrap().get(0);
    let before = snapshot(db).await;
    let app = instance(db).await;
    wait_led_by(&app, &app.instance_id).await;
    let (from, reason, checkpoint, folded) = election(db, &app.instance_id).await;
    assert_eq!(from, None, "the snapshot was not loaded");
    assert_eq!(folded, checkpoint, "the whole log was folded");
    // It writes a snapshot again at once (more than EVERY_EVENTS events since none).
    let mut rewritten = false;
    for _ in 0..400 {
        let written_at: Option<chrono::DateTime<chrono::Utc>> = client
            .query_opt("SELECT written_at FROM projection_snapshots", &[])
            .await
            .unwrap()
            .map(|r| r.get(0));
        if written_at.is_some_and(|at| at > tampered_at) {
            rewritten = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(rewritten, "the snapshot was written again");
    deliver(&app, prefix, 0..4).await;
    app.wait_projected().await;
    let after = snapshot(db).await;
    app.stop().await;
    assert_ne!(after, before, "the new events were projected");
    reason.expect("the fallback is explained")
}

#[tokio::test]
async fn a_corrupt_or_other_version_snapshot_falls_back_to_a_full_fold() {
    let db = TestDb::new().await;
    let app = instance(&db).await;
    deliver(&app, "c", 0..60).await;
    app.wait_projected().await;
    wait_snapshot(&db, EVERY_EVENTS).await;
    app.stop().await;
    let reason = restart_after(
        &db,
        "UPDATE projection_snapshots SET state = '\\x7b226c6564676572223a'",
        "d",
    )
    .await;
    assert!(reason.contains("does not parse"), "{reason}");
    let reason = restart_after(
        &db,
        "UPDATE projection_snapshots SET version = version - 1",
        "e",
    )
    .await;
    assert!(reason.contains("fold version"), "{reason}");
    let reason = restart_after(&db, "DELETE FROM projection_snapshots", "f").await;
    assert_eq!(reason, "no snapshot");
    // The snapshot written after the last fallback is usable, and the rows after all these
    // restarts are still a fold of the log.
    let app = instance(&db).await;
    wait_led_by(&app, &app.instance_id).await;
    let (from, reason, _, _) = election(&db, &app.instance_id).await;
    assert_eq!((from.is_some(), reason), (true, None));
    let live = snapshot(&db).await;
    rebuild_and_wait(&app).await;
    assert_eq!(snapshot(&db).await, live);
}

/// A follower keeps a warm standby of the fold state at the leader's checkpoint: killed, the
/// leader is replaced by a follower that starts from where its standby stood (not from a
/// snapshot, not from the log's start), and the rows it goes on writing equal a rebuild's.
#[tokio::test]
async fn a_follower_with_a_warm_standby_takes_over_from_where_it_stood_and_equals_a_rebuild() {
    let db = TestDb::new().await;
    let leader = ServeProcess::start(&db.url, &[]).await;
    let client = db.client().await;
    wait_until(
        &client,
        "SELECT coalesce(bool_or(owner IS NOT NULL), false) FROM projections",
        &[],
    )
    .await;
    let follower = TestApp::start_with(
        same(&db),
        billing_ledger::config::Config {
            projector_standby: true,
            ..test_config(&db.url)
        },
    )
    .await;
    let http = reqwest::Client::new();
    for n in 0..120 {
        let body = event("w", n).to_string();
        assert_eq!(
            post_to(&http, &leader.url("/api/billing/webhook"), body).await,
            200
        );
    }
    // The leader folds them all; the follower's standby follows within a second or so.
    wait_until(&client, "SELECT position = 120 FROM projections", &[]).await;
    let standing = "SELECT coalesce(bool_or(position = 120), false) FROM projector_standbys
                    WHERE instance_id = $1";
    let standing = wait_until(&client, standing, &[&follower.instance_id]).await;
    assert!(standing, "the follower's standby follows the leader to 120");
    leader.kill(); // SIGKILL
    deliver(&follower, "after", 0..12).await;
    wait_led_by(&follower, &follower.instance_id).await;
    let row = client
        .query_one(
            "SELECT standby_position, checkpoint FROM projector_elections WHERE instance_id = $1",
            &[&follower.instance_id],
        )
        .await
        .unwrap();
    let (standby, checkpoint): (Option<i64>, i64) = (row.get(0), row.get(1));
    assert_eq!(
        standby,
        Some(120),
        "the standby stood at the leader's last checkpoint"
    );
    assert!(checkpoint >= 120, "resumed at {checkpoint}");
    let left: i64 = client
        .query_one(
            "SELECT count(*) FROM projector_standbys WHERE instance_id = $1",
            &[&follower.instance_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "a leader has no standby row");
    follower.wait_projected().await;
    let live = snapshot(&db).await;
    rebuild_and_wait(&follower).await;
    assert_eq!(
        snapshot(&db).await,
        live,
        "standby plus tail equals a fold of the whole log"
    );
}
