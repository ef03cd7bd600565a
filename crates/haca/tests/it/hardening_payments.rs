//! A charge without a run: a paid call whose run is never stored gives its money back, at
//! once when the run fails, and at the next start when the node died between the charge and
//! the run. Each refund is in the transparency log.

use crate::common::{last_line, wait_ready, Devnet};
use reqwest::blocking::Client;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const PRICE: u64 = 1_000;
const FUNDS: u64 = 5_000;

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// A devnet charging PRICE per call, with one upstream chat provider `up/m` at `port`.
fn paid_devnet(dir: &std::path::Path, port: u16, timeout_s: u64) -> Devnet {
    let spec = format!("name=up,url=http://127.0.0.1:{port}/v1,models=m,timeout={timeout_s}");
    Devnet::start(
        dir,
        &[
            "--price-per-request",
            &PRICE.to_string(),
            "--provider",
            &spec,
        ],
    )
}

fn api_key(node: &Devnet) -> String {
    last_line(&node.haca_ok(&["apikey", "create", "--fund", &FUNDS.to_string()]))
}

fn balance(http: &Client, url: &str, key: &str) -> u64 {
    let me: Value = http
        .get(format!("{url}/v1/apikeys/self"))
        .bearer_auth(key)
        .send()
        .unwrap()
        .json()
        .unwrap();
    me["balance"].as_str().unwrap().parse().unwrap()
}

fn chat(http: &Client, url: &str, key: &str) -> (u16, Value) {
    let r = http
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth(key)
        .json(&json!({"model": "up/m", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

/// The transparency log's `refund` entries.
fn refund_entries(http: &Client, url: &str) -> Vec<Value> {
    let head: Value = http
        .get(format!("{url}/v1/log"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let size = head["size"].as_u64().unwrap();
    (0..size)
        .map(|i| {
            http.get(format!("{url}/v1/log/entries/{i}"))
                .send()
                .unwrap()
                .json::<Value>()
                .unwrap()
        })
        .filter(|e| e["kind"] == "refund")
        .collect()
}

#[test]
fn a_paid_call_whose_routes_all_fail_is_refunded() {
    let dir = tempfile::tempdir().unwrap();
    // A port nobody listens on: the only route fails at once.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let node = paid_devnet(dir.path(), port, 5);
    let http = client();
    wait_ready(&http, &node.url);
    let key = api_key(&node);
    let (status, v) = chat(&http, &node.url, &key);
    assert_eq!(status, 502, "{v}");
    assert_eq!(v["error"]["code"], "upstream_failed", "{v}");
    // The charge went back: no run was stored for it.
    assert_eq!(balance(&http, &node.url, &key), FUNDS);
    let refunds = refund_entries(&http, &node.url);
    assert_eq!(refunds.len(), 1, "{refunds:?}");
    assert_eq!(refunds[0]["data"]["amount"], PRICE.to_string());
    assert!(
        refunds[0]["data"]["reason"]
            .as_str()
            .unwrap()
            .contains("no route served the call"),
        "{refunds:?}"
    );
}

#[test]
fn a_paid_call_whose_client_hangs_up_is_refunded_at_once() {
    let dir = tempfile::tempdir().unwrap();
    // An upstream that accepts and never answers: the call waits until its client leaves.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let node = paid_devnet(dir.path(), port, 120);
    let http = client();
    wait_ready(&http, &node.url);
    let key = api_key(&node);
    let gone = Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap()
        .post(format!("{}/v1/chat/completions", node.url))
        .bearer_auth(&key)
        .json(&json!({"model": "up/m", "messages": [{"role": "user", "content": "hi"}]}))
        .send();
    assert!(gone.is_err(), "the call should still be waiting: {gone:?}");
    // The node dropped the call with its client: the charge comes back without a restart.
    // The balance is credited first and the log entry appended just after, so wait for both.
    let deadline = Instant::now() + Duration::from_secs(10);
    let refunds = loop {
        let refunds = refund_entries(&http, &node.url);
        if balance(&http, &node.url, &key) == FUNDS && !refunds.is_empty() {
            break refunds;
        }
        assert!(
            Instant::now() < deadline,
            "the charge was not refunded and logged: {refunds:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(refunds.len(), 1, "{refunds:?}");
    drop(silent);
}

#[test]
fn a_charge_cut_off_by_kill_9_is_refunded_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    // An upstream that accepts and never answers: the call hangs after its charge.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let node = paid_devnet(dir.path(), port, 120);
    let http = client();
    wait_ready(&http, &node.url);
    let key = api_key(&node);
    let url = node.url.clone();
    let (k, u) = (key.clone(), url.clone());
    let hanging = std::thread::spawn(move || {
        // The node dies under this request: whatever it answers, no run is stored.
        let _ = Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap()
            .post(format!("{u}/v1/chat/completions"))
            .bearer_auth(&k)
            .json(&json!({"model": "up/m", "messages": [{"role": "user", "content": "hi"}]}))
            .send();
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while balance(&http, &url, &key) == FUNDS {
        assert!(Instant::now() < deadline, "the call was never charged");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(balance(&http, &url, &key), FUNDS - PRICE);
    node.kill9();
    hanging.join().unwrap();

    let node = paid_devnet(dir.path(), port, 120);
    wait_ready(&http, &node.url);
    assert_eq!(balance(&http, &node.url, &key), FUNDS, "refunded at start");
    let refunds = refund_entries(&http, &node.url);
    assert_eq!(refunds.len(), 1, "{refunds:?}");
    assert!(
        refunds[0]["data"]["reason"]
            .as_str()
            .unwrap()
            .contains("node stopped"),
        "{refunds:?}"
    );
    // A second start finds nothing more to refund.
    node.kill9();
    let node = paid_devnet(dir.path(), port, 120);
    wait_ready(&http, &node.url);
    assert_eq!(balance(&http, &node.url, &key), FUNDS);
    assert_eq!(refund_entries(&http, &node.url).len(), 1);
    drop(silent);
}
