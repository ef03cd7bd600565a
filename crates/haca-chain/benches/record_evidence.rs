//! What a validator spends checking one batch-mode record before it settles
//! (`standard_evidence`): an unpaid run against one paid with an x402 `exact` payment, whose
//! payer's EIP-712 signature is recovered from the receipt's payment box.

use criterion::{criterion_group, criterion_main, Criterion};
use haca_chain::{standard_evidence, ChainState, RunRecord};
use haca_core::receipt::{
    BoxStatus, EvidenceBox, PaymentAuthorization, PaymentEvidence, PaymentSettlement,
};
use haca_core::settlement::{Genesis, SettlementMode, SettlementParams, Validator, ValidatorSet};
use haca_core::testing::vanilla_receipt;
use haca_core::{BlobId, NodeKey};
use haca_pay::types::Authorization;
use haca_pay::{PrivateKeySigner, TokenDomain, B256, U256};

const T0: u64 = 1_764_000_000_000;

fn record(key: &NodeKey, paid: bool) -> RunRecord {
    let mut r = vanilla_receipt(key, BlobId::of(b"model"), T0, 1);
    r.settlement_mode = Some(SettlementMode::Batch);
    if paid {
        let payer = PrivateKeySigner::random();
        let token = "0x5FbDB2315678afecb367f032d93F642f64180aa3";
        let payee = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";
        let auth = Authorization {
            from: payer.address(),
            to: payee.parse().unwrap(),
            value: U256::from(1000u64),
            valid_after: U256::ZERO,
            valid_before: U256::from(T0 / 1000 + 60),
            nonce: B256::repeat_byte(7),
        };
        let domain = TokenDomain {
            name: "USD Coin".into(),
            version: "2".into(),
            chain_id: 31337,
            verifying_contract: token.parse().unwrap(),
        };
        let exec = r.boxes.execution.evidence.clone().unwrap();
        let p = PaymentEvidence {
            scheme: "exact".into(),
            network: "eip155:31337".into(),
            asset: token.into(),
            amount: "1000".into(),
            payer: payer.address().to_checksum(None),
            nonce: format!("0x{}", "07".repeat(32)),
            resource: "http://127.0.0.1:7070/v1/infer".into(),
            request_hash: exec.request_hash,
            model: Some(BlobId::of(b"model")),
            mode: Some(exec.mode),
            max_tokens: None,
            authorization: Some(PaymentAuthorization {
                token_name: "USD Coin".into(),
                token_version: "2".into(),
                chain_id: 31337,
                pay_to: payee.into(),
                valid_after: 0,
                valid_before: T0 / 1000 + 60,
                signature: format!("0x{}", hex::encode(domain.sign(&auth, &payer))),
            }),
            verified_at: T0 - 1,
            settlement: Some(PaymentSettlement {
                transaction: format!("0x{}", "ab".repeat(32)),
                settled_at: T0 - 1,
                round: None,
            }),
        };
        r.boxes.payment = EvidenceBox::with(p, BoxStatus::Claimed, T0);
    }
    r.sign(key).unwrap();
    RunRecord::new(&r, SettlementMode::Batch, None).unwrap()
}

fn bench(c: &mut Criterion) {
    let gateway = NodeKey::from_seed([1; 32]);
    let state = ChainState::genesis(&Genesis {
        tee: None,
        chain_id: "haca-bench".into(),
        genesis_time_ms: 0,
        validators: ValidatorSet::new(vec![Validator {
            public_key: NodeKey::from_seed([2; 32]).node_id(),
            power: 1,
        }])
        .unwrap(),
        gateways: vec![gateway.node_id()],
        settlement: SettlementParams::default(),
    });
    let evidence = standard_evidence();
    for (name, paid) in [
        ("record_evidence_unpaid", false),
        ("record_evidence_paid_x402", true),
    ] {
        let r = record(&gateway, paid);
        evidence.verify(&r, &state).expect("the record verifies");
        c.bench_function(name, |b| b.iter(|| evidence.verify(&r, &state).unwrap()));
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
