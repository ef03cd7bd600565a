//! Shared test helpers: keys, requirements, payments, a funded ledger.
#![allow(dead_code)]

use haca_pay::{
    build_payment, select_requirement, Address, AnyPaymentPayload, AnyPaymentRequired,
    AnyRequirements, MemLedger, PayPolicy, PaymentRequired, PaymentRequirements, PrivateKeySigner,
    ResourceInfo, B256, U256,
};

/// USDC on Base Sepolia.
pub const USDC: &str = "0x036CbD53842c5426634e7929541eC2318f3dCF7e";
pub const NOW: u64 = 1_740_672_089;
pub const PRICE: u64 = 10_000;

pub fn usdc() -> Address {
    USDC.parse().unwrap()
}

/// A deterministic test key.
pub fn key(n: u8) -> PrivateKeySigner {
    PrivateKeySigner::from_bytes(&B256::repeat_byte(n)).unwrap()
}

pub fn merchant() -> Address {
    Address::repeat_byte(0x20)
}

pub fn requirements_v2() -> PaymentRequirements {
    PaymentRequirements::exact_evm(
        "eip155:84532",
        usdc(),
        merchant(),
        U256::from(PRICE),
        60,
        "USDC",
        "2",
    )
}

pub fn required_v2(req: PaymentRequirements) -> AnyPaymentRequired {
    AnyPaymentRequired::V2(PaymentRequired {
        x402_version: 2,
        error: Some("PAYMENT-SIGNATURE header is required".into()),
        resource: Some(ResourceInfo {
            url: "https://gateway.example/v1/chat/completions".into(),
            description: None,
            mime_type: Some("application/json".into()),
        }),
        accepts: vec![req],
        extensions: None,
    })
}

/// A v2 payment for `req`, signed by `signer` at `now`.
pub fn pay_v2(
    req: &PaymentRequirements,
    signer: &PrivateKeySigner,
    now: u64,
    nonce: u8,
) -> AnyPaymentPayload {
    let required = required_v2(req.clone());
    let selected = select_requirement(&required, &PayPolicy::default()).unwrap();
    build_payment(&selected, signer, now, B256::repeat_byte(nonce))
}

pub fn v2(req: &PaymentRequirements) -> AnyRequirements {
    AnyRequirements::V2(req.clone())
}

/// A ledger where `who` holds `amount` USDC base units.
pub fn funded(who: Address, amount: u64) -> MemLedger {
    let mut l = MemLedger::new();
    l.mint(usdc(), who, U256::from(amount)).unwrap();
    l
}
