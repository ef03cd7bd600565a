//! zkml mode on devnet: the answer comes at once with the proof box `claimed`; the proof follows
//! in the background, becomes `verified`, the validators check it again and settle the run;
//! offline, `execution.correct` holds, `artifact.bound` holds with the model file, and each
//! tampered part fails. A model with an operator zkml cannot prove is refused naming it.

use crate::common;
use base64::Engine as _;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures")
        .join(rel)
}

use common::claim_line;

fn verify(node: &common::Devnet, receipt: &Value, dir: &Path, extra: &[&str]) -> (bool, String) {
    let file = dir.join("zk-receipt.json");
    std::fs::write(&file, serde_json::to_vec_pretty(receipt).unwrap()).unwrap();
    node.verify(&file, extra)
}

#[test]
fn a_zkml_run_answers_at_once_is_proved_settles_and_verifies_offline() {
    let dir = tempfile::tempdir().unwrap();
    let node = common::Devnet::start(dir.path(), &[]);
    let input = node.data_dir.join("example-input.json");
    let infer = |mode: &str| -> Value {
        let out = node.haca_ok(&[
            "infer",
            "example/mnist-mlp",
            "--input",
            input.to_str().unwrap(),
            "--mode",
            mode,
            "--settlement",
            "individual",
            "--json",
        ]);
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let ans = infer("zkml");
    let run = ans["run_id"].as_str().unwrap().to_string();
    let proof = &ans["receipt"]["boxes"]["proof"];
    assert_eq!(proof["status"], "claimed", "{proof}");
    assert!(
        proof["evidence"]["proof_b64"].is_null(),
        "the answer does not wait for the proof"
    );
    assert_eq!(
        proof["evidence"]["output_hash"],
        ans["receipt"]["boxes"]["execution"]["evidence"]["output_hash"]
    );
    // The quantized model answers what the float model answers.
    let vanilla = infer("vanilla");
    let (z, v) = (
        &ans["output"]["output"]["data"],
        &vanilla["output"]["output"]["data"],
    );
    let (z, v): (Vec<f64>, Vec<f64>) = (
        z.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect(),
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect(),
    );
    for (a, b) in z.iter().zip(&v) {
        assert!((a - b).abs() < 0.05, "zkml {a} vs vanilla {b}");
    }

    node.haca_ok(&["receipt", &run, "--wait", "proved"]);
    let out = node.haca_ok(&["receipt", &run, "--wait", "settled", "--json"]);
    let receipt: Value = serde_json::from_slice(&out.stdout).unwrap();
    let proof = &receipt["boxes"]["proof"];
    assert_eq!(proof["status"], "verified", "{proof}");
    assert!(proof["evidence"]["proof_b64"].is_string());
    assert_eq!(receipt["boxes"]["settlement"]["status"], "settled");
    let http = reqwest::blocking::Client::new();
    let st: Value = http
        .get(format!("{}/v1/runs/{run}/proof", node.url))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(st["proof"]["status"], "proved", "{st}");

    // Offline: the proof checks; with the model file the key is bound to the blob.
    let model = fixture("models/mnist-mlp.onnx");
    let (ok, text) = verify(
        &node,
        &receipt,
        dir.path(),
        &["--model", model.to_str().unwrap()],
    );
    assert!(ok, "{text}");
    assert!(
        claim_line(&text, "execution.correct").contains("holds"),
        "{text}"
    );
    assert!(
        claim_line(&text, "artifact.bound").contains("holds"),
        "{text}"
    );
    let (_, text) = verify(&node, &receipt, dir.path(), &[]);
    assert!(
        claim_line(&text, "artifact.bound").contains("unchecked"),
        "{text}"
    );
    let other = fixture("models/digits-mlp-56.onnx");
    let (ok, text) = verify(
        &node,
        &receipt,
        dir.path(),
        &["--model", other.to_str().unwrap()],
    );
    assert!(ok, "another model file is simply not this blob: {text}");
    assert!(
        claim_line(&text, "artifact.bound").contains("unchecked"),
        "{text}"
    );

    // Tampering: the proof's bytes, its statement, its key.
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut bytes = b64
        .decode(proof["evidence"]["proof_b64"].as_str().unwrap())
        .unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0x01;
    let mut t = receipt.clone();
    t["boxes"]["proof"]["evidence"]["proof_b64"] = Value::from(b64.encode(&bytes));
    let (ok, text) = verify(&node, &t, dir.path(), &[]);
    assert!(!ok);
    assert!(
        claim_line(&text, "execution.correct").contains("fails"),
        "{text}"
    );
    let mut t = receipt.clone();
    t["boxes"]["proof"]["evidence"]["output_hash"] = Value::from("00".repeat(32));
    let (ok, text) = verify(&node, &t, dir.path(), &[]);
    assert!(!ok);
    assert!(
        claim_line(&text, "execution.correct").contains("output"),
        "{text}"
    );
    let mut t = receipt.clone();
    t["boxes"]["proof"]["evidence"]["verifying_key"]["net"]["act_scale"] = Value::from(3);
    let (ok, text) = verify(&node, &t, dir.path(), &[]);
    assert!(!ok);
    assert!(
        claim_line(&text, "execution.correct").contains("verifying_key_digest"),
        "{text}"
    );

    // Validators check the proof themselves: the node's own key signs two more zkml runs, one
    // whose proof bytes were altered (its digest updated to match) and one with no proof.
    let key = haca_core::NodeKey::from_file_string(
        &std::fs::read_to_string(dir.path().join("node.key")).unwrap(),
    )
    .unwrap();
    let forged = |seed: u8, edit: &dyn Fn(&mut Value)| -> String {
        let mut r: haca_core::Receipt = serde_json::from_value(receipt.clone()).unwrap();
        r.run_id =
            haca_core::RunId::derive(&haca_core::sha256(&[seed]), &key.node_id(), &[seed; 16]);
        r.settlement_mode = Some(haca_core::settlement::SettlementMode::Batch);
        r.boxes.settlement = Default::default();
        let mut v = serde_json::to_value(&r).unwrap();
        edit(&mut v["boxes"]["proof"]["evidence"]);
        let mut r: haca_core::Receipt = serde_json::from_value(v).unwrap();
        r.sign(&key).unwrap();
        let rec =
            haca_chain::RunRecord::new(&r, haca_core::settlement::SettlementMode::Batch, None)
                .unwrap();
        let resp = http
            .post(format!("{}/v1/chain/records", node.url))
            .json(&rec)
            .send()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 202, "{}", resp.text().unwrap());
        let id = rec.run_id.to_string();
        let start = std::time::Instant::now();
        loop {
            let v: Value = http
                .get(format!("{}/v1/chain/records/{id}", node.url))
                .send()
                .unwrap()
                .json()
                .unwrap();
            if v["status"] != "pending" {
                assert_eq!(v["status"], "rejected", "{v}");
                return format!("{} {}", v["code"], v["reason"]);
            }
            assert!(start.elapsed().as_secs() < 60, "still pending: {v}");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    let bad_bytes = {
        let mut b = b64
            .decode(proof["evidence"]["proof_b64"].as_str().unwrap())
            .unwrap();
        let n = b.len();
        b[n / 3] ^= 0x10;
        b
    };
    let why = forged(1, &|p: &mut Value| {
        p["proof_b64"] = Value::from(b64.encode(&bad_bytes));
        p["proof_digest"] = Value::from(haca_core::sha256(&bad_bytes).to_hex());
    });
    assert!(why.contains("proof: the proof does not verify"), "{why}");
    let why = forged(2, &|p: &mut Value| {
        p.as_object_mut().unwrap().remove("proof_b64");
    });
    assert!(why.contains("settles with its proof attached"), "{why}");

    // Private settlement would hide what the proof publishes: refused, naming the field.
    let out = node.haca(&[
        "infer",
        "example/mnist-mlp",
        "--input",
        input.to_str().unwrap(),
        "--mode",
        "zkml",
        "--settlement",
        "private",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("settlement"));

    // An operator zkml does not prove is refused at first use, by name.
    let sig = fixture("models/sigmoid-mlp.onnx");
    node.haca_ok(&["model", "upload", "test/sigmoid", sig.to_str().unwrap()]);
    let out = node.haca(&[
        "infer",
        "test/sigmoid",
        "--input",
        r#"{"input": {"shape": [1, 4], "data": [0.1, 0.2, 0.3, 0.4]}}"#,
        "--mode",
        "zkml",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Sigmoid") && err.contains("squash"), "{err}");
}
