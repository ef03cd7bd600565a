//! OpenAI-compatible chat and completion requests: parsed and checked field by field, so a
//! bad body is refused with the field's path and the reason before any provider sees it.
//! The raw body is kept too: upstream providers get the client's own fields.

use super::CONTEXT_LIMIT;
use crate::ExecError;
use serde_json::Value;

/// Who wrote a message. `developer` is OpenAI's newer name for `system`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    System,
    #[default]
    User,
    Assistant,
    Tool,
}

/// One message with its content flattened to text.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
    /// An assistant message's tool calls, as OpenAI writes them.
    pub tool_calls: Option<Vec<Value>>,
    pub tool_call_id: Option<String>,
}

/// The privacy a request requires of the path its prompt takes (the body field `privacy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Privacy {
    /// Any configured route.
    #[default]
    Any,
    /// The operator of the route must not see the prompt: an enclave (or an OHTTP path).
    Private,
    /// Executed inside an attested enclave.
    Tee,
}

impl Privacy {
    pub fn as_str(self) -> &'static str {
        match self {
            Privacy::Any => "any",
            Privacy::Private => "private",
            Privacy::Tee => "tee",
        }
    }

    pub fn parse(s: &str) -> Option<Privacy> {
        match s {
            "any" => Some(Privacy::Any),
            "private" => Some(Privacy::Private),
            "tee" => Some(Privacy::Tee),
            _ => None,
        }
    }
}

/// What the answer must look like (`response_format`).
#[derive(Debug, Clone, PartialEq, Default)]
pub enum ResponseFormat {
    #[default]
    Text,
    /// Any JSON object.
    JsonObject,
    /// A JSON object meant to match this schema; `strict`: held to it (local models sample
    /// under a grammar made from the schema).
    JsonSchema {
        name: String,
        schema: Value,
        strict: bool,
    },
}

/// `tool_choice`.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum ToolChoice {
    #[default]
    Auto,
    None,
    Required,
    Function(String),
}

/// Sampling and length settings shared by chat and completions.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampling {
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub max_tokens: Option<u32>,
    /// Tokens generated before the end of the answer is allowed (vLLM's `min_tokens`).
    pub min_tokens: Option<u32>,
    pub stop: Vec<String>,
    pub seed: Option<u64>,
}

/// A checked `POST /v1/chat/completions` body.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    pub sampling: Sampling,
    pub stream: bool,
    /// `stream_options.include_usage`: a last chunk carries the token counts.
    pub include_usage: bool,
    pub tools: Option<Value>,
    pub tool_choice: ToolChoice,
    pub response_format: ResponseFormat,
    pub privacy: Privacy,
    /// haca's conversation id: turns of one conversation are kept together.
    pub conversation: Option<String>,
    /// haca's `data`: ids of data items the call admits (a data node fetched and signed
    /// them); the gateway checks them and lists them in the receipt's data box.
    pub data: Vec<String>,
    /// The body as the client sent it, for upstream providers.
    pub raw: Value,
}

/// A checked `POST /v1/completions` body.
#[derive(Debug, Clone)]
pub struct CompletionRequest {
    pub model: String,
    pub prompt: String,
    pub sampling: Sampling,
    pub stream: bool,
    pub include_usage: bool,
    pub privacy: Privacy,
    pub raw: Value,
}

// The field readers below are shared with image requests (`crate::image`), which are read
// by the same rules.
pub(crate) fn bad(field: impl Into<String>, reason: impl Into<String>) -> ExecError {
    ExecError::Input {
        field: field.into(),
        reason: reason.into(),
    }
}

pub(crate) fn object(body: &Value) -> Result<&serde_json::Map<String, Value>, ExecError> {
    body.as_object()
        .ok_or_else(|| bad("body", "must be a JSON object"))
}

pub(crate) fn opt<'a>(o: &'a serde_json::Map<String, Value>, key: &str) -> Option<&'a Value> {
    o.get(key).filter(|v| !v.is_null())
}

fn model(o: &serde_json::Map<String, Value>) -> Result<String, ExecError> {
    non_empty_string(o, "model")
}

/// A required field that must be a string with more than whitespace.
pub(crate) fn non_empty_string(
    o: &serde_json::Map<String, Value>,
    key: &str,
) -> Result<String, ExecError> {
    match opt(o, key) {
        None => Err(bad(key, "missing")),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
        Some(_) => Err(bad(key, "must be a non-empty string")),
    }
}

pub(crate) fn privacy(o: &serde_json::Map<String, Value>) -> Result<Privacy, ExecError> {
    match opt(o, "privacy") {
        None => Ok(Privacy::Any),
        Some(v) => v
            .as_str()
            .and_then(Privacy::parse)
            .ok_or_else(|| bad("privacy", "must be \"any\", \"private\" or \"tee\"")),
    }
}

pub(crate) fn boolean(o: &serde_json::Map<String, Value>, key: &str) -> Result<bool, ExecError> {
    match opt(o, key) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(bad(key, "must be true or false")),
    }
}

fn include_usage(o: &serde_json::Map<String, Value>) -> Result<bool, ExecError> {
    match opt(o, "stream_options") {
        None => Ok(false),
        Some(Value::Object(so)) => boolean(so, "include_usage")
            .map_err(|_| bad("stream_options.include_usage", "must be true or false")),
        Some(_) => Err(bad("stream_options", "must be an object")),
    }
}

fn sampling(o: &serde_json::Map<String, Value>) -> Result<Sampling, ExecError> {
    let number = |key: &str, lo: f64, hi: f64| -> Result<Option<f64>, ExecError> {
        match opt(o, key) {
            None => Ok(None),
            Some(v) => match v.as_f64() {
                Some(x) if (lo..=hi).contains(&x) => Ok(Some(x)),
                _ => Err(bad(key, format!("must be a number from {lo} to {hi}"))),
            },
        }
    };
    let temperature = number("temperature", 0.0, 2.0)?;
    let top_p = number("top_p", 0.0, 1.0)?;
    if top_p == Some(0.0) {
        return Err(bad("top_p", "must be above 0"));
    }
    // No answer is longer than the context it shares with its prompt: a larger budget would
    // only keep a generation (and a core) busy for a client that asked for the impossible.
    let mut max_tokens = None;
    for key in ["max_tokens", "max_completion_tokens"] {
        if let Some(v) = opt(o, key) {
            match v.as_u64() {
                Some(n) if (1..=CONTEXT_LIMIT as u64).contains(&n) => max_tokens = Some(n as u32),
                Some(n) if n > CONTEXT_LIMIT as u64 => {
                    return Err(bad(
                        key,
                        format!(
                            "{n} is above the context of {CONTEXT_LIMIT} tokens (prompt and answer together)"
                        ),
                    ))
                }
                _ => return Err(bad(key, "must be a whole number of at least 1")),
            }
        }
    }
    let min_tokens = match opt(o, "min_tokens") {
        None => None,
        Some(v) => match v.as_u64() {
            Some(n) if n <= u32::MAX as u64 => Some(n as u32),
            _ => return Err(bad("min_tokens", "must be a whole number")),
        },
    };
    if let (Some(min), Some(max)) = (min_tokens, max_tokens) {
        if min > max {
            return Err(bad(
                "min_tokens",
                format!("{min} is above max_tokens ({max})"),
            ));
        }
    }
    let stop = match opt(o, "stop") {
        None => vec![],
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => {
            if a.len() > 4 {
                return Err(bad("stop", "at most 4 stop sequences"));
            }
            a.iter()
                .enumerate()
                .map(|(i, s)| {
                    s.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| bad(format!("stop[{i}]"), "must be a string"))
                })
                .collect::<Result<_, _>>()?
        }
        Some(_) => return Err(bad("stop", "must be a string or an array of strings")),
    };
    if let Some(i) = stop.iter().position(|s| s.is_empty()) {
        return Err(bad(format!("stop[{i}]"), "must not be empty"));
    }
    let seed = match opt(o, "seed") {
        None => None,
        Some(v) => Some(
            v.as_u64()
                .or_else(|| v.as_i64().map(|i| i as u64))
                .ok_or_else(|| bad("seed", "must be an integer"))?,
        ),
    };
    if let Some(n) = opt(o, "n") {
        if n.as_u64() != Some(1) {
            return Err(bad("n", "only n = 1 is served (one choice per request)"));
        }
    }
    Ok(Sampling {
        temperature,
        top_p,
        max_tokens,
        min_tokens,
        stop,
        seed,
    })
}

/// The text of a message's `content`: a string, or an array of `{"type": "text"}` parts.
fn content_text(v: Option<&Value>, field: &str) -> Result<String, ExecError> {
    match v {
        None => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for (i, p) in parts.iter().enumerate() {
                match (p["type"].as_str(), p["text"].as_str()) {
                    (Some("text"), Some(t)) => text.push_str(t),
                    (Some("text"), None) => {
                        return Err(bad(format!("{field}[{i}].text"), "must be a string"))
                    }
                    (Some(other), _) => {
                        return Err(bad(
                            format!("{field}[{i}].type"),
                            format!("{other:?} parts are not supported; send text"),
                        ))
                    }
                    (None, _) => return Err(bad(format!("{field}[{i}].type"), "missing")),
                }
            }
            Ok(text)
        }
        Some(_) => Err(bad(field, "must be a string or an array of content parts")),
    }
}

fn messages(o: &serde_json::Map<String, Value>) -> Result<Vec<ChatMessage>, ExecError> {
    let list = match opt(o, "messages") {
        None => return Err(bad("messages", "missing")),
        Some(Value::Array(a)) if !a.is_empty() => a,
        Some(Value::Array(_)) => return Err(bad("messages", "must hold at least one message")),
        Some(_) => return Err(bad("messages", "must be an array of messages")),
    };
    let mut out = Vec::with_capacity(list.len());
    for (i, m) in list.iter().enumerate() {
        let field = |k: &str| format!("messages[{i}].{k}");
        let m = m
            .as_object()
            .ok_or_else(|| bad(format!("messages[{i}]"), "must be an object"))?;
        let role = match m.get("role").and_then(Value::as_str) {
            Some("system") | Some("developer") => Role::System,
            Some("user") => Role::User,
            Some("assistant") => Role::Assistant,
            Some("tool") => Role::Tool,
            Some(r) => {
                return Err(bad(
                    field("role"),
                    format!("{r:?} is not one of system, developer, user, assistant, tool"),
                ))
            }
            None => return Err(bad(field("role"), "missing")),
        };
        let content = content_text(opt(m, "content"), &field("content"))?;
        let tool_calls = match opt(m, "tool_calls") {
            None => None,
            Some(Value::Array(calls)) if role == Role::Assistant => Some(calls.clone()),
            Some(_) if role != Role::Assistant => {
                return Err(bad(
                    field("tool_calls"),
                    "only assistant messages carry tool calls",
                ))
            }
            Some(_) => return Err(bad(field("tool_calls"), "must be an array")),
        };
        let tool_call_id = match (role, opt(m, "tool_call_id")) {
            (Role::Tool, Some(Value::String(s))) => Some(s.clone()),
            (Role::Tool, _) => return Err(bad(field("tool_call_id"), "a tool message needs one")),
            _ => None,
        };
        if role != Role::Assistant && opt(m, "content").is_none() {
            return Err(bad(field("content"), "missing"));
        }
        if role == Role::Assistant && content.is_empty() && tool_calls.is_none() {
            return Err(bad(
                field("content"),
                "an assistant message needs content or tool calls",
            ));
        }
        out.push(ChatMessage {
            role,
            content,
            tool_calls,
            tool_call_id,
        });
    }
    Ok(out)
}

fn tools(o: &serde_json::Map<String, Value>) -> Result<(Option<Value>, ToolChoice), ExecError> {
    let tools = match opt(o, "tools") {
        None => None,
        Some(Value::Array(list)) => {
            for (i, t) in list.iter().enumerate() {
                if t["type"].as_str() != Some("function") {
                    return Err(bad(format!("tools[{i}].type"), "must be \"function\""));
                }
                if t["function"]["name"].as_str().is_none_or(str::is_empty) {
                    return Err(bad(
                        format!("tools[{i}].function.name"),
                        "must be a non-empty string",
                    ));
                }
                if let Some(p) = t["function"].get("parameters") {
                    if !p.is_object() {
                        return Err(bad(
                            format!("tools[{i}].function.parameters"),
                            "must be a JSON Schema object",
                        ));
                    }
                }
            }
            Some(Value::Array(list.clone()))
        }
        Some(_) => return Err(bad("tools", "must be an array of tools")),
    };
    let names: Vec<&str> = tools
        .as_ref()
        .and_then(Value::as_array)
        .map(|l| {
            l.iter()
                .filter_map(|t| t["function"]["name"].as_str())
                .collect()
        })
        .unwrap_or_default();
    let choice = match opt(o, "tool_choice") {
        None => ToolChoice::Auto,
        Some(Value::String(s)) => match s.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            _ => {
                return Err(bad(
                    "tool_choice",
                    "must be \"auto\", \"none\", \"required\" or a function",
                ))
            }
        },
        Some(v) => match v["function"]["name"].as_str() {
            Some(n) if v["type"] == "function" => ToolChoice::Function(n.to_owned()),
            _ => {
                return Err(bad(
                    "tool_choice",
                    "must be {\"type\": \"function\", \"function\": {\"name\": ...}}",
                ))
            }
        },
    };
    match &choice {
        ToolChoice::Required if names.is_empty() => {
            return Err(bad("tool_choice", "\"required\" needs tools"))
        }
        ToolChoice::Function(n) if !names.contains(&n.as_str()) => {
            return Err(bad(
                "tool_choice.function.name",
                format!("{n:?} is not one of the tools"),
            ))
        }
        _ => {}
    }
    Ok((tools, choice))
}

fn response_format(o: &serde_json::Map<String, Value>) -> Result<ResponseFormat, ExecError> {
    let Some(rf) = opt(o, "response_format") else {
        return Ok(ResponseFormat::Text);
    };
    match rf["type"].as_str() {
        Some("text") => Ok(ResponseFormat::Text),
        Some("json_object") => Ok(ResponseFormat::JsonObject),
        Some("json_schema") => {
            let js = &rf["json_schema"];
            let name = js["name"]
                .as_str()
                .ok_or_else(|| bad("response_format.json_schema.name", "missing"))?;
            let schema = js
                .get("schema")
                .cloned()
                .unwrap_or(Value::Object(Default::default()));
            if !schema.is_object() {
                return Err(bad(
                    "response_format.json_schema.schema",
                    "must be a JSON Schema object",
                ));
            }
            let strict = match js.get("strict") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => {
                    return Err(bad(
                        "response_format.json_schema.strict",
                        "must be true or false",
                    ))
                }
            };
            Ok(ResponseFormat::JsonSchema {
                name: name.to_owned(),
                schema,
                strict,
            })
        }
        Some(t) => Err(bad(
            "response_format.type",
            format!("{t:?} is not text, json_object or json_schema"),
        )),
        None => Err(bad("response_format.type", "missing")),
    }
}

/// haca's `data` field: a list of data item ids (strings).
fn data_ids(o: &serde_json::Map<String, Value>) -> Result<Vec<String>, ExecError> {
    match opt(o, "data") {
        None => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| bad(format!("data[{i}]"), "must be a data item id (a string)"))
            })
            .collect(),
        Some(_) => Err(bad("data", "must be a list of data item ids")),
    }
}

impl ChatRequest {
    pub fn parse(body: Value) -> Result<ChatRequest, ExecError> {
        let o = object(&body)?;
        let (tools, tool_choice) = tools(o)?;
        let conversation = match opt(o, "conversation") {
            None => None,
            Some(Value::String(s)) if !s.is_empty() && s.len() <= 128 => Some(s.clone()),
            Some(_) => {
                return Err(bad(
                    "conversation",
                    "must be a string of 1 to 128 characters",
                ))
            }
        };
        Ok(ChatRequest {
            model: model(o)?,
            messages: messages(o)?,
            sampling: sampling(o)?,
            stream: boolean(o, "stream")?,
            include_usage: include_usage(o)?,
            tools,
            tool_choice,
            response_format: response_format(o)?,
            privacy: privacy(o)?,
            conversation,
            data: data_ids(o)?,
            raw: body,
        })
    }
}

impl CompletionRequest {
    pub fn parse(body: Value) -> Result<CompletionRequest, ExecError> {
        let o = object(&body)?;
        let prompt = match opt(o, "prompt") {
            None => return Err(bad("prompt", "missing")),
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(a)) if a.len() == 1 && a[0].is_string() => {
                a[0].as_str().unwrap_or_default().to_owned()
            }
            Some(_) => return Err(bad("prompt", "must be a string (one prompt per request)")),
        };
        Ok(CompletionRequest {
            model: model(o)?,
            prompt,
            sampling: sampling(o)?,
            stream: boolean(o, "stream")?,
            include_usage: include_usage(o)?,
            privacy: privacy(o)?,
            raw: body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field_of(body: Value) -> String {
        match ChatRequest::parse(body) {
            Err(ExecError::Input { field, .. }) => field,
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    #[test]
    fn a_plain_request_parses() {
        let r = ChatRequest::parse(json!({
            "model": "local/gemma-3-270m",
            "messages": [{"role": "developer", "content": "Be brief."},
                         {"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
            "temperature": 0, "max_tokens": 8, "stop": "\n", "stream": true,
            "stream_options": {"include_usage": true}, "privacy": "private"
        }))
        .unwrap();
        assert_eq!(r.messages[0].role, Role::System);
        assert_eq!(r.messages[1].content, "Hi");
        assert_eq!(r.sampling.max_tokens, Some(8));
        assert_eq!(r.sampling.stop, vec!["\n"]);
        assert!(r.stream && r.include_usage);
        assert_eq!(r.privacy, Privacy::Private);
    }

    #[test]
    fn max_tokens_is_capped_at_the_context() {
        let body = |key: &str, n: u64| json!({"model": "m", "messages": [{"role": "user", "content": "x"}], key: n});
        for key in ["max_tokens", "max_completion_tokens"] {
            assert_eq!(field_of(body(key, CONTEXT_LIMIT as u64 + 1)), key);
            assert_eq!(field_of(body(key, 1_000_000_000)), key);
            let ok = ChatRequest::parse(body(key, CONTEXT_LIMIT as u64)).unwrap();
            assert_eq!(ok.sampling.max_tokens, Some(CONTEXT_LIMIT as u32));
        }
    }

    #[test]
    fn bad_fields_are_named() {
        let base = |extra: Value| {
            let mut b = json!({"model": "m", "messages": [{"role": "user", "content": "x"}]});
            for (k, v) in extra.as_object().unwrap() {
                b[k] = v.clone();
            }
            b
        };
        assert_eq!(field_of(json!({"messages": []})), "model");
        assert_eq!(field_of(json!({"model": "m", "messages": []})), "messages");
        assert_eq!(
            field_of(json!({"model": "m", "messages": [{"role": "wizard", "content": "x"}]})),
            "messages[0].role"
        );
        assert_eq!(
            field_of(
                json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]})
            ),
            "messages[0].content[0].type"
        );
        assert_eq!(
            field_of(json!({"model": "m", "messages": [{"role": "tool", "content": "4"}]})),
            "messages[0].tool_call_id"
        );
        assert_eq!(field_of(base(json!({"temperature": 3}))), "temperature");
        assert_eq!(field_of(base(json!({"data": "abc"}))), "data");
        assert_eq!(field_of(base(json!({"data": ["ab", 7]}))), "data[1]");
        assert_eq!(field_of(base(json!({"max_tokens": 0}))), "max_tokens");
        assert_eq!(field_of(base(json!({"stop": [1]}))), "stop[0]");
        assert_eq!(field_of(base(json!({"privacy": "secret"}))), "privacy");
        assert_eq!(field_of(base(json!({"n": 2}))), "n");
        assert_eq!(
            field_of(base(json!({"response_format": {"type": "yaml"}}))),
            "response_format.type"
        );
        assert_eq!(
            field_of(base(
                json!({"tools": [{"type": "function", "function": {"name": "f"}}],
                                 "tool_choice": {"type": "function", "function": {"name": "g"}}})
            )),
            "tool_choice.function.name"
        );
        assert_eq!(field_of(json!([1])), "body");
    }

    fn any_json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            (-1e9f64..1e9).prop_map(Value::from),
            prop_oneof![
                Just("model".to_string()),
                Just("messages".to_string()),
                Just("role".to_string()),
                Just("user".to_string()),
                Just("tool".to_string()),
                Just("content".to_string()),
                Just("function".to_string()),
                Just("json_schema".to_string()),
                "[a-z_]{0,8}"
            ]
            .prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::from),
                proptest::collection::btree_map(
                    prop_oneof![
                        Just("model".to_string()),
                        Just("messages".to_string()),
                        Just("role".to_string()),
                        Just("content".to_string()),
                        Just("tools".to_string()),
                        Just("tool_choice".to_string()),
                        Just("response_format".to_string()),
                        Just("stop".to_string()),
                        Just("type".to_string()),
                        Just("function".to_string()),
                        Just("name".to_string()),
                        Just("tool_calls".to_string()),
                        Just("max_tokens".to_string()),
                        Just("min_tokens".to_string()),
                        Just("prompt".to_string()),
                        Just("privacy".to_string())
                    ],
                    inner,
                    0..6
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        /// Any JSON body: parsed or refused with a field, never a panic.
        #[test]
        fn any_body_is_parsed_or_refused_by_field(v in any_json()) {
            for e in [ChatRequest::parse(v.clone()).err(), CompletionRequest::parse(v).err()].into_iter().flatten() {
                proptest::prop_assert!(matches!(e, ExecError::Input { .. }), "{e:?}");
            }
        }
    }
}
