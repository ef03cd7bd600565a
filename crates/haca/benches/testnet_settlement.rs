//! Four validator processes on loopback (`haca testnet up`, this build's binary): finality
//! latency from submitting a record to the commit certificate of the block that settles it
//! (p50, p99), and settled records per second for batches submitted to all four validators.
//!
//! A client-side watcher polls one validator's height every 2 ms and reads each new block's
//! records, so a latency is "submitted" to "this client saw the certified block".

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use haca_chain::RunRecord;
use haca_core::settlement::SettlementMode;
use haca_core::testing::vanilla_receipt;
use haca_core::{BlobId, NodeKey};
use serde_json::Value;
use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_haca");

struct Testnet {
    dir: tempfile::TempDir,
    urls: Vec<String>,
    gateway: NodeKey,
}

impl Testnet {
    fn up(round_interval_ms: u64) -> Testnet {
        let dir = tempfile::tempdir().unwrap();
        let gateway = NodeKey::from_seed([9; 32]);
        let out = Command::new(BIN)
            .args(["testnet", "up", "--validators", "4", "--dir"])
            .arg(dir.path())
            .args(["--gateway", &gateway.node_id().to_string()])
            .args(["--round-interval-ms", &round_interval_ms.to_string()])
            .env("HACA_LOG", "warn")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let file: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("testnet.json")).unwrap(),
        )
        .unwrap();
        let urls = file["validators"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["http"].as_str().unwrap().to_owned())
            .collect();
        Testnet { dir, urls, gateway }
    }
}

impl Drop for Testnet {
    fn drop(&mut self) {
        let _ = Command::new(BIN)
            .args(["testnet", "stop", "--kill", "--dir"])
            .arg(self.dir.path())
            .output();
    }
}

static SEED: AtomicU64 = AtomicU64::new(0);

fn records(key: &NodeKey, n: u64, mode: SettlementMode) -> Vec<RunRecord> {
    let base = SEED.fetch_add(n, Ordering::Relaxed);
    (base..base + n)
        .map(|i| {
            let mut r = vanilla_receipt(key, BlobId::of(b"model"), 1_700_000_000_000, i);
            r.settlement_mode = Some(mode);
            r.sign(key).unwrap();
            RunRecord::new(&r, mode, None).unwrap()
        })
        .collect()
}

/// Watches one validator's committed blocks and notes when each settled run was first seen.
struct Watcher {
    seen: Arc<Mutex<HashMap<String, Instant>>>,
    settled: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watcher {
    fn start(url: String, record_runs: bool) -> Watcher {
        let seen = Arc::new(Mutex::new(HashMap::new()));
        let settled = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (s2, n2, st2) = (seen.clone(), settled.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let http = reqwest::blocking::Client::new();
            let height = |http: &reqwest::blocking::Client| -> u64 {
                http.get(format!("{url}/v1/chain/status"))
                    .send()
                    .and_then(|r| r.json::<Value>())
                    .map(|v| v["height"].as_u64().unwrap_or(0))
                    .unwrap_or(0)
            };
            let mut done = height(&http);
            while !st2.load(Ordering::Relaxed) {
                let top = height(&http);
                while done < top {
                    done += 1;
                    let b: Value = http
                        .get(format!("{url}/v1/chain/blocks/{done}"))
                        .send()
                        .and_then(|r| r.json())
                        .unwrap();
                    let now = Instant::now();
                    let recs = b["block"]["records"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default();
                    n2.fetch_add(recs.len() as u64, Ordering::Relaxed);
                    if record_runs {
                        let mut seen = s2.lock().unwrap();
                        for r in recs {
                            seen.insert(r["run_id"].as_str().unwrap().to_owned(), now);
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        Watcher {
            seen,
            settled,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn post(http: &reqwest::blocking::Client, url: &str, records: &[RunRecord]) {
    let r = http
        .post(format!("{url}/v1/chain/records"))
        .json(records)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 202, "{}", r.text().unwrap_or_default());
}

/// Records arriving one at a time, every 20 ms, to the validators in turn.
fn finality(c: &mut Criterion) {
    let _ = c;
    for interval in [100u64, 0] {
        let net = Testnet::up(interval);
        let http = reqwest::blocking::Client::new();
        let watcher = Watcher::start(net.urls[0].clone(), true);
        let recs = records(&net.gateway, 200, SettlementMode::Private);
        let mut sent = Vec::new();
        for (i, r) in recs.iter().enumerate() {
            let t = Instant::now();
            post(&http, &net.urls[i % 4], std::slice::from_ref(r));
            sent.push((r.run_id.to_string(), t));
            std::thread::sleep(Duration::from_millis(20));
        }
        let give_up = Instant::now() + Duration::from_secs(60);
        let mut lat: Vec<Duration> = loop {
            let seen = watcher.seen.lock().unwrap();
            if sent.iter().all(|(id, _)| seen.contains_key(id)) {
                break sent
                    .iter()
                    .map(|(id, t)| seen[id].duration_since(*t))
                    .collect();
            }
            drop(seen);
            assert!(
                Instant::now() < give_up,
                "records did not settle within 60 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        lat.sort();
        let pct = |p: f64| lat[((lat.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e3;
        println!(
            "testnet/finality 4 validators round_interval={interval}ms: {} records, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            lat.len(),
            pct(0.5),
            pct(0.99),
            pct(1.0)
        );
    }
}

/// Batches of signed records given to all four validators at once; timed until the watcher
/// has seen every one settled.
fn throughput(c: &mut Criterion) {
    let net = Testnet::up(100);
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let watcher = Watcher::start(net.urls[0].clone(), false);
    let mut g = c.benchmark_group("testnet");
    g.sample_size(10);
    let n = 20_000u64;
    for mode in [SettlementMode::Private, SettlementMode::Batch] {
        g.throughput(Throughput::Elements(n));
        g.bench_function(
            format!("settle_{n}_{}_records_4_validators", mode.as_str()),
            |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let batch = records(&net.gateway, n, mode);
                        let target = watcher.settled.load(Ordering::Relaxed) + n;
                        let t = Instant::now();
                        // One submitter per validator, each sending its share in chunks.
                        std::thread::scope(|s| {
                            for (i, share) in batch.chunks(batch.len() / 4).enumerate() {
                                let (http, url) = (&http, &net.urls[i % 4]);
                                s.spawn(move || {
                                    for chunk in share.chunks(2_500) {
                                        post(http, url, chunk);
                                    }
                                });
                            }
                        });
                        while watcher.settled.load(Ordering::Relaxed) < target {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                        total += t.elapsed();
                    }
                    total
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, finality, throughput);
criterion_main!(benches);
