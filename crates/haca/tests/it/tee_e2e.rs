//! TEE mode on devnet: a run executed by the dev enclave process carries an attestation box;
//! offline, `enclave.genuine` and `artifact.bound` hold only with `--allow-dev-root`, and fail
//! once the output hash or the attestation is swapped. The enclave ends with its node.

use crate::common;

use base64::Engine as _;
use serde_json::Value;
use std::time::{Duration, Instant};

use common::claim_line;

fn verify(node: &common::Devnet, file: &std::path::Path, extra: &[&str]) -> (bool, String) {
    node.verify(file, extra)
}

/// Pids of dev enclave processes started for `data_dir`.
fn enclave_pids(data_dir: &std::path::Path) -> Vec<String> {
    let seed = data_dir.join("dev-enclave-ca.seed");
    let out = std::process::Command::new("pgrep")
        .args([
            "-f",
            &format!(
                "enclave --listen 127.0.0.1:0 --ca-seed-file {}",
                seed.display()
            ),
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_tee_run_verifies_offline_only_with_the_dev_root_and_not_after_a_swap() {
    let dir = tempfile::tempdir().unwrap();
    let node = common::Devnet::start(dir.path(), &[]);
    let input = node.data_dir.join("example-input.json");
    let out = node.haca_ok(&[
        "infer",
        "example/mnist-mlp",
        "--input",
        input.to_str().unwrap(),
        "--mode",
        "tee",
        "--json",
    ]);
    let ans: Value = serde_json::from_slice(&out.stdout).unwrap();
    let run = ans["run_id"].as_str().unwrap();
    let out = node.haca_ok(&["receipt", run, "--wait", "settled", "--json"]);
    let receipt: Value = serde_json::from_slice(&out.stdout).unwrap();
    let att = &receipt["boxes"]["attestation"]["evidence"];
    assert_eq!(att["dev"], true, "{receipt}");
    assert_eq!(receipt["boxes"]["execution"]["evidence"]["mode"], "tee");
    let file = dir.path().join("tee-receipt.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&receipt).unwrap()).unwrap();

    // A dev root is never trusted by default.
    let (ok, text) = verify(&node, &file, &[]);
    assert!(!ok, "{text}");
    let line = claim_line(&text, "enclave.genuine");
    assert!(
        line.contains("fails") && line.contains("dev root not trusted"),
        "{line}"
    );

    // With --allow-dev-root both claims hold, marked dev; the run also settled.
    let (ok, text) = verify(&node, &file, &["--allow-dev-root"]);
    assert!(ok, "{text}");
    assert!(
        claim_line(&text, "enclave.genuine").contains("holds (dev root)"),
        "{text}"
    );
    assert!(
        claim_line(&text, "artifact.bound").contains("holds"),
        "{text}"
    );
    assert!(claim_line(&text, "run.settled").contains("holds"), "{text}");

    // Swapped output hash: the enclave's run signature no longer covers it.
    let mut swapped = receipt.clone();
    swapped["boxes"]["execution"]["evidence"]["output_hash"] = Value::from("00".repeat(32));
    std::fs::write(&file, serde_json::to_vec(&swapped).unwrap()).unwrap();
    let (ok, text) = verify(&node, &file, &["--allow-dev-root"]);
    assert!(!ok);
    assert!(
        claim_line(&text, "artifact.bound").contains("fails"),
        "{text}"
    );

    // Swapped attestation: a document altered (and its digest updated to match) fails its
    // signature; a box naming another key fails the binding.
    let mut swapped = receipt.clone();
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut doc = b64.decode(att["document_b64"].as_str().unwrap()).unwrap();
    let n = doc.len();
    doc[n - 10] ^= 0x55;
    swapped["boxes"]["attestation"]["evidence"]["document_b64"] = Value::from(b64.encode(&doc));
    swapped["boxes"]["attestation"]["evidence"]["document_digest"] =
        Value::from(haca_core::sha256(&doc).to_hex());
    std::fs::write(&file, serde_json::to_vec(&swapped).unwrap()).unwrap();
    let (ok, text) = verify(&node, &file, &["--allow-dev-root"]);
    assert!(!ok);
    assert!(
        claim_line(&text, "enclave.genuine").contains("fails"),
        "{text}"
    );
    let mut swapped = receipt.clone();
    swapped["boxes"]["attestation"]["evidence"]["enclave_key"] =
        Value::from(haca_core::NodeKey::generate().node_id().to_string());
    std::fs::write(&file, serde_json::to_vec(&swapped).unwrap()).unwrap();
    let (_, text) = verify(&node, &file, &["--allow-dev-root"]);
    let line = claim_line(&text, "enclave.genuine");
    assert!(line.contains("fails") && line.contains("binds"), "{line}");

    // A challenge: a fresh document carrying the caller's nonce, binding the same run key.
    let http = reqwest::blocking::Client::new();
    let v: Value = http
        .get(format!("{}/v1/tee/attestation?nonce=c0ffee00", node.url))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let doc = b64.decode(v["document_b64"].as_str().unwrap()).unwrap();
    let parsed = haca_tee::nitro::parse(&doc).unwrap();
    assert_eq!(parsed.nonce.as_deref(), Some(&[0xc0, 0xff, 0xee, 0x00][..]));
    assert_eq!(v["enclave_key"], att["enclave_key"]);
    let r = http
        .get(format!("{}/v1/tee/attestation?nonce=xyz", node.url))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let listed: Value = http
        .get(format!("{}/v1/tee", node.url))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let listed = &listed["enclaves"][0];
    assert_eq!(listed["dev"], true, "{listed}");

    // The chain's TEE registry holds the enclave (devnet registered it before serving; the
    // validator settled the run above only because it did).
    assert!(listed["registered_at"].as_u64().is_some(), "{listed}");
    assert!(listed["last_heartbeat_at"].as_u64().is_some(), "{listed}");
    assert_eq!(listed["enabled"], true, "{listed}");
    let registry: Value = http
        .get(format!("{}/v1/chain/tee", node.url))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        registry["active"].as_array().unwrap().len(),
        1,
        "{registry}"
    );
    assert_eq!(registry["active"][0], listed["registry_id"], "{registry}");

    // OpenGradient-compatible fields on the enclave's answer, checkable offline with the
    // published RSA key; the tee_id is keccak256 of that key's SubjectPublicKeyInfo.
    let fields: haca_tee::og_compat::TeeFields = serde_json::from_value(ans.clone()).unwrap();
    assert_eq!(listed["tee_id"].as_str(), Some(fields.tee_id.as_str()));
    let pem = listed["signing_key_pem"].as_str().unwrap();
    haca_tee::og_compat::verify_fields(pem.as_bytes(), &fields).unwrap();
    let mut forged = fields.clone();
    forged.tee_output_hash = "11".repeat(32);
    assert!(haca_tee::og_compat::verify_fields(pem.as_bytes(), &forged).is_err());
    // The document binds that RSA key through nitriding user_data.
    let doc = b64
        .decode(listed["attestation_doc_b64"].as_str().unwrap())
        .unwrap();
    let user_data = haca_tee::nitro::parse(&doc).unwrap().user_data.unwrap();
    let binding = haca_tee::NitridingUserData::parse(&user_data).unwrap();
    let spki = haca_tee::og_compat::spki_der_of_pem(pem).unwrap();
    assert_eq!(binding.signing_key_sha256, haca_core::sha256(&spki).0);

    // The enclave is a separate process that ends with its node, even on kill -9.
    assert_eq!(enclave_pids(&node.data_dir).len(), 1);
    let data_dir = node.data_dir.clone();
    node.kill9();
    let t = Instant::now();
    while !enclave_pids(&data_dir).is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the enclave outlived its node"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
