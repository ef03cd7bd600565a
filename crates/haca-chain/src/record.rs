//! Run records, what a gateway submits for settlement, and the one trait through which
//! validators re-verify their evidence without re-running the model.

use crate::state::ChainState;
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

/// Re-verifies a record's evidence against chain state, deterministically: every validator
/// must reach the same verdict and the same reason. Attestation and proof verifiers
/// implement it too and run after the signature check.
pub trait EvidenceVerifier: Send + Sync {
    fn verify(&self, record: &RunRecord, state: &ChainState) -> Result<(), String>;
}

/// Several verifiers in order; the first refusal wins.
pub struct AllOf(pub Vec<Box<dyn EvidenceVerifier>>);

impl EvidenceVerifier for AllOf {
    fn verify(&self, record: &RunRecord, state: &ChainState) -> Result<(), String> {
        self.0.iter().try_for_each(|v| v.verify(record, state))
    }
}

/// Today's checks: the gateway is registered, its signature covers the receipt digest, and
/// every hash the mode lets validators see matches (receipt digest, run id, input and output
/// hashes).
pub struct SignatureAndHashes;

impl EvidenceVerifier for SignatureAndHashes {
    fn verify(&self, r: &RunRecord, state: &ChainState) -> Result<(), String> {
        if !state.gateways.contains_key(&r.gateway) {
            return Err(format!(
                "gateway {} is not registered on this chain",
                r.gateway
            ));
        }
        keys::verify(
            &r.gateway,
            &signature_message(&r.receipt_digest),
            &r.signature,
        )
        .map_err(|e| format!("gateway signature over the receipt digest: {e}"))?;
        match (r.mode, &r.receipt, &r.content) {
            (SettlementMode::Private, None, None) => return Ok(()),
            (SettlementMode::Private, _, _) => {
                return Err(
                    "a private record carries only hashes, but this one carries content".into(),
                )
            }
            (_, None, _) => {
                return Err(format!(
                    "a {} record must carry its receipt",
                    r.mode.as_str()
                ))
            }
            (SettlementMode::Batch, _, Some(_)) => {
                return Err("a batch record must not carry input and output".into())
            }
            (SettlementMode::Individual, _, None) => {
                return Err("an individual record must carry its input and output".into())
            }
            _ => {}
        }
        let raw = r.receipt.as_ref().expect("matched above");
        let digest = receipt_digest(raw);
        if digest != r.receipt_digest {
            return Err(format!(
                "receipt digest is {digest}, the record says {}",
                r.receipt_digest
            ));
        }
        let receipt = &ParsedReceipt::typed(raw).map_err(|e| format!("receipt: {e}"))?;
        if receipt.run_id != r.run_id {
            return Err(format!(
                "receipt is for run {}, the record for {}",
                receipt.run_id, r.run_id
            ));
        }
        // The record's signature was verified over this very digest above; the receipt must
        // carry the same signer and signature (no second verification needed).
        let exec = receipt
            .boxes
            .execution
            .evidence
            .as_ref()
            .ok_or("receipt has no execution box")?;
        if exec.signer != r.gateway {
            return Err(format!(
                "receipt is signed by {}, the record names {}",
                exec.signer, r.gateway
            ));
        }
        if exec.signature.as_deref() != Some(r.signature.as_str()) {
            return Err("the receipt's signature is not the record's signature".into());
        }
        if receipt.settlement_mode.unwrap_or_default() != r.mode {
            return Err(format!(
                "receipt says settlement mode {}, the record says {}",
                receipt.settlement_mode.unwrap_or_default().as_str(),
                r.mode.as_str()
            ));
        }
        if let Some(content) = &r.content {
            for (name, value, want) in [
                ("input", &content.input, exec.input_hash),
                ("output", &content.output, exec.output_hash),
            ] {
                let tensors = tensor::parse_input(value, &format!("content.{name}"))
                    .map_err(|e| e.to_string())?;
                let got = tensor::hash_tensors(&tensors);
                if got != want {
                    return Err(format!(
                        "content.{name} hashes to {got}, the receipt's {name}_hash is {want}"
                    ));
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

/// Documents [`TeeEvidence`] remembers before it starts over.
const TEE_DOCUMENT_CACHE: usize = 1024;

impl TeeEvidence {
    fn facts(
        &self,
        digest: Digest,
        document_b64: &str,
        state: &ChainState,
    ) -> Result<haca_tee::registry::EnclaveFacts, String> {
        if let Some(v) = self.documents.lock().expect("cache lock").get(&digest) {
            return v.clone();
        }
        let v = state.verify_enclave_document(document_b64).and_then(|f| {
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
    fn verify(&self, r: &RunRecord, state: &ChainState) -> Result<(), String> {
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
        let receipt = ParsedReceipt::typed(raw).map_err(|e| format!("receipt: {e}"))?;
        let b = &receipt.boxes;
        let exec = b
            .execution
            .evidence
            .as_ref()
            .ok_or("receipt has no execution box")?;
        let Some(att) = &b.attestation.evidence else {
            if exec.mode == haca_core::receipt::ExecMode::Tee {
                return Err("a tee-mode run without an attestation box".into());
            }
            return Ok(());
        };
        let e = |m: String| format!("attestation: {m}");
        let document_b64 = att
            .document_b64
            .as_deref()
            .ok_or_else(|| e("the box does not carry its document".into()))?;
        let facts = self
            .facts(att.document_digest, document_b64, state)
            .map_err(e)?;
        let key = att
            .enclave_key
            .ok_or_else(|| e("the box names no enclave key".into()))?;
        haca_tee::registry::check_binding(&facts, &key)
            .map_err(|m| e(format!("the document does not bind enclave key {key}: {m}")))?;
        let artifact = b
            .artifact
            .evidence
            .as_ref()
            .ok_or("receipt has no artifact box")?;
        let sig = att
            .run_signature
            .as_deref()
            .ok_or_else(|| e("the box carries no run signature".into()))?;
        let msg = haca_core::receipt::tee_run_message(
            &artifact.blob_id,
            &exec.request_hash,
            &exec.input_hash,
            &exec.output_hash,
            exec.finished_at,
        );
        keys::verify(&key, &msg, sig).map_err(|m| {
            e(format!(
                "the enclave's run signature over blob {} and this run's hashes: {m}",
                artifact.blob_id
            ))
        })?;
        let tee_id = haca_tee::registry::tee_id_of(&key);
        match state.tee.enclave(&tee_id) {
            None => Err(e(format!(
                "enclave {tee_id} (key {key}) is not registered on this chain"
            ))),
            Some(en) if !en.enabled => Err(e(format!(
                "enclave {tee_id} is disabled ({})",
                en.disabled_reason
                    .as_deref()
                    .unwrap_or("no reason recorded")
            ))),
            Some(_) => Ok(()),
        }
    }
}

/// A record's x402 payment, as the chain keys it: the authorization `(asset, payer,
/// nonce)`, lowercase, which can settle once. Only `exact` payments that carry the payer's
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
        if p["scheme"] != "exact" || p["authorization"].is_null() {
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
/// authorization was already settled is the chain state's rule ([`ChainState::propose`]).
pub struct PaymentAuthorizations;

impl EvidenceVerifier for PaymentAuthorizations {
    fn verify(&self, r: &RunRecord, _: &ChainState) -> Result<(), String> {
        if r.payment().is_none() {
            return Ok(());
        }
        // SignatureAndHashes has checked the node's signature over this receipt already.
        let raw = r.receipt.as_ref().expect("a payment comes from a receipt");
        let receipt = ParsedReceipt::typed(raw).map_err(|e| format!("receipt: {e}"))?;
        let p = receipt
            .boxes
            .payment
            .evidence
            .as_ref()
            .expect("a payment comes from the payment box");
        haca_core::claims::payment_covers(&receipt, p).map_err(|e| format!("payment: {e}"))?;
        haca_pay::receipt_check::PAYMENT_VERIFIER
            .verify(p)
            .map(|_| ())
            .map_err(|e| format!("payment: {e}"))
    }
}

/// What every validator checks before a record settles: [`SignatureAndHashes`], then
/// [`TeeEvidence`], then [`PaymentAuthorizations`].
pub fn standard_evidence() -> Box<dyn EvidenceVerifier> {
    Box::new(AllOf(vec![
        Box::new(SignatureAndHashes),
        Box::new(TeeEvidence::default()),
        Box::new(PaymentAuthorizations),
    ]))
}
