//! Receipt verifications per second: parse a receipt file and check every claim offline
//! (the work of `haca verify` and of a validator's first pass).

use criterion::{criterion_group, criterion_main, Criterion};
use haca_core::claims::{Checker, Claim, TrustAnchors};
use haca_core::receipt::*;
use haca_core::{sha256, BlobId, NodeKey, ParsedReceipt, RunId};

fn bench(c: &mut Criterion) {
    let key = NodeKey::from_seed([9; 32]);
    let t = 1_764_000_000_000;
    let mut r = Receipt::new(RunId(sha256(b"run")), t);
    r.boxes.artifact = EvidenceBox::with(
        ArtifactEvidence {
            label: Some("example/mnist-mlp".into()),
            revision: Some(1),
            blob_id: BlobId::of(b"model"),
            format: "onnx".into(),
        },
        BoxStatus::Claimed,
        t,
    );
    r.boxes.route = EvidenceBox::with(
        RouteEvidence {
            provider: "local/tract".into(),
            node: key.node_id(),
            path: PrivacyPath::Direct,
            policy: "any".into(),
            attempts: vec![],
        },
        BoxStatus::Claimed,
        t,
    );
    r.boxes.execution = EvidenceBox::with(
        ExecutionEvidence {
            mode: ExecMode::Vanilla,
            runtime: "tract-onnx 0.23".into(),
            request_hash: sha256(b"q"),
            input_hash: sha256(b"i"),
            output_hash: sha256(b"o"),
            signer: key.node_id(),
            started_at: t,
            finished_at: t,
            signature: None,
        },
        BoxStatus::Claimed,
        t,
    );
    r.sign(&key).unwrap();
    let text = serde_json::to_string(&r).unwrap();
    let anchors = TrustAnchors::default();
    c.bench_function("receipt_parse_and_check_all_claims", |b| {
        b.iter(|| {
            let parsed = ParsedReceipt::from_json_str(&text).unwrap();
            let checker = Checker::new(&parsed, &anchors, t);
            let held = Claim::all(300, 86_400)
                .into_iter()
                .filter(|c| checker.check(*c).state == haca_core::ClaimState::Holds)
                .count();
            assert_eq!(held, 2);
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
