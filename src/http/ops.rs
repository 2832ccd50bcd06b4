//! Liveness and readiness for orchestrators.

use super::AppState;
use poem_openapi::payload::{Json, PlainText};
use poem_openapi::{ApiResponse, Object, OpenApi};
use std::sync::Arc;

pub struct OpsApi {
    pub state: Arc<AppState>,
}

/// A probe's answer.
#[derive(Debug, Object)]
pub struct Health {
    /// `ok`, or what is wrong.
    pub status: String,
}

#[derive(Debug, ApiResponse)]
pub enum ReadyResponse {
    /// The database answers and every migration of this build is applied.
    #[oai(status = 200)]
    Ready(Json<Health>),
    /// Not ready: the database is unreachable or migrations are missing.
    #[oai(status = 503)]
    NotReady(Json<Health>),
}

#[OpenApi]
impl OpsApi {
    /// The process is up.
    #[oai(path = "/healthz", method = "get", tag = "super::Tag::Operations")]
    async fn healthz(&self) -> Json<Health> {
        Json(Health {
            status: "ok".into(),
        })
    }

    /// Prometheus metrics (text format 0.0.4): webhooks by outcome, append latency, log head,
    /// projection position and lag, fold errors, unresolved events, rebuild progress.
    #[oai(path = "/metrics", method = "get", tag = "super::Tag::Operations")]
    async fn metrics(&self) -> PlainText<String> {
        PlainText(self.state.metrics.render(&self.state.pool).await)
    }

    /// The database is reachable and migrations are applied.
    #[oai(path = "/readyz", method = "get", tag = "super::Tag::Operations")]
    async fn readyz(&self) -> ReadyResponse {
        let not_ready = |status: &str| {
            ReadyResponse::NotReady(Json(Health {
                status: status.into(),
            }))
        };
        let Ok(client) = self.state.pool.get().await else {
            return not_ready("database unreachable");
        };
        let applied = client
            .query_one("SELECT count(*)::int4 FROM refinery_schema_history", &[])
            .await;
        match applied {
            Ok(row) if row.get::<_, i32>(0) >= crate::db::migrations_expected() => {
                ReadyResponse::Ready(Json(Health {
                    status: "ok".into(),
                }))
            }
            Ok(_) => not_ready("migrations pending"),
            Err(_) => not_ready("database unreachable or not migrated"),
        }
    }
}
