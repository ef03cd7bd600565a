//! What the review side reads from outside: a webhook delivery as a receiver gets it (headers
//! and body) and case-class specs. Any bytes, no panic; a verified webhook must carry a
//! signature by the expected key.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = haca_core::keys::NodeKey::from_seed([7; 32]);
    let signer = key.node_id();
    // Split the input into id, timestamp, signature header and body at the first three NULs.
    let mut parts = data.splitn(4, |b| *b == 0);
    let id = parts.next().and_then(|p| std::str::from_utf8(p).ok());
    let ts = parts.next().and_then(|p| std::str::from_utf8(p).ok());
    let sig = parts.next().and_then(|p| std::str::from_utf8(p).ok());
    let body = parts.next().unwrap_or_default();
    let _ = haca_review::webhook::verify(&signer, id, ts, sig, body, 1_000_000, 300);
    // A genuine signature over the same parts verifies.
    if let (Some(id), Some(ts)) = (id, ts.and_then(|t| t.trim().parse::<u64>().ok())) {
        let good = haca_review::webhook::sign(&key, id, ts, body);
        let t = ts.to_string();
        let ok = haca_review::webhook::verify(&signer, Some(id), Some(&t), Some(&good), body, ts, 300);
        assert!(ok.is_ok(), "{ok:?}");
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = haca_review::CaseClass::parse(text);
    }
});
