//! The relay role (`haca node --roles relay --gateway URL`): the OHTTP relay of RFC 9458. It
//! sees who asks but not what: it forwards encapsulated requests to the gateway's
//! `/v1/ohttp` and streams the sealed answers back unbuffered.
//!
//! What crosses: the body, and of the client's headers only `Content-Type`, `Accept`,
//! `X-TEE-ID` and `X-OHTTP-Stream`; the relay adds `X-HACA-Relay` (its name, which the
//! receipt's route box repeats) and, when configured with `--api-key`, pays the gateway with
//! its own key, so the gateway never learns who asked. Client addresses, cookies,
//! `Authorization` and `X-Forwarded-For` never leave the relay. It logs the key id of each
//! request (the one thing in the clear) and never a body.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;

/// The client headers a relay passes on; everything else stays with the relay.
pub const FORWARDED_HEADERS: [&str; 4] = ["content-type", "accept", "x-tee-id", "x-ohttp-stream"];

/// A relay's configuration.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// The gateway's base URL (`/v1/ohttp` is appended).
    pub gateway: String,
    /// What the relay calls itself in `X-HACA-Relay` (its URL by default).
    pub name: String,
    /// A gateway API key the relay pays with on its users' behalf.
    pub api_key: Option<String>,
}

struct Relay {
    cfg: RelayConfig,
    http: reqwest::Client,
}

/// The relay's routes: `POST /v1/ohttp`, `GET /v1/ohttp/config`, `GET /healthz`.
pub fn router(cfg: RelayConfig) -> Router {
    let http = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(10))
        .tcp_nodelay(true)
        .build()
        .expect("an HTTP client builds");
    Router::new()
        .route("/v1/ohttp", post(forward))
        .route("/v1/ohttp/config", get(config))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(Arc::new(Relay { cfg, http }))
}

fn gateway_url(r: &Relay, path: &str) -> String {
    format!("{}{path}", r.cfg.gateway.trim_end_matches('/'))
}

fn unreachable_gateway(e: reqwest::Error) -> Response {
    tracing::warn!("relay: the gateway did not answer: {e}");
    (
        StatusCode::BAD_GATEWAY,
        axum::Json(serde_json::json!({"error": {
            "code": "gateway_unreachable",
            "message": "the relay could not reach its gateway",
            "type": "api_error",
        }})),
    )
        .into_response()
}

/// The gateway's answer, streamed back as it comes, with only its content type and status.
fn stream_back(r: reqwest::Response) -> Response {
    let status = StatusCode::from_u16(r.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let ct = r.headers().get(header::CONTENT_TYPE).cloned();
    let mut resp = Response::new(Body::from_stream(r.bytes_stream()));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    if let Some(ct) = ct {
        h.insert(header::CONTENT_TYPE, ct);
    }
    resp
}

async fn config(State(r): State<Arc<Relay>>) -> Response {
    match r.http.get(gateway_url(&r, "/v1/ohttp/config")).send().await {
        Ok(a) => stream_back(a),
        Err(e) => unreachable_gateway(e),
    }
}

async fn forward(State(r): State<Arc<Relay>>, headers: HeaderMap, body: Bytes) -> Response {
    match haca_relay::RequestHeader::parse(&body) {
        Ok(h) => tracing::info!(key_id = h.key_id, bytes = body.len(), "relay: forwarding"),
        Err(_) => tracing::info!(bytes = body.len(), "relay: forwarding a short message"),
    }
    let mut req = r.http.post(gateway_url(&r, "/v1/ohttp")).body(body);
    for name in FORWARDED_HEADERS {
        if let Some(v) = headers.get(name) {
            req = req.header(name, v.as_bytes());
        }
    }
    req = req.header(crate::server::ohttp::HEADER_RELAY, r.cfg.name.as_str());
    if let Some(key) = &r.cfg.api_key {
        req = req.bearer_auth(key);
    }
    match req.send().await {
        Ok(a) => stream_back(a),
        Err(e) => unreachable_gateway(e),
    }
}

/// A relay serving on `listener` until `shutdown` resolves; its name defaults to its URL.
pub async fn serve(
    listener: tokio::net::TcpListener,
    mut cfg: RelayConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if cfg.name.is_empty() {
        cfg.name = format!("http://{}", listener.local_addr()?);
    }
    let app = router(cfg).layer(tower_http::trace::TraceLayer::new_for_http());
    crate::server::serve(listener, app, crate::server::Limits::default(), shutdown).await
}
