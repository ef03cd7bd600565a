//! Handlers. Each parses, calls a role, and answers; errors go through `ApiError`.

use super::error::ApiError;
use super::extract::{body_bytes, Admin, JsonBody};
use super::AppState;
use crate::gateway::InferRequest;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use haca_core::{BlobId, RunId};
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
    Json(json!({
        "node_id": st.gateway.key.node_id().to_string(),
        "roles": ["gateway"],
        "version": env!("CARGO_PKG_VERSION"),
        "runtime": haca_exec::RUNTIME,
    }))
}

pub async fn infer(
    State(st): S,
    JsonBody(req): JsonBody<InferRequest>,
) -> Result<Response, ApiError> {
    let ans = st.gateway.infer(req).await?;
    let id = ans.run_id.to_string();
    let mut resp =
        Json(json!({"run_id": id, "output": ans.output, "receipt": ans.receipt})).into_response();
    let h = resp.headers_mut();
    h.insert(
        "x-haca-run-id",
        HeaderValue::from_str(&id).expect("hex is a valid header"),
    );
    h.insert(
        "x-haca-receipt",
        HeaderValue::from_str(&format!("/v1/runs/{id}/receipt")).expect("ascii path"),
    );
    Ok(resp)
}

#[derive(Deserialize)]
pub struct ListQuery {
    limit: Option<usize>,
}

pub async fn list_runs(State(st): S, Query(q): Query<ListQuery>) -> Result<Json<Value>, ApiError> {
    let limit = q.limit.unwrap_or(50).min(1000);
    Ok(Json(json!({"runs": st.gateway.store.list_runs(limit)?})))
}

fn parse_run_id(s: &str) -> Result<RunId, ApiError> {
    s.parse().map_err(|e: haca_core::ids::IdParseError| {
        ApiError::bad_request("invalid_run_id", format!("run_id: {e}"))
    })
}

fn load_run(st: &AppState, id: &str) -> Result<haca_store::RunRecord, ApiError> {
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

pub async fn get_run(State(st): S, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let r = load_run(&st, &id)?;
    Ok(Json(json!({
        "run_id": r.run_id,
        "created_at": r.created_at,
        "model": r.model,
        "blob_id": r.blob_id,
        "mode": r.mode,
        "node_id": r.node_id,
        "receipt_digest": r.receipt_digest,
        "output": stored_json(&r.output, "output")?,
        "receipt": stored_json(&r.receipt, "receipt")?,
    })))
}

pub async fn get_receipt(State(st): S, Path(id): Path<String>) -> Result<Response, ApiError> {
    let r = load_run(&st, &id)?;
    Ok(([(header::CONTENT_TYPE, "application/json")], r.receipt).into_response())
}

pub async fn upload_model(
    State(st): S,
    admin: Admin,
    Path(label): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let bytes = body_bytes(req, st.limits.max_upload).await?;
    if bytes.is_empty() {
        return Err(ApiError::bad_request(
            "empty_body",
            "body: send the model file's bytes",
        ));
    }
    let entry = st.gateway.hub.upload(&label, &bytes, &admin.0).await?;
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
