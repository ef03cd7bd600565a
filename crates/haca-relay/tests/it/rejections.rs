//! Bad input is refused with the reason named, never a panic: truncated, altered, unknown
//! key id, unsupported suite; answers altered, cut short, reordered, or for another request.

use haca_relay::{
    decapsulate, encapsulate, encapsulate_with, Aead, KeyPair, KeyRing, OhttpError,
    KEY_PROBLEM_JSON,
};

fn ring() -> KeyRing {
    let mut ring = KeyRing::new(KeyPair::from_seed(1, &[1; 32]).unwrap());
    ring.rotate(KeyPair::from_seed(2, &[2; 32]).unwrap(), 2_000_000_000)
        .unwrap();
    ring
}

fn code(r: Result<(Vec<u8>, haca_relay::ResponseContext), OhttpError>) -> &'static str {
    r.expect_err("refused").code()
}

#[test]
fn an_unknown_key_id_is_a_key_problem_answered_with_the_rfc_problem_type() {
    let other = KeyPair::from_seed(9, &[9; 32]).unwrap();
    let (request, _) = encapsulate(other.config(), b"{}").unwrap();
    let err = decapsulate(&ring(), &request).unwrap_err();
    assert_eq!(err, OhttpError::UnknownKeyId(9));
    assert!(err.is_key_problem());
    let problem: serde_json::Value = serde_json::from_str(KEY_PROBLEM_JSON).unwrap();
    assert_eq!(
        problem["type"],
        "https://iana.org/assignments/http-problem-types#ohttp-key"
    );
}

#[test]
fn an_unsupported_suite_is_a_key_problem_naming_the_ids() {
    let ring = ring();
    let (request, _) = encapsulate(ring.current().config(), b"{}").unwrap();
    // AES-256-GCM (0x0002), a KEM of P-256 (0x0010), a KDF of HKDF-SHA384 (0x0002).
    for (at, value, expected) in [
        (5, [0u8, 2], (0x20, 1, 2)),
        (1, [0, 0x10], (0x10, 1, 3)),
        (3, [0, 2], (0x20, 2, 3)),
    ] {
        let mut bad = request.clone();
        bad[at..at + 2].copy_from_slice(&value);
        let err = decapsulate(&ring, &bad).unwrap_err();
        assert_eq!(
            err,
            OhttpError::UnsupportedSuite {
                key_id: 2,
                kem: expected.0,
                kdf: expected.1,
                aead: expected.2
            }
        );
        assert!(err.is_key_problem());
    }
    // A suite the key is not offered with, though implemented.
    let chacha_only = KeyRing::new(
        KeyPair::from_seed(3, &[3; 32])
            .unwrap()
            .with_suites(vec![haca_relay::SymmetricSuite::CHACHA20_POLY1305])
            .unwrap(),
    );
    let both = KeyPair::from_seed(3, &[3; 32]).unwrap();
    let (aes, _) = encapsulate_with(both.config(), Aead::Aes128Gcm, b"{}").unwrap();
    assert_eq!(code(decapsulate(&chacha_only, &aes)), "unsupported_suite");
}

#[test]
fn a_request_cut_anywhere_is_refused_as_truncated() {
    let ring = ring();
    let (request, _) = encapsulate(ring.current().config(), b"").unwrap();
    assert_eq!(request.len(), 7 + 32 + 16);
    for cut in 0..request.len() {
        let err = decapsulate(&ring, &request[..cut]).unwrap_err();
        assert_eq!(err.code(), "truncated", "cut at {cut}: {err}");
    }
    assert!(decapsulate(&ring, &request).is_ok());
}

#[test]
fn a_request_altered_anywhere_does_not_open() {
    let ring = ring();
    let (request, _) = encapsulate(ring.current().config(), b"{\"prompt\":\"secret\"}").unwrap();
    for at in 0..request.len() {
        let mut bad = request.clone();
        bad[at] ^= 0x01;
        let err = decapsulate(&ring, &bad).unwrap_err();
        let expected = match at {
            0 => "unknown_key_id", // key id 2 becomes 3
            1..=6 => "unsupported_suite",
            _ => "request_decrypt_failed", // enc or ciphertext
        };
        assert_eq!(err.code(), expected, "byte {at}: {err}");
    }
}

#[test]
fn a_request_relabelled_to_the_other_live_key_id_does_not_open() {
    // Key ids 1 and 2 are both live; the header is bound into the HPKE info, so moving a
    // request to the other id (or replaying it there) fails to decrypt rather than
    // misrouting.
    let ring = ring();
    let (mut request, _) = encapsulate(ring.get(1).unwrap().config(), b"{}").unwrap();
    assert!(decapsulate(&ring, &request).is_ok());
    request[0] = 2;
    assert_eq!(
        decapsulate(&ring, &request).unwrap_err(),
        OhttpError::RequestDecrypt
    );
}

#[test]
fn an_altered_or_misdirected_single_shot_answer_is_refused() {
    let ring = ring();
    let (request, client) = encapsulate(ring.current().config(), b"{}").unwrap();
    let (_, ctx) = decapsulate(&ring, &request).unwrap();
    let response = ctx.encapsulate(b"answer").unwrap();
    for at in [0, 31, 32, response.len() - 1] {
        let mut bad = response.clone();
        bad[at] ^= 0x80;
        assert_eq!(
            client.clone().open(&bad).unwrap_err(),
            OhttpError::ResponseDecrypt,
            "byte {at}"
        );
    }
    for cut in 0..32 + 16 {
        assert_eq!(
            client.clone().open(&response[..cut]).unwrap_err().code(),
            "truncated"
        );
    }
    // An answer to another request (same key, another client context).
    let (request2, _) = encapsulate(ring.current().config(), b"{}").unwrap();
    let (_, ctx2) = decapsulate(&ring, &request2).unwrap();
    let other = ctx2.encapsulate(b"answer").unwrap();
    assert_eq!(
        client.open(&other).unwrap_err(),
        OhttpError::ResponseDecrypt
    );
}

/// A chunked answer with two chunks and a final one, and the client that reads it.
fn chunked() -> (Vec<Vec<u8>>, haca_relay::ClientContext) {
    let ring = ring();
    let (request, client) = encapsulate(ring.current().config(), b"{}").unwrap();
    let (_, ctx) = decapsulate(&ring, &request).unwrap();
    let mut encoder = ctx.chunked().unwrap();
    let parts = vec![
        encoder.start(),
        encoder.push(b"one").unwrap(),
        encoder.push(b"two").unwrap(),
        encoder.finish(b"end").unwrap(),
    ];
    (parts, client)
}

#[test]
fn a_chunked_answer_cut_short_is_never_taken_as_complete() {
    let (parts, client) = chunked();
    // Without the final chunk: every chunk read, then the missing end is reported.
    let body: Vec<u8> = parts[..3].concat();
    assert_eq!(
        client.clone().open_chunked(&body).unwrap_err(),
        OhttpError::MissingFinalChunk
    );
    let whole = parts.concat();
    for cut in 0..whole.len() {
        let err = client.clone().open_chunked(&whole[..cut]).unwrap_err();
        assert!(
            matches!(
                err.code(),
                "truncated" | "missing_final_chunk" | "response_decrypt_failed"
            ),
            "cut at {cut}: {err}"
        );
    }
    assert_eq!(client.open_chunked(&whole).unwrap().len(), 3);
}

#[test]
fn reordered_or_altered_chunks_and_data_after_the_end_are_refused() {
    let (parts, client) = chunked();
    let swapped = [&parts[0][..], &parts[2], &parts[1], &parts[3]].concat();
    assert_eq!(
        client.clone().open_chunked(&swapped).unwrap_err(),
        OhttpError::ResponseDecrypt
    );
    // A non-final chunk presented as the final one (its AAD differs).
    let mut promoted = [&parts[0][..], &parts[1]].concat();
    let len_at = parts[0].len();
    promoted[len_at] = 0;
    assert_eq!(
        client.clone().open_chunked(&promoted).unwrap_err(),
        OhttpError::ResponseDecrypt
    );
    let mut flipped = parts.concat();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    assert_eq!(
        client.clone().open_chunked(&flipped).unwrap_err(),
        OhttpError::ResponseDecrypt
    );
    let mut decoder = client.chunked();
    assert_eq!(decoder.push(&parts.concat(), true).unwrap().len(), 3);
    assert_eq!(
        decoder.push(b"more", false).unwrap_err(),
        OhttpError::TrailingData
    );
}

#[test]
fn a_replayed_request_opens_but_the_replay_guard_refuses_it() {
    let ring = ring();
    let mut guard = haca_relay::ReplayGuard::new(2);
    let (request, _) = encapsulate(ring.current().config(), b"{}").unwrap();
    let (_, first) = decapsulate(&ring, &request).unwrap();
    guard.check(&first).unwrap();
    // OHTTP alone opens the same bytes again; the guard names the replay.
    let (_, again) = decapsulate(&ring, &request).unwrap();
    let err = guard.check(&again).unwrap_err();
    assert_eq!(err, OhttpError::Replayed { key_id: 2 });
    assert_eq!(err.code(), "replayed_request");
    assert!(!err.is_key_problem());
    // Bounded: past its capacity the oldest request is forgotten.
    for _ in 0..2 {
        let (r, _) = encapsulate(ring.current().config(), b"{}").unwrap();
        guard.check(&decapsulate(&ring, &r).unwrap().1).unwrap();
    }
    assert_eq!(guard.remembered(2), 2);
    assert!(guard
        .check(&decapsulate(&ring, &request).unwrap().1)
        .is_ok());
    guard.forget_key(&[2]);
    assert_eq!(guard.remembered(2), 0);
}
