//! Outputs are not public: a run's output is read by who paid for it (its API key, or its
//! x402 payer's signature), by reviewers of a case it is in, and by the operator; its receipt
//! stays public. The node is a devnet without loopback rights (`--no-loopback-admin`), so a
//! client on this machine is treated as one from anywhere else.

use crate::common::{wait_ready, Devnet};
use haca_pay::proof::sign_read;
use haca_pay::PrivateKeySigner;
use reqwest::blocking::{Client, RequestBuilder};
use serde_json::{json, Value};

const PRICE: u64 = 1_000;

fn status_of(r: RequestBuilder) -> (u16, Value) {
    let r = r.send().unwrap();
    let s = r.status().as_u16();
    (s, r.json().unwrap_or(Value::Null))
}

/// A proof of `signer`'s address for a GET of `path`, signed now.
fn proved(http: &Client, url: &str, path: &str, signer: &PrivateKeySigner) -> RequestBuilder {
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    http.get(format!("{url}{path}"))
        .header("x-haca-proof", sign_read(signer, path, at))
        .header("x-haca-proof-time", at.to_string())
}

#[test]
fn outputs_are_read_by_their_payer_reviewers_of_their_case_and_the_operator() {
    let dir = tempfile::tempdir().unwrap();
    let node = Devnet::start(
        dir.path(),
        &[
            "--no-loopback-admin",
            "--no-enclave",
            "--price-per-request",
            &PRICE.to_string(),
        ],
    );
    let url = node.url.clone();
    let http = Client::new();
    wait_ready(&http, &url);
    // The store is the owner's alone, like the keys.
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("haca.db"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "haca.db is {mode:o}");
    }
    let op = std::fs::read_to_string(dir.path().join("operator.token"))
        .unwrap()
        .trim()
        .to_owned();
    // Without loopback rights, admin actions need the token.
    let (s, _) = status_of(
        http.post(format!("{url}/v1/apikeys"))
            .json(&json!({"fund": "10000"})),
    );
    assert_eq!(s, 401);
    let new_key = || {
        let (s, v) = status_of(
            http.post(format!("{url}/v1/apikeys"))
                .bearer_auth(&op)
                .json(&json!({"fund": "10000"})),
        );
        assert_eq!(s, 200, "{v}");
        v["key"].as_str().unwrap().to_owned()
    };
    let (key_a, key_b) = (new_key(), new_key());
    let input = std::fs::read_to_string(dir.path().join("example-input.json")).unwrap();
    let body = json!({"model": "example/mnist-mlp", "input": serde_json::from_str::<Value>(&input).unwrap()});
    let (s, by_key) = status_of(
        http.post(format!("{url}/v1/infer"))
            .bearer_auth(&key_a)
            .json(&body),
    );
    assert_eq!(s, 200, "{by_key}");
    let run_a = by_key["run_id"].as_str().unwrap().to_owned();

    // An x402 payer: a wallet funded by the operator's faucet pays with `haca infer`.
    let home = dir.path().join("wallet-home");
    std::fs::create_dir_all(&home).unwrap();
    let wallet = PrivateKeySigner::random();
    std::fs::write(
        home.join("wallet.key"),
        format!("0x{}", hex::encode(wallet.to_bytes())),
    )
    .unwrap();
    let address = wallet.address().to_checksum(None);
    let (s, v) = status_of(
        http.post(format!("{url}/v1/x402/faucet"))
            .bearer_auth(&op)
            .json(&json!({"address": address, "amount": "100000"})),
    );
    assert_eq!(s, 200, "{v}");
    let input_file = dir.path().join("example-input.json");
    let out = node.haca_env(
        &[
            "infer",
            "example/mnist-mlp",
            "--input",
            input_file.to_str().unwrap(),
            "--json",
        ],
        &[("HACA_HOME", home.as_path())],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let paid: Value = serde_json::from_slice(&out.stdout).unwrap();
    let run_w = paid["run_id"].as_str().unwrap().to_owned();

    // Anyone: receipts yes, outputs and listings no.
    for run in [&run_a, &run_w] {
        let (s, e) = status_of(http.get(format!("{url}/v1/runs/{run}")));
        assert_eq!(s, 401, "{e}");
        assert!(
            e["error"]["message"].as_str().unwrap().contains("/receipt"),
            "{e}"
        );
        let (s, _) = status_of(http.get(format!("{url}/v1/runs/{run}/receipt")));
        assert_eq!(s, 200);
    }
    let (s, _) = status_of(http.get(format!("{url}/v1/runs?limit=1000")));
    assert_eq!(s, 401);
    let (s, _) = status_of(http.get(format!("{url}/v1/x402/balance/{address}")));
    assert_eq!(s, 401);

    // The payer, by its key: its own run only.
    let (s, v) = status_of(
        http.get(format!("{url}/v1/runs/{run_a}"))
            .bearer_auth(&key_a),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["output"], by_key["output"]);
    let (s, _) = status_of(
        http.get(format!("{url}/v1/runs/{run_a}"))
            .bearer_auth(&key_b),
    );
    assert_eq!(s, 403);
    let (s, _) = status_of(
        http.get(format!("{url}/v1/runs/{run_w}"))
            .bearer_auth(&key_a),
    );
    assert_eq!(s, 403);

    // The x402 payer, by a signature over the path and the time.
    let path_w = format!("/v1/runs/{run_w}");
    let (s, v) = status_of(proved(&http, &url, &path_w, &wallet));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["output"], paid["output"]);
    let (s, _) = status_of(proved(&http, &url, &path_w, &PrivateKeySigner::random()));
    assert_eq!(s, 403);
    // A proof for one path does not open another; an old proof is refused.
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (s, _) = status_of(
        http.get(format!("{url}/v1/runs/{run_a}"))
            .header("x-haca-proof", sign_read(&wallet, &path_w, at))
            .header("x-haca-proof-time", at.to_string()),
    );
    assert_eq!(s, 403);
    let (s, e) = status_of(
        http.get(format!("{url}{path_w}"))
            .header("x-haca-proof", sign_read(&wallet, &path_w, at - 3600))
            .header("x-haca-proof-time", (at - 3600).to_string()),
    );
    assert_eq!(s, 401, "{e}");
    let (s, v) = status_of(proved(
        &http,
        &url,
        &format!("/v1/x402/balance/{address}"),
        &wallet,
    ));
    assert_eq!(s, 200, "{v}");

    // A viewer reads the runs of a case, and no other.
    let (s, viewer) = status_of(
        http.post(format!("{url}/v1/review/tokens"))
            .bearer_auth(&op)
            .json(&json!({"role": "viewer"})),
    );
    assert_eq!(s, 201, "{viewer}");
    let viewer = viewer["token"].as_str().unwrap().to_owned();
    let (s, _) = status_of(
        http.post(format!("{url}/v1/cases"))
            .bearer_auth(&op)
            .json(&json!({"runs": [run_a]})),
    );
    assert!(s == 200 || s == 201, "{s}");
    let (s, _) = status_of(
        http.get(format!("{url}/v1/runs/{run_a}"))
            .bearer_auth(&viewer),
    );
    assert_eq!(s, 200);
    let (s, _) = status_of(
        http.get(format!("{url}/v1/runs/{run_w}"))
            .bearer_auth(&viewer),
    );
    assert_eq!(s, 403);

    // The operator reads and lists everything.
    for run in [&run_a, &run_w] {
        let (s, _) = status_of(http.get(format!("{url}/v1/runs/{run}")).bearer_auth(&op));
        assert_eq!(s, 200);
    }
    let (s, v) = status_of(
        http.get(format!("{url}/v1/runs?limit=1000"))
            .bearer_auth(&op),
    );
    assert_eq!(s, 200);
    assert_eq!(v["runs"].as_array().unwrap().len(), 2, "{v}");
}
