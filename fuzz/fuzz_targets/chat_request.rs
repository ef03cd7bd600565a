//! OpenAI-compatible chat and completion bodies as clients send them, and the JSON recognizer
//! that constrains local answers: any bytes, no panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = haca_exec::llm::ChatRequest::parse(v.clone());
        let _ = haca_exec::llm::CompletionRequest::parse(v);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let mut j = haca_exec::llm::json_prefix::JsonPrefix::object();
        let _ = j.feed(text);
        let _ = j.is_complete();
    }
});
