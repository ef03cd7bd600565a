//! The local provider: any GGUF that llama.cpp runs (Llama, Qwen, Gemma, Phi, Mistral and
//! the other families it knows), on the CPU, through the `llama-cpp-2` bindings.
//!
//! Loading reads the GGUF's header first ([`super::gguf`]: a bad file is refused with its
//! reason), hashes the file for its blob id while llama.cpp maps the weights, then starts the
//! engine thread ([`super::engine`]) that owns the one llama.cpp context every request shares.
//! `generate` hands a request to the engine and relays its text as it comes.

use super::chat::{ChatMessage, ResponseFormat, ToolChoice};
use super::engine::{self, Admission, Event, Job, VocabFacts};
use super::gguf::{self, GgufHeader};
use super::head;
use super::template::{chatml, gemma_chat, jinja_chat, Segment};
use super::LlmError;
use haca_core::{BlobId, Digest};
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use sha2::{Digest as _, Sha256};
use std::io::Read;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::Duration;

/// The runtime named in receipts.
pub const LLM_RUNTIME: &str = "llama.cpp (llama-cpp-2 0.1.160, gguf, cpu)";

/// The longest prompt plus answer served per request (less when the model was trained on
/// fewer positions).
pub const CONTEXT_LIMIT: usize = 4096;

/// Requests decoded together, each a sequence of one batch.
pub const SLOTS: usize = 4;
/// Requests that may wait for a slot; past them a request is refused (busy) at once.
pub const QUEUE: usize = 4;

/// Prompt tokens decoded per step (shared by the sequences that are prefilling).
const BATCH_TOKENS: u32 = 512;

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

/// What a GGUF says about the model in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    /// The served name, after `local/`: `general.name` slugified, else the file name.
    pub name: String,
    /// `general.architecture` (llama, qwen2, gemma3, phi3, ...).
    pub architecture: String,
    /// A base (pretrained, not instruction-tuned) model: it continues text rather than
    /// answering.
    pub base: bool,
    /// The GGUF's own chat template (`tokenizer.chat_template`), if it has one.
    pub chat_template: Option<String>,
    /// Positions served per request: the training context, at most [`CONTEXT_LIMIT`].
    pub context: usize,
}

impl ModelInfo {
    /// Reads what the header says; `path` names the model when the header does not.
    pub fn from_header(h: &GgufHeader, path: &Path) -> ModelInfo {
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let name = h
            .str("general.name")
            .map(slug)
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| slug(&stem));
        let hints = [
            h.str("general.finetune").unwrap_or_default(),
            h.str("general.name").unwrap_or_default(),
            h.str("general.basename").unwrap_or_default(),
            &stem,
        ]
        .join(" ");
        ModelInfo {
            name,
            architecture: h.architecture().unwrap_or_default().to_owned(),
            base: !names_instruct(&hints),
            chat_template: h.str("tokenizer.chat_template").map(str::to_owned),
            context: h
                .context_length()
                .map_or(CONTEXT_LIMIT, |n| (n as usize).min(CONTEXT_LIMIT)),
        }
    }
}

/// Lower case, runs of anything but letters, digits and dots as one `-`.
pub fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() || c == '.' {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    out.trim_end_matches('-').to_owned()
}

/// Whether a model's names mark it instruction-tuned (`-it`, `Instruct`, `chat`, ...): GGUF
/// has no field that says so, and a chat template alone does not (base models ship one).
fn names_instruct(hints: &str) -> bool {
    hints
        .split(|c: char| !c.is_ascii_alphanumeric())
        .map(str::to_ascii_lowercase)
        .any(|w| {
            matches!(
                w.as_str(),
                "it" | "instruct" | "chat" | "sft" | "dpo" | "rlhf"
            )
        })
}

include!("x86_features.rs");

/// The x86 extensions llama.cpp was compiled to use (recorded by build.rs) that this CPU lacks.
/// Checked before llama.cpp runs any code: a kernel built for a wider CPU would die on an
/// illegal instruction.
pub fn missing_cpu_features() -> Vec<&'static str> {
    missing_from(env!("HACA_LLAMA_ISA"), &x86_features())
}

/// The features of `built` (comma-separated) that are not in `here`.
fn missing_from<'a>(built: &'a str, here: &[&str]) -> Vec<&'a str> {
    built
        .split(',')
        .filter(|f| !f.is_empty() && !here.contains(f))
        .collect()
}

/// llama.cpp's backend, initialized once per process.
fn backend() -> Result<&'static LlamaBackend, LlmError> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            let missing = missing_cpu_features();
            if !missing.is_empty() {
                return Err(format!(
                    "this binary's llama.cpp was compiled for its build machine's CPU, and this \
                     CPU lacks {}: build haca on this machine, or build it with \
                     HACA_LLAMA_PORTABLE=1 for any x86-64-v3 CPU",
                    missing.join(", ")
                ));
            }
            install_log_capture();
            LlamaBackend::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| LlmError::Load(format!("llama.cpp backend: {e}")))
}

/// Held while a model loads or a context is made: llama.cpp does not make either safe to run
/// beside another (a context may write to its model while it is made).
static LLAMA_SETUP: Mutex<()> = Mutex::new(());

/// llama.cpp's recent error lines: it reports why a model did not load only through its log.
static LLAMA_ERRORS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn install_log_capture() {
    unsafe extern "C" fn capture(
        level: llama_cpp_sys_2::ggml_log_level,
        text: *const std::os::raw::c_char,
        _: *mut std::os::raw::c_void,
    ) {
        if level != llama_cpp_sys_2::GGML_LOG_LEVEL_ERROR || text.is_null() {
            return;
        }
        // SAFETY: llama.cpp passes a NUL-terminated string, valid for this call.
        let line = unsafe { std::ffi::CStr::from_ptr(text) }
            .to_string_lossy()
            .trim()
            .to_owned();
        tracing::debug!("llama.cpp: {line}");
        if let Ok(mut lines) = LLAMA_ERRORS.lock() {
            if lines.len() >= 8 {
                lines.remove(0);
            }
            lines.push(line);
        }
    }
    // SAFETY: the callback is a plain function that lives as long as the process.
    unsafe { llama_cpp_sys_2::llama_log_set(Some(capture), std::ptr::null_mut()) };
}

fn take_llama_errors() -> String {
    LLAMA_ERRORS
        .lock()
        .map(|mut l| std::mem::take(&mut *l).join("; "))
        .unwrap_or_default()
}

/// Threads for matrix work: `HACA_LLM_THREADS`, else every core.
fn threads() -> i32 {
    std::env::var("HACA_LLM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n: &i32| *n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get() as i32))
}

/// A loaded local model and its engine.
pub struct LocalLlm {
    model: Arc<LlamaModel>,
    facts: Arc<VocabFacts>,
    jobs: mpsc::Sender<Job>,
    admission: Admission,
    rows_scored_here: Arc<AtomicU64>,
    bos: Option<u32>,
    bos_text: String,
    eos_text: String,
    pub info: ModelInfo,
    pub path: PathBuf,
    pub blob_id: BlobId,
    pub size: u64,
}

impl LocalLlm {
    /// Reads and checks a GGUF's header: what the model is called and what it is, or why the
    /// file cannot be served.
    pub fn inspect(path: &Path) -> Result<(ModelInfo, u64), LlmError> {
        inspect(path).map_err(|what| LlmError::Load(format!("{}: {what}", path.display())))
    }

    /// Checks a GGUF as loading it would, without its weights: the header (a GGUF, whole, of
    /// tensor types llama.cpp knows), then llama.cpp reads the architecture, hyperparameters
    /// and vocabulary (`vocab_only`) and refuses what it cannot run. The error is the reason
    /// alone (the Model Hub checks staged files whose names mean nothing to the uploader).
    pub fn check_file(path: &Path) -> Result<ModelInfo, String> {
        let (info, _) = inspect(path)?;
        let backend = backend().map_err(|e| e.to_string())?;
        let params = LlamaModelParams::default().with_vocab_only(true);
        let setup = LLAMA_SETUP.lock().unwrap_or_else(|e| e.into_inner());
        let loaded = LlamaModel::load_from_file(backend, path, &params);
        let why = take_llama_errors();
        drop(setup);
        match loaded {
            Ok(_) => Ok(info),
            Err(e) => Err(format!(
                "llama.cpp cannot load this {} model: {}",
                info.architecture,
                if why.is_empty() { e.to_string() } else { why }
            )),
        }
    }

    /// Loads a GGUF. `progress(done, total)` is called as the file is hashed and the weights
    /// are mapped (two passes over the file, run side by side; `total` is twice its size).
    pub fn load(path: &Path, progress: &mut dyn FnMut(u64, u64)) -> Result<LocalLlm, LlmError> {
        let load = |what: String| LlmError::Load(format!("{}: {what}", path.display()));
        let (info, size) = Self::inspect(path)?;
        let backend = backend()?;
        let mapped = Arc::new(AtomicU32::new(0));
        let mapped_cb = mapped.clone();
        let (model, blob_id) = std::thread::scope(|scope| {
            let loader = scope.spawn(move || {
                let params = LlamaModelParams::default().with_progress_callback(move |f| {
                    mapped_cb.store((f.clamp(0.0, 1.0) * 1000.0) as u32, Ordering::Relaxed);
                    true
                });
                let _setup = LLAMA_SETUP.lock().unwrap_or_else(|e| e.into_inner());
                LlamaModel::load_from_file(backend, path, &params)
            });
            let hashed = hash_file(path, &mut |hashed| {
                let weights = size * mapped.load(Ordering::Relaxed) as u64 / 1000;
                progress(hashed + weights, size * 2);
            });
            let model = loader.join();
            (model, hashed)
        });
        let blob_id = blob_id.map_err(|e| load(e.to_string()))?;
        let model = match model {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => {
                let why = take_llama_errors();
                return Err(load(format!(
                    "llama.cpp cannot load this {} model: {}",
                    info.architecture,
                    if why.is_empty() { e.to_string() } else { why }
                )));
            }
            Err(_) => return Err(load("the loader thread panicked".into())),
        };
        progress(size * 2, size * 2);
        let model = Arc::new(model);
        let facts = Arc::new(vocab_facts(&model));
        let vocab = model.vocab();
        let bos = vocab.should_add_bos().then(|| vocab.bos().0 as u32);
        let text_of = |t: LlamaToken| {
            String::from_utf8_lossy(&vocab.token_to_piece(t, true, None)).into_owned()
        };
        let (bos_text, eos_text) = (text_of(vocab.bos()), text_of(vocab.eos()));
        let (jobs, admission, rows_scored_here) =
            start_engine(backend, &model, &facts, info.context).map_err(load)?;
        Ok(LocalLlm {
            model,
            facts,
            jobs,
            admission,
            rows_scored_here,
            bos,
            bos_text,
            eos_text,
            info,
            path: path.to_path_buf(),
            blob_id,
            size,
        })
    }

    /// Output rows of batched steps that haca scored itself (see `head`), not llama.cpp.
    pub fn rows_scored_here(&self) -> u64 {
        self.rows_scored_here.load(Ordering::Relaxed)
    }

    /// Positions served per request (prompt and answer).
    pub fn context(&self) -> usize {
        self.info.context
    }

    /// Whether every slot and queue place is taken: a new request would be refused.
    pub fn is_full(&self) -> bool {
        self.admission.held() >= self.admission.capacity
    }

    /// Token ids of a chat prompt: the GGUF's own template, else the family's.
    pub fn chat_prompt(
        &self,
        messages: &[ChatMessage],
        tools: Option<&serde_json::Value>,
        tool_choice: &ToolChoice,
    ) -> Result<Vec<u32>, LlmError> {
        let tools = tools.filter(|_| *tool_choice != ToolChoice::None);
        let gemma = self.info.architecture.starts_with("gemma");
        let rendered = self
            .info
            .chat_template
            .as_deref()
            .filter(|_| !gemma)
            .map(|t| jinja_chat(t, messages, tools, &self.bos_text, &self.eos_text));
        let segments = match rendered {
            Some(Ok(s)) => s,
            other => {
                if let Some(Err(e)) = other {
                    tracing::debug!("{}: {e}; the family's template stands in", self.info.name);
                }
                if gemma {
                    gemma_chat(messages, tools)
                } else {
                    chatml(messages, tools)
                }
            }
        };
        let vocab = self.model.vocab();
        let mut ids: Vec<u32> = Vec::new();
        for seg in segments {
            let (text, special) = match &seg {
                Segment::Control(name) => (*name, true),
                Segment::Markup(m) => (m.as_str(), true),
                Segment::Text(t) => (t.as_str(), false),
            };
            let toks = vocab.tokenize(text.as_bytes(), false, special);
            if let Segment::Control(name) = seg {
                if toks.len() != 1 {
                    return Err(LlmError::Run(format!("the vocabulary lacks {name}")));
                }
            }
            ids.extend(toks.iter().map(|t| t.0 as u32));
        }
        if let Some(bos) = self.bos {
            if ids.first() != Some(&bos) {
                ids.insert(0, bos);
            }
        }
        Ok(ids)
    }

    /// Token ids of a raw completion prompt, after the model's start token if it takes one.
    pub fn text_prompt(&self, prompt: &str) -> Result<Vec<u32>, LlmError> {
        let mut ids: Vec<u32> = self.bos.into_iter().collect();
        ids.extend(self.encode(prompt)?);
        Ok(ids)
    }

    /// Tokens of `text` as text: control pieces it spells stay text.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, LlmError> {
        Ok(self
            .model
            .vocab()
            .tokenize(text.as_bytes(), false, false)
            .iter()
            .map(|t| t.0 as u32)
            .collect())
    }

    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            if let Some(b) = self.facts.bytes.get(id as usize) {
                bytes.extend_from_slice(b);
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Generates after `prompt`. `on_text` gets each new piece of text as it becomes final
    /// (stop sequences held back until they can no longer match) and returns false to stop.
    /// Refused at once with [`LlmError::Busy`] when every slot and queue place is taken.
    pub fn generate(
        &self,
        prompt: &[u32],
        params: &GenerateParams,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Generation, LlmError> {
        self.generate_with(prompt, params, None, &|| false, on_text)
    }

    /// [`generate`](Self::generate), the answer held to a GBNF `grammar` when one is given,
    /// and given up (cancelled) as soon as `gone` says the requester left, even while waiting
    /// for a slot.
    pub fn generate_with(
        &self,
        prompt: &[u32],
        params: &GenerateParams,
        grammar: Option<String>,
        gone: &dyn Fn() -> bool,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Generation, LlmError> {
        if prompt.len() >= self.context() {
            return Err(LlmError::ContextTooLong {
                tokens: prompt.len(),
                limit: self.context(),
            });
        }
        let vocab = self.facts.bytes.len();
        if let Some(bad) = prompt.iter().find(|&&t| t as usize >= vocab) {
            return Err(LlmError::Request(format!(
                "prompt: token {bad} is outside the vocabulary of {vocab}"
            )));
        }
        // Held here, not by the engine: dropped when this returns, however it returns.
        let _slot = self.admission.try_take().ok_or(LlmError::Busy {
            held: self.admission.capacity,
        })?;
        let (events, rx) = mpsc::channel();
        self.jobs
            .send(Job {
                prompt: prompt.to_vec(),
                params: params.clone(),
                grammar,
                events,
            })
            .map_err(|_| LlmError::Run("the generation engine stopped".into()))?;
        let mut text = String::new();
        let cancelled = |text: String, tokens: usize| Generation {
            text,
            prompt_tokens: prompt.len(),
            completion_tokens: tokens,
            finish_reason: FinishReason::Cancelled,
            prefill: Duration::ZERO,
            decode: Duration::ZERO,
        };
        loop {
            let event = match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(e) => e,
                Err(mpsc::RecvTimeoutError::Timeout) if gone() => return Ok(cancelled(text, 0)),
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            match event {
                Event::Started => {}
                Event::Text { piece, tokens } => {
                    text.push_str(&piece);
                    if !on_text(&piece) {
                        // Dropping the receiver ends the sequence at the engine's next token.
                        return Ok(cancelled(text, tokens));
                    }
                }
                Event::Done(result) => return result,
            }
        }
        Err(LlmError::Run(
            "the generation engine stopped mid-answer".into(),
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

/// The GGUF header of `path`, checked against the file's size, and what it says of the model.
fn inspect(path: &Path) -> Result<(ModelInfo, u64), String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let size = file.metadata().map_err(|e| e.to_string())?.len();
    let header = gguf::read_header(std::io::BufReader::with_capacity(1 << 20, file))
        .map_err(|e| e.to_string())?;
    header.check_size(size).map_err(|e| e.to_string())?;
    if header.architecture().is_none_or(str::is_empty) {
        return Err("general.architecture: missing".into());
    }
    Ok((ModelInfo::from_header(&header, path), size))
}

/// The Model Hub's GGUF gate: [`LocalLlm::check_file`] on the staged upload.
pub struct GgufCheck;

impl haca_hub::ArtifactCheck for GgufCheck {
    fn check(&self, bytes: &[u8]) -> Result<String, String> {
        // llama.cpp reads models from files only.
        let path =
            std::env::temp_dir().join(format!(".haca-gguf-check-{}", haca_core::random_hex(8)));
        std::fs::write(&path, bytes).map_err(|e| format!("staging the GGUF to check it: {e}"))?;
        let checked = self.check_file(&path);
        let _ = std::fs::remove_file(&path);
        checked
    }

    fn check_file(&self, path: &Path) -> Result<String, String> {
        LocalLlm::check_file(path).map(|_| "gguf".to_owned())
    }
}

/// SHA-256 of the file (its blob id), reporting bytes hashed so far.
fn hash_file(path: &Path, progress: &mut dyn FnMut(u64)) -> std::io::Result<BlobId> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        done += n as u64;
        progress(done);
    }
    Ok(BlobId(Digest(hasher.finalize().into())))
}

/// The vocabulary tables the engine samples with.
fn vocab_facts(model: &LlamaModel) -> VocabFacts {
    let vocab = model.vocab();
    let n = vocab.n_tokens().max(0) as u32;
    let mut end = Vec::new();
    let mut suppressed = vec![false; n as usize];
    let mut bytes = Vec::with_capacity(n as usize);
    let mut pieces = Vec::with_capacity(n as usize);
    for id in 0..n {
        let t = LlamaToken(id as i32);
        if vocab.is_eog(t) {
            end.push(id);
        } else if vocab.is_control(t) {
            suppressed[id as usize] = true;
        }
        let b = vocab.token_to_piece(t, false, None);
        pieces.push(match std::str::from_utf8(&b) {
            Ok(s) => s.to_owned(),
            Err(_) => "\u{FFFD}".to_owned(),
        });
        bytes.push(b);
    }
    VocabFacts {
        end,
        suppressed,
        bytes,
        pieces,
    }
}

/// Starts the engine thread with its context; returns once the context exists (or could not
/// be made).
fn start_engine(
    backend: &'static LlamaBackend,
    model: &Arc<LlamaModel>,
    facts: &Arc<VocabFacts>,
    context: usize,
) -> Result<(mpsc::Sender<Job>, Admission, Arc<AtomicU64>), String> {
    let (jobs, rx) = mpsc::channel::<Job>();
    let n = threads();
    let tap = head::HeadTap::new(n as usize);
    let rows_scored_here = tap.rows.clone();
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
    let (model, facts) = (model.clone(), facts.clone());
    std::thread::Builder::new()
        .name("local-llm-engine".into())
        .spawn(move || {
            let params = LlamaContextParams::default()
                .with_n_ctx(NonZeroU32::new((context * SLOTS) as u32))
                .with_n_batch(BATCH_TOKENS)
                .with_n_ubatch(BATCH_TOKENS)
                .with_n_seq_max(SLOTS as u32)
                // One cache for all slots. With a cache per slot, llama.cpp batches only
                // sequences whose ids run consecutively (0,1,2 but not 0,2): as requests came
                // and went, a step fell apart into several passes over the weights. Attention
                // skips the other sequences' cells by their mask.
                .with_kv_unified(true)
                // The sliding-window layers keep their window, not the whole context: no
                // request reuses another's cache, so nothing needs the full-size one, and it
                // was most of the node's resident memory (4 slots x 4,096 tokens x 18 layers).
                .with_swa_full(false)
                .with_n_threads(n)
                .with_n_threads_batch(n);
            // The tap outlives the context: it is freed after `engine::run` drops the context.
            let tap = Box::into_raw(Box::new(tap));
            let params = head::with_tap(params, tap);
            let setup = LLAMA_SETUP.lock().unwrap_or_else(|e| e.into_inner());
            let ctx = match model.new_context(backend, params) {
                Ok(c) => c,
                Err(e) => {
                    let why = take_llama_errors();
                    let _ = ready_tx.send(Err(format!("llama.cpp context: {e} {why}")));
                    drop(unsafe { Box::from_raw(tap) });
                    return;
                }
            };
            drop(setup);
            let _ = ready_tx.send(Ok(()));
            engine::run(ctx, &model, &facts, rx, SLOTS, context);
            drop(unsafe { Box::from_raw(tap) });
        })
        .map_err(|e| format!("engine thread: {e}"))?;
    ready_rx
        .recv()
        .map_err(|_| "the engine thread stopped while starting".to_owned())??;
    Ok((jobs, Admission::new(SLOTS + QUEUE), rows_scored_here))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::gguf::tests::tiny_gguf;

    fn info(meta: &[(&str, &str)], file: &str) -> ModelInfo {
        let f = tiny_gguf(meta, 0, 4);
        ModelInfo::from_header(&gguf::read_header(&f[..]).unwrap(), Path::new(file))
    }

    #[test]
    fn a_cpu_without_what_llama_cpp_was_built_for_is_told_what_it_lacks() {
        let built = "avx2,fma,avx512f,avx512vnni";
        assert_eq!(
            missing_from(built, &["avx2", "fma", "avx512f"]),
            ["avx512vnni"]
        );
        assert!(missing_from(built, &["avx2", "fma", "avx512f", "avx512vnni"]).is_empty());
        assert!(
            missing_from("", &[]).is_empty(),
            "a build that needs nothing"
        );
        // This build runs here: the tests run on the machine that built it.
        assert!(
            missing_cpu_features().is_empty(),
            "{:?}",
            missing_cpu_features()
        );
        if cfg!(target_arch = "x86_64") && x86_features().contains(&"avx2") {
            assert!(
                env!("HACA_LLAMA_ISA").contains("avx2"),
                "x86-64-v3 at least"
            );
        }
    }

    #[test]
    fn the_served_name_comes_from_general_name_else_the_file() {
        let i = info(
            &[
                ("general.architecture", "gemma3"),
                ("general.name", "Gemma 3 270m"),
            ],
            "/m/x.gguf",
        );
        assert_eq!(i.name, "gemma-3-270m");
        let i = info(
            &[("general.architecture", "qwen2")],
            "/m/Qwen2.5-0.5B-Instruct-Q4_K_M.gguf",
        );
        assert_eq!(i.name, "qwen2.5-0.5b-instruct-q4-k-m");
        assert!(!i.base, "Instruct in the name");
    }

    #[test]
    fn a_model_is_base_unless_its_names_say_instruction_tuned() {
        let base = info(
            &[
                ("general.architecture", "gemma3"),
                ("general.name", "Gemma 3 270m"),
            ],
            "/m/gemma-3-270m-q4_k_m.gguf",
        );
        assert!(base.base);
        let it = info(
            &[
                ("general.architecture", "gemma3"),
                ("general.finetune", "it"),
            ],
            "/m/g.gguf",
        );
        assert!(!it.base);
        // "it" inside a word is not the marker.
        let word = info(
            &[
                ("general.architecture", "llama"),
                ("general.name", "Kitten"),
            ],
            "/m/k.gguf",
        );
        assert!(word.base);
    }
}
