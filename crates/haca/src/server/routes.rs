//! Handlers. Each parses, calls a role, and answers; errors go through `ApiError`.

use super::error::ApiError;
use super::extract::{body_chunks, Admin, JsonBody};
use super::AppState;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use haca_core::settlement::SettlementMode;
use haca_core::{BlobId, RunId};
use haca_gateway::infer::InferRequest;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

type S = State<Arc<AppState>>;

pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

pub async fn readyz(State(st): S) -> Response {
    let store = st.gateway.store.is_healthy();
    let model = st.example_blob.map(|b| st.gateway.models.contains(&b));
    let ready = store && model.unwrap_or(true);
    let body = json!({"ready": ready, "checks": {"store": store, "example_model_loaded": model}});
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

pub async fn node_info(State(st): S) -> Json<Value> {
    let payments = st.payments.as_ref().map(|p| {
        let c = &p.config;
        json!({
            "schemes": ["exact", haca_gateway::payment::SCHEME_APIKEY],
            "network": c.network,
            "asset": c.asset.to_checksum(None),
            "token_name": c.token_name,
            "token_version": c.token_version,
            "pay_to": c.pay_to.to_checksum(None),
            "price": c.price.to_string(),
            "model_prices": c.model_prices.iter().map(|(m, p)| (m.clone(), p.to_string())).collect::<std::collections::BTreeMap<_, _>>(),
        })
    });
    Json(json!({
        "node_id": st.gateway.key.node_id().to_string(),
        "roles": ["gateway"],
        "version": env!("CARGO_PKG_VERSION"),
        "runtime": haca_exec::RUNTIME,
        "payments": payments,
    }))
}

/// Reads OpenGradient's `X-SETTLEMENT-TYPE` header (default `batch`).
pub(super) fn settlement_mode(headers: &HeaderMap) -> Result<SettlementMode, ApiError> {
    match headers.get("x-settlement-type") {
        None => Ok(SettlementMode::Batch),
        Some(v) => v
            .to_str()
            .map_err(|_| "not ASCII".to_string())
            .and_then(SettlementMode::parse)
            .map_err(|e| {
                ApiError::bad_request(
                    "invalid_settlement_type",
                    format!("header X-SETTLEMENT-TYPE: {e}"),
                )
            }),
    }
}

pub async fn infer(
    State(st): S,
    headers: HeaderMap,
    JsonBody(req): JsonBody<InferRequest>,
) -> Result<Response, ApiError> {
    let mode = settlement_mode(&headers)?;
    let exec_mode = req.mode.unwrap_or(haca_core::receipt::ExecMode::Vanilla);
    // x402: price the model (an unknown one is refused before any payment), verify the
    // payment; the gateway settles it before the model runs.
    let (pending, resource, price) = match &st.payments {
        None => (None, String::new(), Default::default()),
        Some(p) => {
            let price = p.price_of(&st.gateway.hub, &req.model)?;
            let resource = st.public_url.resource("/v1/infer");
            match p
                .check(&super::x402::payment_offer(&headers), &resource, price)
                .await
            {
                Ok(pending) => (Some(pending), resource, price),
                Err(e) => return super::x402::refusal(p, &resource, price, e),
            }
        }
    };
    let ans = match (st.gateway.infer(req, mode, pending).await, &st.payments) {
        (Ok(ans), _) => ans,
        (Err(e), Some(p)) => return super::x402::refusal(p, &resource, price, e),
        (Err(e), None) => return Err(e.into()),
    };
    let id = ans.run_id.to_string();
    let mut body = json!({"run_id": id, "output": ans.output, "receipt": ans.receipt});
    if let Some(tee) = &ans.tee {
        // OpenGradient-compatible fields, beside haca's receipt (only enclave answers).
        let fields = serde_json::to_value(tee).expect("tee fields serialize");
        body.as_object_mut()
            .expect("object")
            .extend(fields.as_object().expect("object").clone());
    }
    let mut resp = Json(body).into_response();
    let h = resp.headers_mut();
    h.insert(
        "x-haca-run-id",
        HeaderValue::from_str(&id).expect("hex is a valid header"),
    );
    h.insert(
        "x-haca-receipt",
        HeaderValue::from_str(&format!("/v1/runs/{id}/receipt")).expect("ascii path"),
    );
    if let Some((name, value)) = ans.payment.as_ref().and_then(|p| p.header()) {
        h.insert(
            name,
            HeaderValue::from_str(&value).expect("base64 is ASCII"),
        );
    }
    // The latency histogram's mode label (server::ops).
    resp.extensions_mut()
        .insert(super::ops::RunMode(exec_mode.as_str()));
    Ok(resp)
}

#[derive(Deserialize)]
pub struct ListQuery {
    limit: Option<usize>,
}

pub async fn list_runs(
    State(st): S,
    reader: super::access::Reader,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    reader.may_list_runs()?;
    let limit = q.limit.unwrap_or(50).min(1000);
    Ok(Json(json!({"runs": st.gateway.store.list_runs(limit)?})))
}

pub(super) fn parse_run_id(s: &str) -> Result<RunId, ApiError> {
    s.parse().map_err(|e: haca_core::ids::IdParseError| {
        ApiError::bad_request("invalid_run_id", format!("run_id: {e}"))
    })
}

pub(super) fn load_run(st: &AppState, id: &str) -> Result<haca_store::RunRecord, ApiError> {
    let id = parse_run_id(id)?;
    st.gateway
        .store
        .get_run(&id.to_string())?
        .ok_or_else(|| ApiError::not_found("unknown_run", format!("no run {id} on this node")))
}

fn stored_json(text: &str, what: &str) -> Result<Value, ApiError> {
    serde_json::from_str(text)
        .map_err(|e| ApiError::internal(format!("stored {what} is damaged: {e}")))
}

/// A run with its output: for who paid for it, reviewers of its case, and the operator
/// ([`super::access`]).
pub async fn get_run(
    State(st): S,
    reader: super::access::Reader,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let r = load_run(&st, &id)?;
    let receipt = stored_json(&r.receipt, "receipt")?;
    reader.may_read_run(&st, &r.run_id, &receipt)?;
    Ok(Json(json!({
        "run_id": r.run_id,
        "created_at": r.created_at,
        "model": r.model,
        "blob_id": r.blob_id,
        "mode": r.mode,
        "node_id": r.node_id,
        "receipt_digest": r.receipt_digest,
        "output": stored_json(&r.output, "output")?,
        "receipt": receipt,
    })))
}

/// The stored receipt with its settlement box filled once its round has committed (the
/// settlement box lies outside the signed view, so this keeps the gateway's signature).
pub async fn get_receipt(State(st): S, Path(id): Path<String>) -> Result<Response, ApiError> {
    let r = load_run(&st, &id)?;
    let Some(receipt) = st.gateway.settled_receipt(&r)? else {
        // Until its round commits the stored text is the receipt: send it as it is.
        return Ok(([(header::CONTENT_TYPE, "application/json")], r.receipt).into_response());
    };
    // A settled round's tree dump, by the Walrus id its settlement box names.
    let dump = receipt
        .boxes
        .settlement
        .evidence
        .as_ref()
        .and_then(|e| Some((e.walrus_blob_id.clone()?, e.header.height)));
    let mut resp = Json(receipt).into_response();
    if let Some((walrus, height)) = dump {
        super::walrus::keep_round_dump(&st, &walrus, height).await;
        if let Ok(v) = HeaderValue::from_str(&walrus) {
            resp.headers_mut().insert("x-settlement-walrus-blob-id", v);
        }
    }
    Ok(resp)
}

/// Where a run's settlement stands: `pending`, `settled` (round, height) or `rejected`
/// (with the validators' reason). Any run id the chain has seen, not only this gateway's.
pub async fn get_settlement(State(st): S, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let chain = st.gateway.chain.as_ref().ok_or_else(|| {
        ApiError::not_found(
            "no_chain",
            "this node settles on no chain (start it with the validator role, or devnet)",
        )
    })?;
    let run = parse_run_id(&id)?;
    let s = chain
        .settlement(&run)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Json(super::chain::settlement_json(&run, s, false)))
}

/// `GET /v1/runs/{id}/proof`: where a zkml run's proof stands (queued with the runs ahead of
/// it, proving for how long, proved, failed with why). Public, like receipts.
pub async fn get_proof(State(st): S, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let r = load_run(&st, &id)?;
    let status = match &st.gateway.zk {
        Some(zk) => zk.status(&r.run_id)?,
        None => None,
    };
    let status = status.ok_or_else(|| {
        ApiError::not_found(
            "no_proof",
            format!(
                "run {}: it ran in mode {}, which has no proof",
                r.run_id, r.mode
            ),
        )
    })?;
    Ok(Json(json!({"run_id": r.run_id, "proof": status})))
}

/// `POST /v1/hub/models/{label}`: the body streams to a temporary file in the hub's blob
/// directory as it arrives (written and hashed on the blocking pool, two chunks in flight),
/// so concurrent uploads do not each hold their body in memory; the hub then checks the file
/// from disk and renames it into place, or removes it.
pub async fn upload_model(
    State(st): S,
    admin: Admin,
    Path(label): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let hub = &st.gateway.hub;
    // A bad label is refused before any of the body is read.
    haca_hub::validate_label(&label)?;
    let mut writer = hub.stage()?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(2);
    let stager = tokio::task::spawn_blocking(move || {
        while let Some(chunk) = rx.blocking_recv() {
            writer.write(&chunk)?;
        }
        writer.finish()
    });
    let received = body_chunks(req, st.limits.max_upload, |chunk| {
        let tx = tx.clone();
        async move {
            // Closed only when the writer failed; its error is the one answered.
            tx.send(chunk)
                .await
                .map_err(|_| ApiError::internal("the upload writer stopped"))
        }
    })
    .await;
    drop(tx);
    let staged = stager
        .await
        .map_err(|e| ApiError::internal(format!("the upload writer stopped: {e}")))?;
    // Whatever is refused here drops the staged file, which removes it.
    let staged = match (received, staged) {
        (_, Err(e)) => return Err(e.into()),
        (Err(e), Ok(_)) => return Err(e),
        (Ok(_), Ok(staged)) => staged,
    };
    if staged.size() == 0 {
        return Err(ApiError::bad_request(
            "empty_body",
            "body: send the model file's bytes",
        ));
    }
    let entry = hub.upload_file(&label, staged, &admin.0).await?;
    super::walrus::after_upload(&st, entry.blob_id);
    Ok((StatusCode::CREATED, Json(json!(entry))).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoveLabel {
    blob_id: BlobId,
}

pub async fn move_label(
    State(st): S,
    admin: Admin,
    Path(label): Path<String>,
    JsonBody(body): JsonBody<MoveLabel>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!(
        st.gateway
            .hub
            .move_label(&label, body.blob_id, &admin.0)
            .await?
    )))
}

pub async fn list_models(State(st): S) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({"models": st.gateway.hub.list()?})))
}

pub async fn label_history(
    State(st): S,
    Path(label): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let history = st.gateway.hub.history(&label)?;
    if history.is_empty() {
        return Err(ApiError::not_found(
            "unknown_model",
            format!("no model labelled {label:?}"),
        ));
    }
    Ok(Json(json!({"label": label, "history": history})))
}

#[derive(Deserialize)]
pub struct ResolveQuery {
    /// Unix milliseconds: resolve the label as it stood then.
    at: Option<u64>,
}

pub async fn resolve_model(
    State(st): S,
    Path(reference): Path<String>,
    Query(q): Query<ResolveQuery>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!(st.gateway.hub.resolve(&reference, q.at)?)))
}

pub async fn get_blob(State(st): S, Path(blob_id): Path<String>) -> Result<Response, ApiError> {
    let id: BlobId = blob_id.parse().map_err(|e: haca_core::ids::IdParseError| {
        ApiError::bad_request("invalid_blob_id", e.to_string())
    })?;
    let bytes = st.gateway.hub.read_blob(&id)?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

pub async fn not_found(req: Request) -> ApiError {
    ApiError::not_found(
        "no_such_endpoint",
        format!(
            "{} {} is not an endpoint of this node",
            req.method(),
            req.uri().path()
        ),
    )
}

pub async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
}

fn log_error(e: haca_chain::log::LogError) -> ApiError {
    use haca_chain::log::LogError::*;
    match e {
        IndexOutOfRange { .. } | SizeBeyondLog { .. } | SizesOutOfOrder { .. } => {
            ApiError::bad_request("invalid_log_range", e.to_string())
        }
        other => ApiError::internal(format!("transparency log: {other}")),
    }
}

/// The log's latest signed checkpoint, as JSON with the C2SP note text in `note`.
pub async fn log_head(State(st): S) -> Json<Value> {
    let log = &st.gateway.log;
    let c = log.checkpoint();
    Json(json!({
        "origin": log.origin(),
        "public_key": log.public_key(),
        "size": c.checkpoint.size,
        "root": c.checkpoint.root,
        "timestamp_ms": c.checkpoint.timestamp_ms,
        "note": c.to_note(),
    }))
}

/// The latest checkpoint as a C2SP signed note (text/plain).
pub async fn log_checkpoint(State(st): S) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        st.gateway.log.checkpoint().to_note(),
    )
        .into_response()
}

pub async fn log_entry(State(st): S, Path(index): Path<String>) -> Result<Json<Value>, ApiError> {
    let log = &st.gateway.log;
    let i: u64 = index.parse().map_err(|_| {
        ApiError::bad_request("invalid_index", format!("index: {index:?} is not a number"))
    })?;
    let entry = log
        .entry(i)
        .map_err(log_error)?
        .ok_or_else(|| ApiError::not_found("unknown_entry", format!("the log has no entry {i}")))?;
    Ok(Json(json!({
        "index": i,
        "kind": entry.kind,
        "data": entry.data,
        "leaf_hash": log.leaf_hash(i).map_err(log_error)?,
    })))
}

#[derive(Deserialize)]
pub struct InclusionQuery {
    index: u64,
    size: Option<u64>,
}

/// RFC 6962 audit path of entry `index` in the tree of `size` entries (default: the latest).
pub async fn log_inclusion(
    State(st): S,
    Query(q): Query<InclusionQuery>,
) -> Result<Json<Value>, ApiError> {
    let log = &st.gateway.log;
    let size = q.size.unwrap_or_else(|| log.size());
    let proof = log.inclusion_proof(q.index, size).map_err(log_error)?;
    Ok(Json(json!({
        "index": q.index,
        "size": size,
        "leaf_hash": log.leaf_hash(q.index).map_err(log_error)?,
        "root": log.root_at(size).map_err(log_error)?,
        "proof": proof,
    })))
}

#[derive(Deserialize)]
pub struct ConsistencyQuery {
    first: u64,
    second: Option<u64>,
}

/// RFC 6962 consistency proof between the trees of `first` and `second` entries.
pub async fn log_consistency(
    State(st): S,
    Query(q): Query<ConsistencyQuery>,
) -> Result<Json<Value>, ApiError> {
    let log = &st.gateway.log;
    let second = q.second.unwrap_or_else(|| log.size());
    let proof = log.consistency_proof(q.first, second).map_err(log_error)?;
    Ok(Json(json!({
        "first": q.first,
        "second": second,
        "first_root": log.root_at(q.first).map_err(log_error)?,
        "second_root": log.root_at(second).map_err(log_error)?,
        "proof": proof,
    })))
}

#[derive(Deserialize)]
pub struct TeeNonce {
    nonce: Option<String>,
}

/// The node's enclave client, or 404 when it runs none.
fn enclave_of(st: &AppState) -> Result<&haca_gateway::enclave::EnclaveClient, ApiError> {
    st.gateway
        .enclave
        .as_ref()
        .ok_or_else(|| ApiError::not_found("no_enclave", "this node runs no enclave"))
}

/// `GET /v1/tee/attestation?nonce=HEX`: a fresh document from this node's enclave, binding
/// its run key and the caller's nonce (a challenge: the answer cannot be a replay).
pub async fn tee_attestation(
    State(st): S,
    Query(q): Query<TeeNonce>,
) -> Result<Json<Value>, ApiError> {
    let nonce = match &q.nonce {
        Some(n) => Some(
            hex::decode(n)
                .ok()
                .filter(|b| b.len() <= haca_tee::protocol::MAX_NONCE_BYTES)
                .ok_or_else(|| {
                    ApiError::bad_request("invalid_nonce", "nonce: must be hex, at most 512 bytes")
                })?,
        ),
        None => None,
    };
    let answer = enclave_of(&st)?
        .attestation(nonce.as_deref())
        .await
        .map_err(|e| ApiError::from(e.error))?;
    Ok(Json(json!(answer)))
}

/// `GET /v1/tee`: the enclaves this node runs, with what a client needs to check their
/// answers offline: the OpenGradient-style `tee_id` and RSA `signing_key_pem`, the document
/// binding both keys, PCRs, dev or not, and (when a chain is attached) when the chain's TEE
/// registry registered it and last saw its heartbeat (null: not registered).
pub async fn tee_enclaves(State(st): S) -> Result<Json<Value>, ApiError> {
    let v = enclave_of(&st)?
        .attestation(None)
        .await
        .map_err(|e| ApiError::from(e.error))?;
    let registered = match &st.gateway.chain {
        Some(chain) => chain
            .tee_registry()
            .0
            .enclave(&haca_tee::registry::tee_id_of(&v.enclave_key))
            .cloned(),
        None => None,
    };
    // The private path's keys, signed by the node; the enclave's document binds their
    // digest as its nonce (the enclave vouches for the list shown, not for who holds it).
    let ohttp = match &st.ohttp {
        None => Value::Null,
        Some(keys) => {
            let (mut view, digest) = keys.signed_view(&st.gateway.key);
            if let Ok(doc) = enclave_of(&st)?.attestation(Some(&digest)).await {
                view["attestation_doc_b64"] = doc.document_b64.into();
            }
            view
        }
    };
    Ok(Json(json!({"enclaves": [{
        "ohttp": ohttp,
        "tee_id": v.tee_id,
        "signing_key_pem": v.signing_key_pem,
        "enclave_key": v.enclave_key,
        "attestation_doc_b64": v.document_b64,
        "pcrs": v.pcrs,
        "dev": v.dev,
        "root_fingerprint": v.root_fingerprint,
        "registry_id": registered.as_ref().map(|e| e.tee_id),
        "registered_at": registered.as_ref().map(|e| e.registered_at_ms),
        "last_heartbeat_at": registered.as_ref().map(|e| e.last_heartbeat_ms),
        "enabled": registered.as_ref().map(|e| e.enabled),
    }]})))
}
