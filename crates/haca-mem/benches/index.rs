//! MemSync retrieval's index at 100,000 rows per user: HNSW search against an exact scan.
//!
//! `nice -n 19 cargo bench -p haca-mem --bench index`
//!
//! Data: 100,000 synthetic 384-d unit vectors (MiniLM's width) in 2,000 clusters
//! (`haca_mem::index::clustered`, spread 1.0: points of one cluster have cosine about 0.5, of
//! different clusters about 0), and 1,000 queries drawn from the same clusters with another seed.
//! Before criterion's medians it prints the build time, p50/p95 of single searches over the
//! 1,000 queries, and recall@5 / recall@10 against the exact answer, for several `ef_search`.
//! `HACA_INDEX_ROWS` changes the row count.

use criterion::{criterion_group, criterion_main, Criterion};
use haca_mem::index::{clustered, recall_at_k, AnnIndex};
use std::hint::black_box;
use std::time::Instant;

const DIM: usize = 384;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn bench(c: &mut Criterion) {
    let rows: usize = std::env::var("HACA_INDEX_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let t = Instant::now();
    let data = clustered(rows, DIM, 2_000, 1.0, 11);
    let queries = clustered(1_000, DIM, 2_000, 1.0, 12);
    eprintln!("data: {rows} x {DIM} in {:.1?}", t.elapsed());

    let t = Instant::now();
    let mut idx = AnnIndex::new(DIM);
    for (i, v) in data.iter().enumerate() {
        idx.insert(i as u32, v).unwrap();
    }
    let build = t.elapsed();
    eprintln!(
        "hnsw build: {rows} rows in {:.2?} ({:.0} inserts/s), params {:?}",
        build,
        rows as f64 / build.as_secs_f64(),
        idx.params()
    );

    let exact: Vec<Vec<u32>> = queries
        .iter()
        .map(|q| idx.exact(q, 10).iter().map(|h| h.0).collect())
        .collect();
    let mut times: Vec<f64> = queries
        .iter()
        .map(|q| {
            let t = Instant::now();
            black_box(idx.exact(q, 5));
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    eprintln!(
        "exact scan k=5 over {} queries: p50 {:.3} ms, p95 {:.3} ms",
        queries.len(),
        percentile(&times, 0.5),
        percentile(&times, 0.95)
    );

    let default_ef = idx.params().ef_search;
    for ef in [32, 64, 128, default_ef, 400] {
        idx.set_ef_search(ef);
        let mut times = Vec::with_capacity(queries.len());
        let (mut r5, mut r10) = (0.0, 0.0);
        for (q, want) in queries.iter().zip(&exact) {
            let t = Instant::now();
            let got = idx.search(q, 5).unwrap();
            times.push(t.elapsed().as_secs_f64() * 1e3);
            let got: Vec<u32> = got.iter().map(|h| h.0).collect();
            r5 += recall_at_k(&got, &want[..5], 5);
            let got10: Vec<u32> = idx.search(q, 10).unwrap().iter().map(|h| h.0).collect();
            r10 += recall_at_k(&got10, want, 10);
        }
        times.sort_by(f64::total_cmp);
        let n = queries.len() as f64;
        eprintln!(
            "hnsw ef_search={ef:3} k=5: p50 {:.3} ms, p95 {:.3} ms, recall@5 {:.4}, recall@10 {:.4}",
            percentile(&times, 0.5),
            percentile(&times, 0.95),
            r5 / n,
            r10 / n
        );
    }
    idx.set_ef_search(default_ef);

    let mut g = c.benchmark_group("memsync_index");
    g.sample_size(30);
    let mut i = 0;
    g.bench_function(format!("hnsw_search_{rows}_k5"), |b| {
        b.iter(|| {
            i = (i + 1) % queries.len();
            black_box(idx.search(&queries[i], 5).unwrap())
        })
    });
    g.bench_function(format!("exact_scan_{rows}_k5"), |b| {
        b.iter(|| {
            i = (i + 1) % queries.len();
            black_box(idx.exact(&queries[i], 5))
        })
    });
    // One insert into the full index (then its removal, so the index stays the same size).
    let extra = clustered(1_000, DIM, 2_000, 1.0, 13);
    let mut key = rows as u32;
    g.bench_function(format!("hnsw_insert_into_{rows}"), |b| {
        b.iter(|| {
            key += 1;
            idx.insert(key, &extra[key as usize % extra.len()]).unwrap();
            idx.remove(key);
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
