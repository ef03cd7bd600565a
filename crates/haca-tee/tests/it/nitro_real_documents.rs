//! The real AWS-signed documents (four from public verifiers' test suites, one from an
//! OpenGradient enclave) verify at their own time, with their PCR0, and report what they hold.

use crate::common::*;
use haca_tee::nitro::{
    parse, verify, KeyBinding, Policy, TrustedRoot, AWS_NITRO_ROOT_G1_DER, AWS_NITRO_ROOT_G1_SHA256,
};

const AWS_ROOT_HEX: &str = "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b";

#[test]
fn every_real_document_verifies_at_its_own_timestamp_with_its_pcr0() {
    for f in fixtures() {
        let policy = Policy::at(f.at, 5 * MINUTE).expect_pcr(0, f.pcr0.clone());
        let v = verify(f.bytes, &policy).unwrap_or_else(|e| panic!("{}: {e}", f.name));
        assert_eq!(v.timestamp_ms, f.at, "{}", f.name);
        assert_eq!(v.pcrs[&0], hex::encode(&f.pcr0), "{}", f.name);
        assert_eq!(v.pcrs.len(), 16, "{}", f.name);
        assert_eq!(v.root_fingerprint, AWS_ROOT_HEX, "{}", f.name);
        assert!(!v.root.dev);
        assert!(!v.audit);
        assert_eq!(v.evaluated_at_ms, f.at);
        assert!(v.all_checks_passed(), "{}: {:?}", f.name, v.checks);
        let names: Vec<&str> = v.checks.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "structure",
                "root",
                "certificate_chain",
                "validity",
                "signature",
                "freshness",
                "pcrs"
            ],
            "{}",
            f.name
        );
        assert_eq!(v.document_digest, haca_core::sha256(f.bytes));
    }
}

#[test]
fn audit_mode_verifies_each_document_at_its_own_time_years_later() {
    for f in fixtures() {
        let v = verify(f.bytes, &Policy::audit()).unwrap_or_else(|e| panic!("{}: {e}", f.name));
        assert!(v.audit);
        assert_eq!(v.evaluated_at_ms, f.at);
        let freshness = v.check("freshness").unwrap();
        assert!(freshness.passed && freshness.detail.contains("audit mode"));
    }
}

#[test]
fn a_document_verifies_until_its_maximum_age() {
    let f = fixture("base_nitro_validator");
    assert!(verify(f.bytes, &Policy::at(f.at + 5 * MINUTE, 5 * MINUTE)).is_ok());
}

#[test]
fn parse_reads_every_field_of_the_real_documents() {
    let cape = parse(fixture("cape_js").bytes).unwrap();
    assert_eq!(cape.module_id, "i-0697c9729fa547b20-enc0183422ede9a5dc8");
    assert_eq!(cape.digest, "SHA384");
    assert_eq!(cape.public_key.as_ref().map(Vec::len), Some(32));
    assert_eq!(cape.user_data.as_ref().map(Vec::len), Some(250));
    assert_eq!(cape.nonce.as_ref().map(Vec::len), Some(12));
    assert_eq!(cape.cabundle.len(), 4);
    assert_eq!(cape.signature.len(), 96);

    let base = parse(fixture("base_nitro_validator").bytes).unwrap();
    assert_eq!(base.public_key.as_ref().map(Vec::len), Some(65));
    assert_eq!(base.user_data, None);
    assert_eq!(base.nonce, None);

    let uid2 = parse(fixture("uid2_core_debug").bytes).unwrap();
    assert_eq!(uid2.public_key, None);
    assert_eq!(
        uid2.pcrs[&0],
        vec![0; 48],
        "a debug-mode enclave has PCR0 all zero"
    );

    let prover = parse(fixture("nitroprover_sample").bytes).unwrap();
    assert_eq!(prover.user_data.as_ref().map(Vec::len), Some(42));
}

#[test]
fn the_pinned_root_is_cabundle_zero_of_every_real_document() {
    for f in fixtures() {
        let doc = parse(f.bytes).unwrap();
        assert_eq!(doc.cabundle[0], AWS_NITRO_ROOT_G1_DER, "{}", f.name);
    }
    assert_eq!(hex::encode(AWS_NITRO_ROOT_G1_SHA256), AWS_ROOT_HEX);
    assert_eq!(
        TrustedRoot::from_der("x", AWS_NITRO_ROOT_G1_DER).sha256,
        AWS_NITRO_ROOT_G1_SHA256
    );
}

#[test]
fn a_tagged_cose_sign1_verifies_like_the_untagged_one() {
    let f = fixture("cape_js");
    let mut tagged = vec![0xd2]; // tag 18
    tagged.extend_from_slice(f.bytes);
    let v = verify(&tagged, &Policy::audit()).unwrap();
    assert_eq!(v.module_id, "i-0697c9729fa547b20-enc0183422ede9a5dc8");
}

#[test]
fn expected_nonce_and_public_key_hold_when_the_document_carries_them() {
    let f = fixture("cape_js");
    let doc = parse(f.bytes).unwrap();
    let policy = Policy::audit()
        .expect_nonce(doc.nonce.clone().unwrap())
        .require_binding(KeyBinding::PublicKey(doc.public_key.clone().unwrap()));
    let v = verify(f.bytes, &policy).unwrap();
    assert!(v.check("nonce").unwrap().passed);
    assert!(v.check("key_binding").unwrap().passed);
    assert!(v.require_checks().is_ok());
}

#[test]
fn verified_document_serializes_bytes_as_hex() {
    let f = fixture("base_nitro_validator");
    let v = verify(f.bytes, &Policy::audit()).unwrap();
    let json = serde_json::to_value(&v).unwrap();
    assert_eq!(json["root"]["sha256"], AWS_ROOT_HEX);
    assert_eq!(json["root_fingerprint"], AWS_ROOT_HEX);
    assert_eq!(json["pcrs"]["0"], hex::encode(&f.pcr0));
    assert_eq!(json["user_data"], serde_json::Value::Null);
    assert_eq!(json["public_key"].as_str().unwrap().len(), 130);
    assert_eq!(json["checks"][0]["name"], "structure");
}
