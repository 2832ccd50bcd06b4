//! Real Stripe events captured by other projects (`../shared/fixtures/stripe-events`, or
//! `LEDGER_FIXTURES_DIR`), plus our own: each is accepted, stored byte for byte, and its type
//! and object ID extracted. Several captured files share placeholder event IDs, so each file
//! gets a fresh database.

use crate::support::TestApp;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn fixture_files() -> Vec<PathBuf> {
    let dir = match std::env::var_os("LEDGER_FIXTURES_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            assert!(
                dir.is_dir(),
                "LEDGER_FIXTURES_DIR {} is not a folder",
                dir.display()
            );
            Some(dir)
        }
        None => {
            let default =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/stripe-events");
            default.is_dir().then_some(default)
        }
    };
    let mut files = Vec::new();
    let ours = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    for dir in dir.iter().chain([&ours]) {
        collect(dir, &mut files);
    }
    files.sort();
    files
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(&path, files);
        } else if path.extension().is_some_and(|e| e == "json") {
            files.push(path);
        }
    }
}

#[tokio::test]
async fn every_fixture_is_accepted_and_stored_byte_for_byte() {
    let files = fixture_files();
    assert!(files.len() >= 3, "fixtures found: {files:?}");
    for file in files {
        let bytes = std::fs::read(&file).unwrap();
        let parsed: Value = serde_json::from_slice(&bytes).unwrap();
        let app = TestApp::start().await;
        let response = app.post_event(&bytes).await;
        assert_eq!(response.status(), 200, "{}", file.display());
        let row = app
            .db
            .client()
            .await
            .query_one(
                "SELECT event_id, type, object_id, object_type, body FROM events",
                &[],
            )
            .await
            .unwrap();
        let expect = |pointer: &str| {
            parsed
                .pointer(pointer)
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        assert_eq!(
            Some(row.get::<_, String>(0)),
            expect("/id"),
            "{}",
            file.display()
        );
        assert_eq!(
            Some(row.get::<_, String>(1)),
            expect("/type"),
            "{}",
            file.display()
        );
        assert_eq!(
            row.get::<_, Option<String>>(2),
            expect("/data/object/id"),
            "{}",
            file.display()
        );
        assert_eq!(
            row.get::<_, Option<String>>(3),
            expect("/data/object/object"),
            "{}",
            file.display()
        );
        assert_eq!(row.get::<_, Vec<u8>>(4), bytes, "{}", file.display());
        app.wait_projected().await;
        let errors = app.db.count("SELECT count(*) FROM projection_errors").await;
        assert_eq!(
            errors,
            0,
            "{} folds without a projection error",
            file.display()
        );
        app.stop().await;
    }
}
