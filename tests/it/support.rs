//! Test harness: a fresh database per test, cloned from a migrated template, and the real
//! service started on `127.0.0.1:0`.
//!
//! Databases are named `blt_<pid>_<n>`; each run drops the ones earlier runs left behind
//! (not those of a run still alive, nor any still in use).
//! The template's name carries a hash of `schema/`, so a schema change makes a new template.

use billing_ledger::config::Config;
use billing_ledger::signature::{sign, WebhookSecret};
use serde_json::Value;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::OnceCell;
use tokio_postgres::NoTls;

pub const SECRET: &str = "whsec_test_primary";
pub const SECRET_OLD: &str = "whsec_test_rotated_out";
pub const FINANCE_TOKEN: &str = "finance-token-for-tests";
pub const ADMIN_TOKEN: &str = "admin-token-for-tests";
pub const PLATFORM_TOKEN: &str = "platform-token-for-tests";

static TEMPLATE: OnceCell<String> = OnceCell::const_new();
static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// The server `DATABASE_URL` points at (the `./dev test` command sets it).
pub fn server_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| billing_ledger::config::DATABASE_URL_DEFAULT.to_owned())
}

fn url_for(database: &str) -> String {
    let mut config: tokio_postgres::Config = server_url().parse().expect("DATABASE_URL parses");
    config.dbname(database);
    let host = match &config.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(h) => h.clone(),
        tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or("postgres");
    format!("host={host} port={port} user={user} dbname={database}")
}

/// A connection to the server's maintenance database.
pub async fn admin_client() -> tokio_postgres::Client {
    connect(&url_for("postgres")).await
}

pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .expect("the test PostgreSQL is reachable (run the tests with ./dev test)");
    tokio::spawn(connection);
    client
}

async fn template() -> &'static str {
    TEMPLATE
        .get_or_init(|| async {
            let admin = admin_client().await;
            let stale = admin
                .query(
                    "SELECT datname FROM pg_database WHERE datname LIKE 'blt\\_%'
                     AND datname NOT LIKE 'blt\\_template\\_%' AND datname NOT LIKE $1",
                    &[&format!("blt\\_{}\\_%", std::process::id())],
                )
                .await
                .unwrap();
            for row in stale {
                let name: String = row.get(0);
                // Another test run still alive on this machine owns its databases.
                let pid = name.split('_').nth(1).unwrap_or_default();
                if std::path::Path::new(&format!("/proc/{pid}")).exists() {
                    continue;
                }
                // Without FORCE: a database still in use (another machine's run) stays.
                let _ = admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\""))
                    .await;
            }
            let name = format!("blt_template_{:016x}", schema_hash());
            admin
                .execute("SELECT pg_advisory_lock(42424242)", &[])
                .await
                .unwrap();
            let exists = admin
                .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
                .await
                .unwrap()
                .is_some();
            if !exists {
                let building = format!("{name}_building");
                let _ = admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {building} WITH (FORCE)"))
                    .await;
                admin
                    .batch_execute(&format!("CREATE DATABASE {building}"))
                    .await
                    .unwrap();
                billing_ledger::db::migrate(&url_for(&building))
                    .await
                    .expect("migrations apply");
                wait_until_unused(&admin, &building).await;
                admin
                    .batch_execute(&format!("ALTER DATABASE {building} RENAME TO {name}"))
                    .await
                    .unwrap();
            }
            admin
                .execute("SELECT pg_advisory_unlock(42424242)", &[])
                .await
                .unwrap();
            name
        })
        .await
}

async fn wait_until_unused(admin: &tokio_postgres::Client, database: &str) {
    for _ in 0..100 {
        let row = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1",
                &[&database],
            )
            .await
            .unwrap();
        if row.get::<_, i64>(0) == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("database {database} still has connections");
}

fn schema_hash() -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    let mut files: Vec<_> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/schema"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for file in files {
        std::fs::read(&file).unwrap().hash(&mut hasher);
    }
    hasher.finish()
}

/// A fresh, migrated database of this test's own.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub async fn new() -> TestDb {
        let template = template().await;
        let name = format!(
            "blt_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let admin = admin_client().await;
        admin
            .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {template}"))
            .await
            .unwrap();
        TestDb {
            url: url_for(&name),
            name,
        }
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        connect(&self.url).await
    }

    /// One integer from a query without parameters.
    pub async fn count(&self, sql: &str) -> i64 {
        self.client()
            .await
            .query_one(sql, &[])
            .await
            .unwrap()
            .get(0)
    }
}

/// The real service on a free port, with its own database.
pub struct TestApp {
    pub db: TestDb,
    pub base: String,
    /// The service's instance ID (`Config::instance_id`).
    pub instance_id: String,
    pub http: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

pub fn test_config(database_url: &str) -> Config {
    Config {
        finance_tokens: vec![FINANCE_TOKEN.into()],
        admin_tokens: vec![ADMIN_TOKEN.into()],
        max_body_bytes: 64 * 1024,
        platform: billing_ledger::config::PlatformConfig {
            platform_tokens: vec![PLATFORM_TOKEN.into()],
            ..Default::default()
        },
        ..Config::local(
            database_url,
            vec![
                WebhookSecret::parse(SECRET).unwrap(),
                WebhookSecret::parse(SECRET_OLD).unwrap(),
            ],
        )
    }
}

impl TestApp {
    pub async fn start() -> TestApp {
        let db = TestDb::new().await;
        let config = test_config(&db.url);
        TestApp::start_with(db, config).await
    }

    pub async fn start_with(db: TestDb, config: Config) -> TestApp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let instance_id = config.instance_id.clone();
        let task = tokio::spawn(billing_ledger::run(config, listener, async {
            let _ = stopped.await;
        }));
        let app = TestApp {
            db,
            base,
            instance_id,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            stop: Some(stop),
            task: Some(task),
        };
        for _ in 0..200 {
            if let Ok(r) = app.http.get(app.url("/healthz")).send().await {
                if r.status().is_success() {
                    return app;
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the service did not start");
    }

    /// A second instance of the service on `first`'s database, as operators run several.
    pub async fn start_second(first: &TestApp) -> TestApp {
        let db = TestDb {
            name: first.db.name.clone(),
            url: first.db.url.clone(),
        };
        TestApp::start_with(db, test_config(&first.db.url)).await
    }

    /// Stops the service gracefully and waits for it.
    pub async fn stop(mut self) -> TestDb {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap().unwrap();
        TestDb {
            name: self.db.name.clone(),
            url: self.db.url.clone(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Posts `body` signed now with the primary secret.
    pub async fn post_event(&self, body: &[u8]) -> reqwest::Response {
        let header = sign(&WebhookSecret::parse(SECRET).unwrap(), now(), body);
        self.post_signed(body, Some(&header)).await
    }

    pub async fn post_signed(&self, body: &[u8], header: Option<&str>) -> reqwest::Response {
        let mut request = self
            .http
            .post(self.url("/api/billing/webhook"))
            .header("content-type", "application/json")
            .body(body.to_vec());
        if let Some(header) = header {
            request = request.header("stripe-signature", header);
        }
        request.send().await.unwrap()
    }

    /// Posts a JSON event and asserts a 200.
    pub async fn deliver(&self, event: &Value) -> Value {
        let response = self.post_event(event.to_string().as_bytes()).await;
        assert_eq!(response.status(), 200, "delivering {}", event["id"]);
        response.json().await.unwrap()
    }

    pub async fn get(&self, path: &str, token: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    /// The service's `/metrics` answer (Prometheus text).
    pub async fn metrics(&self) -> String {
        let response = self.http.get(self.url("/metrics")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    }

    pub async fn get_json(&self, path: &str) -> Value {
        let response = self.get(path, FINANCE_TOKEN).await;
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.unwrap()
    }

    /// Waits until the projector's checkpoint reaches the log head.
    pub async fn wait_projected(&self) {
        let client = self.db.client().await;
        for _ in 0..400 {
            let row = client
                .query_one(
                    "SELECT (SELECT position FROM log_head),
                            coalesce((SELECT position FROM projections WHERE name = 'billing'), -1)",
                    &[],
                )
                .await
                .unwrap();
            if row.get::<_, i64>(0) == row.get::<_, i64>(1) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the projector did not catch up");
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Every read model as JSON, keyed and sorted, for comparing states.
pub async fn snapshot(db: &TestDb) -> Value {
    let client = db.client().await;
    let mut out = serde_json::Map::new();
    for (table, key) in [
        ("tenant_pricing", "tenant_id"),
        ("checkout_sessions", "id"),
        ("customers", "id"),
        ("unresolved_events", "object_id, event_id"),
        ("event_tenants", "tenant_id, event_id"),
        ("projection_errors", "event_id"),
        ("invoices", "id"),
        ("payments", "id"),
        ("refunds", "id"),
        ("disputes", "id"),
        ("credit_notes", "id"),
    ] {
        let sql = format!(
            "SELECT coalesce(json_agg(t ORDER BY {key}), '[]')::text FROM (SELECT * FROM {table}) t"
        );
        let text: String = client.query_one(&sql, &[]).await.unwrap().get(0);
        let mut rows: Value = serde_json::from_str(&text).unwrap();
        for row in rows.as_array_mut().unwrap() {
            row.as_object_mut().unwrap().remove("recorded_at");
        }
        out.insert(table.into(), rows);
    }
    Value::Object(out)
}

/// A `Stripe-Signature` for `body`, signed now with the primary secret.
pub fn signature_now(body: &[u8]) -> String {
    sign(&WebhookSecret::parse(SECRET).unwrap(), now(), body)
}

/// Posts `body`, signed now, to a webhook `url`; returns the status code.
pub async fn post_to(http: &reqwest::Client, url: &str, body: String) -> u16 {
    let header = signature_now(body.as_bytes());
    http.post(url)
        .header("stripe-signature", header)
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// [`post_to`] from a task.
pub fn spawn_post(
    http: &reqwest::Client,
    url: String,
    body: String,
) -> tokio::task::JoinHandle<u16> {
    let http = http.clone();
    tokio::spawn(async move { post_to(&http, &url, body).await })
}

/// The `billing` projection's status from the admin API.
pub async fn projection_status(app: &TestApp) -> Value {
    let status: Value = app
        .get("/api/billing/admin/projections", ADMIN_TOKEN)
        .await
        .json()
        .await
        .unwrap();
    status["projections"][0].clone()
}

/// Requests a rebuild through `app`'s admin API, waits for it to finish, and returns the
/// projection's status after it.
pub async fn rebuild_and_wait(app: &TestApp) -> Value {
    let response = app
        .http
        .post(app.url("/api/billing/admin/projections/rebuild"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let id = response.json::<Value>().await.unwrap()["rebuild_id"].clone();
    for _ in 0..2_400 {
        let projection = projection_status(app).await;
        if projection["rebuild"]["rebuild_id"] == id && projection["rebuild"]["status"] == "done" {
            return projection;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("rebuild did not finish");
}

/// Refuses (or again allows) new connections to a test database; when refusing, also ends
/// every open one and waits until none is left. The ALTER commits first, so no connection can
/// slip in between.
pub async fn cut_connections(database: &str, allow: bool) {
    let admin = admin_client().await;
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {database} ALLOW_CONNECTIONS {allow}"
        ))
        .await
        .unwrap();
    if !allow {
        let terminate = format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '{database}'"
        );
        while admin
            .query_one(&terminate, &[])
            .await
            .unwrap()
            .get::<_, i64>(0)
            > 0
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
