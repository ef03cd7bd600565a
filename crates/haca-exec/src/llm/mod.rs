//! LLM execution: OpenAI-compatible request types, the local GGUF provider (candle) and its
//! tokenizer, Gemma's chat template, and a JSON recognizer for constrained answers.
//! Upstream providers and the router live in [`crate::router`] and [`crate::upstream`].

pub mod call;
pub mod chat;
pub mod json_prefix;
pub mod local;
pub mod model_home;
pub mod router;
pub mod template;
pub mod tokenizer;
pub mod upstream;

pub use call::{call_hashes, generate_local, Call, LocalAnswer, Sink, LOCAL_MODEL};
pub use chat::{
    ChatMessage, ChatRequest, CompletionRequest, Privacy, ResponseFormat, Role, ToolChoice,
};
pub use local::{FinishReason, GenerateParams, Generation, LocalLlm, CONTEXT_LIMIT, LLM_RUNTIME};

/// LLM failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LlmError {
    #[error("local model could not be loaded: {0}")]
    Load(String),
    #[error("the prompt is {tokens} tokens; this model serves at most {limit} tokens of prompt and answer")]
    ContextTooLong { tokens: usize, limit: usize },
    #[error("generation failed: {0}")]
    Run(String),
    /// The request cannot be executed as sent (for instance, it does not canonicalize).
    #[error("{0}")]
    Request(String),
}
