//! One error type for the crate. Each variant names what was wrong and carries a stable
//! [`OhttpError::code`]; the HTTP server decides statuses (RFC 9458 section 5.3: a key problem
//! is answered 400 with [`crate::KEY_PROBLEM_JSON`]).

/// Why an OHTTP message, key configuration or key ring was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OhttpError {
    /// The message ends before `part` is complete.
    #[error("truncated {part}: {needed} bytes needed, {got} present")]
    Truncated {
        part: &'static str,
        needed: usize,
        got: usize,
    },
    /// The request names a key id the ring does not hold (never issued, or retired).
    #[error("unknown key id {0}")]
    UnknownKeyId(u8),
    /// The request's KEM/KDF/AEAD is not one this key id is offered with.
    #[error(
        "key id {key_id} is not offered with kem {kem:#06x}, kdf {kdf:#06x}, aead {aead:#06x}"
    )]
    UnsupportedSuite {
        key_id: u8,
        kem: u16,
        kdf: u16,
        aead: u16,
    },
    /// The request did not open: altered in transit, or sealed to another key.
    #[error("the request does not decrypt (altered, or sealed to another key)")]
    RequestDecrypt,
    /// A response (or one chunk of it) did not open: altered, reordered, or for another request.
    #[error("the response does not decrypt (altered, reordered, or for another request)")]
    ResponseDecrypt,
    /// The same request (the same `enc` under the same key id) was opened before.
    #[error("replayed request (key id {key_id})")]
    Replayed { key_id: u8 },
    /// A chunked response ended before its final chunk: possibly cut short.
    #[error("the chunked response ended without its final chunk")]
    MissingFinalChunk,
    /// Bytes arrived after a chunked response's final chunk, or after the stream was closed.
    #[error("data after the end of the chunked response")]
    TrailingData,
    /// A key configuration or `application/ohttp-keys` list does not parse.
    #[error("malformed key configuration: {0}")]
    MalformedKeyConfig(String),
    /// The key configuration offers nothing this client implements.
    #[error("no supported suite in key configuration {0}")]
    NoSupportedSuite(u8),
    /// A key (public or private) that is not a valid X25519 key, or a bad seed or nonce length.
    #[error("invalid key material: {0}")]
    InvalidKey(String),
    /// A key ring operation that would break the ring's rules.
    #[error("key ring: {0}")]
    KeyRing(String),
    /// A binary HTTP (RFC 9292) message that does not parse or cannot be written.
    #[error("binary HTTP: {0}")]
    Bhttp(String),
    /// Sealing failed (a message beyond the AEAD's limits).
    #[error("sealing failed: {0}")]
    Seal(&'static str),
}

impl OhttpError {
    /// A stable reason code; compare this, not the message.
    pub fn code(&self) -> &'static str {
        match self {
            OhttpError::Truncated { .. } => "truncated",
            OhttpError::UnknownKeyId(_) => "unknown_key_id",
            OhttpError::UnsupportedSuite { .. } => "unsupported_suite",
            OhttpError::RequestDecrypt => "request_decrypt_failed",
            OhttpError::ResponseDecrypt => "response_decrypt_failed",
            OhttpError::Replayed { .. } => "replayed_request",
            OhttpError::MissingFinalChunk => "missing_final_chunk",
            OhttpError::TrailingData => "trailing_data",
            OhttpError::MalformedKeyConfig(_) => "malformed_key_config",
            OhttpError::NoSupportedSuite(_) => "no_supported_suite",
            OhttpError::InvalidKey(_) => "invalid_key",
            OhttpError::KeyRing(_) => "key_ring",
            OhttpError::Bhttp(_) => "bhttp",
            OhttpError::Seal(_) => "seal_failed",
        }
    }

    /// Whether RFC 9458 section 5.3 applies: the gateway cannot use the key configuration the
    /// client chose, and should answer 400 with [`crate::KEY_PROBLEM_JSON`] so the client
    /// fetches a fresh configuration.
    pub fn is_key_problem(&self) -> bool {
        matches!(
            self,
            OhttpError::UnknownKeyId(_) | OhttpError::UnsupportedSuite { .. }
        )
    }
}
