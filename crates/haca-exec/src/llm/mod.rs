//! LLM execution: OpenAI-compatible request types, the local GGUF provider (llama.cpp) and
//! its batching engine, chat templates (the GGUF's own, or the family's), and a JSON
//! recognizer for constrained answers.
//! Upstream providers and the router live in [`crate::router`] and [`crate::upstream`].

pub mod call;
pub mod chat;
mod engine;
pub mod gguf;
mod head;
pub mod json_prefix;
pub mod local;
pub mod model_home;
pub mod router;
pub mod template;
pub mod upstream;

pub use call::{call_hashes, generate_local, Call, LocalAnswer, Sink, LOCAL_MODEL};
pub use chat::{
    ChatMessage, ChatRequest, CompletionRequest, Privacy, ResponseFormat, Role, ToolChoice,
};
pub use engine::SlotPermit;
pub use head::batched_totals;
pub use local::{
    FinishReason, GenerateParams, Generation, GgufCheck, LocalLlm, ModelInfo, CONTEXT_LIMIT,
    LLM_RUNTIME, QUEUE, SLOTS,
};

/// LLM failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LlmError {
    #[error("local model could not be loaded: {0}")]
    Load(String),
    #[error("the prompt is {tokens} tokens; this model serves at most {limit} tokens of prompt and answer")]
    ContextTooLong { tokens: usize, limit: usize },
    #[error("generation failed: {0}")]
    Run(String),
    /// Every generation slot and queue place is taken; a retry may find one free.
    #[error("the local model is busy ({held} requests generating or waiting); retry shortly")]
    Busy { held: usize },
    /// The request cannot be executed as sent (for instance, it does not canonicalize).
    #[error("{0}")]
    Request(String),
}
