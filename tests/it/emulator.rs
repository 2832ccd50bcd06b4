//! Stripe's side of the reconciliation tests: `localstripe`, a real stateful Stripe emulator
//! (PyPI, installed in a virtual environment by `.ci/run`), started per test on a free port;
//! and a small scripted fake of `GET /v1/events` for answers the emulator never gives (429
//! with `Retry-After`, 500, slow pages).

use serde_json::Value;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A key the emulator accepts (it takes any `sk_` key).
pub const EMULATOR_KEY: &str = "sk_test_emulated_key";

/// The emulator's Python: `LEDGER_LOCALSTRIPE_PYTHON`, else the virtual environment
/// `./dev test` installs into `.data/localstripe`.
fn python() -> String {
    std::env::var("LEDGER_LOCALSTRIPE_PYTHON").unwrap_or_else(|_| {
        format!(
            "{}/.data/localstripe/bin/python",
            env!("CARGO_MANIFEST_DIR")
        )
    })
}

/// A running localstripe, stopped when dropped.
pub struct Emulator {
    pub base: String,
    http: reqwest::Client,
    process: std::process::Child,
}

impl Emulator {
    /// Starts localstripe with an empty store. Its store is otherwise pickled to a fixed
    /// `/tmp` file after every write (slow, and shared between concurrent emulators), so the
    /// launcher turns that off.
    pub async fn start() -> Emulator {
        let port = {
            let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            socket.local_addr().unwrap().port()
        };
        let launcher = "import localstripe.resources as r; \
                        r.Store.dump_to_disk = lambda self: None; \
                        from localstripe.server import start; start()";
        let process = std::process::Command::new(python())
            .args([
                "-c",
                launcher,
                "--port",
                &port.to_string(),
                "--from-scratch",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start localstripe with {} ({e}); install it: python3 -m venv \
                     .data/localstripe && .data/localstripe/bin/pip install localstripe==1.15.10 \
                     (.ci/run does this), or set LEDGER_LOCALSTRIPE_PYTHON",
                    python()
                )
            });
        let emulator = Emulator {
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
            process,
        };
        for _ in 0..200 {
            if let Ok(r) = emulator.get("/v1/events?limit=1").await {
                if r.status().is_success() {
                    return emulator;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("localstripe did not start on {}", emulator.base);
    }

    async fn get(&self, path: &str) -> reqwest::Result<reqwest::Response> {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(EMULATOR_KEY)
            .send()
            .await
    }

    /// POSTs a form to the emulator's API; returns the created object.
    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> Value {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(EMULATOR_KEY)
            .form(form)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        assert!(status.is_success(), "POST {path}: {status} {body}");
        body
    }

    /// Makes the emulator post every event, signed with `secret`, to `url`.
    pub async fn deliver_to(&self, url: &str, secret: &str) {
        self.post(
            "/_config/webhooks/ledger",
            &[("url", url), ("secret", secret)],
        )
        .await;
    }

    /// A product and a monthly plan `plan_pro` to subscribe to.
    pub async fn create_plan(&self) {
        self.post("/v1/products", &[("id", "prod_pro"), ("name", "Pro")])
            .await;
        let plan = [
            ("id", "plan_pro"),
            ("product", "prod_pro"),
            ("amount", "2500"),
            ("currency", "usd"),
            ("interval", "month"),
        ];
        self.post("/v1/plans", &plan).await;
    }

    /// A customer with a card, subscribed to `plan_pro`, both carrying `tenant_id`.
    pub async fn subscribe(&self, tenant_id: &str) -> (String, String) {
        let customer = self
            .post(
                "/v1/customers",
                &[
                    ("email", &format!("{tenant_id}@example.com")),
                    ("metadata[tenant_id]", tenant_id),
                ],
            )
            .await;
        let customer_id = customer["id"].as_str().unwrap().to_owned();
        let card = [
            ("card[number]", "4242424242424242"),
            ("card[exp_month]", "12"),
            ("card[exp_year]", "2034"),
            ("card[cvc]", "123"),
        ];
        let token = self.post("/v1/tokens", &card).await;
        let source_path = format!("/v1/customers/{customer_id}/sources");
        self.post(&source_path, &[("source", token["id"].as_str().unwrap())])
            .await;
        let subscription = self
            .post(
                "/v1/subscriptions",
                &[
                    ("customer", &customer_id),
                    ("items[0][plan]", "plan_pro"),
                    ("metadata[tenant_id]", tenant_id),
                ],
            )
            .await;
        (customer_id, subscription["id"].as_str().unwrap().to_owned())
    }

    /// The ID of every event the emulator lists, paging as a client would.
    pub async fn event_ids(&self) -> Vec<String> {
        let mut ids = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut path = "/v1/events?limit=100".to_owned();
            if let Some(id) = &after {
                path.push_str(&format!("&starting_after={id}"));
            }
            let page: Value = self.get(&path).await.unwrap().json().await.unwrap();
            for event in page["data"].as_array().unwrap() {
                ids.push(event["id"].as_str().unwrap().to_owned());
            }
            if page["has_more"] != true {
                return ids;
            }
            after = ids.last().cloned();
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub at: Instant,
    pub query: String,
    pub authorization: Option<String>,
    pub stripe_version: Option<String>,
    pub stripe_account: Option<String>,
}

/// The fake's answer to its n-th request (0-based): status, headers, body.
pub type Script = dyn Fn(usize) -> (u16, Vec<(&'static str, String)>, String) + Send + Sync;

struct FakeState {
    script: Box<Script>,
    delay: Duration,
    seen: Mutex<Vec<Seen>>,
    in_flight: AtomicUsize,
    in_flight_max: AtomicUsize,
}

/// A scripted `GET /v1/events` on a free port, stopped when dropped.
pub struct FakeStripe {
    pub base: String,
    state: Arc<FakeState>,
    server: tokio::task::JoinHandle<()>,
}

#[poem::handler]
async fn list_events(
    request: &poem::Request,
    poem::web::Data(state): poem::web::Data<&Arc<FakeState>>,
) -> poem::Response {
    let header = |name: &str| request.header(name).map(str::to_owned);
    let index = {
        let mut seen = state.seen.lock().unwrap();
        seen.push(Seen {
            at: Instant::now(),
            query: request.uri().query().unwrap_or("").to_owned(),
            authorization: header("authorization"),
            stripe_version: header("stripe-version"),
            stripe_account: header("stripe-account"),
        });
        seen.len() - 1
    };
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.in_flight_max.fetch_max(now, Ordering::SeqCst);
    tokio::time::sleep(state.delay).await;
    state.in_flight.fetch_sub(1, Ordering::SeqCst);
    let (status, headers, body) = (state.script)(index);
    let mut response = poem::Response::builder()
        .status(poem::http::StatusCode::from_u16(status).unwrap())
        .content_type("application/json");
    for (name, value) in headers {
        response = response.header(name, value);
    }
    response.body(body)
}

impl FakeStripe {
    /// Serves `script`, each answer after `delay`.
    pub async fn start(delay: Duration, script: Box<Script>) -> FakeStripe {
        use poem::EndpointExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(FakeState {
            script,
            delay,
            seen: Mutex::default(),
            in_flight: AtomicUsize::new(0),
            in_flight_max: AtomicUsize::new(0),
        });
        let app = poem::Route::new()
            .at("/v1/events", poem::get(list_events))
            .data(state.clone());
        let acceptor = poem::listener::TcpAcceptor::from_tokio(listener).unwrap();
        let server = tokio::spawn(async move {
            let _ = poem::Server::new_with_acceptor(acceptor).run(app).await;
        });
        FakeStripe {
            base,
            state,
            server,
        }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// The most requests it was answering at once.
    pub fn in_flight_max(&self) -> usize {
        self.state.in_flight_max.load(Ordering::SeqCst)
    }
}

impl Drop for FakeStripe {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A page of `GET /v1/events` holding `events`.
pub fn page(events: &[Value], has_more: bool) -> String {
    serde_json::json!({"object": "list", "url": "/v1/events", "data": events, "has_more": has_more})
        .to_string()
}

/// A minimal Stripe event as the API lists it.
pub fn api_event(id: &str, event_type: &str, created: i64, object_id: &str) -> Value {
    serde_json::json!({
        "id": id, "object": "event", "api_version": "2025-03-31.basil", "created": created,
        "livemode": false, "pending_webhooks": 0, "type": event_type,
        "data": {"object": {"id": object_id, "object": "customer", "email": "x@example.com",
                             "metadata": {}}}
    })
}
