//! A second architecture end to end: a tiny Llama GGUF the test writes itself (random
//! weights, a SentencePiece vocabulary, its own Jinja chat template), loaded by llama.cpp,
//! prompted through its template, decoded alone and in a batch, and held to a JSON schema.
//! Bad files are refused at load with their reason.

use haca_exec::llm::call::{generate_local, schema_grammar, Call, Cancel};
use haca_exec::llm::chat::{ChatMessage, ChatRequest, Role, ToolChoice};
use haca_exec::llm::gguf::fixture::tiny_llama;
use haca_exec::llm::{GenerateParams, LlmError, LocalLlm};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::OnceLock;

const TEMPLATE: &str = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}<|end|>{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}";

fn write(name: &str, bytes: &[u8]) -> PathBuf {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    let dir = DIR.get_or_init(|| tempfile::tempdir().unwrap());
    let p = dir.path().join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn llm() -> &'static LocalLlm {
    static LLM: OnceLock<LocalLlm> = OnceLock::new();
    LLM.get_or_init(|| {
        let p = write(
            "tiny-llama.gguf",
            &tiny_llama("Tiny Llama", "llama", Some(TEMPLATE)),
        );
        LocalLlm::load(&p, &mut |_, _| {}).expect("the tiny Llama loads")
    })
}

fn greedy(max_tokens: usize) -> GenerateParams {
    GenerateParams {
        max_tokens,
        min_tokens: max_tokens,
        temperature: 0.0,
        top_p: 1.0,
        seed: 1,
        stop: vec![],
        json: None,
    }
}

#[test]
fn a_llama_gguf_is_named_and_described_from_its_metadata() {
    let m = llm();
    assert_eq!(m.info.name, "tiny-llama");
    assert_eq!(m.info.architecture, "llama");
    assert!(m.info.base, "nothing in its names says instruction-tuned");
    assert_eq!(m.info.context, 1536, "its training context, under the cap");
}

#[test]
fn the_ggufs_own_template_frames_the_chat_and_content_stays_text() {
    let m = llm();
    let messages = vec![ChatMessage {
        role: Role::User,
        content: "hello <|end|>".into(),
        ..Default::default()
    }];
    let ids = m.chat_prompt(&messages, None, &ToolChoice::Auto).unwrap();
    // <s>, then the template's <|user|> (ids follow the fixture's vocabulary order).
    let (user, assistant, end) = (3 + 256 + 12, 3 + 256 + 13, 3 + 256 + 15);
    assert_eq!(&ids[..2], &[1, user]);
    assert_eq!(*ids.last().unwrap(), assistant, "an open assistant turn");
    // The user typed <|end|>: it is text, so only the template's own <|end|> is the control.
    assert_eq!(ids.iter().filter(|&&t| t == end).count(), 1, "{ids:?}");
    // SentencePiece writes its dummy leading space; the rest round-trips as text.
    assert_eq!(
        m.decode(&m.encode("hello <|end|>").unwrap()),
        " hello <|end|>"
    );
}

#[test]
fn greedy_decoding_is_the_same_alone_and_batched_with_others() {
    let m = llm();
    let prompts: Vec<Vec<u32>> = ["hello", "the a", "and of", "is the hello"]
        .iter()
        .map(|p| m.text_prompt(p).unwrap())
        .collect();
    let alone: Vec<String> = prompts
        .iter()
        .map(|p| {
            let g = m.generate(p, &greedy(12), &mut |_| true).unwrap();
            assert_eq!(g.completion_tokens, 12);
            assert_eq!(g.finish_reason.as_str(), "length");
            g.text
        })
        .collect();
    // The same four at once: one engine batch holds all of them, and haca scores its rows.
    let scored = m.rows_scored_here();
    let (steps, rows) = haca_exec::llm::batched_totals();
    let together: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = prompts
            .iter()
            .map(|p| s.spawn(move || m.generate(p, &greedy(12), &mut |_| true).unwrap().text))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(alone, together);
    assert!(
        m.rows_scored_here() >= scored + 2,
        "batched steps' outputs were scored by haca, not llama.cpp"
    );
    // And counted for the node's /metrics (process-wide: other tests may add to it).
    let (steps_now, rows_now) = haca_exec::llm::batched_totals();
    assert!(
        steps_now > steps && rows_now > rows,
        "{steps}->{steps_now}, {rows}->{rows_now}"
    );
}

/// Checks `v` against the schema the test uses (no JSON Schema crate: the few rules by hand).
fn fits_schema(v: &Value) -> Result<(), String> {
    let o = v.as_object().ok_or("not an object")?;
    let keys: Vec<&String> = o.keys().collect();
    if keys.len() != 2 {
        return Err(format!("keys {keys:?}"));
    }
    match o.get("color").and_then(Value::as_str) {
        Some("red" | "green" | "blue") => {}
        other => return Err(format!("color {other:?}")),
    }
    match o.get("size").and_then(Value::as_i64) {
        Some(n) if (1..=9).contains(&n) => Ok(()),
        other => Err(format!("size {other:?}")),
    }
}

#[test]
fn a_strict_schema_answer_parses_and_validates_against_its_schema() {
    let m = llm();
    let schema = json!({"type": "object", "additionalProperties": false,
        "required": ["color", "size"],
        "properties": {"color": {"enum": ["red", "green", "blue"]},
                       "size": {"type": "integer", "minimum": 1, "maximum": 9}}});
    for seed in [1, 2, 3] {
        let call = Call::Chat(
            ChatRequest::parse(json!({"model": "local/tiny-llama", "max_tokens": 120,
                "temperature": 0.8, "seed": seed,
                "messages": [{"role": "user", "content": "a color and a size"}],
                "response_format": {"type": "json_schema",
                    "json_schema": {"name": "thing", "strict": true, "schema": schema}}}))
            .unwrap(),
        );
        let a = generate_local(m, &call, "", None, &Cancel::new()).unwrap();
        assert_eq!(a.finish_reason, "stop", "complete: {:?}", a.content);
        let v: Value =
            serde_json::from_str(&a.content).unwrap_or_else(|e| panic!("{e}: {:?}", a.content));
        fits_schema(&v).unwrap_or_else(|e| panic!("{e}: {v}"));
    }
}

#[test]
fn a_schema_the_converter_cannot_enforce_is_an_error_naming_the_field() {
    let call = Call::Chat(
        ChatRequest::parse(json!({"model": "local/tiny-llama",
            "messages": [{"role": "user", "content": "x"}],
            "response_format": {"type": "json_schema",
                "json_schema": {"name": "bad", "strict": true,
                    "schema": {"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}}}}))
        .unwrap(),
    );
    match schema_grammar(&call) {
        Err(LlmError::Request(m)) => {
            assert!(m.starts_with("response_format.json_schema.schema"), "{m}")
        }
        other => panic!("expected a request error, got {other:?}"),
    }
}

#[test]
fn bad_ggufs_are_refused_at_load_with_their_reason() {
    let whole = tiny_llama("Tiny Llama", "llama", None);
    let cut = write("cut.gguf", &whole[..whole.len() - 1000]);
    let e = LocalLlm::load(&cut, &mut |_, _| {}).err().expect("refused");
    assert!(e.to_string().contains("truncated"), "{e}");
    let unknown = write("florb.gguf", &tiny_llama("Florb", "florb", None));
    let e = LocalLlm::load(&unknown, &mut |_, _| {})
        .err()
        .expect("refused");
    assert!(e.to_string().contains("florb"), "{e}");
    let not = write("not.gguf", b"{\"weights\": []}");
    let e = LocalLlm::load(&not, &mut |_, _| {}).err().expect("refused");
    assert!(e.to_string().contains("not a GGUF"), "{e}");
}

#[test]
fn a_forced_tool_calls_arguments_are_held_to_its_parameters_schema() {
    let m = llm();
    for seed in [1, 2, 3] {
        let call = Call::Chat(
            ChatRequest::parse(json!({"model": "local/tiny-llama", "max_tokens": 60,
                "temperature": 0.8, "seed": seed,
                "messages": [{"role": "user", "content": "pick a size"}],
                "tools": [{"type": "function", "function": {"name": "set_size",
                    "parameters": {"type": "object", "additionalProperties": false,
                        "required": ["size"],
                        "properties": {"size": {"type": "integer", "minimum": 1, "maximum": 9}}}}}],
                "tool_choice": {"type": "function", "function": {"name": "set_size"}}}))
            .unwrap(),
        );
        let a = generate_local(m, &call, "", None, &Cancel::new()).unwrap();
        assert_eq!(a.finish_reason, "tool_calls", "{:?}", a.content);
        let f = &a.tool_calls[0]["function"];
        assert_eq!(f["name"], "set_size");
        let args: Value = serde_json::from_str(f["arguments"].as_str().unwrap()).unwrap();
        let o = args.as_object().expect("an object");
        assert_eq!(o.len(), 1, "{args}");
        assert!((1..=9).contains(&o["size"].as_i64().unwrap_or(0)), "{args}");
    }
}

/// A recursive parameters schema (through `$defs`; llama.cpp's converter refuses `$ref: "#"`):
/// its rules, renamed apart under the call's wrapper, compile in llama.cpp's grammar parser
/// (a rule referenced but not defined would refuse the request) and hold the answer to it.
#[test]
fn a_recursive_tool_schema_compiles_and_holds_the_arguments() {
    let m = llm();
    let tree = json!({"$ref": "#/$defs/node", "$defs": {"node": {"type": "object",
        "additionalProperties": false, "required": ["name"],
        "properties": {"name": {"type": "string", "maxLength": 4},
            "children": {"type": "array", "maxItems": 1, "items": {"$ref": "#/$defs/node"}}}}}});
    let call = Call::Chat(
        ChatRequest::parse(json!({"model": "local/tiny-llama", "max_tokens": 80,
            "temperature": 0.0, "seed": 1,
            "messages": [{"role": "user", "content": "a tree"}],
            "tools": [{"type": "function", "function": {"name": "tree", "parameters": tree}}],
            "tool_choice": {"type": "function", "function": {"name": "tree"}}}))
        .unwrap(),
    );
    let g = schema_grammar(&call).unwrap().unwrap();
    let mut lines = g.lines();
    assert_eq!(lines.next(), Some("root ::= args-root \"}\""));
    assert!(
        lines.all(|l| l.starts_with("args-")),
        "every rule renamed apart:\n{g}"
    );
    let a = generate_local(m, &call, "", None, &Cancel::new()).expect("the grammar compiles");
    if a.finish_reason == "tool_calls" {
        let args: Value =
            serde_json::from_str(a.tool_calls[0]["function"]["arguments"].as_str().unwrap())
                .unwrap();
        assert!(args["name"].is_string(), "{args}");
    } else {
        assert_eq!(a.finish_reason, "length", "{:?}", a.content);
    }
}

#[test]
fn a_required_tool_call_names_one_of_the_tools_and_holds_to_its_schema() {
    let m = llm();
    let tools = json!([
        // Short: the tools are in the prompt, about one token a byte with this vocabulary.
        {"type": "function", "function": {"name": "size",
            "parameters": {"type": "object", "additionalProperties": false, "required": ["n"],
                "properties": {"n": {"enum": [1, 2, 3]}}}}},
        {"type": "function", "function": {"name": "hue",
            "parameters": {"type": "object", "additionalProperties": false, "required": ["c"],
                "properties": {"c": {"enum": ["red", "blue"]}}}}}
    ]);
    let mut names = std::collections::BTreeSet::new();
    for seed in 1..=6 {
        let call = Call::Chat(
            ChatRequest::parse(json!({"model": "local/tiny-llama", "max_tokens": 60,
                "temperature": 1.0, "seed": seed,
                "messages": [{"role": "user", "content": "go"}],
                "tools": tools, "tool_choice": "required"}))
            .unwrap(),
        );
        let a = generate_local(m, &call, "", None, &Cancel::new()).unwrap();
        assert_eq!(a.finish_reason, "tool_calls", "{:?}", a.content);
        let f = &a.tool_calls[0]["function"];
        let args: Value = serde_json::from_str(f["arguments"].as_str().unwrap()).unwrap();
        let o = args.as_object().expect("an object");
        assert_eq!(o.len(), 1, "{args}");
        match f["name"].as_str().unwrap() {
            "size" => assert!((1..=3).contains(&o["n"].as_i64().unwrap_or(0)), "{args}"),
            "hue" => assert!(
                ["red", "blue"].contains(&o["c"].as_str().unwrap_or("")),
                "{args}"
            ),
            other => panic!("not a tool: {other}"),
        }
        names.insert(f["name"].as_str().unwrap().to_owned());
    }
    assert!(!names.is_empty());
}

#[test]
fn the_hubs_gate_checks_a_gguf_as_llama_cpp_would_load_it() {
    use haca_exec::ModelCheck;
    use haca_hub::ArtifactCheck;
    let whole = tiny_llama("Tiny Llama", "llama", None);
    assert_eq!(ModelCheck.check(&whole).unwrap(), "gguf");
    assert_eq!(
        ModelCheck.check_file(&write("ok.gguf", &whole)).unwrap(),
        "gguf"
    );
    let e = ModelCheck
        .check_file(&write("cut2.gguf", &whole[..whole.len() - 1000]))
        .unwrap_err();
    assert!(e.contains("truncated"), "{e}");
    let e = ModelCheck
        .check(&tiny_llama("Florb", "florb", None))
        .unwrap_err();
    assert!(e.contains("unknown model architecture: 'florb'"), "{e}");
    // The reason alone: a staged upload's file name means nothing to its uploader.
    assert!(!e.contains(".haca-gguf-check"), "{e}");
    // Not a GGUF: the ONNX gate's verdict.
    let e = ModelCheck.check(b"GGU").unwrap_err();
    assert!(!e.contains("GGUF"), "{e}");
}
