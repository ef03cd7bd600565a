//! Settlement on a real devnet: runs in each settlement mode settle in a round committed by
//! the in-process Malachite validator, and their receipts verify offline against the
//! devnet's genesis; bad records are refused or rejected with their reason.

use crate::common::{self, mlp_input, wait_ready, Devnet};
use haca_chain::record::RecordContent;
use haca_chain::RunRecord;
use haca_core::claims::{Checker, Claim, ClaimState, TrustAnchors};
use haca_core::settlement::{SettlementMode, ValidatorHistory};
use haca_core::testing::vanilla_receipt;
use haca_core::{BlobId, NodeKey, ParsedReceipt};
use reqwest::blocking::Client;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn wait_status(http: &Client, url: &str, run: &str, want: &str) -> Value {
    let t = Instant::now();
    loop {
        let v: Value = http
            .get(format!("{url}/v1/chain/records/{run}"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        if v["status"] == want {
            return v;
        }
        assert!(v["status"] == "pending", "run {run}: {v}");
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "run {run} still pending after 60 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn infer(http: &Client, url: &str, mode: &str, seed: u32) -> String {
    let resp = http
        .post(format!("{url}/v1/infer"))
        .header("X-SETTLEMENT-TYPE", mode)
        .json(&json!({"model": "example/mnist-mlp", "input": mlp_input(seed)}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().unwrap();
    assert_eq!(v["receipt"]["settlement_mode"], mode);
    v["run_id"].as_str().unwrap().to_owned()
}

#[test]
fn runs_settle_in_every_mode_and_verify_offline_against_the_genesis() {
    let dir = tempfile::tempdir().unwrap();
    let node = Devnet::start(dir.path(), &[]);
    let http = Client::new();
    wait_ready(&http, &node.url);
    let genesis_path = dir.path().join("genesis.json");
    let history =
        ValidatorHistory::from_json_str(&std::fs::read_to_string(&genesis_path).unwrap()).unwrap();
    let anchors = TrustAnchors::from_history(history, false);

    let runs: Vec<(String, &str)> = ["batch", "private", "individual"]
        .iter()
        .enumerate()
        .map(|(i, m)| (infer(&http, &node.url, m, i as u32), *m))
        .collect();
    let mut receipts = Vec::new();
    for (run, mode) in &runs {
        let s = wait_status(&http, &node.url, run, "settled");
        let text = http
            .get(format!("{}/v1/runs/{run}/receipt", node.url))
            .send()
            .unwrap()
            .text()
            .unwrap();
        let parsed = ParsedReceipt::from_json_str(&text).unwrap();
        let c = Checker::new(&parsed, &anchors, parsed.receipt.issued_at);
        let o = c.check(Claim::RunSettled);
        assert_eq!(o.state, ClaimState::Holds, "{mode}: {}", o.detail);
        assert_eq!(c.check(Claim::ExecutionSigned).state, ClaimState::Holds);
        assert_eq!(c.check(Claim::NodeRegistered).state, ClaimState::Holds);
        assert!(c.problems().is_empty(), "{:?}", c.problems());

        // What left the gateway is what the mode allows.
        let block: Value = http
            .get(format!("{}/v1/chain/blocks/{}", node.url, s["height"]))
            .send()
            .unwrap()
            .json()
            .unwrap();
        let rec = &block["block"]["records"][s["leaf_index"].as_u64().unwrap() as usize];
        assert_eq!(rec["run_id"], run.as_str());
        match *mode {
            "private" => {
                assert!(
                    rec.get("receipt").is_none() && rec.get("content").is_none(),
                    "{rec}"
                );
                let stored: Value = http
                    .get(format!("{}/v1/runs/{run}", node.url))
                    .send()
                    .unwrap()
                    .json()
                    .unwrap();
                assert!(stored["output"].is_null(), "a private answer was retained");
            }
            "batch" => assert!(rec["receipt"].is_object() && rec.get("content").is_none()),
            _ => assert!(rec["content"]["output"].is_object()),
        }
        receipts.push(text);
    }

    // The CLI: wait, export, verify offline; without a validator file the claim is unchecked.
    let (run, _) = &runs[0];
    let out = node.haca_ok(&["receipt", run, "--wait", "settled", "--json"]);
    let file = dir.path().join("receipt.json");
    std::fs::write(&file, &out.stdout).unwrap();
    let f = file.to_str().unwrap();
    let out = node.haca_ok(&["verify", f, "--validators", genesis_path.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("run.settled") && text.contains("certified by 1 of 1"),
        "{text}"
    );
    let exported = node.haca_ok(&["chain", "validators", "--export"]);
    let vfile = dir.path().join("validators.json");
    std::fs::write(&vfile, &exported.stdout).unwrap();
    node.haca_ok(&["verify", f, "--validators", vfile.to_str().unwrap()]);
    let out = node.haca_ok(&["verify", f, "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        common::claim_state(&v, "run.settled"),
        Some(serde_json::json!("unchecked"))
    );

    // Another run's settlement box under this receipt fails.
    let mut a: Value = serde_json::from_str(&receipts[0]).unwrap();
    let b: Value = serde_json::from_str(&receipts[2]).unwrap();
    a["boxes"]["settlement"] = b["boxes"]["settlement"].clone();
    std::fs::write(&file, a.to_string()).unwrap();
    let out = node.haca(&["verify", f, "--validators", genesis_path.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("run.settled"));

    // A validator file with the wrong shape is refused with the field named.
    std::fs::write(
        &vfile,
        r#"{"chain_id": "x", "validators": [], "gateways": [], "genesis_time_ms": 1}"#,
    )
    .unwrap();
    let out = node.haca(&["verify", f, "--validators", vfile.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("validators"), "{err}");
}

#[test]
fn bad_records_are_refused_or_rejected_with_their_reason() {
    let dir = tempfile::tempdir().unwrap();
    let node = Devnet::start(dir.path(), &[]);
    let http = Client::new();
    wait_ready(&http, &node.url);
    let post = |body: Vec<u8>| {
        http.post(format!("{}/v1/chain/records", node.url))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .unwrap()
    };

    // An unknown settlement type is refused, naming the header; nothing runs.
    let r = http
        .post(format!("{}/v1/infer", node.url))
        .header("X-SETTLEMENT-TYPE", "eventually")
        .json(&json!({"model": "example/mnist-mlp", "input": mlp_input(1)}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    let text = r.text().unwrap();
    assert!(
        text.contains("X-SETTLEMENT-TYPE") && text.contains("eventually"),
        "{text}"
    );
    let out = node.haca(&[
        "infer",
        "example/mnist-mlp",
        "--input",
        "{}",
        "--settlement",
        "later",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--settlement"));

    // Malformed and oversized: refused at the door, naming the problem.
    let r = post(br#"{"run_id": "nope"}"#.to_vec());
    assert_eq!(r.status(), 400);
    assert!(r.text().unwrap().contains("run_id"));
    let r = post(vec![b' '; 5 << 20]);
    assert_eq!(r.status(), 413);

    // Signed by a key the chain never registered: rejected in a round, with the reason.
    let stranger = NodeKey::from_seed([7; 32]);
    let mut receipt = vanilla_receipt(&stranger, BlobId::of(b"m"), 1, 1);
    receipt.sign(&stranger).unwrap();
    let rec = RunRecord::new(&receipt, SettlementMode::Batch, None).unwrap();
    let r = post(serde_json::to_vec(&rec).unwrap());
    assert_eq!(r.status(), 202);
    let v = wait_status(&http, &node.url, &rec.run_id.to_string(), "rejected");
    assert!(
        v["reason"].as_str().unwrap().contains("not registered"),
        "{v}"
    );

    // Signed by the devnet's own gateway, but the output does not match the receipt's hash.
    let key_text = std::fs::read_to_string(dir.path().join("node.key")).unwrap();
    let gateway = NodeKey::from_file_string(&key_text).unwrap();
    let mut receipt = vanilla_receipt(&gateway, BlobId::of(b"m"), 1, 2);
    receipt.settlement_mode = Some(SettlementMode::Individual);
    receipt.sign(&gateway).unwrap();
    let content = RecordContent {
        input: json!({"x": {"dtype": "float32", "shape": [1], "data": [1.0]}}),
        output: json!({"y": {"dtype": "float32", "shape": [1], "data": [2.0]}}),
    };
    let rec = RunRecord::new(&receipt, SettlementMode::Individual, Some(content)).unwrap();
    assert_eq!(post(serde_json::to_vec(&rec).unwrap()).status(), 202);
    let v = wait_status(&http, &node.url, &rec.run_id.to_string(), "rejected");
    assert!(
        v["reason"]
            .as_str()
            .unwrap()
            .contains("content.input hashes to"),
        "{v}"
    );

    // The node still settles real runs afterwards, and resubmission is idempotent.
    let run = infer(&http, &node.url, "batch", 9);
    wait_status(&http, &node.url, &run, "settled");
    let r = post(serde_json::to_vec(&rec).unwrap());
    assert_eq!(r.status(), 202);
}

#[test]
fn the_transparency_log_records_runs_and_settlements_with_proofs() {
    use haca_core::checkpoint::SignedCheckpoint;
    use haca_core::merkle::{verify_consistency, verify_inclusion};
    use haca_core::Digest;

    let dir = tempfile::tempdir().unwrap();
    let node = Devnet::start(dir.path(), &[]);
    let http = Client::new();
    wait_ready(&http, &node.url);
    let get = |path: &str| -> Value {
        http.get(format!("{}{path}", node.url))
            .send()
            .unwrap()
            .json()
            .unwrap()
    };

    // A block's entries (its runs, then its round) are appended after it commits.
    let logged = |after: u64| -> Value {
        let t = Instant::now();
        loop {
            let head = get("/v1/log");
            let size = head["size"].as_u64().unwrap();
            if size > after && get(&format!("/v1/log/entries/{}", size - 1))["kind"] == "settlement"
            {
                return head;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "no settlement entry after {after}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let run = infer(&http, &node.url, "batch", 1);
    wait_status(&http, &node.url, &run, "settled");
    let early = logged(0);
    let second = infer(&http, &node.url, "private", 2);
    wait_status(&http, &node.url, &second, "settled");
    let head = logged(early["size"].as_u64().unwrap());
    let size = head["size"].as_u64().unwrap();

    // The checkpoint is a signed note under the node's key.
    let node_id: haca_core::NodeId = get("/v1/node")["node_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let note = http
        .get(format!("{}/v1/log/checkpoint", node.url))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let signed = SignedCheckpoint::parse(&note).unwrap();
    signed.verify(&node_id).unwrap();
    assert!(signed.checkpoint.size >= size);
    let tampered = note.replacen(&format!("\n{}\n", signed.checkpoint.size), "\n1\n", 1);
    assert!(SignedCheckpoint::parse(&tampered)
        .and_then(|c| c.verify(&node_id))
        .is_err());

    // The run's entry is included in the tree, and the early tree is a prefix of today's.
    let first = get("/v1/log/entries/0");
    assert_eq!(first["kind"], "run");
    assert_eq!(first["data"]["run_id"], run.as_str());
    assert_eq!(first["data"]["outcome"], "settled");
    let inc = get(&format!("/v1/log/proofs/inclusion?index=0&size={size}"));
    let d = |v: &Value| -> Digest { v.as_str().unwrap().parse().unwrap() };
    let proof: Vec<Digest> = inc["proof"].as_array().unwrap().iter().map(d).collect();
    verify_inclusion(&d(&first["leaf_hash"]), 0, size, &proof, &d(&inc["root"])).unwrap();
    assert_eq!(d(&inc["root"]), d(&head["root"]));
    let e = early["size"].as_u64().unwrap();
    let con = get(&format!(
        "/v1/log/proofs/consistency?first={e}&second={size}"
    ));
    let proof: Vec<Digest> = con["proof"].as_array().unwrap().iter().map(d).collect();
    verify_consistency(e, size, &d(&early["root"]), &d(&head["root"]), &proof).unwrap();

    // Out-of-range requests are refused with the argument named.
    let r = http
        .get(format!(
            "{}/v1/log/proofs/inclusion?index={size}&size={size}",
            node.url
        ))
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().unwrap().contains(&format!("index {size}")));
}
