//! What a validator spends checking one batch-mode record before it settles
//! (`standard_evidence`): an unpaid run against one paid with an x402 `exact` payment, whose
//! payer's EIP-712 signature is recovered from the receipt's payment box.

use criterion::{criterion_group, criterion_main, Criterion};
use haca_chain::{standard_evidence, ChainState, RunRecord};
use haca_core::receipt::{BoxStatus, EvidenceBox};
use haca_core::settlement::{Genesis, SettlementMode, SettlementParams, Validator, ValidatorSet};
use haca_core::testing::vanilla_receipt;
use haca_core::{BlobId, NodeKey};
use haca_pay::PrivateKeySigner;

const T0: u64 = 1_764_000_000_000;

fn record(key: &NodeKey, paid: bool) -> RunRecord {
    let mut r = vanilla_receipt(key, BlobId::of(b"model"), T0, 1);
    r.settlement_mode = Some(SettlementMode::Batch);
    if paid {
        let exec = r.boxes.execution.evidence.clone().unwrap();
        let mut p = haca_pay::testing::signed_payment(
            &PrivateKeySigner::random(),
            exec.request_hash,
            7,
            T0 - 1,
            T0 / 1000 + 60,
        );
        p.model = Some(BlobId::of(b"model"));
        p.mode = Some(exec.mode);
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
        let view = state.evidence_view();
        evidence.verify(&r, &view).expect("the record verifies");
        c.bench_function(name, |b| b.iter(|| evidence.verify(&r, &view).unwrap()));
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
