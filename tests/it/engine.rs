//! The projection engine under concurrency: gap-free tailing, one projector among instances,
//! rebuilds under load, crashes.

use crate::events::{checkout_completed, envelope, subscription};
use crate::support::{
    post_to, projection_status, rebuild_and_wait, snapshot, spawn_post, test_config, TestApp,
    TestDb, ADMIN_TOKEN, SECRET,
};
use billing_ledger::event_log::{append_batch, Delivery};
use billing_ledger::projector::PROJECTION_VERSION;
use serde_json::{json, Value};
use std::time::Duration;

const T0: i64 = 1_700_000_000;

fn customer_event(id: &str, customer: &str) -> Value {
    envelope(
        id,
        "customer.created",
        T0,
        json!({"id": customer, "object": "customer", "metadata": {"tenant_id": format!("t-{customer}")}}),
    )
}

fn delivery(event: &Value) -> Delivery {
    Delivery::imported(event.to_string().into(), chrono::Utc::now()).unwrap()
}

async fn checkpoint_and_head(db: &TestDb) -> (i64, i64) {
    let row = db
        .client()
        .await
        .query_one(
            "SELECT coalesce((SELECT position FROM projections WHERE name = 'billing'), 0),
                    (SELECT position FROM log_head)",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// Opens a transaction that takes the next position and inserts an event, as an append does,
/// and leaves it open.
async fn hold_position<'c>(
    client: &'c mut tokio_postgres::Client,
    event_id: &str,
) -> tokio_postgres::Transaction<'c> {
    let tx = client.transaction().await.unwrap();
    let head = tx
        .query_one("SELECT position, chain_hash FROM log_head FOR UPDATE", &[])
        .await
        .unwrap();
    let position: i64 = head.get::<_, i64>(0) + 1;
    let body = customer_event(event_id, &format!("cus_{event_id}")).to_string();
    let digest: Vec<u8> = tx
        .query_one("SELECT sha256($1::bytea)", &[&body.as_bytes()])
        .await
        .unwrap()
        .get(0);
    let chain = billing_ledger::chain::link(head.get(1), position, event_id, &digest);
    tx.execute(
        "INSERT INTO events (position, event_id, type, created, livemode, object_id, body,
             body_sha256, received_at, source, chain_hash)
         VALUES ($1, $2, 'customer.created', to_timestamp(1700000000), false, $3, $4, $5, now(),
             'import', $6)",
        &[
            &position,
            &event_id,
            &format!("cus_{event_id}"),
            &body.as_bytes(),
            &digest,
            &chain,
        ],
    )
    .await
    .unwrap();
    tx.execute(
        "UPDATE log_head SET position = $1, chain_hash = $2",
        &[&position, &chain],
    )
    .await
    .unwrap();
    tx
}

async fn out_of_order_commit(commit: bool) {
    let app = TestApp::start().await;
    let mut holder = app.db.client().await;
    let held = hold_position(&mut holder, "evt_a").await;
    let b = spawn_post(
        &app.http,
        app.url("/api/billing/webhook"),
        customer_event("evt_b", "cus_b").to_string(),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !b.is_finished(),
        "B waits for A's position to commit or roll back"
    );
    assert_eq!(
        checkpoint_and_head(&app.db).await.0,
        0,
        "the projector never passes A"
    );
    if commit {
        held.commit().await.unwrap();
    } else {
        held.rollback().await.unwrap();
    }
    assert_eq!(b.await.unwrap(), 200);
    app.wait_projected().await;
    let (checkpoint, head) = checkpoint_and_head(&app.db).await;
    assert_eq!(
        checkpoint, head,
        "the checkpoint is the last processed position"
    );
    let expected = if commit { 2 } else { 1 };
    assert_eq!(head, expected, "positions stay dense");
    assert_eq!(
        app.db.count("SELECT count(*) FROM customers").await,
        expected
    );
}

#[tokio::test]
async fn an_append_committed_late_is_not_skipped() {
    out_of_order_commit(true).await;
}

#[tokio::test]
async fn an_append_rolled_back_leaves_no_gap() {
    out_of_order_commit(false).await;
}

#[tokio::test]
async fn concurrent_appenders_with_rollbacks_are_each_projected_once() {
    let app = TestApp::start().await;
    let pool = billing_ledger::db::pool(&app.db.url).unwrap();
    let mut tasks = Vec::new();
    for writer in 0..16 {
        let pool = pool.clone();
        let url = app.db.url.clone();
        tasks.push(tokio::spawn(async move {
            let mut rollback_client = crate::support::connect(&url).await;
            let mut committed = Vec::new();
            for i in 0..500 {
                let id = format!("evt_w{writer}_{i}");
                if (writer * 500 + i) % 20 == 7 {
                    let tx = hold_position(&mut rollback_client, &id).await;
                    tx.rollback().await.unwrap();
                } else {
                    let d = delivery(&customer_event(&id, &format!("cus_w{writer}_{i}")));
                    append_batch(&pool, &[&d]).await.unwrap();
                    committed.push(id);
                }
            }
            committed
        }));
    }
    let mut committed = 0;
    for task in tasks {
        committed += task.await.unwrap().len() as i64;
    }
    assert_eq!(committed, 7_600);
    app.wait_projected().await;
    assert_eq!(app.db.count("SELECT count(*) FROM events").await, committed);
    assert_eq!(
        app.db.count("SELECT max(position) FROM events").await,
        committed,
        "dense"
    );
    assert_eq!(
        app.db.count("SELECT count(*) FROM customers").await,
        committed,
        "each projected"
    );
    assert_eq!(
        app.db.count("SELECT count(*) FROM event_tenants").await,
        committed,
        "each once"
    );
    let (checkpoint, head) = checkpoint_and_head(&app.db).await;
    assert_eq!((checkpoint, head), (committed, committed));
}

async fn owner(db: &TestDb) -> String {
    db.client()
        .await
        .query_one("SELECT owner FROM projections WHERE name = 'billing'", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn a_follower_takes_over_when_the_leader_loses_its_lock() {
    let first = TestApp::start().await;
    first.wait_projected().await;
    let second = TestApp::start_second(&first).await;
    let leader = owner(&first.db).await;
    let sender = {
        let (a, b) = (
            first.url("/api/billing/webhook"),
            second.url("/api/billing/webhook"),
        );
        let http = first.http.clone();
        tokio::spawn(async move {
            for i in 0..300 {
                let body =
                    customer_event(&format!("evt_lead_{i}"), &format!("cus_lead_{i}")).to_string();
                let url = if i % 2 == 0 { &a } else { &b };
                let status = post_to(&http, url, body).await;
                assert_eq!(status, 200);
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    let admin = crate::support::admin_client().await;
    let killed = admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
            &[&format!("billing-ledger projector {leader}")],
        )
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(killed, 1, "the leader's lock connection was found");
    sender.await.unwrap();
    let mut took_over = false;
    for _ in 0..200 {
        first.wait_projected().await;
        let (checkpoint, head) = checkpoint_and_head(&first.db).await;
        if checkpoint == head && head == 300 {
            took_over = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(took_over);
    assert_eq!(first.db.count("SELECT count(*) FROM customers").await, 300);
    assert_eq!(
        first.db.count("SELECT count(*) FROM event_tenants").await,
        300
    );
    let live = snapshot(&first.db).await;
    rebuild_and_wait(&second).await;
    assert_eq!(
        snapshot(&first.db).await,
        live,
        "equal to a fold of the whole log"
    );
}

#[tokio::test]
async fn rebuild_under_load_keeps_answering_and_misses_nothing() {
    let first = TestApp::start().await;
    let second = TestApp::start_second(&first).await;
    // 50,000 events across 5,000 tenants, appended directly as an import would.
    let pool = billing_ledger::db::pool(&first.db.url).unwrap();
    for chunk in 0..100 {
        let mut events = Vec::new();
        for i in 0..50 {
            let n = chunk * 50 + i;
            let (tenant, cus, sub) = (
                format!("tenant-{n}"),
                format!("cus_{n}"),
                format!("sub_{n}"),
            );
            events.push(checkout_completed(
                &format!("evt_{n}_c"),
                T0,
                &format!("cs_{n}"),
                &tenant,
                &cus,
                &sub,
            ));
            for k in 0..9 {
                let status = if k % 3 == 2 { "past_due" } else { "active" };
                events.push(subscription(
                    &format!("evt_{n}_{k}"),
                    "customer.subscription.updated",
                    T0 + k,
                    &sub,
                    &cus,
                    status,
                    T0 + 30 * 86_400,
                ));
            }
        }
        let deliveries: Vec<Delivery> = events.iter().map(delivery).collect();
        append_batch(&pool, &deliveries.iter().collect::<Vec<_>>())
            .await
            .unwrap();
    }
    first.wait_projected().await;
    let readers = {
        let (http, url) = (
            first.http.clone(),
            first.url("/api/billing/tenants/tenant-7/pricing"),
        );
        tokio::spawn(async move {
            let mut reads = 0;
            for _ in 0..200 {
                let r = http
                    .get(&url)
                    .bearer_auth(ADMIN_TOKEN)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200, "readers keep reading during the rebuild");
                reads += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            reads
        })
    };
    let sender = {
        let http = first.http.clone();
        let url = second.url("/api/billing/webhook");
        tokio::spawn(async move {
            for i in 0..200 {
                let body = subscription(
                    &format!("evt_during_{i}"),
                    "customer.subscription.updated",
                    T0 + 100 + i,
                    &format!("sub_{i}"),
                    &format!("cus_{i}"),
                    "canceled",
                    T0,
                )
                .to_string();
                let status = post_to(&http, &url, body).await;
                assert_eq!(status, 200, "webhooks are answered during the rebuild");
            }
        })
    };
    let started = std::time::Instant::now();
    let status = rebuild_and_wait(&second).await;
    eprintln!(
        "rebuild of {} events took {:?}",
        status["rebuild"]["position_target"],
        started.elapsed()
    );
    sender.await.unwrap();
    assert_eq!(readers.await.unwrap(), 200);
    first.wait_projected().await;
    assert_eq!(
        first
            .db
            .count("SELECT count(*) FROM tenant_pricing WHERE status = 'canceled'")
            .await,
        200
    );
    let live = snapshot(&first.db).await;
    rebuild_and_wait(&first).await;
    assert_eq!(
        snapshot(&first.db).await,
        live,
        "after the swap the rows equal a fold of the whole log"
    );
}

#[tokio::test]
async fn a_killed_service_catches_up_on_restart() {
    let db = TestDb::new().await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let spawn = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_billing-ledger"))
            .arg("serve")
            .env("DATABASE_URL", &db.url)
            .env("STRIPE_WEBHOOK_SECRET", SECRET)
            .env("LEDGER_LISTEN", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let wait_up = |http: reqwest::Client, base: String| async move {
        for _ in 0..400 {
            if http.get(format!("{base}/healthz")).send().await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("service did not start");
    };
    let mut child = spawn();
    wait_up(http.clone(), base.clone()).await;
    // Four senders keep posting; the process is killed in the middle of it.
    let mut senders = Vec::new();
    for sender in 0..4 {
        let (http, url) = (http.clone(), format!("{base}/api/billing/webhook"));
        senders.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for i in 0.. {
                let id = format!("evt_k{sender}_{i}");
                let body = customer_event(&id, &format!("cus_k{sender}_{i}")).to_string();
                let header = crate::support::signature_now(body.as_bytes());
                match http
                    .post(&url)
                    .header("stripe-signature", header)
                    .body(body)
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 200 => acknowledged.push(id),
                    Ok(_) => {}
                    Err(_) => break, // the service is gone
                }
            }
            acknowledged
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let mut acknowledged = Vec::new();
    for sender in senders {
        acknowledged.extend(sender.await.unwrap());
    }
    assert!(
        acknowledged.len() >= 20,
        "the load ran: {}",
        acknowledged.len()
    );
    // PostgreSQL finishes (and may commit) an append the killed process had already sent;
    // such an event was never acknowledged, and Stripe's retry of it is a duplicate. Count
    // the log once the killed process's sessions are gone.
    let watcher = db.client().await;
    for _ in 0..400 {
        let others: i64 = watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND pid <> pg_backend_pid()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if others == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let stored: std::collections::HashSet<String> = db
        .client()
        .await
        .query("SELECT event_id FROM events", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|id| !stored.contains(*id))
        .collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    let before_restart = stored.len() as i64;
    // Appended while no projector runs: exactly the state a crash between append and
    // projection leaves.
    let pool = billing_ledger::db::pool(&db.url).unwrap();
    let late: Vec<Delivery> = (0..25)
        .map(|i| {
            delivery(&customer_event(
                &format!("evt_late{i}"),
                &format!("cus_late{i}"),
            ))
        })
        .collect();
    append_batch(&pool, &late.iter().collect::<Vec<_>>())
        .await
        .unwrap();
    let mut child = spawn();
    wait_up(http.clone(), base.clone()).await;
    let mut caught_up = false;
    for _ in 0..400 {
        let (checkpoint, head) = checkpoint_and_head(&db).await;
        if checkpoint == head {
            caught_up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(caught_up);
    assert_eq!(
        db.count("SELECT count(*) FROM events").await,
        before_restart + 25
    );
    assert_eq!(
        db.count("SELECT count(*) FROM customers").await,
        before_restart + 25
    );
}

#[tokio::test]
async fn rows_from_another_fold_version_are_stale_until_rebuilt() {
    let db = TestDb::new().await;
    // Rows written by an older fold, as after an upgrade.
    db.client()
        .await
        .batch_execute("INSERT INTO projections (name, version) VALUES ('billing', 0)")
        .await
        .unwrap();
    let url = db.url.clone();
    let app = TestApp::start_with(db, test_config(&url)).await;
    app.deliver(&customer_event("evt_s1", "cus_s1")).await;
    app.wait_projected().await;
    let status = projection_status(&app).await;
    assert_eq!(status["status"], "stale");
    assert_eq!(
        (status["version"].as_i64(), status["code_version"].as_i64()),
        (Some(0), Some(PROJECTION_VERSION.into()))
    );

    // Restarted with --rebuild-stale, the elected projector rebuilds and the rows are current.
    let db = app.stop().await;
    let mut config = test_config(&db.url);
    config.rebuild_stale = true;
    let app = TestApp::start_with(db, config).await;
    let mut status = Value::Null;
    for _ in 0..400 {
        status = projection_status(&app).await;
        if status["status"] == "live" && status["version"] == PROJECTION_VERSION {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(status["status"], "live", "{status}");
    assert_eq!(status["rebuild"]["status"], "done");
    assert_eq!(
        app.get_json("/api/billing/customers/cus_s1").await["id"],
        "cus_s1"
    );
}

/// A rebuild copies attributions into an unindexed staging table and indexes it at the end.
/// A (tenant, event) pair copied twice (within a batch under two rules, and again in a later
/// batch) keeps its least rule, as the live projector does (below).
#[tokio::test]
async fn staged_attributions_keep_the_least_rule_of_each_pair() {
    use billing_ledger::store::read_models::{copy_event_tenants, index_staged_event_tenants};
    use projections::ResolvedBy::{CheckoutMetadata, CustomerLink, SubscriptionMetadata};
    let db = TestDb::new().await;
    let pool = billing_ledger::db::pool(&db.url).unwrap();
    let client = db.client().await;
    client
        .batch_execute(
            "CREATE TABLE staged_test (LIKE event_tenants INCLUDING DEFAULTS INCLUDING CONSTRAINTS)",
        )
        .await
        .unwrap();
    let set = |rows: &[(&str, &str, projections::ResolvedBy)]| {
        rows.iter()
            .map(|(t, e, r)| (t.to_string(), e.to_string(), *r))
            .collect::<std::collections::BTreeSet<_>>()
    };
    let (batches, received) = tokio::sync::mpsc::channel(4);
    let copy = tokio::spawn({
        let pool = pool.clone();
        async move { copy_event_tenants(&pool, "staged_test", received).await }
    });
    batches
        .send(set(&[
            ("t1", "evt_1", CustomerLink),
            ("t1", "evt_1", SubscriptionMetadata),
            ("t1", "evt_2", CustomerLink),
        ]))
        .await
        .unwrap();
    batches
        .send(set(&[
            ("t1", "evt_1", CheckoutMetadata),
            ("t2", "evt_1", CustomerLink),
        ]))
        .await
        .unwrap();
    drop(batches);
    copy.await.unwrap().unwrap();
    assert_eq!(db.count("SELECT count(*) FROM staged_test").await, 4);

    index_staged_event_tenants(&pool, "staged_test")
        .await
        .unwrap();
    let rows: Vec<(String, String, String)> = client
        .query(
            "SELECT tenant_id, event_id, resolved_by FROM staged_test ORDER BY 1, 2",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let expected = [
        ("t1", "evt_1", "checkout_metadata"),
        ("t1", "evt_2", "customer_link"),
        ("t2", "evt_1", "customer_link"),
    ]
    .map(|(t, e, r)| (t.to_owned(), e.to_owned(), r.to_owned()));
    assert_eq!(rows, expected);
    let indexes = db
        .count(
            "SELECT count(*) FROM pg_indexes WHERE tablename = 'staged_test'
             AND indexname IN ('staged_test_pkey', 'staged_test_event')",
        )
        .await;
    assert_eq!(indexes, 2);
    let primary_key = db
        .count(
            "SELECT count(*) FROM pg_constraint
             WHERE conrelid = 'staged_test'::regclass AND contype = 'p'",
        )
        .await;
    assert_eq!(primary_key, 1);
}

/// Live, an event attributed to one tenant by several rules, in batches written one after the
/// other, keeps the least rule whatever the order, as a rebuild (which batches differently)
/// does: `event_tenants` does not depend on batch boundaries.
#[tokio::test]
async fn live_attributions_keep_the_least_rule_across_batches() {
    use projections::ResolvedBy::{CustomerLink, SubscriptionLink, SubscriptionMetadata};
    let db = TestDb::new().await;
    let pool = billing_ledger::db::pool(&db.url).unwrap();
    let mut client = pool.get().await.unwrap();
    for rule in [CustomerLink, SubscriptionMetadata, SubscriptionLink] {
        let changes = projections::Changes {
            event_tenants: [("t1".to_owned(), "evt_1".to_owned(), rule)].into(),
            ..Default::default()
        };
        let tx = client.transaction().await.unwrap();
        billing_ledger::store::read_models::write(&tx, &changes)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    let rule: String = client
        .query_one(
            "SELECT resolved_by FROM event_tenants WHERE tenant_id = 't1' AND event_id = 'evt_1'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(rule, "subscription_metadata");
}
