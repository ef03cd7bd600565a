//! haca-zk: the proofs of zkml mode, for ONNX inference. They prove correct execution of a
//! public model on a public input and output; they hide nothing (no zero-knowledge blinding).
//!
//! A model file becomes a chain of quantized linear layers ([`model`], [`quant`]); a run is proved
//! with sumchecks over the Goldilocks field and a Ligero-style hash commitment ([`protocol`]).
//! There is no trusted setup: the per-model "setup" is a Merkle commitment to the quantized
//! weights, which anyone can recompute from the model's bytes.
//!
//! ```
//! # fn main() -> Result<(), haca_zk::ZkError> {
//! // A one-layer model: y = 2·x0 - x1 + 0.5.
//! let net = haca_zk::model::FloatNet::from_layers(vec![2], vec![
//!     haca_zk::model::FloatLayer::gemm(2, 1, vec![2.0, -1.0], vec![0.5], false),
//! ])?;
//! let pk = haca_zk::ProvingKey::new(haca_zk::quant::quantize(&net, 1.0)?);
//! let (output, proof) = pk.prove(&[0.25, 0.5])?;
//! assert!((output[0] - 0.5).abs() < 1e-3);
//! haca_zk::verify(&pk.vk, &proof)?;
//! let bytes = proof.to_bytes();
//! haca_zk::verify(&pk.vk, &haca_zk::Proof::from_bytes(&bytes)?)?;
//! # Ok(()) }
//! ```

pub mod field;
pub mod ligero;
pub mod model;
pub mod poly;
pub mod protocol;
pub mod quant;
pub mod receipt_check;
pub mod transcript;
mod wire;

pub use protocol::{verify, Proof, ProvingKey, VerifyingKey, SYSTEM};

/// Operators a zkml model may use.
pub const SUPPORTED_OPERATORS: &str =
    "Gemm, MatMul (+ Add), Conv, Relu, Flatten, Reshape, Identity, Dropout";

#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum ZkError {
    /// The model file cannot be proved as it is.
    #[error("{0}")]
    Model(String),
    #[error("operator {op} (node {node}) is not supported in zkml mode; supported: {SUPPORTED_OPERATORS}")]
    UnsupportedOperator { op: String, node: String },
    /// The input cannot be proved with this model's quantization.
    #[error("{0}")]
    Input(String),
    /// A check of the proof failed: `field` names the part of the proof, `reason` says why.
    #[error("{field}: {reason}")]
    Proof { field: String, reason: String },
    #[error("proof: not a readable proof ({0})")]
    Malformed(String),
}

impl ZkError {
    pub fn proof(field: impl Into<String>, reason: impl Into<String>) -> ZkError {
        ZkError::Proof {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl Proof {
    /// The proof as CBOR bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        ciborium::into_writer(self, &mut out).expect("a proof serializes");
        out
    }

    /// Reads a proof; only its canonical encoding (the bytes [`Proof::to_bytes`] writes) is
    /// accepted, so one proof has one digest.
    pub fn from_bytes(bytes: &[u8]) -> Result<Proof, ZkError> {
        let p: Proof =
            ciborium::from_reader(bytes).map_err(|e| ZkError::Malformed(e.to_string()))?;
        if p.to_bytes() != bytes {
            return Err(ZkError::Malformed(
                "not in canonical form (another encoding of a proof, or trailing bytes)".into(),
            ));
        }
        Ok(p)
    }
}

/// Reads an ONNX model and prepares it for proving, for inputs with |x| ≤ `input_bound`.
pub fn setup(onnx: &[u8], input_bound: f32) -> Result<ProvingKey, ZkError> {
    let net = model::FloatNet::from_onnx(onnx)?;
    Ok(ProvingKey::new(quant::quantize(&net, input_bound)?))
}

/// The input bound models are calibrated for unless their owner says otherwise: inputs scaled to
/// [-1, 1], as haca's example models take.
pub const DEFAULT_INPUT_BOUND: f32 = 1.0;

impl VerifyingKey {
    /// The float input bound this key was made for.
    pub fn input_bound(&self) -> f32 {
        (self.net.input_bound as f64 / (1u64 << self.net.layers[0].input_scale) as f64) as f32
    }

    /// Checks that this key is the one the model file `onnx` gives: same quantization, same
    /// weight commitment. This is what ties a proof to a blob id.
    pub fn check_model(&self, onnx: &[u8]) -> Result<(), ZkError> {
        let pk = setup(onnx, self.input_bound())?;
        if pk.vk.digest() != self.digest() {
            return Err(ZkError::proof(
                "verifying_key",
                "is not the key this model file gives (other weights, shape or quantization)",
            ));
        }
        Ok(())
    }
}
