//! Signed x402 payment boxes for tests and benchmarks elsewhere in the workspace: devnet's
//! token (chain 31337, "USD Coin" v2) and payee, 1000 base units, signed by a given payer.

use crate::eip3009::TokenDomain;
use crate::types::Authorization;
use alloy_primitives::{B256, U256};
use alloy_signer_local::PrivateKeySigner;
use haca_core::receipt::{PaymentAuthorization, PaymentEvidence, PaymentSettlement};
use haca_core::Digest;

/// devnet's token and payee (see haca's `payments::DEVNET_*`).
pub const TOKEN: &str = "0x5FbDB2315678afecb367f032d93F642f64180aa3";
pub const PAYEE: &str = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";

/// An `exact` payment box for `request_hash`, signed by `payer` with authorization nonce
/// 32 × `nonce`, valid until `valid_before` (unix seconds), verified and settled at
/// `verified_at` (unix ms). `model` and `mode` are left for the caller.
pub fn signed_payment(
    payer: &PrivateKeySigner,
    request_hash: Digest,
    nonce: u8,
    verified_at: u64,
    valid_before: u64,
) -> PaymentEvidence {
    let auth = Authorization {
        from: payer.address(),
        to: PAYEE.parse().expect("an address"),
        value: U256::from(1000u64),
        valid_after: U256::ZERO,
        valid_before: U256::from(valid_before),
        nonce: B256::repeat_byte(nonce),
    };
    let domain = TokenDomain {
        name: "USD Coin".into(),
        version: "2".into(),
        chain_id: 31337,
        verifying_contract: TOKEN.parse().expect("an address"),
    };
    let signature = domain.sign(&auth, payer);
    PaymentEvidence {
        scheme: "exact".into(),
        network: "eip155:31337".into(),
        asset: TOKEN.into(),
        amount: "1000".into(),
        payer: payer.address().to_checksum(None),
        nonce: format!("0x{}", hex::encode([nonce; 32])),
        resource: "http://127.0.0.1:7070/v1/infer".into(),
        request_hash,
        model: None,
        mode: None,
        max_tokens: None,
        authorization: Some(PaymentAuthorization {
            token_name: "USD Coin".into(),
            token_version: "2".into(),
            chain_id: 31337,
            pay_to: PAYEE.into(),
            valid_after: 0,
            valid_before,
            signature: format!("0x{}", hex::encode(&signature)),
        }),
        verified_at,
        settlement: Some(PaymentSettlement {
            transaction: format!("0x{}", hex::encode([nonce; 32])),
            settled_at: verified_at,
            round: None,
        }),
        upto: None,
    }
}
