//! Image generation over HTTP: OpenAI's `POST /v1/images/generations`, and
//! `GET /v1/runs/{id}/images/{i}`, which serves a run's stored images by the hash its
//! receipt's output covers.

use super::error::ApiError;
use super::extract::JsonBody;
use super::AppState;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use haca_core::settlement::SettlementMode;
use haca_core::Digest;
use haca_exec::image::{ImageFormat, ImageRequest};
use haca_gateway::image::{ImageGateway, ImageStart};
use serde_json::{json, Value};
use std::sync::Arc;

type S = State<Arc<AppState>>;

fn images_of(st: &AppState) -> Result<Arc<ImageGateway>, ApiError> {
    st.images.clone().ok_or_else(|| {
        ApiError::not_found(
            "model_not_found",
            "this node serves no image models (start it with --provider ...,kind=image)",
        )
    })
}

/// Plans the routes (refusing what no route may serve before anything is paid or sent),
/// takes the payment, then answers with the images and their run.
pub async fn generations(
    State(st): S,
    headers: HeaderMap,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    let images = images_of(&st)?;
    let req = ImageRequest::parse(body)?;
    let settlement = super::routes::settlement_mode(&headers)?;
    if settlement == SettlementMode::Individual {
        return Err(ApiError::bad_request(
            "invalid_settlement_type",
            "header X-SETTLEMENT-TYPE: individual settles ML inputs and outputs; images settle batch or private",
        ));
    }
    let routes = images.plan(&req)?;
    let start = ImageStart::new(&st.gateway, &req)?;
    let charge = match &st.payments {
        None => None,
        Some(p) => {
            let price = p.price_of_chat_model(&req.model);
            let resource = st.public_url.resource("/v1/images/generations");
            let pending = match p
                .check(&super::x402::payment_offer(&headers), &resource, price)
                .await
            {
                Ok(pending) => pending,
                Err(e) => return super::x402::refusal(p, &resource, price, e),
            };
            match images
                .take_payment(&st.gateway, &start, Some(pending))
                .await
            {
                Ok(c) => c,
                Err(e) => return super::x402::refusal(p, &resource, price, e),
            }
        }
    };
    let payment_header = charge.as_ref().and_then(|c| c.paid().header());
    let served = images
        .serve(&st.gateway, &req, routes, start, settlement, charge)
        .await
        .map_err(super::llm::failed_error)?;
    let run_id = served.receipt.run_id.to_string();
    let mut data = Vec::new();
    let mut listed = Vec::new();
    for (i, image) in served.images.iter().enumerate() {
        let url = st
            .public_url
            .resource(&format!("/v1/runs/{run_id}/images/{i}"));
        let mut item = match req.response_format {
            ImageFormat::Url => json!({"url": url}),
            ImageFormat::B64Json => json!({
                "b64_json": base64::engine::general_purpose::STANDARD.encode(&image.bytes)
            }),
        };
        if let Some(Some(p)) = served.revised_prompts.get(i) {
            item["revised_prompt"] = p.clone().into();
        }
        data.push(item);
        let f = &image.facts;
        listed.push(json!({
            "sha256": f.sha256.to_hex(), "media_type": f.kind.media_type(), "size": f.size,
            "width": f.width, "height": f.height, "url": url,
        }));
    }
    let body = json!({
        "created": crate::now_ms() / 1000,
        "data": data,
        "haca": {
            "run_id": run_id,
            "receipt": format!("/v1/runs/{run_id}/receipt"),
            "route": served.receipt.boxes.route.evidence,
            "images": listed,
            "output_hash": served.receipt.boxes.execution.evidence.as_ref().map(|e| e.output_hash.to_hex()),
        },
    });
    let mut resp = Json(body).into_response();
    let h = resp.headers_mut();
    h.insert(
        "x-haca-run-id",
        HeaderValue::from_str(&run_id).expect("hex"),
    );
    h.insert(
        "x-haca-receipt",
        HeaderValue::from_str(&format!("/v1/runs/{run_id}/receipt")).expect("ascii"),
    );
    if let Some((name, value)) = payment_header {
        h.insert(
            name,
            HeaderValue::from_str(&value).expect("base64 is ASCII"),
        );
    }
    Ok(resp)
}

/// A run's image `i`: the bytes whose SHA-256 the run's output lists at `i`, for whoever may
/// read the run ([`super::access`]).
pub async fn get_image(
    State(st): S,
    reader: super::access::Reader,
    Path((id, i)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let images = images_of(&st)?;
    let run = super::routes::load_run(&st, &id)?;
    let receipt: Value = serde_json::from_str(&run.receipt)
        .map_err(|e| ApiError::internal(format!("stored receipt is damaged: {e}")))?;
    reader.may_read_run(&st, &run.run_id, &receipt)?;
    let output: Value = serde_json::from_str(&run.output).unwrap_or(Value::Null);
    let Some(list) = output["images"].as_array() else {
        return Err(ApiError::not_found(
            "no_images",
            format!(
                "run {} kept no images (not an image run, or settled private)",
                run.run_id
            ),
        ));
    };
    let index: usize = i.parse().map_err(|_| {
        ApiError::bad_request(
            "invalid_index",
            format!("index: {i:?} is not a whole number"),
        )
    })?;
    let entry = list.get(index).ok_or_else(|| {
        ApiError::not_found(
            "unknown_image",
            format!(
                "run {} has {} images; index {index} is not one",
                run.run_id,
                list.len()
            ),
        )
    })?;
    let sha: Digest = entry["sha256"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ApiError::internal("stored image list is damaged"))?;
    // Up to the image size limit read and hashed again: off the async workers.
    let bytes = tokio::task::spawn_blocking(move || images.read_image(&sha))
        .await
        .map_err(|e| ApiError::internal(format!("reading the image: {e}")))??;
    let media = entry["media_type"]
        .as_str()
        .unwrap_or("application/octet-stream");
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_str(media)
                    .map_err(|_| ApiError::internal("stored media type is damaged"))?,
            ),
            (
                header::HeaderName::from_static("x-haca-image-sha256"),
                HeaderValue::from_str(&sha.to_hex()).expect("hex"),
            ),
        ],
        bytes,
    )
        .into_response())
}
