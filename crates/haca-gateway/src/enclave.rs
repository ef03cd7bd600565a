//! The gateway's side of the enclave protocol ([`haca_tee::protocol`]): a typed client, and
//! the checks an enclave's answer passes before any of it reaches a client or a receipt.

use crate::error::GatewayError;
use haca_core::receipt::AttestationEvidence;
use haca_core::{sha256, Digest};
use haca_tee::og_compat::{self, TeeFields};
use haca_tee::protocol::{self as wire, Signed};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::sync::Arc;

/// Where the node's enclave can be reached now: a supervised local process (devnet), or a
/// remote one. `None` while it restarts.
pub trait EnclaveLocator: Send + Sync {
    fn url(&self) -> Option<String>;
    /// Whether it serves chat (it was given the local LLM).
    fn has_llm(&self) -> bool;
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

/// The enclave protocol's client.
#[derive(Clone)]
pub struct EnclaveClient {
    locator: Arc<dyn EnclaveLocator>,
    http: reqwest::Client,
}

impl EnclaveClient {
    pub fn new(locator: Arc<dyn EnclaveLocator>, http: reqwest::Client) -> Self {
        EnclaveClient { locator, http }
    }

    pub fn has_llm(&self) -> bool {
        self.locator.has_llm()
    }

    fn url(&self) -> Result<String, EnclaveError> {
        self.locator.url().ok_or_else(|| EnclaveError {
            error: GatewayError::unavailable(
                "enclave_down",
                "the enclave is restarting; try again",
            ),
            retryable: true,
        })
    }

    /// Sends one request: its status and body. Unreachable is retryable.
    async fn send(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<(reqwest::StatusCode, Vec<u8>), EnclaveError> {
        let unreachable = |e: reqwest::Error| EnclaveError {
            error: GatewayError::unavailable(
                "enclave_down",
                format!("the enclave did not answer: {e}"),
            ),
            retryable: true,
        };
        let resp = req.send().await.map_err(unreachable)?;
        let status = resp.status();
        Ok((status, resp.bytes().await.map_err(unreachable)?.to_vec()))
    }

    /// Sends one request and reads its typed answer.
    async fn call<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
        refused_code: &'static str,
    ) -> Result<T, EnclaveError> {
        let (status, bytes) = self.send(req).await?;
        decode(status, &bytes, refused_code)
    }

    /// A fresh attestation document, carrying `nonce` when given.
    pub async fn attestation(
        &self,
        nonce: Option<&[u8]>,
    ) -> Result<wire::AttestationAnswer, EnclaveError> {
        let url = self.url()?;
        let mut path = format!("{url}{}", wire::ATTESTATION_PATH);
        if let Some(n) = nonce {
            path.push_str(&format!("?nonce={}", hex::encode(n)));
        }
        self.call(self.http.get(path), "invalid_nonce").await
    }

    /// The run key's heartbeat signature at `at_ms`.
    pub async fn heartbeat(&self, at_ms: u64) -> Result<wire::HeartbeatAnswer, EnclaveError> {
        let url = format!("{}{}", self.url()?, wire::HEARTBEAT_PATH);
        let body = wire::HeartbeatRequest { at_ms };
        self.call(self.http.post(url).json(&body), "enclave_refused")
            .await
    }

    /// Runs `blob_id` on `input` in the enclave; `artifact` reads the bytes when the enclave
    /// does not hold them yet (its first run of that artifact).
    pub async fn run<F, Fut>(
        &self,
        request: wire::RunRequest,
        artifact: F,
    ) -> Result<wire::RunAnswer, EnclaveError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Vec<u8>, GatewayError>>,
    {
        let url = self.url()?;
        let run_url = format!("{url}{}", wire::RUN_PATH);
        let (status, bytes) = self.send(self.http.post(&run_url).json(&request)).await?;
        if status != reqwest::StatusCode::NOT_FOUND {
            return decode(status, &bytes, "enclave_refused");
        }
        // First run of this artifact in this enclave: hand it the bytes (it hashes them).
        let bytes = artifact().await.map_err(|error| EnclaveError {
            error,
            retryable: false,
        })?;
        let put = format!("{url}{}/{}", wire::MODELS_PATH, request.blob_id);
        let _: wire::PutModelAnswer = self
            .call(self.http.put(put).body(bytes), "enclave_refused")
            .await
            .map_err(|e| EnclaveError {
                error: GatewayError::internal(format!(
                    "the enclave refused the artifact: {}",
                    e.error.message()
                )),
                retryable: false,
            })?;
        self.call(self.http.post(&run_url).json(&request), "enclave_refused")
            .await
    }

    /// A chat completion on the enclave's local model.
    pub async fn chat(&self, body: &Value) -> Result<wire::ChatAnswer, EnclaveError> {
        let url = format!("{}{}", self.url()?, wire::CHAT_PATH);
        let req = wire::ChatRunRequest { body: body.clone() };
        self.call(self.http.post(url).json(&req), "enclave_refused")
            .await
    }
}

/// Reads a typed answer: a 4xx is the enclave refusing the request (`refused_code`);
/// anything else that is not a success is its failure, which another route may take over.
fn decode<T: DeserializeOwned>(
    status: reqwest::StatusCode,
    bytes: &[u8],
    refused_code: &'static str,
) -> Result<T, EnclaveError> {
    if !status.is_success() {
        let (code, msg) = serde_json::from_slice::<wire::ErrorAnswer>(bytes)
            .map(|e| (e.error.code, e.error.message))
            .unwrap_or_else(|_| (String::new(), "no reason given".into()));
        return Err(if status.is_client_error() {
            EnclaveError {
                error: if code == wire::NON_FINITE_OUTPUT {
                    // The model computed a NaN or an infinity: the same 422 as in process.
                    GatewayError::Unprocessable {
                        code: wire::NON_FINITE_OUTPUT,
                        message: msg,
                    }
                } else {
                    GatewayError::invalid(refused_code, msg)
                },
                retryable: false,
            }
        } else {
            EnclaveError {
                error: GatewayError::internal(format!("the enclave failed: {msg}")),
                retryable: true,
            }
        });
    }
    serde_json::from_slice(bytes).map_err(|e| EnclaveError {
        error: GatewayError::internal(format!(
            "the enclave's answer is not a valid protocol message: {e}"
        )),
        retryable: true,
    })
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
