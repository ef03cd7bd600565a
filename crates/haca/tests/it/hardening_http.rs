//! Holes a hostile tester found (issue 17), each shut and kept shut over HTTP against the real
//! `haca` binary: generations that outlive their client (item 2), slow clients that hold
//! connections open (item 3), and admin rights by loopback on a `haca node` (item 9).

use crate::common::{self, wait_ready, BIN};
use reqwest::blocking::Client;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `haca devnet` or `haca node` process whose log goes to a file the test reads.
struct Node {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Node {
    /// `haca SUBCOMMAND --listen 127.0.0.1:0 --data-dir DIR ARGS`, logging at `log_filter`.
    fn start(subcommand: &str, dir: &Path, args: &[&str], log_filter: &str) -> Node {
        let log = dir.join("node.log");
        let mut child = Command::new(BIN)
            .args([subcommand, "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.join("data"))
            .args(args)
            .env("HACA_LOG", log_filter)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn haca");
        let url = match common::printed(&mut child, "url:", Duration::from_secs(90)) {
            Some(url) => url,
            None => panic!(
                "haca {subcommand} did not print its url within 90 s; its log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            ),
        };
        let node = Node { child, url, log };
        wait_ready(&http(), &node.url);
        node
    }

    /// A devnet that serves for free, without the dev enclave and (unless `args` names one)
    /// without the local LLM.
    fn devnet(dir: &Path, args: &[&str]) -> Node {
        let mut all = vec!["--price-per-request", "0", "--no-enclave"];
        if !args.contains(&"--llm-model") {
            all.push("--no-llm");
        }
        all.extend_from_slice(args);
        Node::start("devnet", dir, &all, "warn")
    }

    fn addr(&self) -> String {
        self.url.trim_start_matches("http://").to_owned()
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr()).expect("connect");
        s.set_nodelay(true).unwrap();
        s
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// Waits until the node's local model has loaded.
fn wait_model(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let v: Value = http()
            .get(format!("{url}/v1/models"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        let state = v["data"]
            .as_array()
            .and_then(|a| a.iter().find(|m| m["id"] == "local/gemma-3-270m"))
            .map(|m| m["haca"]["state"].clone());
        match state.as_ref().and_then(Value::as_str) {
            Some("ready") => return,
            Some("failed") => panic!("the local model failed to load: {v}"),
            _ => {}
        }
        assert!(Instant::now() < deadline, "the local model did not load");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A devnet serving the local LLM, logging each generation's end (haca_exec at info).
fn llm_devnet(dir: &Path, model: &Path) -> Node {
    let model = model.to_str().expect("a UTF-8 model path");
    let node = Node::start(
        "devnet",
        dir,
        &[
            "--price-per-request",
            "0",
            "--no-enclave",
            "--llm-model",
            model,
        ],
        "warn,haca_exec=info",
    );
    wait_model(&node.url);
    node
}

/// A chat that would generate for minutes: the context's worth of tokens, none of them allowed
/// to end the answer early.
fn endless_chat() -> Value {
    json!({"model": "local/gemma-3-270m", "max_tokens": 4000, "min_tokens": 4000,
           "messages": [{"role": "user", "content": "Count from one to ten thousand."}]})
}

fn raw_post(path: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// The local model's log lines that report a finished generation (`... tokens/s (REASON)`).
fn generation_ends(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("tokens/s ("))
        .map(str::to_owned)
        .collect()
}

/// Reads until the server closes the connection (or `limit` passes): how long it took, what
/// was read, and whether it closed.
fn read_until_closed(s: &mut TcpStream, limit: Duration) -> (Duration, Vec<u8>, bool) {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = limit.saturating_sub(start.elapsed());
        if left.is_zero() {
            return (start.elapsed(), got, false);
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return (start.elapsed(), got, true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return (start.elapsed(), got, false)
            }
            // A reset is a close too.
            Err(_) => return (start.elapsed(), got, true),
        }
    }
}

/// Reads one whole HTTP response (head and a Content-Length body) from a keep-alive
/// connection; `None` if none came within `limit`.
fn read_response(s: &mut TcpStream, limit: Duration) -> Option<String> {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&got).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if got.len() >= end + 4 + len {
                return Some(text);
            }
        }
        let left = limit.saturating_sub(start.elapsed());
        if left.is_zero() {
            return None;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return None,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => return None,
        }
    }
}

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";

// ---- item 2: runaway generation ---------------------------------------------------------

#[test]
fn max_tokens_above_the_context_is_refused_with_400() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::devnet(dir.path(), &[]);
    let http = http();
    let chat = |extra: Value| {
        let mut body = json!({"model": "local/gemma-3-270m",
                              "messages": [{"role": "user", "content": "hi"}]});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let r = http
            .post(format!("{}/v1/chat/completions", node.url))
            .json(&body)
            .send()
            .unwrap();
        (
            r.status().as_u16(),
            r.json::<Value>().unwrap_or(Value::Null),
        )
    };
    for (extra, param) in [
        (json!({"max_tokens": 1_000_000_000u64}), "max_tokens"),
        (json!({"max_tokens": 4097}), "max_tokens"),
        (
            json!({"max_completion_tokens": 1_000_000_000u64}),
            "max_completion_tokens",
        ),
    ] {
        let (status, v) = chat(extra.clone());
        assert_eq!(status, 400, "{extra}: {v}");
        assert_eq!(v["error"]["param"], param, "{extra}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("4096"),
            "the refusal names the context limit: {v}"
        );
    }
    // The context itself is allowed (this node serves no LLM, so that is what it says).
    let (status, v) = chat(json!({"max_tokens": 4096}));
    assert_ne!(v["error"]["param"], "max_tokens", "{status}: {v}");
    let r = http
        .post(format!("{}/v1/completions", node.url))
        .json(
            &json!({"model": "local/gemma-3-270m", "prompt": "hi", "max_tokens": 1_000_000_000u64}),
        )
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(r.json::<Value>().unwrap()["error"]["param"], "max_tokens");
}

#[test]
fn a_whole_chat_stops_generating_when_its_client_hangs_up() {
    let Some(model) = common::local_model("hardening_http") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let node = llm_devnet(dir.path(), &model);
    let before = generation_ends(&node.log_text()).len();
    let mut s = node.connect();
    s.write_all(raw_post("/v1/chat/completions", &endless_chat().to_string()).as_bytes())
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    drop(s);
    let gone = Instant::now();
    let end = loop {
        let ends = generation_ends(&node.log_text());
        if ends.len() > before {
            break ends[before].clone();
        }
        assert!(
            gone.elapsed() < Duration::from_secs(10),
            "the generation was still running 10 s after its client hung up; log:\n{}",
            node.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let stopped_in = gone.elapsed();
    eprintln!("generation ended {stopped_in:?} after the client hung up: {end}");
    assert!(end.contains("(cancelled)"), "{end}");
    assert!(stopped_in < Duration::from_secs(3), "{stopped_in:?}");
    // The node goes on serving.
    assert!(http()
        .get(format!("{}/healthz", node.url))
        .send()
        .unwrap()
        .status()
        .is_success());
}

#[test]
fn sigterm_with_a_generation_in_flight_exits_within_the_bound() {
    let Some(model) = common::local_model("hardening_http") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut node = llm_devnet(dir.path(), &model);
    let before = generation_ends(&node.log_text()).len();
    // A client that stays connected, waiting for an answer that would take minutes.
    let mut s = node.connect();
    s.write_all(raw_post("/v1/chat/completions", &endless_chat().to_string()).as_bytes())
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        generation_ends(&node.log_text()).len(),
        before,
        "still generating"
    );
    let pid = node.child.id() as libc::pid_t;
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let signalled = Instant::now();
    let status = loop {
        if let Some(status) = node.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(25),
            "haca devnet still running 25 s after SIGTERM; log:\n{}",
            node.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let exited_in = signalled.elapsed();
    eprintln!("exited {exited_in:?} after SIGTERM ({status})");
    // Ten seconds of grace for the requests in flight, then it stops regardless.
    assert!(exited_in < Duration::from_secs(15), "{exited_in:?}");
    // The client saw its connection end.
    let (_, _, closed) = read_until_closed(&mut s, Duration::from_secs(2));
    assert!(closed);
}

// ---- item 3: slow clients ----------------------------------------------------------------

#[test]
fn half_sent_headers_are_closed_within_the_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::devnet(dir.path(), &["--header-timeout-secs", "2"]);
    let mut conns: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut s = node.connect();
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                .unwrap();
            s
        })
        .collect();
    let start = Instant::now();
    let waits: Vec<Duration> = conns
        .iter_mut()
        .map(|s| {
            let (_, got, closed) = read_until_closed(s, Duration::from_secs(10));
            assert!(closed, "a half-sent header kept its connection open 10 s");
            let text = String::from_utf8_lossy(&got);
            assert!(
                text.is_empty() || text.starts_with("HTTP/1.1 408"),
                "{text}"
            );
            start.elapsed()
        })
        .collect();
    let last = *waits.iter().max().unwrap();
    eprintln!(
        "20 half-header connections closed after {:?} to {last:?}",
        waits.iter().min().unwrap()
    );
    assert!(last < Duration::from_secs(5), "{last:?}");
    // The node still serves whole requests.
    assert!(http()
        .get(format!("{}/healthz", node.url))
        .send()
        .unwrap()
        .status()
        .is_success());
}

#[test]
fn a_stalled_body_is_refused_within_the_body_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::devnet(dir.path(), &["--body-timeout-secs", "2"]);
    let start = Instant::now();
    let mut s = node.connect();
    s.write_all(
        b"POST /v1/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
          Content-Length: 1000\r\n\r\n{",
    )
    .unwrap();
    let (_, got, closed) = read_until_closed(&mut s, Duration::from_secs(10));
    let took = start.elapsed();
    let text = String::from_utf8_lossy(&got);
    eprintln!("a 1-of-1000-byte body was answered after {took:?}: {text:?}");
    assert!(
        text.starts_with("HTTP/1.1 408"),
        "a stalled body was not refused within 10 s: {text:?} (closed: {closed})"
    );
    assert!(text.contains("body_timeout"), "{text}");
    assert!(closed, "the connection is closed after the 408");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(took >= Duration::from_millis(1500), "{took:?}");
}

#[test]
fn connections_past_the_limit_wait_for_a_free_slot() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::devnet(dir.path(), &["--max-connections", "5"]);
    // Five keep-alive connections, each served once and then held open.
    let mut held: Vec<TcpStream> = (0..5)
        .map(|i| {
            let mut s = node.connect();
            s.write_all(HEALTHZ).unwrap();
            let r = read_response(&mut s, Duration::from_secs(5));
            assert!(
                r.as_deref().is_some_and(|r| r.starts_with("HTTP/1.1 200")),
                "connection {i}: {r:?}"
            );
            s
        })
        .collect();
    let mut sixth = node.connect();
    sixth.write_all(HEALTHZ).unwrap();
    let early = read_response(&mut sixth, Duration::from_millis(1500));
    assert!(
        early.is_none(),
        "a sixth connection was served past --max-connections 5: {early:?}"
    );
    // One closes: the sixth is served.
    drop(held.remove(0));
    let freed = Instant::now();
    let r = read_response(&mut sixth, Duration::from_secs(5));
    assert!(
        r.as_deref().is_some_and(|r| r.starts_with("HTTP/1.1 200")),
        "{r:?}"
    );
    eprintln!(
        "the sixth connection was served {:?} after a slot freed",
        freed.elapsed()
    );
    drop(held);
    drop(sixth);
    // Ordinary requests go on working.
    let http = http();
    for _ in 0..10 {
        assert!(http
            .get(format!("{}/healthz", node.url))
            .send()
            .unwrap()
            .status()
            .is_success());
    }
}

// ---- item 9: admin by loopback -------------------------------------------------------------

fn create_review_token(url: &str, bearer: Option<&str>) -> (u16, Value) {
    let mut req = http()
        .post(format!("{url}/v1/review/tokens"))
        .json(&json!({"role": "reviewer"}));
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    let r = req.send().unwrap();
    (r.status().as_u16(), r.json().unwrap_or(Value::Null))
}

#[test]
fn haca_node_wants_the_operator_token_even_from_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start("node", dir.path(), &["--no-llm"], "warn");
    let (status, v) = create_review_token(&node.url, None);
    assert_eq!(status, 401, "admin from loopback without the token: {v}");
    assert_eq!(v["error"]["code"], "unauthorized", "{v}");
    let r = http()
        .put(format!("{}/v1/hub/labels/acme/model", node.url))
        .json(&json!({"blob_id": format!("sha256:{}", "0".repeat(64))}))
        .send()
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        401,
        "a label move from loopback without the token"
    );
    let (status, _) = create_review_token(&node.url, Some("not-the-token"));
    assert_eq!(status, 403);
    let token = std::fs::read_to_string(dir.path().join("data/operator.token")).unwrap();
    let (status, v) = create_review_token(&node.url, Some(token.trim()));
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["role"], "reviewer", "{v}");
}

#[test]
fn devnet_keeps_admin_from_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::devnet(dir.path(), &[]);
    let (status, v) = create_review_token(&node.url, None);
    assert_eq!(status, 201, "devnet admin from loopback: {v}");
}
