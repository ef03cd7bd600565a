//! HTTP: the router, shared state and the handlers.

pub mod chain;
pub mod enclave;
pub mod error;
pub mod extract;
mod llm;
mod panel;
pub mod review;
mod routes;
pub mod x402;

use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post, put};
use axum::Router;
use haca_core::BlobId;
use haca_gateway::Gateway;
use std::net::SocketAddr;
use std::sync::Arc;

/// Shared by every handler.
pub struct AppState {
    pub gateway: Gateway,
    pub operator_token: String,
    /// devnet: admin actions are allowed from loopback without the token.
    pub loopback_admin: bool,
    /// The model that /readyz requires to be loaded.
    pub example_blob: Option<BlobId>,
    /// Body limits (enforced by the extractors, which answer 413 in the API's shape).
    pub limits: Limits,
    /// x402: the paywall on `/v1/infer` and the `/v1/x402/*` routes, when the node charges.
    pub payments: Option<Arc<haca_gateway::payment::Payments>>,
    /// The LLM gateway (local model and upstream providers), when the node serves LLMs.
    pub chat: Option<Arc<haca_gateway::chat::ChatGateway>>,
    /// The review queue (cases, decisions) and its web panel.
    pub review: Arc<crate::review::Review>,
}

/// Body limits, in bytes.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_body: usize,
    pub max_upload: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body: 16 << 20,
            max_upload: 512 << 20,
        }
    }
}

/// The node's routes; `chain` adds `/v1/chain/*` when the node keeps or follows a chain.
pub fn router(state: Arc<AppState>, chain: Option<Arc<chain::ChainApi>>) -> Router {
    let mut r = Router::new();
    if let Some(api) = chain {
        r = r.merge(chain::router(api));
    }
    if state.payments.is_some() {
        use x402 as pay;
        r = r
            .route("/v1/x402/verify", post(pay::verify))
            .route("/v1/x402/settle", post(pay::settle))
            .route("/v1/x402/supported", get(pay::supported))
            .route("/v1/x402/faucet", post(pay::faucet))
            .route("/v1/x402/balance/{address}", get(pay::balance))
            .route("/v1/apikeys", post(pay::create_api_key))
            .route("/v1/apikeys/self", get(pay::api_key_self))
            .route("/v1/apikeys/{id}", delete(pay::revoke_api_key));
    }
    r.route("/", get(panel::index))
        .route("/panel.js", get(panel::script))
        .route("/panel.css", get(panel::style))
        .route("/v1/review/tokens", post(review::create_token))
        .route("/v1/review/tokens/{id}", delete(review::revoke_token))
        .route("/v1/review/me", get(review::me))
        .route(
            "/v1/cases",
            post(review::create_case).get(review::list_cases),
        )
        .route("/v1/cases/{id}", get(review::get_case))
        .route("/v1/cases/{id}/decision", post(review::decide))
        .route("/v1/cases/{id}/events", get(review::case_events))
        .route("/v1/runs/{run_id}/claims", get(review::run_claims))
        .route("/healthz", get(routes::healthz))
        .route("/readyz", get(routes::readyz))
        .route("/v1/infer", post(routes::infer))
        .route("/v1/chat/completions", post(llm::chat_completions))
        .route("/v1/completions", post(llm::completions))
        .route("/v1/models", get(llm::models))
        .route("/v1/conversations/{id}", get(llm::conversation))
        .route("/v1/runs", get(routes::list_runs))
        .route("/v1/runs/{run_id}", get(routes::get_run))
        .route("/v1/runs/{run_id}/receipt", get(routes::get_receipt))
        .route("/v1/runs/{run_id}/settlement", get(routes::get_settlement))
        .route("/v1/log", get(routes::log_head))
        .route("/v1/log/checkpoint", get(routes::log_checkpoint))
        .route("/v1/log/entries/{index}", get(routes::log_entry))
        .route("/v1/log/proofs/inclusion", get(routes::log_inclusion))
        .route("/v1/log/proofs/consistency", get(routes::log_consistency))
        .route("/v1/hub/models", get(routes::list_models))
        .route("/v1/hub/models/{*label}", post(routes::upload_model))
        .route("/v1/hub/history/{*label}", get(routes::label_history))
        .route("/v1/hub/resolve/{*reference}", get(routes::resolve_model))
        .route("/v1/hub/labels/{*label}", put(routes::move_label))
        .route("/v1/hub/blobs/{blob_id}", get(routes::get_blob))
        .route("/v1/node", get(routes::node_info))
        .route("/v1/tee", get(routes::tee_enclaves))
        .route("/v1/tee/attestation", get(routes::tee_attestation))
        // Limits are enforced where bodies are read (extract::body_bytes), per route.
        .layer(DefaultBodyLimit::disable())
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// Serves `router` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
