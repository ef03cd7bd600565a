//! Intel SGX/TDX DCAP quotes and their collateral JSON: any bytes, parsed and verified (against
//! the shipped TDX sample's real collateral), no panic.
#![no_main]

use haca_tee::dcap::{parse_collateral, peek_tee_type, verify, DcapPolicy};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn collateral() -> &'static haca_tee::QuoteCollateral {
    static C: OnceLock<haca_tee::QuoteCollateral> = OnceLock::new();
    C.get_or_init(|| {
        parse_collateral(include_bytes!(
            "../../crates/haca-tee/tests/fixtures/dcap/tdx_quote_collateral.json"
        ))
        .expect("the shipped collateral parses")
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = peek_tee_type(data);
    let _ = verify(data, collateral(), 1_751_328_000, &DcapPolicy::default());
    let _ = parse_collateral(data);
});
