//! The `exact` verification rules: a round trip, and one test per rejection reason with its
//! machine code.

use crate::common::*;
use haca_pay::facilitator::EXPIRY_MARGIN_SECS;
use haca_pay::{
    build_payment, decode_facilitator_request, decode_payment_header, encode_header,
    select_requirement, settle_exact, verify_exact, Address, AnyPaymentPayload, AnyPaymentRequired,
    AnyRequirements, Ledger, PayPolicy, PaymentError, PaymentRequiredV1, PaymentRequirementsV1,
    VerifyContext, B256, U256,
};

fn ctx() -> VerifyContext {
    VerifyContext::at(NOW + 1)
}

/// Verify `payment` against `req` on a ledger that funds its payer well, and return the code.
fn code_of(
    payment: &AnyPaymentPayload,
    req: &AnyRequirements,
    ctx: &VerifyContext,
) -> &'static str {
    let ledger = funded(payment.exact().authorization.from, 1_000_000);
    let err = verify_exact(payment, req, ctx, &ledger).unwrap_err();
    assert!(!err.to_string().is_empty());
    err.code()
}

fn v2_payment(p: &mut AnyPaymentPayload) -> &mut haca_pay::PaymentPayload {
    match p {
        AnyPaymentPayload::V2(p) => p,
        _ => panic!("expected v2"),
    }
}

fn requirements_v1() -> PaymentRequirementsV1 {
    PaymentRequirementsV1 {
        scheme: "exact".into(),
        network: "base-sepolia".into(),
        max_amount_required: PRICE.to_string(),
        resource: "https://gateway.example/v1/chat/completions".into(),
        description: Some("chat".into()),
        mime_type: Some("application/json".into()),
        pay_to: merchant().to_checksum(None),
        max_timeout_seconds: 60,
        asset: USDC.into(),
        output_schema: None,
        extra: Some(serde_json::json!({"name": "USDC", "version": "2"})),
    }
}

fn pay_v1(signer: &haca_pay::PrivateKeySigner, now: u64) -> AnyPaymentPayload {
    let required = AnyPaymentRequired::V1(PaymentRequiredV1 {
        x402_version: 1,
        error: None,
        accepts: vec![requirements_v1()],
    });
    let selected = select_requirement(&required, &PayPolicy::default()).unwrap();
    build_payment(&selected, signer, now, B256::repeat_byte(1))
}

#[test]
fn sign_verify_settle_round_trip_v2() {
    let payer = key(1);
    let req = requirements_v2();
    let payment = pay_v2(&req, &payer, NOW, 1);
    // Through the wire and back.
    let payment = decode_payment_header(&encode_header(&payment)).unwrap();
    let mut ledger = funded(payer.address(), 25_000);
    let ok = verify_exact(&payment, &v2(&req), &ctx(), &ledger).unwrap();
    assert_eq!(ok.payer(), payer.address());
    assert_eq!(ok.pay_to(), merchant());
    assert_eq!(ok.asset(), usdc());
    assert_eq!(
        ok.verify_response().payer,
        Some(payer.address().to_checksum(None))
    );

    let settled = settle_exact(&mut ledger, &payment, &v2(&req), &ctx()).unwrap();
    assert_eq!(
        ledger.balance(usdc(), payer.address()),
        U256::from(15_000u64)
    );
    assert_eq!(ledger.balance(usdc(), merchant()), U256::from(PRICE));
    assert!(ledger.nonce_used(usdc(), payer.address(), B256::repeat_byte(1)));
    let resp = settled.settle_response(settled.digest());
    assert!(resp.success);
    assert_eq!(resp.amount.as_deref(), Some("10000"));
    assert_eq!(resp.network, "eip155:84532");

    // The same payment settles once.
    let again = settle_exact(&mut ledger, &payment, &v2(&req), &ctx()).unwrap_err();
    assert_eq!(again.code(), "invalid_exact_evm_nonce_already_used");
    assert_eq!(
        ledger.balance(usdc(), payer.address()),
        U256::from(15_000u64)
    );
}

#[test]
fn sign_verify_round_trip_v1_through_a_facilitator_request() {
    let payer = key(2);
    let payment = pay_v1(&payer, NOW);
    let body = serde_json::json!({
        "x402Version": 1,
        "paymentPayload": payment,
        "paymentRequirements": requirements_v1(),
    });
    let req = decode_facilitator_request(&serde_json::to_vec(&body).unwrap()).unwrap();
    let ledger = funded(payer.address(), PRICE);
    let ok = verify_exact(
        &req.payment_payload,
        &req.payment_requirements,
        &ctx(),
        &ledger,
    )
    .unwrap();
    assert_eq!(ok.x402_version(), 1);
    assert_eq!(ok.amount(), U256::from(PRICE));
}

#[test]
fn rejects_an_unaccepted_version() {
    let payment = pay_v1(&key(1), NOW);
    let ctx = VerifyContext {
        accept_v1: false,
        ..ctx()
    };
    let req = AnyRequirements::V1(requirements_v1());
    assert_eq!(code_of(&payment, &req, &ctx), "invalid_x402_version");
}

#[test]
fn rejects_a_version_mismatch() {
    let payment = pay_v1(&key(1), NOW);
    assert_eq!(
        code_of(&payment, &v2(&requirements_v2()), &ctx()),
        "invalid_x402_version"
    );
}

#[test]
fn rejects_an_unknown_scheme() {
    let mut req = requirements_v2();
    let mut payment = pay_v2(&req, &key(1), NOW, 1);
    req.scheme = "upto".into();
    v2_payment(&mut payment).accepted.scheme = "upto".into();
    assert_eq!(code_of(&payment, &v2(&req), &ctx()), "unsupported_scheme");
}

#[test]
fn rejects_a_network_mismatch() {
    let mut req = requirements_v2();
    let payment = pay_v2(&req, &key(1), NOW, 1);
    req.network = "eip155:8453".into();
    assert_eq!(code_of(&payment, &v2(&req), &ctx()), "network_mismatch");
}

#[test]
fn rejects_an_unknown_network() {
    let mut req = requirements_v2();
    let mut payment = pay_v2(&req, &key(1), NOW, 1);
    req.network = "base-sepolia".into(); // a v1 name is not a v2 network
    v2_payment(&mut payment).accepted.network = "base-sepolia".into();
    assert_eq!(code_of(&payment, &v2(&req), &ctx()), "invalid_network");
}

#[test]
fn rejects_an_asset_mismatch() {
    let req = requirements_v2();
    let mut payment = pay_v2(&req, &key(1), NOW, 1);
    v2_payment(&mut payment).accepted.asset = Address::repeat_byte(0x99).to_checksum(None);
    assert_eq!(
        code_of(&payment, &v2(&req), &ctx()),
        "invalid_exact_evm_payload_asset_mismatch"
    );
}

#[test]
fn rejects_invalid_requirements() {
    let mut req = requirements_v2();
    let payment = pay_v2(&req, &key(1), NOW, 1);
    req.pay_to = "merchant".into();
    let ledger = funded(key(1).address(), 1_000_000);
    let err = verify_exact(&payment, &v2(&req), &ctx(), &ledger).unwrap_err();
    assert_eq!(err.code(), "invalid_payment_requirements");
    assert!(err.to_string().contains("payTo"), "{err}");
}

#[test]
fn rejects_requirements_without_an_eip712_domain() {
    let mut req = requirements_v2();
    let payment = pay_v2(&req, &key(1), NOW, 1);
    req.extra.remove("version");
    assert_eq!(
        code_of(&payment, &v2(&req), &ctx()),
        "missing_eip712_domain"
    );
}

#[test]
fn rejects_a_recipient_mismatch() {
    let mut req = requirements_v2();
    let payment = pay_v2(&req, &key(1), NOW, 1);
    req.pay_to = Address::repeat_byte(0x77).to_checksum(None);
    assert_eq!(
        code_of(&payment, &v2(&req), &ctx()),
        "invalid_exact_evm_payload_recipient_mismatch"
    );
}

#[test]
fn rejects_an_amount_other_than_the_required_one() {
    for required in [PRICE + 1, PRICE - 1] {
        let mut req = requirements_v2();
        let payment = pay_v2(&req, &key(1), NOW, 1);
        req.amount = required.to_string();
        assert_eq!(
            code_of(&payment, &v2(&req), &ctx()),
            "invalid_exact_evm_payload_authorization_value"
        );
    }
}

#[test]
fn rejects_an_authorization_not_yet_valid() {
    // v1 authorizes from now - 600; at exactly that second it is not valid yet.
    let payment = pay_v1(&key(1), NOW);
    let req = AnyRequirements::V1(requirements_v1());
    let at = VerifyContext::at(NOW - 600);
    assert_eq!(
        code_of(&payment, &req, &at),
        "invalid_exact_evm_payload_authorization_valid_after"
    );
    let ledger = funded(key(1).address(), PRICE);
    assert!(verify_exact(&payment, &req, &VerifyContext::at(NOW - 599), &ledger).is_ok());
}

#[test]
fn rejects_an_expired_authorization() {
    let req = requirements_v2();
    let payment = pay_v2(&req, &key(1), NOW, 1); // valid before NOW + 60
    let last_ok = NOW + 60 - EXPIRY_MARGIN_SECS - 1;
    let ledger = funded(key(1).address(), PRICE);
    assert!(verify_exact(&payment, &v2(&req), &VerifyContext::at(last_ok), &ledger).is_ok());
    assert_eq!(
        code_of(&payment, &v2(&req), &VerifyContext::at(last_ok + 1)),
        "invalid_exact_evm_payload_authorization_valid_before"
    );
}

#[test]
fn rejects_a_bad_signature() {
    let req = requirements_v2();
    // Tampered authorization: the signature no longer recovers to `from`.
    let mut payment = pay_v2(&req, &key(1), NOW, 1);
    v2_payment(&mut payment).payload.authorization.nonce = B256::repeat_byte(2);
    assert_eq!(
        code_of(&payment, &v2(&req), &ctx()),
        "invalid_exact_evm_payload_signature"
    );
    // Signed by someone else on the payer's behalf.
    let mut payment = pay_v2(&req, &key(1), NOW, 1);
    v2_payment(&mut payment).payload.authorization.from = key(3).address();
    assert_eq!(
        code_of(&payment, &v2(&req), &ctx()),
        "invalid_exact_evm_payload_signature"
    );
    // Truncated.
    let mut payment = pay_v2(&req, &key(1), NOW, 1);
    let p = v2_payment(&mut payment);
    p.payload.signature = p.payload.signature.slice(..64);
    let ledger = funded(key(1).address(), PRICE);
    let err = verify_exact(&payment, &v2(&req), &ctx(), &ledger).unwrap_err();
    assert_eq!(err.code(), "invalid_exact_evm_payload_signature");
    assert!(err.to_string().contains("65 bytes"), "{err}");
}

#[test]
fn rejects_a_used_nonce() {
    let req = requirements_v2();
    let payer = key(1);
    let mut ledger = funded(payer.address(), 3 * PRICE);
    let first = pay_v2(&req, &payer, NOW, 1);
    settle_exact(&mut ledger, &first, &v2(&req), &ctx()).unwrap();
    // A second, differently timed authorization that reuses the nonce.
    let second = pay_v2(&req, &payer, NOW + 1, 1);
    let err = verify_exact(&second, &v2(&req), &ctx(), &ledger).unwrap_err();
    assert_eq!(err.code(), "invalid_exact_evm_nonce_already_used");
    assert!(matches!(err, PaymentError::NonceUsed { .. }));
}

#[test]
fn rejects_insufficient_funds() {
    let req = requirements_v2();
    let payer = key(1);
    let payment = pay_v2(&req, &payer, NOW, 1);
    let mut ledger = funded(payer.address(), PRICE - 1);
    let err = verify_exact(&payment, &v2(&req), &ctx(), &ledger).unwrap_err();
    assert_eq!(err.code(), "insufficient_funds");
    let resp = err.verify_response(Some(payer.address()));
    assert!(!resp.is_valid);
    assert_eq!(resp.invalid_reason.as_deref(), Some("insufficient_funds"));
    let err = settle_exact(&mut ledger, &payment, &v2(&req), &ctx()).unwrap_err();
    let resp = err.settle_response(Some(payer.address()), "eip155:84532");
    assert!(!resp.success);
    assert_eq!(resp.transaction, "");
    assert_eq!(
        ledger.balance(usdc(), payer.address()),
        U256::from(PRICE - 1)
    );
}

#[test]
fn decode_errors_carry_codes() {
    let err: PaymentError = decode_payment_header("%%%").unwrap_err().into();
    assert_eq!(err.code(), "invalid_payload");
}

#[test]
fn the_client_skips_what_it_cannot_pay_and_says_why() {
    let mut permit2 = requirements_v2();
    permit2
        .extra
        .insert("assetTransferMethod".into(), "permit2".into());
    let mut solana = requirements_v2();
    solana.network = "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1".into();
    let mut pricey = requirements_v2();
    pricey.amount = "5000000".into();
    let good = requirements_v2();
    let AnyPaymentRequired::V2(mut required) = required_v2(permit2) else {
        unreachable!()
    };
    required.accepts.extend([solana, pricey, good.clone()]);
    let required = AnyPaymentRequired::V2(required);
    let policy = PayPolicy {
        max_amount: Some(U256::from(1_000_000u64)),
        ..PayPolicy::default()
    };
    let s = select_requirement(&required, &policy).unwrap();
    assert_eq!(s.index(), 3);
    assert_eq!(s.amount(), U256::from(PRICE));

    let policy = PayPolicy {
        max_amount: Some(U256::from(1u64)),
        ..PayPolicy::default()
    };
    let err = select_requirement(&required, &policy)
        .unwrap_err()
        .to_string();
    for needle in ["accepts[0]", "permit2", "solana", "over the limit"] {
        assert!(err.contains(needle), "{needle} missing from: {err}");
    }
}

#[test]
fn the_client_echoes_resource_and_follows_python_timing() {
    let req = requirements_v2();
    let payment = pay_v2(&req, &key(1), NOW, 1);
    let AnyPaymentPayload::V2(p) = &payment else {
        panic!()
    };
    assert_eq!(p.accepted, req);
    assert_eq!(
        p.resource.as_ref().map(|r| r.url.as_str()),
        Some("https://gateway.example/v1/chat/completions")
    );
    let a = &p.payload.authorization;
    assert_eq!(a.valid_after, U256::ZERO);
    assert_eq!(a.valid_before, U256::from(NOW + 60));
    let v1 = pay_v1(&key(1), NOW);
    let a = &v1.exact().authorization;
    assert_eq!(a.valid_after, U256::from(NOW - 600));
    assert_eq!(a.valid_before, U256::from(NOW + 60));
}
