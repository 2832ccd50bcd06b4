//! Finance reads on a streaming replica (`LEDGER_READ_DATABASE_URL`): a real hot standby.
//!
//! The shared test server is never reconfigured: this test starts its own small primary
//! (initdb on a free port, as the `postgres` user when run as root) and a hot standby made by
//! `pg_basebackup -R` from it, runs the service against both, and stops and deletes both
//! clusters when it ends (also on a failed assertion: [`Cluster`]'s drop).

use crate::events::envelope;
use crate::support::{test_config, TestApp, TestDb, ADMIN_TOKEN, FINANCE_TOKEN};
use billing_ledger::reads::{ReadFallback, REPLICA_RETRY_AFTER};
use serde_json::{json, Value};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// The newest installed PostgreSQL's `bin` directory (`./dev` installs one).
fn bindir() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL's server binaries under /usr/lib/postgresql (./dev installs them)")
        .filter_map(|d| Some(d.ok()?.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    dirs.sort_by_key(|d| {
        d.parent()
            .and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok())
    });
    dirs.pop().expect("initdb under /usr/lib/postgresql/*/bin")
}

/// Runs a PostgreSQL program as the clusters' owner: `postgres` when we are root (the server
/// refuses to run as root), else ourselves. Panics with its output when it fails.
fn as_owner(program: &str, args: &[&str]) {
    let path = bindir().join(program);
    let root = std::fs::metadata("/proc/self").unwrap().uid() == 0;
    let output = if root {
        Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(&path)
            .args(args)
            .output()
    } else {
        Command::new(&path).args(args).output()
    }
    .unwrap_or_else(|e| panic!("running {program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A throwaway cluster of this test's own; stopped (immediately) and deleted on drop.
struct Cluster {
    dir: PathBuf,
    port: u16,
}

impl Cluster {
    fn dir(role: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "blt-replica-{}-{role}-{}",
            std::process::id(),
            free_port()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    /// A new primary: trust auth on 127.0.0.1 (replication included), no fsync (a test).
    fn primary() -> Cluster {
        let cluster = Cluster {
            dir: Cluster::dir("primary"),
            port: free_port(),
        };
        let dir = cluster.dir.to_str().unwrap();
        as_owner(
            "initdb",
            &[
                "-D",
                dir,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "-N",
            ],
        );
        cluster.configure();
        cluster.start();
        cluster
    }

    /// A hot standby streaming from `primary`, from a fresh base backup.
    fn standby_of(primary: &Cluster) -> Cluster {
        let cluster = Cluster {
            dir: Cluster::dir("standby"),
            port: free_port(),
        };
        let port = primary.port.to_string();
        let dir = cluster.dir.to_str().unwrap();
        as_owner(
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-D",
                dir,
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
                "-N",
            ],
        );
        cluster.configure();
        cluster.start();
        cluster
    }

    fn configure(&self) {
        let settings = format!(
            "\nport = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             fsync = off\nshared_buffers = 16MB\nmax_connections = 60\nhot_standby = on\n",
            self.port,
            self.dir.display()
        );
        let conf = self.dir.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).unwrap();
        text.push_str(&settings);
        std::fs::write(&conf, text).unwrap();
    }

    fn start(&self) {
        let dir = self.dir.to_str().unwrap();
        let log = self.dir.join("server.log");
        as_owner(
            "pg_ctl",
            &[
                "-D",
                dir,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "-t",
                "20",
                "start",
            ],
        );
    }

    fn stop(&self) {
        let dir = self.dir.to_str().unwrap();
        as_owner("pg_ctl", &["-D", dir, "-m", "immediate", "-w", "stop"]);
    }

    fn url(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=billing_ledger",
            self.port
        )
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.dir.join("postmaster.pid").exists() {
            let dir = self.dir.to_str().unwrap().to_owned();
            let _ = Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(bindir().join("pg_ctl"))
                .args(["-D", &dir, "-m", "immediate", "stop"])
                .output()
                .or_else(|_| {
                    Command::new(bindir().join("pg_ctl"))
                        .args(["-D", &dir, "-m", "immediate", "stop"])
                        .output()
                });
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn customer(n: usize) -> Value {
    envelope(
        &format!("evt_rep_{n}"),
        "customer.created",
        1_700_000_000 + n as i64,
        json!({"id": format!("cus_rep_{n}"), "object": "customer", "metadata": {"tenant_id": "t-rep"}}),
    )
}

/// One read: (status, `X-Ledger-*` headers, events listed).
async fn read_events(app: &TestApp) -> (u16, Vec<(String, String)>, usize) {
    let response = app
        .get("/api/billing/events?limit=1000", FINANCE_TOKEN)
        .await;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .filter(|(name, _)| name.as_str().starts_with("x-ledger-"))
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
        .collect();
    let body: Value = response.json().await.unwrap();
    let listed = body["events"].as_array().map_or(0, Vec::len);
    (status, headers, listed)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// Reads until the replica has replayed `events` events, or panics after 10 s.
async fn until_replica_has(app: &TestApp, events: usize) -> Vec<(String, String)> {
    for _ in 0..400 {
        let (status, headers, listed) = read_events(app).await;
        let from_replica = header(&headers, "x-ledger-read-source") == Some("replica");
        // The position is read just before the list, so replay may land between the two:
        // wait until both show the events.
        let position = header(&headers, "x-ledger-position").map(str::to_owned);
        if status == 200 && from_replica && listed == events && position == Some(events.to_string())
        {
            return headers;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the replica did not reach {events} events");
}

async fn sql(url: &str, statement: &str) {
    crate::support::connect(url)
        .await
        .batch_execute(statement)
        .await
        .unwrap();
}

#[tokio::test]
async fn reads_go_to_a_hot_standby_report_its_lag_and_fail_over_when_it_stops() {
    let primary = Cluster::primary();
    billing_ledger::db::migrate(&primary.url()).await.unwrap();
    let standby = Cluster::standby_of(&primary);
    let db = TestDb {
        name: "billing_ledger".into(),
        url: primary.url(),
    };
    let mut config = test_config(&db.url);
    config.read_database_url = Some(standby.url());
    let app = TestApp::start_with(db, config).await;
    for n in 0..3 {
        app.deliver(&customer(n)).await;
    }
    let headers = until_replica_has(&app, 3).await;
    assert_eq!(header(&headers, "x-ledger-position"), Some("3"));
    assert_eq!(header(&headers, "x-ledger-replica-lag-events"), Some("0"));

    // Replay paused: the replica stays at 3 events while the primary takes 2 more, and its
    // answers say so.
    sql(&standby.url(), "SELECT pg_wal_replay_pause()").await;
    for n in 3..5 {
        app.deliver(&customer(n)).await;
    }
    let (status, headers, listed) = read_events(&app).await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "x-ledger-read-source"), Some("replica"));
    assert_eq!(
        listed, 3,
        "served by the replica, which has not replayed the last two"
    );
    assert_eq!(header(&headers, "x-ledger-position"), Some("3"));
    assert_eq!(header(&headers, "x-ledger-replica-lag-events"), Some("2"));
    // Admin routes and webhooks stay on the primary and say nothing of a replica.
    let admin = app.get("/api/billing/admin/projections", ADMIN_TOKEN).await;
    assert_eq!(admin.status(), 200);
    assert!(admin.headers().get("x-ledger-read-source").is_none());
    sql(&standby.url(), "SELECT pg_wal_replay_resume()").await;
    until_replica_has(&app, 5).await;

    // The standby stops: reads fall back to the primary (the default)...
    standby.stop();
    let (status, headers, listed) = read_events(&app).await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "x-ledger-read-source"), Some("primary"));
    assert_eq!(header(&headers, "x-ledger-position"), Some("5"));
    assert_eq!(listed, 5);
    // ...or answer 503 where the fallback is `unavailable`, while webhooks go on.
    let strict_db = TestDb {
        name: "billing_ledger".into(),
        url: primary.url(),
    };
    let mut strict = test_config(&strict_db.url);
    strict.read_database_url = Some(standby.url());
    strict.read_fallback = ReadFallback::Unavailable;
    let strict = TestApp::start_with(strict_db, strict).await;
    let refused = strict.get("/api/billing/events", FINANCE_TOKEN).await;
    assert_eq!(refused.status(), 503);
    let error: Value = refused.json().await.unwrap();
    assert!(
        error["error"].as_str().unwrap().contains("replica"),
        "{error}"
    );
    strict.deliver(&customer(5)).await;

    // Back up: reads return to the replica once the retry interval has passed.
    standby.start();
    tokio::time::sleep(REPLICA_RETRY_AFTER).await;
    let headers = until_replica_has(&app, 6).await;
    assert_eq!(header(&headers, "x-ledger-position"), Some("6"));
}
