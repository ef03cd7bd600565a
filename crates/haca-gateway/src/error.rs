//! The gateway's errors, by what went wrong rather than by transport: the HTTP layer
//! (`haca`'s `server`) is the only place that turns a variant into a status code.

use haca_exec::llm::LlmError;
use haca_exec::ExecError;
use haca_hub::HubError;
use haca_store::StoreError;

/// Why a run, a payment or a call did not go through. Each variant carries a stable `code`
/// (what a client matches on) and a message that names the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    /// The request is malformed, or asks for what this node cannot do as asked.
    #[error("{message}")]
    Invalid {
        code: &'static str,
        message: String,
        /// The request field at fault, when one is.
        param: Option<String>,
    },
    /// A model, run, conversation or route that does not exist here.
    #[error("{message}")]
    NotFound {
        code: &'static str,
        message: String,
        param: Option<String>,
    },
    /// The run needs a payment, or the payment sent was refused (a replay, short funds, a bad
    /// signature). `code` is [`crate::payment::PAYMENT_REQUIRED_CODE`] when none was sent.
    #[error("{message}")]
    PaymentRequired { code: &'static str, message: String },
    /// Credentials were presented and are unknown or revoked.
    #[error("{message}")]
    Unauthorized { code: &'static str, message: String },
    /// The artifact cannot be loaded or executed.
    #[error("{message}")]
    Unprocessable { code: &'static str, message: String },
    /// Something the run needs is not available now (the enclave restarting, a model still
    /// loading, a facilitator down); a retry may succeed.
    #[error("{message}")]
    Unavailable {
        code: &'static str,
        message: String,
        /// Seconds after which a retry may succeed.
        retry_after: Option<u32>,
    },
    /// An upstream provider failed or did not answer in time.
    #[error("{message}")]
    Upstream {
        code: &'static str,
        message: String,
        timed_out: bool,
    },
    /// A broken invariant or a failed store: the node's fault, never the client's.
    #[error("{0}")]
    Internal(String),
}

impl GatewayError {
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        GatewayError::Invalid {
            code,
            message: message.into(),
            param: None,
        }
    }
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        GatewayError::NotFound {
            code,
            message: message.into(),
            param: None,
        }
    }
    pub fn payment(code: &'static str, message: impl Into<String>) -> Self {
        GatewayError::PaymentRequired {
            code,
            message: message.into(),
        }
    }
    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        GatewayError::Unauthorized {
            code,
            message: message.into(),
        }
    }
    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        GatewayError::Unavailable {
            code,
            message: message.into(),
            retry_after: None,
        }
    }
    pub fn internal(message: impl Into<String>) -> Self {
        GatewayError::Internal(message.into())
    }

    /// Names the request field at fault (invalid and not-found errors).
    pub fn param(mut self, field: impl Into<String>) -> Self {
        if let GatewayError::Invalid { param, .. } | GatewayError::NotFound { param, .. } =
            &mut self
        {
            *param = Some(field.into());
        }
        self
    }

    /// Adds a retry hint (unavailable errors).
    pub fn retry_after(mut self, seconds: u32) -> Self {
        if let GatewayError::Unavailable { retry_after, .. } = &mut self {
            *retry_after = Some(seconds);
        }
        self
    }

    /// The stable code a client matches on.
    pub fn code(&self) -> &'static str {
        match self {
            GatewayError::Invalid { code, .. }
            | GatewayError::NotFound { code, .. }
            | GatewayError::PaymentRequired { code, .. }
            | GatewayError::Unauthorized { code, .. }
            | GatewayError::Unprocessable { code, .. }
            | GatewayError::Unavailable { code, .. }
            | GatewayError::Upstream { code, .. } => code,
            GatewayError::Internal(_) => "internal",
        }
    }

    pub fn message(&self) -> &str {
        match self {
            GatewayError::Invalid { message, .. }
            | GatewayError::NotFound { message, .. }
            | GatewayError::PaymentRequired { message, .. }
            | GatewayError::Unauthorized { message, .. }
            | GatewayError::Unprocessable { message, .. }
            | GatewayError::Unavailable { message, .. }
            | GatewayError::Upstream { message, .. }
            | GatewayError::Internal(message) => message,
        }
    }

    /// The same error with another message (a failed call that names every attempt).
    pub fn with_message(mut self, text: String) -> Self {
        match &mut self {
            GatewayError::Invalid { message, .. }
            | GatewayError::NotFound { message, .. }
            | GatewayError::PaymentRequired { message, .. }
            | GatewayError::Unauthorized { message, .. }
            | GatewayError::Unprocessable { message, .. }
            | GatewayError::Unavailable { message, .. }
            | GatewayError::Upstream { message, .. }
            | GatewayError::Internal(message) => *message = text,
        }
        self
    }

    /// Whether the payment was refused or is missing.
    pub fn is_payment_required(&self) -> bool {
        matches!(self, GatewayError::PaymentRequired { .. })
    }
}

impl From<HubError> for GatewayError {
    fn from(e: HubError) -> Self {
        let msg = e.to_string();
        match e {
            HubError::InvalidLabel { .. } => {
                Self::invalid("invalid_label", format!("model: {msg}"))
            }
            HubError::Refused(_) => GatewayError::Unprocessable {
                code: "invalid_artifact",
                message: msg,
            },
            HubError::UnknownLabel(_) => Self::not_found("unknown_model", format!("model: {msg}")),
            HubError::UnknownRevision { .. } | HubError::NotYetAt { .. } => {
                Self::not_found("unknown_revision", format!("model: {msg}"))
            }
            HubError::UnknownBlob(_) => Self::not_found("unknown_blob", format!("model: {msg}")),
            HubError::Registry { .. } => Self::unavailable("registry_unavailable", msg),
            HubError::Store(s) => s.into(),
        }
    }
}

impl From<ExecError> for GatewayError {
    fn from(e: ExecError) -> Self {
        match e {
            ExecError::Input { field, reason } => {
                Self::invalid("invalid_input", format!("{field}: {reason}")).param(field)
            }
            ExecError::Load(m) => GatewayError::Unprocessable {
                code: "model_unloadable",
                message: m,
            },
            ExecError::Run(m) => GatewayError::Unprocessable {
                code: "execution_failed",
                message: m,
            },
        }
    }
}

impl From<haca_core::tensor::TensorError> for GatewayError {
    fn from(e: haca_core::tensor::TensorError) -> Self {
        Self::invalid("invalid_input", e.to_string()).param(e.field)
    }
}

impl From<StoreError> for GatewayError {
    fn from(e: StoreError) -> Self {
        Self::internal(format!("store: {e}"))
    }
}

impl From<LlmError> for GatewayError {
    fn from(e: LlmError) -> Self {
        match e {
            LlmError::ContextTooLong { .. } => {
                Self::invalid("context_length_exceeded", e.to_string()).param("messages")
            }
            LlmError::Load(m) => Self::unavailable("model_unavailable", m),
            LlmError::Run(m) => Self::internal(m),
            LlmError::Request(m) => Self::invalid("invalid_input", m),
            // A slot frees within one answer: a short wait is worth a retry.
            LlmError::Busy { .. } => Self::unavailable("model_busy", e.to_string()).retry_after(2),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn param_and_retry_hints_stick_only_where_they_mean_something() {
        let e = GatewayError::invalid("invalid_input", "x: bad").param("x");
        assert!(
            matches!(e, GatewayError::Invalid { ref param, .. } if param.as_deref() == Some("x"))
        );
        let e = GatewayError::internal("boom").param("x");
        assert_eq!(e, GatewayError::Internal("boom".into()));
        let e = GatewayError::unavailable("model_loading", "wait").retry_after(5);
        assert!(matches!(
            e,
            GatewayError::Unavailable {
                retry_after: Some(5),
                ..
            }
        ));
        assert_eq!(e.code(), "model_loading");
        assert_eq!(e.with_message("later".into()).message(), "later");
    }

    #[test]
    fn a_too_long_prompt_names_the_messages_field() {
        let e: GatewayError = LlmError::ContextTooLong {
            tokens: 5000,
            limit: 4096,
        }
        .into();
        assert_eq!(e.code(), "context_length_exceeded");
        assert!(matches!(e, GatewayError::Invalid { param: Some(ref p), .. } if p == "messages"));
    }
}
