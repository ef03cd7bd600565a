//! Receipt files as `haca verify` and validators read them: any bytes, no panic.
#![no_main]

use haca_core::claims::{Checker, Claim, TrustAnchors};
use haca_core::ParsedReceipt;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(parsed) = ParsedReceipt::from_json_str(text) {
        let anchors = TrustAnchors::default();
        let checker = Checker::new(&parsed, &anchors, 1_764_000_000_000);
        for claim in Claim::all(300, 30 * 86_400) {
            let _ = checker.check(claim);
        }
        let _ = checker.problems();
        let _ = parsed.digest();
    }
});
