//! Receipt verifications per second: parse a receipt file and check every claim offline
//! (the work of `haca verify` and of a validator's first pass).

use criterion::{criterion_group, criterion_main, Criterion};
use haca_core::claims::{Checker, Claim, TrustAnchors};
use haca_core::{BlobId, NodeKey, ParsedReceipt};

fn bench(c: &mut Criterion) {
    let key = NodeKey::from_seed([9; 32]);
    let t = 1_764_000_000_000;
    let mut r = haca_core::testing::vanilla_receipt(&key, BlobId::of(b"model"), t, 0);
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
