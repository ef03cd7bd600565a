//! A testnet of real `haca` validator processes on loopback, driven through the `haca
//! testnet` commands and the validators' HTTP API.
#![allow(dead_code)]

use super::BIN;
use haca_chain::RunRecord;
use haca_core::settlement::SettlementMode;
use haca_core::{BlobId, NodeKey};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

pub struct Testnet {
    pub dir: tempfile::TempDir,
    pub urls: Vec<String>,
    pub http: reqwest::blocking::Client,
}

/// Runs `haca ARGS` and asserts it succeeded; returns stdout.
pub fn haca_ok(args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .env("HACA_LOG", "warn")
        .output()
        .expect("run haca");
    assert!(
        out.status.success(),
        "haca {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Testnet {
    /// `haca testnet up` with `n` validators and `gateway` registered in the genesis, with
    /// short rounds and timeouts so that faults show quickly.
    pub fn up(n: usize, gateway: &NodeKey, extra: &[&str]) -> Testnet {
        // Validators' ports are picked free and bound a moment later: with many testnets
        // starting at once in this test binary, another may take one in between. Such a
        // start is stopped and tried again in a new directory.
        let mut attempt = 0;
        let dir = loop {
            attempt += 1;
            let dir = tempfile::tempdir().expect("tempdir");
            let d = dir.path().to_str().unwrap().to_owned();
            let gw = gateway.node_id().to_string();
            let n = n.to_string();
            let mut args = vec![
                "testnet",
                "up",
                "--dir",
                &d,
                "--validators",
                &n,
                "--gateway",
                &gw,
                "--round-interval-ms",
                "100",
                "--timeout-propose-ms",
                "600",
                "--timeout-vote-ms",
                "300",
            ];
            args.extend_from_slice(extra);
            let out = Command::new(BIN)
                .args(&args)
                .env("HACA_LOG", "warn")
                .output()
                .expect("run haca");
            if out.status.success() {
                break dir;
            }
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let _ = Command::new(BIN)
                .args(["testnet", "stop", "--dir", &d])
                .output();
            assert!(
                attempt < 3 && text.contains("Address already in use"),
                "haca {}: {text}",
                args.join(" ")
            );
        };
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
        Testnet {
            dir,
            urls,
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
        }
    }

    pub fn dir(&self) -> &str {
        self.dir.path().to_str().unwrap()
    }

    /// `haca testnet status --json`.
    pub fn status(&self) -> Value {
        serde_json::from_str(&haca_ok(&[
            "testnet",
            "status",
            "--dir",
            self.dir(),
            "--json",
        ]))
        .expect("status --json prints JSON")
    }

    /// Each validator's height (None when down).
    pub fn heights(&self) -> Vec<Option<u64>> {
        self.status()["validators"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                if v["up"].as_bool() == Some(true) {
                    v["height"].as_u64()
                } else {
                    None
                }
            })
            .collect()
    }

    pub fn stop(&self, i: usize) {
        haca_ok(&[
            "testnet",
            "stop",
            "--dir",
            self.dir(),
            "--validator",
            &i.to_string(),
        ]);
    }

    /// SIGKILL to validator `i`, as `kill -9` does.
    pub fn kill9(&self, i: usize) {
        haca_ok(&[
            "testnet",
            "stop",
            "--dir",
            self.dir(),
            "--validator",
            &i.to_string(),
            "--kill",
        ]);
    }

    /// `haca testnet up` again: starts every validator that is not running.
    pub fn restart(&self) {
        haca_ok(&["testnet", "up", "--dir", self.dir()]);
    }

    pub fn pid(&self, i: usize) -> Option<i32> {
        std::fs::read_to_string(self.dir.path().join(format!("v{i}/pid")))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("v{i}/node.log"))).unwrap_or_default()
    }

    /// Validator `i`'s config file (`vI/config.json`).
    pub fn config(&self, i: usize) -> Value {
        serde_json::from_str(
            &std::fs::read_to_string(self.dir.path().join(format!("v{i}/config.json")))
                .expect("config.json"),
        )
        .expect("config.json is JSON")
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Waits until every validator in `which` has reached `height`.
    pub fn wait_height(&self, which: &[usize], height: u64, limit: Duration) {
        let t = Instant::now();
        loop {
            let hs = self.heights();
            if which.iter().all(|&i| hs[i].is_some_and(|h| h >= height)) {
                return;
            }
            assert!(
                t.elapsed() < limit,
                "validators {which:?} did not reach height {height} within {limit:?}: {hs:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// POSTs records (an array) to validator `i`.
    pub fn submit(&self, i: usize, records: &[RunRecord]) -> Value {
        let r = self
            .http
            .post(format!("{}/v1/chain/records", self.urls[i]))
            .json(&records)
            .send()
            .expect("submit");
        let status = r.status();
        let body: Value = r.json().expect("JSON answer");
        assert_eq!(status.as_u16(), 202, "submission refused: {body}");
        body
    }

    /// A run's settlement as validator `i` sees it.
    pub fn settlement(&self, i: usize, run: &str) -> Value {
        self.http
            .get(format!("{}/v1/chain/records/{run}", self.urls[i]))
            .send()
            .and_then(|r| r.json())
            .unwrap_or(Value::Null)
    }

    /// Waits until validator `i` has decided every run (settled or rejected).
    pub fn wait_decided(&self, i: usize, runs: &[String], limit: Duration) -> Vec<Value> {
        let t = Instant::now();
        let mut out = Vec::new();
        for run in runs {
            loop {
                let s = self.settlement(i, run);
                if matches!(s["status"].as_str(), Some("settled" | "rejected")) {
                    out.push(s);
                    break;
                }
                assert!(
                    t.elapsed() < limit,
                    "run {run} not decided by validator {i} within {limit:?}: {s}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        out
    }

    /// Every committed block id of validator `i`, by height (1..=its height).
    pub fn blocks(&self, i: usize) -> BTreeMap<u64, String> {
        let s: Value = self
            .http
            .get(format!("{}/v1/chain/status", self.urls[i]))
            .send()
            .and_then(|r| r.json())
            .expect("status");
        let top = s["height"].as_u64().unwrap();
        (1..=top)
            .map(|h| {
                let b: Value = self
                    .http
                    .get(format!("{}/v1/chain/blocks/{h}", self.urls[i]))
                    .send()
                    .and_then(|r| r.json())
                    .expect("block");
                (h, b["block_id"].as_str().unwrap().to_owned())
            })
            .collect()
    }

    /// Asserts that no two of `which` committed different blocks at one height.
    pub fn assert_agree(&self, which: &[usize]) {
        let chains: Vec<_> = which.iter().map(|&i| (i, self.blocks(i))).collect();
        for (i, a) in &chains {
            for (j, b) in &chains {
                for (h, id) in a {
                    if let Some(other) = b.get(h) {
                        assert_eq!(
                            id, other,
                            "validators {i} and {j} committed different blocks at height {h}"
                        );
                    }
                }
            }
        }
    }
}

impl Drop for Testnet {
    fn drop(&mut self) {
        let _ = Command::new(BIN)
            .args(["testnet", "stop", "--kill", "--dir", self.dir()])
            .output();
    }
}

/// Signed run records from `key`'s gateway, seeds `from..from + n`.
pub fn records(key: &NodeKey, from: u64, n: u64, mode: SettlementMode) -> Vec<RunRecord> {
    let blob = BlobId(haca_core::sha256(b"testnet model"));
    (from..from + n)
        .map(|seed| {
            let mut r = haca_core::testing::vanilla_receipt(key, blob, 1_700_000_000_000, seed);
            r.settlement_mode = Some(mode);
            r.sign(key).unwrap();
            RunRecord::new(&r, mode, None).unwrap()
        })
        .collect()
}

pub fn run_ids(records: &[RunRecord]) -> Vec<String> {
    records.iter().map(|r| r.run_id.to_string()).collect()
}
