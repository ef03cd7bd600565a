//! One chat or completion call as haca executes and signs it: the request it signs, the
//! hashes fixed before any route is tried, and generation on the local model. Shared by the
//! gateway (which runs the local model in process) and the dev enclave (which runs it inside
//! and signs what it served), so both hash a call the same way.

use super::{
    ChatRequest, CompletionRequest, FinishReason, GenerateParams, LlmError, LocalLlm, Privacy,
    ResponseFormat, ToolChoice,
};
use haca_core::{canonical, sha256, Digest};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

/// The default local model's public name (Gemma 3 270M, the GGUF the node finds by default;
/// any other GGUF is served as `local/<its name>`).
pub const LOCAL_MODEL: &str = "local/gemma-3-270m";
/// Answer length when the request sets none: a base model rambles.
pub const DEFAULT_MAX_TOKENS: usize = 256;
/// Sampling when the request sets none: calmer than OpenAI's 1.0 for a 270M base model.
pub const DEFAULT_TEMPERATURE: f64 = 0.7;
pub const DEFAULT_TOP_P: f64 = 0.95;

/// A chat or completion call.
#[derive(Clone)]
// One per request, moved not stored: boxing the larger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Call {
    Chat(ChatRequest),
    Completion(CompletionRequest),
}

impl Call {
    pub fn model(&self) -> &str {
        match self {
            Call::Chat(c) => &c.model,
            Call::Completion(c) => &c.model,
        }
    }
    pub fn privacy(&self) -> Privacy {
        match self {
            Call::Chat(c) => c.privacy,
            Call::Completion(c) => c.privacy,
        }
    }
    pub fn stream(&self) -> bool {
        match self {
            Call::Chat(c) => c.stream,
            Call::Completion(c) => c.stream,
        }
    }
    pub fn include_usage(&self) -> bool {
        match self {
            Call::Chat(c) => c.include_usage,
            Call::Completion(c) => c.include_usage,
        }
    }
    /// The data items the call admits (chat only).
    pub fn data(&self) -> &[String] {
        match self {
            Call::Chat(c) => &c.data,
            Call::Completion(_) => &[],
        }
    }
    /// The client's body as it was sent.
    pub fn raw(&self) -> &Value {
        match self {
            Call::Chat(c) => &c.raw,
            Call::Completion(c) => &c.raw,
        }
    }
    pub fn sampling(&self) -> &super::chat::Sampling {
        match self {
            Call::Chat(c) => &c.sampling,
            Call::Completion(c) => &c.sampling,
        }
    }
    pub fn conversation(&self) -> Option<&str> {
        match self {
            Call::Chat(c) => c.conversation.as_deref(),
            Call::Completion(_) => None,
        }
    }
    /// The OpenAI path this call takes upstream.
    pub fn upstream_path(&self) -> &'static str {
        match self {
            Call::Chat(_) => "/chat/completions",
            Call::Completion(_) => "/completions",
        }
    }
    /// Whether the local model answers with tool calls rather than text.
    pub fn local_tools(&self) -> bool {
        match self {
            Call::Chat(c) => c.tools.is_some() && c.tool_choice != ToolChoice::None,
            Call::Completion(_) => false,
        }
    }
}

/// The request haca signs: the client's body without the transport fields (`stream`,
/// `stream_options`) and with `privacy` always present, so the requirement is part of it.
pub fn signed_request(call: &Call) -> Value {
    let mut body = call.raw().clone();
    if let Some(o) = body.as_object_mut() {
        o.remove("stream");
        o.remove("stream_options");
        o.insert("privacy".into(), call.privacy().as_str().into());
        o.insert(
            "kind".into(),
            match call {
                Call::Chat(_) => "chat",
                Call::Completion(_) => "completion",
            }
            .into(),
        );
    }
    body
}

/// SHA-256 of a value's canonical JSON (RFC 8785).
pub fn hash_json(v: &Value) -> Result<Digest, LlmError> {
    canonical::to_vec(v)
        .map(|b| sha256(&b))
        .map_err(|e| LlmError::Request(format!("body: {e}")))
}

/// What a chat run outputs, as its output hash covers it.
pub fn output_json(content: &str, tool_calls: &[Value], finish_reason: &str) -> Value {
    json!({"content": content, "tool_calls": tool_calls, "finish_reason": finish_reason})
}

/// The request hash (of [`signed_request`]) and the input hash (of the messages, or the
/// prompt) of `call`.
pub fn call_hashes(call: &Call) -> Result<(Digest, Digest), LlmError> {
    let request_hash = hash_json(&signed_request(call))?;
    let input = match call {
        Call::Chat(c) => c.raw["messages"].clone(),
        Call::Completion(c) => c.prompt.clone().into(),
    };
    Ok((request_hash, hash_json(&input)?))
}

/// Where a streamed answer's pieces go: OpenAI delta objects (`{"content": ...}` or
/// `{"tool_calls": [...]}`). A failed send means the client went away.
pub type Sink = mpsc::UnboundedSender<Value>;

/// A generation's stop flag, shared between the blocking thread that generates and the
/// request that waits for it: set, the generation ends at its next token (`cancelled`).
#[derive(Clone, Debug, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    pub fn new() -> Cancel {
        Cancel::default()
    }
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
    /// A guard that cancels when it is dropped. The future that waits for a generation holds
    /// it, so that dropping that future (its client went away, the server stopped) stops the
    /// generation too, instead of leaving it to run on a blocking thread to its last token.
    pub fn on_drop(&self) -> CancelOnDrop {
        CancelOnDrop(self.clone())
    }
}

/// See [`Cancel::on_drop`].
#[must_use = "the generation is cancelled when this guard is dropped"]
pub struct CancelOnDrop(Cancel);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// A local model's answer.
pub struct LocalAnswer {
    pub content: String,
    pub tool_calls: Vec<Value>,
    pub finish_reason: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// The grammar a local answer is sampled under, made from a schema by llama.cpp's converter:
/// a strict `json_schema` answer's schema, or a forced tool call's `parameters` (the prompt
/// already holds `{"name": ..., "arguments": `, so the grammar covers the arguments and the
/// closing brace). `None` for anything else. A schema the converter cannot express is the
/// request's fault, named by its field.
pub fn schema_grammar(call: &Call) -> Result<Option<String>, LlmError> {
    let Call::Chat(c) = call else { return Ok(None) };
    if c.tool_choice == ToolChoice::Required {
        return required_tool_grammar(c.tools.as_ref()).map(Some);
    }
    if let ToolChoice::Function(name) = &c.tool_choice {
        let tools = c.tools.as_ref().and_then(Value::as_array);
        let Some((i, tool)) = tools.and_then(|t| {
            t.iter()
                .enumerate()
                .find(|(_, t)| t["function"]["name"] == name.as_str())
        }) else {
            return Ok(None);
        };
        let params = &tool["function"]["parameters"];
        if !params.is_object() {
            return Ok(None);
        }
        let g = convert(params, &format!("tools[{i}].function.parameters"))?;
        return Ok(Some(then_closing_brace(&g)));
    }
    let ResponseFormat::JsonSchema {
        schema,
        strict: true,
        ..
    } = &c.response_format
    else {
        return Ok(None);
    };
    convert(schema, "response_format.json_schema.schema").map(Some)
}

/// A grammar for `schema`, or an error naming `field`.
fn convert(schema: &Value, field: &str) -> Result<String, LlmError> {
    let text = schema.to_string();
    // The converter throws on what it cannot express; the binding turns that into an error,
    // but guard the unwinding boundary all the same.
    let converted = std::panic::catch_unwind(|| llama_cpp_2::json_schema_to_grammar(&text));
    match converted {
        Ok(Ok(g)) if !g.trim().is_empty() => Ok(g),
        Ok(Ok(_)) => Err(LlmError::Request(format!(
            "{field}: no grammar could be made from it"
        ))),
        Ok(Err(e)) => Err(LlmError::Request(format!(
            "{field}: cannot be enforced: {e}"
        ))),
        Err(_) => Err(LlmError::Request(format!("{field}: cannot be enforced"))),
    }
}

/// The grammar of `tool_choice: "required"`: the prompt already holds `{"name": "`, so the
/// answer is one of the tools' names, then `", "arguments": `, then that tool's arguments under
/// its own `parameters` schema, then the closing `}`. Each tool's rules are renamed apart
/// (`t0-…`, `t1-…`) because the converter names rules the same way for every schema.
fn required_tool_grammar(tools: Option<&Value>) -> Result<String, LlmError> {
    let tools = tools
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    let mut alternatives = Vec::new();
    let mut rules = Vec::new();
    for (i, tool) in tools.iter().enumerate() {
        let Some(name) = tool["function"]["name"].as_str() else {
            continue;
        };
        let params = &tool["function"]["parameters"];
        let any_object = json!({"type": "object"});
        let schema = if params.is_object() {
            params
        } else {
            &any_object
        };
        let g = convert(schema, &format!("tools[{i}].function.parameters"))?;
        let prefix = format!("t{i}-");
        rules.push(prefix_rules(&g, &prefix));
        // The name as JSON writes it inside its quotes, then the arguments' key.
        let quoted = Value::from(name).to_string();
        let head = format!("{}\", \"arguments\": ", &quoted[1..quoted.len() - 1]);
        alternatives.push(format!("{} {prefix}root", gbnf_literal(&head)));
    }
    if alternatives.is_empty() {
        return Err(LlmError::Request(
            "tool_choice: \"required\" needs at least one tool with a function name".into(),
        ));
    }
    Ok(format!(
        "root ::= ( {} ) \"}}\"\n{}",
        alternatives.join(" | "),
        rules.join("\n")
    ))
}

/// `s` as a GBNF string literal.
fn gbnf_literal(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Every rule of `grammar` (one `name ::= body` per line, as the converter writes them) renamed
/// to `prefix` + its name, in its definition and in every reference; literals (`"…"`) and
/// character classes (`[…]`) are left as they are.
fn prefix_rules(grammar: &str, prefix: &str) -> String {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    let names: std::collections::HashSet<&str> = grammar
        .lines()
        .filter_map(|l| l.split_once("::=").map(|(n, _)| n.trim()))
        .collect();
    let mut out = String::with_capacity(grammar.len() + 64);
    for line in grammar.lines() {
        let mut chars = line.char_indices().peekable();
        while let Some((at, c)) = chars.next() {
            match c {
                '"' | '[' => {
                    let close = if c == '"' { '"' } else { ']' };
                    out.push(c);
                    while let Some((_, d)) = chars.next() {
                        out.push(d);
                        if d == '\\' {
                            if let Some((_, e)) = chars.next() {
                                out.push(e);
                            }
                        } else if d == close {
                            break;
                        }
                    }
                }
                c if is_name(c) => {
                    let mut end = at + c.len_utf8();
                    while let Some(&(i, d)) = chars.peek() {
                        if !is_name(d) {
                            break;
                        }
                        end = i + d.len_utf8();
                        chars.next();
                    }
                    let word = &line[at..end];
                    if names.contains(word) {
                        out.push_str(prefix);
                    }
                    out.push_str(word);
                }
                c => out.push(c),
            }
        }
        out.push('\n');
    }
    out
}

/// `grammar` renamed apart (`args-…`), followed by the `}` that closes a tool call's object.
/// Every rule is renamed, references too, so a rule that refers back to the schema's root
/// (a recursive schema) still means the arguments, not the whole call.
fn then_closing_brace(grammar: &str) -> String {
    format!(
        "root ::= args-root \"}}\"\n{}",
        prefix_rules(grammar, "args-")
    )
}

/// The prompt of `call` on `llm`, as tokens.
pub fn prompt_tokens(llm: &LocalLlm, call: &Call) -> Result<Vec<u32>, LlmError> {
    match call {
        Call::Chat(c) => llm.chat_prompt(&c.messages, c.tools.as_ref(), &c.tool_choice),
        Call::Completion(c) => llm.text_prompt(&c.prompt),
    }
}

/// Answers `call` on the local model, continuing `partial` (another route's words), sending
/// text to `sink` as it is generated, until it ends, the sink's receiver is gone or `cancel`
/// is set (finish reason `cancelled`). Blocking: callers run it on a blocking thread.
pub fn generate_local(
    llm: &LocalLlm,
    call: &Call,
    partial: &str,
    sink: Option<Sink>,
    cancel: &Cancel,
) -> Result<LocalAnswer, LlmError> {
    let sampling = call.sampling();
    let grammar = schema_grammar(call)?;
    let mut prompt = prompt_tokens(llm, call)?;
    let json = match call {
        Call::Chat(c) => LocalLlm::json_prefix(&c.response_format, &c.tool_choice)
            .filter(|_| call.local_tools() || c.response_format != ResponseFormat::Text),
        Call::Completion(_) => None,
    };
    // Another route's partial answer, then any forced JSON start, are the model's own
    // words so far.
    for text in [partial, json.as_deref().unwrap_or_default()] {
        if !text.is_empty() {
            prompt.extend(llm.encode(text)?);
        }
    }
    let params = GenerateParams {
        max_tokens: sampling
            .max_tokens
            .map(|m| m as usize)
            .unwrap_or(DEFAULT_MAX_TOKENS),
        min_tokens: sampling.min_tokens.unwrap_or(0) as usize,
        temperature: sampling.temperature.unwrap_or(DEFAULT_TEMPERATURE),
        top_p: sampling.top_p.unwrap_or(DEFAULT_TOP_P),
        seed: sampling.seed.unwrap_or_else(rand::random),
        stop: sampling.stop.clone(),
        json,
    };
    // With tools the answer may turn out to be a call: it is sent whole at the end.
    let buffered = call.local_tools();
    // A stream's client that left, or a waiter that was dropped, gives the slot up at once.
    let gone = || cancel.is_cancelled() || sink.as_ref().is_some_and(|s| s.is_closed());
    let generated = llm.generate_with(&prompt, &params, grammar, &gone, &mut |piece| {
        !cancel.is_cancelled()
            && match &sink {
                Some(s) if !buffered => s.send(json!({"content": piece})).is_ok(),
                _ => true,
            }
    })?;
    tracing::info!(
        "local/{}: {} prompt tokens in {} ms, {} tokens at {:.1} tokens/s ({})",
        llm.info.name,
        generated.prompt_tokens,
        generated.prefill.as_millis(),
        generated.completion_tokens,
        generated.tokens_per_second(),
        generated.finish_reason.as_str()
    );
    let mut content = generated.text;
    let mut tool_calls = Vec::new();
    let mut finish_reason = match generated.finish_reason {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::Cancelled => "cancelled",
    }
    .to_owned();
    if let Call::Chat(c) = call {
        if call.local_tools() {
            if let Some(tc) = as_tool_call(&content, c.tools.as_ref()) {
                tool_calls.push(tc);
                content.clear();
                finish_reason = "tool_calls".into();
            }
            if let Some(s) = &sink {
                send_whole(s, &content, &tool_calls);
            }
        }
    }
    Ok(LocalAnswer {
        content,
        tool_calls,
        finish_reason,
        prompt_tokens: generated.prompt_tokens as u64,
        completion_tokens: generated.completion_tokens as u64,
    })
}

/// Sends an answer made whole (in the enclave, or held back because it may be a tool call) as
/// one delta: its text, or its tool calls.
pub fn send_whole(sink: &Sink, content: &str, tool_calls: &[Value]) {
    let delta = if tool_calls.is_empty() {
        json!({"content": content})
    } else {
        let mut calls = tool_calls.to_vec();
        calls[0]["index"] = 0.into();
        json!({"tool_calls": calls})
    };
    // A closed sink means the client went away; the run is recorded all the same.
    let _ = sink.send(delta);
}

/// The answer as a tool call, when it is one JSON object naming one of the tools.
fn as_tool_call(text: &str, tools: Option<&Value>) -> Option<Value> {
    let v: Value = serde_json::from_str(text.trim()).ok()?;
    let name = v["name"].as_str()?;
    let known = tools?
        .as_array()?
        .iter()
        .any(|t| t["function"]["name"] == name);
    if !known {
        return None;
    }
    let args = v.get("arguments").cloned().unwrap_or(json!({}));
    Some(json!({
        "id": format!("call_{}", haca_core::random_hex(12)),
        "type": "function",
        "function": {"name": name, "arguments": args.to_string()},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(body: Value) -> Call {
        Call::Chat(ChatRequest::parse(body).expect("a valid chat body"))
    }

    #[test]
    fn the_signed_request_drops_transport_fields_and_always_names_privacy() {
        let c = chat(json!({"model": "local/gemma-3-270m", "stream": true,
            "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "hi"}]}));
        let s = signed_request(&c);
        assert!(s.get("stream").is_none() && s.get("stream_options").is_none());
        assert_eq!(s["privacy"], c.privacy().as_str());
        assert_eq!(s["kind"], "chat");
        // Streaming or not, the same call hashes the same.
        let whole = chat(json!({"model": "local/gemma-3-270m",
            "messages": [{"role": "user", "content": "hi"}]}));
        assert_eq!(call_hashes(&c).unwrap(), call_hashes(&whole).unwrap());
    }

    #[test]
    fn a_tool_grammar_closes_the_call_after_its_arguments() {
        let g =
            then_closing_brace("root ::= \"{\" space item? \"}\"\nitem ::= root\nspace ::= \" \"?");
        assert_eq!(
            g,
            "root ::= args-root \"}\"\nargs-root ::= \"{\" args-space args-item? \"}\"\nargs-item ::= args-root\nargs-space ::= \" \"?\n"
        );
    }

    #[test]
    fn rules_are_renamed_apart_but_literals_and_classes_are_not() {
        let g = "root ::= \"{\" space \"\\\"space\\\"\" [a-z\\]space] value\nvalue ::= \"x\"\nspace ::= \" \"?";
        assert_eq!(
            prefix_rules(g, "t1-"),
            "t1-root ::= \"{\" t1-space \"\\\"space\\\"\" [a-z\\]space] t1-value\nt1-value ::= \"x\"\nt1-space ::= \" \"?\n"
        );
    }

    #[test]
    fn a_required_tool_call_is_one_of_the_tools_by_name_then_its_arguments() {
        let tools = json!([
            {"type": "function", "function": {"name": "a", "parameters": {"type": "object"}}},
            {"type": "function", "function": {"name": "say \"hi\""}}
        ]);
        let g = required_tool_grammar(Some(&tools)).unwrap();
        let root = g.lines().next().unwrap();
        assert_eq!(
            root,
            r#"root ::= ( "a\", \"arguments\": " t0-root | "say \\\"hi\\\"\", \"arguments\": " t1-root ) "}""#
        );
        assert!(g.lines().any(|l| l.starts_with("t0-root ::=")), "{g}");
        assert!(g.lines().any(|l| l.starts_with("t1-root ::=")), "{g}");
        assert!(!g.lines().skip(1).any(|l| l.starts_with("root ::=")), "{g}");
        let e = required_tool_grammar(Some(&json!([]))).unwrap_err();
        assert!(e.to_string().contains("tool_choice"), "{e}");
    }

    #[test]
    fn dropping_the_guard_cancels() {
        let c = Cancel::new();
        let guard = c.on_drop();
        assert!(!c.clone().is_cancelled());
        drop(guard);
        assert!(c.is_cancelled());
    }

    #[test]
    fn a_tool_call_is_recognized_only_for_a_known_tool() {
        let tools = json!([{"type": "function", "function": {"name": "weather"}}]);
        let tc = as_tool_call(
            r#" {"name": "weather", "arguments": {"city": "Oslo"}} "#,
            Some(&tools),
        )
        .expect("a call");
        assert_eq!(tc["function"]["name"], "weather");
        assert_eq!(tc["function"]["arguments"], r#"{"city":"Oslo"}"#);
        assert!(as_tool_call(r#"{"name": "other"}"#, Some(&tools)).is_none());
        assert!(as_tool_call("plain words", Some(&tools)).is_none());
    }
}
