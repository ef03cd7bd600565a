//! Executors: ONNX models through tract (pure Rust), with a model cache bounded by bytes;
//! LLMs through llama.cpp (a local GGUF) or upstream OpenAI-compatible providers; sentence
//! embeddings (all-MiniLM-L6-v2) through candle, in [`embed`].
//!
//! Architecture invariant: executors compute; they neither sign nor store. The caller turns
//! what they return into a receipt.

mod cache;
mod check;
pub mod embed;
pub mod image;
pub mod llm;
mod onnx;

pub use cache::ModelCache;
pub use check::ModelCheck;
pub use onnx::{InputSpec, OnnxCheck, OnnxModel, RUNTIME};

/// Execution failures; `Input` names the request field that was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecError {
    #[error("model file is not a usable ONNX model: {0}")]
    Load(String),
    #[error("{field}: {reason}")]
    Input { field: String, reason: String },
    #[error("model failed while running: {0}")]
    Run(String),
}
