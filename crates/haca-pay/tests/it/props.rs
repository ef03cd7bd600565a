//! Properties: the decoders never panic on arbitrary input; the ledger conserves every
//! asset's total; an authorization settles at most once.

use crate::common::*;
use base64::Engine;
use haca_pay::types::MAX_HEADER_LEN;
use haca_pay::{
    decode_facilitator_request, decode_payment_header, decode_payment_required_body,
    decode_payment_required_header, decode_payment_response_header, settle_exact, Address, Ledger,
    MemLedger, PaymentRequirements, VerifyContext, U256,
};
use proptest::prelude::*;

fn all_decoders(header: &str) {
    let _ = decode_payment_header(header);
    let _ = decode_payment_required_header(header);
    let _ = decode_payment_response_header(header);
    let _ = decode_payment_required_body(header.as_bytes());
    let _ = decode_facilitator_request(header.as_bytes());
}

/// JSON fragments that steer arbitrary input toward the typed decoders.
fn jsonish() -> impl Strategy<Value = String> {
    let atom = prop_oneof![
        Just("\"x402Version\":".to_string()),
        Just("\"payload\":".to_string()),
        Just("\"authorization\":".to_string()),
        Just("\"accepted\":".to_string()),
        Just("\"accepts\":".to_string()),
        Just("\"paymentPayload\":".to_string()),
        Just("\"paymentRequirements\":".to_string()),
        Just("\"value\":".to_string()),
        Just("\"signature\":".to_string()),
        Just("{".to_string()),
        Just("}".to_string()),
        Just("[".to_string()),
        Just("]".to_string()),
        Just(",".to_string()),
        Just("1".to_string()),
        Just("2".to_string()),
        Just("\"0x\"".to_string()),
        Just("null".to_string()),
        "\"[0-9a-fx]{0,70}\"",
        "-?[0-9]{1,30}",
    ];
    prop::collection::vec(atom, 0..40).prop_map(|v| v.concat())
}

proptest! {
    #[test]
    fn decoders_never_panic_on_arbitrary_text(s in "\\PC{0,400}") {
        all_decoders(&s);
    }

    #[test]
    fn decoders_never_panic_on_arbitrary_bytes_in_base64(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let header = base64::engine::general_purpose::STANDARD.encode(&bytes);
        all_decoders(&header);
        let _ = decode_payment_required_body(&bytes);
        let _ = decode_facilitator_request(&bytes);
    }

    #[test]
    fn decoders_never_panic_on_jsonish_input(s in jsonish()) {
        let header = base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
        all_decoders(&header);
        all_decoders(&s);
    }

    #[test]
    fn a_valid_payment_with_one_field_garbled_is_refused_cleanly(
        which in 0usize..6,
        garbage in "[ -~]{0,80}",
    ) {
        let mut v = serde_json::to_value(pay_v2(&requirements_v2(), &key(1), NOW, 1)).unwrap();
        let field = ["from", "to", "value", "validAfter", "validBefore", "nonce"][which];
        v["payload"]["authorization"][field] = serde_json::Value::String(garbage);
        let header = base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(&v).unwrap());
        prop_assert!(header.len() < MAX_HEADER_LEN);
        if let Err(e) = decode_payment_header(&header) {
            prop_assert_eq!(e.code(), "invalid_payload");
            let shown = e.to_string();
            prop_assert!(shown.contains(field), "{}", shown);
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    Mint {
        to: usize,
        amount: u64,
    },
    Pay {
        from: usize,
        to: usize,
        amount: u64,
        nonce: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0usize..3, 0u64..50_000).prop_map(|(to, amount)| Op::Mint { to, amount }),
        (0usize..3, 0usize..3, 0u64..30_000, 0u8..4).prop_map(|(from, to, amount, nonce)| {
            Op::Pay {
                from,
                to,
                amount,
                nonce,
            }
        }),
    ]
}

fn requirements(to: Address, amount: u64) -> PaymentRequirements {
    PaymentRequirements::exact_evm(
        "eip155:84532",
        usdc(),
        to,
        U256::from(amount),
        60,
        "USDC",
        "2",
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Minting adds to the supply, settlements only move it: balances always sum to the supply,
    /// no balance goes negative (U256 would panic), and a refused settlement changes nothing.
    #[test]
    fn ledger_conserves_totals_and_settles_each_nonce_once(ops in prop::collection::vec(op(), 1..24)) {
        let keys = [key(1), key(2), key(3)];
        let mut ledger = MemLedger::new();
        let mut minted = U256::ZERO;
        let mut settled = std::collections::BTreeSet::new();
        for op in ops {
            match op {
                Op::Mint { to, amount } => {
                    ledger.mint(usdc(), keys[to].address(), U256::from(amount)).unwrap();
                    minted += U256::from(amount);
                }
                Op::Pay { from, to, amount, nonce } => {
                    let req = requirements(keys[to].address(), amount);
                    let payment = pay_v2(&req, &keys[from], NOW, nonce);
                    let before = ledger.clone();
                    let balance = ledger.balance(usdc(), keys[from].address());
                    let result = settle_exact(&mut ledger, &payment, &v2(&req), &VerifyContext::at(NOW + 1));
                    let first_use = !settled.contains(&(from, nonce));
                    prop_assert_eq!(result.is_ok(), first_use && balance >= U256::from(amount));
                    match result {
                        Ok(p) => {
                            settled.insert((from, nonce));
                            prop_assert_eq!(p.amount(), U256::from(amount));
                            prop_assert!(ledger.nonce_used(usdc(), keys[from].address(), p.nonce()));
                        }
                        Err(e) => {
                            prop_assert_eq!(&ledger, &before);
                            let expected = if first_use { "insufficient_funds" } else { "invalid_exact_evm_nonce_already_used" };
                            prop_assert_eq!(e.code(), expected);
                        }
                    }
                }
            }
            prop_assert_eq!(ledger.total_supply(usdc()), minted);
            prop_assert_eq!(ledger.sum_of_balances(usdc()), minted);
        }
    }
}
