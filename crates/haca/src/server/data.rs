//! The data role over HTTP: `POST /v1/data/fetch {url}` fetches an allowed source
//! (haca_data::Fetcher), stores the signed item with its content in the node's store and
//! answers the item; `GET /v1/data/items/{id}` answers a stored item, `/content` its bytes;
//! `GET /v1/data/node` the data node's key and allowlist.

use super::error::ApiError;
use super::extract::{body_bytes, parse_json};
use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use haca_core::{Digest, NodeKey};
use haca_data::{FetchError, Fetcher};
use haca_store::Store;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

/// The data role's state: its own key (`data.key`), the store it keeps items in (the
/// node's), and its fetcher with the allowlist.
pub struct DataApi {
    pub key: NodeKey,
    pub store: Arc<Store>,
    pub fetcher: Fetcher,
}

/// The body of `POST /v1/data/fetch`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FetchRequest {
    url: String,
}

type S = State<Arc<DataApi>>;

pub fn router(api: Arc<DataApi>) -> Router {
    Router::new()
        .route("/v1/data/fetch", post(fetch))
        .route("/v1/data/node", get(node))
        .route("/v1/data/items/{id}", get(item))
        .route("/v1/data/items/{id}/content", get(content))
        .with_state(api)
}

impl From<FetchError> for ApiError {
    fn from(e: FetchError) -> Self {
        let status = match &e {
            FetchError::NotAllowed(_) => StatusCode::FORBIDDEN,
            FetchError::TooLarge { .. } | FetchError::Unreachable { .. } => StatusCode::BAD_GATEWAY,
            FetchError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        };
        let bad_url = matches!(
            &e,
            FetchError::NotAllowed(haca_data::AllowError::BadUrl { .. })
        );
        let status = if bad_url {
            StatusCode::BAD_REQUEST
        } else {
            status
        };
        ApiError::new(status, e.code(), e.to_string()).param("url")
    }
}

async fn fetch(State(api): S, req: Request) -> Result<Json<Value>, ApiError> {
    let body = body_bytes(req, 64 << 10).await?;
    let FetchRequest { url } = parse_json(&body)?;
    let got = api.fetcher.fetch(&url, &api.key).await?;
    api.store.insert_data_item(&got.item, got.content).await?;
    Ok(Json(
        serde_json::to_value(&got.item).expect("a data item is JSON"),
    ))
}

async fn node(State(api): S) -> Json<Value> {
    Json(json!({
        "node_id": api.key.node_id().to_string(),
        "allow": api.fetcher.allowlist().rules().iter().map(|r| r.to_string()).collect::<Vec<_>>(),
    }))
}

fn parse_id(id: &str) -> Result<String, ApiError> {
    id.parse::<Digest>()
        .map(|d| d.to_hex())
        .map_err(|e| ApiError::bad_request("invalid_data_id", format!("item id {id:?}: {e}")))
}

fn missing(id: &str) -> ApiError {
    ApiError::not_found("data_not_found", format!("no data item {id} on this node"))
}

async fn item(State(api): S, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let item = api.store.data_item(&id)?.ok_or_else(|| missing(&id))?;
    Ok(Json(
        serde_json::to_value(&item).expect("a data item is JSON"),
    ))
}

async fn content(State(api): S, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let item = api.store.data_item(&id)?.ok_or_else(|| missing(&id))?;
    let bytes = api.store.data_content(&id)?.ok_or_else(|| missing(&id))?;
    let ct = item
        .content_type
        .unwrap_or_else(|| "application/octet-stream".into());
    Ok(([(header::CONTENT_TYPE, ct)], bytes).into_response())
}
