//! Walrus's HTTP API on the node: `PUT /v1/blobs` (a publisher's store, operator only) and
//! `GET /v1/blobs/{blob_id}` (an aggregator's read) over the node's blobs by Walrus id: what
//! was stored here, Model Hub artifacts by their Walrus id, and settlement rounds' tree dumps
//! (stored as their receipts are read). The receipt route adds the round's
//! `x-settlement-walrus-blob-id` header.

use super::error::ApiError;
use super::extract::{body_bytes, Admin};
use super::AppState;
use axum::extract::{Path, Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use std::sync::Arc;

type S = State<Arc<AppState>>;

/// `PUT /v1/blobs[?epochs=N]`: stores the body under its Walrus id and answers as a Walrus
/// publisher does (`newlyCreated.blobObject` or `alreadyCertified`).
pub async fn put_blob(State(st): S, _admin: Admin, req: Request) -> Result<Response, ApiError> {
    let body = body_bytes(req, st.limits.max_upload).await?;
    let size = body.len();
    let blobs = st.blobs.clone();
    let (id, fresh) = tokio::task::spawn_blocking(move || blobs.put(&body))
        .await
        .map_err(|e| ApiError::internal(format!("storing a blob: {e}")))?
        .map_err(|e| ApiError::bad_request("invalid_blob", format!("body: {e}")))?;
    let v = if fresh {
        json!({"newlyCreated": {
            "blobObject": {"blobId": id, "size": size, "encodingType": "RS2",
                           "deletable": false, "certifiedEpoch": null},
            "resourceOperation": {"registerFromScratch": {}},
            "cost": 0,
        }})
    } else {
        json!({"alreadyCertified": {"blobId": id, "endEpoch": null}})
    };
    Ok(Json(v).into_response())
}

/// `GET /v1/blobs/{blob_id}`: the blob's bytes, as a Walrus aggregator serves them.
pub async fn get_blob(State(st): S, Path(id): Path<String>) -> Result<Response, ApiError> {
    if !crate::walrus::is_walrus_id(&id) {
        return Err(ApiError::bad_request(
            "invalid_blob_id",
            format!("blob_id: {id:?} is not a Walrus blob id (43 characters of URL-safe base64)"),
        ));
    }
    let bytes = match st.blobs.get(&id) {
        Some(b) => b,
        None => match st.gateway.hub.blob_by_walrus(&id)? {
            Some(sha) => st.gateway.hub.read_blob(&sha)?,
            None => {
                return Err(ApiError::not_found(
                    "blob_not_found",
                    format!("this node holds no blob {id}"),
                ))
            }
        },
    };
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

/// Keeps the tree dump that settlement box names `walrus` (the round at `height`) among this
/// node's blobs, and stores it with the publisher, the first time a receipt of that round is
/// read (when anyone first learns its id); a dump kept already costs a file check.
pub async fn keep_round_dump(st: &Arc<AppState>, walrus: &str, height: u64) {
    let Some(chain) = st.gateway.chain.clone() else {
        return;
    };
    if st.blobs.has(walrus) {
        return;
    }
    let dump = tokio::task::spawn_blocking(move || chain.round_dump_at(height)).await;
    let Ok(Ok(Some((id, bytes)))) = dump else {
        tracing::warn!("the tree dump of height {height} ({walrus}) could not be made");
        return;
    };
    match st.blobs.put_as(&id, &bytes) {
        Ok(true) => st
            .blobs
            .push(format!("the round tree dump {id}"), id, bytes),
        Ok(false) => {}
        Err(e) => tracing::warn!("the tree dump {id} was not stored: {e}"),
    }
}

/// After an upload: the artifact's Walrus blob id, when the hub left it to be computed here
/// (an upload over `haca_hub::WALRUS_INLINE_MAX`: computed by this binary's `haca blob id
/// --walrus` in a child process, one at a time, so the node's memory never holds the
/// encoding), then, with `--walrus-publisher`, the artifact stored on Walrus. Off the
/// answer's path; failures are logged.
pub fn after_upload(st: &Arc<AppState>, blob_id: haca_core::BlobId) {
    static ONE_AT_A_TIME: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);
    let st = st.clone();
    tokio::spawn(async move {
        let hub = &st.gateway.hub;
        if matches!(hub.walrus_id_of(&blob_id), Ok(None)) {
            let _turn = ONE_AT_A_TIME.acquire().await;
            match walrus_id_in_child(&hub.blob_path(&blob_id)).await {
                Ok(id) => {
                    if let Err(e) = hub.set_walrus_id(blob_id, id.clone()).await {
                        tracing::warn!(
                            "artifact {blob_id}: its Walrus id {id} was not recorded: {e}"
                        );
                    }
                }
                Err(e) => tracing::warn!("artifact {blob_id}: no Walrus id: {e}"),
            }
        }
        if st.blobs.publisher.is_none() {
            return;
        }
        match (hub.walrus_id_of(&blob_id), hub.read_blob(&blob_id)) {
            (Ok(Some(id)), Ok(bytes)) => st.blobs.push(format!("artifact {blob_id}"), id, bytes),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!("artifact {blob_id} not stored on Walrus: {e}")
            }
            (Ok(None), _) => {
                tracing::warn!("artifact {blob_id} not stored on Walrus: no Walrus id")
            }
        }
    });
}

/// `haca blob id FILE --walrus` in a child process: the id on its last line.
async fn walrus_id_in_child(file: &std::path::Path) -> Result<String, String> {
    let exe = std::env::current_exe().map_err(|e| format!("this binary: {e}"))?;
    let out = tokio::process::Command::new(exe)
        .args(["blob", "id", "--walrus"])
        .arg(file)
        .env("HACA_LOG", "warn")
        .output()
        .await
        .map_err(|e| format!("haca blob id: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let id = text.lines().last().unwrap_or_default().trim().to_owned();
    if !out.status.success() || !crate::walrus::is_walrus_id(&id) {
        return Err(format!(
            "haca blob id --walrus failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(id)
}
