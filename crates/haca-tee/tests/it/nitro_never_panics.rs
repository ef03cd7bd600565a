//! Whatever the bytes, parsing and verification return a result and never panic; and no
//! change to a real document's bytes leaves it verifying.

use crate::common::*;
use haca_tee::nitro::{parse, verify, Policy};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..6000)) {
        let _ = parse(&bytes);
        prop_assert!(verify(&bytes, &Policy::audit()).is_err());
    }

    #[test]
    fn arbitrary_bytes_behind_a_cose_prefix_never_panic(
        tail in proptest::collection::vec(any::<u8>(), 0..5000)
    ) {
        // Start like a real document so that decoding goes deeper.
        let mut bytes = vec![0x84, 0x44, 0xa1, 0x01, 0x38, 0x22, 0xa0];
        bytes.extend_from_slice(&tail);
        prop_assert!(verify(&bytes, &Policy::audit()).is_err());
    }

    #[test]
    fn mutating_real_documents_never_panics_and_never_verifies(
        which in 0usize..4,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let f = &fixtures()[which];
        let mut bytes = f.bytes.to_vec();
        for (index, value) in &edits {
            let i = index.index(bytes.len());
            bytes[i] = *value;
        }
        let _ = parse(&bytes);
        let result = verify(&bytes, &Policy::audit());
        if bytes != f.bytes {
            prop_assert!(result.is_err(), "a changed document verified: {:?}", edits);
        }
    }

    #[test]
    fn cut_or_spliced_real_documents_never_panic(
        which in 0usize..4,
        start in any::<prop::sample::Index>(),
        len in 0usize..600,
        insert in proptest::collection::vec(any::<u8>(), 0..40),
    ) {
        let f = &fixtures()[which];
        let mut bytes = f.bytes.to_vec();
        let s = start.index(bytes.len());
        let e = (s + len).min(bytes.len());
        bytes.splice(s..e, insert);
        let result = verify(&bytes, &Policy::audit());
        if bytes != f.bytes {
            prop_assert!(result.is_err());
        }
    }
}
