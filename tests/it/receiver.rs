//! A webhook receiver for the outgoing webhook tests: a real HTTP server on 127.0.0.1 that
//! verifies each message's Standard Webhooks signature with an independent implementation
//! (the `standardwebhooks` crate) and answers as the test says.

use poem::http::StatusCode;
use poem::{IntoResponse, Request, Response};
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How the receiver answers.
#[derive(Debug, Default)]
pub struct State {
    pub secret: Option<String>,
    /// Answer 500 to this many more requests.
    pub fail_next: usize,
    /// With `fail_next`, a `Retry-After` to send.
    pub retry_after: Option<String>,
    /// Answer 410 Gone to everything.
    pub gone: bool,
    /// Hold each request this long before answering.
    pub delay: Duration,
    /// Verified messages answered 2xx, in arrival order: (webhook-id, body).
    pub delivered: Vec<(String, Value)>,
    /// Every request: (webhook-id, status answered, when).
    pub requests: Vec<(String, u16, std::time::Instant)>,
    pub bad_signatures: usize,
    pub in_flight: usize,
    pub max_in_flight: usize,
    /// webhook-ids being answered now.
    pub in_flight_ids: Vec<String>,
    /// Requests that arrived while the same webhook-id was still in flight.
    pub same_message_in_flight: usize,
}

pub struct Receiver {
    pub url: String,
    pub state: Arc<Mutex<State>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let state = Arc::new(Mutex::new(State::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let shared = state.clone();
        let app = poem::Route::new().at(
            "/hook",
            poem::post(poem::endpoint::make(move |request: Request| {
                let state = shared.clone();
                async move { answer(state, request).await }
            })),
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let acceptor = poem::listener::TcpAcceptor::from_tokio(listener).unwrap();
        tokio::spawn(
            poem::Server::new_with_acceptor(acceptor).run_with_graceful_shutdown(
                app,
                async {
                    let _ = stopped.await;
                },
                None,
            ),
        );
        Receiver {
            url,
            state,
            _stop: stop,
        }
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }

    /// Waits until `count` distinct messages were delivered (at most 60 s); returns every
    /// delivery, repeats included (delivery is at least once).
    pub async fn wait_delivered(&self, count: usize) -> Vec<(String, Value)> {
        for _ in 0..1_200 {
            let delivered = self.with(|s| s.delivered.clone());
            let distinct: std::collections::HashSet<_> =
                delivered.iter().map(|(id, _)| id).collect();
            if distinct.len() >= count {
                return delivered;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "only {} of {count} messages arrived",
            self.with(|s| s.delivered.len())
        );
    }
}

async fn answer(state: Arc<Mutex<State>>, mut request: Request) -> Response {
    let headers = request.headers().clone();
    let body = request.take_body().into_bytes().await.unwrap_or_default();
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let (secret, delay) = {
        let mut s = state.lock().unwrap();
        s.in_flight += 1;
        s.max_in_flight = s.max_in_flight.max(s.in_flight);
        if s.in_flight_ids.contains(&id) {
            s.same_message_in_flight += 1;
        }
        s.in_flight_ids.push(id.clone());
        (s.secret.clone(), s.delay)
    };
    tokio::time::sleep(delay).await;
    let verified = secret.is_some_and(|secret| {
        standardwebhooks::Webhook::new(&secret)
            .unwrap()
            .verify(&body, &headers)
            .is_ok()
    });
    let mut s = state.lock().unwrap();
    s.in_flight -= 1;
    let position = s.in_flight_ids.iter().position(|i| *i == id).unwrap();
    s.in_flight_ids.swap_remove(position);
    let (status, retry_after) = if !verified {
        s.bad_signatures += 1;
        (StatusCode::UNAUTHORIZED, None)
    } else if s.gone {
        (StatusCode::GONE, None)
    } else if s.fail_next > 0 {
        s.fail_next -= 1;
        (StatusCode::INTERNAL_SERVER_ERROR, s.retry_after.clone())
    } else {
        s.delivered
            .push((id.clone(), serde_json::from_slice(&body).unwrap()));
        (StatusCode::NO_CONTENT, None)
    };
    s.requests
        .push((id, status.as_u16(), std::time::Instant::now()));
    let mut response = status.into_response();
    if let Some(value) = retry_after {
        response
            .headers_mut()
            .insert("retry-after", value.parse().unwrap());
    }
    response
}
