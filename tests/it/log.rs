//! The log itself: immutable in the database, dense positions.

use crate::events::envelope;
use crate::support::TestApp;
use serde_json::json;

#[tokio::test]
async fn the_database_refuses_to_change_the_log() {
    let app = TestApp::start().await;
    for i in 0..3 {
        let event = envelope(
            &format!("evt_log_{i}"),
            "customer.created",
            1_700_000_000 + i,
            json!({"id": format!("cus_{i}"), "object": "customer"}),
        );
        app.deliver(&event).await;
    }
    let client = app.db.client().await;
    for statement in [
        "UPDATE events SET type = 'forged' WHERE position = 1",
        "DELETE FROM events WHERE position = 2",
        "TRUNCATE events CASCADE",
        "UPDATE deliveries SET duplicate = true",
        "DELETE FROM deliveries",
        "TRUNCATE deliveries",
        "UPDATE log_head SET position = 0",
    ] {
        let outcome = client.batch_execute(statement).await;
        if statement.starts_with("UPDATE log_head") {
            // The head is the appenders' counter, not the log; it may move but never below
            // the stored positions, which the primary key and the position check protect.
            continue;
        }
        let error = outcome.expect_err(statement);
        assert!(
            format!("{error:?}").contains("append-only"),
            "{statement}: {error:?}"
        );
    }
    // Replica mode skips ordinary triggers; these are ENABLE ALWAYS.
    client
        .batch_execute("SET session_replication_role = replica")
        .await
        .unwrap();
    assert!(client.batch_execute("DELETE FROM events").await.is_err());
    assert!(client
        .batch_execute("UPDATE events SET body = 'x'")
        .await
        .is_err());
    client
        .batch_execute("SET session_replication_role = origin")
        .await
        .unwrap();
    assert_eq!(app.db.count("SELECT count(*) FROM events").await, 3);
    let positions: Vec<i64> = client
        .query("SELECT position FROM events ORDER BY position", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(positions, [1, 2, 3]);
}
