//! Oblivious HTTP messages: any bytes as an encapsulated request (as sent, and behind a live
//! key id and suite so that the HPKE open itself is reached), as a single-shot or chunked
//! response (in two pieces, split where the first byte says), as a key configuration list and
//! as an inner BHTTP message. Errors are fine; a panic is a bug.
#![no_main]

use haca_relay::bhttp::{InnerRequest, InnerResponse};
use haca_relay::{decapsulate, encapsulate, ClientContext, KeyConfig, KeyPair, KeyRing};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn ring() -> &'static KeyRing {
    static R: OnceLock<KeyRing> = OnceLock::new();
    R.get_or_init(|| {
        let mut ring = KeyRing::new(KeyPair::from_seed(1, &[1; 32]).expect("seed"));
        ring.rotate(KeyPair::from_seed(2, &[2; 32]).expect("seed"), u64::MAX)
            .expect("rotate");
        ring
    })
}

fn client() -> &'static ClientContext {
    static C: OnceLock<ClientContext> = OnceLock::new();
    C.get_or_init(|| {
        encapsulate(ring().current().config(), b"{}")
            .expect("encapsulate")
            .1
    })
}

fuzz_target!(|data: &[u8]| {
    let ring = ring();
    let _ = decapsulate(ring, data);
    let mut aimed = vec![2, 0x00, 0x20, 0x00, 0x01, 0x00, 0x03];
    aimed.extend_from_slice(data);
    let _ = decapsulate(ring, &aimed);

    let _ = client().clone().open(data);
    let split = usize::from(data.first().copied().unwrap_or(0)).min(data.len());
    let (a, b) = data.split_at(split);
    let mut decoder = client().clone().chunked();
    let _ = decoder.push(a, false);
    let _ = decoder.push(b, true);

    let _ = KeyConfig::decode_list(data);
    let _ = KeyConfig::decode(data);
    let _ = InnerRequest::decode(data);
    let _ = InnerResponse::decode(data);
});
