//! Transparency-log appends per second with durable, signed checkpoints: each measured append
//! returns only after its entries and checkpoint are committed to the store (WAL).
//!
//! `sequential/N`: one caller appending batches of N entries, one after another (one
//! checkpoint per batch). `concurrent_64_tasks/1`: 64 tasks appending one entry each at a time,
//! which the log groups into shared commits.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use haca_chain::log::{LogEntry, TransparencyLog};
use haca_core::NodeKey;
use haca_store::Store;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A run entry of realistic size (about 250 bytes of canonical JSON).
fn entry(i: u64) -> LogEntry {
    LogEntry::new(
        "run",
        json!({
            "run_id": format!("{:064x}", i),
            "receipt_digest": format!("{:064x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            "model": "mnist-cnn@3",
            "node_id": "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
            "created_at": 1_700_000_000_000u64 + i,
        }),
    )
}

fn fresh_log(dir: &tempfile::TempDir) -> Arc<TransparencyLog> {
    let store = Arc::new(Store::open(dir.path().join("bench.db")).unwrap());
    let log = TransparencyLog::open(store, NodeKey::from_seed([1; 32]), "bench.haca/log".into());
    Arc::new(log.unwrap())
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("log_append");
    for batch in [1u64, 100, 1000, 10_000] {
        let dir = tempfile::tempdir().unwrap();
        let log = fresh_log(&dir);
        let mut next = 0u64;
        group.throughput(Throughput::Elements(batch));
        group.sample_size(if batch >= 1000 { 10 } else { 20 });
        group.bench_function(BenchmarkId::new("sequential", batch), |b| {
            b.iter_custom(|iters| {
                // Entries are built outside the timed part: the caller's data, not the log's work.
                let batches: Vec<Vec<LogEntry>> = (0..iters)
                    .map(|_| {
                        let v = (next..next + batch).map(entry).collect();
                        next += batch;
                        v
                    })
                    .collect();
                rt.block_on(async {
                    let start = Instant::now();
                    for entries in batches {
                        log.append(entries).await.unwrap();
                    }
                    start.elapsed()
                })
            })
        });
    }

    let dir = tempfile::tempdir().unwrap();
    let log = fresh_log(&dir);
    let tasks = 64u64;
    group.throughput(Throughput::Elements(tasks));
    group.sample_size(20);
    group.bench_function(BenchmarkId::new("concurrent_64_tasks", 1), |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                let handles: Vec<_> = (0..tasks)
                    .map(|t| {
                        let log = log.clone();
                        tokio::spawn(async move {
                            for i in 0..iters {
                                log.append(vec![entry(i * tasks + t)]).await.unwrap();
                            }
                        })
                    })
                    .collect();
                for h in handles {
                    h.await.unwrap();
                }
                start.elapsed()
            })
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5));
    targets = bench
}
criterion_main!(benches);
