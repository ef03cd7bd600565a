//! The enclave wire protocol: the requests a gateway sends to its enclave process and the
//! answers it gets back, shared by the enclave (which serves them) and its clients (the run
//! pipeline, the TEE registrar, `/v1/tee`). JSON over HTTP on loopback (or vsock in a real
//! Nitro enclave); the paths are the constants below.
//!
//! Every answer that carries a run signature carries the attestation document that binds the
//! signing key, so a client checks both before it trusts the output.

use crate::og_compat::TeeFields;
use haca_core::{BlobId, Digest, NodeId};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// `GET` (query `nonce=HEX`, at most [`MAX_NONCE_BYTES`]): a fresh attestation document.
pub const ATTESTATION_PATH: &str = "/attestation";
/// `PUT /models/{blob_id}` with the artifact's bytes: the enclave hashes them itself.
pub const MODELS_PATH: &str = "/models";
/// `POST` a [`RunRequest`] -> [`RunAnswer`]; 404 [`MODEL_NOT_LOADED`] until the artifact is put.
pub const RUN_PATH: &str = "/run";
/// `POST` a [`ChatRunRequest`] -> [`ChatAnswer`].
pub const CHAT_PATH: &str = "/chat";
/// `POST` a [`HeartbeatRequest`] -> [`HeartbeatAnswer`].
pub const HEARTBEAT_PATH: &str = "/heartbeat";

/// The error code of a run whose artifact the enclave has not been given yet.
pub const MODEL_NOT_LOADED: &str = "model_not_loaded";
/// The error code (422) of a run whose output holds a NaN or an infinity, which JSON cannot
/// carry: such an output is never signed or answered.
pub const NON_FINITE_OUTPUT: &str = "non_finite_output";
/// The largest nonce an attestation request may carry.
pub const MAX_NONCE_BYTES: usize = 512;

/// The answer to [`ATTESTATION_PATH`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct AttestationAnswer {
    /// The COSE_Sign1 document, standard base64.
    pub document_b64: String,
    /// The Ed25519 run key the document's `public_key` binds.
    pub enclave_key: NodeId,
    /// Non-zero PCRs by index, hex.
    pub pcrs: BTreeMap<String, String>,
    /// SHA-256 of the root certificate the document chains to, hex.
    pub root_fingerprint: String,
    /// Whether the root is a development CA (never an AWS root).
    pub dev: bool,
    /// OpenGradient-style id: `0x` + keccak256 of the RSA key's SubjectPublicKeyInfo.
    pub tee_id: String,
    /// The RSA key the document's nitriding `user_data` binds, PEM.
    pub signing_key_pem: String,
}

/// The answer to `PUT /models/{blob_id}`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct PutModelAnswer {
    pub blob_id: BlobId,
}

/// An ML run: the artifact (already put), the gateway's request hash and the input tensors.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    pub blob_id: BlobId,
    pub request_hash: Digest,
    pub input: Value,
}

/// What binds an enclave's answer: the run signature over
/// [`haca_core::receipt::tee_run_message`], the key that made it and the document binding
/// that key, and the OpenGradient-compatible fields with the RSA key that signed them.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Signed {
    pub tee: TeeFields,
    pub signing_key_pem: String,
    pub input_hash: Digest,
    pub output_hash: Digest,
    pub finished_at: u64,
    pub run_signature: String,
    pub enclave_key: NodeId,
    pub document_b64: String,
}

/// The answer to [`RUN_PATH`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct RunAnswer {
    /// The output tensors, in haca's tensor JSON.
    pub output: Value,
    #[serde(flatten)]
    pub signed: Signed,
    pub pcrs: BTreeMap<String, String>,
}

/// A chat completion on the enclave's local model: the client's body as the gateway got it
/// (the enclave parses and hashes it itself: it signs what it served, not what it was told).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ChatRunRequest {
    pub body: Value,
}

/// A chat answer's output, as its output hash covers it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ChatOutput {
    pub content: String,
    #[serde(default)]
    pub tool_calls: Vec<Value>,
    pub finish_reason: String,
}

/// Token counts of a chat answer.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Default)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// The answer to [`CHAT_PATH`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ChatAnswer {
    pub output: ChatOutput,
    pub usage: Usage,
    /// The GGUF that answered.
    pub blob_id: BlobId,
    /// The request hash the enclave computed (haca's signed chat request).
    pub request_hash: Digest,
    #[serde(flatten)]
    pub signed: Signed,
}

/// A heartbeat for the TEE registry at `at_ms`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatRequest {
    pub at_ms: u64,
}

/// The run key's heartbeat signature ([`crate::registry::sign_heartbeat`]).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct HeartbeatAnswer {
    pub tee_id: crate::registry::TeeId,
    pub at_ms: u64,
    pub signature: String,
}

/// An error answer: `{error: {code, message}}`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ErrorAnswer {
    pub error: ErrorBody,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_answer_round_trips_with_flattened_signature_fields() {
        let signed = Signed {
            tee: TeeFields {
                tee_signature: "c2ln".into(),
                tee_request_hash: "aa".into(),
                tee_output_hash: "bb".into(),
                tee_timestamp: 7,
                tee_id: "0x01".into(),
            },
            signing_key_pem: "PEM".into(),
            input_hash: haca_core::sha256(b"in"),
            output_hash: haca_core::sha256(b"out"),
            finished_at: 42,
            run_signature: "ab".into(),
            enclave_key: haca_core::NodeKey::from_seed([1; 32]).node_id(),
            document_b64: "ZG9j".into(),
        };
        let answer = RunAnswer {
            output: serde_json::json!({"y": {"shape": [1], "data": [1.0]}}),
            signed,
            pcrs: BTreeMap::from([("0".into(), "ff".into())]),
        };
        let v = serde_json::to_value(&answer).unwrap();
        // The wire keeps the flat field names older clients read.
        assert!(v["run_signature"].is_string() && v["document_b64"].is_string());
        assert_eq!(serde_json::from_value::<RunAnswer>(v).unwrap(), answer);
    }

    #[test]
    fn a_run_request_with_an_unknown_field_is_refused_naming_it() {
        let e = serde_json::from_value::<RunRequest>(serde_json::json!({
            "blob_id": haca_core::BlobId::of(b"m"), "request_hash": haca_core::sha256(b"r"),
            "input": {}, "extra": 1
        }))
        .unwrap_err();
        assert!(e.to_string().contains("extra"), "{e}");
    }
}
