//! Attestation verifications per second: a real AWS-signed document, full chain and COSE
//! signature, at its own timestamp.

use criterion::{criterion_group, criterion_main, Criterion};
use haca_tee::{parse, verify, Policy};

const DOC: &[u8] = include_bytes!("../tests/fixtures/nitro/base_nitro_validator.cbor");

fn bench(c: &mut Criterion) {
    let at: u64 = include_str!("../tests/fixtures/nitro/base_nitro_validator.at")
        .trim()
        .parse()
        .unwrap();
    let policy = Policy::at(at, 5 * 60_000);
    c.bench_function("nitro_parse", |b| b.iter(|| parse(DOC).unwrap()));
    c.bench_function("nitro_verify_full", |b| {
        b.iter(|| verify(DOC, &policy).unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
