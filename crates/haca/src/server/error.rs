//! The one place where errors become HTTP answers: a status and `{error: {code, message}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use haca_exec::ExecError;
use haca_gateway::GatewayError;
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

impl From<GatewayError> for ApiError {
    fn from(e: GatewayError) -> Self {
        match e {
            GatewayError::Invalid {
                code,
                message,
                param,
            } => ApiError {
                param,
                ..Self::bad_request(code, message)
            },
            GatewayError::NotFound {
                code,
                message,
                param,
            } => ApiError {
                param,
                ..Self::not_found(code, message)
            },
            GatewayError::PaymentRequired { code, message } => {
                Self::new(StatusCode::PAYMENT_REQUIRED, code, message)
            }
            GatewayError::Unauthorized { code, message } => {
                Self::new(StatusCode::UNAUTHORIZED, code, message)
            }
            GatewayError::Unprocessable { code, message } => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
            }
            GatewayError::Unavailable {
                code,
                message,
                retry_after,
            } => ApiError {
                retry_after,
                ..Self::unavailable(code, message)
            },
            GatewayError::Upstream {
                code,
                message,
                timed_out,
            } => Self::new(
                if timed_out {
                    StatusCode::GATEWAY_TIMEOUT
                } else {
                    StatusCode::BAD_GATEWAY
                },
                code,
                message,
            ),
            GatewayError::Internal(message) => Self::internal(message),
        }
    }
}

// The roles' own errors reach HTTP through the gateway's mapping, so each has one status.
impl From<HubError> for ApiError {
    fn from(e: HubError) -> Self {
        GatewayError::from(e).into()
    }
}

impl From<ExecError> for ApiError {
    fn from(e: ExecError) -> Self {
        GatewayError::from(e).into()
    }
}

impl From<haca_core::tensor::TensorError> for ApiError {
    fn from(e: haca_core::tensor::TensorError) -> Self {
        GatewayError::from(e).into()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        GatewayError::from(e).into()
    }
}

impl From<haca_exec::llm::LlmError> for ApiError {
    fn from(e: haca_exec::llm::LlmError) -> Self {
        GatewayError::from(e).into()
    }
}
