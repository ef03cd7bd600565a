//! Per-core cost of taking an x402 payment: decoding the `PAYMENT-SIGNATURE` header, verifying
//! the `exact` payment (EIP-712 digest, secp256k1 recovery, amount, window, nonce, balance),
//! and the client's side (signing one).

use criterion::{criterion_group, criterion_main, Criterion};
use haca_pay::{
    build_payment, decode_payment_header, encode_header, select_requirement, verify_exact, Address,
    AnyPaymentRequired, AnyRequirements, MemLedger, PayPolicy, PaymentRequired,
    PaymentRequirements, PrivateKeySigner, VerifyContext, B256, U256,
};

const NOW: u64 = 1_764_000_000;

fn bench(c: &mut Criterion) {
    let asset: Address = "0x036CbD53842c5426634e7929541eC2318f3dCF7e"
        .parse()
        .unwrap();
    let req = PaymentRequirements::exact_evm(
        "eip155:84532",
        asset,
        Address::repeat_byte(0x20),
        U256::from(10_000u64),
        60,
        "USDC",
        "2",
    );
    let required = AnyPaymentRequired::V2(PaymentRequired {
        x402_version: 2,
        error: None,
        resource: None,
        accepts: vec![req.clone()],
        extensions: None,
    });
    let signer = PrivateKeySigner::from_bytes(&B256::repeat_byte(7)).unwrap();
    let selected = select_requirement(&required, &PayPolicy::default()).unwrap();
    let payment = build_payment(&selected, &signer, NOW, B256::repeat_byte(1));
    let header = encode_header(&payment);
    let mut ledger = MemLedger::new();
    ledger
        .mint(asset, signer.address(), U256::from(1_000_000u64))
        .unwrap();
    let reqs = AnyRequirements::V2(req);
    let ctx = VerifyContext::at(NOW + 1);

    c.bench_function("x402_decode_header", |b| {
        b.iter(|| decode_payment_header(&header).unwrap())
    });
    c.bench_function("x402_verify_exact", |b| {
        b.iter(|| verify_exact(&payment, &reqs, &ctx, &ledger).unwrap())
    });
    c.bench_function("x402_decode_and_verify", |b| {
        b.iter(|| {
            let p = decode_payment_header(&header).unwrap();
            verify_exact(&p, &reqs, &ctx, &ledger).unwrap()
        })
    });
    c.bench_function("x402_client_sign", |b| {
        b.iter(|| build_payment(&selected, &signer, NOW, B256::repeat_byte(2)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
