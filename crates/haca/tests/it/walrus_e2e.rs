//! Walrus blob ids on a real devnet: Model Hub artifacts carry theirs beside SHA-256 (the
//! same id `haca blob id --walrus` computes offline, and the one the receipt's artifact box
//! names).

use crate::common::{mlp_input, padded_model, peak_rss, reset_peak_rss, wait_ready, Devnet};
use reqwest::blocking::Client;
use serde_json::{json, Value};

#[test]
fn hub_artifacts_carry_their_walrus_blob_id_beside_sha256() {
    let dir = tempfile::tempdir().unwrap();
    let node = Devnet::start(dir.path(), &[]);
    let http = Client::new();
    wait_ready(&http, &node.url);

    let (m, bytes) = example_artifact(&http, &node.url);
    assert_eq!(m["label"], "example/mnist-mlp");
    let walrus = m["walrus_blob_id"]
        .as_str()
        .expect("a Walrus id")
        .to_owned();
    // The artifact's bytes give the same id offline.
    let file = dir.path().join("model.onnx");
    std::fs::write(&file, &bytes).unwrap();
    let out = node.haca_ok(&["blob", "id", file.to_str().unwrap(), "--walrus"]);
    assert_eq!(crate::common::last_line(&out), walrus);
    let list = String::from_utf8_lossy(&node.haca_ok(&["model", "list"]).stdout).into_owned();
    assert!(
        list.contains(&walrus) && list.contains(m["blob_id"].as_str().unwrap()),
        "{list}"
    );

    // A run's artifact box names both, and the receipt still verifies.
    let ans: Value = http
        .post(format!("{}/v1/infer", node.url))
        .json(&json!({"model": "example/mnist-mlp", "input": mlp_input(1)}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let artifact = &ans["receipt"]["boxes"]["artifact"]["evidence"];
    assert_eq!(artifact["walrus_blob_id"], walrus.as_str(), "{artifact}");
    assert_eq!(artifact["blob_id"], m["blob_id"]);
    let rfile = dir.path().join("r.json");
    std::fs::write(&rfile, ans["receipt"].to_string()).unwrap();
    let (ok, out) = node.verify(&rfile, &[]);
    assert!(
        out.contains("execution.signed") && !out.contains("FAILED"),
        "{ok} {out}"
    );
}

/// A server that answers every request with `body` (HTTP 200): an aggregator that lies.
fn fixed_server(body: &'static [u8]) -> u16 {
    crate::common::http_server(move |_, _| ("application/octet-stream", body.to_vec()))
}

#[test]
fn the_node_speaks_walrus_blob_api_and_the_client_checks_every_id() {
    let dir = tempfile::tempdir().unwrap();
    let node = Devnet::start(dir.path(), &[]);
    wait_ready(&Client::new(), &node.url);
    let file = dir.path().join("notes.txt");
    let data: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&file, &data).unwrap();
    let f = file.to_str().unwrap();
    let id = crate::common::last_line(&node.haca_ok(&["blob", "id", f, "--walrus"]));

    // PUT /v1/blobs as a Walrus publisher; the client checks the id it names.
    let out = node.haca_ok(&["blob", "put", f]);
    assert_eq!(crate::common::last_line(&out), id);
    assert!(String::from_utf8_lossy(&out.stdout).contains("newly stored"));
    let out = node.haca_ok(&["blob", "put", f]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("already stored"));

    // GET /v1/blobs/{id} as a Walrus aggregator, checked against the id.
    let back = dir.path().join("back.bin");
    node.haca_ok(&["blob", "get", &id, "--out", back.to_str().unwrap()]);
    assert_eq!(std::fs::read(&back).unwrap(), data);
    let r = Client::new()
        .get(format!("{}/v1/blobs/{}", node.url, "A".repeat(43)))
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);

    // An aggregator whose bytes are not the blob asked for is caught.
    let liar = fixed_server(b"not the blob you asked for");
    let out = node.haca(&[
        "blob",
        "get",
        &id,
        "--out",
        back.to_str().unwrap(),
        "--aggregator",
        &format!("http://127.0.0.1:{liar}"),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("not {id}")), "{err}");

    // A Model Hub artifact is served by its Walrus id too.
    let models = hub_models(&Client::new(), &node.url);
    let walrus = models[0]["walrus_blob_id"].as_str().unwrap();
    let model = dir.path().join("m.onnx");
    node.haca_ok(&["blob", "get", walrus, "--out", model.to_str().unwrap()]);
    assert_eq!(
        crate::common::last_line(&node.haca_ok(&["blob", "id", model.to_str().unwrap()])),
        models[0]["blob_id"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:")
    );
}

#[test]
fn a_settled_round_names_its_tree_dump_by_walrus_id() {
    let dir = tempfile::tempdir().unwrap();
    let node = Devnet::start(dir.path(), &[]);
    let http = Client::new();
    wait_ready(&http, &node.url);
    let ans: Value = http
        .post(format!("{}/v1/infer", node.url))
        .json(&json!({"model": "example/mnist-mlp", "input": mlp_input(2)}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let run = ans["run_id"].as_str().unwrap();
    node.haca_ok(&["receipt", run, "--wait", "settled", "--json"]);
    let r = http
        .get(format!("{}/v1/runs/{run}/receipt", node.url))
        .send()
        .unwrap();
    let header = r.headers()["x-settlement-walrus-blob-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let text = r.text().unwrap();
    let receipt: Value = serde_json::from_str(&text).unwrap();
    let settlement = &receipt["boxes"]["settlement"]["evidence"];
    assert_eq!(settlement["walrus_blob_id"], header.as_str());

    // The dump is OpenZeppelin's standard-v1 tree of the round, served by its Walrus id,
    // and holds this run's leaf under the round's root.
    let dump_file = dir.path().join("tree.json");
    node.haca_ok(&["blob", "get", &header, "--out", dump_file.to_str().unwrap()]);
    let dump: Value = serde_json::from_slice(&std::fs::read(&dump_file).unwrap()).unwrap();
    assert_eq!(dump["format"], "standard-v1");
    assert_eq!(dump["tree"][0], settlement["oz"]["root"]);
    assert!(
        dump["values"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["value"] == settlement["oz"]["leaf"]),
        "{dump}"
    );
    // The settlement box with its Walrus id still verifies.
    let rfile = dir.path().join("r.json");
    std::fs::write(&rfile, &text).unwrap();
    let (ok, out) = node.verify(&rfile, &[]);
    assert!(ok, "{out}");
    assert!(
        out.contains("run.settled") && out.contains("holds"),
        "{out}"
    );
    // With the dump, offline: its Walrus id is the box's and it holds this run's leaf.
    let d = dump_file.to_str().unwrap();
    let (ok, out) = node.verify(&rfile, &["--tree-dump", d]);
    assert!(ok && out.contains("tree dump: Walrus blob"), "{out}");
    // Another dump (one byte changed) is not the one the box names.
    let mut other = std::fs::read(&dump_file).unwrap();
    let last = other.len() - 1;
    other[last] = b' ';
    std::fs::write(&dump_file, &other).unwrap();
    let (ok, out) = node.verify(&rfile, &["--tree-dump", d]);
    assert!(!ok && out.contains("the settlement box names"), "{out}");
}

/// The node's Model Hub artifacts, as `GET /v1/hub/models` lists them.
fn hub_models(http: &Client, url: &str) -> Vec<Value> {
    let v: Value = http
        .get(format!("{url}/v1/hub/models"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    v["models"].as_array().cloned().unwrap_or_default()
}

/// The node's first artifact (the example model) and its bytes.
fn example_artifact(http: &Client, url: &str) -> (Value, Vec<u8>) {
    let m = hub_models(http, url).swap_remove(0);
    let bytes = http
        .get(format!(
            "{url}/v1/hub/blobs/{}",
            m["blob_id"].as_str().unwrap()
        ))
        .send()
        .unwrap()
        .bytes()
        .unwrap()
        .to_vec();
    (m, bytes)
}

/// Waits until blob `id` was PUT to the node over `data_dir` (its Walrus blob directory
/// holds it; up to 30 s), then reads it back with `GET {url}/v1/blobs/{id}`.
fn wait_blob(http: &Client, url: &str, data_dir: &std::path::Path, id: &str) -> Vec<u8> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if data_dir.join("walrus").join(id).exists() {
            let r = http.get(format!("{url}/v1/blobs/{id}")).send().unwrap();
            assert_eq!(r.status(), 200);
            return r.bytes().unwrap().to_vec();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "blob {id} never reached {url}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
fn a_node_with_a_walrus_publisher_stores_artifacts_and_tree_dumps_there() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // Node A plays Walrus (its publisher and aggregator API); node B publishes to it.
    let walrus = Devnet::start(dir_a.path(), &[]);
    let http = Client::new();
    wait_ready(&http, &walrus.url);
    let node = Devnet::start(dir_b.path(), &["--walrus-publisher", &walrus.url]);
    wait_ready(&http, &node.url);

    // An uploaded artifact goes to the publisher under its Walrus id.
    let (m, bytes) = example_artifact(&http, &node.url);
    let file = dir_b.path().join("m.onnx");
    std::fs::write(&file, &bytes).unwrap();
    node.haca_ok(&["model", "upload", "team/mlp", file.to_str().unwrap()]);
    let stored = wait_blob(
        &http,
        &walrus.url,
        dir_a.path(),
        m["walrus_blob_id"].as_str().unwrap(),
    );
    assert_eq!(stored, bytes.to_vec());

    // A settled round's tree dump goes there too, without anyone reading the receipt.
    let ans: Value = http
        .post(format!("{}/v1/infer", node.url))
        .json(&json!({"model": "example/mnist-mlp", "input": mlp_input(3)}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let run = ans["run_id"].as_str().unwrap();
    // The chain's record of the run, not its receipt (whose route stores and pushes the dump
    // itself): only the node's own mirroring of settled rounds can put the dump there.
    let start = std::time::Instant::now();
    let evidence = loop {
        let v: Value = http
            .get(format!("{}/v1/chain/records/{run}", node.url))
            .send()
            .unwrap()
            .json()
            .unwrap();
        if v["status"] == "settled" {
            break v["evidence"].clone();
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "not settled: {v}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let id = evidence["walrus_blob_id"].as_str().expect("a tree dump id");
    let dump: Value =
        serde_json::from_slice(&wait_blob(&http, &walrus.url, dir_a.path(), id)).unwrap();
    assert_eq!(dump["tree"][0], evidence["oz"]["root"]);
}

#[test]
fn a_large_upload_gets_its_walrus_id_outside_the_node_process() {
    let dir = tempfile::tempdir().unwrap();
    let node = Devnet::start(dir.path(), &[]);
    let http = Client::new();
    wait_ready(&http, &node.url);
    // Over haca_hub::WALRUS_INLINE_MAX (4 MiB): computed by a child `haca blob id --walrus`.
    // 48 MiB: encoded in the node, it would add half again as much to its resident memory.
    let size = 48 << 20;
    let pid = node.child.id();
    let before = reset_peak_rss(pid);
    let body = padded_model(size, 7);
    let file = dir.path().join("big.onnx");
    std::fs::write(&file, &body).unwrap();
    node.haca_ok(&["model", "upload", "big/w", file.to_str().unwrap()]);
    let expected = crate::common::last_line(&node.haca_ok(&[
        "blob",
        "id",
        file.to_str().unwrap(),
        "--walrus",
    ]));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let m = hub_models(&http, &node.url)
            .into_iter()
            .find(|m| m["label"] == "big/w")
            .unwrap();
        if let Some(id) = m["walrus_blob_id"].as_str() {
            assert_eq!(id, expected);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no Walrus id after 60 s: {m}"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    let grew = peak_rss(pid).saturating_sub(before);
    assert!(
        grew < (size / 2) as u64,
        "the node's peak RSS grew by {} MiB for a {} MiB artifact's Walrus id",
        grew >> 20,
        size >> 20
    );
}
