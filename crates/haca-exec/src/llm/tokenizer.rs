//! A SentencePiece-BPE tokenizer rebuilt from a GGUF file's `tokenizer.ggml.*` metadata.
//!
//! Gemma's GGUF ships no `tokenizer.json`: only the pieces, their scores and their types
//! (`tokenizer.ggml.model = "llama"`, SentencePiece BPE). SentencePiece BPE merges, at each
//! step, the adjacent pair whose merged piece has the highest score; a BPE model whose merge
//! ranks follow the merged pieces' scores encodes the same way. So every normal piece that
//! splits into two pieces of the vocabulary yields a merge, ranked by its score. Control pieces
//! (`<start_of_turn>`, `<eos>`) become special tokens, user-defined pieces (runs of newlines
//! or spaces, HTML tags) are matched whole before the model, and unknown characters fall
//! back to the `<0xNN>` byte pieces.

use candle_core::quantized::gguf_file::{Content, Value};
use std::collections::HashMap;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::replace::Replace;
use tokenizers::{AddedToken, DecoderWrapper, NormalizerWrapper, Tokenizer};

/// SentencePiece piece types as GGUF stores them.
const TYPE_NORMAL: i32 = 1;
const TYPE_UNKNOWN: i32 = 2;
const TYPE_CONTROL: i32 = 3;
const TYPE_USER_DEFINED: i32 = 4;
const TYPE_BYTE: i32 = 6;

/// The vocabulary facts the generator needs besides the tokenizer itself.
#[derive(Debug, Clone)]
pub struct Vocab {
    pub bos: u32,
    pub eos: u32,
    /// Control pieces (`<pad>`, `<start_of_turn>`, `<unusedN>`, image markers): the
    /// generator never samples them; the end-of-turn ones end the answer instead.
    pub control: Vec<u32>,
    pub size: usize,
}

/// Builds the tokenizer; errors name the metadata key that is missing or malformed.
pub fn from_gguf(content: &Content) -> Result<(Tokenizer, Vocab), String> {
    let md = &content.metadata;
    let get = |key: &str| md.get(key).ok_or_else(|| format!("{key}: missing"));
    let model = get("tokenizer.ggml.model")?
        .to_string()
        .map_err(|e| format!("tokenizer.ggml.model: {e}"))?;
    if model != "llama" {
        return Err(format!(
            "tokenizer.ggml.model: {model:?} is not a SentencePiece (\"llama\") vocabulary"
        ));
    }
    let tokens = strings(get("tokenizer.ggml.tokens")?, "tokenizer.ggml.tokens")?;
    let scores = numbers(
        get("tokenizer.ggml.scores")?,
        "tokenizer.ggml.scores",
        |v| v.to_f32(),
    )?;
    let types = numbers(
        get("tokenizer.ggml.token_type")?,
        "tokenizer.ggml.token_type",
        |v| v.to_i32(),
    )?;
    if scores.len() != tokens.len() || types.len() != tokens.len() {
        return Err(format!(
            "tokenizer.ggml: {} tokens but {} scores and {} types",
            tokens.len(),
            scores.len(),
            types.len()
        ));
    }
    let id = |key: &str| -> Result<u32, String> {
        get(key)?.to_u32().map_err(|e| format!("{key}: {e}"))
    };
    let (bos, eos) = (
        id("tokenizer.ggml.bos_token_id")?,
        id("tokenizer.ggml.eos_token_id")?,
    );
    let space_prefix = md
        .get("tokenizer.ggml.add_space_prefix")
        .and_then(|v| v.to_bool().ok())
        .unwrap_or(true);

    let vocab: HashMap<String, u32> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let unk = tokens
        .iter()
        .zip(&types)
        .find(|(_, t)| **t == TYPE_UNKNOWN)
        .map(|(p, _)| p.clone());
    let merges = merges_from_scores(&tokens, &scores, &types, &vocab);
    let mut bpe = BPE::builder()
        .vocab_and_merges(
            vocab
                .into_iter()
                .collect::<tokenizers::models::bpe::Vocab>(),
            merges,
        )
        .byte_fallback(true);
    if let Some(unk) = unk {
        bpe = bpe.unk_token(unk);
    }
    let bpe = bpe.build().map_err(|e| format!("tokenizer.ggml: {e}"))?;
    let mut tokenizer = Tokenizer::new(bpe);
    let normalizer: NormalizerWrapper = if space_prefix {
        tokenizers::normalizers::Sequence::new(vec![
            tokenizers::normalizers::Prepend::new("▁".into()).into(),
            Replace::new(" ", "▁").map_err(|e| e.to_string())?.into(),
        ])
        .into()
    } else {
        Replace::new(" ", "▁").map_err(|e| e.to_string())?.into()
    };
    tokenizer
        .with_normalizer(Some(normalizer))
        .map_err(|e| e.to_string())?;
    let decoder: DecoderWrapper = DecoderSequence::new(vec![
        tokenizers::decoders::DecoderWrapper::Replace(
            Replace::new("▁", " ").map_err(|e| e.to_string())?,
        ),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ])
    .into();
    tokenizer.with_decoder(Some(decoder));

    let mut control = Vec::new();
    let mut special = Vec::new();
    let mut user = Vec::new();
    for (i, (piece, ty)) in tokens.iter().zip(&types).enumerate() {
        match *ty {
            TYPE_CONTROL => {
                control.push(i as u32);
                special.push(AddedToken::from(piece.clone(), true).normalized(false));
            }
            TYPE_USER_DEFINED => {
                user.push(AddedToken::from(piece.clone(), false).normalized(false))
            }
            _ => {}
        }
    }
    tokenizer
        .add_special_tokens(special)
        .map_err(|e| format!("tokenizer.ggml.tokens: control pieces: {e}"))?;
    tokenizer
        .add_tokens(user)
        .map_err(|e| format!("tokenizer.ggml.tokens: user-defined pieces: {e}"))?;
    let size = tokens.len();
    Ok((
        tokenizer,
        Vocab {
            bos,
            eos,
            control,
            size,
        },
    ))
}

/// One merge per (left, right) split of a normal piece into two known pieces, ranked by the
/// merged piece's score, highest first; ties keep vocabulary order.
fn merges_from_scores(
    tokens: &[String],
    scores: &[f32],
    types: &[i32],
    vocab: &HashMap<String, u32>,
) -> Vec<(String, String)> {
    let mut ranked: Vec<(f32, u32, u32)> = Vec::new();
    for (i, piece) in tokens.iter().enumerate() {
        if types[i] != TYPE_NORMAL {
            continue;
        }
        for (cut, _) in piece.char_indices().skip(1) {
            let (l, r) = piece.split_at(cut);
            if let (Some(&a), Some(&b)) = (vocab.get(l), vocab.get(r)) {
                if types[a as usize] != TYPE_BYTE && types[b as usize] != TYPE_BYTE {
                    ranked.push((scores[i], a, b));
                }
            }
        }
    }
    ranked.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)).then(x.2.cmp(&y.2)));
    ranked
        .into_iter()
        .map(|(_, a, b)| (tokens[a as usize].clone(), tokens[b as usize].clone()))
        .collect()
}

fn strings(v: &Value, key: &str) -> Result<Vec<String>, String> {
    v.to_vec()
        .map_err(|e| format!("{key}: {e}"))?
        .iter()
        .enumerate()
        .map(|(i, s)| {
            s.to_string()
                .cloned()
                .map_err(|e| format!("{key}[{i}]: {e}"))
        })
        .collect()
}

fn numbers<T>(
    v: &Value,
    key: &str,
    f: impl Fn(&Value) -> candle_core::Result<T>,
) -> Result<Vec<T>, String> {
    v.to_vec()
        .map_err(|e| format!("{key}: {e}"))?
        .iter()
        .enumerate()
        .map(|(i, x)| f(x).map_err(|e| format!("{key}[{i}]: {e}")))
        .collect()
}
