//! Faults survived: the database going away under load, a slow database, graceful shutdown.

use crate::events::envelope;
use crate::support::{cut_connections, rebuild_and_wait, snapshot, spawn_post, TestApp, SECRET};
use billing_ledger::config::{Command, SendArgs};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn customer(i: usize) -> Value {
    envelope(
        &format!("evt_f{i}"),
        "customer.created",
        1_700_000_000 + i as i64,
        json!({"id": format!("cus_f{i}"), "object": "customer", "metadata": {"tenant_id": format!("t{}", i % 7)}}),
    )
}

#[tokio::test]
async fn a_retrying_sender_stores_everything_once_across_an_outage() {
    let app = TestApp::start().await;
    let dir = std::env::temp_dir().join(format!("faults-{}", app.db.name));
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..300 {
        std::fs::write(dir.join(format!("{i:04}.json")), customer(i).to_string()).unwrap();
    }
    let send = tokio::spawn(billing_ledger::cli::execute(Command::Send(SendArgs {
        url: app.url("/api/billing/webhook"),
        secret: SECRET.into(),
        retry: true,
        retry_for_secs: 60,
        paths: vec![dir.clone()],
    })));
    tokio::time::sleep(Duration::from_millis(300)).await;
    cut_connections(&app.db.name, false).await;
    // During the outage: 503, never a 2xx.
    for i in 1_000..1_005 {
        let response = app.post_event(customer(i).to_string().as_bytes()).await;
        assert_eq!(response.status(), 503);
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    cut_connections(&app.db.name, true).await;
    let code = send.await.unwrap().unwrap();
    assert_eq!(
        code,
        std::process::ExitCode::SUCCESS,
        "every file ends accepted"
    );
    assert_eq!(
        app.db.count("SELECT count(*) FROM events").await,
        300,
        "each stored once"
    );
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM events WHERE event_id LIKE 'evt_f1___'")
            .await,
        0
    );
    app.wait_projected().await;
    let live = snapshot(&app.db).await;
    rebuild_and_wait(&app).await;
    assert_eq!(
        snapshot(&app.db).await,
        live,
        "read models equal a fold of the log"
    );
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn a_stalled_database_gets_503_within_a_bounded_time_and_recovers() {
    let app = TestApp::start().await;
    app.deliver(&customer(1)).await;
    let mut locker = app.db.client().await;
    let tx = locker.transaction().await.unwrap();
    tx.batch_execute("LOCK TABLE log_head IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let started = Instant::now();
    let mut waiting = Vec::new();
    for i in 2..22 {
        waiting.push(spawn_post(
            &app.http,
            app.url("/api/billing/webhook"),
            customer(i).to_string(),
        ));
    }
    for task in waiting {
        assert_eq!(task.await.unwrap(), 503);
    }
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(12),
        "answered within the append timeout ({waited:?})"
    );
    tx.rollback().await.unwrap();
    assert_eq!(
        app.db.count("SELECT count(*) FROM events").await,
        1,
        "nothing stored for the 503s"
    );
    // No leak: the service takes new work at once.
    for i in 2..22 {
        app.deliver(&customer(i)).await;
    }
    assert_eq!(app.db.count("SELECT count(*) FROM events").await, 21);
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests_and_releases_the_projector() {
    let first = TestApp::start().await;
    first.wait_projected().await;
    let second = TestApp::start_second(&first).await;
    let owner = |db_url: String| async move {
        let client = crate::support::connect(&db_url).await;
        client
            .query_one("SELECT owner FROM projections", &[])
            .await
            .unwrap()
            .get::<_, String>(0)
    };
    let leader_before = owner(first.db.url.clone()).await;
    // A request in flight: its append waits on the head row until we let go.
    let mut holder = first.db.client().await;
    let tx = holder.transaction().await.unwrap();
    tx.batch_execute("SELECT * FROM log_head FOR UPDATE")
        .await
        .unwrap();
    let in_flight = spawn_post(
        &first.http,
        first.url("/api/billing/webhook"),
        customer(1).to_string(),
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopping = tokio::spawn(first.stop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    tx.rollback().await.unwrap();
    assert_eq!(
        in_flight.await.unwrap(),
        200,
        "the in-flight request was finished"
    );
    let db = stopping.await.unwrap();
    // The second instance takes the projector over within seconds.
    let mut leader_after = leader_before.clone();
    for _ in 0..200 {
        leader_after = owner(db.url.clone()).await;
        if leader_after != leader_before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_ne!(
        leader_after, leader_before,
        "the lock was released and taken over"
    );
    second.deliver(&customer(2)).await;
    second.wait_projected().await;
    assert_eq!(db.count("SELECT count(*) FROM customers").await, 2);
}

/// An append whose statements are still running near its answer deadline is cancelled, so the
/// 503 the webhook answers at its deadline never hides an event that commits afterwards. Here
/// the insert is slow (3 s, within the pool's 5 s `statement_timeout`) and the deadline near.
#[tokio::test]
async fn an_append_past_its_answer_deadline_rolls_back() {
    use billing_ledger::event_log::{append_batch_before, Delivery};
    let app = TestApp::start().await;
    app.db
        .client()
        .await
        .batch_execute(
            "CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS
                 $$ BEGIN PERFORM pg_sleep(3); RETURN NEW; END $$;
             CREATE TRIGGER slow_insert BEFORE INSERT ON deliveries FOR EACH ROW
                 WHEN (NEW.event_id LIKE 'evt_slow%') EXECUTE FUNCTION slow();",
        )
        .await
        .unwrap();
    let delivery = |id: &str| {
        let event = envelope(
            id,
            "customer.created",
            1_700_000_000,
            json!({"id": "cus_slow", "object": "customer"}),
        );
        Delivery::imported(event.to_string().into(), chrono::Utc::now()).unwrap()
    };
    let pool = billing_ledger::db::pool(&app.db.url).unwrap();
    let slow = delivery("evt_slow_1");
    let started = Instant::now();
    let deadline = started + Duration::from_secs(2);
    let result = append_batch_before(&pool, &[&slow], deadline).await;
    assert!(result.is_err(), "{result:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM events WHERE event_id = 'evt_slow_1'")
            .await,
        0,
        "an append that missed its deadline committed"
    );
    // With time to spare the same append commits.
    let relaxed = Instant::now() + Duration::from_secs(8);
    append_batch_before(&pool, &[&slow], relaxed).await.unwrap();
    assert_eq!(app.db.count("SELECT count(*) FROM events").await, 1);
}
