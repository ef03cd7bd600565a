//! Run records, what a gateway submits for settlement, and the one trait through which
//! validators re-verify their evidence without re-running the model.

use crate::state::EvidenceView;
use haca_core::claims::PaymentVerifier;
use haca_core::receipt::{receipt_digest, signature_message, ParsedReceipt};
use haca_core::settlement::SettlementMode;
use haca_core::{keys, tensor, Digest, NodeId, RunId};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Largest record a validator accepts, encoded.
pub const MAX_RECORD_BYTES: usize = 4 << 20;

/// Input and output of an `individual` run, in haca's tensor JSON.
#[derive(Serialize, Deserialize, Clone, PartialEq, Debug)]
#[serde(deny_unknown_fields)]
pub struct RecordContent {
    pub input: Value,
    pub output: Value,
}

/// What a gateway submits for one run. Resubmitting the same run id is a no-op.
#[derive(Serialize, Deserialize, Clone, PartialEq, Debug)]
#[serde(deny_unknown_fields)]
pub struct RunRecord {
    pub run_id: RunId,
    pub mode: SettlementMode,
    /// The digest the gateway signed (SHA-256 of the receipt's signed view).
    pub receipt_digest: Digest,
    pub gateway: NodeId,
    /// The gateway's Ed25519 signature over `"haca.receipt.v1:" || receipt_digest`, hex.
    pub signature: String,
    /// The receipt (`batch`, `individual`); absent for `private`, where only hashes leave.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<Value>,
    /// Input and output (`individual` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<RecordContent>,
}

impl RunRecord {
    /// The record of a signed receipt, carrying what `mode` lets leave the gateway:
    /// `private` only the digest and signature, `batch` the receipt, `individual` the
    /// receipt with `content`.
    pub fn new(
        receipt: &haca_core::Receipt,
        mode: SettlementMode,
        content: Option<RecordContent>,
    ) -> Result<Self, String> {
        let digest = receipt_digest(&receipt.to_value());
        Self::signed(receipt, digest, mode, content)
    }

    /// [`RunRecord::new`] for the signer, which already holds the digest `Receipt::sign`
    /// returned (canonicalizing the receipt again would be wasted work on the answer's path).
    /// Validators recompute the digest in any case.
    pub fn signed(
        receipt: &haca_core::Receipt,
        receipt_digest: Digest,
        mode: SettlementMode,
        content: Option<RecordContent>,
    ) -> Result<Self, String> {
        let exec = receipt
            .boxes
            .execution
            .evidence
            .as_ref()
            .ok_or("the receipt has no execution box")?;
        let signature = exec.signature.clone().ok_or("the receipt is not signed")?;
        let raw = receipt.to_value();
        Ok(RunRecord {
            run_id: receipt.run_id,
            mode,
            receipt_digest,
            gateway: exec.signer,
            signature,
            receipt: (mode != SettlementMode::Private).then_some(raw),
            content: if mode == SettlementMode::Individual {
                Some(content.ok_or("an individual record needs its input and output")?)
            } else {
                None
            },
        })
    }

    /// Parses a submitted record; errors name the field and the reason.
    pub fn from_json_slice(bytes: &[u8]) -> Result<Self, String> {
        decode_json(bytes, MAX_RECORD_BYTES, "record")
    }
}

/// Decodes JSON that arrived from the network: bounded in size, the whole input one value,
/// and errors that name the field (`record field run_id: ...`).
pub(crate) fn decode_json<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    limit: usize,
    what: &str,
) -> Result<T, String> {
    if bytes.len() > limit {
        return Err(format!(
            "{what} is {} bytes, over the limit of {limit}",
            bytes.len()
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let v = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| format!("{what} field {}: {}", e.path(), e.inner()))?;
    de.end()
        .map_err(|e| format!("{what}: trailing data: {e}"))?;
    Ok(v)
}

/// Why a record is refused, as validators agree on it: a stable code, part of the chain
/// format (a block's rejected records carry it, `snake_case` in JSON). Validators compare
/// codes, never the detail text of a [`Rejection`], which quotes libraries (serde, the TEE
/// and payment crates) whose wording may change with a version. Adding, removing or
/// renaming a code changes the chain format.
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
#[serde(rename_all = "snake_case")]
pub enum RejectCode {
    /// The record names a gateway that is not registered on the chain.
    GatewayUnregistered,
    /// The gateway's signature over `"haca.receipt.v1:" || receipt_digest` does not verify.
    GatewaySignature,
    /// The record does not carry what its mode requires: a `private` record carries a
    /// receipt or content, a `batch` or `individual` one no receipt, a `batch` one content,
    /// an `individual` one no content.
    RecordShape,
    /// The receipt the record carries does not hash to the record's `receipt_digest`.
    ReceiptDigest,
    /// The receipt does not parse as a receipt, or lacks a box the checks need (execution,
    /// artifact).
    ReceiptMalformed,
    /// The receipt disagrees with the record: another run id, signer, signature or
    /// settlement mode.
    ReceiptMismatch,
    /// An `individual` record's `content.input` or `content.output` is not tensor JSON, or
    /// does not hash to the receipt's `input_hash` or `output_hash`.
    ContentHash,
    /// A `tee`-mode run carries no attestation box, or the box lacks what re-verification
    /// needs: its document, the enclave key or the enclave's run signature.
    AttestationMissing,
    /// The attestation does not hold: the document does not verify (encoding, size,
    /// certificate chain to the chain's roots, signature) or is not the one the box names,
    /// it does not bind the enclave key, or the enclave's run signature does not verify.
    AttestationInvalid,
    /// The enclave that signed the run is not registered in the chain's TEE registry.
    EnclaveUnregistered,
    /// The enclave is registered but disabled (its PCR set was revoked).
    EnclaveDisabled,
    /// The payer's signed x402 authorization does not verify: its fields do not parse, its
    /// domain is not the box's network, or its EIP-712 signature does not recover the payer
    /// (an amount or term changed after signing).
    PaymentInvalid,
    /// The payment does not cover this run: another request or artifact, or verified
    /// outside the authorization's validity window.
    PaymentNotCovering,
    /// The x402 authorization was already settled with another run: the chain state's rule,
    /// not a verifier's.
    PaymentSpent,
    /// A `zkml`-mode run carries no proof box, or the box carries no proof or key.
    ProofMissing,
    /// The proof box's proof does not verify against its key, or its public input or output
    /// is not the run's (by hash).
    ProofInvalid,
    /// A rejection in a block made before rejections carried codes (the field is absent
    /// there). No validator produces it, so a new block carrying it is refused.
    Unclassified,
}

impl RejectCode {
    /// The code as it appears in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectCode::GatewayUnregistered => "gateway_unregistered",
            RejectCode::GatewaySignature => "gateway_signature",
            RejectCode::RecordShape => "record_shape",
            RejectCode::ReceiptDigest => "receipt_digest",
            RejectCode::ReceiptMalformed => "receipt_malformed",
            RejectCode::ReceiptMismatch => "receipt_mismatch",
            RejectCode::ContentHash => "content_hash",
            RejectCode::AttestationMissing => "attestation_missing",
            RejectCode::AttestationInvalid => "attestation_invalid",
            RejectCode::EnclaveUnregistered => "enclave_unregistered",
            RejectCode::EnclaveDisabled => "enclave_disabled",
            RejectCode::PaymentInvalid => "payment_invalid",
            RejectCode::PaymentNotCovering => "payment_not_covering",
            RejectCode::PaymentSpent => "payment_spent",
            RejectCode::ProofMissing => "proof_missing",
            RejectCode::ProofInvalid => "proof_invalid",
            RejectCode::Unclassified => "unclassified",
        }
    }

    /// A rejection with this code and `detail`.
    pub fn with(self, detail: impl Into<String>) -> Rejection {
        Rejection {
            code: self,
            detail: detail.into(),
        }
    }

    pub(crate) fn unclassified() -> Self {
        RejectCode::Unclassified
    }

    pub(crate) fn is_unclassified(&self) -> bool {
        *self == RejectCode::Unclassified
    }
}

impl std::fmt::Display for RejectCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a verifier refused a record: the [`RejectCode`] validators agree on, and a detail in
/// words for people (not compared between validators). Displays as `code: detail`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Rejection {
    pub code: RejectCode,
    pub detail: String,
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.detail)
    }
}

impl std::error::Error for Rejection {}

/// Re-verifies a record's evidence against the chain state it may see (an [`EvidenceView`]),
/// deterministically: every validator must reach the same verdict and, on refusal, the same
/// [`RejectCode`]. Attestation and proof verifiers implement it too and run after the
/// signature check.
pub trait EvidenceVerifier: Send + Sync {
    fn verify(&self, record: &RunRecord, view: &EvidenceView<'_>) -> Result<(), Rejection>;
}

/// Several verifiers in order; the first refusal wins.
pub struct AllOf(pub Vec<Box<dyn EvidenceVerifier>>);

impl EvidenceVerifier for AllOf {
    fn verify(&self, record: &RunRecord, view: &EvidenceView<'_>) -> Result<(), Rejection> {
        self.0.iter().try_for_each(|v| v.verify(record, view))
    }
}

/// Today's checks: the gateway is registered, its signature covers the receipt digest, and
/// every hash the mode lets validators see matches (receipt digest, run id, input and output
/// hashes).
pub struct SignatureAndHashes;

impl EvidenceVerifier for SignatureAndHashes {
    fn verify(&self, r: &RunRecord, view: &EvidenceView<'_>) -> Result<(), Rejection> {
        use RejectCode::*;
        if !view.gateway_registered(&r.gateway) {
            return Err(GatewayUnregistered.with(format!(
                "gateway {} is not registered on this chain",
                r.gateway
            )));
        }
        keys::verify(
            &r.gateway,
            &signature_message(&r.receipt_digest),
            &r.signature,
        )
        .map_err(|e| {
            GatewaySignature.with(format!("gateway signature over the receipt digest: {e}"))
        })?;
        match (r.mode, &r.receipt, &r.content) {
            (SettlementMode::Private, None, None) => return Ok(()),
            (SettlementMode::Private, _, _) => {
                return Err(RecordShape
                    .with("a private record carries only hashes, but this one carries content"))
            }
            (_, None, _) => {
                return Err(RecordShape.with(format!(
                    "a {} record must carry its receipt",
                    r.mode.as_str()
                )))
            }
            (SettlementMode::Batch, _, Some(_)) => {
                return Err(RecordShape.with("a batch record must not carry input and output"))
            }
            (SettlementMode::Individual, _, None) => {
                return Err(RecordShape.with("an individual record must carry its input and output"))
            }
            _ => {}
        }
        let raw = r.receipt.as_ref().expect("matched above");
        let digest = receipt_digest(raw);
        if digest != r.receipt_digest {
            return Err(ReceiptDigest.with(format!(
                "receipt digest is {digest}, the record says {}",
                r.receipt_digest
            )));
        }
        let receipt = &parse_receipt(raw)?;
        if receipt.run_id != r.run_id {
            return Err(ReceiptMismatch.with(format!(
                "receipt is for run {}, the record for {}",
                receipt.run_id, r.run_id
            )));
        }
        // The record's signature was verified over this very digest above; the receipt must
        // carry the same signer and signature (no second verification needed).
        let exec = execution_of(receipt)?;
        if exec.signer != r.gateway {
            return Err(ReceiptMismatch.with(format!(
                "receipt is signed by {}, the record names {}",
                exec.signer, r.gateway
            )));
        }
        if exec.signature.as_deref() != Some(r.signature.as_str()) {
            return Err(
                ReceiptMismatch.with("the receipt's signature is not the record's signature")
            );
        }
        if receipt.settlement_mode.unwrap_or_default() != r.mode {
            return Err(ReceiptMismatch.with(format!(
                "receipt says settlement mode {}, the record says {}",
                receipt.settlement_mode.unwrap_or_default().as_str(),
                r.mode.as_str()
            )));
        }
        if let Some(content) = &r.content {
            for (name, value, want) in [
                ("input", &content.input, exec.input_hash),
                ("output", &content.output, exec.output_hash),
            ] {
                let tensors = tensor::parse_input(value, &format!("content.{name}"))
                    .map_err(|e| ContentHash.with(e.to_string()))?;
                let got = tensor::hash_tensors(&tensors);
                if got != want {
                    return Err(ContentHash.with(format!(
                        "content.{name} hashes to {got}, the receipt's {name}_hash is {want}"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// The attestation box of a TEE run, re-verified before it settles: the document chains to a
/// root this chain trusts (AWS Nitro, or the genesis's dev root) at its own timestamp and
/// binds the enclave key the box names; that key signed this run's artifact and hashes
/// ([`haca_core::receipt::tee_run_message`]); and the enclave is registered and enabled in
/// the chain's TEE registry (so revoking its PCR set stops its runs from settling). A run
/// without an attestation box passes; a `tee`-mode run without one is refused. Private
/// records carry no receipt and are left to [`SignatureAndHashes`].
///
/// Heartbeat freshness is not checked here: whether an enclave was active is a question about
/// the run's time, which the chain only knows from the gateway's word.
#[derive(Default)]
pub struct TeeEvidence {
    /// Verified documents by digest (runs share one document for minutes; a document's
    /// verdict does not change, as it is verified at its own time against fixed roots).
    documents: std::sync::Mutex<
        std::collections::HashMap<Digest, Result<haca_tee::registry::EnclaveFacts, String>>,
    >,
}

/// Parses a record's receipt; refused as [`RejectCode::ReceiptMalformed`].
/// The receipt's execution box, which every evidence check starts from.
fn execution_of(
    receipt: &haca_core::Receipt,
) -> Result<&haca_core::receipt::ExecutionEvidence, Rejection> {
    receipt
        .boxes
        .execution
        .evidence
        .as_ref()
        .ok_or_else(|| RejectCode::ReceiptMalformed.with("receipt has no execution box"))
}

fn parse_receipt(raw: &Value) -> Result<haca_core::Receipt, Rejection> {
    ParsedReceipt::typed(raw)
        .map_err(|e| RejectCode::ReceiptMalformed.with(format!("receipt: {e}")))
}

/// Documents [`TeeEvidence`] remembers before it starts over.
const TEE_DOCUMENT_CACHE: usize = 1024;

impl TeeEvidence {
    fn facts(
        &self,
        digest: Digest,
        document_b64: &str,
        view: &EvidenceView<'_>,
    ) -> Result<haca_tee::registry::EnclaveFacts, String> {
        if let Some(v) = self.documents.lock().expect("cache lock").get(&digest) {
            return v.clone();
        }
        let v = view.verify_enclave_document(document_b64).and_then(|f| {
            if f.document_digest == digest {
                Ok(f)
            } else {
                Err(format!(
                    "the document hashes to {}, the box says {digest}",
                    f.document_digest
                ))
            }
        });
        let mut cache = self.documents.lock().expect("cache lock");
        if cache.len() >= TEE_DOCUMENT_CACHE {
            cache.clear();
        }
        cache.insert(digest, v.clone());
        v
    }
}

impl EvidenceVerifier for TeeEvidence {
    fn verify(&self, r: &RunRecord, view: &EvidenceView<'_>) -> Result<(), Rejection> {
        use RejectCode::*;
        let Some(raw) = &r.receipt else {
            return Ok(());
        };
        // Most runs are not TEE runs: skip parsing the receipt a second time (SignatureAndHashes
        // has parsed it already) when it has no attestation and does not claim mode tee.
        let boxes = &raw["boxes"];
        if boxes["attestation"]["evidence"].is_null()
            && boxes["execution"]["evidence"]["mode"] != "tee"
        {
            return Ok(());
        }
        let receipt = parse_receipt(raw)?;
        let b = &receipt.boxes;
        let exec = execution_of(&receipt)?;
        let Some(att) = &b.attestation.evidence else {
            if exec.mode == haca_core::receipt::ExecMode::Tee {
                return Err(AttestationMissing.with("a tee-mode run without an attestation box"));
            }
            return Ok(());
        };
        let e = |code: RejectCode, m: String| code.with(format!("attestation: {m}"));
        let document_b64 = att.document_b64.as_deref().ok_or_else(|| {
            e(
                AttestationMissing,
                "the box does not carry its document".into(),
            )
        })?;
        let facts = self
            .facts(att.document_digest, document_b64, view)
            .map_err(|m| e(AttestationInvalid, m))?;
        let key = att
            .enclave_key
            .ok_or_else(|| e(AttestationMissing, "the box names no enclave key".into()))?;
        haca_tee::registry::check_binding(&facts, &key).map_err(|m| {
            e(
                AttestationInvalid,
                format!("the document does not bind enclave key {key}: {m}"),
            )
        })?;
        let artifact = b
            .artifact
            .evidence
            .as_ref()
            .ok_or_else(|| ReceiptMalformed.with("receipt has no artifact box"))?;
        let sig = att.run_signature.as_deref().ok_or_else(|| {
            e(
                AttestationMissing,
                "the box carries no run signature".into(),
            )
        })?;
        let msg = haca_core::receipt::tee_run_message(
            &artifact.blob_id,
            &exec.request_hash,
            &exec.input_hash,
            &exec.output_hash,
            exec.finished_at,
        );
        keys::verify(&key, &msg, sig).map_err(|m| {
            e(
                AttestationInvalid,
                format!(
                    "the enclave's run signature over blob {} and this run's hashes: {m}",
                    artifact.blob_id
                ),
            )
        })?;
        let tee_id = haca_tee::registry::tee_id_of(&key);
        match view.enclave(&tee_id) {
            None => Err(e(
                EnclaveUnregistered,
                format!("enclave {tee_id} (key {key}) is not registered on this chain"),
            )),
            Some(en) if !en.enabled => Err(e(
                EnclaveDisabled,
                format!(
                    "enclave {tee_id} is disabled ({})",
                    en.disabled_reason
                        .as_deref()
                        .unwrap_or("no reason recorded")
                ),
            )),
            Some(_) => Ok(()),
        }
    }
}

/// A record's x402 payment, as the chain keys it: the authorization `(asset, payer,
/// nonce)`, lowercase, which can settle once. Only `exact` and `upto` payments that carry the payer's
/// signed authorization, in records that carry their receipt (not `private` ones).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordPayment {
    /// SHA-256 of `asset|payer|nonce`.
    pub key: Digest,
    pub payer: String,
    pub nonce: String,
}

impl RunRecord {
    /// The `exact` payment this record's receipt carries, if any (see [`RecordPayment`]).
    pub fn payment(&self) -> Option<RecordPayment> {
        let p = &self.receipt.as_ref()?["boxes"]["payment"]["evidence"];
        if !(p["scheme"] == "exact" || p["scheme"] == "upto") || p["authorization"].is_null() {
            return None;
        }
        let field = |k: &str| p[k].as_str().map(str::to_ascii_lowercase);
        let (asset, payer, nonce) = (field("asset")?, field("payer")?, field("nonce")?);
        Some(RecordPayment {
            key: haca_core::sha256(format!("{asset}|{payer}|{nonce}").as_bytes()),
            payer,
            nonce,
        })
    }
}

/// Checks the x402 payment a record's receipt carries: the payer's signature recovers
/// (EIP-712), and the payment covers this run's request and artifact. Whether its
/// authorization was already settled is the chain state's rule
/// ([`crate::state::ChainState::propose`], [`RejectCode::PaymentSpent`]).
pub struct PaymentAuthorizations;

impl EvidenceVerifier for PaymentAuthorizations {
    fn verify(&self, r: &RunRecord, _: &EvidenceView<'_>) -> Result<(), Rejection> {
        if r.payment().is_none() {
            return Ok(());
        }
        // SignatureAndHashes has checked the node's signature over this receipt already.
        let raw = r.receipt.as_ref().expect("a payment comes from a receipt");
        let receipt = parse_receipt(raw)?;
        let p = receipt
            .boxes
            .payment
            .evidence
            .as_ref()
            .expect("a payment comes from the payment box");
        haca_core::claims::payment_covers(&receipt, p)
            .map_err(|e| RejectCode::PaymentNotCovering.with(format!("payment: {e}")))?;
        haca_pay::receipt_check::PAYMENT_VERIFIER
            .verify(p)
            .map(|_| ())
            .map_err(|e| RejectCode::PaymentInvalid.with(format!("payment: {e}")))
    }
}

/// A `zkml` run's proof: present, verifying against the key it carries, about the run's input
/// and output. A proof box on a run of another mode is checked the same way when it carries a
/// proof. A private record shows no receipt and is not checked here (a gateway does not
/// settle zkml runs privately: the proof publishes their input and output).
pub struct ProofEvidence;

impl EvidenceVerifier for ProofEvidence {
    fn verify(&self, r: &RunRecord, _view: &EvidenceView<'_>) -> Result<(), Rejection> {
        use RejectCode::*;
        let Some(raw) = &r.receipt else {
            return Ok(());
        };
        let boxes = &raw["boxes"];
        let zkml = boxes["execution"]["evidence"]["mode"] == "zkml";
        if !zkml && boxes["proof"]["evidence"]["proof_b64"].is_null() {
            return Ok(());
        }
        let receipt = parse_receipt(raw)?;
        let b = &receipt.boxes;
        let exec = execution_of(&receipt)?;
        let proof = b
            .proof
            .evidence
            .as_ref()
            .filter(|p| p.proof_b64.is_some())
            .ok_or_else(|| {
                ProofMissing.with("proof: a zkml run settles with its proof attached")
            })?;
        haca_zk::receipt_check::check_evidence(proof, &exec.input_hash, &exec.output_hash)
            .map(|_| ())
            .map_err(|e| ProofInvalid.with(format!("proof: {e}")))
    }
}

/// What every validator checks before a record settles: [`SignatureAndHashes`], then
/// [`TeeEvidence`], then [`ProofEvidence`], then [`PaymentAuthorizations`].
pub fn standard_evidence() -> Box<dyn EvidenceVerifier> {
    Box::new(AllOf(vec![
        Box::new(SignatureAndHashes),
        Box::new(TeeEvidence::default()),
        Box::new(ProofEvidence),
        Box::new(PaymentAuthorizations),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reject_codes_are_snake_case_in_json_and_display() {
        use RejectCode::*;
        for (code, name) in [
            (GatewayUnregistered, "gateway_unregistered"),
            (GatewaySignature, "gateway_signature"),
            (RecordShape, "record_shape"),
            (ReceiptDigest, "receipt_digest"),
            (ReceiptMalformed, "receipt_malformed"),
            (ReceiptMismatch, "receipt_mismatch"),
            (ContentHash, "content_hash"),
            (AttestationMissing, "attestation_missing"),
            (AttestationInvalid, "attestation_invalid"),
            (EnclaveUnregistered, "enclave_unregistered"),
            (EnclaveDisabled, "enclave_disabled"),
            (PaymentInvalid, "payment_invalid"),
            (PaymentNotCovering, "payment_not_covering"),
            (PaymentSpent, "payment_spent"),
            (ProofMissing, "proof_missing"),
            (ProofInvalid, "proof_invalid"),
            (Unclassified, "unclassified"),
        ] {
            assert_eq!(serde_json::to_value(code).unwrap(), name);
            assert_eq!(code.as_str(), name);
            assert_eq!(
                serde_json::from_value::<RejectCode>(name.into()).unwrap(),
                code
            );
        }
        let r = PaymentSpent.with("payment: nonce 7 already settled");
        assert_eq!(
            r.to_string(),
            "payment_spent: payment: nonce 7 already settled"
        );
    }
}
