//! The receipt: one box per layer of a run, each with its own status, history and evidence.
//!
//! What the gateway signs (`execution.signature`, Ed25519) is the receipt's *signed view*:
//! the receipt's JSON with the parts removed that land after the answer and carry their own
//! proof: the `proof` and `settlement` boxes, and the payment box's `status`, `history` and
//! `evidence.settlement`. The receipt digest is SHA-256 of the signed view's canonical JSON
//! (RFC 8785); the signature is over `"haca.receipt.v1:"` followed by the digest's 32 bytes.
//! A verifier computes the signed view from the file as given, so a value changed or added
//! anywhere in it breaks the signature.

use crate::canonical;
use crate::hash::{sha256, Digest};
use crate::ids::{BlobId, NodeId, RunId};
use crate::keys::{self, KeyError, NodeKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// The receipt schema this build writes and reads.
pub const RECEIPT_VERSION: u32 = 1;

/// Domain separation for the node's signature over a receipt digest.
pub const SIGNATURE_DOMAIN: &[u8] = b"haca.receipt.v1:";

/// Where a box stands.
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
pub enum BoxStatus {
    /// Not produced (yet).
    Absent,
    /// Produced and signed by the node that served the run; nobody else checked it yet.
    Claimed,
    /// Re-verified by a validator.
    Verified,
    /// Committed in a settlement round.
    Settled,
    /// Checked and found wrong.
    Failed,
}

impl BoxStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BoxStatus::Absent => "absent",
            BoxStatus::Claimed => "claimed",
            BoxStatus::Verified => "verified",
            BoxStatus::Settled => "settled",
            BoxStatus::Failed => "failed",
        }
    }
}

/// One status change of a box, with its time (unix milliseconds).
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
pub struct StatusChange {
    pub status: BoxStatus,
    pub at: u64,
}

/// A box: status, the time of each change, and the evidence once there is some.
#[derive(Serialize, Deserialize, Clone, PartialEq, Debug)]
#[serde(bound(deserialize = "T: Deserialize<'de>"))]
pub struct EvidenceBox<T> {
    pub status: BoxStatus,
    #[serde(default)]
    pub history: Vec<StatusChange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<T>,
}

impl<T> Default for EvidenceBox<T> {
    fn default() -> Self {
        EvidenceBox {
            status: BoxStatus::Absent,
            history: Vec::new(),
            evidence: None,
        }
    }
}

impl<T> EvidenceBox<T> {
    /// A box produced at `at` with `status`.
    pub fn with(evidence: T, status: BoxStatus, at: u64) -> Self {
        EvidenceBox {
            status,
            history: vec![StatusChange { status, at }],
            evidence: Some(evidence),
        }
    }
    /// Moves the box to `status` at `at`, recording the change.
    pub fn set_status(&mut self, status: BoxStatus, at: u64) {
        if self.status != status {
            self.status = status;
            self.history.push(StatusChange { status, at });
        }
    }
}

/// How a run was executed.
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
pub enum ExecMode {
    Vanilla,
    Tee,
    Zkml,
}

impl ExecMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ExecMode::Vanilla => "vanilla",
            ExecMode::Tee => "tee",
            ExecMode::Zkml => "zkml",
        }
    }
}

/// The path a request took to the executor.
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
pub enum PrivacyPath {
    Direct,
    Ohttp,
    Tee,
}

/// artifact box: which bytes ran under which label.
#[derive(Serialize, Deserialize, Clone, PartialEq, Debug)]
pub struct ArtifactEvidence {
    /// The label the client asked for, when it asked by label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The label's revision that resolved to `blob_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
    pub blob_id: BlobId,
    /// Artifact format, such as `onnx`.
    pub format: String,
    /// The artifact's Walrus blob id (URL-safe base64, RS2 over 1000 shards), when the hub
    /// computed one: where the same bytes are found on Walrus. Absent in older receipts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub walrus_blob_id: Option<String>,
}

/// One routing attempt (a fallback tried, or the one that served).
#[derive(Serialize, Deserialize, Clone, PartialEq, Debug)]
pub struct RouteAttempt {
    pub provider: String,
    pub path: PrivacyPath,
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// route box: who got the request, over which path, under which policy.
#[derive(Serialize, Deserialize, Clone, PartialEq, Debug)]
pub struct RouteEvidence {
    pub provider: String,
    pub node: NodeId,
    pub path: PrivacyPath,
    /// The privacy the request required (`any`, `private`, `tee`).
    pub policy: String,
    #[serde(default)]
    pub attempts: Vec<RouteAttempt>,
    /// The OHTTP relay the request came through, as the relay named itself (path `ohttp`
    /// only; absent when the relay did not say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<String>,
}

impl RouteEvidence {
    /// A request served by `provider` on `node` over the direct path, with no privacy
    /// requirement and no fallback: the one attempt that served it.
    pub fn direct(provider: &str, node: NodeId) -> Self {
        RouteEvidence {
            provider: provider.into(),
            node,
            path: PrivacyPath::Direct,
            policy: "any".into(),
            attempts: vec![RouteAttempt {
                provider: provider.into(),
                path: PrivacyPath::Direct,
                outcome: "served".into(),
                error: None,
            }],
            relay: None,
        }
    }
}

/// execution box: what ran, on which hashes, signed by which node key.
#[derive(Serialize, Deserialize, Clone, PartialEq, Debug)]
pub struct ExecutionEvidence {
    pub mode: ExecMode,
    /// Runtime and version, such as `tract-onnx 0.23` (runtimes agree to ~1e-6, not bit-exact).
    pub runtime: String,
    pub request_hash: Digest,
    pub input_hash: Digest,
    pub output_hash: Digest,
    pub signer: NodeId,
    pub started_at: u64,
    pub finished_at: u64,
    /// Ed25519 over the receipt digest (see the module doc); hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

/// attestation box: a TEE's evidence that measured code held the signing key.
#[derive(Serialize, Deserialize, Clone, PartialEq, Debug)]
pub struct AttestationEvidence {
    /// `nitro`, `tdx`, `sgx` or `dev`.
    pub kind: String,
    pub document_digest: Digest,
    #[serde(default)]
    pub pcrs: BTreeMap<String, String>,
    pub key_binding: String,
    pub timestamp: u64,
    pub root: String,
    pub dev: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document_b64: Option<String>,
    /// The Ed25519 key the document binds (its `public_key` field): the enclave's run key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enclave_key: Option<NodeId>,
    /// The enclave's Ed25519 signature over [`tee_run_message`] of this run, hex: what binds
    /// the artifact and the hashes to the attested key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_signature: Option<String>,
}

/// Bytes an enclave signs for one run, a fixed layout:
///
/// ```text
/// "haca.tee.run.v1:" | blob id (32) | request hash (32) | input hash (32) | output hash (32)
///                    | finished_at (u64 BE, unix ms)
/// ```
pub fn tee_run_message(
    blob_id: &BlobId,
    request_hash: &Digest,
    input_hash: &Digest,
    output_hash: &Digest,
    finished_at: u64,
) -> Vec<u8> {
    let mut m = b"haca.tee.run.v1:".to_vec();
    for d in [&blob_id.0, request_hash, input_hash, output_hash] {
        m.extend_from_slice(d.as_bytes());
    }
    m.extend_from_slice(&finished_at.to_be_bytes());
    m
}

/// proof box: a proof that the committed model maps the run's input to its output.
///
/// At the answer it is `claimed`: the key, the model commitment and the statement's hashes
/// are named, the proof is still being made. It becomes `verified` when the proof is attached
/// and the node's verifier accepted it; validators check it again before the run settles.
#[derive(Serialize, Deserialize, Clone, PartialEq, Debug)]
pub struct ProofEvidence {
    /// The proof system (haca-zk's `SYSTEM`).
    pub system: String,
    pub verifying_key_digest: Digest,
    /// The commitment to the quantized weights: what ties the key to the model's bytes.
    pub model_commitment: Digest,
    /// The hashes of the proof's public input and output as tensors: the execution box's.
    pub input_hash: Digest,
    pub output_hash: Digest,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof_digest: Option<Digest>,
    /// The verifying key itself (JSON), so that the receipt checks offline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verifying_key: Option<Value>,
    /// The proof's bytes, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof_b64: Option<String>,
    /// How long proving took, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prove_ms: Option<u64>,
}

pub use crate::data::DataItem;

/// data box.
#[derive(Serialize, Deserialize, Clone, PartialEq, Debug, Default)]
pub struct DataEvidence {
    pub items: Vec<DataItem>,
}

/// One memory row that steered the run.
#[derive(Serialize, Deserialize, Clone, PartialEq, Debug)]
pub struct MemoryRow {
    pub id: String,
    pub owner: String,
    pub created_at: u64,
    pub last_validated_at: u64,
    pub score: f64,
    /// SHA-256 of the sealed row as the store held it when the run used it: which ciphertext
    /// (under the owner's key) the row's text came from; the owner's export holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_sha256: Option<Digest>,
    /// The row was not re-validated within the policy's age and was used anyway, flagged.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stale: bool,
}

/// memory box.
#[derive(Serialize, Deserialize, Clone, PartialEq, Debug, Default)]
pub struct MemoryEvidence {
    pub rows: Vec<MemoryRow>,
    /// Whose memory steered the run: the address that pays for the user's runs (an API key's
    /// account, or an x402 payer). Every row's owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The embedding model retrieval ranked rows with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedder: Option<String>,
    /// The retrieval policy: rows not validated within this many seconds are stale, and
    /// `stale_policy` says whether they were excluded or surfaced (flagged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_policy: Option<String>,
}

/// The settlement of a payment, when it lands.
#[derive(Serialize, Deserialize, Clone, PartialEq, Debug)]
pub struct PaymentSettlement {
    pub transaction: String,
    pub settled_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round: Option<u64>,
}

/// The payer's signed EIP-3009 authorization, with the token's EIP-712 domain: what anyone
/// needs to recover the signer offline. `from`, `value` and `nonce` are the box's `payer`,
/// `amount` and `nonce`; the token is its `asset`.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct PaymentAuthorization {
    /// The EIP-712 domain's `name` and `version` (USDC: "USD Coin", "2").
    pub token_name: String,
    pub token_version: String,
    /// The EIP-712 domain's `chainId` (the box's CAIP-2 `network` names it too).
    pub chain_id: u64,
    /// `to`: who was paid.
    pub pay_to: String,
    /// Unix seconds.
    pub valid_after: u64,
    pub valid_before: u64,
    /// 65 bytes `r || s || v`, 0x hex.
    pub signature: String,
}

/// payment box: what was paid and what it covered; never evidence about execution.
#[derive(Serialize, Deserialize, Clone, PartialEq, Debug)]
pub struct PaymentEvidence {
    /// `exact` (an x402 authorization) or `apikey` (a prepaid balance charged by the node).
    pub scheme: String,
    pub network: String,
    pub asset: String,
    /// Base units, as a decimal string (amounts can exceed 2^53).
    pub amount: String,
    pub payer: String,
    pub nonce: String,
    pub resource: String,
    pub request_hash: Digest,
    /// The artifact the payment covered (the artifact box names it too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<BlobId>,
    /// The execution mode the payment covered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<ExecMode>,
    /// For LLM runs: the completion tokens the amount covers (priced up front).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    /// The payer's signature, for `exact`; none for `apikey`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<PaymentAuthorization>,
    pub verified_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settlement: Option<PaymentSettlement>,
    /// x402 `upto`: the maximum the payer authorized (what the signature covers), the
    /// per-token prices and the tokens served; `amount` is what settled, never above
    /// `authorized`. Absent for `exact` and `apikey`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upto: Option<UptoTerms>,
}

/// x402 `upto` terms of a payment box: what was authorized, at what prices, for what usage.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct UptoTerms {
    /// Base units the payer's EIP-3009 authorization is for: the most the call could cost.
    pub authorized: String,
    /// Base units per 1,000 prompt tokens and per 1,000 completion tokens.
    pub input_per_1k: String,
    pub output_per_1k: String,
    /// The tokens served, as the route reported them (the amount is priced from these).
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Set when the maximum was authorized over Permit2 (x402's upto clients) rather than
    /// EIP-3009: the spender and facilitator the payer's `PermitWitnessTransferFrom` named
    /// (its deadline is the authorization's `valid_before`, its token the box's asset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permit2: Option<Permit2Fields>,
}

/// The Permit2 fields of an `upto` authorization beyond what the payment box already says.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct Permit2Fields {
    pub spender: String,
    pub facilitator: String,
}

pub use crate::settlement::{SettlementEvidence, SettlementMode};

/// The nine boxes of DESIGN.md, in its order.
#[derive(Serialize, Deserialize, Clone, PartialEq, Debug, Default)]
pub struct Boxes {
    pub artifact: EvidenceBox<ArtifactEvidence>,
    pub route: EvidenceBox<RouteEvidence>,
    pub execution: EvidenceBox<ExecutionEvidence>,
    pub attestation: EvidenceBox<AttestationEvidence>,
    pub proof: EvidenceBox<ProofEvidence>,
    pub data: EvidenceBox<DataEvidence>,
    pub memory: EvidenceBox<MemoryEvidence>,
    pub payment: EvidenceBox<PaymentEvidence>,
    pub settlement: EvidenceBox<SettlementEvidence>,
}

/// Box names in DESIGN.md's order.
pub const BOX_NAMES: [&str; 9] = [
    "artifact",
    "route",
    "execution",
    "attestation",
    "proof",
    "data",
    "memory",
    "payment",
    "settlement",
];

/// A run's receipt.
#[derive(Serialize, Deserialize, Clone, PartialEq, Debug)]
pub struct Receipt {
    pub version: u32,
    pub run_id: RunId,
    /// When the gateway issued it (unix milliseconds).
    pub issued_at: u64,
    /// How the run is settled; signed, so the gateway cannot change it afterwards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settlement_mode: Option<SettlementMode>,
    pub boxes: Boxes,
}

/// Why a receipt could not be read or signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    #[error("receipt is not valid JSON: {0}")]
    NotJson(String),
    #[error("receipt field {field}: {reason}")]
    Field { field: String, reason: String },
    #[error("receipt version {0} is not supported (this build reads version {RECEIPT_VERSION})")]
    Version(u32),
    #[error("receipt has no execution evidence to sign")]
    NothingToSign,
}

impl Receipt {
    /// A receipt with every box `absent`.
    pub fn new(run_id: RunId, issued_at: u64) -> Self {
        Receipt {
            version: RECEIPT_VERSION,
            run_id,
            issued_at,
            settlement_mode: None,
            boxes: Boxes::default(),
        }
    }

    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).expect("a receipt always serializes")
    }

    /// Signs the receipt's signed view with the node key and stores the signature in the
    /// execution box. The execution box's `signer` must be that key.
    pub fn sign(&mut self, key: &NodeKey) -> Result<Digest, ReceiptError> {
        let exec = self
            .boxes
            .execution
            .evidence
            .as_mut()
            .ok_or(ReceiptError::NothingToSign)?;
        exec.signer = key.node_id();
        exec.signature = None;
        let digest = receipt_digest(&self.to_value());
        let sig = key.sign(&signature_message(&digest));
        self.boxes
            .execution
            .evidence
            .as_mut()
            .expect("checked above")
            .signature = Some(hex::encode(sig));
        Ok(digest)
    }
}

/// A receipt as read from a file: the typed receipt and the JSON exactly as given, which is
/// what signatures are checked against.
#[derive(Clone, Debug)]
pub struct ParsedReceipt {
    pub receipt: Receipt,
    pub raw: Value,
}

impl ParsedReceipt {
    /// Parses receipt text; errors name the line and column, or the field and the reason.
    pub fn from_json_str(text: &str) -> Result<Self, ReceiptError> {
        let raw: Value = serde_json::from_str(text).map_err(|e| {
            let what = if e.is_eof() {
                "truncated or incomplete"
            } else {
                "malformed"
            };
            ReceiptError::NotJson(format!(
                "{what} at line {} column {}: {e}",
                e.line(),
                e.column()
            ))
        })?;
        Self::from_value(raw)
    }

    pub fn from_value(raw: Value) -> Result<Self, ReceiptError> {
        let receipt = Self::typed(&raw)?;
        Ok(ParsedReceipt { receipt, raw })
    }

    /// The typed receipt of `raw` without keeping `raw` (for a caller that holds it already).
    pub fn typed(raw: &Value) -> Result<Receipt, ReceiptError> {
        if let Some(v) = raw.get("version").and_then(Value::as_u64) {
            if v != RECEIPT_VERSION as u64 {
                return Err(ReceiptError::Version(v as u32));
            }
        }
        serde_path_to_error::deserialize(raw).map_err(|e| ReceiptError::Field {
            field: e.path().to_string(),
            reason: e.inner().to_string(),
        })
    }

    pub fn from_receipt(receipt: Receipt) -> Self {
        let raw = receipt.to_value();
        ParsedReceipt { receipt, raw }
    }

    pub fn digest(&self) -> Digest {
        receipt_digest(&self.raw)
    }
}

/// The signed view of a receipt's JSON (see the module doc).
pub fn signed_view(receipt: &Value) -> Value {
    let mut v = receipt.clone();
    if let Some(boxes) = v.get_mut("boxes").and_then(Value::as_object_mut) {
        boxes.remove("proof");
        boxes.remove("settlement");
        if let Some(payment) = boxes.get_mut("payment").and_then(Value::as_object_mut) {
            payment.remove("status");
            payment.remove("history");
            if let Some(ev) = payment.get_mut("evidence").and_then(Value::as_object_mut) {
                ev.remove("settlement");
            }
        }
        if let Some(ev) = boxes
            .get_mut("execution")
            .and_then(|e| e.get_mut("evidence"))
            .and_then(Value::as_object_mut)
        {
            ev.remove("signature");
        }
    }
    v
}

/// SHA-256 of the canonical JSON of the receipt's signed view: what settlement commits to.
pub fn receipt_digest(receipt: &Value) -> Digest {
    let text =
        canonical::to_vec(&signed_view(receipt)).expect("JSON values parsed from text are finite");
    sha256(&text)
}

/// The bytes a node signs for a receipt digest.
pub fn signature_message(digest: &Digest) -> Vec<u8> {
    let mut m = SIGNATURE_DOMAIN.to_vec();
    m.extend_from_slice(digest.as_bytes());
    m
}

/// Checks the execution box's signature against the receipt as given.
pub fn check_signature(parsed: &ParsedReceipt) -> Result<NodeId, SignatureProblem> {
    let exec = parsed
        .receipt
        .boxes
        .execution
        .evidence
        .as_ref()
        .ok_or(SignatureProblem::NoExecutionBox)?;
    let sig = exec
        .signature
        .as_deref()
        .ok_or(SignatureProblem::Unsigned)?;
    let msg = signature_message(&parsed.digest());
    keys::verify(&exec.signer, &msg, sig).map_err(SignatureProblem::Bad)?;
    Ok(exec.signer)
}

/// Why `execution.signed` does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureProblem {
    #[error("the execution box is absent")]
    NoExecutionBox,
    #[error("the execution box carries no signature")]
    Unsigned,
    #[error("{0}: the receipt was changed after it was signed, or signed by another key")]
    Bad(KeyError),
}
