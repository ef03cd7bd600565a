//! The review API against a real devnet over HTTP: tokens and roles, cases over stored runs,
//! a clear refused before settlement with its missing claims, an override that stays marked,
//! stale and repeated decisions, the decision's snapshot in the transparency log, queue
//! filters, a label that moved to another artifact, and the signed webhook of a clearance
//! checked (and a forged one refused) on the receiving side.

use crate::common::{self, mlp_input, wait_ready, Devnet};
use reqwest::blocking::{Client, Response};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A received POST: its headers (names lowercased) and body.
type Delivery = (HashMap<String, String>, Vec<u8>);

/// A webhook receiver on loopback: each POST's headers and body arrive on the channel.
fn receiver() -> (String, mpsc::Receiver<Delivery>) {
    receiver_on(TcpListener::bind("127.0.0.1:0").unwrap())
}

fn receiver_on(listener: TcpListener) -> (String, mpsc::Receiver<Delivery>) {
    let url = format!("http://{}/hooks/loans", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut headers = HashMap::new();
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            loop {
                line.clear();
                reader.read_line(&mut line).unwrap();
                let l = line.trim_end();
                if l.is_empty() {
                    break;
                }
                if let Some((k, v)) = l.split_once(':') {
                    headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
                }
            }
            let n: usize = headers["content-length"].parse().unwrap();
            let mut body = vec![0; n];
            reader.read_exact(&mut body).unwrap();
            stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .unwrap();
            let _ = tx.send((headers, body));
        }
    });
    (url, rx)
}

fn error_code(r: Response) -> (u16, Value) {
    let status = r.status().as_u16();
    (status, r.json().unwrap())
}

#[test]
fn cases_are_gated_by_claims_and_decisions_are_recorded() {
    let (hook_url, hooks) = receiver();
    let dir = tempfile::tempdir().unwrap();
    let class = format!("name=loans,claims=execution.signed;run.settled,webhook={hook_url}");
    let node = Devnet::start(
        dir.path(),
        &[
            "--round-interval-ms",
            "8000",
            "--no-enclave",
            "--case-class",
            &class,
        ],
    );
    let url = node.url.clone();
    let http = Client::new();
    wait_ready(&http, &url);

    // The panel's page is public; the API is not.
    let page = http.get(format!("{url}/")).send().unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().unwrap().contains("haca review panel"));
    let (s, e) = error_code(http.get(format!("{url}/v1/cases")).send().unwrap());
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (401, Some("unauthorized")),
        "{e}"
    );
    let (s, _) = error_code(
        http.get(format!("{url}/v1/cases"))
            .bearer_auth("rt_nope")
            .send()
            .unwrap(),
    );
    assert_eq!(s, 401);

    let reviewer = common::last_line(&node.haca_ok(&["token", "create", "--role", "reviewer"]));
    let viewer_out = node.haca_ok(&["token", "create", "--role", "viewer", "--json"]);
    let viewer_json: Value = serde_json::from_slice(&viewer_out.stdout).unwrap();
    let viewer = viewer_json["token"].as_str().unwrap().to_owned();
    let bad_role = node.haca(&["token", "create", "--role", "admin"]);
    assert!(!bad_role.status.success());

    // A run of the label, then the label moved to a different artifact (its transaction
    // closes a round), then the two runs the cases hold.
    let infer = |seed| -> Value {
        http.post(format!("{url}/v1/infer"))
            .json(&json!({"model": "example/mnist-mlp", "input": mlp_input(seed)}))
            .send()
            .unwrap()
            .json()
            .unwrap()
    };
    let blob_of = |v: &Value| {
        v["receipt"]["boxes"]["artifact"]["evidence"]["blob_id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let blob1 = blob_of(&infer(1));
    let mut other = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures/models/mnist-mlp.onnx"),
    )
    .unwrap();
    // One weight byte changed: still a valid model, another blob id.
    let at = other.len() / 2;
    other[at] ^= 0x01;
    let moved = http
        .post(format!("{url}/v1/hub/models/example/mnist-mlp"))
        .body(other)
        .send()
        .unwrap();
    assert_eq!(moved.status(), 201, "{}", moved.text().unwrap());
    let (second, third) = (infer(2), infer(3));
    let runs = [
        second["run_id"].as_str().unwrap(),
        third["run_id"].as_str().unwrap(),
    ];
    let blob2 = blob_of(&second);
    assert_ne!(blob1, blob2);

    let open = |token: &str, body: Value| {
        http.post(format!("{url}/v1/cases"))
            .bearer_auth(token)
            .json(&body)
            .send()
            .unwrap()
    };
    // Bad requests name what is wrong.
    let unknown_run = "ab".repeat(32);
    let (s, e) = error_code(open(&reviewer, json!({"runs": [runs[0], unknown_run]})));
    assert_eq!(
        (s, e["error"]["code"].as_str(), e["error"]["param"].as_str()),
        (404, Some("unknown_run"), Some("runs[1]")),
        "{e}"
    );
    let (s, e) = error_code(open(&reviewer, json!({"runs": ["xyz"]})));
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (400, Some("invalid_run_id")),
        "{e}"
    );
    let (s, e) = error_code(open(&reviewer, json!({"runs": []})));
    assert_eq!(s, 400, "{e}");
    let (s, e) = error_code(open(
        &reviewer,
        json!({"runs": [runs[0]], "policy": "nope"}),
    ));
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (404, Some("unknown_policy")),
        "{e}"
    );
    let (s, e) = error_code(open(&reviewer, json!({"runs": [runs[0]], "colour": 1})));
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (400, Some("invalid_field")),
        "{e}"
    );
    let (s, _) = error_code(open(&viewer, json!({"runs": [runs[0]]})));
    assert_eq!(s, 403);

    let case: Value = open(&reviewer, json!({"runs": runs, "policy": "loans"}))
        .json()
        .unwrap();
    assert_eq!(case["state"], "PROVISIONAL", "{case}");
    let case_id = case["id"].as_str().unwrap().to_owned();
    let plain: Value = open(&reviewer, json!({"runs": [runs[0]]})).json().unwrap();
    let plain_id = plain["id"].as_str().unwrap().to_owned();

    let get = |id: &str, token: &str| -> Value {
        http.get(format!("{url}/v1/cases/{id}"))
            .bearer_auth(token)
            .send()
            .unwrap()
            .json()
            .unwrap()
    };
    let decide = |id: &str, token: &str, body: Value| {
        http.post(format!("{url}/v1/cases/{id}/decision"))
            .bearer_auth(token)
            .json(&body)
            .send()
            .unwrap()
    };

    let view = get(&case_id, &viewer);
    assert_eq!(view["state"], "PROVISIONAL");
    assert_eq!(view["runs"].as_array().unwrap().len(), 2);
    let drift = &view["continuity"]["label_drift"];
    assert_eq!(drift.as_array().unwrap().len(), 1, "{drift}");
    assert_eq!(drift[0]["label"], "example/mnist-mlp");
    let settlement_panel = view["boxes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["box"] == "settlement")
        .unwrap();
    assert_eq!(
        settlement_panel["statuses"]["absent"], 2,
        "{settlement_panel}"
    );
    let (s, _) = error_code(
        http.get(format!("{url}/v1/cases/case_0000"))
            .bearer_auth(&viewer)
            .send()
            .unwrap(),
    );
    assert_eq!(s, 404);

    // Before settlement: a clear is refused with the missing claim; a viewer cannot decide;
    // an override needs a reason.
    let (s, e) = error_code(decide(&case_id, &reviewer, json!({"action": "clear"})));
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (409, Some("not_ready")),
        "{e}"
    );
    assert_eq!(e["error"]["missing_claims"], json!(["run.settled"]));
    let (s, _) = error_code(decide(&case_id, &viewer, json!({"action": "clear"})));
    assert_eq!(s, 403);
    let (s, e) = error_code(decide(&plain_id, &reviewer, json!({"action": "override"})));
    assert_eq!(
        (s, e["error"]["param"].as_str()),
        (400, Some("reason")),
        "{e}"
    );
    let (s, e) = error_code(decide(&plain_id, &reviewer, json!({"action": "approve"})));
    assert_eq!(
        (s, e["error"]["param"].as_str()),
        (400, Some("action")),
        "{e}"
    );
    let over: Value = decide(
        &plain_id,
        &reviewer,
        json!({"action": "override", "reason": "customer waiting; settlement is slow"}),
    )
    .json()
    .unwrap();
    assert_eq!(
        (over["state"].as_str(), over["override"].as_bool()),
        (Some("CLEARED"), Some(true)),
        "{over}"
    );
    let plain_view = get(&plain_id, &viewer);
    assert_eq!(plain_view["decisions"][0]["override"], true);
    assert_eq!(
        plain_view["decisions"][0]["reason"],
        "customer waiting; settlement is slow"
    );
    assert_eq!(
        plain_view["decisions"][0]["snapshot"]["runs"][0]["claims"]["run.settled"],
        "not_present"
    );

    // Settlement lands: READY. A decision on an older snapshot is stale.
    let t = Instant::now();
    let ready = loop {
        let v = get(&case_id, &viewer);
        if v["state"] == "READY" {
            break v;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the case never became READY: {}",
            v["missing"]
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    let old = view["snapshot"]["id"].as_str().unwrap();
    let (s, e) = error_code(decide(
        &case_id,
        &reviewer,
        json!({"action": "clear", "seen": old}),
    ));
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (409, Some("stale_decision")),
        "{e}"
    );
    let seen = ready["snapshot"]["id"].as_str().unwrap();
    let cleared: Value = decide(
        &case_id,
        &reviewer,
        json!({"action": "clear", "seen": seen}),
    )
    .json()
    .unwrap();
    assert_eq!(cleared["state"], "CLEARED", "{cleared}");
    let (s, e) = error_code(decide(&case_id, &reviewer, json!({"action": "reject"})));
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (409, Some("already_decided")),
        "{e}"
    );

    // The decision is in the transparency log with the snapshot it read.
    let index = cleared["log_index"].as_u64().unwrap();
    let entry: Value = http
        .get(format!("{url}/v1/log/entries/{index}"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(entry["kind"], "decision");
    let data = &entry["data"];
    assert_eq!(data["case"], case_id.as_str(), "{entry}");
    assert_eq!(data["snapshot"]["id"], seen);
    assert!(data["snapshot"]["log_size"].as_u64().unwrap() <= index);

    // The queue and its filters.
    let queue = |q: &str| -> Vec<String> {
        let v: Value = http
            .get(format!("{url}/v1/cases?{q}"))
            .bearer_auth(&viewer)
            .send()
            .unwrap()
            .json()
            .unwrap();
        v["cases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert!(queue("state=CLEARED").contains(&case_id));
    assert!(!queue("state=READY").contains(&case_id));
    assert!(queue("policy=loans").contains(&case_id));
    assert!(!queue("policy=default").contains(&case_id));
    assert!(queue(&format!("artifact={blob2}")).contains(&case_id));
    assert!(!queue(&format!("artifact={blob1}")).contains(&case_id));
    let (s, e) = error_code(
        http.get(format!("{url}/v1/cases?state=DONE"))
            .bearer_auth(&viewer)
            .send()
            .unwrap(),
    );
    assert_eq!((s, e["error"]["param"].as_str()), (400, Some("state")));

    // The clearance's webhook, signed by the node: it verifies, and a forgery does not.
    let (headers, body) = hooks
        .recv_timeout(Duration::from_secs(30))
        .expect("a webhook");
    let event: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (event["type"].as_str(), event["case"].as_str()),
        (Some("case.cleared"), Some(case_id.as_str()))
    );
    let node_info: Value = http
        .get(format!("{url}/v1/node"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let signer: haca_core::NodeId = node_info["node_id"].as_str().unwrap().parse().unwrap();
    let now = haca::now_ms() / 1000;
    let check = |body: &[u8], sig: &str| {
        haca_review::webhook::verify(
            &signer,
            headers.get("webhook-id").map(String::as_str),
            headers.get("webhook-timestamp").map(String::as_str),
            Some(sig),
            body,
            now,
            haca_review::webhook::DEFAULT_TOLERANCE_S,
        )
    };
    assert_eq!(check(&body, &headers["webhook-signature"]), Ok(()));
    let forged = String::from_utf8(body.clone())
        .unwrap()
        .replace("loans", "loan5");
    assert!(matches!(
        check(forged.as_bytes(), &headers["webhook-signature"]),
        Err(haca_review::webhook::WebhookError::BadSignature(_))
    ));
    assert!(
        hooks.recv_timeout(Duration::from_millis(500)).is_err(),
        "the override of a default-class case sends nothing"
    );

    // A revoked token is refused.
    let id = viewer_json["id"].as_str().unwrap();
    node.haca_ok(&["token", "revoke", id]);
    let (s, e) = error_code(
        http.get(format!("{url}/v1/cases"))
            .bearer_auth(&viewer)
            .send()
            .unwrap(),
    );
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (401, Some("token_revoked")),
        "{e}"
    );
}

#[test]
fn a_clearance_webhook_pending_at_a_crash_is_sent_after_restart() {
    // A port nobody listens on yet: the first attempts fail.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let class =
        format!("name=fast,claims=execution.signed,webhook=http://127.0.0.1:{port}/hooks/loans");
    let args = ["--no-enclave", "--case-class", class.as_str()];
    let dir = tempfile::tempdir().unwrap();
    let node = Devnet::start(dir.path(), &args);
    let http = Client::new();
    wait_ready(&http, &node.url);
    let token = common::last_line(&node.haca_ok(&["token", "create", "--role", "reviewer"]));
    let run: Value = http
        .post(format!("{}/v1/infer", node.url))
        .json(&json!({"model": "example/mnist-mlp", "input": mlp_input(5)}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let case: Value = http
        .post(format!("{}/v1/cases", node.url))
        .bearer_auth(&token)
        .json(&json!({"runs": [run["run_id"]], "policy": "fast"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(case["state"], "READY", "{case}");
    let case_id = case["id"].as_str().unwrap().to_owned();
    let cleared: Value = http
        .post(format!("{}/v1/cases/{case_id}/decision", node.url))
        .bearer_auth(&token)
        .json(&json!({"action": "clear"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(cleared["state"], "CLEARED", "{cleared}");
    let view = |url: &str| -> Value {
        http.get(format!("{url}/v1/cases/{case_id}"))
            .bearer_auth(&token)
            .send()
            .unwrap()
            .json()
            .unwrap()
    };
    let t = Instant::now();
    loop {
        let v = view(&node.url);
        if v["webhooks"][0]["attempts"].as_u64().unwrap_or(0) >= 1 {
            assert_eq!(v["webhooks"][0]["status"], "pending", "{}", v["webhooks"]);
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "no attempt recorded");
        std::thread::sleep(Duration::from_millis(100));
    }
    node.kill9();

    // The receiver comes up, and so does the node: the pending delivery goes out.
    let (_, hooks) = receiver_on(TcpListener::bind(("127.0.0.1", port)).unwrap());
    let node = Devnet::start(dir.path(), &args);
    let (headers, body) = hooks
        .recv_timeout(Duration::from_secs(30))
        .expect("the webhook after restart");
    let event: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(event["case"], case_id.as_str());
    let info: Value = http
        .get(format!("{}/v1/node", node.url))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let signer: haca_core::NodeId = info["node_id"].as_str().unwrap().parse().unwrap();
    haca_review::webhook::verify(
        &signer,
        headers.get("webhook-id").map(String::as_str),
        headers.get("webhook-timestamp").map(String::as_str),
        headers.get("webhook-signature").map(String::as_str),
        &body,
        haca::now_ms() / 1000,
        haca_review::webhook::DEFAULT_TOLERANCE_S,
    )
    .expect("signed by the node");
    assert_eq!(headers["webhook-id"], event["id"].as_str().unwrap());
    let t = Instant::now();
    while view(&node.url)["webhooks"][0]["status"] != "delivered" {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "delivery not recorded"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
