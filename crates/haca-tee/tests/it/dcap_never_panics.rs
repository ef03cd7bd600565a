//! Whatever the bytes, DCAP quote decoding, verification and collateral parsing return a
//! result and never panic; and no change to a real quote's signed bytes leaves it verifying.
//! (The cargo-fuzz target `dcap_quote` runs the same entry points, coverage-guided.)

use haca_tee::dcap::{self, parse_collateral, peek_tee_type, DcapPolicy};
use proptest::prelude::*;
use std::path::PathBuf;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/dcap")
            .join(name),
    )
    .unwrap()
}

fn tdx() -> (Vec<u8>, haca_tee::QuoteCollateral, u64) {
    let at = String::from_utf8(fixture("tdx_quote.at"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    (
        fixture("tdx_quote"),
        parse_collateral(&fixture("tdx_quote_collateral.json")).unwrap(),
        at,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..6000)) {
        let (_, collateral, at) = tdx();
        let _ = peek_tee_type(&bytes);
        prop_assert!(dcap::verify(&bytes, &collateral, at, &DcapPolicy::default()).is_err());
        let _ = parse_collateral(&bytes);
    }

    #[test]
    fn changing_the_signed_header_or_body_never_verifies(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
    ) {
        let (mut quote, collateral, at) = tdx();
        let original = quote.clone();
        // TDX quote v4: a 48-byte header and a 584-byte TD report, signed by the attestation key.
        let signed = 48 + 584;
        for (index, flip) in &edits {
            let i = index.index(signed);
            quote[i] = original[i] ^ *flip; // differs from the original, even at a repeated index
        }
        prop_assert!(dcap::verify(&quote, &collateral, at, &DcapPolicy::default()).is_err());
    }

    #[test]
    fn a_truncated_quote_never_panics_and_never_verifies(cut in any::<prop::sample::Index>()) {
        let (quote, collateral, at) = tdx();
        // The sample holds a 4936-byte quote in a 5006-byte buffer (zero padding after it).
        let cut = cut.index(4936);
        prop_assert!(dcap::verify(&quote[..cut], &collateral, at, &DcapPolicy::default()).is_err());
    }
}
