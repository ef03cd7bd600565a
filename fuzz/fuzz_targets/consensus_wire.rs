//! Consensus, proposal-stream and sync messages as peers send them: any bytes, no panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = haca_chain::consensus::codec::decode_untrusted(data);
});
