//! Health, readiness, Prometheus metrics and the 404 fallback.

use std::sync::{Arc, OnceLock};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use veritrail_store::SignedCheckpoint;

use crate::problem::Problem;
use crate::AppState;

static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide Prometheus recorder (once; later calls reuse it).
pub fn install_metrics() -> Option<&'static PrometheusHandle> {
    PROMETHEUS
        .get_or_init(|| {
            let latency = [
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ];
            let sizes = [1.0, 10.0, 100.0, 500.0, 1000.0, 5000.0, 20000.0];
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_events".into()), &sizes))
                .ok()?
                .install_recorder()
                .ok()?;
            Some(handle)
        })
        .as_ref()
}

/// Updates the checkpoint gauges.
pub fn record_checkpoint(tenant: &str, cp: &SignedCheckpoint) {
    let age = (chrono::Utc::now() - cp.seen_at).num_milliseconds() as f64 / 1000.0;
    metrics::gauge!("veritrail_checkpoint_age_seconds", "tenant" => tenant.to_string()).set(age);
    metrics::gauge!("veritrail_checkpoint_size", "tenant" => tenant.to_string())
        .set(cp.checkpoint.size as f64);
}

/// `GET /healthz`: the process answers, in the shape Kubernaut's probes read.
pub async fn healthz() -> axum::Json<serde_json::Value> {
    let now = veritrail_core::event::format_time(&chrono::Utc::now());
    axum::Json(serde_json::json!({"status": "healthy", "timestamp": now}))
}

/// `GET /readyz`: the store accepts work: every tenant's log takes appends (a full disk makes
/// it not ready until space is free again).
pub async fn readyz(State(state): State<Arc<AppState>>) -> Result<&'static str, Problem> {
    let store = state.store.clone();
    crate::blocking(move || {
        store.head(crate::DEFAULT_TENANT).map_err(Problem::from)?;
        store.ready().map_err(|why| Problem {
            retry_after_s: Some(5),
            ..Problem::new(StatusCode::SERVICE_UNAVAILABLE, "Not ready", why)
        })
    })
    .await?;
    Ok("ready\n")
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    metrics::gauge!("veritrail_queue_depth_events").set(state.store.queue_depth() as f64);
    let body = install_metrics().map(|h| h.render()).unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

/// Unknown paths.
pub async fn not_found(uri: axum::http::Uri) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "Not found",
        format!("no route for {}", uri.path()),
    )
}

/// A known path with a method it does not serve.
pub async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "Method not allowed",
        format!("{} does not serve {method}", uri.path()),
    )
}
