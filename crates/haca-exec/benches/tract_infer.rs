//! tract on the example 784-128-10 MLP: the floor under haca's HTTP + receipt path.

use criterion::{criterion_group, criterion_main, Criterion};
use haca_core::tensor::parse_input;
use haca_exec::OnnxModel;
use serde_json::json;

const MLP: &[u8] = include_bytes!("../../../fixtures/models/mnist-mlp.onnx");

fn bench(c: &mut Criterion) {
    let model = OnnxModel::load(MLP).unwrap();
    let data: Vec<f32> = (0..784).map(|i| i as f32 / 783.0).collect();
    let input = parse_input(
        &json!({"input": {"shape": [1, 784], "data": data}}),
        "input",
    )
    .unwrap();
    c.bench_function("tract_mlp_784_128_10", |b| {
        b.iter(|| model.run(&input, "input").unwrap())
    });
    c.bench_function("tract_load_and_optimize_mlp", |b| {
        b.iter(|| OnnxModel::load(MLP).unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
