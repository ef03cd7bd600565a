//! Each way a real document can be wrong is rejected, with its own reason.

use crate::common::*;
use ciborium::value::Value;
use haca_tee::nitro::{parse, verify, verify_strict, KeyBinding, Policy, TrustedRoot};
use haca_tee::NitroError;

fn audit(doc: &[u8]) -> Result<haca_tee::VerifiedDocument, NitroError> {
    verify(doc, &Policy::audit())
}

#[test]
fn another_trusted_root_alone_rejects_the_aws_chain() {
    let f = fixture("nitroprover_sample");
    let other = &cabundle(f.bytes)[1];
    let policy = Policy::at(f.at, 5 * MINUTE).with_roots(vec![TrustedRoot::dev("dev", other)]);
    match verify(f.bytes, &policy) {
        Err(NitroError::UntrustedRoot { fingerprint }) => assert_eq!(
            fingerprint,
            "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b"
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_tampered_payload_byte_breaks_the_signature() {
    for f in fixtures() {
        let doc = parse(f.bytes).unwrap();
        // A letter inside module_id: the payload still parses, the signature no longer fits.
        let mut bytes = f.bytes.to_vec();
        let at = find(&bytes, doc.module_id.as_bytes()) + 2;
        bytes[at] ^= 0x01;
        assert_eq!(audit(&bytes), Err(NitroError::BadSignature), "{}", f.name);
        // A byte of PCR1.
        let mut bytes = f.bytes.to_vec();
        let at = find(&bytes, &doc.pcrs[&1]) + 7;
        bytes[at] ^= 0x80;
        assert_eq!(audit(&bytes), Err(NitroError::BadSignature), "{}", f.name);
    }
}

#[test]
fn a_tampered_signature_byte_is_rejected() {
    for f in fixtures() {
        for offset in [1, 48, 96] {
            let mut bytes = f.bytes.to_vec();
            let at = bytes.len() - offset;
            bytes[at] ^= 0x01;
            assert_eq!(audit(&bytes), Err(NitroError::BadSignature), "{}", f.name);
        }
    }
}

#[test]
fn one_day_later_the_leaf_has_expired_unless_audited() {
    for f in fixtures() {
        let policy = Policy::at(f.at + DAY, 7 * DAY);
        match verify(f.bytes, &policy) {
            Err(NitroError::CertificateExpired { cert, .. }) => {
                assert_eq!(cert, "certificate", "{}", f.name)
            }
            other => panic!("{}: {other:?}", f.name),
        }
        assert!(verify(f.bytes, &Policy::audit()).is_ok());
    }
}

#[test]
fn one_day_earlier_the_leaf_is_not_yet_valid() {
    let f = fixture("cape_js");
    match verify(f.bytes, &Policy::at(f.at - DAY, 7 * DAY)) {
        Err(NitroError::CertificateNotYetValid { cert, .. }) => assert_eq!(cert, "certificate"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_document_older_than_the_maximum_age_is_stale() {
    let f = fixture("base_nitro_validator");
    match verify(f.bytes, &Policy::at(f.at + 10 * MINUTE, 5 * MINUTE)) {
        Err(NitroError::Stale {
            age_ms, max_age_ms, ..
        }) => {
            assert_eq!(age_ms, 10 * MINUTE);
            assert_eq!(max_age_ms, 5 * MINUTE);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_document_dated_beyond_the_allowed_skew_is_from_the_future() {
    // The leaf was issued about 3 s before the document's timestamp; 2 s before it the chain is
    // valid but the document lies 2 s ahead.
    let f = fixture("base_nitro_validator");
    let mut policy = Policy::at(f.at - 2_000, 5 * MINUTE);
    assert!(
        verify(f.bytes, &policy).is_ok(),
        "2 s is within the default skew"
    );
    policy.max_future_skew_ms = 1_000;
    match verify(f.bytes, &policy) {
        Err(NitroError::FromTheFuture { ahead_ms, .. }) => assert_eq!(ahead_ms, 2_000),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_pcr_mismatch_is_a_failed_check_and_an_error_when_required() {
    let f = fixture("cape_js");
    let policy = Policy::at(f.at, 5 * MINUTE)
        .expect_pcr(0, vec![0u8; 48])
        .expect_pcr(31, vec![0u8; 48]);
    let v = verify(f.bytes, &policy).unwrap();
    let pcrs = v.check("pcrs").unwrap();
    assert!(!pcrs.passed);
    assert!(pcrs.detail.contains("PCR0 is ") && pcrs.detail.contains("PCR31 is absent"));
    match verify_strict(f.bytes, &policy) {
        Err(NitroError::CheckFailed { check, .. }) => assert_eq!(check, "pcrs"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_required_key_binding_that_is_missing_fails() {
    // No public_key and no user_data at all.
    let f = fixture("uid2_core_debug");
    let policy = Policy::audit().require_binding(KeyBinding::PublicKey(vec![4; 65]));
    let v = verify(f.bytes, &policy).unwrap();
    let b = v.check("key_binding").unwrap();
    assert!(!b.passed && b.detail.contains("absent"), "{b:?}");
    assert!(matches!(
        verify_strict(f.bytes, &policy),
        Err(NitroError::CheckFailed { ref check, .. }) if check == "key_binding"
    ));

    // user_data present but not nitriding's 68 bytes.
    let f = fixture("cape_js");
    let policy = Policy::audit().require_binding(KeyBinding::Nitriding {
        signing_key_spki_der: b"some key".to_vec(),
        tls_cert_der: None,
    });
    let b = verify(f.bytes, &policy)
        .unwrap()
        .check("key_binding")
        .cloned()
        .unwrap();
    assert!(!b.passed && b.detail.contains("68 bytes"), "{b:?}");

    // public_key present but a different key.
    let f = fixture("nitroprover_sample");
    let policy = Policy::audit().require_binding(KeyBinding::PublicKey(vec![7; 32]));
    let b = verify(f.bytes, &policy)
        .unwrap()
        .check("key_binding")
        .cloned()
        .unwrap();
    assert!(!b.passed && b.detail.contains("differs"), "{b:?}");
}

#[test]
fn a_wrong_or_missing_nonce_fails_its_check() {
    let f = fixture("cape_js");
    let v = verify(
        f.bytes,
        &Policy::audit().expect_nonce(b"not the nonce".to_vec()),
    )
    .unwrap();
    assert!(!v.check("nonce").unwrap().passed);
    let f = fixture("uid2_core_debug");
    let v = verify(f.bytes, &Policy::audit().expect_nonce(b"n".to_vec())).unwrap();
    let n = v.check("nonce").unwrap();
    assert!(!n.passed && n.detail.contains("no nonce"));
}

#[test]
fn truncated_documents_are_malformed_cbor() {
    for f in fixtures() {
        let len = f.bytes.len();
        for cut in [1, 2, 5, 17, 100, len / 2, len - 97, len - 96, len - 1] {
            match parse(&f.bytes[..cut]) {
                Err(NitroError::Malformed { field, reason }) => {
                    assert_eq!(field, "document", "{} cut {cut}", f.name);
                    assert!(
                        reason.contains("truncated"),
                        "{} cut {cut}: {reason}",
                        f.name
                    );
                }
                other => panic!("{} cut {cut}: {other:?}", f.name),
            }
            assert!(verify(&f.bytes[..cut], &Policy::audit()).is_err());
        }
        assert!(matches!(parse(&[]), Err(NitroError::Malformed { .. })));
    }
}

#[test]
fn random_bytes_are_rejected() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for len in [1, 2, 3, 8, 64, 500, 4500, 20_000] {
        for _ in 0..20 {
            let bytes = rng.bytes(len);
            assert!(verify(&bytes, &Policy::audit()).is_err(), "len {len}");
        }
    }
    assert!(matches!(
        parse(&vec![0u8; 40_000]),
        Err(NitroError::TooLarge { len: 40_000, .. })
    ));
}

#[test]
fn trailing_bytes_after_the_document_are_malformed() {
    let mut bytes = fixture("cape_js").bytes.to_vec();
    bytes.push(0);
    assert!(matches!(
        parse(&bytes),
        Err(NitroError::Malformed { ref reason, .. }) if reason.contains("trailing")
    ));
}

#[test]
fn an_unsupported_algorithm_or_digest_is_named() {
    // protected = h'a1013822' ({1: -35}); -34 is not an algorithm Nitro uses.
    let f = fixture("nitroprover_sample");
    let mut bytes = f.bytes.to_vec();
    assert_eq!(&bytes[..6], &[0x84, 0x44, 0xa1, 0x01, 0x38, 0x22]);
    bytes[5] = 0x21;
    assert!(matches!(
        parse(&bytes),
        Err(NitroError::Field { ref field, .. }) if field == "protected.alg"
    ));

    let mut bytes = f.bytes.to_vec();
    let at = find(&bytes, b"SHA384");
    bytes[at..at + 6].copy_from_slice(b"SHA256");
    assert!(matches!(
        parse(&bytes),
        Err(NitroError::Field { ref field, .. }) if field == "digest"
    ));
}

#[test]
fn wrong_or_missing_payload_fields_are_named() {
    let f = fixture("base_nitro_validator");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "module_id",
            with_payload(f.bytes, |e| remove_field(e, "module_id")),
        ),
        (
            "timestamp",
            with_payload(f.bytes, |e| {
                set_field(e, "timestamp", Value::Text("yesterday".into()))
            }),
        ),
        (
            "pcrs[0]",
            with_payload(f.bytes, |e| {
                set_field(
                    e,
                    "pcrs",
                    Value::Map(vec![(Value::Integer(0.into()), Value::Bytes(vec![0; 47]))]),
                )
            }),
        ),
        (
            "cabundle",
            with_payload(f.bytes, |e| set_field(e, "cabundle", Value::Array(vec![]))),
        ),
        (
            "certificate",
            with_payload(f.bytes, |e| {
                set_field(e, "certificate", Value::Bytes(vec![0; 2000]))
            }),
        ),
        (
            "user_data",
            with_payload(f.bytes, |e| {
                set_field(e, "user_data", Value::Bytes(vec![0; 513]))
            }),
        ),
        (
            "nonce",
            with_payload(f.bytes, |e| set_field(e, "nonce", Value::Integer(5.into()))),
        ),
    ];
    for (field, bytes) in cases {
        match parse(&bytes) {
            Err(NitroError::Field { field: got, .. }) => assert_eq!(got, field),
            other => panic!("{field}: {other:?}"),
        }
    }
}

#[test]
fn a_leaf_from_another_document_does_not_chain() {
    let f = fixture("cape_js");
    let other_leaf = payload_field(fixture("uid2_core_debug").bytes, "certificate");
    let bytes = with_payload(f.bytes, |e| set_field(e, "certificate", other_leaf));
    match audit(&bytes) {
        Err(NitroError::Chain { cert, issuer, .. }) => {
            assert_eq!(cert, "certificate");
            assert_eq!(issuer, "cabundle[3]");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_bundle_missing_an_intermediate_does_not_chain() {
    let f = fixture("cape_js");
    let mut bundle = cabundle(f.bytes);
    bundle.remove(2);
    let bytes = with_payload(f.bytes, |e| {
        set_field(
            e,
            "cabundle",
            Value::Array(bundle.into_iter().map(Value::Bytes).collect()),
        )
    });
    match audit(&bytes) {
        Err(NitroError::Chain { cert, issuer, .. }) => {
            // After the removal the old cabundle[3] is cabundle[2], issued by the removed one.
            assert_eq!(cert, "cabundle[2]");
            assert_eq!(issuer, "cabundle[1]");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_bundle_in_leaf_first_order_has_no_trusted_root_at_its_start() {
    let f = fixture("cape_js");
    let mut bundle = cabundle(f.bytes);
    bundle.reverse();
    let bytes = with_payload(f.bytes, |e| {
        set_field(
            e,
            "cabundle",
            Value::Array(bundle.into_iter().map(Value::Bytes).collect()),
        )
    });
    assert!(matches!(
        audit(&bytes),
        Err(NitroError::UntrustedRoot { .. })
    ));
}

#[test]
fn a_garbled_intermediate_is_named() {
    let f = fixture("cape_js");
    let mut bundle = cabundle(f.bytes);
    let n = bundle[2].len();
    bundle[2][n - 5] ^= 0x55; // inside the certificate's own signature
    let bytes = with_payload(f.bytes, |e| {
        set_field(
            e,
            "cabundle",
            Value::Array(bundle.into_iter().map(Value::Bytes).collect()),
        )
    });
    match audit(&bytes) {
        Err(NitroError::Chain { cert, .. }) | Err(NitroError::Certificate { cert, .. }) => {
            assert_eq!(cert, "cabundle[2]")
        }
        other => panic!("{other:?}"),
    }
}
