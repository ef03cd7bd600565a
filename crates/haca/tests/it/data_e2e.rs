//! Data nodes on devnet, against a real local HTTP server as the source: an item is fetched,
//! signed and admitted into a run; the receipt's data box lists it with its age, and offline
//! `data.attested` holds only for a trusted data node and fails once the item is tampered
//! with or its signature forged. A source outside the allowlist is refused naming the rule,
//! and a stale item refuses the run.

use crate::common;
use haca_core::sha256;
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;

const RATES: &[u8] = br#"{"eur_usd":1.0842}"#;

/// A loopback HTTP source: `/rates` is good for 30 s, `/stale` must not be cached.
fn source() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                let _ = r.read_line(&mut line);
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).is_err() || h.trim().is_empty() {
                        break;
                    }
                }
                let cache = if line.contains("/stale") {
                    "no-store"
                } else {
                    "max-age=30"
                };
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncache-control: {cache}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    RATES.len()
                );
                let _ = conn.write_all(RATES);
            });
        }
    });
    url
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn verify(node: &common::Devnet, file: &std::path::Path, extra: &[&str]) -> Value {
    let genesis = node.data_dir.join("genesis.json");
    let mut args = vec![
        "verify",
        file.to_str().unwrap(),
        "--validators",
        genesis.to_str().unwrap(),
        "--json",
    ];
    args.extend_from_slice(extra);
    serde_json::from_slice(&node.haca(&args).stdout).unwrap()
}

#[test]
fn a_fetched_item_is_admitted_with_its_age_and_attested_offline_only_as_signed() {
    let src = source();
    let dir = tempfile::tempdir().unwrap();
    let rule = format!("{src}/rates");
    let stale_rule = format!("{src}/stale");
    let node = common::Devnet::start(
        dir.path(),
        &["--data-allow", &rule, "--data-allow", &stale_rule],
    );

    // Fetch: the signed item names its content's hash.
    let out = node.haca_ok(&["data", "fetch", &format!("{src}/rates/eur"), "--json"]);
    let item: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = item["id"].as_str().unwrap().to_owned();
    assert_eq!(item["sha256"], sha256(RATES).to_hex());
    assert_eq!(item["signature"].as_str().unwrap().len(), 128);
    assert_eq!(item["http_status"], 200);
    let fetched_at = item["fetched_at"].as_u64().unwrap();
    assert_eq!(item["valid_until"].as_u64().unwrap(), fetched_at + 30_000);
    let signer = item["signer"].as_str().unwrap().to_owned();
    let content = reqwest::blocking::get(format!("{}/v1/data/items/{id}/content", node.url))
        .unwrap()
        .bytes()
        .unwrap();
    assert_eq!(&content[..], RATES);

    // Admitted into a run: the data box lists it with its age at use.
    let input = node.data_dir.join("example-input.json");
    let infer = |data: &str| {
        node.haca(&[
            "infer",
            "example/mnist-mlp",
            "--input",
            input.to_str().unwrap(),
            "--data",
            data,
            "--json",
        ])
    };
    let out = infer(&id);
    assert!(out.status.success(), "{}", stderr(&out));
    let ans: Value = serde_json::from_slice(&out.stdout).unwrap();
    let run = ans["run_id"].as_str().unwrap();
    let out = node.haca_ok(&["receipt", run, "--wait", "settled", "--json"]);
    let receipt: Value = serde_json::from_slice(&out.stdout).unwrap();
    let data = &receipt["boxes"]["data"];
    assert_eq!(data["status"], "claimed", "{data}");
    let listed = &data["evidence"]["items"][0];
    assert_eq!(listed["id"], id.as_str());
    assert_eq!(listed["source"], format!("{src}/rates/eur"));
    let age = listed["age_ms"].as_u64().unwrap();
    assert!(age < 30_000, "age {age} ms");
    let file = dir.path().join("receipt.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&receipt).unwrap()).unwrap();

    // Offline: holds with the data node trusted, unchecked without, fails for another node.
    let v = verify(&node, &file, &["--data-node", &signer]);
    assert_eq!(
        common::claim_state(&v, "data.attested").unwrap(),
        "holds",
        "{v}"
    );
    assert_eq!(
        common::claim_state(&v, "data.fresh(5m)").unwrap(),
        "holds",
        "{v}"
    );
    let v = verify(&node, &file, &[]);
    assert_eq!(
        common::claim_state(&v, "data.attested").unwrap(),
        "unchecked",
        "{v}"
    );
    let v = verify(&node, &file, &["--data-node", &"ab".repeat(32)]);
    assert_eq!(
        common::claim_state(&v, "data.attested").unwrap(),
        "fails",
        "{v}"
    );

    // Tampered: a changed content hash or source, or a forged signature, fails.
    let forged_sig = hex::encode(haca_core::NodeKey::from_seed([5; 32]).sign(b"x"));
    for (field, value) in [
        ("sha256", Value::from(sha256(b"other").to_hex())),
        ("source", Value::from(format!("{src}/rates/usd"))),
        ("signature", Value::from(forged_sig)),
    ] {
        let mut bad = receipt.clone();
        bad["boxes"]["data"]["evidence"]["items"][0][field] = value;
        let f = dir.path().join(format!("tampered-{field}.json"));
        std::fs::write(&f, serde_json::to_vec(&bad).unwrap()).unwrap();
        let v = verify(&node, &f, &["--data-node", &signer]);
        assert_eq!(
            common::claim_state(&v, "data.attested").unwrap(),
            "fails",
            "{field}: {v}"
        );
    }

    // Outside the allowlist: refused, naming the rules.
    let out = node.haca(&["data", "fetch", &format!("{src}/secret")]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("source_not_allowed") && err.contains(&rule),
        "{err}"
    );

    // Stale at request time: the run is refused, naming the item.
    let out = node.haca_ok(&["data", "fetch", &format!("{src}/stale"), "--json"]);
    let stale: Value = serde_json::from_slice(&out.stdout).unwrap();
    let stale_id = stale["id"].as_str().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(5));
    let out = infer(stale_id);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("data_stale") && err.contains(stale_id),
        "{err}"
    );

    // An unknown item is refused too.
    let out = infer(&"0".repeat(64));
    assert!(stderr(&out).contains("data_not_found"), "{}", stderr(&out));
}

#[test]
fn a_data_only_node_fetches_allowed_sources_and_refuses_the_rest() {
    use std::process::{Command, Stdio};
    let src = source();
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(common::BIN)
        .args([
            "node",
            "--roles",
            "data",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path())
        .args(["--data-allow", &format!("{src}/rates"), "--no-llm"])
        .env("HACA_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let url = common::printed(&mut child, "url:", std::time::Duration::from_secs(60))
        .expect("the node printed its url");
    let key = haca_store::load_or_create_key(&dir.path().join("data.key")).unwrap();
    let run = |args: &[&str]| {
        Command::new(common::BIN)
            .args(args)
            .env("HACA_NODE", &url)
            .output()
            .unwrap()
    };
    let out = run(&["data", "fetch", &format!("{src}/rates"), "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let item: haca_core::data::DataItem = serde_json::from_slice(&out.stdout).unwrap();
    item.verify().unwrap();
    assert_eq!(item.signer, key.node_id());
    let out = run(&["data", "fetch", "http://example.com.evil/rates"]);
    assert!(
        stderr(&out).contains("source_not_allowed"),
        "{}",
        stderr(&out)
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_chat_admits_data_items_into_its_data_box_and_refuses_unknown_ones() {
    let src = source();
    let port = crate::ohttp_e2e::fake_upstream();
    let spec = format!("name=fake,url=http://127.0.0.1:{port}/v1,models=m1");
    let rule = format!("{src}/rates");
    let dir = tempfile::tempdir().unwrap();
    let node = common::Devnet::start(dir.path(), &["--provider", &spec, "--data-allow", &rule]);
    let out = node.haca_ok(&["data", "fetch", &format!("{src}/rates/eur"), "--json"]);
    let item: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = item["id"].as_str().unwrap().to_owned();

    let chat = |data: &str| {
        node.haca(&[
            "chat",
            "--once",
            "What is the rate?",
            "--model",
            "fake/m1",
            "--data",
            data,
        ])
    };
    let out = chat(&id);
    let told = stderr(&out);
    assert!(out.status.success(), "{told}");
    // The turn's line names its receipt; the data box there lists the item with its age.
    let url = told
        .split_whitespace()
        .find(|w| w.starts_with("http") && w.contains("/receipt"))
        .unwrap_or_else(|| panic!("no receipt URL in: {told}"))
        .trim_end_matches(']');
    let receipt: Value = reqwest::blocking::get(url).unwrap().json().unwrap();
    let items = &receipt["boxes"]["data"]["evidence"]["items"];
    assert_eq!(items[0]["id"], id.as_str(), "{receipt}");
    assert!(items[0]["age_ms"].as_u64().is_some(), "{receipt}");
    assert_eq!(receipt["boxes"]["data"]["status"], "claimed");

    // An item this node never fetched refuses the call before anything is served.
    let out = chat(&"ab".repeat(32));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("data[0]"), "{}", stderr(&out));
}
