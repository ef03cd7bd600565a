//! Starts the real `haca` binary as a devnet on a free port and talks to it over HTTP.
#![allow(dead_code)]

use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_haca");

pub struct Devnet {
    pub child: Child,
    pub url: String,
    pub data_dir: PathBuf,
}

impl Devnet {
    /// Starts `haca devnet` on 127.0.0.1:0 over `data_dir`, waiting until it prints its URL.
    /// It serves for free unless `extra` sets `--price-per-request` (tests of other layers
    /// post runs without paying; x402_e2e tests the paywall).
    pub fn start(data_dir: &Path, extra: &[&str]) -> Devnet {
        let free: &[&str] = if extra.contains(&"--price-per-request") {
            &[]
        } else {
            &["--price-per-request", "0"]
        };
        // The local LLM loads only for the tests that name it.
        let no_llm: &[&str] = if extra.contains(&"--llm-model") {
            &[]
        } else {
            &["--no-llm"]
        };
        let mut child = Command::new(BIN)
            .args(["devnet", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(free)
            .args(no_llm)
            .args(extra)
            .env("HACA_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn haca devnet");
        let url = printed(&mut child, "url:", Duration::from_secs(60))
            .expect("devnet printed its url within 60 s");
        Devnet {
            child,
            url,
            data_dir: data_dir.to_owned(),
        }
    }

    /// SIGKILL, as `kill -9` does.
    pub fn kill9(mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("wait");
    }

    /// Runs a haca client command against this node and asserts that it succeeded.
    pub fn haca_ok(&self, args: &[&str]) -> std::process::Output {
        let out = self.haca(args);
        assert!(
            out.status.success(),
            "haca {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// `haca verify FILE` against this devnet's genesis, with `extra` flags: whether it
    /// passed, and what it printed.
    pub fn verify(&self, file: &Path, extra: &[&str]) -> (bool, String) {
        let genesis = self.data_dir.join("genesis.json");
        let mut args = vec![
            "verify",
            file.to_str().unwrap(),
            "--validators",
            genesis.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let out = self.haca(&args);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    pub fn haca(&self, args: &[&str]) -> std::process::Output {
        self.haca_env(args, &[])
    }

    /// Runs a haca client command with extra environment (such as `HACA_HOME`).
    pub fn haca_env(&self, args: &[&str], env: &[(&str, &Path)]) -> std::process::Output {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env("HACA_NODE", &self.url)
            .env("HACA_LOG", "warn");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("run haca")
    }
}

impl Drop for Devnet {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A command's last line of standard output: where `haca apikey create` and `haca token
/// create` print the secret alone.
pub fn last_line(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// The state of `claim` in a `haca verify --json` verdict (`None` when it is not listed).
/// The line of `haca verify`'s plain output about `claim`.
pub fn claim_line<'a>(out: &'a str, claim: &str) -> &'a str {
    out.lines()
        .find(|l| l.trim_start().starts_with(claim))
        .unwrap_or_else(|| panic!("no {claim} line in:\n{out}"))
}

pub fn claim_state(verdict: &Value, claim: &str) -> Option<Value> {
    verdict["claims"]
        .as_array()?
        .iter()
        .find(|c| c["claim"] == claim)
        .map(|c| c["state"].clone())
}

pub fn mlp_input(seed: u32) -> Value {
    let data: Vec<f32> = (0..784)
        .map(|i| ((i as u32 * 31 + seed) % 256) as f32 / 255.0)
        .collect();
    json!({"input": {"shape": [1, 784], "data": data}})
}

pub fn wait_ready(client: &reqwest::blocking::Client, url: &str) {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(30) {
        if client
            .get(format!("{url}/readyz"))
            .send()
            .map(|r| r.status().is_success())
            .unwrap_or(false)
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("node at {url} did not become ready");
}
pub mod testnet;

/// The first word after `prefix` on a line `child` prints (`url:` for a node's address),
/// within `within`; `None` when no such line comes in time. Takes `child`'s stdout and keeps
/// reading it, so the process never blocks on a full pipe.
pub fn printed(child: &mut Child, prefix: &'static str, within: Duration) -> Option<String> {
    let stdout = child.stdout.take().expect("stdout piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(v) = line.trim().strip_prefix(prefix) {
                let _ = tx.send(v.split_whitespace().next().unwrap_or("").to_owned());
            }
        }
    });
    rx.recv_timeout(within).ok()
}

/// `HACA_PYTHON`: a Python with the packages the interop tests drive (`x402`, `openai`;
/// .ci/run installs them). Required in CI; elsewhere its absence skips the Python part.
pub fn python() -> Option<PathBuf> {
    match std::env::var_os("HACA_PYTHON") {
        Some(p) => Some(PathBuf::from(p)),
        None if std::env::var_os("CI").is_some() => {
            panic!("HACA_PYTHON must be set in CI (.ci/run sets it)")
        }
        None => {
            eprintln!("skipped the Python part: HACA_PYTHON is not set");
            None
        }
    }
}

/// Pays `url` with the official Python x402 client (`tools/x402_pay.py`; `--upto` signs a
/// Permit2 maximum instead of an exact EIP-3009 payment) as the 0x-hex private key `key`,
/// posting `body`. Returns the script's JSON line, `{status, payment_response, body}`, once it
/// has said the paid request succeeded.
pub fn python_pay(py: &Path, url: &str, key: &str, body: &Value, upto: bool) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let body_file = dir.path().join("body.json");
    std::fs::write(&body_file, body.to_string()).unwrap();
    let mut cmd = Command::new(py);
    cmd.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tools/x402_pay.py"
    ));
    if upto {
        cmd.arg("--upto");
    }
    let out = cmd
        .arg(url)
        .arg(key)
        .arg(&body_file)
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap()
}

/// `CI` is set (and not `false` or `0`).
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// A model file the tests need, as `found` (a `model_home` lookup) says. Required in CI
/// (.ci/run installs it); elsewhere, when there is none, `None` after saying why on stderr
/// (past the test harness's capture, so that the skip shows), for `test` to skip.
pub fn installed(
    test: &str,
    found: Result<Option<PathBuf>, String>,
    hint: &str,
) -> Option<PathBuf> {
    use std::io::Write;
    match found.unwrap_or_else(|e| panic!("{e}")) {
        Some(p) => Some(p),
        None if in_ci() => panic!("CI must have it (.ci/run installs it): {hint}"),
        None => {
            let _ = writeln!(std::io::stderr(), "{test}: skipped, not installed: {hint}");
            None
        }
    }
}

/// The local LLM's GGUF, found where `haca_exec::llm::model_home` says it lives.
pub fn local_model(test: &str) -> Option<PathBuf> {
    use haca_exec::llm::model_home::{find_local_model, INSTALL_HINT};
    installed(test, find_local_model(None), INSTALL_HINT)
}

/// all-MiniLM-L6-v2's directory, found where `haca_exec::llm::model_home` says it lives.
pub fn embed_model(test: &str) -> Option<PathBuf> {
    use haca_exec::llm::model_home::{find_embed_model, EMBED_INSTALL_HINT};
    installed(test, find_embed_model(None), EMBED_INSTALL_HINT)
}

/// An OpenAI-compatible upstream whose answer to each chat call is `answer(request body)`,
/// streamed as one chunk.
pub fn fake_upstream(answer: fn(&Value) -> String) -> u16 {
    http_server(move |_, req| {
        let content = answer(req);
        let chunk = |delta: Value, finish: Value| {
            format!(
                "data: {}\n\n",
                json!({"id": "x", "object": "chat.completion.chunk", "created": 0, "model": req["model"],
                       "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                       "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}})
            )
        };
        let sse = format!(
            "{}{}data: [DONE]\n\n",
            chunk(
                json!({"role": "assistant", "content": content}),
                Value::Null
            ),
            chunk(json!({}), json!("stop"))
        );
        ("text/event-stream", sse.into_bytes())
    })
}

/// An HTTP/1.1 server on a loopback port, one thread a connection: each request's path and
/// JSON body (`null` when it has none or it is not JSON) go to `respond`, whose content type
/// and bytes are answered with HTTP 200.
pub fn http_server(
    respond: impl Fn(&str, &Value) -> (&'static str, Vec<u8>) + Send + Sync + 'static,
) -> u16 {
    use std::io::{BufRead, BufReader, Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let respond = std::sync::Arc::new(respond);
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut s) = conn else { continue };
            let respond = respond.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(s.try_clone().unwrap());
                let (mut len, mut path) = (0usize, String::new());
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    if path.is_empty() {
                        path = line.split(' ').nth(1).unwrap_or_default().to_owned();
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0; len];
                let _ = r.read_exact(&mut body);
                let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let (content_type, out) = respond(&path, &req);
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    out.len()
                );
                let _ = s.write_all(&out);
            });
        }
    });
    port
}

/// A size field (`VmRSS`, `VmHWM`) of /proc/PID/status, in bytes.
fn proc_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"));
    kb * 1024
}

/// Resets the node's peak RSS and returns its RSS now: the baseline the upload's peak is
/// measured against. Where the kernel refuses the reset, the baseline is the peak so far,
/// which can hide a spike below it: said out loud, so that a pass there is read as weaker.
pub fn reset_peak_rss(pid: u32) -> u64 {
    match std::fs::write(format!("/proc/{pid}/clear_refs"), "5") {
        Ok(()) => proc_kb(pid, "VmRSS"),
        Err(e) => {
            eprintln!(
                "WARNING: cannot reset the node's peak RSS ({e}); measuring against its earlier \
                 peak, which can hide a spike below it"
            );
            proc_kb(pid, "VmHWM")
        }
    }
}

/// The process's peak resident memory (VmHWM), in bytes.
pub fn peak_rss(pid: u32) -> u64 {
    proc_kb(pid, "VmHWM")
}

/// The example model with `pad` bytes of `fill` appended as an unknown protobuf field
/// (number 1000, length-delimited), which ONNX parsers skip: a valid model of any size.
pub fn padded_model(pad: usize, fill: u8) -> Vec<u8> {
    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                return out.push(b);
            }
            out.push(b | 0x80);
        }
    }
    let mut bytes = haca::devnet::EXAMPLE_MODEL.to_vec();
    varint((1000 << 3) | 2, &mut bytes);
    varint(pad as u64, &mut bytes);
    bytes.resize(bytes.len() + pad, fill);
    bytes
}

/// Seconds since the Unix epoch.
pub fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Mints `amount` base units to `who` with a devnet's x402 faucet.
pub fn fund(http: &reqwest::blocking::Client, url: &str, who: haca_pay::Address, amount: u64) {
    let resp = http
        .post(format!("{url}/v1/x402/faucet"))
        .json(&json!({"address": who.to_checksum(None), "amount": amount.to_string()}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().unwrap());
}

/// `who`'s balance on a node's ledger, in base units.
pub fn balance(http: &reqwest::blocking::Client, url: &str, who: &str) -> u64 {
    let v: Value = http
        .get(format!("{url}/v1/x402/balance/{who}"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    v["balance"].as_str().unwrap().parse().unwrap()
}
