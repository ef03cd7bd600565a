//! Issue 17, items 6 to 8, over HTTP against the real binary: numbers that do not fit their
//! dtype (or outputs that are not finite) never become receipts; the payment box's resource
//! is the node's public URL whatever the `Host` header says; model uploads stream to disk
//! instead of memory.

use crate::common::{mlp_input, padded_model, peak_rss, reset_peak_rss, wait_ready, Devnet, BIN};
use base64::Engine as _;
use reqwest::blocking::{Client, Response};
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;

fn error_of(resp: Response) -> (u16, String, String) {
    let status = resp.status().as_u16();
    let v: Value = resp.json().unwrap_or(Value::Null);
    (
        status,
        v["error"]["code"].as_str().unwrap_or_default().to_owned(),
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

fn runs_stored(http: &Client, url: &str) -> usize {
    let v: Value = http
        .get(format!("{url}/v1/runs"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    v["runs"].as_array().unwrap().len()
}

/// An MLP input whose elements are all `x` but element 3, which is the JSON text `at3`.
fn input_with(x: &str, at3: &str) -> String {
    let data: Vec<&str> = (0..784).map(|i| if i == 3 { at3 } else { x }).collect();
    format!(
        r#"{{"model": "example/mnist-mlp", "input": {{"input": {{"shape": [1, 784], "dtype": "float32", "data": [{}]}}}}}}"#,
        data.join(",")
    )
}

#[test]
fn a_float32_input_that_overflows_is_refused_naming_its_element() {
    let dir = tempfile::tempdir().unwrap();
    let node = Devnet::start(dir.path(), &[]);
    let http = Client::new();
    wait_ready(&http, &node.url);
    let post = |body: String| {
        http.post(format!("{}/v1/infer", node.url))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .unwrap()
    };
    for (x, name) in [("1e39", "1e39"), ("-4e38", "-4e38")] {
        let (status, code, msg) = error_of(post(input_with("0.5", x)));
        assert_eq!((status, code.as_str()), (400, "invalid_input"), "{msg}");
        assert!(msg.contains("input.input.data[3]"), "{msg}");
        assert!(msg.contains(name) && msg.contains("float32"), "{msg}");
    }
    // JSON itself cannot say NaN or infinity, and a string is not a number.
    let (status, code, msg) = error_of(post(input_with("0.5", "\"NaN\"")));
    assert_eq!((status, code.as_str()), (400, "invalid_input"), "{msg}");
    assert!(msg.contains("input.input.data[3]"), "{msg}");
    assert_eq!(
        runs_stored(&http, &node.url),
        0,
        "no refused input left a run"
    );

    // A large finite float32 runs, and its output is all numbers.
    let resp = post(input_with("0.5", "1e30"));
    assert_eq!(resp.status(), 200);
    let ans: Value = resp.json().unwrap();
    assert!(
        ans["output"]["output"]["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(Value::is_number),
        "{}",
        ans["output"]
    );
}

#[test]
fn a_run_whose_output_is_not_finite_gets_no_receipt() {
    let dir = tempfile::tempdir().unwrap();
    let node = Devnet::start(dir.path(), &[]);
    let http = Client::new();
    wait_ready(&http, &node.url);
    // Every element is a finite float32, but the first layer's sums overflow: in process
    // and in the enclave alike.
    for mode in ["vanilla", "tee"] {
        let body =
            input_with("3.4e38", "-3.4e38").replacen('{', &format!(r#"{{"mode": "{mode}", "#), 1);
        let resp = http
            .post(format!("{}/v1/infer", node.url))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .unwrap();
        let (status, code, msg) = error_of(resp);
        assert_eq!(
            (status, code.as_str()),
            (422, "non_finite_output"),
            "{mode}: {msg}"
        );
        assert!(
            msg.contains("output.") && msg.contains("not finite"),
            "{mode}: {msg}"
        );
    }
    assert_eq!(runs_stored(&http, &node.url), 0, "no receipt was stored");
    // The node still serves ordinary runs.
    let resp = http
        .post(format!("{}/v1/infer", node.url))
        .json(&json!({"model": "example/mnist-mlp", "input": mlp_input(1)}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
}

const PRICE: u64 = 1000;
const EVIL_HOST: &str = "evil.example:99999/../x";

/// The resource named by a 402 answer: the v2 `PAYMENT-REQUIRED` header's and the v1 body's.
fn resources_of_402(resp: Response) -> (String, String) {
    assert_eq!(resp.status(), 402);
    let header = resp.headers()["payment-required"]
        .to_str()
        .unwrap()
        .to_owned();
    let v2: Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(header)
            .unwrap(),
    )
    .unwrap();
    let v1: Value = resp.json().unwrap();
    (
        v2["resource"]["url"].as_str().unwrap().to_owned(),
        v1["accepts"][0]["resource"].as_str().unwrap().to_owned(),
    )
}

/// A paid run (API key) and a 402, both sent with a forged `Host`: the payment box and the
/// requirements name `public_url`/v1/infer.
fn check_resource(node: &Devnet, http: &Client, public_url: &str) {
    let out = node.haca_ok(&["apikey", "create", "--fund", &(3 * PRICE).to_string()]);
    let key = crate::common::last_line(&out);
    let want = format!("{public_url}/v1/infer");
    let resp = http
        .post(format!("{}/v1/infer", node.url))
        .header("host", EVIL_HOST)
        .bearer_auth(&key)
        .json(&json!({"model": "example/mnist-mlp", "input": mlp_input(2)}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let ans: Value = resp.json().unwrap();
    let p = &ans["receipt"]["boxes"]["payment"]["evidence"];
    assert_eq!(p["scheme"], "apikey", "{p}");
    assert_eq!(p["resource"], json!(want), "{p}");

    let resp = http
        .post(format!("{}/v1/infer", node.url))
        .header("host", EVIL_HOST)
        .json(&json!({"model": "example/mnist-mlp", "input": mlp_input(3)}))
        .send()
        .unwrap();
    let (v2, v1) = resources_of_402(resp);
    assert_eq!((v2.as_str(), v1.as_str()), (want.as_str(), want.as_str()));
}

#[test]
fn the_payment_resource_is_the_public_url_whatever_the_host_header_says() {
    let http = Client::new();
    let price = PRICE.to_string();
    // Default: the address the node bound.
    let dir = tempfile::tempdir().unwrap();
    let node = Devnet::start(dir.path(), &["--price-per-request", &price]);
    wait_ready(&http, &node.url);
    check_resource(&node, &http, &node.url);
    drop(node);
    // Behind a proxy: what the operator configured (normalized without a trailing slash).
    let dir = tempfile::tempdir().unwrap();
    let node = Devnet::start(
        dir.path(),
        &[
            "--price-per-request",
            &price,
            "--public-url",
            "https://API.example.com:8443/",
        ],
    );
    wait_ready(&http, &node.url);
    check_resource(&node, &http, "https://api.example.com:8443");
}

#[test]
fn a_public_url_with_a_path_query_or_another_scheme_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (bad, why) in [
        ("http://example.com/base", "path"),
        ("http://example.com/?a=1", "query"),
        ("ftp://example.com", "http or https"),
        ("http://user:pw@example.com", "user"),
        ("http://example.com:99999", "port"),
        ("example.com", "http or https"),
    ] {
        let out = Command::new(BIN)
            .args([
                "devnet",
                "--listen",
                "127.0.0.1:0",
                "--no-llm",
                "--data-dir",
            ])
            .arg(dir.path())
            .args(["--public-url", bad])
            .env("HACA_LOG", "warn")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bad} was accepted");
        assert!(
            err.contains("--public-url") && err.contains(why),
            "{bad}: {err}"
        );
    }
}

/// A field of /proc/PID/status in bytes (`VmRSS`, `VmHWM`).
fn blob_files(data_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(data_dir.join("blobs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

const MB: usize = 1 << 20;

/// Four concurrent 48 MiB uploads: streamed to temporary files in the blob directory,
/// checked from disk; the node's peak RSS grows by far less than one body.
#[test]
fn concurrent_large_uploads_stream_to_disk_not_memory() {
    let dir = tempfile::tempdir().unwrap();
    let node = Devnet::start(dir.path(), &[]);
    let http = Client::new();
    wait_ready(&http, &node.url);
    let pid = node.child.id();
    let before = reset_peak_rss(pid);
    let size = 48 * MB;
    let bodies: Vec<Vec<u8>> = (0..4u8).map(|i| padded_model(size, i + 1)).collect();
    let entries: Vec<Value> = std::thread::scope(|s| {
        let handles: Vec<_> = bodies
            .iter()
            .enumerate()
            .map(|(i, body)| {
                let (http, url) = (http.clone(), node.url.clone());
                s.spawn(move || {
                    let resp = http
                        .post(format!("{url}/v1/hub/models/big/m{i}"))
                        .body(body.clone())
                        .send()
                        .unwrap();
                    assert_eq!(resp.status(), 201);
                    resp.json::<Value>().unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let after = peak_rss(pid);
    eprintln!(
        "4 concurrent uploads of {} MiB: node VmHWM {} MiB -> {} MiB (+{} MiB)",
        size / MB,
        before / MB as u64,
        after / MB as u64,
        after.saturating_sub(before) / MB as u64
    );
    for (entry, body) in entries.iter().zip(&bodies) {
        assert_eq!(
            entry["blob_id"],
            json!(haca_core::BlobId::of(body).to_string()),
            "{entry}"
        );
    }
    let files = blob_files(dir.path());
    assert_eq!(
        files.len(),
        5,
        "the example and four uploads, no leftovers: {files:?}"
    );
    assert!(
        after.saturating_sub(before) < (size / 2) as u64,
        "peak RSS grew by {} MiB for 4 uploads of {} MiB",
        after.saturating_sub(before) / MB as u64,
        size / MB
    );
    // An uploaded model runs.
    let resp = http
        .post(format!("{}/v1/infer", node.url))
        .json(&json!({"model": "big/m0", "input": mlp_input(4)}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
}

/// A large body that is not a model is refused from disk without being held in memory, and
/// a body over the limit is refused while streaming (413 naming the limit); neither leaves
/// a file behind.
#[test]
fn refused_uploads_leave_nothing_behind_in_memory_or_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let limit = 160 * MB;
    let node = Devnet::start(dir.path(), &["--max-upload-bytes", &limit.to_string()]);
    let http = Client::new();
    wait_ready(&http, &node.url);
    let files = blob_files(dir.path());
    let pid = node.child.id();
    let before = reset_peak_rss(pid);
    let junk: Vec<u8> = b"not an onnx model. "
        .iter()
        .copied()
        .cycle()
        .take(120 * MB)
        .collect();
    let resp = http
        .post(format!("{}/v1/hub/models/junk/m", node.url))
        .body(junk.clone())
        .send()
        .unwrap();
    let (status, code, msg) = error_of(resp);
    assert_eq!((status, code.as_str()), (422, "invalid_artifact"), "{msg}");
    let after = peak_rss(pid);
    eprintln!(
        "a refused 120 MiB upload: node VmHWM {} MiB -> {} MiB (+{} MiB)",
        before / MB as u64,
        after / MB as u64,
        after.saturating_sub(before) / MB as u64
    );
    assert!(
        after.saturating_sub(before) < 40 * MB as u64,
        "peak RSS grew by {} MiB for a refused 120 MiB body",
        after.saturating_sub(before) / MB as u64
    );
    assert_eq!(blob_files(dir.path()), files);

    let over: Vec<u8> = junk.iter().copied().cycle().take(limit + MB).collect();
    let resp = http
        .post(format!("{}/v1/hub/models/junk/m", node.url))
        .body(over)
        .send()
        .unwrap();
    let (status, code, msg) = error_of(resp);
    assert_eq!((status, code.as_str()), (413, "body_too_large"), "{msg}");
    assert!(msg.contains(&limit.to_string()), "{msg}");
    let after = peak_rss(pid);
    eprintln!(
        "and a {} MiB upload over the limit: node VmHWM now {} MiB (+{} MiB)",
        (limit + MB) / MB,
        after / MB as u64,
        after.saturating_sub(before) / MB as u64
    );
    assert!(
        after.saturating_sub(before) < 40 * MB as u64,
        "peak RSS grew by {} MiB for a body over the limit",
        after.saturating_sub(before) / MB as u64
    );
    assert_eq!(blob_files(dir.path()), files);
    let resp = http
        .get(format!("{}/v1/hub/history/junk/m", node.url))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 404, "no label was written");
}
