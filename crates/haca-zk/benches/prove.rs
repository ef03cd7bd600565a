//! haca-zk on the trained digit models: setup (read the ONNX file, quantize, commit to the
//! weights), prove one held-out digit, and verify that proof.

use criterion::{criterion_group, criterion_main, Criterion};
use std::path::PathBuf;
use std::time::Duration;

fn fixture(rel: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures")
        .join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The first held-out digit, pixels / 255.
fn digit() -> Vec<f32> {
    fixture("digits/heldout-images.u8")[..784]
        .iter()
        .map(|&p| p as f32 / 255.0)
        .collect()
}

fn bench(c: &mut Criterion) {
    let x = digit();
    for name in ["digits-mlp-56", "digits-cnn"] {
        let onnx = fixture(&format!("models/{name}.onnx"));
        let mut g = c.benchmark_group(name);
        g.sample_size(10).measurement_time(Duration::from_secs(10));
        g.bench_function("setup", |b| {
            b.iter(|| haca_zk::setup(&onnx, haca_zk::DEFAULT_INPUT_BOUND).unwrap())
        });
        let pk = haca_zk::setup(&onnx, haca_zk::DEFAULT_INPUT_BOUND).unwrap();
        g.bench_function("prove", |b| b.iter(|| pk.prove(&x).unwrap()));
        let (_, proof) = pk.prove(&x).unwrap();
        g.bench_function("verify", |b| {
            b.iter(|| haca_zk::verify(&pk.vk, &proof).unwrap())
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
