//! The gateway's side of the enclave protocol ([`haca_tee::protocol`]): a typed client, and
//! the checks an enclave's answer passes before any of it reaches a client or a receipt.

use crate::error::GatewayError;
use haca_core::receipt::AttestationEvidence;
use haca_core::{sha256, BlobId, Digest};
use haca_tee::og_compat::{self, TeeFields};
use haca_tee::protocol::{self as wire, Signed};
use serde_json::Value;
use std::sync::Arc;

/// How this node reaches its enclave: HTTP on loopback to devnet's supervised process
/// today (the binary's `enclave::HttpEnclave`), vsock or a remote attested enclave later. A
/// transport moves [`haca_tee::protocol`] messages and says how a call failed; what a failure
/// means for a run is this module's ([`EnclaveClient`]).
#[async_trait::async_trait]
pub trait EnclaveTransport: Send + Sync {
    /// Whether the enclave serves chat (it was given the local LLM).
    fn has_llm(&self) -> bool;
    async fn attestation(
        &self,
        nonce: Option<&[u8]>,
    ) -> Result<wire::AttestationAnswer, TransportError>;
    async fn heartbeat(
        &self,
        request: &wire::HeartbeatRequest,
    ) -> Result<wire::HeartbeatAnswer, TransportError>;
    async fn run(&self, request: &wire::RunRequest) -> Result<wire::RunAnswer, TransportError>;
    async fn put_model(
        &self,
        blob_id: BlobId,
        bytes: Vec<u8>,
    ) -> Result<wire::PutModelAnswer, TransportError>;
    async fn chat(
        &self,
        request: &wire::ChatRunRequest,
    ) -> Result<wire::ChatAnswer, TransportError>;
}

/// How an enclave call failed, as a transport tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportError {
    /// The enclave could not be reached (down, restarting): a retry or another route may
    /// succeed.
    Down(String),
    /// The enclave failed while serving the call.
    Failed(String),
    /// The enclave refused the call, with the protocol's error code (empty when it gave
    /// none) and its reason.
    Refused { code: String, message: String },
    /// Its answer is not a protocol message.
    Malformed(String),
}

/// A failed enclave call: the error and whether another route may take over (the enclave
/// was unreachable or failed, rather than refusing the request).
#[derive(Debug)]
pub struct EnclaveError {
    pub error: GatewayError,
    pub retryable: bool,
}

impl From<EnclaveError> for GatewayError {
    fn from(e: EnclaveError) -> Self {
        e.error
    }
}

impl TransportError {
    /// What the failure means for a run; a refusal without a code of its own is
    /// `refused_code`.
    fn for_run(self, refused_code: &'static str) -> EnclaveError {
        let (error, retryable) = match self {
            TransportError::Down(m) => (
                GatewayError::unavailable(
                    "enclave_down",
                    format!("the enclave did not answer: {m}"),
                ),
                true,
            ),
            TransportError::Failed(m) => (
                GatewayError::internal(format!("the enclave failed: {m}")),
                true,
            ),
            // The model computed a NaN or an infinity: the same error as in process.
            TransportError::Refused { code, message } if code == wire::NON_FINITE_OUTPUT => (
                GatewayError::Unprocessable {
                    code: wire::NON_FINITE_OUTPUT,
                    message,
                },
                false,
            ),
            TransportError::Refused { message, .. } => {
                (GatewayError::invalid(refused_code, message), false)
            }
            TransportError::Malformed(m) => (
                GatewayError::internal(format!(
                    "the enclave's answer is not a valid protocol message: {m}"
                )),
                true,
            ),
        };
        EnclaveError { error, retryable }
    }
}

/// What an enclave's answer carries beyond its output, once checked.
#[derive(Clone, Debug)]
pub struct EnclaveEvidence {
    pub attestation: AttestationEvidence,
    pub tee: TeeFields,
    /// The time the enclave signed: the execution box must say the same.
    pub finished_at: u64,
    /// The output hash the enclave signed; the pipeline checks the output against it.
    pub output_hash: Digest,
    pub input_hash: Digest,
}

/// The enclave protocol's client, over any transport.
#[derive(Clone)]
pub struct EnclaveClient(Arc<dyn EnclaveTransport>);

impl EnclaveClient {
    pub fn new(transport: Arc<dyn EnclaveTransport>) -> Self {
        EnclaveClient(transport)
    }

    pub fn has_llm(&self) -> bool {
        self.0.has_llm()
    }

    /// A fresh attestation document, carrying `nonce` when given.
    pub async fn attestation(
        &self,
        nonce: Option<&[u8]>,
    ) -> Result<wire::AttestationAnswer, EnclaveError> {
        self.0
            .attestation(nonce)
            .await
            .map_err(|e| e.for_run("invalid_nonce"))
    }

    /// The run key's heartbeat signature at `at_ms`.
    pub async fn heartbeat(&self, at_ms: u64) -> Result<wire::HeartbeatAnswer, EnclaveError> {
        self.0
            .heartbeat(&wire::HeartbeatRequest { at_ms })
            .await
            .map_err(|e| e.for_run("enclave_refused"))
    }

    /// Runs `request` in the enclave; `artifact` reads the bytes when the enclave does not
    /// hold them yet (its first run of that artifact), which it is then given.
    pub async fn run<F, Fut>(
        &self,
        request: wire::RunRequest,
        artifact: F,
    ) -> Result<wire::RunAnswer, EnclaveError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Vec<u8>, GatewayError>>,
    {
        match self.0.run(&request).await {
            Err(TransportError::Refused { code, .. }) if code == wire::MODEL_NOT_LOADED => {}
            other => return other.map_err(|e| e.for_run("enclave_refused")),
        }
        let bytes = artifact().await.map_err(|error| EnclaveError {
            error,
            retryable: false,
        })?;
        self.0
            .put_model(request.blob_id, bytes)
            .await
            .map_err(|e| EnclaveError {
                error: GatewayError::internal(format!(
                    "the enclave refused the artifact: {}",
                    e.for_run("enclave_refused").error.message()
                )),
                retryable: false,
            })?;
        self.0
            .run(&request)
            .await
            .map_err(|e| e.for_run("enclave_refused"))
    }

    /// A chat completion on the enclave's local model.
    pub async fn chat(&self, body: &Value) -> Result<wire::ChatAnswer, EnclaveError> {
        let request = wire::ChatRunRequest { body: body.clone() };
        self.0
            .chat(&request)
            .await
            .map_err(|e| e.for_run("enclave_refused"))
    }
}

/// Checks what binds an enclave's answer and turns it into the attestation box and the
/// OpenGradient-compatible fields: the document parses, names the enclave key, and its
/// nitriding `user_data` binds the RSA key that signed the `tee` fields.
pub fn enclave_evidence(s: &Signed) -> Result<EnclaveEvidence, GatewayError> {
    let bad =
        |what: &str| GatewayError::internal(format!("the enclave's answer lacks a valid {what}"));
    let document =
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &s.document_b64)
            .map_err(|_| bad("document_b64"))?;
    let doc = haca_tee::nitro::parse(&document)
        .map_err(|e| GatewayError::internal(format!("the enclave's attestation document: {e}")))?;
    check_og_fields(s, &doc).map_err(|e| {
        GatewayError::internal(format!("the enclave's OpenGradient-compatible fields: {e}"))
    })?;
    let attestation = AttestationEvidence {
        kind: "dev".into(),
        document_digest: sha256(&document),
        pcrs: doc
            .pcrs
            .iter()
            .filter(|(_, v)| v.iter().any(|b| *b != 0))
            .map(|(k, v)| (k.to_string(), hex::encode(v)))
            .collect(),
        key_binding: "public_key".into(),
        timestamp: doc.timestamp_ms,
        root: "haca dev enclave root".into(),
        dev: true,
        document_b64: Some(s.document_b64.clone()),
        enclave_key: Some(s.enclave_key),
        run_signature: Some(s.run_signature.clone()),
    };
    Ok(EnclaveEvidence {
        attestation,
        tee: s.tee.clone(),
        finished_at: s.finished_at,
        output_hash: s.output_hash,
        input_hash: s.input_hash,
    })
}

/// The `tee` fields are signed by the RSA key whose SubjectPublicKeyInfo digest the
/// document's nitriding `user_data` holds.
fn check_og_fields(s: &Signed, doc: &haca_tee::AttestationDocument) -> Result<(), String> {
    let spki = og_compat::spki_der_of_pem(&s.signing_key_pem)?;
    let bound = doc
        .user_data
        .as_deref()
        .ok_or("the document has no user_data binding the RSA key")
        .and_then(|u| {
            haca_tee::NitridingUserData::parse(u)
                .map_err(|_| "the document's user_data is not nitriding's")
        })?;
    if bound.signing_key_sha256 != sha256(&spki).0 {
        return Err("the document's user_data binds another RSA key".into());
    }
    og_compat::verify_fields(&spki, &s.tee)
}
