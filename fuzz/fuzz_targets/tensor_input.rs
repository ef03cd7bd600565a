//! The `input` object of POST /v1/infer, in both accepted shapes: any JSON, no panic.
#![no_main]

use haca_core::tensor::{hash_tensors, parse_input, to_json};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    if let Ok(map) = parse_input(&value, "input") {
        let _ = hash_tensors(&map);
        let _ = to_json(&map, "input");
    }
});
