//! A small HTTP client for haca nodes, used by the CLI's client commands.

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// A client failure in plain words.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the node at {url}: {reason} (is `haca devnet` running? set --node or HACA_NODE)")]
    Unreachable { url: String, reason: String },
    #[error("{message} ({code}, HTTP {status})")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("the node answered HTTP {status} with a body that is not haca's: {body}")]
    Unexpected { status: u16, body: String },
}

/// Talks to one node.
#[derive(Clone)]
pub struct NodeClient {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl NodeClient {
    pub fn new(base: &str, token: Option<String>) -> Self {
        NodeClient {
            base: base.trim_end_matches('/').to_owned(),
            token,
            http: reqwest::Client::new(),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Body>,
    ) -> Result<(StatusCode, bytes::Bytes), ClientError> {
        self.send_with(method, path, body, &[]).await
    }

    async fn send_with(
        &self,
        method: Method,
        path: &str,
        body: Option<Body>,
        headers: &[(&str, &str)],
    ) -> Result<(StatusCode, bytes::Bytes), ClientError> {
        let (status, _, bytes) = self.send_raw(method, path, body, headers).await?;
        check_status(status, &bytes)?;
        Ok((status, bytes))
    }

    /// Sends one request and returns the answer whatever its status.
    async fn send_raw(
        &self,
        method: Method,
        path: &str,
        body: Option<Body>,
        headers: &[(&str, &str)],
    ) -> Result<(StatusCode, HeaderMap, bytes::Bytes), ClientError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        req = match body {
            Some(Body::Json(v)) => req.json(&v),
            Some(Body::Bytes(b)) => req
                .header("content-type", "application/octet-stream")
                .body(b),
            None => req,
        };
        let resp = req.send().await.map_err(|e| ClientError::Unreachable {
            url: url.clone(),
            reason: root_cause(&e),
        })?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.map_err(|e| ClientError::Unreachable {
            url,
            reason: root_cause(&e),
        })?;
        Ok((status, headers, bytes))
    }

    /// POSTs JSON with extra request headers; a 402 that carries an x402 `PAYMENT-REQUIRED`
    /// header comes back as [`PaymentDemand`] instead of an error, so the caller can pay.
    /// On success, also returns the answer's headers (`PAYMENT-RESPONSE`).
    pub async fn post_json_x402(
        &self,
        path: &str,
        body: Value,
        headers: &[(&str, &str)],
    ) -> Result<Result<(Value, HeaderMap), PaymentDemand>, ClientError> {
        let (status, resp_headers, bytes) = self
            .send_raw(Method::POST, path, Some(Body::Json(body)), headers)
            .await?;
        if status == StatusCode::PAYMENT_REQUIRED {
            let required = resp_headers
                .get(haca_pay::types::PAYMENT_REQUIRED_HEADER)
                .and_then(|h| h.to_str().ok());
            if let Some(required) = required {
                return Ok(Err(PaymentDemand {
                    required: required.to_owned(),
                    reason: payment_reason(&bytes),
                }));
            }
        }
        check_status(status, &bytes)?;
        Ok(Ok((parse_answer(status, &bytes)?, resp_headers)))
    }

    pub async fn get_json(&self, path: &str) -> Result<Value, ClientError> {
        let (status, bytes) = self.send(Method::GET, path, None).await?;
        parse_answer(status, &bytes)
    }

    /// GETs JSON with extra request headers (such as a payer's read proof).
    pub async fn get_json_with(
        &self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Value, ClientError> {
        let (status, bytes) = self.send_with(Method::GET, path, None, headers).await?;
        parse_answer(status, &bytes)
    }

    pub async fn get_text(&self, path: &str) -> Result<String, ClientError> {
        let (_, bytes) = self.send(Method::GET, path, None).await?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    pub async fn send_json(
        &self,
        method: Method,
        path: &str,
        body: Value,
    ) -> Result<Value, ClientError> {
        let (status, bytes) = self.send(method, path, Some(Body::Json(body))).await?;
        parse_answer(status, &bytes)
    }

    /// POSTs JSON with extra request headers (such as `X-SETTLEMENT-TYPE`).
    pub async fn post_json_with(
        &self,
        path: &str,
        body: Value,
        headers: &[(&str, &str)],
    ) -> Result<Value, ClientError> {
        let (status, bytes) = self
            .send_with(Method::POST, path, Some(Body::Json(body)), headers)
            .await?;
        parse_answer(status, &bytes)
    }

    /// Any method, an optional JSON body and extra request headers (such as MemSync's
    /// `X-API-Key`).
    pub async fn request_json(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Result<Value, ClientError> {
        let (status, bytes) = self
            .send_with(method, path, body.map(Body::Json), headers)
            .await?;
        parse_answer(status, &bytes)
    }

    pub async fn post_bytes(&self, path: &str, body: Vec<u8>) -> Result<Value, ClientError> {
        let (status, bytes) = self
            .send(Method::POST, path, Some(Body::Bytes(body)))
            .await?;
        parse_answer(status, &bytes)
    }
}

/// A 402 answer that asks for an x402 payment.
#[derive(Debug, Clone)]
pub struct PaymentDemand {
    /// The `PAYMENT-REQUIRED` header's value (base64 JSON).
    pub required: String,
    /// Why the node answered 402, in its words.
    pub reason: String,
}

/// The reason a 402 body gives: haca's `{error: {code, message}}` or x402 v1's `{error}`.
fn payment_reason(bytes: &[u8]) -> String {
    let v: Option<Value> = serde_json::from_slice(bytes).ok();
    let err = v.as_ref().map(|v| &v["error"]);
    match err {
        Some(Value::String(s)) => s.clone(),
        Some(e @ Value::Object(_)) => format!(
            "{} ({})",
            e["message"].as_str().unwrap_or(""),
            e["code"].as_str().unwrap_or("unknown")
        ),
        _ => format!("HTTP 402: {}", excerpt(bytes)),
    }
}

/// A non-2xx answer as a [`ClientError`].
fn check_status(status: StatusCode, bytes: &[u8]) -> Result<(), ClientError> {
    if status.is_success() {
        return Ok(());
    }
    let parsed: Option<Value> = serde_json::from_slice(bytes).ok();
    Err(match parsed.as_ref().and_then(|v| v.get("error")) {
        Some(err) => ClientError::Api {
            status: status.as_u16(),
            code: err["code"].as_str().unwrap_or("unknown").to_owned(),
            message: err["message"].as_str().unwrap_or("").to_owned(),
        },
        None => ClientError::Unexpected {
            status: status.as_u16(),
            body: excerpt(bytes),
        },
    })
}

/// An answer's JSON body, or the body itself in the error when it is not JSON.
fn parse_answer(status: StatusCode, bytes: &[u8]) -> Result<Value, ClientError> {
    serde_json::from_slice(bytes).map_err(|_| ClientError::Unexpected {
        status: status.as_u16(),
        body: excerpt(bytes),
    })
}

fn excerpt(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).chars().take(300).collect()
}

enum Body {
    Json(Value),
    Bytes(Vec<u8>),
}

fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}
