//! The local provider: a quantized Gemma 3 GGUF run on the CPU with candle.
//!
//! The weights load once; each generation clones the model handle (the quantized tensors are
//! shared, only the KV cache is its own) and runs on the caller's blocking thread.

use super::chat::{ChatMessage, ResponseFormat, ToolChoice};
use super::json_prefix::JsonPrefix;
use super::template::{gemma_chat, Segment};
use super::tokenizer::{self, Vocab};
use super::LlmError;
use candle_core::quantized::gguf_file;
use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_gemma3::ModelWeights;
use haca_core::{BlobId, Digest};
use rand::{Rng, SeedableRng};
use sha2::{Digest as _, Sha256};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokenizers::Tokenizer;

/// The runtime named in receipts.
pub const LLM_RUNTIME: &str = "candle 0.11 (gguf q4_k_m, cpu)";

/// The longest prompt plus answer served. The model was trained for 32,768 positions, but
/// candle prefills a prompt in one pass whose attention scores take 16·n² bytes: 4,096
/// positions keep that near 270 MB.
pub const CONTEXT_LIMIT: usize = 4096;

/// Tokens sampled from when the temperature is above zero (then `top_p` cuts them).
const TOP_K: usize = 64;
/// A light penalty on tokens of the last `REPEAT_WINDOW` keeps a small base model out of loops.
const REPEAT_PENALTY: f32 = 1.15;
const REPEAT_WINDOW: usize = 64;

/// What a generation is asked for.
#[derive(Debug, Clone)]
pub struct GenerateParams {
    pub max_tokens: usize,
    /// Tokens before the answer may end (at least 1: an empty answer helps nobody).
    pub min_tokens: usize,
    /// 0 is greedy.
    pub temperature: f64,
    pub top_p: f64,
    pub seed: u64,
    pub stop: Vec<String>,
    /// The answer must be one JSON object (and starts with `prefix`, already decided).
    pub json: Option<String>,
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// End of turn, a stop sequence, or a complete JSON answer.
    Stop,
    /// `max_tokens` or the context limit.
    Length,
    /// The caller stopped reading (a client went away).
    Cancelled,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Cancelled => "cancelled",
        }
    }
}

/// One finished generation.
#[derive(Debug, Clone)]
pub struct Generation {
    pub text: String,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub finish_reason: FinishReason,
    pub prefill: Duration,
    pub decode: Duration,
}

impl Generation {
    /// Decode speed, tokens per second (prompt processing excluded).
    pub fn tokens_per_second(&self) -> f64 {
        let s = self.decode.as_secs_f64();
        if s > 0.0 {
            self.completion_tokens as f64 / s
        } else {
            0.0
        }
    }
}

/// A loaded local model.
pub struct LocalLlm {
    weights: ModelWeights,
    tokenizer: Tokenizer,
    /// Tokenizes message content: no control pieces, so content cannot open a turn.
    text_tokenizer: Tokenizer,
    vocab: Vocab,
    /// Pieces as text (`▁` as a space; byte pieces as U+FFFD), for the JSON constraint.
    pieces: Vec<String>,
    end_ids: Vec<u32>,
    suppressed: Vec<u32>,
    pub path: PathBuf,
    pub blob_id: BlobId,
    pub size: u64,
}

/// A reader that reports how far it got, for progress while the weights load.
struct Counting<'a, R> {
    inner: R,
    total: u64,
    report: &'a mut dyn FnMut(u64, u64),
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        (self.report)(n as u64, self.total);
        Ok(n)
    }
}

impl<R: Seek> Seek for Counting<'_, R> {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.inner.seek(pos)
    }
}

impl LocalLlm {
    /// Loads a Gemma 3 GGUF. `progress(bytes, total)` is called as bytes are read (twice over
    /// the file: hashing, then the weights).
    pub fn load(path: &Path, progress: &mut dyn FnMut(u64, u64)) -> Result<LocalLlm, LlmError> {
        let load = |what: String| LlmError::Load(format!("{}: {what}", path.display()));
        let size = std::fs::metadata(path)
            .map_err(|e| load(e.to_string()))?
            .len();
        let mut file = std::fs::File::open(path).map_err(|e| load(e.to_string()))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf).map_err(|e| load(e.to_string()))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            progress(n as u64, size * 2);
        }
        let blob_id = BlobId(Digest(hasher.finalize().into()));
        file.seek(SeekFrom::Start(0))
            .map_err(|e| load(e.to_string()))?;
        let mut reader = Counting {
            inner: std::io::BufReader::with_capacity(1 << 20, file),
            total: size * 2,
            report: progress,
        };
        let content = gguf_file::Content::read(&mut reader)
            .map_err(|e| load(format!("not a GGUF file: {e}")))?;
        let arch = content
            .metadata
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .unwrap_or_default();
        if arch != "gemma3" {
            return Err(load(format!(
                "general.architecture is {arch:?}; the local provider runs gemma3"
            )));
        }
        let (tokenizer, vocab) = tokenizer::from_gguf(&content).map_err(load)?;
        let weights = ModelWeights::from_gguf(content, &mut reader, &Device::Cpu)
            .map_err(|e| load(format!("weights: {e}")))?;
        let text_tokenizer = without_control_pieces(&tokenizer, &vocab);
        let id = |piece: &str| {
            tokenizer
                .token_to_id(piece)
                .ok_or_else(|| load(format!("the vocabulary lacks {piece}")))
        };
        let end_ids = vec![vocab.eos, id("<end_of_turn>")?];
        let suppressed = vocab
            .control
            .iter()
            .copied()
            .filter(|c| !end_ids.contains(c))
            .collect();
        let pieces = (0..vocab.size as u32)
            .map(|i| {
                let p = tokenizer.id_to_token(i).unwrap_or_default();
                if p.starts_with("<0x") && p.len() == 6 {
                    u8::from_str_radix(&p[3..5], 16)
                        .ok()
                        .filter(u8::is_ascii)
                        .map(|b| (b as char).to_string())
                        .unwrap_or_else(|| "\u{FFFD}".into())
                } else {
                    p.replace('▁', " ")
                }
            })
            .collect();
        Ok(LocalLlm {
            weights,
            tokenizer,
            text_tokenizer,
            vocab,
            pieces,
            end_ids,
            suppressed,
            path: path.to_path_buf(),
            blob_id,
            size,
        })
    }

    /// Token ids of a chat prompt (Gemma's template; tool definitions when tools are on).
    pub fn chat_prompt(
        &self,
        messages: &[ChatMessage],
        tools: Option<&serde_json::Value>,
        tool_choice: &ToolChoice,
    ) -> Result<Vec<u32>, LlmError> {
        let tools = tools.filter(|_| *tool_choice != ToolChoice::None);
        let mut ids = Vec::new();
        for seg in gemma_chat(messages, tools) {
            match seg {
                Segment::Control(name) => ids.push(
                    self.tokenizer
                        .token_to_id(name)
                        .ok_or_else(|| LlmError::Run(format!("the vocabulary lacks {name}")))?,
                ),
                Segment::Text(t) => ids.extend(self.encode(&t)?),
            }
        }
        Ok(ids)
    }

    /// Token ids of a raw completion prompt, after `<bos>`.
    pub fn text_prompt(&self, prompt: &str) -> Result<Vec<u32>, LlmError> {
        let mut ids = vec![self.vocab.bos];
        ids.extend(self.encode(prompt)?);
        Ok(ids)
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>, LlmError> {
        Ok(self
            .text_tokenizer
            .encode_fast(text, false)
            .map_err(|e| LlmError::Run(format!("tokenizer: {e}")))?
            .get_ids()
            .to_vec())
    }

    pub fn decode(&self, ids: &[u32]) -> String {
        self.tokenizer.decode(ids, true).unwrap_or_default()
    }

    /// Generates after `prompt`. `on_text` gets each new piece of text as it becomes final
    /// (stop sequences held back until they can no longer match) and returns false to stop.
    pub fn generate(
        &self,
        prompt: &[u32],
        params: &GenerateParams,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Generation, LlmError> {
        if prompt.len() >= CONTEXT_LIMIT {
            return Err(LlmError::ContextTooLong {
                tokens: prompt.len(),
                limit: CONTEXT_LIMIT,
            });
        }
        let run = |e: candle_core::Error| LlmError::Run(e.to_string());
        let mut model = self.weights.clone();
        let mut rng = rand::rngs::StdRng::seed_from_u64(params.seed);
        let mut json = params.json.as_ref().map(|prefix| {
            let mut j = JsonPrefix::object();
            j.feed(prefix);
            j
        });
        let mut out = Stream::new(params.json.clone().unwrap_or_default(), &params.stop);
        let head = out.flush();
        if !head.is_empty() && !on_text(&head) {
            return Ok(out.finish(
                prompt.len(),
                0,
                FinishReason::Cancelled,
                Duration::ZERO,
                Duration::ZERO,
            ));
        }
        let start = Instant::now();
        let input = Tensor::new(prompt, &Device::Cpu)
            .and_then(|t| t.unsqueeze(0))
            .map_err(run)?;
        let mut logits = model.forward(&input, 0).map_err(run)?;
        let prefill = start.elapsed();
        let decode_start = Instant::now();
        let mut generated: Vec<u32> = Vec::new();
        let budget = params.max_tokens.min(CONTEXT_LIMIT - prompt.len());
        let mut finish = FinishReason::Length;
        while generated.len() < budget {
            let mut scores: Vec<f32> = logits
                .squeeze(0)
                .and_then(|t| t.to_dtype(candle_core::DType::F32))
                .and_then(|t| t.to_vec1())
                .map_err(run)?;
            for &s in &self.suppressed {
                scores[s as usize] = f32::NEG_INFINITY;
            }
            let window = &generated[generated.len().saturating_sub(REPEAT_WINDOW)..];
            for &t in window {
                let s = &mut scores[t as usize];
                *s = if *s >= 0.0 {
                    *s / REPEAT_PENALTY
                } else {
                    *s * REPEAT_PENALTY
                };
            }
            // Not before `min_tokens`, and never with nothing said.
            let too_early = generated.len() < params.min_tokens
                || (generated.is_empty() && out.text.is_empty());
            let next = {
                let json = &json;
                let end_ids = &self.end_ids;
                let pieces = &self.pieces;
                pick(&scores, params, &mut rng, &mut |id| {
                    let is_end = end_ids.contains(&id);
                    match json {
                        // A JSON answer ends only once the value is complete.
                        Some(j) => !is_end && j.accepts(&pieces[id as usize]),
                        // A base model may end its turn at once.
                        None => !(is_end && too_early),
                    }
                })
            };
            let Some(next) = next else {
                finish = FinishReason::Stop;
                break;
            };
            if self.end_ids.contains(&next) {
                finish = FinishReason::Stop;
                break;
            }
            generated.push(next);
            if let Some(j) = &mut json {
                j.feed(&self.pieces[next as usize]);
            }
            let text = self.decode(&generated);
            match out.advance(&text, json.as_ref().is_some_and(JsonPrefix::is_complete)) {
                Advance::More(piece) => {
                    if !piece.is_empty() && !on_text(&piece) {
                        finish = FinishReason::Cancelled;
                        break;
                    }
                }
                Advance::Stopped(piece) => {
                    if !piece.is_empty() {
                        on_text(&piece);
                    }
                    finish = FinishReason::Stop;
                    break;
                }
            }
            if generated.len() >= budget {
                break;
            }
            let input = Tensor::new(&[next], &Device::Cpu)
                .and_then(|t| t.unsqueeze(0))
                .map_err(run)?;
            logits = model
                .forward(&input, prompt.len() + generated.len() - 1)
                .map_err(run)?;
        }
        if finish != FinishReason::Cancelled {
            let rest = out.flush();
            if !rest.is_empty() {
                on_text(&rest);
            }
        }
        Ok(out.finish(
            prompt.len(),
            generated.len(),
            finish,
            prefill,
            decode_start.elapsed(),
        ))
    }

    /// The prompt tokens the model was told to answer `format` with (the JSON prefix of a
    /// forced tool call), or none.
    pub fn json_prefix(format: &ResponseFormat, tool_choice: &ToolChoice) -> Option<String> {
        match (tool_choice, format) {
            (ToolChoice::Function(name), _) => Some(format!(
                "{{\"name\": {}, \"arguments\": ",
                serde_json::Value::from(name.as_str())
            )),
            (ToolChoice::Required, _) => Some("{\"name\": \"".into()),
            (_, ResponseFormat::JsonObject | ResponseFormat::JsonSchema { .. }) => {
                Some(String::new())
            }
            _ => None,
        }
    }
}

/// The same tokenizer without the control pieces registered as added tokens, so text that
/// spells `<start_of_turn>` is tokenized as text.
fn without_control_pieces(full: &Tokenizer, vocab: &Vocab) -> Tokenizer {
    let mut t = Tokenizer::new(full.get_model().clone());
    let _ = t.with_normalizer(full.get_normalizer().cloned());
    t.with_decoder(full.get_decoder().cloned());
    let added: Vec<tokenizers::AddedToken> = full
        .get_added_tokens_decoder()
        .iter()
        .filter(|(id, tok)| !tok.special && !vocab.control.contains(id))
        .map(|(_, tok)| tok.clone())
        .collect();
    // Adding tokens the vocabulary already holds cannot fail.
    let _ = t.add_tokens(added);
    t
}

/// Picks the next token among those `valid` allows: greedy at temperature 0, else sampled from
/// the top-k and top-p of the distribution, rejecting invalid draws.
fn pick(
    scores: &[f32],
    params: &GenerateParams,
    rng: &mut rand::rngs::StdRng,
    valid: &mut dyn FnMut(u32) -> bool,
) -> Option<u32> {
    let mut idx: Vec<u32> = (0..scores.len() as u32).collect();
    let k = TOP_K.min(idx.len());
    idx.select_nth_unstable_by(k - 1, |a, b| {
        scores[*b as usize].total_cmp(&scores[*a as usize])
    });
    let mut top: Vec<u32> = idx[..k]
        .iter()
        .copied()
        .filter(|i| scores[*i as usize].is_finite())
        .collect();
    top.sort_by(|a, b| scores[*b as usize].total_cmp(&scores[*a as usize]));
    if params.temperature > 0.0 && !top.is_empty() {
        let t = params.temperature as f32;
        let max = scores[top[0] as usize];
        let mut w: Vec<f32> = top
            .iter()
            .map(|i| ((scores[*i as usize] - max) / t).exp())
            .collect();
        let total: f32 = w.iter().sum();
        let mut acc = 0.0;
        let mut keep = w.len();
        for (n, x) in w.iter().enumerate() {
            acc += x / total;
            if acc as f64 >= params.top_p {
                keep = n + 1;
                break;
            }
        }
        w.truncate(keep);
        loop {
            let sum: f32 = w.iter().sum();
            if sum <= 0.0 {
                break;
            }
            let mut r = rng.gen::<f32>() * sum;
            let mut chosen = w.len() - 1;
            for (n, x) in w.iter().enumerate() {
                if r < *x {
                    chosen = n;
                    break;
                }
                r -= x;
            }
            if valid(top[chosen]) {
                return Some(top[chosen]);
            }
            w[chosen] = 0.0;
        }
    } else if let Some(&id) = top.iter().find(|i| valid(**i)) {
        return Some(id);
    }
    // Nothing in the head of the distribution fits: scan every token, most likely first.
    let mut all: Vec<u32> = (0..scores.len() as u32)
        .filter(|i| scores[*i as usize].is_finite())
        .collect();
    all.sort_by(|a, b| scores[*b as usize].total_cmp(&scores[*a as usize]));
    all.into_iter().find(|i| valid(*i))
}

/// Text released to the caller: everything decoded so far, less what may still turn out to
/// be the start of a stop sequence or half of a UTF-8 character.
struct Stream<'a> {
    /// A forced start of the answer (JSON), released before generation.
    head_len: usize,
    text: String,
    emitted: usize,
    stop: &'a [String],
}

enum Advance {
    More(String),
    Stopped(String),
}

impl<'a> Stream<'a> {
    fn new(head: String, stop: &'a [String]) -> Self {
        Stream {
            head_len: head.len(),
            text: head,
            emitted: 0,
            stop,
        }
    }

    /// `decoded` is the whole generated text so far; `complete` ends it (a finished JSON value).
    fn advance(&mut self, decoded: &str, complete: bool) -> Advance {
        self.text.truncate(self.head_len);
        self.text.push_str(decoded);
        let found = self
            .stop
            .iter()
            .filter_map(|s| {
                let from = self.emitted.saturating_sub(s.len() - 1).max(self.head_len);
                let from = floor_boundary(&self.text, from);
                self.text[from..].find(s.as_str()).map(|p| p + from)
            })
            .min();
        if let Some(at) = found {
            self.text.truncate(at.max(self.emitted));
            return Advance::Stopped(self.flush());
        }
        if complete {
            return Advance::Stopped(self.flush());
        }
        let hold = self.stop.iter().map(|s| s.len() - 1).max().unwrap_or(0);
        let mut end = self.text.len().saturating_sub(hold);
        if self.text.ends_with('\u{FFFD}') {
            // Half of a character split over byte pieces: wait for the rest.
            end = end.min(self.text.len() - '\u{FFFD}'.len_utf8());
        }
        let end = floor_boundary(&self.text, end).max(self.emitted);
        Advance::More(self.take(end))
    }

    fn take(&mut self, end: usize) -> String {
        let piece = self.text[self.emitted..end].to_owned();
        self.emitted = end;
        piece
    }

    fn flush(&mut self) -> String {
        self.take(self.text.len())
    }

    fn finish(
        self,
        prompt_tokens: usize,
        completion_tokens: usize,
        finish_reason: FinishReason,
        prefill: Duration,
        decode: Duration,
    ) -> Generation {
        Generation {
            text: self.text,
            prompt_tokens,
            completion_tokens,
            finish_reason,
            prefill,
            decode,
        }
    }
}

fn floor_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(pieces: &[&str], stop: &[&str]) -> (Vec<String>, bool) {
        let stop: Vec<String> = stop.iter().map(|s| s.to_string()).collect();
        let mut s = Stream::new(String::new(), &stop);
        let mut out = Vec::new();
        let mut text = String::new();
        for p in pieces {
            text.push_str(p);
            match s.advance(&text, false) {
                Advance::More(x) => out.push(x),
                Advance::Stopped(x) => {
                    out.push(x);
                    return (out, true);
                }
            }
        }
        out.push(s.flush());
        (out, false)
    }

    #[test]
    fn stop_sequences_are_held_back_and_cut() {
        let (out, stopped) = run(&["Hello", " wo", "rld", "\n\nUser", ":"], &["\n\nUser:"]);
        assert!(stopped);
        assert_eq!(out.concat(), "Hello world");
        let (out, stopped) = run(&["a\n", "b"], &["\n\n"]);
        assert!(!stopped);
        assert_eq!(out.concat(), "a\nb");
    }

    #[test]
    fn half_characters_wait() {
        let (out, _) = run(&["caf", "\u{FFFD}"], &[]);
        assert_eq!(out[1], "");
    }
}
