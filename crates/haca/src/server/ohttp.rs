//! The gateway's end of the private path (Oblivious HTTP, RFC 9458): the node's key ring,
//! `GET /v1/ohttp/config`, the signed key list `GET /v1/tee` shows, and `POST /v1/ohttp`,
//! which opens a request sealed by a client and forwarded by a relay, serves it on this
//! node's own router in-process and seals the answer.
//!
//! The inner request is a JSON chat body (OpenGradient's client), dispatched to
//! `/v1/chat/completions`, or a BHTTP request (standard clients), dispatched to the method
//! and path it names. Either way the chat handler sees [`Transport::Ohttp`], so the run's
//! route box says path `ohttp` and names the relay when the relay said who it is
//! ([`HEADER_RELAY`]). The answer is sealed single-shot (`message/ohttp-res`) or, when the
//! client asked for a stream (`X-OHTTP-Stream: true` or `Accept:
//! message/ohttp-chunked-res`), chunked with one SSE event per chunk.
//!
//! Keys: `ohttp-keys.json` in the data dir (mode 0600), created on first start with two key
//! ids; a task rotates every [`rotation_period`] (a fresh current key, the previous one kept
//! one more period so requests sealed to it still open) and prunes retired keys, whose
//! replay records go with them.

use super::AppState;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use haca_core::keys::NodeKey;
use haca_gateway::chat::Transport;
use haca_relay::bhttp::{InnerFormat, InnerRequest, InnerResponse};
use haca_relay::{KeyRing, OhttpError, ReplayGuard};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// The header a relay adds to name itself (a node id or a URL); the route box repeats it.
pub const HEADER_RELAY: &str = "X-HACA-Relay";
/// The domain of the node's signature over the key list: it signs
/// `"haca.ohttp.keys.v1:" || sha256(application/ohttp-keys body)`.
pub const KEYS_SIGNATURE_DOMAIN: &[u8] = b"haca.ohttp.keys.v1:";
/// The key ring's file in the data dir.
pub const KEYS_FILE: &str = "ohttp-keys.json";
/// Requests remembered per key id against replays.
const REPLAY_CAPACITY: usize = 1 << 16;
/// Longest relay name kept on the receipt.
const MAX_RELAY_NAME: usize = 200;
/// Largest inner answer sealed single-shot.
const MAX_INNER_ANSWER: usize = 64 << 20;

/// How often keys rotate: `HACA_OHTTP_ROTATE_SECS`, else 24 h.
pub fn rotation_period() -> Duration {
    std::env::var("HACA_OHTTP_ROTATE_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(24 * 3600))
}

fn now_s() -> u64 {
    crate::now_ms() / 1000
}

/// The node's OHTTP keys and what it remembers of requests it opened.
pub struct OhttpKeys {
    ring: RwLock<KeyRing>,
    replay: Mutex<ReplayGuard>,
    file: PathBuf,
}

/// Why the key ring could not be loaded or kept.
#[derive(Debug, thiserror::Error)]
pub enum OhttpKeysError {
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("{0}: {1}")]
    Ring(PathBuf, OhttpError),
    #[error("{0}: {1}")]
    Store(PathBuf, haca_store::StoreError),
}

impl OhttpKeys {
    /// Loads `dir/ohttp-keys.json`, or creates it with a fresh ring of two key ids (the
    /// first expiring after one [`rotation_period`]).
    pub fn load_or_create(dir: &Path) -> Result<OhttpKeys, OhttpKeysError> {
        let file = dir.join(KEYS_FILE);
        let ring = match std::fs::read_to_string(&file) {
            Ok(text) => KeyRing::from_private_json(&text)
                .map_err(|e| OhttpKeysError::Ring(file.clone(), e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut ring =
                    KeyRing::generate(1).map_err(|e| OhttpKeysError::Ring(file.clone(), e))?;
                ring.rotate_generated(now_s() + rotation_period().as_secs())
                    .map_err(|e| OhttpKeysError::Ring(file.clone(), e))?;
                save(&file, &ring)?;
                ring
            }
            Err(e) => return Err(OhttpKeysError::Io(file, e)),
        };
        Ok(OhttpKeys {
            ring: RwLock::new(ring),
            replay: Mutex::new(ReplayGuard::new(REPLAY_CAPACITY)),
            file,
        })
    }

    /// One rotation step at `now`: drops keys past their time (and their replay records),
    /// then makes a fresh key current, keeping the previous one until `now + grace`.
    pub fn rotate(&self, now: u64, grace: Duration) -> Result<u8, OhttpKeysError> {
        let mut ring = self.ring.write().unwrap_or_else(|p| p.into_inner());
        let dropped = ring.prune(now);
        self.replay
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .forget_key(&dropped);
        let id = ring
            .rotate_generated(now + grace.as_secs())
            .map_err(|e| OhttpKeysError::Ring(self.file.clone(), e))?;
        save(&self.file, &ring)?;
        Ok(id)
    }

    /// The `application/ohttp-keys` body: every live key, current first.
    pub fn encoded_configs(&self) -> Vec<u8> {
        self.ring
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .encoded_configs()
    }

    /// The signed description of the key list that `GET /v1/tee` shows: the current key's
    /// descriptor, every key's, the list itself and the node's signature over
    /// [`KEYS_SIGNATURE_DOMAIN`] `|| sha256(list)`.
    pub fn signed_view(&self, key: &NodeKey) -> (Value, [u8; 32]) {
        let (current, all, list) = {
            let ring = self.ring.read().unwrap_or_else(|p| p.into_inner());
            let configs = ring.configs();
            let all: Vec<_> = configs.iter().map(|c| c.descriptor()).collect();
            (
                ring.current().config().descriptor(),
                all,
                ring.encoded_configs(),
            )
        };
        let digest = *haca_core::hash::sha256(&list).as_bytes();
        let signature = key.sign(&signed_message(&digest));
        let mut v = serde_json::to_value(current).expect("descriptors serialize");
        v["keys"] = serde_json::to_value(all).expect("descriptors serialize");
        v["key_list_b64"] = base64_std(&list).into();
        v["key_list_sha256"] = hex::encode(digest).into();
        v["signer"] = key.node_id().to_string().into();
        v["signature"] = hex::encode(signature).into();
        v["signature_domain"] = String::from_utf8_lossy(KEYS_SIGNATURE_DOMAIN).into();
        (v, digest)
    }
}

/// What the node signs for a key list whose SHA-256 is `digest`.
pub fn signed_message(digest: &[u8; 32]) -> Vec<u8> {
    [KEYS_SIGNATURE_DOMAIN, digest.as_slice()].concat()
}

fn base64_std(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn save(file: &Path, ring: &KeyRing) -> Result<(), OhttpKeysError> {
    haca_store::write_atomic(file, ring.to_private_json().as_bytes(), true)
        .map_err(|e| OhttpKeysError::Store(file.to_owned(), e))
}

/// Rotates `keys` every [`rotation_period`], each previous key kept one more period.
pub fn spawn_rotation(keys: Arc<OhttpKeys>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let period = rotation_period();
        let mut tick = tokio::time::interval(period);
        tick.tick().await;
        loop {
            tick.tick().await;
            match keys.rotate(now_s(), period) {
                Ok(id) => tracing::info!("OHTTP keys rotated: key id {id} is current"),
                Err(e) => tracing::error!("OHTTP key rotation failed: {e}"),
            }
        }
    })
}

/// What the OHTTP routes hold: the node's state and its router without them (the inner
/// request is served there, so a sealed request cannot name `/v1/ohttp` again).
#[derive(Clone)]
struct Gateway {
    keys: Arc<OhttpKeys>,
    app: Router,
}

/// `app` with the OHTTP routes in front when the node holds OHTTP keys.
pub fn wrap(app: Router, st: Arc<AppState>) -> Router {
    let Some(keys) = st.ohttp.clone() else {
        return app;
    };
    Router::new()
        .route("/v1/ohttp", post(request))
        .route("/v1/ohttp/config", get(config))
        .method_not_allowed_fallback(super::routes::method_not_allowed)
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(Gateway {
            keys,
            app: app.clone(),
        })
        .fallback_service(app)
}

async fn config(State(g): State<Gateway>) -> Response {
    (
        [
            (header::CONTENT_TYPE, haca_relay::MEDIA_TYPE_KEYS),
            (header::CACHE_CONTROL, "no-store"),
        ],
        g.keys.encoded_configs(),
    )
        .into_response()
}

/// A refusal of the encapsulated request itself (RFC 9458 section 5.3 for key problems).
fn refuse(e: &OhttpError) -> Response {
    if e.is_key_problem() {
        return (
            StatusCode::BAD_REQUEST,
            [
                (header::CONTENT_TYPE, "application/problem+json"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            haca_relay::KEY_PROBLEM_JSON,
        )
            .into_response();
    }
    let body = json!({"error": {"code": e.code(), "message": e.to_string(), "type": "invalid_request_error"}});
    (
        StatusCode::BAD_REQUEST,
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(body),
    )
        .into_response()
}

fn wants_stream(headers: &HeaderMap) -> bool {
    let stream = headers
        .get(haca_relay::HEADER_STREAM)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let chunked = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains(haca_relay::MEDIA_TYPE_CHUNKED_RESPONSE));
    stream || chunked
}

fn relay_name(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(HEADER_RELAY)?.to_str().ok()?.trim();
    (!v.is_empty()).then(|| v.chars().take(MAX_RELAY_NAME).collect())
}

/// Outer headers that travel into the inner request: the payment a relay makes on the
/// user's behalf.
const PAYMENT_HEADERS: [&str; 3] = ["authorization", "x-payment", "payment-signature"];

async fn request(State(g): State<Gateway>, headers: HeaderMap, body: Bytes) -> Response {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.trim().starts_with(haca_relay::MEDIA_TYPE_REQUEST) {
        return super::error::ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "content-type is {ct:?}; send {}",
                haca_relay::MEDIA_TYPE_REQUEST
            ),
        )
        .into_response();
    }
    let opened = {
        let ring = g.keys.ring.read().unwrap_or_else(|p| p.into_inner());
        haca_relay::decapsulate(&ring, &body)
    };
    let (plaintext, ctx) = match opened {
        Ok(o) => o,
        Err(e) => return refuse(&e),
    };
    if let Err(e) = g
        .keys
        .replay
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .check(&ctx)
    {
        return refuse(&e);
    }
    let transport = Transport::Ohttp {
        relay: relay_name(&headers),
    };
    let format = InnerFormat::sniff(&plaintext);
    let inner = match format {
        InnerFormat::Json => Request::post("/v1/chat/completions")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(sealed_to_enclave(&headers, plaintext)))
            .map_err(|e| e.to_string()),
        InnerFormat::Bhttp => match InnerRequest::decode(&plaintext) {
            Ok(r) => bhttp_request(r),
            Err(e) => return refuse(&e),
        },
        InnerFormat::Unknown => Err("the inner message is neither BHTTP nor JSON".into()),
    };
    let mut inner = match inner {
        Ok(r) => r,
        Err(why) => {
            return refuse(&OhttpError::Bhttp(why));
        }
    };
    for name in PAYMENT_HEADERS {
        if let (Some(v), false) = (headers.get(name), inner.headers().contains_key(name)) {
            inner.headers_mut().insert(name, v.clone());
        }
    }
    // Not loopback: a sealed request earns no devnet admin rights from its relay's address.
    inner
        .extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([0, 0, 0, 0], 0))));
    inner.extensions_mut().insert(transport);
    // The router is always ready: call it as the connection service does.
    let mut app = g.app.clone();
    let answer = match tower_service::Service::call(&mut app, inner).await {
        Ok(a) => a,
        Err(never) => match never {},
    };
    let stream = wants_stream(&headers) && format == InnerFormat::Json;
    let mut resp = if stream {
        chunked_answer(ctx, answer)
    } else {
        match single_answer(ctx, answer, format).await {
            Ok(r) => r,
            Err(e) => {
                return super::error::ApiError::internal(format!("sealing the answer: {e}"))
                    .into_response()
            }
        }
    };
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// A JSON chat sealed for an enclave (`X-TEE-ID`, as OpenGradient's client sends) runs in
/// it: `privacy: "tee"` unless the body says otherwise. OpenGradient's client drops fields
/// its signature does not cover, `privacy` among them; the enclave's signed request hash
/// leaves it out too, so the answer still verifies.
fn sealed_to_enclave(headers: &HeaderMap, plaintext: Vec<u8>) -> Vec<u8> {
    if !headers.contains_key(haca_relay::HEADER_TEE_ID) {
        return plaintext;
    }
    match serde_json::from_slice::<Value>(&plaintext) {
        Ok(Value::Object(mut o)) if !o.contains_key("privacy") => {
            o.insert("privacy".into(), "tee".into());
            Value::Object(o).to_string().into_bytes()
        }
        _ => plaintext,
    }
}

fn bhttp_request(r: InnerRequest) -> Result<Request<Body>, String> {
    let mut b = Request::builder().method(r.method.as_str()).uri(&r.path);
    for (k, v) in &r.headers {
        b = b.header(k.as_str(), v.as_str());
    }
    b.body(Body::from(r.body)).map_err(|e| e.to_string())
}

/// The inner answer sealed whole: JSON as OpenGradient reads it (the body itself when it
/// succeeded, `{status, body}` otherwise), or a BHTTP response.
async fn single_answer(
    ctx: haca_relay::ResponseContext,
    answer: Response,
    format: InnerFormat,
) -> Result<Response, OhttpError> {
    let (parts, body) = answer.into_parts();
    let bytes = http_body_util::Limited::new(body, MAX_INNER_ANSWER)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let plaintext = match format {
        InnerFormat::Bhttp => {
            let headers = parts
                .headers
                .iter()
                .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
                .collect();
            InnerResponse {
                status: parts.status.as_u16(),
                headers,
                body: bytes.to_vec(),
            }
            .encode()?
        }
        _ if parts.status.is_success() => bytes.to_vec(),
        _ => {
            let body: Value = serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| json!({"error": String::from_utf8_lossy(&bytes)}));
            json!({"status": parts.status.as_u16(), "body": body})
                .to_string()
                .into_bytes()
        }
    };
    let sealed = ctx.encapsulate(&plaintext)?;
    Ok((
        [(header::CONTENT_TYPE, haca_relay::MEDIA_TYPE_RESPONSE)],
        sealed,
    )
        .into_response())
}

/// The inner answer sealed as it comes, one SSE event per chunk. An answer that is not a
/// stream (a refusal) goes out as one event whose `error` OpenGradient's client reports.
fn chunked_answer(ctx: haca_relay::ResponseContext, answer: Response) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    let mut encoder = match ctx.chunked() {
        Ok(e) => e,
        Err(e) => {
            return super::error::ApiError::internal(format!("sealing the answer: {e}"))
                .into_response()
        }
    };
    tokio::spawn(async move {
        let (parts, body) = answer.into_parts();
        let is_sse = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let send = |b: Vec<u8>| {
            let tx = tx.clone();
            async move { tx.send(Ok(Bytes::from(b))).await.is_ok() }
        };
        if !is_sse {
            let bytes = http_body_util::Limited::new(body, MAX_INNER_ANSWER)
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            let inner: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let message = inner["error"]["message"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
            let event = format!(
                "data: {}\n\n",
                json!({"error": message, "status": parts.status.as_u16(), "body": inner})
            );
            if let Ok(last) = encoder.finish(event.as_bytes()) {
                send(last).await;
            }
            return;
        }
        let mut body = body.into_data_stream();
        let mut buf: Vec<u8> = Vec::new();
        use futures_util::StreamExt;
        while let Some(piece) = body.next().await {
            let Ok(piece) = piece else { break };
            buf.extend_from_slice(&piece);
            while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
                let event: Vec<u8> = buf.drain(..end + 2).collect();
                match encoder.push(&event) {
                    Ok(sealed) => {
                        if !send(sealed).await {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::error!("sealing a chunk failed: {e}");
                        return;
                    }
                }
            }
        }
        if let Ok(last) = encoder.finish(&buf) {
            send(last).await;
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    (
        [(
            header::CONTENT_TYPE,
            haca_relay::MEDIA_TYPE_CHUNKED_RESPONSE,
        )],
        Body::from_stream(stream),
    )
        .into_response()
}
