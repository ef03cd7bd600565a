//! MemSync's import: any bytes as the JSON of `POST /v1/memories/import`'s bundle, verified and
//! opened under a fixed key, and as the extraction parser's model answer. Errors are fine; a
//! panic is a bug.
#![no_main]

use haca_mem::{Bundle, UserKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(b) = serde_json::from_slice::<Bundle>(data) {
        let _ = b.verify();
        let _ = b.import(&UserKey::from_bytes([7; 32]));
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = haca_mem::extract::parse_llm_extraction(text);
    }
});
