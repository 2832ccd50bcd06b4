//! Reconciliation with Stripe's Events API: against localstripe (a real stateful emulator)
//! with the service down while events happen, against a scripted fake for 429/500 answers and
//! slow pages, a wrong key, and two instances running the timer.

use crate::emulator::{api_event, page, Emulator, FakeStripe, EMULATOR_KEY};
use crate::support::{
    now, rebuild_and_wait, snapshot, test_config, TestApp, TestDb, ADMIN_TOKEN, SECRET,
};
use billing_ledger::reconcile::{reconcile, Difference, Report};
use billing_ledger::stripe::events_api::{
    ApiSettings, EventsClient, SecretKey, Window, BACKOFF_FIRST, STRIPE_VERSION,
};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

/// Runs `billing-ledger reconcile ARGS` against `base` with `key`, on `database_url`.
pub async fn reconcile_command(
    database_url: &str,
    base: &str,
    key: &str,
    args: &[&str],
) -> std::process::Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_billing-ledger"));
    command
        .arg("reconcile")
        .args(args)
        .env("DATABASE_URL", database_url)
        .env("STRIPE_SECRET_KEY", key)
        .env("STRIPE_API_BASE", base)
        .env_remove("STRIPE_ACCOUNT")
        .env("RUST_LOG", "warn");
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

async fn log_ids(db: &TestDb) -> Vec<String> {
    let rows = db
        .client()
        .await
        .query("SELECT event_id FROM events ORDER BY event_id", &[])
        .await
        .unwrap();
    rows.iter().map(|r| r.get(0)).collect()
}

/// Waits until the log holds every event the emulator lists (it posts each a second after
/// creating it).
async fn wait_delivered(db: &TestDb, emulator: &Emulator) -> usize {
    for _ in 0..300 {
        let listed = emulator.event_ids().await;
        let logged = log_ids(db).await;
        if listed.iter().all(|id| logged.contains(id)) {
            return listed.len();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the emulator's webhooks did not all arrive");
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

/// Subscribes two tenants with the service up (the emulator delivers their events), then
/// stops it while a third subscribes and a customer changes: the emulator's deliveries fail and
/// it never retries them. Returns the database, every ID the emulator lists (sorted) and those
/// the log lacks.
async fn miss_events_while_down(emulator: &Emulator) -> (TestDb, Vec<String>, Vec<String>) {
    let app = TestApp::start().await;
    emulator
        .deliver_to(&app.url("/api/billing/webhook"), SECRET)
        .await;
    emulator.create_plan().await;
    let (customer_a, _) = emulator.subscribe("tenant-a").await;
    emulator.subscribe("tenant-b").await;
    let delivered = wait_delivered(&app.db, emulator).await;
    assert!(delivered >= 10, "the emulator delivered {delivered} events");

    let db = app.stop().await;
    emulator.subscribe("tenant-c").await;
    let update = format!("/v1/customers/{customer_a}");
    emulator
        .post(&update, &[("email", "renamed@example.com")])
        .await;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let listed = sorted(emulator.event_ids().await);
    let logged = log_ids(&db).await;
    let missing: Vec<String> = listed
        .iter()
        .filter(|id| !logged.contains(id))
        .cloned()
        .collect();
    assert!(missing.len() >= 5, "missed only {missing:?}");
    (db, listed, missing)
}

/// The log after reconciling, with the service running again: the fetched events are folded
/// (tenant-c, known only through them, is active), the live rows equal a rebuild, the chain
/// is intact, and the event detail says where a fetched event came from.
async fn assert_folded_and_intact(app: &TestApp, listed: &[String], missing: &[String]) {
    app.wait_projected().await;
    let pricing = app.get_json("/api/billing/tenants/tenant-c/pricing").await;
    assert_eq!(pricing["status"], "active", "{pricing}");
    let live = snapshot(&app.db).await;
    rebuild_and_wait(app).await;
    assert_eq!(snapshot(&app.db).await, live);
    let verify: Value = app
        .get("/api/billing/admin/verify", ADMIN_TOKEN)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(verify["intact"], true, "{verify}");
    assert_eq!(verify["events_verified"], listed.len() as i64);
    let detail = app
        .get_json(&format!("/api/billing/events/{}", missing[0]))
        .await;
    assert_eq!(detail["source"], "reconcile");
    let provenance = detail["provenance"].as_str().unwrap();
    assert!(provenance.contains("not signature-verified"), "{detail}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_appends_what_the_emulator_could_not_deliver_exactly_once() {
    let emulator = Emulator::start().await;
    let (db, listed, missing) = miss_events_while_down(&emulator).await;

    let out = reconcile_command(&db.url, &emulator.base, EMULATOR_KEY, &["--since", "1h"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (n, m) = (listed.len(), missing.len());
    let counts = format!("listed {n}, already in the log {}, appended {m}", n - m);
    assert!(stdout.contains(&counts), "{stdout}");
    assert!(
        stdout.contains("appended 1 customer.subscription.created"),
        "{stdout}"
    );
    assert_eq!(
        log_ids(&db).await,
        listed,
        "every listed event, exactly once"
    );
    let fetched = db
        .count("SELECT count(*) FROM events WHERE source = 'reconcile'")
        .await;
    assert_eq!(fetched, m as i64);

    let config = test_config(&db.url);
    let app = TestApp::start_with(db, config).await;
    assert_folded_and_intact(&app, &listed, &missing).await;

    // A second run finds everything and appends nothing.
    let again = reconcile_command(
        &app.db.url,
        &emulator.base,
        EMULATOR_KEY,
        &["--since", "1h"],
    )
    .await;
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(again.status.success(), "{stdout}");
    assert!(
        stdout.contains(&format!("listed {n}, already in the log {n}, appended 0")),
        "{stdout}"
    );
    assert_eq!(log_ids(&app.db).await, listed);

    let status: Value = app
        .get("/api/billing/admin/reconcile", ADMIN_TOKEN)
        .await
        .json()
        .await
        .unwrap();
    let runs = status["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{status}");
    assert_eq!(runs[0]["appended_events"], 0);
    assert_eq!(runs[1]["appended_events"], m as i64);
    assert_eq!(
        (&runs[1]["trigger"], &runs[1]["status"]),
        (&json!("command"), &json!("succeeded"))
    );
    assert_eq!(
        runs[1]["appended_by_type"]["customer.subscription.created"],
        1
    );
}

pub fn fake_settings(base: &str, account: Option<&str>) -> ApiSettings {
    ApiSettings {
        base: base.to_owned(),
        key: SecretKey::parse("sk_test_fake_key").unwrap(),
        account: account.map(str::to_owned),
    }
}

pub fn last_hour() -> Window {
    let until = chrono::Utc::now();
    Window {
        since: until - chrono::Duration::hours(1),
        until,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_waits_out_429_and_500_and_reports_differences_without_rewriting() {
    let app = TestApp::start().await;
    let created = now() - 60;
    app.deliver(&api_event(
        "evt_known",
        "customer.created",
        created,
        "cus_1",
    ))
    .await;
    // Stripe's copy of evt_known says another type: reported, never rewritten.
    let listed = [
        api_event("evt_known", "customer.updated", created, "cus_1"),
        api_event("evt_new_1", "customer.created", created, "cus_2"),
        api_event("evt_new_2", "customer.created", created + 1, "cus_3"),
    ];
    let error = json!({"error": {"message": "slow down", "type": "api_error"}}).to_string();
    let script = move |n: usize| match n {
        0 => (429, vec![("retry-after", "1".to_owned())], error.clone()),
        1 => (500, vec![], error.clone()),
        2 => (200, vec![], page(&listed[..2], true)),
        _ => (200, vec![], page(&listed[2..], false)),
    };
    let fake = FakeStripe::start(Duration::ZERO, Box::new(script)).await;
    let client = EventsClient::new(fake_settings(&fake.base, Some("acct_1Connect"))).unwrap();
    let pool = billing_ledger::db::pool(&app.db.url).unwrap();
    let mut report = Report::default();
    reconcile(&pool, &client, &last_hour(), false, &mut report)
        .await
        .unwrap();

    assert_eq!((report.listed, report.present, report.appended), (3, 1, 2));
    assert_eq!(
        report.appended_by_type,
        BTreeMap::from([("customer.created".to_owned(), 2)])
    );
    assert_eq!(
        report.differences,
        vec![Difference {
            event_id: "evt_known".into(),
            field: "type".into(),
            log: "\"customer.created\"".into(),
            stripe: "\"customer.updated\"".into(),
        }]
    );
    let kept = app
        .db
        .count("SELECT count(*) FROM events WHERE event_id = 'evt_known' AND type = 'customer.created' AND source = 'webhook'")
        .await;
    assert_eq!(kept, 1, "the log's copy is left as it is");

    assert_requests_as_stripe_asks(&fake.seen());
}

/// The fake saw 429, 500, then two pages: each retry waited (Retry-After, then the backoff),
/// and every request carried the key, the pinned version and the connected account.
fn assert_requests_as_stripe_asks(seen: &[crate::emulator::Seen]) {
    assert_eq!(seen.len(), 4, "429, 500, then two pages");
    assert!(
        seen[1].at - seen[0].at >= Duration::from_secs(1),
        "Retry-After honoured"
    );
    assert!(
        seen[2].at - seen[1].at >= BACKOFF_FIRST,
        "backoff after the 500"
    );
    for request in seen {
        assert_eq!(request.stripe_version.as_deref(), Some(STRIPE_VERSION));
        assert_eq!(request.stripe_account.as_deref(), Some("acct_1Connect"));
        assert_eq!(
            request.authorization.as_deref(),
            Some("Bearer sk_test_fake_key")
        );
        assert!(request.query.contains("limit=100"), "{}", request.query);
        assert!(
            request.query.contains("created%5Bgte%5D="),
            "{}",
            request.query
        );
    }
    assert!(
        seen[3].query.contains("starting_after=evt_new_1"),
        "{}",
        seen[3].query
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_gets_a_clear_error_and_its_own_exit_code() {
    let emulator = Emulator::start().await;
    let db = TestDb::new().await;
    // localstripe, like Stripe, answers 401 to a key it does not know.
    let wrong = "rk_test_not_this_accounts_key";
    let out = reconcile_command(&db.url, &emulator.base, wrong, &[]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("Stripe refused STRIPE_SECRET_KEY (401 Unauthorized)"),
        "{stderr}"
    );
    let everything = format!("{stderr}{}", String::from_utf8_lossy(&out.stdout));
    assert!(!everything.contains(wrong), "the key is never printed");
    let row = db
        .client()
        .await
        .query_one("SELECT status, error FROM reconcile_runs", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "failed");
    assert!(row.get::<_, String>(1).contains("401"));

    // A key of the wrong shape stops before any request, naming the setting: exit 2.
    let out = reconcile_command(&db.url, &emulator.base, "whsec_not_a_key", &[]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("STRIPE_SECRET_KEY: must be a secret"),
        "{stderr}"
    );
    assert!(!stderr.contains("whsec_not_a_key"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_with_the_interval_run_one_at_a_time() {
    let listed = page(
        &[api_event(
            "evt_timer_1",
            "customer.created",
            now() - 30,
            "cus_t",
        )],
        false,
    );
    // Pages slower than the interval: while one instance lists, a run is already due again,
    // and only the lock keeps the other instance from starting one.
    let fake = FakeStripe::start(
        Duration::from_millis(1_500),
        Box::new(move |_| (200, vec![], listed.clone())),
    )
    .await;
    let (first, second) = start_two_with_timer(&fake.base).await;
    tokio::time::sleep(Duration::from_millis(6_500)).await;

    assert_eq!(fake.in_flight_max(), 1, "one run at a time");
    assert_runs_one_at_a_time(&first.db).await;
    let counted = appended_counted(&first).await + appended_counted(&second).await;
    assert_eq!(
        counted, 1.0,
        "metrics count the appended event once across instances"
    );
    let status: Value = second
        .get("/api/billing/admin/reconcile", ADMIN_TOKEN)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status["enabled"], true);
    assert_eq!(status["interval_secs"], 1.0);
    assert!(status["runs"].as_array().unwrap().len() >= 2, "{status}");
}

/// `billing_ledger_reconcile_appended_events_total` for `customer.created` on one instance.
async fn appended_counted(app: &TestApp) -> f64 {
    let response = app.http.get(app.url("/metrics")).send().await.unwrap();
    let text = response.text().await.unwrap();
    let name = r#"billing_ledger_reconcile_appended_events_total{event_type="customer.created"}"#;
    text.lines()
        .find(|line| line.starts_with(name))
        .map_or(0.0, |line| {
            line.rsplit(' ').next().unwrap().parse().unwrap()
        })
}

/// Two instances on one database, both with the timer every second against `base`.
async fn start_two_with_timer(base: &str) -> (TestApp, TestApp) {
    let db = TestDb::new().await;
    let mut config = test_config(&db.url);
    config.reconcile = Some(billing_ledger::reconcile::service::Settings {
        interval: Duration::from_secs(1),
        settle: Duration::ZERO,
        api: fake_settings(base, None),
    });
    let url = db.url.clone();
    let first = TestApp::start_with(db, config.clone()).await;
    config.instance_id = uuid::Uuid::new_v4().to_string();
    let name = first.db.name.clone();
    let second = TestApp::start_with(TestDb { name, url }, config).await;
    (first, second)
}

/// The finished timer runs: back to back, none overlapping the next, all succeeded,
/// and the one missing event appended by exactly one of them.
async fn assert_runs_one_at_a_time(db: &TestDb) {
    let rows = db
        .client()
        .await
        .query(
            "SELECT started_at, finished_at, status, appended_events FROM reconcile_runs
             WHERE trigger = 'interval' AND status <> 'running' ORDER BY started_at",
            &[],
        )
        .await
        .unwrap();
    assert!(
        (2..=5).contains(&rows.len()),
        "runs back to back, 1.5 s each: {}",
        rows.len()
    );
    for pair in rows.windows(2) {
        let finished: chrono::DateTime<chrono::Utc> = pair[0].get(1);
        let next_started: chrono::DateTime<chrono::Utc> = pair[1].get(0);
        assert!(finished <= next_started, "runs overlapped");
    }
    assert!(rows.iter().all(|r| r.get::<_, String>(2) == "succeeded"));
    let appended: i64 = rows.iter().map(|r| r.get::<_, i64>(3)).sum();
    assert_eq!(
        appended, 1,
        "the missing event is appended once, by one run"
    );
}
