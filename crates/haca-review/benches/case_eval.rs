//! Evaluating a case of 1,000 signed runs against devnet's default policy: the server-side
//! part of rendering a large case page.

use criterion::{criterion_group, criterion_main, Criterion};
use haca_core::claims::TrustAnchors;
use haca_core::keys::NodeKey;
use haca_core::receipt::ParsedReceipt;
use haca_core::testing::vanilla_receipt;
use haca_core::BlobId;
use haca_review::CaseClass;

fn bench(c: &mut Criterion) {
    let key = NodeKey::from_seed([5; 32]);
    let blob = BlobId(haca_core::hash::sha256(b"model"));
    let runs: Vec<_> = (0..1000)
        .map(|i| {
            let mut r = vanilla_receipt(&key, blob, 1_000 + i, i);
            r.sign(&key).unwrap();
            (r.run_id, ParsedReceipt::from_receipt(r))
        })
        .collect();
    let refs: Vec<_> = runs.iter().map(|(id, p)| (*id, p)).collect();
    let policy = CaseClass::default_class().policy;
    let anchors = TrustAnchors::default();
    c.bench_function("evaluate a case of 1000 runs (default policy)", |b| {
        b.iter(|| haca_review::evaluate(&policy, &refs, &anchors, 10_000))
    });
    let eval = haca_review::evaluate(&policy, &refs, &anchors, 10_000);
    c.bench_function("snapshot of a case of 1000 runs", |b| {
        b.iter(|| eval.snapshot("case"))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
