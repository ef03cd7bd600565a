//! What an operator runs a node with, around the routes: Prometheus `/metrics`, a request id
//! on every request (its tracing span and the `x-request-id` answer header), rate limits per
//! API key and per client IP (token buckets: `429` + `Retry-After`), a concurrency limit per
//! route (`503` + `Retry-After` once a slot has not freed within a second), and CORS for the
//! panel's API. [`wrap`] puts them around a node's router, outermost, so that a refusal
//! costs no handler work.
//!
//! Metrics live in one process-wide registry ([`metrics`]): what a handler, the enclave
//! registrar or the LLM path records lands there; gauges that describe one node's state
//! (outbox, mempool, height, review queue) are read from it when `/metrics` is scraped.

use super::error::ApiError;
pub use crate::metrics::metrics;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use haca_chain::validator::Validator;
use haca_store::Store;
use prometheus_client::encoding::text::encode;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

/// The request id header (taken from the client when it sends a sane one, else made here).
pub const REQUEST_ID: &str = "x-request-id";
/// How long a request waits for its route's concurrency slot before a 503.
pub const SLOT_WAIT: Duration = Duration::from_secs(1);

/// The mode a run was answered in, set by its handler on the response (a latency label).
#[derive(Clone, Copy, Debug)]
pub struct RunMode(pub &'static str);

/// The node's limits ([limits] in the config file; flags `--rate-per-key` ...).
#[derive(Clone, Debug, Default)]
pub struct OpsConfig {
    /// Requests per second and burst, per API key (bearer or `X-API-Key`).
    pub per_key: Option<(f64, u32)>,
    /// Requests per second and burst, per client IP.
    pub per_ip: Option<(f64, u32)>,
    /// Requests served at once, by route (`/v1/infer`).
    pub max_concurrent: BTreeMap<String, u32>,
    /// Origins allowed to call the API from a browser (`*`: any); empty: same origin only.
    pub cors_origins: Vec<String>,
    /// No ops layer at all (no `/metrics`, request ids or limits): the baseline the
    /// receipt_path bench measures the layer against. No flag sets it.
    pub off: bool,
}

/// Where `/metrics` reads one node's gauges from.
#[derive(Clone, Default)]
pub struct GaugeSources {
    pub store: Option<Arc<Store>>,
    pub chain: Option<Arc<Validator>>,
}

/// Token buckets by a key, each refilled at `rate` per second up to `burst`.
struct Buckets {
    rate: f64,
    burst: f64,
    map: Mutex<HashMap<String, (f64, Instant)>>,
}

/// More distinct keys than this and full buckets are forgotten (they are as good as new).
const MAX_BUCKETS: usize = 100_000;

impl Buckets {
    fn new((rate, burst): (f64, u32)) -> Buckets {
        Buckets {
            rate,
            burst: f64::from(burst.max(1)),
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `key`, or says how many seconds until one is there.
    fn take(&self, key: &str) -> Result<(), u32> {
        let now = Instant::now();
        let mut map = self.map.lock().expect("bucket lock");
        if map.len() >= MAX_BUCKETS && !map.contains_key(key) {
            let (rate, burst) = (self.rate, self.burst);
            map.retain(|_, (t, at)| *t + now.duration_since(*at).as_secs_f64() * rate < burst);
        }
        // A known key (the usual case) is found without allocating its name.
        if !map.contains_key(key) {
            map.insert(key.to_owned(), (self.burst, now));
        }
        let (tokens, at) = map.get_mut(key).expect("inserted above");
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.rate).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / self.rate).ceil().max(1.0) as u32)
        }
    }
}

struct Ops {
    per_key: Option<Buckets>,
    per_ip: Option<Buckets>,
    slots: HashMap<String, Arc<Semaphore>>,
    gauges: GaugeSources,
}

/// Paths no rate limit applies to: probes, metrics and the panel's files.
fn exempt(path: &str) -> bool {
    matches!(
        path,
        "/healthz" | "/readyz" | "/metrics" | "/" | "/panel.js" | "/panel.css"
    )
}

/// The API key a request presents (`Authorization: Bearer` or `X-API-Key`), if any.
fn api_key(req: &Request) -> Option<&str> {
    let h = req.headers();
    h.get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .or_else(|| super::extract::bearer(h))
        .filter(|k| !k.is_empty())
}

fn client_ip(req: &Request) -> Option<IpAddr> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

/// A client's request id when it is short and plain, else a new one.
fn request_id(req: &Request) -> String {
    req.headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        })
        .map(str::to_owned)
        .unwrap_or_else(|| crate::random_hex(8))
}

fn too_many(by: &'static str, wait: u32) -> Response {
    metrics().refused(by);
    let who = if by == "rate_key" {
        "this API key"
    } else {
        "this client address"
    };
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("too many requests from {who}; retry in {wait}s"),
    )
    .retry_after(wait)
    .into_response()
}

/// What the outer layer ([`guard`]) hands the inner one ([`at_route`]) through the
/// request's extensions: the limits, and a slot for the route the router matched.
struct Ctx {
    ops: Arc<Ops>,
    route: Mutex<Option<String>>,
}

/// The outer layer: request id and span, rate limits, metrics, the `x-request-id` header.
async fn guard(State(ops): State<Arc<Ops>>, mut req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let rate_limited = !exempt(req.uri().path());
    let id = request_id(&req);
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %method,
        route = tracing::field::Empty
    );
    // A router without a nested fallback (a validator's) names the route here already.
    let outer_route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned());
    let ctx = Arc::new(Ctx {
        ops: ops.clone(),
        route: Mutex::new(None),
    });
    req.extensions_mut().insert(ctx.clone());
    async move {
        let m = metrics();
        let mut resp = 'answer: {
            if rate_limited {
                if let (Some(b), Some(key)) = (&ops.per_key, api_key(&req)) {
                    if let Err(wait) = b.take(key) {
                        break 'answer too_many("rate_key", wait);
                    }
                }
                if let (Some(b), Some(ip)) = (&ops.per_ip, client_ip(&req)) {
                    if let Err(wait) = b.take(&ip.to_string()) {
                        break 'answer too_many("rate_ip", wait);
                    }
                }
            }
            // A guard, not a dec() after the await: a client that goes away drops this future.
            let _in_flight = InFlight::start(&m.in_flight);
            match &outer_route {
                Some(route) => {
                    tracing::Span::current().record("route", route.as_str());
                    limited(&ops, route, req, next).await
                }
                None => next.run(req).await,
            }
        };
        let route = ctx
            .route
            .lock()
            .expect("route slot")
            .take()
            .or(outer_route)
            .unwrap_or_else(|| "unmatched".to_owned());
        let status = resp.status();
        let mode = resp.extensions().get::<RunMode>().map(|r| r.0);
        m.requests
            .get_or_create(&vec![
                ("route", route.clone()),
                ("method", method.to_string()),
                ("status", status.as_u16().to_string()),
            ])
            .inc();
        m.latency
            .get_or_create(&vec![
                ("route", route.clone()),
                ("mode", mode.unwrap_or("").to_owned()),
            ])
            .observe(start.elapsed().as_secs_f64());
        if let Some(mode) = mode {
            if status.is_success() {
                m.run(&route, mode);
            }
        }
        let h = resp.headers();
        if h.contains_key(haca_pay::types::PAYMENT_RESPONSE_HEADER)
            || h.contains_key(haca_pay::types::X_PAYMENT_RESPONSE_HEADER)
        {
            m.payments
                .get_or_create(&vec![("outcome", "settled".to_owned())])
                .inc();
        } else if status == StatusCode::PAYMENT_REQUIRED {
            m.payments
                .get_or_create(&vec![("outcome", "required".to_owned())])
                .inc();
        }
        if let Ok(v) = HeaderValue::from_str(&id) {
            resp.headers_mut().insert(REQUEST_ID, v);
        }
        resp
    }
    .instrument(span)
    .await
}

/// The inner layer, on the node's router where the matched route is known: names the route
/// for the outer layer and holds the route's concurrency limit. Requests that did not come
/// through [`wrap`] (OHTTP's inner requests) pass untouched.
pub async fn at_route(req: Request, next: Next) -> Response {
    let (Some(ctx), Some(route)) = (
        req.extensions().get::<Arc<Ctx>>().cloned(),
        req.extensions()
            .get::<MatchedPath>()
            .map(|m| m.as_str().to_owned()),
    ) else {
        return next.run(req).await;
    };
    tracing::Span::current().record("route", route.as_str());
    *ctx.route.lock().expect("route slot") = Some(route.clone());
    limited(&ctx.ops, &route, req, next).await
}

/// Runs `req` within `route`'s concurrency limit, if it has one.
async fn limited(ops: &Ops, route: &str, req: Request, next: Next) -> Response {
    let Some(sem) = ops.slots.get(route) else {
        return next.run(req).await;
    };
    match tokio::time::timeout(SLOT_WAIT, sem.clone().acquire_owned()).await {
        Ok(Ok(permit)) => {
            // A streamed answer holds its slot until its last byte.
            next.run(req).await.map(|body| {
                axum::body::Body::new(PermitBody {
                    body,
                    _permit: permit,
                })
            })
        }
        _ => {
            metrics().refused("route_busy");
            ApiError::unavailable(
                "route_busy",
                format!("{route} is serving as many requests as it may; retry shortly"),
            )
            .retry_after(1)
            .into_response()
        }
    }
}

/// A response body that holds its route's concurrency slot until it is done.
struct PermitBody {
    body: axum::body::Body,
    _permit: OwnedSemaphorePermit,
}

impl hyper::body::Body for PermitBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// One request being served, counted in the in-flight gauge until dropped.
struct InFlight<'a>(&'a prometheus_client::metrics::gauge::Gauge);

impl<'a> InFlight<'a> {
    fn start(g: &'a prometheus_client::metrics::gauge::Gauge) -> Self {
        g.inc();
        InFlight(g)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// `GET /metrics`: the OpenMetrics text format, this node's gauges read now.
async fn scrape(State(ops): State<Arc<Ops>>) -> Response {
    let m = metrics();
    if let Some(store) = &ops.gauges.store {
        match store.ops_counts() {
            Ok(c) => {
                m.outbox.set(c.outbox as i64);
                let age = c
                    .outbox_oldest_ms
                    .map(|t| crate::now_ms().saturating_sub(t) as f64 / 1000.0)
                    .unwrap_or(0.0);
                m.outbox_age.set(age);
                for (state, n) in [
                    ("open", c.cases_open),
                    ("cleared", c.cases_cleared),
                    ("rejected", c.cases_rejected),
                ] {
                    m.cases
                        .get_or_create(&vec![("state", state.to_owned())])
                        .set(n as i64);
                }
            }
            Err(e) => tracing::warn!("metrics: the store's counts: {e}"),
        }
    }
    // The local engines count in haca_exec; the counters catch up to their totals.
    let (steps, rows) = haca_exec::llm::batched_totals();
    // fetch_max, not a difference added: two scrapes at once cannot count one step twice.
    m.batched_steps
        .inner()
        .fetch_max(steps, std::sync::atomic::Ordering::Relaxed);
    m.batched_rows
        .inner()
        .fetch_max(rows, std::sync::atomic::Ordering::Relaxed);
    if let Some(v) = &ops.gauges.chain {
        m.mempool.set(v.pending() as i64);
        m.height.set(*v.heights().borrow() as i64);
    }
    let mut text = String::new();
    if let Err(e) = encode(&mut text, &m.registry) {
        return ApiError::internal(format!("metrics did not encode: {e}")).into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// The CORS layer for `origins` (none: no layer, browsers keep to the same origin).
fn cors(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o.trim_end_matches('/')).ok()),
        )
    };
    let h = |s: &'static str| header::HeaderName::from_static(s);
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                h("x-api-key"),
                h("x-request-id"),
                h("x-settlement-type"),
                h("payment-signature"),
                h("x-payment"),
            ])
            .expose_headers([
                h(REQUEST_ID),
                h("x-haca-run-id"),
                h("x-haca-receipt"),
                h("payment-required"),
                h("payment-response"),
                h("x-payment-response"),
                header::RETRY_AFTER,
            ])
            .max_age(Duration::from_secs(600)),
    )
}

/// Checks `cfg` as the node starts; each error names its setting.
pub fn check(cfg: &OpsConfig) -> Result<(), String> {
    for (what, v) in [("rate_per_key", cfg.per_key), ("rate_per_ip", cfg.per_ip)] {
        if let Some((r, _)) = v {
            if !(r.is_finite() && r > 0.0) {
                return Err(format!("{what}: {r} is not a positive rate"));
            }
        }
    }
    for o in &cfg.cors_origins {
        if o != "*" && !(o.starts_with("http://") || o.starts_with("https://")) {
            return Err(format!(
                "cors_origin: {o:?} is not an origin (http(s)://HOST[:PORT], or *)"
            ));
        }
    }
    Ok(())
}

/// Puts `/metrics`, request ids, limits and CORS around `app`.
pub fn wrap(app: Router, cfg: &OpsConfig, gauges: GaugeSources) -> Router {
    if cfg.off {
        return app;
    }
    let ops = Arc::new(Ops {
        per_key: cfg.per_key.map(Buckets::new),
        per_ip: cfg.per_ip.map(Buckets::new),
        slots: cfg
            .max_concurrent
            .iter()
            .map(|(r, n)| (r.clone(), Arc::new(Semaphore::new(*n as usize))))
            .collect(),
        gauges,
    });
    let app = app
        .route(
            "/metrics",
            axum::routing::get(scrape).with_state(ops.clone()),
        )
        .layer(axum::middleware::from_fn_with_state(ops, guard));
    match cors(&cfg.cors_origins) {
        Some(c) => app.layer(c),
        None => app,
    }
}
