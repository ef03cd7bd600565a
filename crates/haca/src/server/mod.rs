//! HTTP: the router, shared state and the handlers.

pub mod access;
pub mod chain;
pub mod data;
pub mod enclave;
pub mod error;
pub mod extract;
mod images;
mod llm;
pub mod memory;
pub mod ohttp;
pub mod ops;
mod panel;
pub mod review;
mod routes;
pub mod walrus;
pub mod x402;

use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post, put};
use axum::Router;
use haca_core::BlobId;
use haca_gateway::Gateway;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

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
    /// Image generation (`--provider ...,kind=image`), when the node has image providers.
    pub images: Option<Arc<haca_gateway::image::ImageGateway>>,
    /// The node's blobs by Walrus id (`/v1/blobs`: Walrus's publisher and aggregator API).
    pub blobs: Arc<crate::walrus::LocalBlobs>,
    /// The review queue (cases, decisions) and its web panel.
    pub review: Arc<crate::review::Review>,
    /// The node's public base URL: payment resources are `{public_url}{path}`.
    pub public_url: x402::PublicUrl,
    /// The private path's keys (`/v1/ohttp`), when the node answers OHTTP.
    pub ohttp: Option<Arc<ohttp::OhttpKeys>>,
    /// MemSync (`/v1/memories`, `/v1/profile`), when the node has its embedding model.
    pub memory: Option<Arc<haca_gateway::memory::MemSync>>,
}

/// Body limits, in bytes, and how long and how many clients are served.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_body: usize,
    pub max_upload: usize,
    /// A request's line and headers must arrive within this, or its connection is closed (an
    /// idle keep-alive connection too, once it has waited as long for its next request).
    pub header_timeout: Duration,
    /// A request's body must arrive within this, counted from its head, plus a second for
    /// every [`BODY_BYTES_PER_SECOND`] already received (a large upload at a real speed is
    /// not cut); past it, a 408.
    pub body_timeout: Duration,
    /// Connections served at once; further ones wait to be accepted until one closes.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body: 16 << 20,
            max_upload: 512 << 20,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_connections: 1024,
        }
    }
}

/// The slowest body that keeps earning time past [`Limits::body_timeout`].
pub const BODY_BYTES_PER_SECOND: u64 = 64 << 10;

/// How long a stopping server waits for the requests in flight before it closes their
/// connections (which cancels what they were doing, generations included).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

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
    let app = r
        .route("/", get(panel::index))
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
        .route("/v1/images/generations", post(images::generations))
        .route("/v1/runs/{run_id}/images/{index}", get(images::get_image))
        .route("/v1/models", get(llm::models))
        .route("/v1/conversations/{id}", get(llm::conversation))
        .route("/v1/memories", post(memory::add).get(memory::list))
        .route("/v1/memories/search", post(memory::search))
        .route("/v1/memories/export", post(memory::export))
        .route("/v1/memories/import", post(memory::import))
        .route(
            "/v1/memories/{id}",
            axum::routing::patch(memory::update).delete(memory::delete),
        )
        .route("/v1/profile", get(memory::profile))
        .route(
            "/v1/profile/bio",
            get(memory::get_bio).patch(memory::set_bio),
        )
        .route("/v1/runs", get(routes::list_runs))
        .route("/v1/runs/{run_id}", get(routes::get_run))
        .route("/v1/runs/{run_id}/receipt", get(routes::get_receipt))
        .route("/v1/runs/{run_id}/settlement", get(routes::get_settlement))
        .route("/v1/runs/{run_id}/proof", get(routes::get_proof))
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
        .route("/v1/blobs", put(walrus::put_blob))
        .route("/v1/blobs/{blob_id}", get(walrus::get_blob))
        .route("/v1/node", get(routes::node_info))
        .route("/v1/tee", get(routes::tee_enclaves))
        .route("/v1/tee/attestation", get(routes::tee_attestation))
        // Limits are enforced where bodies are read (extract::body_bytes), per route.
        .layer(DefaultBodyLimit::disable())
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        // Names the matched route for ops::wrap's metrics and holds its concurrency limit.
        .layer(axum::middleware::from_fn(ops::at_route))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state.clone());
    ohttp::wrap(app, state)
}

/// Serves `app` on `listener` (HTTP/1.1) until `shutdown` resolves, then stops accepting and
/// gives the requests in flight [`SHUTDOWN_GRACE`] before closing their connections.
///
/// A slow client holds nothing for long: its request head must arrive within
/// `limits.header_timeout` and its body within `limits.body_timeout` (a 408); at most
/// `limits.max_connections` connections are served at once, the next ones waiting in the
/// listen backlog until one closes. Handlers see the peer as `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tokio::sync::{watch, Semaphore};
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = tokio::task::JoinSet::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        while conns.try_join_next().is_some() {}
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
        };
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
        };
        // Streamed answers go out event by event: a small write must not wait for the
        // previous one's ACK (Nagle against a delayed ACK costs ~40 ms per stall).
        let _ = stream.set_nodelay(true);
        let service = Connection {
            app: app.clone(),
            peer,
            body_timeout: limits.body_timeout,
        };
        let conn = http.serve_connection(TokioIo::new(stream), service);
        let mut stop = stop_rx.clone();
        conns.spawn(async move {
            let _permit = permit;
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = stop.wait_for(|s| *s) => {}
            }
            // Finish the request in flight, then close.
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            "{} connections still busy {}s after the stop: closing them",
            conns.len(),
            SHUTDOWN_GRACE.as_secs()
        );
        conns.shutdown().await;
    }
    Ok(())
}

/// A failed accept: a connection that died in the backlog is skipped; anything else (out of
/// file descriptors) is logged and waited out, as accepting at once would fail the same way.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::*;
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted
    ) {
        return;
    }
    tracing::error!("accepting a connection failed: {e}");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// One connection's service: the router, with the peer's address and a body deadline on
/// each request.
#[derive(Clone)]
struct Connection {
    app: Router,
    peer: SocketAddr,
    body_timeout: Duration,
}

impl hyper::service::Service<hyper::Request<hyper::body::Incoming>> for Connection {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = axum::routing::future::RouteFuture<std::convert::Infallible>;

    fn call(&self, req: hyper::Request<hyper::body::Incoming>) -> Self::Future {
        let (mut parts, body) = req.into_parts();
        parts
            .extensions
            .insert(axum::extract::ConnectInfo(self.peer));
        let body = TimedBody::new(body, self.body_timeout);
        let mut app = self.app.clone();
        tower_service::Service::call(&mut app, hyper::Request::from_parts(parts, body))
    }
}

/// The error of a body that did not arrive in time ([`Limits::body_timeout`]);
/// `extract::body_bytes` answers it with a 408.
#[derive(Debug)]
pub struct BodyTimeout(pub Duration);

impl std::fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the request body did not arrive within {}s",
            self.0.as_secs()
        )
    }
}

impl std::error::Error for BodyTimeout {}

/// A request body with a deadline: it ends in [`BodyTimeout`] when it is not whole by then.
struct TimedBody {
    inner: hyper::body::Incoming,
    limit: Duration,
    deadline: tokio::time::Instant,
    /// Started the first time the body makes its reader wait.
    sleep: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    timed_out: bool,
}

impl TimedBody {
    fn new(inner: hyper::body::Incoming, limit: Duration) -> TimedBody {
        TimedBody {
            inner,
            limit,
            deadline: tokio::time::Instant::now() + limit,
            sleep: None,
            timed_out: false,
        }
    }
}

impl hyper::body::Body for TimedBody {
    type Data = bytes::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
        use std::future::Future;
        use std::task::Poll;
        let this = self.get_mut();
        if this.timed_out {
            return Poll::Ready(None);
        }
        match std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    // Time earned by what arrived, at the slowest rate that still earns it.
                    this.deadline +=
                        Duration::from_secs_f64(data.len() as f64 / BODY_BYTES_PER_SECOND as f64);
                    if let Some(s) = this.sleep.as_mut() {
                        s.as_mut().reset(this.deadline);
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let deadline = this.deadline;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if sleep.as_mut().poll(cx).is_ready() {
                    this.timed_out = true;
                    return Poll::Ready(Some(Err(Box::new(BodyTimeout(this.limit)))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.timed_out || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}
