//! haca-zk proofs: any bytes, decoded and (when they decode) verified against the key of a real
//! model, no panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn vk() -> &'static haca_zk::VerifyingKey {
    static VK: OnceLock<haca_zk::VerifyingKey> = OnceLock::new();
    VK.get_or_init(|| {
        let onnx = include_bytes!("../../fixtures/models/digits-mlp-56.onnx");
        haca_zk::setup(onnx, haca_zk::DEFAULT_INPUT_BOUND)
            .expect("the digit model sets up")
            .vk
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(proof) = haca_zk::Proof::from_bytes(data) {
        let _ = haca_zk::verify(vk(), &proof);
    }
});
