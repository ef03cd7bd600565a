//! The dev enclave: documents from the dev CA are Nitro documents in every respect but the
//! root. They verify only when the dev root is trusted, say so, and every check (PCRs, nonce,
//! key binding, signature, freshness, audit) works on them exactly as on AWS documents.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::common::*;
use ciborium::value::Value;
use haca_tee::dev::{dev_pcrs, DevCa, DevError, DocumentRequest, DEV_ROOT_LABEL};
use haca_tee::nitro::{
    parse, verify, verify_strict, KeyBinding, NitridingUserData, Policy, TrustedRoot,
};
use haca_tee::{AttestError, Attester, DevAttester, NitroError};

const SEED: [u8; 32] = [42; 32];
/// 2025-11-24T16:00:00Z.
const T: u64 = 1_764_000_000_000;
const IMAGE: &[u8] = b"haca enclave image v1";
const TLS_CERT: &[u8] = b"the enclave's TLS certificate (DER)";
const SIGNING_KEY: &[u8] = b"the enclave's signing key SubjectPublicKeyInfo (DER)";

fn ca() -> DevCa {
    DevCa::from_seed(&SEED)
}

fn request(timestamp_ms: u64) -> DocumentRequest {
    DocumentRequest {
        timestamp_ms,
        pcrs: dev_pcrs(IMAGE),
        ..DocumentRequest::default()
    }
}

fn dev_policy(ca: &DevCa, at: u64) -> Policy {
    Policy::at(at, 5 * MINUTE).with_roots(vec![ca.trusted_root()])
}

#[test]
fn a_dev_document_verifies_under_the_dev_root_and_reports_dev() {
    let ca = ca();
    let doc = ca.document(&request(T)).unwrap();

    let v = verify_strict(&doc, &dev_policy(&ca, T + 1_000)).unwrap();
    assert!(v.root.dev);
    assert_eq!(v.root.label, DEV_ROOT_LABEL);
    assert_eq!(v.root_fingerprint, ca.root_fingerprint());
    assert!(v.check("root").unwrap().detail.contains("a dev root"));
    assert_eq!(v.module_id, ca.module_id());
    assert_eq!(v.timestamp_ms, T);
    assert!(!v.audit);
    for name in [
        "structure",
        "root",
        "certificate_chain",
        "validity",
        "signature",
        "freshness",
    ] {
        assert!(v.check(name).unwrap().passed, "{name}");
    }
    // PCRs 0..=15 like a real document; 0..2 from the image, the rest zero.
    assert_eq!(v.pcrs.len(), 16);
    assert_eq!(v.pcrs[&0], hex::encode(&dev_pcrs(IMAGE)[&0]));
    assert_eq!(v.pcrs[&3], hex::encode([0u8; 48]));
    assert_eq!(parse(&doc).unwrap().cabundle, vec![ca.root_der()]);

    // Trusting AWS and the dev root side by side still names the dev root.
    let both = dev_policy(&ca, T).with_roots(vec![TrustedRoot::aws_nitro_g1(), ca.trusted_root()]);
    assert!(verify(&doc, &both).unwrap().root.dev);
}

#[test]
fn the_aws_root_refuses_dev_documents_naming_the_dev_root() {
    let ca = ca();
    let doc = ca.document(&request(T)).unwrap();
    let err = verify(&doc, &Policy::at(T, 5 * MINUTE)).unwrap_err();
    match &err {
        NitroError::UntrustedRoot { fingerprint } => {
            assert_eq!(*fingerprint, ca.root_fingerprint())
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains(&ca.root_fingerprint()), "{err}");
    assert!(err.to_string().contains("untrusted root"), "{err}");

    // Another dev CA's root is not this one.
    let other = DevCa::from_seed(&[7; 32]);
    assert!(matches!(
        verify(&doc, &dev_policy(&other, T)),
        Err(NitroError::UntrustedRoot { .. })
    ));
    // Pinning the dev root's DER without marking it dev verifies, but does not say dev: dev is
    // the caller's statement about the root, reported as given.
    let undeclared =
        dev_policy(&ca, T).with_roots(vec![TrustedRoot::from_der("unlabelled", &ca.root_der())]);
    assert!(!verify(&doc, &undeclared).unwrap().root.dev);
}

#[test]
fn pcr_expectations_hold_for_the_measured_image_only() {
    let ca = ca();
    let doc = ca.document(&request(T)).unwrap();
    let pcrs = dev_pcrs(IMAGE);

    let policy = dev_policy(&ca, T)
        .expect_pcr(0, pcrs[&0].clone())
        .expect_pcr(1, pcrs[&1].clone())
        .expect_pcr(2, pcrs[&2].clone())
        .expect_pcr(8, vec![0u8; 48]);
    let v = verify_strict(&doc, &policy).unwrap();
    assert!(v.check("pcrs").unwrap().passed);

    let other_image = dev_policy(&ca, T).expect_pcr(0, dev_pcrs(b"other code")[&0].clone());
    let v = verify(&doc, &other_image).unwrap();
    let check = v.check("pcrs").unwrap();
    assert!(!check.passed);
    assert!(check.detail.contains("PCR0 is"), "{}", check.detail);
    assert!(matches!(
        verify_strict(&doc, &other_image),
        Err(NitroError::CheckFailed { ref check, .. }) if check == "pcrs"
    ));
}

#[test]
fn the_nonce_is_checked_as_on_aws_documents() {
    let ca = ca();
    let nonce = b"verifier challenge 1".to_vec();
    let with_nonce = ca
        .document(&DocumentRequest {
            nonce: Some(nonce.clone()),
            ..request(T)
        })
        .unwrap();
    let without = ca.document(&request(T)).unwrap();

    let v = verify_strict(&with_nonce, &dev_policy(&ca, T).expect_nonce(nonce.clone())).unwrap();
    assert_eq!(v.nonce, Some(nonce));
    let wrong = dev_policy(&ca, T).expect_nonce(b"another challenge".to_vec());
    assert!(
        !verify(&with_nonce, &wrong)
            .unwrap()
            .check("nonce")
            .unwrap()
            .passed
    );
    let absent = verify(&without, &dev_policy(&ca, T).expect_nonce(b"x".to_vec())).unwrap();
    let check = absent.check("nonce").unwrap();
    assert!(!check.passed);
    assert!(check.detail.contains("no nonce"), "{}", check.detail);
}

#[test]
fn nitriding_and_public_key_bindings_hold_end_to_end() {
    let ca = ca();
    let user_data = NitridingUserData::for_keys(TLS_CERT, SIGNING_KEY).to_bytes();
    let doc = ca
        .document(&DocumentRequest {
            public_key: Some(SIGNING_KEY.to_vec()),
            user_data: Some(user_data.to_vec()),
            ..request(T)
        })
        .unwrap();

    let nitriding = dev_policy(&ca, T).require_binding(KeyBinding::Nitriding {
        signing_key_spki_der: SIGNING_KEY.to_vec(),
        tls_cert_der: Some(TLS_CERT.to_vec()),
    });
    let v = verify_strict(&doc, &nitriding).unwrap();
    assert!(v.check("key_binding").unwrap().passed);
    assert_eq!(
        v.nitriding.unwrap(),
        NitridingUserData::for_keys(TLS_CERT, SIGNING_KEY)
    );

    let other_key = dev_policy(&ca, T).require_binding(KeyBinding::Nitriding {
        signing_key_spki_der: b"another key".to_vec(),
        tls_cert_der: None,
    });
    assert!(matches!(
        verify_strict(&doc, &other_key),
        Err(NitroError::CheckFailed { ref check, .. }) if check == "key_binding"
    ));

    let public_key =
        dev_policy(&ca, T).require_binding(KeyBinding::PublicKey(SIGNING_KEY.to_vec()));
    assert!(verify_strict(&doc, &public_key).is_ok());
    let other_public_key =
        dev_policy(&ca, T).require_binding(KeyBinding::PublicKey(b"not it".to_vec()));
    assert!(verify_strict(&doc, &other_public_key).is_err());
}

#[test]
fn a_tampered_payload_or_signature_is_refused() {
    let ca = ca();
    let doc = ca
        .document(&DocumentRequest {
            nonce: Some(b"n".to_vec()),
            ..request(T)
        })
        .unwrap();
    let policy = dev_policy(&ca, T);
    assert!(verify(&doc, &policy).is_ok());

    // Another PCR0 (a different enclave claiming this one's signature).
    let pcrs = dev_pcrs(b"malicious code");
    let forged = with_payload(&doc, |entries| {
        let Value::Map(mut map) = payload_field(&doc, "pcrs") else {
            panic!("pcrs is a map")
        };
        map[0].1 = Value::Bytes(pcrs[&0].clone());
        set_field(entries, "pcrs", Value::Map(map));
    });
    assert_eq!(parse(&forged).unwrap().pcrs[&0], pcrs[&0]);
    assert_eq!(verify(&forged, &policy), Err(NitroError::BadSignature));

    // Another nonce.
    let replayed = with_payload(&doc, |entries| {
        set_field(entries, "nonce", Value::Bytes(b"m".to_vec()))
    });
    assert_eq!(verify(&replayed, &policy), Err(NitroError::BadSignature));

    // One bit of the signature flipped.
    let mut bad_sig = doc.clone();
    let last = bad_sig.len() - 1;
    bad_sig[last] ^= 0x01;
    assert_eq!(verify(&bad_sig, &policy), Err(NitroError::BadSignature));

    // A signature from another dev CA's leaf over this payload: its certificate is not the one
    // in the document.
    let other = DevCa::from_seed(&[9; 32]).document(&request(T)).unwrap();
    let mut items = cose_items(&doc);
    items[3] = cose_items(&other)[3].clone();
    let spliced = encode(&Value::Array(items));
    assert_eq!(verify(&spliced, &policy), Err(NitroError::BadSignature));
}

#[test]
fn freshness_is_enforced_live_and_skipped_in_audit_mode() {
    let ca = ca();
    let doc = ca.document(&request(T)).unwrap();

    // Ten minutes later, five allowed: stale.
    match verify(&doc, &dev_policy(&ca, T + 10 * MINUTE)) {
        Err(NitroError::Stale {
            age_ms, max_age_ms, ..
        }) => {
            assert_eq!(age_ms, 10 * MINUTE);
            assert_eq!(max_age_ms, 5 * MINUTE);
        }
        other => panic!("{other:?}"),
    }
    // Dated two minutes after the verifier's clock: beyond the one-minute skew.
    assert!(matches!(
        verify(&doc, &dev_policy(&ca, T - 2 * MINUTE)),
        Err(NitroError::FromTheFuture { .. })
    ));
    // Within the skew: accepted.
    assert!(verify(&doc, &dev_policy(&ca, T - 30_000)).is_ok());
    // Before the leaf was issued (five minutes before the timestamp): not yet valid.
    assert!(matches!(
        verify(&doc, &dev_policy(&ca, T - 10 * MINUTE)),
        Err(NitroError::CertificateNotYetValid { ref cert, .. }) if cert == "certificate"
    ));
    // A day later the leaf (three hours) has expired, whatever the maximum age.
    let long = Policy::at(T + DAY, 2 * DAY).with_roots(vec![ca.trusted_root()]);
    assert!(matches!(
        verify(&doc, &long),
        Err(NitroError::CertificateExpired { ref cert, .. }) if cert == "certificate"
    ));

    // Audit: verified at the document's own time, however old it is today.
    let audit = Policy::audit().with_roots(vec![ca.trusted_root()]);
    let v = verify_strict(&doc, &audit).unwrap();
    assert!(v.audit);
    assert!(v.root.dev);
    assert_eq!(v.evaluated_at_ms, T);
    assert!(v.check("freshness").unwrap().detail.contains("audit mode"));
    // Audit mode trusts only the roots it is given, too.
    assert!(matches!(
        verify(&doc, &Policy::audit()),
        Err(NitroError::UntrustedRoot { .. })
    ));
}

#[test]
fn the_same_seed_gives_the_same_root_and_documents() {
    let a = DevCa::from_seed(&SEED);
    let b = DevCa::from_seed(&SEED);
    assert_eq!(a.root_der(), b.root_der());
    assert_eq!(a.root_fingerprint(), b.root_fingerprint());
    assert_eq!(a.trusted_root(), b.trusted_root());
    assert_eq!(a.root_fingerprint().len(), 64);
    assert_eq!(
        a.root_fingerprint(),
        TrustedRoot::dev("x", &a.root_der()).fingerprint_hex()
    );
    assert_eq!(
        a.document(&request(T)).unwrap(),
        b.document(&request(T)).unwrap()
    );

    let c = DevCa::from_seed(&[43; 32]);
    assert_ne!(a.root_fingerprint(), c.root_fingerprint());
    // Each document has its own leaf certificate.
    let leaf = |doc: &[u8]| parse(doc).unwrap().certificate;
    assert_ne!(
        leaf(&a.document(&request(T)).unwrap()),
        leaf(&a.document(&request(T + 1)).unwrap())
    );
}

#[test]
fn the_dev_attester_dates_documents_by_its_clock_and_says_dev() {
    let now = Arc::new(AtomicU64::new(T));
    let clock = now.clone();
    let attester = DevAttester::new(ca(), dev_pcrs(IMAGE), move || clock.load(Ordering::SeqCst));
    let root = attester.trusted_root();
    let attester: Box<dyn Attester> = Box::new(attester);
    assert!(attester.is_dev());

    let user_data = NitridingUserData::for_keys(TLS_CERT, SIGNING_KEY).to_bytes();
    let doc = attester
        .attest(Some(SIGNING_KEY), Some(&user_data), Some(b"nonce"))
        .unwrap();
    let policy = Policy::at(T, 5 * MINUTE)
        .with_roots(vec![root.clone()])
        .expect_pcr(0, dev_pcrs(IMAGE)[&0].clone())
        .expect_nonce(b"nonce".to_vec())
        .require_binding(KeyBinding::Nitriding {
            signing_key_spki_der: SIGNING_KEY.to_vec(),
            tls_cert_der: Some(TLS_CERT.to_vec()),
        });
    let v = verify_strict(&doc, &policy).unwrap();
    assert_eq!(v.timestamp_ms, T);
    assert_eq!(v.public_key.as_deref(), Some(SIGNING_KEY));

    now.store(T + HOUR, Ordering::SeqCst);
    let later = attester.attest(None, None, None).unwrap();
    assert_eq!(parse(&later).unwrap().timestamp_ms, T + HOUR);

    // What a verifier would refuse, the attester refuses, naming the field.
    let err = attester.attest(None, Some(&[0u8; 600]), None).unwrap_err();
    assert!(
        matches!(err, AttestError::Dev(DevError::Field { ref field, .. }) if field == "user_data"),
        "{err}"
    );
    assert!(err.to_string().contains("user_data"), "{err}");
}

const HOUR: u64 = 60 * MINUTE;

#[cfg(feature = "nsm")]
#[test]
fn outside_a_nitro_enclave_the_nsm_attester_says_so() {
    if std::path::Path::new(haca_tee::attester::NSM_DEVICE).exists() {
        return; // inside an enclave: nothing to assert here
    }
    let err = haca_tee::NsmAttester::open().unwrap_err();
    assert!(matches!(err, AttestError::NsmUnavailable(_)), "{err}");
    assert!(err.to_string().contains("/dev/nsm"), "{err}");
}
