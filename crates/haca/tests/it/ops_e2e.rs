//! Running haca as an operator would (issue 23): a node from a TOML config file on a real
//! network's configuration (Base Sepolia), settling through another haca node as its x402
//! facilitator; bad config keys refused by name.

use crate::common::{self, mlp_input, wait_ready, Devnet};
use haca::cli::config::{FileConfig, EXAMPLE};
use haca_pay::types::{PAYMENT_REQUIRED_HEADER, PAYMENT_SIGNATURE_HEADER};
use haca_pay::{
    build_payment, decode_payment_required_header, encode_header, select_requirement,
    AnyPaymentRequired, PayPolicy, PrivateKeySigner, B256,
};
use reqwest::blocking::Client;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A `haca` server process (killed when dropped) and the URL it printed.
pub struct Proc {
    pub child: Child,
    pub url: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `haca ARGS` with `env`, waiting for its `url:` line.
pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> Proc {
    let mut cmd = Command::new(common::BIN);
    cmd.args(args)
        .env("HACA_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn haca");
    let url = common::printed(&mut child, "url:", Duration::from_secs(60))
        .expect("the node printed its url within 60 s");
    Proc { child, url }
}

/// The example config, made to run here: loopback, this data dir, no models to load.
pub fn runnable_example(data_dir: &Path) -> FileConfig {
    let mut cfg = FileConfig::parse(EXAMPLE, Path::new("haca.toml")).unwrap();
    cfg.node.listen = Some("127.0.0.1:0".parse().unwrap());
    cfg.node.public_url = None;
    cfg.node.data_dir = Some(data_dir.to_owned());
    cfg.node.llm_model = None;
    cfg.node.no_llm = Some(true);
    cfg.node.embed_model = None;
    cfg.node.provider = None;
    cfg.node.data_allow = None;
    cfg.log.filter = Some("warn".into());
    cfg
}

/// Uploads the example model to a `haca node` with its operator token.
pub fn upload_example(http: &Client, url: &str, data_dir: &Path) {
    let token = std::fs::read_to_string(data_dir.join("operator.token")).unwrap();
    let resp = http
        .post(format!("{url}/v1/hub/models/example/mnist-mlp"))
        .bearer_auth(token.trim())
        .body(haca::devnet::EXAMPLE_MODEL)
        .send()
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.text().unwrap());
}

/// The issue's facilitator test: a gateway configured by file for Base Sepolia (USDC's
/// address and EIP-712 domain built in) advertises exactly that in `/supported` and its
/// 402s, and settles through another haca node acting as the x402 facilitator on its own
/// ledger (no chain). A variable beats the file; the file beats a flag's default.
#[test]
fn a_node_configured_by_file_for_base_sepolia_settles_through_a_haca_facilitator() {
    let (dir_f, dir_g) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let http = Client::new();
    let fac = Devnet::start(
        dir_f.path(),
        &[
            "--price-per-request",
            "1000",
            "--network",
            "eip155:84532",
            "--no-enclave",
        ],
    );
    wait_ready(&http, &fac.url);

    let data = dir_g.path().join("data");
    let mut cfg = runnable_example(&data);
    cfg.payments.facilitator = Some(format!("{}/v1/x402", fac.url));
    cfg.limits = Default::default();
    let file = dir_g.path().join("haca.toml");
    std::fs::write(&file, cfg.to_toml()).unwrap();
    let gw = spawn(
        &["node", "--config", file.to_str().unwrap()],
        &[("HACA_MAX_TIMEOUT_SECS", "45")],
    );
    upload_example(&http, &gw.url, &data);

    // /supported: exact on Base Sepolia, nothing else.
    let sup: Value = http
        .get(format!("{}/v1/x402/supported", gw.url))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let nets: Vec<_> = sup["kinds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["scheme"].clone(), k["network"].clone()))
        .collect();
    assert!(!nets.is_empty());
    assert!(
        nets.iter()
            .all(|(s, n)| s == "exact" && n == "eip155:84532"),
        "{sup}"
    );

    // The 402: USDC on Base Sepolia, its domain, the file's payee and model price, the
    // variable's timeout over the file's.
    let body = json!({"model": "example/mnist-mlp", "input": mlp_input(3)});
    let resp = http
        .post(format!("{}/v1/infer", gw.url))
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 402);
    let required =
        decode_payment_required_header(resp.headers()[PAYMENT_REQUIRED_HEADER].to_str().unwrap())
            .unwrap();
    let AnyPaymentRequired::V2(v2) = &required else {
        panic!("a v2 header")
    };
    let req = serde_json::to_value(&v2.accepts[0]).unwrap();
    assert_eq!(req["network"], "eip155:84532", "{req}");
    assert_eq!(
        req["asset"].as_str().unwrap().to_lowercase(),
        "0x036cbd53842c5426634e7929541ec2318f3dcf7e",
        "{req}"
    );
    assert_eq!(req["extra"]["name"], "USDC", "{req}");
    assert_eq!(req["extra"]["version"], "2", "{req}");
    assert_eq!(req["amount"], "2500", "{req}");
    assert_eq!(req["maxTimeoutSeconds"], 45, "{req}");
    assert_eq!(
        req["payTo"].as_str().unwrap().to_lowercase(),
        "0x70997970c51812dc3a010c7d01b50e0d17dc79c8"
    );

    // Funded on the facilitator's ledger; paid to the gateway; settled by the facilitator.
    let wallet = PrivateKeySigner::random();
    let resp = http
        .post(format!("{}/v1/x402/faucet", fac.url))
        .json(&json!({"address": wallet.address().to_checksum(None), "amount": "6000"}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().unwrap());
    let sel = select_requirement(&required, &PayPolicy::default()).unwrap();
    let payment = build_payment(
        &sel,
        &wallet,
        common::now_s(),
        B256::from(rand::random::<[u8; 32]>()),
    );
    let resp = http
        .post(format!("{}/v1/infer", gw.url))
        .header(PAYMENT_SIGNATURE_HEADER, encode_header(&payment))
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().unwrap());
    let ans: Value = resp.json().unwrap();
    let pay = &ans["receipt"]["boxes"]["payment"]["evidence"];
    assert_eq!(pay["network"], "eip155:84532", "{pay}");
    assert_eq!(pay["amount"], "2500", "{pay}");
    let bal: Value = http
        .get(format!(
            "{}/v1/x402/balance/{}",
            fac.url,
            wallet.address().to_checksum(None)
        ))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(bal["balance"], "3500", "{bal}");
    assert_eq!(bal["network"], "eip155:84532", "{bal}");
}

/// An unknown key, a value of the wrong type, or one its flag would refuse: the node does
/// not start, and says which key.
#[test]
fn a_config_file_with_an_unknown_or_bad_key_stops_the_node_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (text, key) in [
        ("[node]\nlistn = \"127.0.0.1:0\"\n", "node.listn"),
        ("[node]\nmax_connections = -1\n", "node.max_connections"),
        ("[payments]\nnetwork = \"base-goerli\"\n", "payments"),
        ("[limits]\nrate_per_ip = 0\n", "limits.rate_per_ip"),
        ("[paymnets]\nprice_per_request = 1\n", "paymnets"),
    ] {
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, text).unwrap();
        let out = Command::new(common::BIN)
            .args(["node", "--no-llm", "--config", file.to_str().unwrap()])
            .env("HACA_LOG", "warn")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text}: started");
        assert!(err.contains(key), "{text}: {err}");
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("is up"),
            "{err}"
        );
    }
    // `haca config check` says the same without starting anything; the example passes.
    let example = dir.path().join("example.toml");
    let out = Command::new(common::BIN)
        .args(["config", "example"])
        .output()
        .unwrap();
    std::fs::write(&example, &out.stdout).unwrap();
    let ok = Command::new(common::BIN)
        .args(["config", "check", example.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
}

/// Parses an exposition with Python `prometheus_client`'s parsers (the OpenMetrics one, as
/// the content type says, and the classic text one a Prometheus server also accepts) and
/// returns `{name: [[sample name, labels, value], ...]}` from the OpenMetrics parse.
fn parse_with_prometheus_client(python: &Path, text: &str) -> Value {
    let script = r##"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om
from prometheus_client.parser import text_string_to_metric_families as classic
text = sys.stdin.read()
out = {}
for fam in om(text):
    out[fam.name] = [[s.name, s.labels, s.value] for s in fam.samples]
# The classic parser takes it too (it stops at nothing it cannot read).
classic_names = [f.name for f in classic(text.replace("# EOF\n", ""))]
assert classic_names, "the classic parser found no family"
print(json.dumps(out))
"##;
    use std::io::Write;
    let mut child = Command::new(python)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client refused the exposition: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn sample(families: &Value, family: &str, sample: &str, labels: &[(&str, &str)]) -> Option<f64> {
    families[family].as_array()?.iter().find_map(|s| {
        let ok = s[0] == sample && labels.iter().all(|(k, v)| s[1][*k].as_str() == Some(*v));
        ok.then(|| s[2].as_f64()).flatten()
    })
}

/// `/metrics` scraped while runs are being served: every scrape parses with Python
/// `prometheus_client`'s parsers, runs and latencies are counted per route and mode, and the
/// node's gauges (settlement lag, outbox, mempool, height, review queue) are there. Every
/// answer carries a request id, the client's own when it sent a sane one.
#[test]
fn metrics_scraped_during_a_load_parse_and_count_runs_by_route_and_mode() {
    let dir = tempfile::tempdir().unwrap();
    let node = Devnet::start(dir.path(), &["--no-enclave"]);
    let http = Client::new();
    wait_ready(&http, &node.url);
    const RUNS: usize = 24;
    let load: Vec<_> = (0..3)
        .map(|t| {
            let url = node.url.clone();
            std::thread::spawn(move || {
                let http = Client::new();
                for i in 0..RUNS / 3 {
                    let resp = http
                        .post(format!("{url}/v1/infer"))
                        .header("x-request-id", format!("load-{t}-{i}"))
                        .json(&json!({"model": "example/mnist-mlp", "input": mlp_input(i as u32)}))
                        .send()
                        .unwrap();
                    assert_eq!(resp.status(), 200);
                    assert_eq!(
                        resp.headers()["x-request-id"],
                        format!("load-{t}-{i}").as_str()
                    );
                }
            })
        })
        .collect();
    let mut scrapes = Vec::new();
    while scrapes.len() < 4 {
        let resp = http.get(format!("{}/metrics", node.url)).send().unwrap();
        assert_eq!(resp.status(), 200);
        assert!(resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text"));
        // A request without an id gets one.
        assert!(!resp.headers()["x-request-id"].is_empty());
        scrapes.push(resp.text().unwrap());
        std::thread::sleep(Duration::from_millis(100));
    }
    for t in load {
        t.join().unwrap();
    }
    scrapes.push(
        http.get(format!("{}/metrics", node.url))
            .send()
            .unwrap()
            .text()
            .unwrap(),
    );
    let last = scrapes.last().unwrap();
    for name in [
        "haca_http_requests_total",
        "haca_http_request_duration_seconds_bucket",
        "haca_runs_total",
        "haca_settlement_lag_seconds",
        "haca_outbox_records",
        "haca_mempool_records",
        "haca_consensus_height",
        "haca_review_cases",
        "haca_llm_batched_steps_total",
        "haca_llm_batched_rows_total",
    ] {
        assert!(last.contains(name), "{name} missing:\n{last}");
    }
    // The count by route and mode, read here too (the Python parser below is the interop check).
    let vanilla_runs: f64 = last
        .lines()
        .find(|l| {
            l.starts_with("haca_runs_total{")
                && l.contains(r#"route="/v1/infer""#)
                && l.contains(r#"mode="vanilla""#)
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no vanilla /v1/infer runs counted:\n{last}"));
    assert!(vanilla_runs >= RUNS as f64, "{vanilla_runs}");
    let Some(python) = common::python() else {
        return;
    };
    for text in &scrapes {
        parse_with_prometheus_client(&python, text);
    }
    let fams = parse_with_prometheus_client(&python, last);
    let runs = sample(
        &fams,
        "haca_runs",
        "haca_runs_total",
        &[("route", "/v1/infer"), ("mode", "vanilla")],
    );
    assert!(runs.unwrap_or(0.0) >= RUNS as f64, "{runs:?}: {fams}");
    let count = sample(
        &fams,
        "haca_http_request_duration_seconds",
        "haca_http_request_duration_seconds_count",
        &[("route", "/v1/infer"), ("mode", "vanilla")],
    );
    assert!(count.unwrap_or(0.0) >= RUNS as f64, "{count:?}");
    let inf = sample(
        &fams,
        "haca_http_request_duration_seconds",
        "haca_http_request_duration_seconds_bucket",
        &[("route", "/v1/infer"), ("mode", "vanilla"), ("le", "+Inf")],
    );
    assert_eq!(inf, count);
    let ok = sample(
        &fams,
        "haca_http_requests",
        "haca_http_requests_total",
        &[
            ("route", "/v1/infer"),
            ("method", "POST"),
            ("status", "200"),
        ],
    );
    assert!(ok.unwrap_or(0.0) >= RUNS as f64, "{ok:?}");
    assert!(sample(&fams, "haca_consensus_height", "haca_consensus_height", &[]).unwrap() >= 1.0);
    // No case was opened under this load.
    assert_eq!(
        sample(
            &fams,
            "haca_review_cases",
            "haca_review_cases",
            &[("state", "open")]
        ),
        Some(0.0)
    );
}

fn api_key(node: &Devnet) -> String {
    let out = node.haca_ok(&["apikey", "create", "--fund", "100000"]);
    common::last_line(&out)
}

/// A burst from one API key past its bucket is 429 with Retry-After, while another key
/// goes on being served; once the wait has passed, the first key is served again. CORS
/// answers the configured origin only.
#[test]
fn a_burst_from_one_key_is_429_while_another_key_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let node = Devnet::start(
        dir.path(),
        &[
            "--price-per-request",
            "1000",
            "--no-enclave",
            "--rate-per-key",
            "1",
            "--burst-per-key",
            "3",
            "--cors-origin",
            "https://panel.example.com",
        ],
    );
    let http = Client::new();
    wait_ready(&http, &node.url);
    let (a, b) = (api_key(&node), api_key(&node));
    let run = |key: &str, seed: u32| {
        http.post(format!("{}/v1/infer", node.url))
            .bearer_auth(key)
            .json(&json!({"model": "example/mnist-mlp", "input": mlp_input(seed)}))
            .send()
            .unwrap()
    };
    let mut refused = None;
    for i in 0..6 {
        let resp = run(&a, i);
        if resp.status() == 429 {
            refused = Some(resp);
            break;
        }
        assert_eq!(resp.status(), 200, "{}", resp.text().unwrap());
    }
    let refused = refused.expect("a burst of 6 from one key at 1/s with a burst of 3 is refused");
    let wait: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&wait), "{wait}");
    let body: Value = refused.json().unwrap();
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    // The other key is served meanwhile.
    for i in 0..2 {
        let resp = run(&b, 100 + i);
        assert_eq!(resp.status(), 200, "{}", resp.text().unwrap());
    }
    std::thread::sleep(Duration::from_secs(wait));
    assert_eq!(run(&a, 50).status(), 200);

    // CORS: the configured origin is answered, another is not.
    let pre = |origin: &str| {
        http.request(reqwest::Method::OPTIONS, format!("{}/v1/runs", node.url))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .send()
            .unwrap()
    };
    let ok = pre("https://panel.example.com");
    assert_eq!(
        ok.headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap()),
        Some("https://panel.example.com")
    );
    assert!(pre("https://evil.example.com")
        .headers()
        .get("access-control-allow-origin")
        .is_none());
}

/// A route at its concurrency limit makes the next request wait a second for a slot, then
/// answers 503 with Retry-After; the slot frees when the request holding it ends. (A full
/// local generation queue is 503 `model_busy` too:
/// llm_gateway::a_full_generation_queue_is_503_with_retry_after_and_leaving_clients_free_their_slots.)
#[test]
fn a_route_at_its_concurrency_limit_answers_503_with_retry_after() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let node = Devnet::start(
        dir.path(),
        &[
            "--no-enclave",
            "--max-concurrent",
            "/v1/hub/models/{*label}=1",
        ],
    );
    let http = Client::new();
    wait_ready(&http, &node.url);
    // An upload whose body never comes holds the route's one slot.
    let addr = node.url.trim_start_matches("http://");
    let mut slow = std::net::TcpStream::connect(addr).unwrap();
    write!(
        slow,
        "POST /v1/hub/models/test/slow HTTP/1.1\r\nhost: {addr}\r\ncontent-length: 100000\r\n\r\n"
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let t = std::time::Instant::now();
    let resp = http
        .post(format!("{}/v1/hub/models/test/fast", node.url))
        .body(haca::devnet::EXAMPLE_MODEL)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(resp.headers()["retry-after"], "1");
    let body: Value = resp.json().unwrap();
    assert_eq!(body["error"]["code"], "route_busy", "{body}");
    // Other routes are not held up.
    assert_eq!(
        http.get(format!("{}/v1/runs", node.url))
            .send()
            .unwrap()
            .status(),
        200
    );
    // The slow client leaves: the slot is free again.
    drop(slow);
    std::thread::sleep(Duration::from_millis(300));
    let resp = http
        .post(format!("{}/v1/hub/models/test/fast", node.url))
        .body(haca::devnet::EXAMPLE_MODEL)
        .send()
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.text().unwrap());
}

/// SIGTERM with a panel's live case view open: the view gets a last `shutdown` event and
/// ends, the node finishes and exits 0 well within its bound (SHUTDOWN_GRACE, 10 s, plus the
/// runtime's 5 s), and the run it served is still there after a restart.
#[test]
fn sigterm_closes_live_views_with_a_final_event_and_exits_within_the_bound() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let mut node = Devnet::start(dir.path(), &["--no-enclave"]);
    let http = Client::new();
    wait_ready(&http, &node.url);
    let token = common::last_line(&node.haca_ok(&["token", "create", "--role", "reviewer"]));
    let run: Value = http
        .post(format!("{}/v1/infer", node.url))
        .json(&json!({"model": "example/mnist-mlp", "input": mlp_input(9)}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let case: Value = http
        .post(format!("{}/v1/cases", node.url))
        .bearer_auth(&token)
        .json(&json!({"runs": [run["run_id"]], "policy": "default"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let case_id = case["id"].as_str().unwrap().to_owned();

    // The panel's live view, read on its own thread until it ends.
    let events_url = format!("{}/v1/cases/{case_id}/events", node.url);
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut resp = Client::builder()
            .timeout(None)
            .build()
            .unwrap()
            .get(events_url)
            .bearer_auth(token)
            .send()
            .unwrap();
        assert_eq!(resp.status(), 200);
        tx.send(()).unwrap();
        let mut text = String::new();
        let mut buf = [0u8; 1024];
        loop {
            match resp.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => text.push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
        text
    });
    rx.recv_timeout(Duration::from_secs(10)).unwrap();
    std::thread::sleep(Duration::from_millis(200));

    let t = std::time::Instant::now();
    unsafe {
        libc::kill(node.child.id() as i32, libc::SIGTERM);
    }
    let status = loop {
        if let Some(s) = node.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "still running 15 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = t.elapsed();
    assert!(status.success(), "{status:?}");
    // Nothing in flight but an open view: it ends at once rather than at the grace's end.
    assert!(took < Duration::from_secs(5), "{took:?}");
    let text = reader.join().unwrap();
    assert!(text.contains("event: shutdown"), "{text:?}");
    assert!(text.contains("the node is stopping"), "{text:?}");

    // What was served survived the stop.
    drop(node);
    let node = Devnet::start(dir.path(), &["--no-enclave"]);
    let resp = http
        .get(format!(
            "{}/v1/runs/{}",
            node.url,
            run["run_id"].as_str().unwrap()
        ))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
}

/// `--enclave URL`: the node runs `tee` work in an enclave process it does not supervise
/// (here `haca enclave` under the devnet's dev CA; in production `haca enclave --nsm` in a
/// Nitro enclave). Its document is checked like the supervised one's: the run's receipt
/// names that enclave's key, and `enclave.genuine` holds against the dev root.
#[test]
fn a_node_runs_tee_work_in_a_remote_enclave_by_url() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path()).unwrap();
    let seed = dir.path().join("dev-enclave-ca.seed");
    let mut child = Command::new(common::BIN)
        .args(["enclave", "--listen", "127.0.0.1:0", "--ca-seed-file"])
        .arg(&seed)
        .env("HACA_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = lines.next().unwrap().unwrap();
    let url = url.strip_prefix("enclave: ").expect("its url").to_owned();
    let key = lines.next().unwrap().unwrap();
    let key = key
        .strip_prefix("enclave key: ")
        .expect("its key")
        .to_owned();
    let enclave = Proc {
        child,
        url: url.clone(),
    };

    let node = Devnet::start(dir.path(), &["--enclave", &enclave.url]);
    let http = Client::new();
    wait_ready(&http, &node.url);
    let resp = http
        .post(format!("{}/v1/infer", node.url))
        .json(&json!({"model": "example/mnist-mlp", "input": mlp_input(4), "mode": "tee"}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().unwrap());
    let ans: Value = resp.json().unwrap();
    let att = &ans["receipt"]["boxes"]["attestation"]["evidence"];
    assert_eq!(att["enclave_key"], key.as_str(), "{att}");
    let file = dir.path().join("tee-receipt.json");
    std::fs::write(&file, ans["receipt"].to_string()).unwrap();
    let (_, text) = node.verify(&file, &["--allow-dev-root"]);
    let line = common::claim_line(&text, "enclave.genuine");
    assert!(line.contains("holds"), "{text}");

    // No supervised enclave was started beside it.
    let out = Command::new("pgrep")
        .args(["-f", &format!("enclave .*ca-seed-file {}", seed.display())])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        1,
        "only the enclave this test started"
    );
}

/// `haca testnet up --no-start` writes each validator's config also as the node config
/// file's `[validator]` section (`vI/haca.toml`), which `haca node --config` runs as is;
/// `--ip` needs one address per validator.
#[test]
fn a_testnet_validator_runs_from_its_toml_config_section() {
    let dir = tempfile::tempdir().unwrap();
    let net = dir.path().join("net");
    let out = Command::new(common::BIN)
        .args(["testnet", "up", "--validators", "1", "--no-start", "--dir"])
        .arg(&net)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let toml_file = net.join("v0/haca.toml");
    let text = std::fs::read_to_string(&toml_file).unwrap();
    assert!(text.contains("[validator]"), "{text}");
    let v = spawn(&["node", "--config", toml_file.to_str().unwrap()], &[]);
    let http = Client::new();
    let t = std::time::Instant::now();
    loop {
        let s: Value = http
            .get(format!("{}/v1/chain/status", v.url))
            .send()
            .unwrap()
            .json()
            .unwrap();
        if s["height"].as_u64().unwrap_or(0) >= 2 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "{s}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Its /metrics reads the validator's chain: the height it committed, not a gauge left at 0.
    let m = http
        .get(format!("{}/metrics", v.url))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let height: f64 = m
        .lines()
        .find_map(|l| l.strip_prefix("haca_consensus_height "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no haca_consensus_height:\n{m}"));
    assert!(height >= 2.0, "{height}");

    let out = Command::new(common::BIN)
        .args([
            "testnet",
            "up",
            "--validators",
            "2",
            "--ip",
            "10.0.0.1",
            "--no-start",
            "--dir",
        ])
        .arg(dir.path().join("other"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--ip"));
}

/// Not a test: the ops layer's cost on the receipt path (BENCHMARKS.md "Ops layer"). Three
/// in-process gateways without a chain or enclave, one after another in rounds: no ops
/// layer, the default layer (/metrics, request ids, per-route counters), and every limit on
/// (key and IP buckets too large to refuse, a concurrency limit on /v1/infer; each request
/// carries an API key). Prints each one's median and mean `POST /v1/infer` latency.
/// `cargo test -p haca --test it ops_layer_overhead -- --ignored --nocapture`
#[test]
#[ignore]
fn ops_layer_overhead_on_the_receipt_path() {
    use haca::devnet::{self, NodeConfig};
    use haca::server::ops::OpsConfig;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let start = |ops: OpsConfig| {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = NodeConfig::devnet("127.0.0.1:0".parse().unwrap(), dir.path().to_owned());
        cfg.dev_enclave = false;
        cfg.validator = false;
        cfg.ops = ops;
        (rt.block_on(devnet::start(cfg)).unwrap(), dir)
    };
    let nodes = [
        (
            "no ops layer",
            start(OpsConfig {
                off: true,
                ..Default::default()
            }),
        ),
        (
            "ops layer, no limits (default)",
            start(OpsConfig::default()),
        ),
        (
            "ops layer, every limit on",
            start(OpsConfig {
                per_key: Some((1e9, u32::MAX)),
                per_ip: Some((1e9, u32::MAX)),
                max_concurrent: [("/v1/infer".to_owned(), 1024)].into(),
                ..Default::default()
            }),
        ),
    ];
    let http = Client::new();
    let body =
        serde_json::to_vec(&json!({"model": "example/mnist-mlp", "input": mlp_input(1)})).unwrap();
    let one = |url: &str| {
        let t = std::time::Instant::now();
        let resp = http
            .post(format!("{url}/v1/infer"))
            .header("content-type", "application/json")
            .header("x-api-key", "hk_bench")
            .body(body.clone())
            .send()
            .unwrap();
        assert!(resp.status().is_success());
        resp.bytes().unwrap();
        t.elapsed().as_secs_f64() * 1e6
    };
    let rounds: usize = std::env::var("HACA_OPS_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let mut samples = vec![Vec::new(); nodes.len()];
    for (_, (node, _)) in &nodes {
        for _ in 0..50 {
            one(&node.url); // warm-up
        }
    }
    for _ in 0..rounds {
        for (i, (_, (node, _))) in nodes.iter().enumerate() {
            for _ in 0..50 {
                samples[i].push(one(&node.url));
            }
        }
    }
    let base = {
        let mut s = samples[0].clone();
        s.sort_by(|a, b| a.partial_cmp(b).unwrap());
        s[s.len() / 2]
    };
    for (i, (name, _)) in nodes.iter().enumerate() {
        let mut s = samples[i].clone();
        s.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let median = s[s.len() / 2];
        let mean = s.iter().sum::<f64>() / s.len() as f64;
        println!(
            "{name}: n {} median {median:.0} us mean {mean:.0} us ({:+.1}% median vs no layer)",
            s.len(),
            (median / base - 1.0) * 100.0
        );
    }
    for (_, (node, _)) in nodes {
        rt.block_on(node.stop()).unwrap();
    }
}
