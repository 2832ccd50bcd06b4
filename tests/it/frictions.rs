//! Small frictions a new user met: what `sign` prints, why `send` could not connect, a quiet
//! normal shutdown of the instance not projecting, and a start-up line only once listening.

use crate::process::ServeProcess;
use crate::support::{TestDb, SECRET};
use std::process::Command;

fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_billing-ledger"));
    command.env_remove("RUST_LOG");
    command
}

#[test]
fn sign_prints_the_header_value_or_with_header_the_whole_line() {
    let file = std::env::temp_dir().join(format!("blt_sign_{}.json", std::process::id()));
    std::fs::write(&file, b"{}").unwrap();
    let sign = |extra: &[&str]| {
        let output = binary()
            .args(["sign", "--secret", SECRET, "--timestamp", "1700000000"])
            .args(extra)
            .arg(&file)
            .output()
            .unwrap();
        assert!(output.status.success());
        String::from_utf8(output.stdout).unwrap()
    };
    let value = sign(&[]);
    assert!(value.starts_with("t=1700000000,v1="), "{value}");
    assert_eq!(sign(&["--header"]), format!("Stripe-Signature: {value}"));
    let help = binary().args(["sign", "--help"]).output().unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    assert!(
        help.contains("--header") && help.contains("value"),
        "{help}"
    );
    std::fs::remove_file(&file).unwrap();
}

#[test]
fn send_names_the_cause_of_a_connection_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port(); // closed again: nothing listens there
    let file = std::env::temp_dir().join(format!("blt_send_{}.json", std::process::id()));
    std::fs::write(&file, b"{}").unwrap();
    let output = binary()
        .args(["send", "--secret", SECRET, "--url"])
        .arg(format!("http://127.0.0.1:{port}/api/billing/webhook"))
        .arg(&file)
        .output()
        .unwrap();
    std::fs::remove_file(&file).unwrap();
    assert!(!output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        stdout.to_lowercase().contains("connection refused"),
        "{stdout}"
    );
}

#[tokio::test]
async fn the_instance_not_projecting_shuts_down_without_a_warning() {
    let db = TestDb::new().await;
    let leader = ServeProcess::start(&db.url, &[]).await;
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    let follower = ServeProcess::start(&db.url, &[]).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let (status, log) = follower.terminate();
    assert!(status.success(), "{log}");
    assert!(!log.contains("WARN") && !log.contains("ERROR"), "{log}");
    let (status, log) = leader.terminate();
    assert!(status.success(), "{log}");
    assert!(log.contains("projector elected"), "{log}");
    assert!(!log.contains("WARN") && !log.contains("ERROR"), "{log}");
}

#[tokio::test]
async fn the_start_up_line_comes_once_the_service_listens() {
    let db = TestDb::new().await;
    let process = ServeProcess::start(&db.url, &[]).await;
    let (_, log) = process.terminate();
    let listening = log
        .lines()
        .position(|l| l.contains("billing-ledger listening"));
    let listening = listening.unwrap_or_else(|| panic!("no start-up line in {log}"));
    assert!(log
        .lines()
        .nth(listening)
        .unwrap()
        .contains("address=127.0.0.1:"));
    // With the database unreachable the service never listens, and never says it does.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let output = binary()
        .arg("serve")
        .env(
            "DATABASE_URL",
            format!("postgres://postgres@127.0.0.1:{port}/nothing"),
        )
        .env("STRIPE_WEBHOOK_SECRET", SECRET)
        .env("LEDGER_LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(!output.status.success());
    assert!(!stderr.contains("listening"), "{stderr}");
}
