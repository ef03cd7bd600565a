//! The one place where errors become HTTP answers: a status and `{error: {code, message}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use haca_exec::ExecError;
use haca_hub::HubError;
use haca_store::StoreError;
use serde_json::{json, Value};

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Answer with `Connection: close`: set when the request body was left unread, so that
    /// a client does not reuse a connection the server is about to drop.
    pub close: bool,
    /// The request field at fault, when one is (OpenAI's `param`).
    pub param: Option<String>,
    /// Seconds after which a retry may succeed (a `Retry-After` header).
    pub retry_after: Option<u32>,
    /// More fields of the error object, such as `missing_claims` of a refused clear.
    /// Boxed: most errors carry none, and `Result<_, ApiError>` stays small.
    pub extra: Option<Box<serde_json::Map<String, Value>>>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            close: false,
            param: None,
            retry_after: None,
            extra: None,
        }
    }
    /// Adds a field to the error object.
    pub fn with(mut self, key: &str, value: Value) -> Self {
        self.extra
            .get_or_insert_with(Default::default)
            .insert(key.to_owned(), value);
        self
    }
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }
    /// Names the request field at fault.
    pub fn param(mut self, field: impl Into<String>) -> Self {
        self.param = Some(field.into());
        self
    }
    /// Adds `Retry-After`.
    pub fn retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }
    /// Marks the answer `Connection: close` (see [`ApiError::close`]).
    pub fn closing(mut self) -> Self {
        self.close = true;
        self
    }
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }
    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
    /// `{error: {code, message, type, param}}`: haca's shape, which is also OpenAI's
    /// (`type` is OpenAI's error class).
    pub fn body(&self) -> Value {
        let kind = match self.status.as_u16() {
            401 => "authentication_error",
            402 => "payment_required",
            403 => "permission_error",
            404 => "not_found_error",
            429 => "rate_limit_error",
            400..=499 => "invalid_request_error",
            _ => "server_error",
        };
        let mut body = json!({"error": {"code": self.code, "message": self.message, "type": kind, "param": self.param}});
        if let Some(extra) = &self.extra {
            body["error"]
                .as_object_mut()
                .expect("error object")
                .extend(extra.as_ref().clone());
        }
        body
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(code = self.code, "{}", self.message);
        } else {
            tracing::debug!(status = %self.status, code = self.code, "{}", self.message);
        }
        let mut resp = (self.status, axum::Json(self.body())).into_response();
        if let Some(s) = self.retry_after {
            resp.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, s.into());
        }
        if self.close {
            resp.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
        }
        resp
    }
}

impl From<HubError> for ApiError {
    fn from(e: HubError) -> Self {
        let msg = e.to_string();
        match e {
            HubError::InvalidLabel { .. } => {
                Self::bad_request("invalid_label", format!("model: {msg}"))
            }
            HubError::Refused(_) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_artifact", msg)
            }
            HubError::UnknownLabel(_) => Self::not_found("unknown_model", format!("model: {msg}")),
            HubError::UnknownRevision { .. } => {
                Self::not_found("unknown_revision", format!("model: {msg}"))
            }
            HubError::NotYetAt { .. } => {
                Self::not_found("unknown_revision", format!("model: {msg}"))
            }
            HubError::UnknownBlob(_) => Self::not_found("unknown_blob", format!("model: {msg}")),
            HubError::Registry { .. } => Self::unavailable("registry_unavailable", msg),
            HubError::Store(s) => s.into(),
        }
    }
}

impl From<ExecError> for ApiError {
    fn from(e: ExecError) -> Self {
        match e {
            ExecError::Input { field, reason } => {
                Self::bad_request("invalid_input", format!("{field}: {reason}")).param(field)
            }
            ExecError::Load(m) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "model_unloadable", m)
            }
            ExecError::Run(m) => Self::new(StatusCode::UNPROCESSABLE_ENTITY, "execution_failed", m),
        }
    }
}

impl From<haca_core::tensor::TensorError> for ApiError {
    fn from(e: haca_core::tensor::TensorError) -> Self {
        Self::bad_request("invalid_input", e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        Self::internal(format!("store: {e}"))
    }
}
