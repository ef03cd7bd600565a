//! A caller may trust a dev CA explicitly: documents under it verify (and say "dev"), only
//! when it is named; nitriding key binding holds end to end.

use crate::common::dev::{p256, DevCa, Options, DEV_TIMESTAMP};
use crate::common::*;
use haca_tee::nitro::{verify, verify_strict, KeyBinding, NitridingUserData, Policy, TrustedRoot};
use haca_tee::NitroError;

const TLS_CERT: &[u8] = b"the enclave's TLS certificate (DER)";
const SIGNING_KEY: &[u8] = b"the enclave's signing key SubjectPublicKeyInfo (DER)";

fn dev_policy(ca: &DevCa) -> Policy {
    Policy::at(DEV_TIMESTAMP + 1_000, 5 * MINUTE)
        .with_roots(vec![TrustedRoot::dev("haca-dev", &ca.root_der)])
}

#[test]
fn a_dev_document_verifies_only_when_its_root_is_trusted_and_says_dev() {
    let ca = DevCa::new(Options::default());
    let doc = ca.document(DEV_TIMESTAMP, None, None, None);

    let v = verify(&doc, &dev_policy(&ca)).unwrap();
    assert!(v.root.dev);
    assert_eq!(v.root.label, "haca-dev");
    assert!(v.check("root").unwrap().detail.contains("dev root"));
    assert_eq!(v.pcrs[&3], hex::encode([3u8; 48]));

    // The default policy trusts AWS only.
    assert!(matches!(
        verify(&doc, &Policy::at(DEV_TIMESTAMP, 5 * MINUTE)),
        Err(NitroError::UntrustedRoot { .. })
    ));
}

#[test]
fn nitriding_user_data_binds_the_signing_key_and_tls_certificate() {
    let ca = DevCa::new(Options::default());
    let user_data = NitridingUserData::for_keys(TLS_CERT, SIGNING_KEY).to_bytes();
    let doc = ca.document(DEV_TIMESTAMP, None, Some(user_data.to_vec()), None);

    let policy = dev_policy(&ca).require_binding(KeyBinding::Nitriding {
        signing_key_spki_der: SIGNING_KEY.to_vec(),
        tls_cert_der: Some(TLS_CERT.to_vec()),
    });
    let v = verify_strict(&doc, &policy).unwrap();
    assert!(v.check("key_binding").unwrap().passed);
    let n = v.nitriding.unwrap();
    assert_eq!(
        n.tls_cert_sha256,
        NitridingUserData::for_keys(TLS_CERT, b"").tls_cert_sha256
    );

    let other_key = dev_policy(&ca).require_binding(KeyBinding::Nitriding {
        signing_key_spki_der: b"another key".to_vec(),
        tls_cert_der: None,
    });
    assert!(matches!(
        verify_strict(&doc, &other_key),
        Err(NitroError::CheckFailed { ref check, .. }) if check == "key_binding"
    ));
}

#[test]
fn a_leaf_key_that_is_not_p384_is_refused() {
    let ca = DevCa::new(Options {
        leaf_alg: p256(),
        ..Options::default()
    });
    let doc = ca.document(DEV_TIMESTAMP, None, None, None);
    match verify(&doc, &dev_policy(&ca)) {
        Err(NitroError::Certificate { cert, reason }) => {
            assert_eq!(cert, "certificate");
            assert!(reason.contains("P-384"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_intermediate_that_is_not_a_ca_cannot_issue_the_leaf() {
    let ca = DevCa::new(Options {
        intermediate_is_ca: false,
        ..Options::default()
    });
    let doc = ca.document(DEV_TIMESTAMP, None, None, None);
    match verify(&doc, &dev_policy(&ca)) {
        Err(NitroError::Certificate { cert, reason }) => {
            assert_eq!(cert, "cabundle[1]");
            assert!(reason.contains("not a CA"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_timestamp_outside_the_leaf_validity_is_refused() {
    // The dev leaf is valid 2025-01-01 .. 2035-01-01; a document dated 2036 checked in 2034.
    let ca = DevCa::new(Options::default());
    let in_2036 = 2_082_758_400_000;
    let doc = ca.document(in_2036, None, None, None);
    let policy = Policy::at(2_040_000_000_000, 10 * 365 * DAY)
        .with_roots(vec![TrustedRoot::dev("haca-dev", &ca.root_der)]);
    assert!(matches!(
        verify(&doc, &policy),
        Err(NitroError::TimestampOutsideCertificate { .. })
    ));
}
