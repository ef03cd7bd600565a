//! Interoperability with the official Python `x402` package (2.25.0) and `eth_account`
//! (0.14.0).
//!
//! `x402_vectors.json` is the output of `tests/x402_vectors.py`, produced with
//!     python3 -m venv /tmp/x402venv
//!     /tmp/x402venv/bin/pip install "x402[evm]==2.25.0"
//!     /tmp/x402venv/bin/python crates/haca-pay/tests/x402_vectors.py \
//!         > crates/haca-pay/tests/x402_vectors.json
//! It holds a TransferWithAuthorization digest and signature made by `eth_account` directly,
//! and headers made by the x402 client itself (`x402ClientSync` + `register_exact_evm_client`)
//! with a fixed key (anvil's account 0), nonce and clock. ECDSA here and there is
//! deterministic (RFC 6979), so haca-pay must reproduce every byte.

use crate::common::*;
use haca_pay::types::AnyPaymentRequired;
use haca_pay::{
    build_payment, decode_payment_header, decode_payment_required_body,
    decode_payment_required_header, decode_payment_response_header, encode_header,
    select_requirement, verify_exact, Address, AnyPaymentPayload, AnyRequirements, Authorization,
    PayPolicy, PrivateKeySigner, TokenDomain, VerifyContext, B256, U256,
};

const KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
const NONCE: &str = "0xf3746613c2d920b5fdabc0856f2aeb2d4f88ee6037b8cc5d04a71a4462f13480";
const PAY_TO: &str = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C";

fn vectors() -> serde_json::Value {
    serde_json::from_str(include_str!("../x402_vectors.json")).unwrap()
}

fn vec_str(name: &str) -> String {
    vectors()[name].as_str().unwrap().to_string()
}

fn signer() -> PrivateKeySigner {
    KEY.parse().unwrap()
}

#[test]
fn eth_account_signature_is_reproduced() {
    let v = vectors();
    let key = signer();
    assert_eq!(
        key.address().to_checksum(None),
        v["address"].as_str().unwrap()
    );
    let domain = TokenDomain {
        name: "USDC".into(),
        version: "2".into(),
        chain_id: 84532,
        verifying_contract: usdc(),
    };
    let auth = Authorization {
        from: key.address(),
        to: PAY_TO.parse().unwrap(),
        value: U256::from(10_000u64),
        valid_after: U256::from(1_740_672_089u64),
        valid_before: U256::from(1_740_672_154u64),
        nonce: NONCE.parse().unwrap(),
    };
    let digest: B256 = v["digest"].as_str().unwrap().parse().unwrap();
    assert_eq!(domain.signing_hash(&auth), digest);
    let sig = domain.sign(&auth, &key);
    assert_eq!(sig.to_string(), v["signature"].as_str().unwrap());
    assert_eq!(domain.recover(&auth, &sig).unwrap(), key.address());
}

#[test]
fn python_v2_headers_decode_verify_and_reencode_byte_for_byte() {
    let required_header = vec_str("payment_required_v2");
    let required = decode_payment_required_header(&required_header).unwrap();
    assert_eq!(encode_header(&required), required_header);
    let AnyPaymentRequired::V2(r) = &required else {
        panic!("expected v2")
    };
    let requirements = AnyRequirements::V2(r.accepts[0].clone());

    let payment_header = vec_str("payment_signature_v2");
    let payment = decode_payment_header(&payment_header).unwrap();
    assert!(matches!(payment, AnyPaymentPayload::V2(_)));
    assert_eq!(encode_header(&payment), payment_header);

    let key = signer();
    let ledger = funded(key.address(), 1_000_000);
    let ok = verify_exact(
        &payment,
        &requirements,
        &VerifyContext::at(NOW + 1),
        &ledger,
    )
    .unwrap();
    assert_eq!(ok.payer(), key.address());
    assert_eq!(ok.amount(), U256::from(10_000u64));
    assert_eq!(ok.chain_id(), 84532);

    // haca's client, given the same 402, key, clock and nonce, writes the same header.
    let selected = select_requirement(&required, &PayPolicy::default()).unwrap();
    let ours = build_payment(&selected, &key, NOW, NONCE.parse().unwrap());
    assert_eq!(encode_header(&ours), payment_header);
}

#[test]
fn python_v1_messages_decode_verify_and_reencode_byte_for_byte() {
    let body = vec_str("payment_required_v1");
    let required = decode_payment_required_body(body.as_bytes()).unwrap();
    assert_eq!(serde_json::to_string(&required).unwrap(), body);
    let AnyPaymentRequired::V1(r) = &required else {
        panic!("expected v1")
    };
    let requirements = AnyRequirements::V1(r.accepts[0].clone());

    let header = vec_str("x_payment_v1");
    let payment = decode_payment_header(&header).unwrap();
    assert!(matches!(payment, AnyPaymentPayload::V1(_)));
    assert_eq!(encode_header(&payment), header);

    let key = signer();
    let ledger = funded(key.address(), 1_000_000);
    let ok = verify_exact(
        &payment,
        &requirements,
        &VerifyContext::at(NOW + 1),
        &ledger,
    )
    .unwrap();
    assert_eq!(ok.network(), "base-sepolia");
    assert_eq!(ok.chain_id(), 84532);

    let selected = select_requirement(&required, &PayPolicy::default()).unwrap();
    let ours = build_payment(&selected, &key, NOW, NONCE.parse().unwrap());
    assert_eq!(encode_header(&ours), header);
}

#[test]
fn python_payment_response_decodes() {
    let r = decode_payment_response_header(&vec_str("payment_response")).unwrap();
    assert!(r.success);
    assert_eq!(r.network, "eip155:84532");
    assert_eq!(
        r.payer.as_deref(),
        Some(vectors()["address"].as_str().unwrap())
    );
    assert_eq!(r.transaction, format!("0x{}", "ab".repeat(32)));
}

/// Print a haca-built header for `x402_vectors.py check <header>` (run with --nocapture).
#[test]
fn haca_header_for_python_check() {
    let key = key(9);
    let p = pay_v2(&requirements_v2(), &key, NOW, 5);
    let header = encode_header(&p);
    println!("{header}");
    assert_eq!(decode_payment_header(&header).unwrap(), p);
    let _: Address = key.address();
}
