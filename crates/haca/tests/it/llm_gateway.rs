//! The LLM gateway end to end: real `haca devnet` processes serving the real Gemma 3 270M
//! GGUF, the official `openai` Python client, another haca node as an upstream provider, and
//! upstreams killed mid-stream.

use crate::common::{self, python, wait_ready, Devnet, BIN};
use reqwest::blocking::Client;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(180))
        .build()
        .unwrap()
}

/// Waits until the node's local model has loaded.
fn wait_model(http: &Client, url: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let v: Value = http
            .get(format!("{url}/v1/models"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        let local = v["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == "local/gemma-3-270m")
            .cloned()
            .expect("the local model is listed");
        match local["haca"]["state"].as_str() {
            Some("ready") => return,
            Some("failed") => panic!("the local model failed to load: {local}"),
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "the local model did not load in 120 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A devnet serving the local model at `model` (see [`common::local_model`]).
fn start_llm_node(dir: &Path, model: &Path, extra: &[&str]) -> Devnet {
    let model = model.to_str().expect("a UTF-8 model path");
    let mut args = vec!["--llm-model", model];
    args.extend_from_slice(extra);
    let node = Devnet::start(dir, &args);
    let http = client();
    wait_ready(&http, &node.url);
    wait_model(&http, &node.url);
    node
}

fn post(http: &Client, url: &str, body: &Value) -> (u16, reqwest::header::HeaderMap, Value) {
    let r = http.post(url).json(body).send().unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.json().unwrap_or(Value::Null))
}

/// Reads a chat stream: the content, and every event's JSON.
fn read_stream(
    r: reqwest::blocking::Response,
    mut on_event: impl FnMut(&Value),
) -> (String, Vec<Value>, bool) {
    let mut text = String::new();
    let mut events = Vec::new();
    let mut done = false;
    for line in BufReader::new(r).lines() {
        let Ok(line) = line else { break };
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            done = true;
            continue;
        }
        let v: Value = serde_json::from_str(data).unwrap();
        if let Some(t) = v["choices"][0]["delta"]["content"].as_str() {
            text.push_str(t);
        }
        on_event(&v);
        events.push(v);
    }
    (text, events, done)
}

const OPENAI_CLIENT: &str = r#"
import json, sys, openai
base, key = sys.argv[1], sys.argv[2]
c = openai.OpenAI(base_url=base + "/v1", api_key=key)
out = {}
raw = c.chat.completions.with_raw_response.create(
    model="local/gemma-3-270m", max_tokens=24, temperature=0,
    messages=[{"role": "user", "content": "What is the capital of France?"}])
r = raw.parse()
out["text"] = r.choices[0].message.content
out["finish"] = r.choices[0].finish_reason
out["usage"] = r.usage.completion_tokens
out["run_id"] = raw.headers.get("x-haca-run-id")
out["receipt_url"] = raw.headers.get("x-haca-receipt")
parts, final = [], None
for chunk in c.chat.completions.create(
        model="local/gemma-3-270m", max_tokens=24, temperature=0.7, seed=3, stream=True,
        stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "Write one sentence about the sea."}]):
    if chunk.choices and chunk.choices[0].delta.content:
        parts.append(chunk.choices[0].delta.content)
    if chunk.choices and chunk.choices[0].finish_reason:
        final = chunk.model_extra.get("haca")
    if chunk.usage:
        out["stream_usage"] = chunk.usage.completion_tokens
out["stream_parts"] = len(parts)
out["stream_text"] = "".join(parts)
out["stream_haca"] = final
comp = c.completions.create(model="local/gemma-3-270m", prompt="The sky is", max_tokens=8, temperature=0)
out["completion"] = comp.choices[0].text
try:
    c.chat.completions.create(model="local/no-such-model", messages=[{"role": "user", "content": "x"}])
except openai.NotFoundError as e:
    out["unknown_model"] = {"status": e.status_code, "code": e.code}
try:
    c.chat.completions.create(model="local/gemma-3-270m", messages=[{"role": "wizard", "content": "x"}])
except openai.BadRequestError as e:
    out["bad_role"] = {"status": e.status_code, "param": e.param, "message": e.message}
print(json.dumps(out))
"#;

#[test]
fn the_local_model_answers_the_official_openai_client_and_signs_receipts() {
    let Some(model) = common::local_model("llm_gateway") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let node = start_llm_node(dir.path(), &model, &["--price-per-request", "1000"]);
    let http = client();

    // The node charges: without a payment, a 402.
    let body = json!({"model": "local/gemma-3-270m", "max_tokens": 8,
                      "messages": [{"role": "user", "content": "Hi"}]});
    let (status, _, v) = post(&http, &format!("{}/v1/chat/completions", node.url), &body);
    assert_eq!(status, 402, "{v}");

    let out = node.haca_env(
        &[
            "apikey",
            "create",
            "--fund",
            "100000",
            "--label",
            "openai test",
            "--node",
            &node.url,
        ],
        &[("HACA_HOME", home.path())],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let key = stdout.lines().last().unwrap().trim().to_owned();
    assert!(key.starts_with("hk_"), "{stdout}");

    // Bad input, in OpenAI's error shape, before any payment or generation.
    let auth = |r: reqwest::blocking::RequestBuilder| r.bearer_auth(&key);
    let cases = [
        (
            json!({"model": "local/gemma-3-270m", "messages": "hi"}),
            400,
            "messages",
        ),
        (
            json!({"model": "nope/model", "messages": [{"role": "user", "content": "x"}]}),
            404,
            "model",
        ),
        (
            json!({"model": "local/gemma-3-270m", "temperature": 9,
                "messages": [{"role": "user", "content": "x"}]}),
            400,
            "temperature",
        ),
        (
            json!({"model": "local/gemma-3-270m",
                "messages": [{"role": "user", "content": "word ".repeat(5000)}]}),
            400,
            "messages",
        ),
    ];
    for (body, want, param) in cases {
        let r = auth(http.post(format!("{}/v1/chat/completions", node.url)))
            .json(&body)
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), want, "{body}");
        let v: Value = r.json().unwrap();
        assert_eq!(v["error"]["param"], param, "{v}");
        assert!(v["error"]["message"].as_str().unwrap().len() > 10, "{v}");
        assert!(v["error"]["type"].is_string(), "{v}");
    }
    let v: Value = auth(http.post(format!("{}/v1/chat/completions", node.url)))
        .json(&json!({"model": "local/gemma-3-270m",
                      "messages": [{"role": "user", "content": "word ".repeat(5000)}]}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(v["error"]["code"], "context_length_exceeded", "{v}");

    // A plain request: an answer, a receipt, a turn of a conversation.
    let r = auth(http.post(format!("{}/v1/chat/completions", node.url)))
        .json(
            &json!({"model": "local/gemma-3-270m", "max_tokens": 16, "temperature": 0,
                      "messages": [{"role": "user", "content": "Name a color."}]}),
        )
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let run_id = r.headers()["x-haca-run-id"].to_str().unwrap().to_owned();
    let conv = r.headers()["x-haca-conversation"]
        .to_str()
        .unwrap()
        .to_owned();
    let v: Value = r.json().unwrap();
    assert!(
        !v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .trim()
            .is_empty(),
        "{v}"
    );
    assert!(
        v.get("tee_signature").is_none(),
        "only enclave answers carry tee_* fields: {v}"
    );
    let receipt: Value = http
        .get(format!("{}/v1/runs/{run_id}/receipt", node.url))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let boxes = &receipt["boxes"];
    assert_eq!(boxes["route"]["evidence"]["provider"], "local/gemma-3-270m");
    assert_eq!(boxes["route"]["evidence"]["policy"], "any");
    assert_eq!(
        boxes["route"]["evidence"]["attempts"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(boxes["artifact"]["evidence"]["format"], "gguf");
    assert_eq!(boxes["artifact"]["evidence"]["label"], "local/gemma-3-270m");
    let bytes = std::fs::read(&model).unwrap();
    let sha = haca_core::sha256(&bytes);
    assert_eq!(
        boxes["artifact"]["evidence"]["blob_id"],
        format!("sha256:{}", sha.to_hex())
    );
    assert_eq!(
        boxes["payment"]["evidence"]["scheme"], "apikey",
        "{}",
        boxes["payment"]
    );
    assert!(boxes["execution"]["evidence"]["runtime"]
        .as_str()
        .unwrap()
        .contains("llama.cpp"));
    // The receipt verifies offline (signature and the claims it makes).
    let file = dir.path().join("chat-receipt.json");
    std::fs::write(&file, receipt.to_string()).unwrap();
    let out = Command::new(BIN)
        .args(["verify", file.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    let verdict: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    let claim = |name: &str| common::claim_state(&verdict, name);
    assert_eq!(claim("execution.signed"), Some(json!("holds")), "{verdict}");
    assert_eq!(
        verdict["ok"], true,
        "no claim of a chat receipt fails: {verdict}"
    );
    // Its conversation has one turn.
    let c: Value = http
        .get(format!("{}/v1/conversations/{conv}", node.url))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(c["turns"][0]["run_id"], run_id.as_str(), "{c}");
    assert_eq!(c["turns"][0]["provider"], "local/gemma-3-270m", "{c}");

    // privacy: tee runs in the node's enclave: an attested answer with the
    // OpenGradient-compatible fields, and a receipt whose attestation box says so.
    let r = auth(http.post(format!("{}/v1/chat/completions", node.url)))
        .json(
            &json!({"model": "local/gemma-3-270m", "privacy": "tee", "max_tokens": 12,
                      "temperature": 0, "messages": [{"role": "user", "content": "Say hello."}]}),
        )
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().unwrap();
    assert!(
        v["tee_signature"].as_str().is_some_and(|s| s.len() > 100),
        "{v}"
    );
    assert!(v["tee_id"].as_str().unwrap().starts_with("0x"), "{v}");
    assert_eq!(v["tee_request_hash"].as_str().unwrap().len(), 64, "{v}");
    assert_eq!(v["haca"]["route"]["path"], "tee", "{v}");
    let tee_run = v["haca"]["run_id"].as_str().unwrap();
    let receipt: Value = http
        .get(format!("{}/v1/runs/{tee_run}/receipt", node.url))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        receipt["boxes"]["execution"]["evidence"]["mode"], "tee",
        "{receipt}"
    );
    assert_eq!(
        receipt["boxes"]["attestation"]["evidence"]["dev"], true,
        "{receipt}"
    );
    assert_eq!(receipt["boxes"]["artifact"]["evidence"]["format"], "gguf");
    // It settles: the validator re-verified the enclave's signature over the chat's hashes.
    let out = node.haca_env(
        &[
            "receipt", tee_run, "--wait", "settled", "--json", "--node", &node.url,
        ],
        &[("HACA_HOME", home.path())],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let file = dir.path().join("tee-receipt.json");
    std::fs::write(&file, &out.stdout).unwrap();
    let genesis = dir.path().join("genesis.json");
    let out = Command::new(BIN)
        .args([
            "verify",
            file.to_str().unwrap(),
            "--json",
            "--allow-dev-root",
            "--validators",
            genesis.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let verdict: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    let state = |name: &str| common::claim_state(&verdict, name);
    assert_eq!(state("run.settled"), Some(json!("holds")), "{verdict}");
    assert_eq!(verdict["ok"], true, "{verdict}");

    // `haca chat`, one message: the streamed answer on stdout, its route and receipt after.
    let out = Command::new(BIN)
        .args([
            "chat",
            "--once",
            // Greedy: the base model's answer is the same every run, so "some text came
            // back" does not hang on the sampler (a sampled answer may be only whitespace).
            "The capital of France is",
            "--temperature",
            "0",
            "--max-tokens",
            "8",
            "--node",
            &node.url,
            "--api-key",
            &key,
        ])
        .output()
        .unwrap();
    let (said, told) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{told}");
    assert!(!said.trim().is_empty(), "an answer: {told}");
    assert!(
        told.contains("local/gemma-3-270m over direct") && told.contains("/receipt"),
        "{told}"
    );

    // The official client, streaming and not.
    let Some(py) = python() else { return };
    let out = Command::new(py)
        .args(["-c", OPENAI_CLIENT, &node.url, &key])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openai client: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!v["text"].as_str().unwrap().trim().is_empty(), "{v}");
    assert!(v["run_id"].as_str().unwrap().len() == 64, "{v}");
    assert!(
        v["receipt_url"].as_str().unwrap().ends_with("/receipt"),
        "{v}"
    );
    assert!(
        v["stream_parts"].as_u64().unwrap() >= 2,
        "streamed in pieces: {v}"
    );
    assert!(!v["stream_text"].as_str().unwrap().trim().is_empty(), "{v}");
    assert!(v["stream_usage"].as_u64().unwrap() >= 1, "{v}");
    assert_eq!(
        v["stream_haca"]["route"]["provider"], "local/gemma-3-270m",
        "{v}"
    );
    assert!(!v["completion"].as_str().unwrap().is_empty(), "{v}");
    assert_eq!(v["unknown_model"]["status"], 404, "{v}");
    assert_eq!(v["bad_role"]["param"], "messages[0].role", "{v}");
    // The streamed run's receipt is there too.
    let streamed_run = v["stream_haca"]["run_id"].as_str().unwrap();
    let r = http
        .get(format!("{}/v1/runs/{streamed_run}/receipt", node.url))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    // Six runs were paid (the plain one, the tee one, `haca chat`, three by the Python
    // client); the refusals (bad fields, unknown model, a prompt over the context) cost
    // nothing.
    let me: Value = http
        .get(format!("{}/v1/apikeys/self", node.url))
        .bearer_auth(&key)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(me["balance"], "94000", "{me}");
}

/// A TCP server that accepts and never answers: an upstream that hangs.
fn silent_upstream() -> (std::net::TcpListener, u16) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

#[test]
fn a_hanging_upstream_times_out_in_openais_error_shape() {
    let dir = tempfile::tempdir().unwrap();
    let (_listener, port) = silent_upstream();
    let spec = format!("name=slow,url=http://127.0.0.1:{port}/v1,models=m,timeout=1");
    let node = Devnet::start(dir.path(), &["--provider", &spec]);
    let http = client();
    wait_ready(&http, &node.url);
    let t = Instant::now();
    let (status, _, v) = post(
        &http,
        &format!("{}/v1/chat/completions", node.url),
        &json!({"model": "slow/m", "messages": [{"role": "user", "content": "x"}]}),
    );
    assert_eq!(status, 504, "{v}");
    assert_eq!(v["error"]["code"], "upstream_timeout", "{v}");
    assert!(t.elapsed() < Duration::from_secs(30));
    let models: Value = http
        .get(format!("{}/v1/models", node.url))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(models["data"][0]["id"], "slow/m", "{models}");
    // A provider whose key variable is unset refuses to start, by name.
    let out = Command::new(BIN)
        .args([
            "devnet",
            "--listen",
            "127.0.0.1:0",
            "--no-llm",
            "--data-dir",
        ])
        .arg(dir.path().join("other"))
        .args([
            "--provider",
            "name=x,url=http://127.0.0.1:1/v1,models=m,key_env=HACA_TEST_UNSET_KEY",
        ])
        .env_remove("HACA_TEST_UNSET_KEY")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("HACA_TEST_UNSET_KEY"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Streams `body` from `url`, killing `victim` once the first words arrived.
fn stream_and_kill(
    http: &Client,
    url: &str,
    body: &Value,
    victim: Devnet,
) -> (String, Vec<Value>, bool) {
    let r = http
        .post(format!("{url}/v1/chat/completions"))
        .json(body)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut victim = Some(victim);
    read_stream(r, |v| {
        if v["choices"][0]["delta"]["content"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
        {
            if let Some(n) = victim.take() {
                n.kill9();
            }
        }
    })
}

#[test]
fn upstream_failover_and_private_requests_failing_closed() {
    let Some(model) = common::local_model("llm_gateway") else {
        return;
    };
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    // Two haca nodes as upstream providers: "up" (standard; falls back to local) and
    // "sealed" (declared tee; its fallback is standard, so a private request never takes it).
    let up = start_llm_node(dirs[0].path(), &model, &[]);
    let sealed = start_llm_node(dirs[1].path(), &model, &[]);
    let up_spec = format!(
        "name=up,url={}/v1,models=local/gemma-3-270m,fallback=local,timeout=20",
        up.url
    );
    let sealed_spec = format!(
        "name=sealed,url={}/v1,models=local/gemma-3-270m,privacy=tee,fallback=local,timeout=20",
        sealed.url
    );
    let gw = start_llm_node(
        dirs[2].path(),
        &model,
        &["--provider", &up_spec, "--provider", &sealed_spec],
    );
    let http = client();

    // Turn 1 of a conversation, through the upstream node.
    let conv = "conv_failover_test";
    let long = |privacy: &str, model: &str| {
        json!({"model": model, "privacy": privacy, "conversation": conv, "stream": true,
               "max_tokens": 200, "min_tokens": 200, "temperature": 0.8, "seed": 1,
               "messages": [{"role": "user", "content": "Tell me a long story about a lighthouse."}]})
    };
    let (status, h, v) = post(
        &http,
        &format!("{}/v1/chat/completions", gw.url),
        &json!({"model": "up/local/gemma-3-270m", "conversation": conv, "max_tokens": 12,
                "messages": [{"role": "user", "content": "Hello!"}]}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["haca"]["route"]["provider"], "up/local/gemma-3-270m",
        "{v}"
    );
    assert_eq!(h["x-haca-conversation"], conv);
    let first_run = v["haca"]["run_id"].as_str().unwrap().to_owned();
    let receipt: Value = http
        .get(format!("{}/v1/runs/{first_run}/receipt", gw.url))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(
        receipt["boxes"]["artifact"]["evidence"].is_null(),
        "an upstream's bytes are not named: {receipt}"
    );
    assert!(receipt["boxes"]["execution"]["evidence"]["runtime"]
        .as_str()
        .unwrap()
        .starts_with("upstream up"));

    // Private on a standard upstream: refused before anything is sent.
    let (status, _, v) = post(
        &http,
        &format!("{}/v1/chat/completions", gw.url),
        &json!({"model": "up/local/gemma-3-270m", "privacy": "private",
                "messages": [{"role": "user", "content": "my secret"}]}),
    );
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["code"], "privacy_unmet", "{v}");
    assert_eq!(v["error"]["param"], "privacy", "{v}");

    // Private, on the tee-declared upstream, killed mid-stream: fails closed, no fallback.
    let (text, events, done) = stream_and_kill(
        &http,
        &gw.url,
        &long("private", "sealed/local/gemma-3-270m"),
        sealed,
    );
    assert!(!text.is_empty(), "some words came before the kill");
    assert!(!done, "a failed stream does not end with [DONE]");
    let last = events.last().unwrap();
    let msg = last["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("an error event: {last}"));
    assert!(
        msg.contains("sealed") && msg.contains("privacy: private"),
        "{msg}"
    );
    assert!(
        events.iter().all(|e| e["haca"]["route"].is_null()),
        "no route served it"
    );

    // Any, on the standard upstream, killed mid-stream: the local model carries on.
    let (text, events, done) =
        stream_and_kill(&http, &gw.url, &long("any", "up/local/gemma-3-270m"), up);
    assert!(done, "the stream finished: {:?}", events.last());
    let fin = events
        .iter()
        .find(|e| e["haca"].is_object())
        .expect("a final event with the route");
    let attempts = fin["haca"]["route"]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{fin}");
    assert_eq!(attempts[0]["provider"], "up");
    assert_eq!(attempts[0]["outcome"], "failed");
    assert!(
        attempts[0]["error"].as_str().unwrap().contains("up"),
        "{fin}"
    );
    assert_eq!(attempts[1]["provider"], "local");
    assert_eq!(attempts[1]["outcome"], "served");
    assert_eq!(fin["haca"]["route"]["provider"], "local/gemma-3-270m");
    assert!(
        text.split_whitespace().count() > 20,
        "one continued answer: {text}"
    );
    // The receipt says the same, and its output is the whole text the client read.
    let run = fin["haca"]["run_id"].as_str().unwrap();
    let run_v: Value = http
        .get(format!("{}/v1/runs/{run}", gw.url))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(run_v["output"]["content"], text.as_str(), "{run_v}");
    let receipt = &run_v["receipt"];
    assert_eq!(
        receipt["boxes"]["route"]["evidence"]["attempts"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // The conversation shows the turn that changed provider and fell back.
    let c: Value = http
        .get(format!("{}/v1/conversations/{conv}", gw.url))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let turns = c["turns"].as_array().unwrap();
    assert_eq!(turns.len(), 2, "the failed private turn is not a turn: {c}");
    assert_eq!(turns[1]["fell_back"], true, "{c}");
    assert_eq!(turns[1]["changed"], json!(["provider"]), "{c}");
}

/// Waits until the local model `id` has loaded; returns its `/v1/models` entry.
fn wait_model_named(http: &Client, url: &str, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let v: Value = http
            .get(format!("{url}/v1/models"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        let m = v["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} is listed: {v}"));
        match m["haca"]["state"].as_str() {
            Some("ready") => return m,
            Some("failed") => panic!("{id} failed to load: {m}"),
            _ => {}
        }
        assert!(Instant::now() < deadline, "{id} did not load in 120 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

const TINY_TEMPLATE: &str = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}<|end|>{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}";

#[test]
fn a_second_architecture_is_served_by_its_own_name_beside_gemma_and_held_to_a_strict_schema() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = dir.path().join("tiny.gguf");
    std::fs::write(
        &tiny,
        haca_exec::llm::gguf::fixture::tiny_llama("Tiny Llama", "llama", Some(TINY_TEMPLATE)),
    )
    .unwrap();
    let tiny = tiny.to_str().unwrap().to_owned();
    let gemma = common::local_model("llm_gateway");
    let mut args = vec!["--llm-model", tiny.as_str()];
    let gemma_path = gemma.as_ref().map(|p| p.to_str().unwrap().to_owned());
    if let Some(g) = &gemma_path {
        args.extend(["--llm-model", g.as_str()]);
    }
    let node = Devnet::start(&dir.path().join("node"), &args);
    let http = client();
    wait_ready(&http, &node.url);
    let listed = wait_model_named(&http, &node.url, "local/tiny-llama");
    assert_eq!(listed["haca"]["architecture"], "llama", "{listed}");
    assert_eq!(listed["haca"]["instruction_tuned"], false, "{listed}");
    if gemma.is_some() {
        let g = wait_model_named(&http, &node.url, "local/gemma-3-270m");
        assert_eq!(g["haca"]["architecture"], "gemma3");
        assert_eq!(
            g["haca"]["instruction_tuned"], false,
            "the default is a base model"
        );
    }
    let chat = format!("{}/v1/chat/completions", node.url);
    let (status, _, v) = post(
        &http,
        &chat,
        &json!({"model": "local/tiny-llama", "max_tokens": 6, "min_tokens": 6, "temperature": 0,
                "messages": [{"role": "user", "content": "hello"}]}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["usage"]["completion_tokens"], 6, "{v}");
    assert_eq!(v["haca"]["route"]["provider"], "local/tiny-llama", "{v}");

    let schema = json!({"type": "object", "additionalProperties": false,
        "required": ["color", "size"],
        "properties": {"color": {"enum": ["red", "green", "blue"]},
                       "size": {"type": "integer", "minimum": 1, "maximum": 9}}});
    let (status, _, v) = post(
        &http,
        &chat,
        &json!({"model": "local/tiny-llama", "max_tokens": 100, "temperature": 0.9, "seed": 5,
                "messages": [{"role": "user", "content": "a color and a size"}],
                "response_format": {"type": "json_schema",
                    "json_schema": {"name": "thing", "strict": true, "schema": schema}}}),
    );
    assert_eq!(status, 200, "{v}");
    let answer: Value =
        serde_json::from_str(v["choices"][0]["message"]["content"].as_str().unwrap())
            .unwrap_or_else(|e| panic!("{e}: {v}"));
    let o = answer.as_object().expect("an object");
    assert_eq!(o.len(), 2, "{answer}");
    assert!(
        ["red", "green", "blue"].contains(&o["color"].as_str().unwrap_or("")),
        "{answer}"
    );
    assert!(
        (1..=9).contains(&o["size"].as_i64().unwrap_or(0)),
        "{answer}"
    );

    let (status, _, v) = post(
        &http,
        &chat,
        &json!({"model": "local/tiny-llama",
                "messages": [{"role": "user", "content": "x"}],
                "response_format": {"type": "json_schema", "json_schema": {"name": "bad",
                    "strict": true, "schema": {"properties": {"a": {"$ref": "#/$defs/none"}}}}}}),
    );
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("response_format.json_schema.schema"),
        "{v}"
    );
}

#[test]
fn a_bad_gguf_is_refused_at_start_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cut = dir.path().join("cut.gguf");
    let whole = haca_exec::llm::gguf::fixture::tiny_llama("Tiny Llama", "llama", None);
    std::fs::write(&cut, &whole[..whole.len() / 2]).unwrap();
    let out = Command::new(BIN)
        .args([
            "devnet",
            "--listen",
            "127.0.0.1:0",
            "--price-per-request",
            "0",
            "--data-dir",
        ])
        .arg(dir.path().join("node"))
        .arg("--llm-model")
        .arg(&cut)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cut.gguf") && err.contains("truncated"),
        "{err}"
    );
}

#[test]
fn a_full_generation_queue_is_503_with_retry_after_and_leaving_clients_free_their_slots() {
    let Some(model) = common::local_model("llm_gateway") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let node = start_llm_node(dir.path(), &model, &[]);
    let http = client();
    let url = format!("{}/v1/completions", node.url);
    let long = json!({"model": "local/gemma-3-270m", "prompt": "Once upon a time",
        "max_tokens": 3000, "min_tokens": 3000, "temperature": 0, "stream": true});
    let capacity = haca_exec::llm::SLOTS + haca_exec::llm::QUEUE;
    // Every slot and queue place taken by streams nobody reads yet.
    let held: Vec<_> = (0..capacity)
        .map(|_| {
            let r = http.post(&url).json(&long).send().unwrap();
            assert_eq!(r.status(), 200);
            r
        })
        .collect();
    let short = json!({"model": "local/gemma-3-270m", "prompt": "Hi", "max_tokens": 2});
    let probe = json!({"model": "local/gemma-3-270m", "prompt": "Hi", "max_tokens": 2,
        "stream": true});
    // The streams take their places as their requests reach the engine: the next one is
    // refused once they all have. A probe that got in is dropped at once (and gives its
    // place back as it goes).
    let deadline = Instant::now() + Duration::from_secs(60);
    let refused = loop {
        let r = http.post(&url).json(&probe).send().unwrap();
        if r.status() == 503 {
            break r;
        }
        assert!(Instant::now() < deadline, "never refused: {}", r.status());
        std::thread::sleep(Duration::from_millis(200));
    };
    let retry: u32 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    let body: Value = refused.json().unwrap();
    assert_eq!(body["error"]["code"], "model_busy", "{body}");
    // The clients go away: their places free without waiting for 3,000 tokens each.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, _, v) = post(&http, &url, &short);
        if status == 200 {
            assert_eq!(v["usage"]["completion_tokens"], 2, "{v}");
            break;
        }
        assert_eq!(status, 503, "{v}");
        assert!(Instant::now() < deadline, "the places were not freed");
        std::thread::sleep(Duration::from_millis(200));
    }
}
