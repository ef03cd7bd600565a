//! AWS Nitro attestation documents: any bytes, parsed and verified, no panic.
#![no_main]

use haca_tee::{parse, verify, Policy};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse(data);
    let _ = verify(data, &Policy::audit());
});
