//! The crate's one error type.

/// Why an attestation document was rejected. Every variant names the field or certificate
/// it is about and the reason, so that a caller can show it as is.
///
/// Certificate names: `certificate` is the leaf (the document's signer), `cabundle[i]` an
/// entry of the CA bundle (`cabundle[0]` is the root).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NitroError {
    /// The input is larger than any attestation document can be.
    #[error("attestation document is {len} bytes; the limit is {max}")]
    TooLarge { len: usize, max: usize },

    /// The bytes of `field` are not well-formed CBOR (truncated, invalid encoding, nested
    /// too deeply, trailing bytes).
    #[error("{field}: malformed CBOR: {reason}")]
    Malformed { field: String, reason: String },

    /// Well-formed CBOR, but `field` is missing, has the wrong type, size or value.
    #[error("{field}: {reason}")]
    Field { field: String, reason: String },

    /// A certificate could not be used: not DER X.509, an unsupported key or algorithm, a
    /// critical extension this verifier does not understand, or not allowed to act as a CA.
    #[error("{cert}: {reason}")]
    Certificate { cert: String, reason: String },

    /// A certificate does not chain to the next one up (issuer name or signature).
    #[error("{cert} is not issued by {issuer}: {reason}")]
    Chain {
        cert: String,
        issuer: String,
        reason: String,
    },

    /// The top of the chain (`cabundle[0]`) is not one of the trusted roots.
    #[error("untrusted root: cabundle[0] has SHA-256 {fingerprint}, which is not a trusted root")]
    UntrustedRoot { fingerprint: String },

    /// A certificate's notAfter lies before the reference time.
    #[error("{cert} expired at {not_after} (reference time {at})")]
    CertificateExpired {
        cert: String,
        not_after: String,
        at: String,
    },

    /// A certificate's notBefore lies after the reference time.
    #[error("{cert} is not valid before {not_before} (reference time {at})")]
    CertificateNotYetValid {
        cert: String,
        not_before: String,
        at: String,
    },

    /// The document's own timestamp lies outside its signing certificate's validity.
    #[error("timestamp {timestamp} lies outside the signing certificate's validity ({not_before} .. {not_after})")]
    TimestampOutsideCertificate {
        timestamp: String,
        not_before: String,
        not_after: String,
    },

    /// The COSE_Sign1 signature does not verify with the leaf certificate's key.
    #[error("signature: the COSE ES384 signature does not verify with the key of `certificate`")]
    BadSignature,

    /// The document is older than the policy's maximum age at the reference time.
    #[error("timestamp: document is {age_ms} ms old at {at}; the maximum age is {max_age_ms} ms")]
    Stale {
        age_ms: u64,
        max_age_ms: u64,
        at: String,
    },

    /// The document's timestamp lies further in the future than the allowed clock skew.
    #[error("timestamp: document is dated {ahead_ms} ms after the reference time {at}; the allowed skew is {max_skew_ms} ms")]
    FromTheFuture {
        ahead_ms: u64,
        max_skew_ms: u64,
        at: String,
    },

    /// A check that the caller required (PCRs, key binding, nonce) did not pass.
    #[error("check {check} failed: {detail}")]
    CheckFailed { check: String, detail: String },
}

impl NitroError {
    pub(crate) fn malformed(field: impl Into<String>, reason: impl Into<String>) -> Self {
        NitroError::Malformed {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn field(field: impl Into<String>, reason: impl Into<String>) -> Self {
        NitroError::Field {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn cert(cert: impl Into<String>, reason: impl Into<String>) -> Self {
        NitroError::Certificate {
            cert: cert.into(),
            reason: reason.into(),
        }
    }
}
