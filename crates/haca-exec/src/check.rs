//! The Model Hub's gate for every format haca runs: a GGUF (the local LLM engine) by its magic
//! bytes, anything else as ONNX.

use crate::llm::GgufCheck;
use crate::OnnxCheck;
use haca_hub::ArtifactCheck;
use std::io::Read;
use std::path::Path;

/// Accepts an artifact only if the engine for its format can load it.
pub struct ModelCheck;

fn is_gguf(head: &[u8]) -> bool {
    head.starts_with(b"GGUF")
}

impl ArtifactCheck for ModelCheck {
    fn check(&self, bytes: &[u8]) -> Result<String, String> {
        if is_gguf(bytes) {
            GgufCheck.check(bytes)
        } else {
            OnnxCheck.check(bytes)
        }
    }

    fn check_file(&self, path: &Path) -> Result<String, String> {
        let mut head = [0u8; 4];
        let n = std::fs::File::open(path)
            .and_then(|mut f| f.read(&mut head))
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        if is_gguf(&head[..n]) {
            GgufCheck.check_file(path)
        } else {
            OnnxCheck.check_file(path)
        }
    }
}
