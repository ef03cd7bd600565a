//! The README's tour, end to end against the real binary: infer, receipt, offline verify,
//! the hub over HTTP and the CLI, and every bad input getting its clear error.

use crate::common::{mlp_input, wait_ready, Devnet};
use reqwest::blocking::Client;
use serde_json::{json, Value};

fn error_of(resp: reqwest::blocking::Response) -> (u16, String, String) {
    let status = resp.status().as_u16();
    let body: Value = resp.json().expect("error bodies are JSON");
    (
        status,
        body["error"]["code"].as_str().unwrap().to_owned(),
        body["error"]["message"].as_str().unwrap().to_owned(),
    )
}

#[test]
fn infer_returns_output_and_a_receipt_that_verifies_offline_until_tampered() {
    let dir = tempfile::tempdir().unwrap();
    let node = Devnet::start(dir.path(), &[]);
    let http = Client::new();
    wait_ready(&http, &node.url);

    let resp = http
        .post(format!("{}/v1/infer", node.url))
        .json(&json!({"model": "example/mnist-mlp", "input": mlp_input(1)}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let run_header = resp.headers()["x-haca-run-id"].to_str().unwrap().to_owned();
    let receipt_header = resp.headers()["x-haca-receipt"]
        .to_str()
        .unwrap()
        .to_owned();
    let ans: Value = resp.json().unwrap();
    let run_id = ans["run_id"].as_str().unwrap();
    assert_eq!(run_id, run_header);
    assert_eq!(ans["output"]["output"]["shape"], json!([1, 10]));
    assert_eq!(
        ans["output"]["output"]["data"].as_array().unwrap().len(),
        10
    );
    let boxes = &ans["receipt"]["boxes"];
    assert_eq!(boxes["artifact"]["evidence"]["label"], "example/mnist-mlp");
    assert_eq!(boxes["route"]["evidence"]["path"], "direct");
    assert_eq!(boxes["execution"]["evidence"]["mode"], "vanilla");
    for absent in &haca_core::receipt::BOX_NAMES[3..] {
        assert_eq!(boxes[absent]["status"], "absent", "{absent}");
    }

    // The stored receipt is the one that was answered.
    let stored: Value = http
        .get(format!("{}{receipt_header}", node.url))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(stored, ans["receipt"]);

    // Exported through the CLI, it verifies offline ...
    let out = node.haca_ok(&["receipt", run_id, "--json"]);
    let file = dir.path().join("receipt.json");
    std::fs::write(&file, &out.stdout).unwrap();
    let v = node.haca(&["verify", file.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&v.stdout);
    assert!(v.status.success(), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("execution.signed") && l.contains("holds")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("node.registered") && l.contains("unchecked")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("run.settled") && l.contains("not present")),
        "{text}"
    );

    // ... and fails with a clear message once any value in it changes.
    let mut tampered: Value = serde_json::from_slice(&out.stdout).unwrap();
    tampered["boxes"]["artifact"]["evidence"]["revision"] = json!(2);
    std::fs::write(&file, tampered.to_string()).unwrap();
    let v = node.haca(&["verify", file.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&v.stdout);
    assert_eq!(v.status.code(), Some(1), "a failed claim exits 1: {text}");
    assert!(
        text.contains("execution.signed") && text.contains("changed after it was signed"),
        "{text}"
    );

    // A truncated file is a clear error, not a panic, and exits 2 (the input could not be
    // parsed), apart from a claim that fails (1).
    std::fs::write(&file, &out.stdout[..out.stdout.len() / 3]).unwrap();
    let v = node.haca(&["verify", file.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&v.stderr);
    assert_eq!(v.status.code(), Some(2), "{err}");
    assert!(err.contains("truncated"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // So does a file that is not there, or a trust file that does not parse.
    let missing = dir.path().join("no-such-receipt.json");
    let v = node.haca(&["verify", missing.to_str().unwrap()]);
    assert_eq!(
        v.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&v.stderr)
    );
    std::fs::write(&file, &out.stdout).unwrap();
    let bad_trust = dir.path().join("not-a-genesis.json");
    std::fs::write(&bad_trust, "{not json").unwrap();
    let v = node.haca(&[
        "verify",
        file.to_str().unwrap(),
        "--validators",
        bad_trust.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&v.stderr);
    assert_eq!(v.status.code(), Some(2), "{err}");
    assert!(err.contains("--validators"), "{err}");
}

#[test]
fn cli_tour_infer_runs_and_model_hub() {
    let dir = tempfile::tempdir().unwrap();
    let node = Devnet::start(dir.path(), &[]);
    wait_ready(&Client::new(), &node.url);

    let input = dir.path().join("example-input.json");
    let out = node.haca_ok(&[
        "infer",
        "example/mnist-mlp",
        "--input",
        input.to_str().unwrap(),
        "--json",
    ]);
    let ans: Value = serde_json::from_slice(&out.stdout).unwrap();
    let run_id = ans["run_id"].as_str().unwrap().to_owned();
    assert_eq!(run_id.len(), 64);

    let runs = node.haca(&["runs", "--json"]);
    let runs: Value = serde_json::from_slice(&runs.stdout).unwrap();
    assert_eq!(runs["runs"][0]["run_id"], run_id.as_str());

    let receipt = node.haca_ok(&["receipt", &run_id, "--wait", "settled"]);
    let text = String::from_utf8_lossy(&receipt.stdout);
    assert!(
        text.contains("[execution] claimed") && text.contains("[settlement] settled"),
        "{text}"
    );
    assert!(text.contains("validator signature(s) over block"), "{text}");

    // Upload a second revision (the same model file under a new label, then a move).
    let model = dir.path().join("m.onnx");
    std::fs::write(&model, haca::devnet::EXAMPLE_MODEL).unwrap();
    let up = node.haca_ok(&[
        "model",
        "upload",
        "team/mlp",
        model.to_str().unwrap(),
        "--json",
    ]);
    let entry: Value = serde_json::from_slice(&up.stdout).unwrap();
    assert_eq!(entry["revision"], 1);
    let blob = entry["blob_id"].as_str().unwrap();
    let tag = node.haca_ok(&["model", "tag", "team/mlp", blob]);
    let said = String::from_utf8_lossy(&tag.stdout);
    assert!(
        said.contains("team/mlp revision 2") && said.contains(blob),
        "{said}"
    );
    let hist: Value = serde_json::from_slice(
        &node
            .haca(&["model", "history", "team/mlp", "--json"])
            .stdout,
    )
    .unwrap();
    assert_eq!(hist["history"].as_array().unwrap().len(), 2);
    // The chain's model registry is the authority; the hub's history mirrors it.
    let registry: Value = reqwest::blocking::get(format!("{}/v1/chain/models", node.url))
        .unwrap()
        .json()
        .unwrap();
    let revs = registry["models"]["team/mlp"].as_array().unwrap();
    assert_eq!(revs.len(), 2);
    for (chain, hub) in revs.iter().zip(hist["history"].as_array().unwrap()) {
        assert_eq!(chain["revision"], hub["revision"]);
        assert_eq!(chain["blob_id"], hub["blob_id"]);
        assert_eq!(chain["at_ms"], hub["created_at"]);
    }
    assert_eq!(
        registry["models"]["example/mnist-mlp"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let list = String::from_utf8_lossy(&node.haca(&["model", "list"]).stdout).into_owned();
    assert!(
        list.contains("example/mnist-mlp") && list.contains("team/mlp"),
        "{list}"
    );

    // A revision pinned by label@rev runs; the blob id is stored once for both labels.
    let out = node.haca_ok(&[
        "infer",
        "team/mlp@1",
        "--input",
        input.to_str().unwrap(),
        "--json",
    ]);
    let ans: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        ans["receipt"]["boxes"]["artifact"]["evidence"]["revision"],
        1
    );
    assert_eq!(
        std::fs::read_dir(dir.path().join("blobs")).unwrap().count(),
        1
    );

    // An unknown model is a clear CLI error, exit 1.
    let bad = node.haca(&["infer", "no/such-model", "--input", input.to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(1));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("no model labelled") && err.contains("404"),
        "{err}"
    );
}

#[test]
fn bad_input_gets_a_clear_error_naming_the_field_and_the_node_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let node = Devnet::start(dir.path(), &["--max-body-bytes", "65536"]);
    let http = Client::new();
    wait_ready(&http, &node.url);
    let infer = |body: Value| {
        http.post(format!("{}/v1/infer", node.url))
            .json(&body)
            .send()
            .unwrap()
    };

    let (s, code, msg) = error_of(infer(json!({"model": "nope/model", "input": mlp_input(0)})));
    assert_eq!((s, code.as_str()), (404, "unknown_model"), "{msg}");

    let (s, code, msg) = error_of(infer(
        json!({"model": "example/mnist-mlp@7", "input": mlp_input(0)}),
    ));
    assert_eq!((s, code.as_str()), (404, "unknown_revision"), "{msg}");
    assert!(msg.contains("latest is 1"), "{msg}");

    let (s, _, msg) = error_of(infer(
        json!({"model": "example/mnist-mlp", "input": {"pixels": {"shape": [1, 784], "data": vec![0.0; 784]}}}),
    ));
    assert_eq!(s, 400);
    assert!(msg.starts_with("input.pixels:"), "{msg}");

    let (s, _, msg) = error_of(infer(
        json!({"model": "example/mnist-mlp", "input": {"input": {"shape": [1, 3], "data": [1, 2, 3]}}}),
    ));
    assert_eq!(s, 400);
    assert!(
        msg.starts_with("input.input.shape:") && msg.contains("[1, 784]"),
        "{msg}"
    );

    let (s, _, msg) = error_of(infer(
        json!({"model": "example/mnist-mlp", "input": {"input": {"shape": [1, 784], "data": vec![1; 784], "dtype": "int64"}}}),
    ));
    assert_eq!(s, 400);
    assert!(msg.starts_with("input.input.dtype:"), "{msg}");

    let (s, _, msg) = error_of(infer(json!({"model": "example/mnist-mlp"})));
    assert_eq!(s, 400);
    assert!(msg.contains("input"), "{msg}");

    let (s, code, msg) = error_of(infer(
        json!({"model": "example/mnist-mlp", "input": mlp_input(0), "temprature": 1}),
    ));
    assert_eq!((s, code.as_str()), (400, "invalid_field"), "{msg}");
    assert!(msg.contains("temprature"), "{msg}");

    let resp = http
        .post(format!("{}/v1/infer", node.url))
        .header("content-type", "application/json")
        .body("{\"model\": \"example/mnist-mlp\", \"input\": {")
        .send()
        .unwrap();
    let (s, code, msg) = error_of(resp);
    assert_eq!((s, code.as_str()), (400, "malformed_json"), "{msg}");

    let big = json!({"model": "example/mnist-mlp", "input": {"input": {"shape": [1, 20000], "data": vec![0.123456789; 20000]}}});
    let (s, code, _) = error_of(infer(big));
    assert_eq!((s, code.as_str()), (413, "body_too_large"));

    let resp = http
        .post(format!("{}/v1/hub/models/team/broken", node.url))
        .body(b"definitely not onnx".to_vec())
        .send()
        .unwrap();
    let (s, code, msg) = error_of(resp);
    assert_eq!((s, code.as_str()), (422, "invalid_artifact"), "{msg}");
    let resp = http
        .post(format!("{}/v1/hub/models/team/broken", node.url))
        .body(haca::devnet::EXAMPLE_MODEL[..5000].to_vec())
        .send()
        .unwrap();
    assert_eq!(error_of(resp).0, 422);
    let resp = http
        .get(format!("{}/v1/hub/history/team/broken", node.url))
        .send()
        .unwrap();
    assert_eq!(
        resp.status(),
        404,
        "a refused upload leaves no label behind"
    );

    // A GGUF is checked as llama.cpp would load it, and refused with its reason.
    use haca_exec::llm::gguf::fixture::tiny_llama;
    let upload = |label: &str, bytes: Vec<u8>| {
        http.post(format!("{}/v1/hub/models/{label}", node.url))
            .body(bytes)
            .send()
            .unwrap()
    };
    let gguf = tiny_llama("Tiny Llama", "llama", None);
    let resp = upload("team/tiny-llama", gguf.clone());
    assert_eq!(resp.status(), 201);
    let resolved: Value = http
        .get(format!("{}/v1/hub/resolve/team/tiny-llama", node.url))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(resolved["format"], "gguf", "{resolved}");
    let (s, code, msg) = error_of(upload("team/cut", gguf[..gguf.len() - 1000].to_vec()));
    assert_eq!((s, code.as_str()), (422, "invalid_artifact"), "{msg}");
    assert!(msg.contains("truncated"), "{msg}");
    let (s, _, msg) = error_of(upload("team/florb", tiny_llama("Florb", "florb", None)));
    assert_eq!(s, 422, "{msg}");
    assert!(msg.contains("unknown model architecture: 'florb'"), "{msg}");
    // A GGUF is not an ONNX model: /v1/infer says so instead of failing inside tract.
    let (s, code, msg) = error_of(infer(json!({"model": "team/tiny-llama",
        "input": {"input": {"shape": [1, 1], "data": [0.0]}}})));
    assert_eq!((s, code.as_str()), (400, "unsupported_model"), "{msg}");

    let resp = http
        .post(format!("{}/v1/hub/models/team/x", node.url))
        .bearer_auth("wrong-token")
        .body(haca::devnet::EXAMPLE_MODEL.to_vec())
        .send()
        .unwrap();
    assert_eq!(error_of(resp).0, 403);

    let resp = http
        .get(format!("{}/v1/runs/not-a-run", node.url))
        .send()
        .unwrap();
    assert_eq!(error_of(resp).0, 400);
    let resp = http
        .get(format!("{}/v1/runs/{}", node.url, "0".repeat(64)))
        .send()
        .unwrap();
    assert_eq!(error_of(resp).1, "unknown_run");
    let resp = http
        .get(format!("{}/v1/nothing-here", node.url))
        .send()
        .unwrap();
    assert_eq!(error_of(resp).0, 404);

    // Still serving.
    assert_eq!(
        http.get(format!("{}/healthz", node.url))
            .send()
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        infer(json!({"model": "example/mnist-mlp", "input": mlp_input(3)})).status(),
        200
    );
}

#[test]
fn operator_token_admits_admin_actions() {
    let dir = tempfile::tempdir().unwrap();
    let node = Devnet::start(dir.path(), &[]);
    let http = Client::new();
    wait_ready(&http, &node.url);
    let token = std::fs::read_to_string(dir.path().join("operator.token")).unwrap();
    let resp = http
        .post(format!("{}/v1/hub/models/ops/mlp", node.url))
        .bearer_auth(token.trim())
        .body(haca::devnet::EXAMPLE_MODEL.to_vec())
        .send()
        .unwrap();
    assert_eq!(resp.status(), 201);
    let entry: Value = resp.json().unwrap();
    assert_eq!(entry["uploader"], "operator");
}
