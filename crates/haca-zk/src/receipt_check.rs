//! The receipt's proof box: what a node writes into it, and the checker behind the
//! `execution.correct` and proof-based `artifact.bound` claims.

use crate::protocol::{verify, Proof, VerifyingKey};
use crate::quant::NetSpec;
use base64::Engine as _;
use haca_core::claims::{ClaimState, ProofVerifier};
use haca_core::receipt::{ExecutionEvidence, ProofEvidence};
use haca_core::tensor::{hash_tensors, Tensor, TensorData, TensorMap};
use haca_core::{sha256, BlobId, Digest};
use std::collections::BTreeMap;

impl NetSpec {
    fn tensors(name: &str, shape: &[usize], data: Vec<f32>) -> TensorMap {
        let t = Tensor {
            shape: shape.to_vec(),
            data: TensorData::F32(data),
            dtype_implied: false,
        };
        TensorMap::from([(name.to_string(), t)])
    }

    /// The proof's public input as the tensors the run's `input_hash` names.
    pub fn input_tensors(&self, x: &[i64]) -> TensorMap {
        Self::tensors(
            &self.input_name,
            &self.input_shape,
            self.dequantize_input(x),
        )
    }

    /// The proof's public output as the tensors the run's `output_hash` names.
    pub fn output_tensors(&self, y: &[i64]) -> TensorMap {
        Self::tensors(
            &self.output_name,
            &self.output_shape,
            self.dequantize_output(y),
        )
    }
}

fn digest(d: [u8; 32]) -> Digest {
    Digest(d)
}

/// The box at the answer: the key and the statement are named, the proof is on its way.
pub fn claimed_evidence(
    vk: &VerifyingKey,
    input_hash: Digest,
    output_hash: Digest,
) -> ProofEvidence {
    ProofEvidence {
        system: vk.system.clone(),
        verifying_key_digest: digest(vk.digest()),
        model_commitment: digest(vk.weights.root),
        input_hash,
        output_hash,
        proof_digest: None,
        verifying_key: None,
        proof_b64: None,
        prove_ms: None,
    }
}

/// The box once the proof is made: the proof and its key are attached.
pub fn proved_evidence(vk: &VerifyingKey, proof: &Proof, prove_ms: u64) -> ProofEvidence {
    let bytes = proof.to_bytes();
    ProofEvidence {
        system: vk.system.clone(),
        verifying_key_digest: digest(vk.digest()),
        model_commitment: digest(vk.weights.root),
        input_hash: hash_tensors(&vk.net.input_tensors(&proof.input)),
        output_hash: hash_tensors(&vk.net.output_tensors(&proof.output)),
        proof_digest: Some(sha256(&bytes)),
        verifying_key: Some(serde_json::to_value(vk).expect("a key serializes")),
        proof_b64: Some(base64::engine::general_purpose::STANDARD.encode(&bytes)),
        prove_ms: Some(prove_ms),
    }
}

/// The key and proof a box carries, checked to be the ones it names.
pub fn read_evidence(p: &ProofEvidence) -> Result<(VerifyingKey, Proof), String> {
    let b64 = p
        .proof_b64
        .as_deref()
        .ok_or("proof.proof_b64: the proof is not attached")?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| format!("proof.proof_b64: not base64 ({e})"))?;
    if p.proof_digest != Some(sha256(&bytes)) {
        return Err("proof.proof_digest: is not the digest of the attached proof".into());
    }
    let vk_json = p
        .verifying_key
        .as_ref()
        .ok_or("proof.verifying_key: the key is not attached")?;
    let vk: VerifyingKey = serde_json::from_value(vk_json.clone())
        .map_err(|e| format!("proof.verifying_key: not a verifying key ({e})"))?;
    if digest(vk.digest()) != p.verifying_key_digest {
        return Err("proof.verifying_key_digest: is not the digest of the attached key".into());
    }
    if digest(vk.weights.root) != p.model_commitment {
        return Err("proof.model_commitment: is not the attached key's weight commitment".into());
    }
    let proof = Proof::from_bytes(&bytes).map_err(|e| e.to_string())?;
    Ok((vk, proof))
}

/// Verifies a proof box and that its statement is the run's input and output hashes.
pub fn check_evidence(
    p: &ProofEvidence,
    input_hash: &Digest,
    output_hash: &Digest,
) -> Result<String, String> {
    let (vk, proof) = read_evidence(p)?;
    verify(&vk, &proof).map_err(|e| format!("the proof does not verify: {e}"))?;
    let (i, o) = (
        hash_tensors(&vk.net.input_tensors(&proof.input)),
        hash_tensors(&vk.net.output_tensors(&proof.output)),
    );
    if i != p.input_hash || i != *input_hash {
        return Err(format!(
            "the proof's public input hashes to {i}, the run's input_hash is {input_hash}"
        ));
    }
    if o != p.output_hash || o != *output_hash {
        return Err(format!(
            "the proof's public output hashes to {o}, the run's output_hash is {output_hash}"
        ));
    }
    Ok(format!(
        "{} proof verified against key {} (model commitment {})",
        vk.system, p.verifying_key_digest, p.model_commitment
    ))
}

/// The proof checker for receipts. Holding a model's bytes (by blob id) lets it also check that
/// a proof's key is that model's.
#[derive(Debug, Default)]
pub struct ZkVerifier {
    pub models: BTreeMap<BlobId, Vec<u8>>,
}

/// A checker holding no model file: `execution.correct` from the receipt alone; a proof-based
/// `artifact.bound` stays unchecked.
pub static ZK_VERIFIER: ZkVerifier = ZkVerifier {
    models: BTreeMap::new(),
};

impl ProofVerifier for ZkVerifier {
    fn verify(
        &self,
        proof: &ProofEvidence,
        execution: &ExecutionEvidence,
    ) -> Result<String, String> {
        check_evidence(proof, &execution.input_hash, &execution.output_hash)
    }

    fn bound(
        &self,
        proof: &ProofEvidence,
        blob_id: &BlobId,
    ) -> Result<String, (ClaimState, String)> {
        let Some(bytes) = self.models.get(blob_id) else {
            return Err((
                ClaimState::Unchecked,
                format!("the model file of blob {blob_id} was not given (--model FILE)"),
            ));
        };
        let (vk, _) = read_evidence(proof).map_err(|e| (ClaimState::Fails, e))?;
        vk.check_model(bytes)
            .map_err(|e| (ClaimState::Fails, e.to_string()))?;
        Ok(format!(
            "the proof's key is the one blob {blob_id} gives (weights committed to {})",
            proof.model_commitment
        ))
    }
}
