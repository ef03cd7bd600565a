//! Any bytes, into every parser and opener: an error or a value, never a panic.

use haca_relay::bhttp::{InnerRequest, InnerResponse};
use haca_relay::{decapsulate, encapsulate, KeyConfig, KeyPair, KeyRing};
use proptest::prelude::*;

fn ring() -> KeyRing {
    KeyRing::new(KeyPair::from_seed(1, &[1; 32]).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_never_panic_the_gateway_or_the_parsers(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let ring = ring();
        // Random bytes under a live key id and suite reach the HPKE open itself.
        let mut aimed = vec![1, 0, 0x20, 0, 1, 0, 3];
        aimed.extend_from_slice(&bytes);
        prop_assert!(decapsulate(&ring, &aimed).is_err());
        let _ = decapsulate(&ring, &bytes);
        let _ = KeyConfig::decode(&bytes);
        let _ = KeyConfig::decode_list(&bytes);
        let _ = InnerRequest::decode(&bytes);
        let _ = InnerResponse::decode(&bytes);
        let _ = KeyRing::from_private_json(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn random_answers_never_panic_the_client(bytes in proptest::collection::vec(any::<u8>(), 0..200), split in 0usize..200) {
        let ring = ring();
        let (_, client) = encapsulate(ring.current().config(), b"{}").unwrap();
        prop_assert!(client.clone().open(&bytes).is_err());
        let _ = client.clone().open_chunked(&bytes);
        let mut decoder = client.chunked();
        let (a, b) = bytes.split_at(split.min(bytes.len()));
        let _ = decoder.push(a, false);
        let _ = decoder.push(b, true);
        let _ = decoder.push(b, true);
    }

    #[test]
    fn a_valid_request_with_one_byte_changed_is_refused_without_panic(at in 0usize..60, xor in 1u8..=255) {
        let ring = ring();
        let (mut request, _) = encapsulate(ring.current().config(), b"{\"q\":1}").unwrap();
        let at = at % request.len();
        request[at] ^= xor;
        prop_assert!(decapsulate(&ring, &request).is_err());
    }
}
