//! The chain's HTTP surface: what a validator (or a gateway that follows a chain) serves under
//! `/v1/chain`. Submissions go into the validator's mempool and on to its peers.

use super::error::ApiError;
use super::extract::body_bytes;
use crate::forward::Forwarder;
pub use crate::forward::FORWARDED_HEADER;
use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use haca_chain::state::Tx;
use haca_chain::validator::{RunSettlement, Submitted, Validator};
use haca_chain::RunRecord;
use haca_core::RunId;
use haca_store::Store;
use serde_json::{json, Value};
use std::sync::Arc;

/// Most bytes one `POST /v1/chain/records` may carry (a batch of records).
pub const MAX_BATCH_BYTES: usize = 64 << 20;
/// Most records in one batch.
pub const MAX_BATCH_RECORDS: usize = 20_000;

/// What the chain routes need.
pub struct ChainApi {
    pub validator: Arc<Validator>,
    pub store: Arc<Store>,
    /// How this node takes part: a voting validator accepts submissions and passes them to
    /// its peers; a follower (a gateway that settles on a remote chain) only serves reads.
    pub role: ChainRole,
}

pub enum ChainRole {
    Validator { forward: Option<Forwarder> },
    Follower,
}

type S = State<Arc<ChainApi>>;

/// The `/v1/chain` routes, ready to merge into a node's router.
pub fn router<S2>(api: Arc<ChainApi>) -> Router<S2> {
    Router::new()
        .route("/v1/chain/records", post(submit_records))
        .route("/v1/chain/records/{run_id}", get(record_settlement))
        .route("/v1/chain/txs", post(submit_tx))
        .route("/v1/chain/blocks/{height}", get(block))
        .route("/v1/chain/status", get(status))
        .route("/v1/chain/genesis", get(genesis))
        .route("/v1/chain/validators", get(validators))
        .route("/v1/chain/models", get(models))
        .route("/v1/chain/tee", get(tee_registry))
        .with_state(api)
}

fn parse_run_id(s: &str) -> Result<RunId, ApiError> {
    s.parse::<RunId>()
        .map_err(|e| ApiError::bad_request("invalid_run_id", format!("run id: {e}")))
}

/// A run's settlement as JSON; `with_evidence` adds the whole settlement evidence (what a
/// gateway that follows this chain puts in its receipts' settlement box).
pub fn settlement_json(run: &RunId, s: RunSettlement, with_evidence: bool) -> Value {
    let id = run.to_string();
    match s {
        RunSettlement::Pending => json!({"run_id": id, "status": "pending"}),
        RunSettlement::Settled(ev) => {
            let mut v = json!({
                "run_id": id,
                "status": "settled",
                "round": ev.round,
                "height": ev.header.height,
                "leaf_index": ev.leaf_index,
                "settled_at": ev.header.time_ms,
            });
            if with_evidence {
                v["evidence"] = json!(ev);
            }
            v
        }
        RunSettlement::Rejected { height, reason } => {
            json!({"run_id": id, "status": "rejected", "height": height, "reason": reason})
        }
    }
}

/// Where a run stands on this chain, with its settlement evidence once settled.
async fn record_settlement(State(api): S, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let run = parse_run_id(&id)?;
    let s = api
        .validator
        .settlement(&run)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Json(settlement_json(&run, s, true)))
}

fn forwarder(api: &ChainApi) -> Result<Option<&Forwarder>, ApiError> {
    match &api.role {
        ChainRole::Validator { forward } => Ok(forward.as_ref()),
        ChainRole::Follower => Err(ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            "not_a_validator",
            "this node follows the chain without voting; submit to one of its validators",
        )),
    }
}

/// Parses one record, or a JSON array of records (a batch); errors name the record's index.
fn parse_records(bytes: &[u8]) -> Result<(Vec<RunRecord>, bool), ApiError> {
    let bad = |m: String| ApiError::bad_request("invalid_record", m);
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'[') {
        if bytes.len() > haca_chain::record::MAX_RECORD_BYTES {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!(
                    "a record is at most {} bytes; this one is {} (send batches as a JSON array)",
                    haca_chain::record::MAX_RECORD_BYTES,
                    bytes.len()
                ),
            ));
        }
        return Ok((vec![RunRecord::from_json_slice(bytes).map_err(bad)?], false));
    }
    let raw: Vec<&serde_json::value::RawValue> = serde_json::from_slice(bytes)
        .map_err(|e| bad(format!("records: not a JSON array of records: {e}")))?;
    if raw.len() > MAX_BATCH_RECORDS {
        return Err(bad(format!(
            "records: {} records, over the limit of {MAX_BATCH_RECORDS} per batch",
            raw.len()
        )));
    }
    let records = raw
        .iter()
        .enumerate()
        .map(|(i, r)| {
            RunRecord::from_json_slice(r.get().as_bytes())
                .map_err(|e| bad(format!("records[{i}]: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((records, true))
}

/// Submits a run record (an object) or a batch of them (an array) for settlement; the whole
/// batch is refused if one record is malformed, naming it. Idempotent by run id. New records
/// are passed on to the other validators, so that whichever proposes next includes them.
async fn submit_records(State(api): S, req: Request) -> Result<Response, ApiError> {
    // Passed on only by a validator with peers, and only if it came from outside.
    let forward = forwarder(&api)?
        .cloned()
        .filter(|_| !req.headers().contains_key(FORWARDED_HEADER));
    let bytes = body_bytes(req, MAX_BATCH_BYTES).await?;
    let (records, batch) = parse_records(&bytes)?;
    let validator = api.validator.clone();
    // Verifying signatures is CPU work: keep it off the async workers.
    let keep = forward.is_some();
    let results = tokio::task::spawn_blocking(move || {
        let mut fresh = Vec::new();
        let mut results = Vec::with_capacity(records.len());
        for r in records {
            let run_id = r.run_id;
            let copy = keep.then(|| r.clone());
            let status = match validator.submit(r) {
                Ok(Submitted::Queued) => {
                    fresh.extend(copy);
                    "queued"
                }
                Ok(Submitted::AlreadyQueued) => "already_queued",
                Ok(Submitted::AlreadySettled) => "already_settled",
                Err(e) => return Err(ApiError::unavailable("mempool_full", e.to_string())),
            };
            results.push(json!({"run_id": run_id.to_string(), "status": status}));
        }
        Ok((results, fresh))
    })
    .await
    .map_err(|e| ApiError::internal(format!("submission task failed: {e}")))?;
    let (results, fresh) = results?;
    if let Some(f) = forward {
        f.records(fresh);
    }
    let body = if batch {
        json!({"results": results})
    } else {
        results.into_iter().next().unwrap_or(Value::Null)
    };
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// Queues a transaction (governance, label move); refused at once when it does not check
/// against the current state.
async fn submit_tx(State(api): S, req: Request) -> Result<Response, ApiError> {
    let forward = forwarder(&api)?
        .cloned()
        .filter(|_| !req.headers().contains_key(FORWARDED_HEADER));
    let bytes = body_bytes(req, haca_chain::record::MAX_RECORD_BYTES).await?;
    let mut de = serde_json::Deserializer::from_slice(&bytes);
    let tx: Tx = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        ApiError::bad_request(
            "invalid_tx",
            format!("tx field {}: {}", e.path(), e.inner()),
        )
    })?;
    de.end()
        .map_err(|e| ApiError::bad_request("invalid_tx", format!("tx: trailing data: {e}")))?;
    api.validator
        .submit_tx(tx.clone())
        .map_err(|reason| ApiError::bad_request("tx_refused", reason))?;
    if let Some(f) = forward {
        f.tx(tx);
    }
    Ok((StatusCode::ACCEPTED, Json(json!({"status": "queued"}))).into_response())
}

/// The chain's id, height, state hash and mempool size.
async fn status(State(api): S) -> Result<Json<Value>, ApiError> {
    let v = &api.validator;
    let (height, state_hash) = v.state_hash();
    let recent: Vec<Value> = api
        .store
        .recent_blocks(10)?
        .into_iter()
        .map(|(h, id)| json!({"height": h, "block_id": id}))
        .collect();
    Ok(Json(json!({
        "chain_id": v.genesis().chain_id,
        "height": height,
        "state_hash": state_hash,
        "pending": v.pending(),
        "governance_seq": v.governance_seq(),
        "voting": matches!(api.role, ChainRole::Validator { .. }),
        "recent_blocks": recent,
    })))
}

/// A committed block: header, certificate and body.
async fn block(State(api): S, Path(height): Path<String>) -> Result<Response, ApiError> {
    let h: u64 = height.parse().map_err(|_| {
        ApiError::bad_request(
            "invalid_height",
            format!("height: {height:?} is not a number"),
        )
    })?;
    let stored = api.store.block(h)?.ok_or_else(|| {
        ApiError::not_found("unknown_block", format!("no committed block at height {h}"))
    })?;
    let block: Value = serde_json::from_slice(&stored.block)
        .map_err(|e| ApiError::internal(format!("stored block {h} is damaged: {e}")))?;
    let cert: Value = serde_json::from_str(&stored.certificate)
        .map_err(|e| ApiError::internal(format!("stored certificate {h} is damaged: {e}")))?;
    let body = json!({
        "height": stored.height,
        "block_id": stored.block_id,
        "committed_at": stored.committed_at,
        "block": block,
        "certificate": cert,
    });
    Ok((
        [(header::CACHE_CONTROL, "max-age=31536000, immutable")],
        Json(body),
    )
        .into_response())
}

/// The chain's model registry: every label with its revisions (the hub mirrors it).
async fn models(State(api): S) -> Json<Value> {
    Json(json!({"models": api.validator.models()}))
}

/// The TEE registry: its params, approved PCR sets, every registered enclave, and the
/// active ones now (approved PCR set, enabled, a heartbeat within the maximum age).
async fn tee_registry(State(api): S) -> Json<Value> {
    let (reg, dev_root) = api.validator.tee_registry();
    let now = crate::now_ms();
    let active: Vec<_> = reg
        .active(now, reg.params.max_heartbeat_age_ms)
        .into_iter()
        .map(|e| e.tee_id)
        .collect();
    Json(json!({
        "params": reg.params,
        "dev_root_trusted": dev_root,
        "pcr_sets": reg.pcr_sets,
        "enclaves": reg.enclaves.values().collect::<Vec<_>>(),
        "active": active,
        "at_ms": now,
    }))
}

async fn genesis(State(api): S) -> Json<Value> {
    Json(json!(api.validator.genesis()))
}

/// The validator-set history, the file `haca verify --validators` takes.
async fn validators(State(api): S) -> Json<Value> {
    Json(json!(api.validator.validator_history()))
}
