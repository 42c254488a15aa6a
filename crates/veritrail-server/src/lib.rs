//! Veritrail's HTTP API: thin axum handlers over [`veritrail_store::Store`].
//!
//! Handlers parse and validate input, call the store (blocking reads run on the blocking pool),
//! and render JSON; every error is an RFC 7807 problem (see [`problem`]). Every route but health
//! and readiness goes through [`access::authorize`] first, which gives the handler its caller and
//! tenant.

pub mod access;
pub mod admin;
pub mod admission;
pub mod connections;
pub mod holds;
pub mod ingest;
pub mod kubernaut;
pub mod observe;
pub mod problem;
pub mod proofs;
pub mod read;
pub mod retention;
pub mod tls;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use axum::routing::{delete, get, post};
use axum::Router;
use veritrail_core::note::NoteSigner;
use veritrail_store::Store;

/// The tenant of a cross-tenant admin key that names none, and of denied requests without a key.
pub const DEFAULT_TENANT: &str = "default";

/// Limits and intervals of the API.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Largest accepted request body, as sent and, when it is compressed, decoded.
    pub max_body_bytes: usize,
    /// Most events in one request.
    pub max_events_per_request: usize,
    /// How often a checkpoint is signed while the log grows.
    pub checkpoint_interval: Duration,
    /// Most events one export bundle may hold.
    pub max_export_events: usize,
    /// Requests with a body (every ingest route, verify-chain, key creation) read and worked on
    /// at once; more get 503 at once, so that request bodies never take more than this many times
    /// the largest body (`max_body_bytes`, or the webhook's 10 MiB; twice that while a compressed
    /// body is decoded).
    pub max_concurrent_ingests: usize,
    /// How many of those one key may hold, so that one producer cannot starve the others.
    pub max_concurrent_ingests_per_key: usize,
}

impl Default for ApiConfig {
    fn default() -> ApiConfig {
        ApiConfig {
            max_body_bytes: 5 << 20,
            max_events_per_request: 1000,
            checkpoint_interval: Duration::from_secs(1),
            max_export_events: 100_000,
            max_concurrent_ingests: 64,
            max_concurrent_ingests_per_key: 16,
        }
    }
}

/// Shared state of every handler.
pub struct AppState {
    pub store: Arc<dyn Store>,
    /// The data directory's signing key. Each tenant's log uses it under the name of its origin
    /// ([`AppState::log_signer`]), to sign export manifests and to serve the verifier key.
    pub signer: NoteSigner,
    pub config: ApiConfig,
    /// The admission gate of requests with a body (see [`ApiConfig::max_concurrent_ingests`]).
    pub admission: admission::Admission,
    /// Keys and the denial limiter.
    pub access: access::Access,
    /// Each tenant's legal holds as last read from its log.
    pub holds: holds::Holds,
}

impl AppState {
    /// State for `store`, signing manifests with `signer`, checking callers with `access`.
    pub fn new(
        store: Arc<dyn Store>,
        signer: NoteSigner,
        config: ApiConfig,
        access: access::Access,
    ) -> AppState {
        let admission = admission::Admission::new(
            config.max_concurrent_ingests,
            config.max_concurrent_ingests_per_key,
        );
        AppState {
            store,
            signer,
            config,
            admission,
            access,
            holds: holds::Holds::default(),
        }
    }
}

impl AppState {
    /// The key of `tenant`'s log: the signing key named after the log's origin.
    pub fn log_signer(&self, tenant: &str) -> Result<NoteSigner, problem::Problem> {
        Ok(veritrail_store::keys::log_signer(
            &self.signer,
            &self.store.origin(tenant),
        )?)
    }

    /// The key that signs the manifest of an export proven against `cp`: the key `cp` is signed
    /// under, so that one verifier key checks both notes of a bundle.
    pub fn manifest_signer(
        &self,
        cp: &veritrail_store::SignedCheckpoint,
    ) -> Result<NoteSigner, problem::Problem> {
        self.signer.with_name(&cp.key_name).map_err(|e| {
            problem::Problem::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "Signing failed",
                e.to_string(),
            )
        })
    }
}

/// Runs blocking store work off the async runtime.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, problem::Problem> + Send + 'static,
) -> Result<T, problem::Problem> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        problem::Problem::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "Internal error",
            e.to_string(),
        )
    })?
}

/// The whole API.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(
            "/v1/events",
            post(ingest::post_events).get(read::list_events),
        )
        .route("/v1/events/{event_id}", get(read::get_event))
        .route("/v1/ingest/kubernetes", post(webhook::kubernetes))
        .route("/v1/correlations/{id}/timeline", get(read::timeline))
        .route("/v1/producers", get(read::producers))
        .route("/v1/checkpoint", get(proofs::checkpoint))
        .route("/v1/key", get(proofs::key))
        .route("/v1/proof/inclusion", get(proofs::inclusion))
        .route("/v1/proof/consistency", get(proofs::consistency))
        .route("/v1/export", get(proofs::export))
        .merge(kubernaut_routes())
        .route("/v1/holds", post(holds::place_hold).get(holds::list_holds))
        .route("/v1/holds/{hold_id}/release", post(holds::release_hold))
        .route(
            "/v1/admin/retention/policy",
            get(retention::show).post(retention::set),
        )
        .route("/v1/admin/retention/dry-run", get(retention::dry_run))
        .route("/v1/admin/keys", post(admin::create).get(admin::list))
        .route("/v1/admin/keys/{id}", delete(admin::revoke))
        .route("/healthz", get(observe::healthz))
        .route("/readyz", get(observe::readyz))
        .route("/metrics", get(observe::metrics))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            access::authorize,
        ))
        .fallback(observe::not_found)
        .method_not_allowed_fallback(observe::method_not_allowed)
        .layer(axum::middleware::from_fn(problem::request_limits))
        .with_state(state)
}

/// Kubernaut's DataStorage audit routes, whose overload answers are 503 (see
/// [`kubernaut::overload_as_unavailable`]).
fn kubernaut_routes() -> Router<Arc<AppState>> {
    use kubernaut::{chain, export, notifications, reconstruct};
    Router::new()
        .route(
            "/api/v1/audit/events",
            post(kubernaut::create).get(kubernaut::list),
        )
        .route("/api/v1/audit/events/batch", post(kubernaut::create_batch))
        .route("/api/v1/audit/notifications", post(notifications::create))
        .route("/api/v1/audit/verify-chain", post(chain::verify_chain))
        .route("/api/v1/audit/export", get(export::export))
        .route(
            "/api/v1/audit/remediation-requests/{correlation_id}/reconstruct",
            post(reconstruct::handle),
        )
        .route(
            "/api/v1/audit/legal-hold",
            get(kubernaut::holds::list_holds).post(kubernaut::holds::place_hold),
        )
        .route(
            "/api/v1/audit/legal-hold/{correlation_id}",
            delete(kubernaut::holds::release_hold),
        )
        .layer(axum::middleware::map_response(
            kubernaut::overload_as_unavailable,
        ))
}

/// Signs a checkpoint every `interval` while the log grows, so proofs are never far behind.
pub fn spawn_checkpointer(state: Arc<AppState>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(state.config.checkpoint_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let store = state.store.clone();
            let issued = tokio::task::spawn_blocking(move || {
                for tenant in store.tenants() {
                    match store.checkpoint(&tenant) {
                        Ok(cp) => observe::record_checkpoint(&tenant, &cp),
                        Err(e) => {
                            tracing::error!(tenant, error = %e, "could not issue a checkpoint")
                        }
                    }
                }
            })
            .await;
            if issued.is_err() {
                tracing::error!("the checkpoint task panicked");
            }
        }
    })
}
