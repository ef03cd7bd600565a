//! Request extractors whose refusals speak the API's error shape.

use super::error::ApiError;
use super::AppState;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::{header, request::Parts, StatusCode};
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;
use std::net::SocketAddr;
use std::sync::Arc;

/// A JSON body: 413 past the size limit, 415 for another content type, 400 for malformed JSON
/// (with line and column) or a bad field (with its path).
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Arc<AppState>> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, ApiError> {
        if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
            let ct = ct.to_str().unwrap_or("");
            if !ct.starts_with("application/json") && !ct.contains("+json") {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    format!("content-type is {ct:?}; send application/json"),
                )
                .closing());
            }
        }
        let bytes = body_bytes(req, state.limits.max_body).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// How much of an oversized body is read and dropped before the 413 goes out. Reading it
/// lets the client finish sending and then read the answer; closing on unread data would
/// reset the connection under the client's feet.
const DRAIN_CAP: usize = 64 << 20;

/// The raw body, at most `limit` bytes; over that, a 413 in the API's shape.
pub async fn body_bytes(req: Request, limit: usize) -> Result<Bytes, ApiError> {
    let mut buf = bytes::BytesMut::new();
    body_chunks(req, limit, |data| {
        buf.extend_from_slice(&data);
        std::future::ready(Ok(()))
    })
    .await?;
    Ok(buf.freeze())
}

/// The raw body handed to `sink` chunk by chunk as it arrives, at most `limit` bytes in all
/// (nothing holds it whole); over that, no more chunks and, once the rest is drained as
/// [`body_bytes`] does, a 413 naming the limit. Returns the body's size.
pub async fn body_chunks<F, Fut>(req: Request, limit: usize, mut sink: F) -> Result<usize, ApiError>
where
    F: FnMut(Bytes) -> Fut,
    Fut: std::future::Future<Output = Result<(), ApiError>>,
{
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("request body is over this node's limit of {limit} bytes"),
        )
        .closing()
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit.saturating_add(DRAIN_CAP)) {
        return Err(too_large());
    }
    let mut body = req.into_body();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(body_error)?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen = seen.saturating_add(data.len());
        if seen > limit.saturating_add(DRAIN_CAP) {
            break;
        }
        if seen <= limit {
            sink(data).await?;
        }
    }
    if seen > limit {
        return Err(too_large());
    }
    Ok(seen)
}

/// A body that could not be read: a 408 when it did not arrive in time (`Limits::body_timeout`),
/// else a 400.
fn body_error(e: axum::Error) -> ApiError {
    let e = e.into_inner();
    match e.downcast_ref::<super::BodyTimeout>() {
        // The connection still holds the rest of a body that may never come.
        Some(t) => {
            ApiError::new(StatusCode::REQUEST_TIMEOUT, "body_timeout", t.to_string()).closing()
        }
        None => ApiError::bad_request(
            "unreadable_body",
            format!("request body could not be read: {e}"),
        ),
    }
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::bad_request("malformed_json", format!("body is not valid JSON: {inner}"))
        } else if path == "." {
            ApiError::bad_request("invalid_field", format!("body: {inner}"))
        } else {
            ApiError::bad_request("invalid_field", format!("{path}: {inner}"))
        }
    })
}

/// Admits operator actions: from loopback when the node allows it (devnet), otherwise only
/// with `Authorization: Bearer <operator token>`. Carries who acted, for the records.
pub struct Admin(pub String);

impl FromRequestParts<Arc<AppState>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        if parts.headers.contains_key(header::AUTHORIZATION) {
            if bearer(&parts.headers).is_some_and(|t| is_operator(state, t)) {
                return Ok(Admin("operator".into()));
            }
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "the bearer token is not this node's operator token",
            )
            .closing());
        }
        match peer {
            Some(p) if state.loopback_admin && p.ip().is_loopback() => Ok(Admin(format!("loopback:{}", p.ip()))),
            _ => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "admin action: send Authorization: Bearer <operator token> (the node writes it to DATA_DIR/operator.token)",
            )
            .closing()),
        }
    }
}

/// The token of an `Authorization: Bearer TOKEN` header, trimmed; `None` without one.
pub(crate) fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// Whether `token` is this node's operator token (compared in constant time).
pub(crate) fn is_operator(st: &AppState, token: &str) -> bool {
    constant_time_eq(token.as_bytes(), st.operator_token.as_bytes())
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
