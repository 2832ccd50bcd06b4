//! The commands other than `serve`, run as the real binary: they never create a database, and
//! refuse one without the schema, in one line and with a non-zero exit.

use crate::support::{admin_client, TestDb};
use std::process::Output;

/// Runs `billing-ledger ARGS` with `DATABASE_URL` set to `url`, logging as a user would.
fn run(url: &str, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_billing-ledger"))
        .args(args)
        .env("DATABASE_URL", url)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

/// `url` with its database name replaced.
fn with_database(url: &str, name: &str) -> String {
    let (rest, _) = url.rsplit_once("dbname=").unwrap();
    format!("{rest}dbname={name}")
}

async fn database_exists(name: &str) -> bool {
    admin_client()
        .await
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await
        .unwrap()
        .is_some()
}

/// Asserts a failed run whose stderr is one line containing `expected`.
fn assert_refused(output: &Output, command: &str, expected: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{command} succeeded: {stderr}");
    assert_eq!(
        stderr.lines().count(),
        1,
        "{command}: one line, got {stderr:?}"
    );
    assert!(stderr.contains(expected), "{command}: {stderr:?}");
    assert!(stderr.contains("DATABASE_URL"), "{command}: {stderr:?}");
}

fn commands(import_file: &str) -> Vec<Vec<&str>> {
    vec![
        vec!["verify"],
        vec!["rebuild"],
        vec!["import", import_file],
        vec!["migrate"],
    ]
}

#[tokio::test]
async fn a_mistyped_database_url_is_refused_and_never_created() {
    let db = TestDb::new().await;
    let typo = format!("{}_typo", db.name);
    let url = with_database(&db.url, &typo);
    let file = std::env::temp_dir().join(format!("{typo}.jsonl"));
    std::fs::write(&file, "").unwrap();
    for args in commands(file.to_str().unwrap()) {
        let output = run(&url, &args);
        assert_refused(&output, args[0], "does not exist");
        assert!(!database_exists(&typo).await, "{} created {typo}", args[0]);
    }
    std::fs::remove_file(&file).unwrap();
    // The real database answers as before.
    let output = run(&db.url, &["verify"]);
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("intact: 0 events"));
}

#[tokio::test]
async fn a_database_without_the_schema_is_refused_until_migrated() {
    let name = format!("blt_{}_cli_empty", std::process::id());
    let admin = admin_client().await;
    for statement in ["DROP DATABASE IF EXISTS", "CREATE DATABASE"] {
        admin
            .batch_execute(&format!("{statement} {name}"))
            .await
            .unwrap();
    }
    let url = with_database(&TestDb::new().await.url, &name);
    let file = std::env::temp_dir().join(format!("{name}.jsonl"));
    std::fs::write(&file, "").unwrap();
    let tables = "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'";
    let client = crate::support::connect(&url).await;
    for args in commands(file.to_str().unwrap()) {
        if args[0] == "migrate" {
            continue;
        }
        let output = run(&url, &args);
        assert_refused(&output, args[0], "holds no billing-ledger schema");
        let count: i64 = client.query_one(tables, &[]).await.unwrap().get(0);
        assert_eq!(count, 0, "{} created tables", args[0]);
    }
    std::fs::remove_file(&file).unwrap();
    let output = run(&url, &["migrate"]);
    assert!(output.status.success(), "{output:?}");
    let output = run(&url, &["verify"]);
    assert!(output.status.success(), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("intact: 0 events"));
}
