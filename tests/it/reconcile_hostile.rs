//! Reconciliation against a Stripe that misbehaves (a broken proxy, a hostile
//! `STRIPE_API_BASE`): IDs jsonb cannot hold, looping pages, an echoed key, redirects, huge
//! answers, events outside what was asked for, repeated IDs, and forged output lines. Each
//! case against the scripted fake of `emulator`, through the library or the command.

use crate::emulator::{api_event, page, FakeStripe};
use crate::reconcile::{fake_settings, last_hour, reconcile_command};
use crate::support::{now, TestDb};
use billing_ledger::reconcile::{reconcile, Report, RunError};
use billing_ledger::stripe::events_api::{EventsClient, StripeApiError, ANSWER_BYTES_MAX};
use serde_json::json;
use std::time::Duration;

const KEY: &str = "sk_test_fake_key";

/// A fake answering `answer(n)` to the n-th request, always with status 200.
async fn fake_pages(answer: impl Fn(usize) -> String + Send + Sync + 'static) -> FakeStripe {
    FakeStripe::start(Duration::ZERO, Box::new(move |n| (200, vec![], answer(n)))).await
}

/// Runs [`reconcile`] (not dry) against `base` on `db`.
async fn run(db: &TestDb, base: &str, account: Option<&str>) -> (Report, Result<(), RunError>) {
    let client = EventsClient::new(fake_settings(base, account)).unwrap();
    let pool = billing_ledger::db::pool(&db.url).unwrap();
    let mut report = Report::default();
    let result = reconcile(&pool, &client, &last_hour(), false, &mut report).await;
    (report, result)
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_id_with_nul_is_escaped_and_the_run_recorded_with_problems() {
    let db = TestDb::new().await;
    let created = now() - 60;
    let mut broken = api_event("evt_\u{0}nul\nforged", "customer.created", created, "cus_1");
    broken["created"] = json!("yesterday");
    let body = page(
        &[
            broken,
            api_event("evt_fine", "customer.created", created, "cus_2"),
        ],
        false,
    );
    let fake = fake_pages(move |_| body.clone()).await;
    let out = reconcile_command(&db.url, &fake.base, KEY, &["--since", "1h"]).await;
    let printed = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{printed}{}", stderr(&out));
    assert!(
        printed.contains(r"unreadable evt_\u{0}nul\nforged: "),
        "{printed}"
    );
    assert!(
        !printed.lines().any(|l| l.starts_with("forged")),
        "{printed}"
    );
    let row = db
        .client()
        .await
        .query_one(
            "SELECT status, listed_events, appended_events, unreadable_events,
                    unreadable->0->>'event_id'
             FROM reconcile_runs",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "succeeded_with_problems");
    assert_eq!(
        (
            row.get::<_, i64>(1),
            row.get::<_, i64>(2),
            row.get::<_, i64>(3)
        ),
        (2, 1, 1)
    );
    assert_eq!(row.get::<_, String>(4), r"evt_\u{0}nul\nforged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn looping_pages_stop_the_run_as_stripe_failing() {
    let db = TestDb::new().await;
    let created = now() - 60;
    let a = page(
        &[api_event("evt_a", "customer.created", created, "cus_a")],
        true,
    );
    let b = page(
        &[api_event("evt_b", "customer.created", created, "cus_b")],
        true,
    );
    // The same page again and again.
    let same = a.clone();
    let fake = fake_pages(move |_| same.clone()).await;
    let (report, result) = run(&db, &fake.base, None).await;
    let error = result.unwrap_err();
    assert!(
        matches!(&error, RunError::Stripe(StripeApiError::PaginationLoop(_))),
        "{error}"
    );
    assert_eq!((report.listed, report.appended), (2, 1));
    assert_eq!(fake.seen().len(), 2);
    // Two pages pointing at each other, through the command: Stripe's exit code.
    let fake = fake_pages(move |n| if n % 2 == 0 { a.clone() } else { b.clone() }).await;
    let out = reconcile_command(&db.url, &fake.base, KEY, &["--since", "1h"]).await;
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("pagination loops"),
        "{}",
        stderr(&out)
    );
    assert_eq!(fake.seen().len(), 3);
    // An event of the first page again on the second, under a new cursor.
    let event = |id: &str| api_event(id, "customer.created", created, "cus_c");
    let first = page(&[event("evt_c1"), event("evt_c2")], true);
    let second = page(&[event("evt_c1"), event("evt_c3")], false);
    let fake = fake_pages(move |n| {
        if n == 0 {
            first.clone()
        } else {
            second.clone()
        }
    })
    .await;
    let (_, result) = run(&db, &fake.base, None).await;
    let error = result.unwrap_err().to_string();
    assert!(
        error.contains("evt_c1 was listed on an earlier page"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_echoed_key_is_never_printed_or_stored() {
    let db = TestDb::new().await;
    let echo = format!(
        r#"{{"error": {{"message": "No such key {KEY}; also rk_live_OtherSecret", "type": "invalid_request_error"}}}}"#
    );
    let fake = FakeStripe::start(
        Duration::ZERO,
        Box::new(move |_| (400, vec![], echo.clone())),
    )
    .await;
    let out = reconcile_command(&db.url, &fake.base, KEY, &[]).await;
    let everything = format!("{}{}", stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(4), "{everything}");
    assert!(
        everything.contains("No such key <redacted>"),
        "{everything}"
    );
    let stored: String = db
        .client()
        .await
        .query_one("SELECT error FROM reconcile_runs", &[])
        .await
        .unwrap()
        .get(0);
    for text in [&everything, &stored] {
        assert!(
            !text.contains("fake_key") && !text.contains("OtherSecret"),
            "{text}"
        );
    }
    assert!(stored.contains("rk_live_<redacted>"), "{stored}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_not_followed() {
    let db = TestDb::new().await;
    let listed = page(
        &[api_event(
            "evt_elsewhere",
            "customer.created",
            now() - 60,
            "cus_x",
        )],
        false,
    );
    let elsewhere = fake_pages(move |_| listed.clone()).await;
    let location = format!("{}/v1/events", elsewhere.base);
    let fake = FakeStripe::start(
        Duration::ZERO,
        Box::new(move |_| (302, vec![("location", location.clone())], String::new())),
    )
    .await;
    let (report, result) = run(&db, &fake.base, None).await;
    let error = result.unwrap_err().to_string();
    assert!(
        error.contains("redirect (302)") && error.contains("not followed"),
        "{error}"
    );
    assert!(
        elsewhere.seen().is_empty(),
        "the other host was never asked"
    );
    assert_eq!(report.appended, 0);
    assert_eq!(db.count("SELECT count(*) FROM events").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_over_the_cap_is_refused() {
    let db = TestDb::new().await;
    let padding = "x".repeat(ANSWER_BYTES_MAX);
    let mut event = api_event("evt_huge", "customer.created", now() - 60, "cus_h");
    event["data"]["object"]["padding"] = json!(padding);
    let body = page(&[event], false);
    let fake = fake_pages(move |_| body.clone()).await;
    let (_, result) = run(&db, &fake.base, None).await;
    let error = result.unwrap_err().to_string();
    assert!(error.contains("larger than 16777216 bytes"), "{error}");
    assert_eq!(fake.seen().len(), 1, "not retried");
    assert_eq!(db.count("SELECT count(*) FROM events").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_outside_the_request_are_reported_and_not_appended() {
    let db = TestDb::new().await;
    let created = now() - 60;
    let mut live = api_event("evt_live", "customer.created", created, "cus_l");
    live["livemode"] = json!(true);
    let mut other = api_event("evt_other_acct", "customer.created", created, "cus_o");
    other["account"] = json!("acct_Other");
    let mut ours = api_event("evt_ours", "customer.created", created, "cus_1");
    ours["account"] = json!("acct_1Connect");
    let listed = [
        api_event("evt_old", "customer.created", now() - 7_200, "cus_old"),
        live,
        other,
        ours,
    ];
    let body = page(&listed, false);
    let fake = fake_pages(move |_| body.clone()).await;
    let (report, result) = run(&db, &fake.base, Some("acct_1Connect")).await;
    result.unwrap();
    assert_eq!((report.listed, report.appended), (4, 1));
    assert_eq!(report.out_of_scope_events, 3);
    let problems: Vec<&str> = report
        .out_of_scope
        .iter()
        .map(|u| u.problem.as_str())
        .collect();
    assert!(
        problems[0].contains("outside the requested window"),
        "{problems:?}"
    );
    assert!(
        problems[1].contains("livemode true while the key is a test key"),
        "{problems:?}"
    );
    assert!(problems[2].contains("acct_Other"), "{problems:?}");
    let ids = db
        .count("SELECT count(*) FROM events WHERE event_id = 'evt_ours'")
        .await;
    assert_eq!((ids, db.count("SELECT count(*) FROM events").await), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_id_is_taken_once_and_a_conflicting_copy_reported() {
    let db = TestDb::new().await;
    let created = now() - 60;
    let twice = api_event("evt_twice", "customer.created", created, "cus_1");
    let forged = api_event(
        "evt_forged",
        "customer.created\nlisted 99, already",
        created,
        "cus_2",
    );
    let listed = [
        twice.clone(),
        twice,
        api_event("evt_twice", "customer.deleted", created, "cus_1"),
        forged,
    ];
    let body = page(&listed, false);
    let fake = fake_pages(move |_| body.clone()).await;
    let out = reconcile_command(&db.url, &fake.base, KEY, &["--since", "1h", "--dry-run"]).await;
    let printed = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{printed}{}", stderr(&out));
    assert!(printed.contains("would append 2\n"), "{printed}");
    assert!(
        printed.contains(
            r#"difference evt_twice: type (listed twice) is "customer.created" in the log, "customer.deleted" at Stripe"#
        ),
        "{printed}"
    );
    assert!(
        printed.contains(r"would append 1 customer.created\nlisted 99"),
        "{printed}"
    );
    assert!(
        !printed.lines().any(|l| l.starts_with("listed 99")),
        "{printed}"
    );
    assert_eq!(db.count("SELECT count(*) FROM reconcile_runs").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_never_creates_the_database() {
    let db = TestDb::new().await;
    let fake = fake_pages(|_| page(&[], false)).await;
    let name = format!("blt_never_{}", uuid::Uuid::new_v4().simple());
    let url = db.url.replace(&db.name, &name);
    let out = reconcile_command(&url, &fake.base, KEY, &["--dry-run"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("a dry run never creates it"),
        "{}",
        stderr(&out)
    );
    let exists = db
        .count(&format!(
            "SELECT count(*) FROM pg_database WHERE datname = '{name}'"
        ))
        .await;
    assert_eq!(exists, 0);
    assert!(fake.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_and_setting_errors_exit_2_naming_the_cause() {
    let db = TestDb::new().await;
    let fake = fake_pages(|_| page(&[], false)).await;
    let cases: [(&[&str], &str); 3] = [
        (
            &["--since", "40d", "--until", "35d"],
            "more than 30 days ago",
        ),
        (&["--until", "100h"], "before the default --since (72h ago)"),
        (
            &["--since", "1h", "--until", "2h"],
            "--since: must not be later than --until",
        ),
    ];
    for (args, cause) in cases {
        let out = reconcile_command(&db.url, &fake.base, KEY, args).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(cause), "{args:?}: {}", stderr(&out));
    }
    let out = reconcile_command(&db.url, "https://api.stripe.com#x", KEY, &[]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("STRIPE_API_BASE"), "{}", stderr(&out));
    assert!(fake.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_run_shows_the_events_listed_so_far() {
    let db = TestDb::new().await;
    let created = now() - 60;
    let first = page(
        &[api_event("evt_p1", "customer.created", created, "cus_1")],
        true,
    );
    let last = page(
        &[api_event("evt_p2", "customer.created", created, "cus_2")],
        false,
    );
    let fake = FakeStripe::start(
        Duration::from_millis(1_500),
        Box::new(move |n| {
            (
                200,
                vec![],
                if n == 0 { first.clone() } else { last.clone() },
            )
        }),
    )
    .await;
    let (url, base) = (db.url.clone(), fake.base.clone());
    let command =
        tokio::spawn(async move { reconcile_command(&url, &base, KEY, &["--since", "1h"]).await });
    let mut seen = Vec::new();
    for _ in 0..100 {
        let rows = db
            .client()
            .await
            .query("SELECT status, listed_events FROM reconcile_runs", &[])
            .await
            .unwrap();
        if let Some(row) = rows.first() {
            seen.push((row.get::<_, String>(0), row.get::<_, i64>(1)));
        }
        if seen.last().is_some_and(|(status, _)| status != "running") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(command.await.unwrap().status.success());
    assert!(seen.contains(&("running".into(), 1)), "{seen:?}");
    assert_eq!(seen.last(), Some(&("succeeded".into(), 2)), "{seen:?}");
}
