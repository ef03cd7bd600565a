//! Live case views are shared: every watcher of a case gets the one summary the node reads
//! per change, and a token holds a bounded number of views open (429 beyond).

use crate::common::{wait_ready, Devnet};
use reqwest::blocking::Client;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// The most views one token may hold (`haca::review::MAX_WATCHERS_PER_TOKEN`).
const PER_TOKEN: usize = 16;

/// Opens `GET /v1/cases/{case}/events` on a raw connection: its status and the reader.
fn open_view(url: &str, case: &str, token: &str) -> (u16, BufReader<TcpStream>) {
    let addr = url.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET /v1/cases/{case}/events HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    let mut r = BufReader::new(s);
    let mut status = String::new();
    r.read_line(&mut status).unwrap();
    let code = status.split_whitespace().nth(1).unwrap().parse().unwrap();
    // The rest of the head.
    loop {
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        if l.trim().is_empty() {
            break;
        }
    }
    (code, r)
}

/// The next `case` event's data on an open view.
fn next_case_event(r: &mut BufReader<TcpStream>) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut in_case = false;
    loop {
        assert!(Instant::now() < deadline, "no case event within 30 s");
        let mut l = String::new();
        if r.read_line(&mut l).unwrap() == 0 {
            panic!("the view closed");
        }
        // Chunked framing lines and keep-alive comments are not events.
        if l.starts_with("event: case") {
            in_case = true;
        } else if in_case {
            if let Some(d) = l.strip_prefix("data: ") {
                return serde_json::from_str(d.trim()).unwrap();
            }
        }
    }
}

#[test]
fn a_case_is_read_once_for_all_its_watchers_and_views_per_token_are_capped() {
    let dir = tempfile::tempdir().unwrap();
    let node = Devnet::start(dir.path(), &["--no-enclave"]);
    let url = node.url.clone();
    let http = Client::new();
    wait_ready(&http, &url);
    let operator = std::fs::read_to_string(dir.path().join("operator.token"))
        .unwrap()
        .trim()
        .to_owned();
    let viewer: Value = http
        .post(format!("{url}/v1/review/tokens"))
        .bearer_auth(&operator)
        .json(&json!({"role": "viewer"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let viewer = viewer["token"].as_str().unwrap().to_owned();
    let input: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("example-input.json")).unwrap())
            .unwrap();
    let run: Value = http
        .post(format!("{url}/v1/infer"))
        .json(&json!({"model": "example/mnist-mlp", "input": input}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let case: Value = http
        .post(format!("{url}/v1/cases"))
        .bearer_auth(&operator)
        .json(&json!({"runs": [run["run_id"]]}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let case = case["id"].as_str().unwrap().to_owned();

    let mut views: Vec<_> = (0..PER_TOKEN)
        .map(|i| {
            let (status, r) = open_view(&url, &case, &viewer);
            assert_eq!(status, 200, "view {i}");
            r
        })
        .collect();
    // One more with the same token is refused, by name; another token is not affected.
    let (status, _) = open_view(&url, &case, &viewer);
    assert_eq!(status, 429);
    let (status, mut by_operator) = open_view(&url, &case, &operator);
    assert_eq!(status, 200);
    // A view closed frees its slot.
    drop(views.pop());
    std::thread::sleep(Duration::from_millis(300));
    let (status, again) = open_view(&url, &case, &viewer);
    assert_eq!(status, 200);
    views.push(again);

    // A decision: every watcher hears the one summary, with the new state.
    let decided = http
        .post(format!("{url}/v1/cases/{case}/decision"))
        .bearer_auth(&operator)
        .json(&json!({"action": "override", "reason": "test of live views"}))
        .send()
        .unwrap();
    assert_eq!(decided.status(), 200);
    let mut snapshots = std::collections::BTreeSet::new();
    for r in views.iter_mut().chain(std::iter::once(&mut by_operator)) {
        let mut e = next_case_event(r);
        // A block may have changed the summary first; the decision's follows.
        while e["decisions"] != 1 {
            e = next_case_event(r);
        }
        assert_eq!(e["state"], "CLEARED", "{e}");
        snapshots.insert(e["snapshot"].as_str().unwrap().to_owned());
    }
    assert_eq!(snapshots.len(), 1, "one summary for all: {snapshots:?}");
}
