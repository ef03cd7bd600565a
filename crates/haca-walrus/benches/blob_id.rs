//! Walrus blob id throughput on one core: bytes in per second, at mainnet's 1000 shards.
//!
//! cargo bench -p haca-walrus --bench blob_id

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use haca_walrus::{blob_id, MAINNET_SHARDS};

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("walrus_blob_id_1000_shards");
    g.sample_size(10);
    for mib in [8usize, 64, 256] {
        let data: Vec<u8> = (0..mib << 20).map(|i| ((i * 31 + 7) % 251) as u8).collect();
        g.throughput(Throughput::Bytes(data.len() as u64));
        g.bench_with_input(
            BenchmarkId::from_parameter(format!("{mib}MiB")),
            &data,
            |b, d| b.iter(|| blob_id(d, MAINNET_SHARDS).unwrap()),
        );
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
