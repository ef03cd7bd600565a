//! One validator on the Malachite engine, in-process, with its SQLite store: settled records
//! per second (batches of signed batch-mode records), and submit-to-commit latency of single
//! records (p50, p99) at the devnet's round interval and with no interval.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use haca_chain::consensus::{self, EngineConfig, EngineHandle};
use haca_chain::validator::Validator;
use haca_chain::{Outcome, RunRecord, SignatureAndHashes};
use haca_core::settlement::{
    Genesis, SettlementMode, SettlementParams, Validator as ValidatorEntry, ValidatorSet,
};
use haca_core::testing::vanilla_receipt;
use haca_core::{BlobId, NodeKey};
use haca_store::Store;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Chain {
    validator: Arc<Validator>,
    engine: Option<EngineHandle>,
    gateway: NodeKey,
    _dir: tempfile::TempDir,
}

async fn start(round_interval_ms: u64) -> Chain {
    let dir = tempfile::tempdir().unwrap();
    let gateway = NodeKey::from_seed([1; 32]);
    let vkey = NodeKey::from_seed([2; 32]);
    let genesis = Genesis {
        tee: None,
        chain_id: "haca-bench".into(),
        genesis_time_ms: 0,
        validators: ValidatorSet::new(vec![ValidatorEntry {
            public_key: vkey.node_id(),
            power: 1,
        }])
        .unwrap(),
        gateways: vec![gateway.node_id()],
        settlement: SettlementParams {
            max_round_records: 10_000,
            round_interval_ms,
        },
    };
    let store = Arc::new(Store::open(dir.path().join("chain.db")).unwrap());
    let validator =
        Arc::new(Validator::open(genesis.clone(), store, Box::new(SignatureAndHashes)).unwrap());
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let engine = consensus::start(
        EngineConfig {
            chain_id: genesis.chain_id.clone(),
            home: dir.path().join("consensus"),
            key: vkey,
            validators: genesis.validators.clone(),
            listen,
            peers: vec![],
            timeout_propose: Duration::from_secs(3),
            timeout_prevote: Duration::from_secs(1),
            timeout_precommit: Duration::from_secs(1),
        },
        validator.clone(),
    )
    .await
    .unwrap();
    Chain {
        validator,
        engine: Some(engine),
        gateway,
        _dir: dir,
    }
}

static SEED: AtomicU64 = AtomicU64::new(0);

fn records(key: &NodeKey, n: u64) -> Vec<RunRecord> {
    let base = SEED.fetch_add(n, Ordering::Relaxed);
    (base..base + n)
        .map(|i| {
            let mut r = vanilla_receipt(key, BlobId::of(b"model"), 1_700_000_000_000, i);
            r.settlement_mode = Some(SettlementMode::Batch);
            r.sign(key).unwrap();
            RunRecord::new(&r, SettlementMode::Batch, None).unwrap()
        })
        .collect()
}

async fn wait_settled(v: &Validator, run: &haca_core::RunId) {
    let mut heights = v.heights();
    while !matches!(v.outcome(run), Some(Outcome::Settled { .. })) {
        let _ = tokio::time::timeout(Duration::from_millis(50), heights.changed()).await;
    }
}

fn settle_batches(c: &mut Criterion) {
    if std::env::var_os("HACA_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_env("HACA_LOG"))
            .try_init();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut chain = rt.block_on(start(200));
    let mut g = c.benchmark_group("settlement");
    g.sample_size(10);
    for n in [1_000u64, 10_000] {
        g.throughput(Throughput::Elements(n));
        g.bench_function(format!("submit_to_commit_{n}_records"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let batch = records(&chain.gateway, n);
                    let last = batch.last().unwrap().run_id;
                    // Two submitters, as two HTTP workers would be on this 2-core machine:
                    // each record's evidence is verified on its submitter's thread.
                    let t = Instant::now();
                    let mut halves = batch;
                    let second = halves.split_off(halves.len() / 2);
                    std::thread::scope(|s| {
                        for half in [halves, second] {
                            let v = &chain.validator;
                            s.spawn(move || {
                                for r in half {
                                    v.submit(r).unwrap();
                                }
                            });
                        }
                    });
                    rt.block_on(wait_settled(&chain.validator, &last));
                    total += t.elapsed();
                }
                total
            })
        });
    }
    g.finish();
    rt.block_on(chain.engine.take().unwrap().stop());
}

/// Submit-to-commit latency of records arriving one at a time, every 20 ms.
fn latency(c: &mut Criterion) {
    let _ = c;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    for interval in [200u64, 0] {
        let mut chain = rt.block_on(start(interval));
        let recs = records(&chain.gateway, 200);
        let mut lat: Vec<Duration> = rt.block_on(async {
            let mut waits = Vec::new();
            for r in recs {
                let (v, run) = (chain.validator.clone(), r.run_id);
                let t = Instant::now();
                v.submit(r).unwrap();
                waits.push(tokio::spawn(async move {
                    wait_settled(&v, &run).await;
                    t.elapsed()
                }));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let mut out = Vec::new();
            for w in waits {
                out.push(w.await.unwrap());
            }
            out
        });
        lat.sort();
        let pct = |p: f64| lat[((lat.len() - 1) as f64 * p) as usize];
        println!(
            "settlement/latency round_interval={interval}ms: {} records, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            lat.len(),
            pct(0.5).as_secs_f64() * 1e3,
            pct(0.99).as_secs_f64() * 1e3,
            lat.last().unwrap().as_secs_f64() * 1e3
        );
        rt.block_on(chain.engine.take().unwrap().stop());
    }
}

criterion_group!(benches, latency, settle_batches);
criterion_main!(benches);
