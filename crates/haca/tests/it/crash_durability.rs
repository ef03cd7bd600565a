//! `kill -9` during a burst of runs: after restart, every acknowledged run is there with a
//! receipt that still verifies, no committed block changed, and every acknowledged run
//! settles (the outbox is resubmitted).

use crate::common::{mlp_input, wait_ready, Devnet};
use haca_core::claims::{Checker, Claim, ClaimState, TrustAnchors};
use haca_core::ParsedReceipt;
use reqwest::blocking::Client;
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[test]
fn every_acknowledged_run_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let node = Devnet::start(dir.path(), &[]);
    let http = Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    wait_ready(&http, &node.url);

    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..8u32 {
        let (url, acked, stop, http) =
            (node.url.clone(), acked.clone(), stop.clone(), http.clone());
        workers.push(std::thread::spawn(move || {
            let mut i = 0;
            // Bounded: at most 2,000 requests per worker, and it stops once the node is gone.
            while !stop.load(Ordering::Relaxed) && i < 2000 {
                i += 1;
                let resp = http
                    .post(format!("{url}/v1/infer"))
                    .json(
                        &json!({"model": "example/mnist-mlp", "input": mlp_input(w * 10_000 + i)}),
                    )
                    .send();
                match resp {
                    Ok(r) if r.status() == 200 => {
                        let v: serde_json::Value = match r.json() {
                            Ok(v) => v,
                            Err(_) => break, // cut off mid-answer: not acknowledged
                        };
                        acked
                            .lock()
                            .unwrap()
                            .push(v["run_id"].as_str().unwrap().to_owned());
                    }
                    _ => break,
                }
            }
        }));
    }
    // Let the burst run, then kill the node mid-flight.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while acked.lock().unwrap().len() < 300 {
        assert!(
            std::time::Instant::now() < deadline,
            "the node acknowledged fewer than 300 runs in 120 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Blocks committed before the kill (more may commit between this read and the kill).
    let status: serde_json::Value = http
        .get(format!("{}/v1/chain/status", node.url))
        .send()
        .unwrap()
        .json()
        .unwrap();
    node.kill9();
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 300);

    let node = Devnet::start(dir.path(), &[]);
    wait_ready(&http, &node.url);
    for b in status["recent_blocks"].as_array().unwrap() {
        let after: serde_json::Value = http
            .get(format!("{}/v1/chain/blocks/{}", node.url, b["height"]))
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(
            after["block_id"], b["block_id"],
            "block {} changed",
            b["height"]
        );
    }
    let genesis = std::fs::read_to_string(dir.path().join("genesis.json")).unwrap();
    let anchors = TrustAnchors::from_history(
        haca_core::settlement::ValidatorHistory::from_json_str(&genesis).unwrap(),
        false,
    );
    let settle_deadline = std::time::Instant::now() + Duration::from_secs(120);
    for id in &acked {
        loop {
            let v: serde_json::Value = http
                .get(format!("{}/v1/chain/records/{id}", node.url))
                .send()
                .unwrap()
                .json()
                .unwrap();
            if v["status"] == "settled" {
                break;
            }
            assert_eq!(v["status"], "pending", "run {id}: {v}");
            assert!(
                std::time::Instant::now() < settle_deadline,
                "acknowledged run {id} did not settle within 120 s of the restart"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let resp = http
            .get(format!("{}/v1/runs/{id}/receipt", node.url))
            .send()
            .unwrap();
        assert_eq!(
            resp.status(),
            200,
            "acknowledged run {id} is missing after restart"
        );
        let parsed = ParsedReceipt::from_json_str(&resp.text().unwrap()).unwrap();
        let c = Checker::new(&parsed, &anchors, parsed.receipt.issued_at);
        assert_eq!(
            c.check(Claim::ExecutionSigned).state,
            ClaimState::Holds,
            "run {id}"
        );
        let settled = c.check(Claim::RunSettled);
        assert_eq!(
            settled.state,
            ClaimState::Holds,
            "run {id}: {}",
            settled.detail
        );
    }
}
