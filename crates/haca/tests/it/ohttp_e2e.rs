//! The private path end to end: a real `haca devnet` (gateway and its in-process relay) with
//! a fake OpenAI-compatible upstream, a separate `haca node --roles relay` behind a TCP
//! proxy that records what the relay sends and receives, and haca-relay's client side
//! sealing requests and opening answers.

use crate::common::{in_ci, local_model, wait_ready, BIN};
use haca_relay::KeyConfig;
use reqwest::blocking::Client;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const PROMPT: &str = "secret-prompt-7f3a: what is the capital of Atlantis?";
const ANSWER: &str = "secret-answer-91c2: Poseidonia";

/// A fake OpenAI-compatible upstream that streams [`ANSWER`] to every chat call.
pub(crate) fn fake_upstream() -> u16 {
    crate::common::fake_upstream(|_| ANSWER.into())
}

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The value of the first line the child prints starting with `prefix`.
fn printed(child: &mut Child, prefix: &'static str) -> String {
    crate::common::printed(child, prefix, Duration::from_secs(60))
        .expect("the process printed its URL within 60 s")
}

struct Net {
    _devnet: Proc,
    gateway: String,
    relay: String,
    http: Client,
    _dir: tempfile::TempDir,
}

/// A devnet whose `fake` provider is [`fake_upstream`].
fn devnet() -> Net {
    let port = fake_upstream();
    let spec = format!("name=fake,url=http://127.0.0.1:{port}/v1,models=m1");
    devnet_with(&["--no-llm", "--provider", &spec], &[])
}

fn devnet_with(args: &[&str], env: &[(&str, &str)]) -> Net {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(["devnet", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .args(if args.contains(&"--price-per-request") {
            &[][..]
        } else {
            &["--price-per-request", "0"][..]
        })
        .args(args)
        .envs(env.iter().copied())
        .env("HACA_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let (mut gateway, mut relay) = (None, None);
    while gateway.is_none() || relay.is_none() {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("devnet printed its url and relay within 60 s");
        let first = |p: &str| {
            line.trim()
                .strip_prefix(p)
                .map(|v| v.split_whitespace().next().unwrap_or("").to_owned())
        };
        gateway = gateway.or(first("url:"));
        relay = relay.or(first("relay:"));
    }
    let http = Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let gateway = gateway.unwrap();
    wait_ready(&http, &gateway);
    Net {
        _devnet: Proc(child),
        gateway,
        relay: relay.unwrap(),
        http,
        _dir: dir,
    }
}

fn keys(http: &Client, base: &str) -> Vec<KeyConfig> {
    let r = http.get(format!("{base}/v1/ohttp/config")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], haca_relay::MEDIA_TYPE_KEYS);
    KeyConfig::decode_list(&r.bytes().unwrap()).unwrap()
}

fn chat_body(stream: bool) -> Vec<u8> {
    json!({"model": "fake/m1", "stream": stream,
           "messages": [{"role": "user", "content": PROMPT}]})
    .to_string()
    .into_bytes()
}

fn send(http: &Client, relay: &str, sealed: Vec<u8>, stream: bool) -> reqwest::blocking::Response {
    let mut req = http
        .post(format!("{relay}/v1/ohttp"))
        .header("content-type", haca_relay::MEDIA_TYPE_REQUEST)
        .header("x-forwarded-for", "203.0.113.9")
        .header("cookie", "who=alice")
        .body(sealed);
    if stream {
        req = req
            .header("accept", haca_relay::MEDIA_TYPE_CHUNKED_RESPONSE)
            .header("x-ohttp-stream", "true");
    }
    req.send().unwrap()
}

/// Seals a chat to the current key, sends it through `relay`, opens the answer.
fn private_chat(http: &Client, relay: &str) -> Value {
    let config = &keys(http, relay)[0];
    let (sealed, ctx) = haca_relay::encapsulate(config, &chat_body(false)).unwrap();
    let r = send(http, relay, sealed, false);
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], haca_relay::MEDIA_TYPE_RESPONSE);
    assert_eq!(r.headers()["cache-control"], "no-store");
    serde_json::from_slice(&ctx.open(&r.bytes().unwrap()).unwrap()).unwrap()
}

#[test]
fn a_chat_sealed_through_the_relay_opens_and_its_route_box_says_ohttp_and_names_the_relay() {
    let net = devnet();
    let configs = keys(&net.http, &net.relay);
    assert!(configs.len() >= 2, "two key ids are served at once");
    let file = net._dir.path().join("ohttp-keys.json");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600,
        "the private key ring is the node's alone"
    );
    assert_eq!(configs, keys(&net.http, &net.gateway));
    let answer = private_chat(&net.http, &net.relay);
    assert_eq!(answer["choices"][0]["message"]["content"], ANSWER);
    let route = &answer["haca"]["route"];
    assert_eq!(route["path"], "ohttp", "{answer}");
    assert_eq!(route["relay"], net.relay.as_str(), "{answer}");
    let run = answer["haca"]["run_id"].as_str().unwrap();
    let receipt: Value = net
        .http
        .get(format!("{}/v1/runs/{run}/receipt", net.gateway))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let evidence = &receipt["boxes"]["route"]["evidence"];
    assert_eq!(evidence["path"], "ohttp", "{receipt}");
    assert_eq!(evidence["relay"], net.relay.as_str());
    // It verifies offline; route.private is the node's word, not a failure.
    let file = net._dir.path().join("ohttp-receipt.json");
    std::fs::write(&file, receipt.to_string()).unwrap();
    let out = Command::new(BIN)
        .args(["verify", file.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    let verdict: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(verdict["ok"], true, "{verdict}");
    assert_eq!(
        crate::common::claim_state(&verdict, "route.private"),
        Some(json!("unchecked")),
        "{verdict}"
    );

    // /v1/tee shows the keys, signed by the node over the key list it serves.
    let tee: Value = net
        .http
        .get(format!("{}/v1/tee", net.gateway))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let o = &tee["enclaves"][0]["ohttp"];
    assert_eq!(o["key_id"], configs[0].key_id, "{tee}");
    let list = haca_relay::KeyConfig::encode_list(&configs);
    let digest = haca_core::hash::sha256(&list);
    let msg = [b"haca.ohttp.keys.v1:".as_slice(), digest.as_bytes()].concat();
    let signer: haca_core::NodeId = o["signer"].as_str().unwrap().parse().unwrap();
    haca_core::keys::verify(&signer, &msg, o["signature"].as_str().unwrap()).unwrap();
}

#[test]
fn a_streamed_private_chat_comes_back_one_sealed_sse_event_per_chunk() {
    let net = devnet();
    let config = &keys(&net.http, &net.relay)[0];
    let (sealed, ctx) = haca_relay::encapsulate(config, &chat_body(true)).unwrap();
    let r = send(&net.http, &net.relay, sealed, true);
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        haca_relay::MEDIA_TYPE_CHUNKED_RESPONSE
    );
    let chunks = ctx.open_chunked(&r.bytes().unwrap()).unwrap();
    let text: Vec<String> = chunks
        .iter()
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    assert!(text.iter().any(|t| t.contains(ANSWER)), "{text:?}");
    assert!(text.iter().any(|t| t.contains("[DONE]")), "{text:?}");
    assert!(
        text.iter().any(|t| t.contains("\"ohttp\"")),
        "the final event's route says ohttp: {text:?}"
    );
}

#[test]
fn unknown_key_ids_truncated_replayed_and_mistyped_requests_are_refused_without_a_crash() {
    let net = devnet();
    let config = &keys(&net.http, &net.relay)[0];
    // An unknown key id: RFC 9458's problem document.
    let mut other = config.clone();
    other.key_id = config.key_id.wrapping_add(100);
    let (sealed, _) = haca_relay::encapsulate(&other, &chat_body(false)).unwrap();
    let r = send(&net.http, &net.relay, sealed, false);
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    assert_eq!(r.text().unwrap(), haca_relay::KEY_PROBLEM_JSON);
    // Truncated: a 400 naming why.
    let (sealed, _) = haca_relay::encapsulate(config, &chat_body(false)).unwrap();
    for cut in [0, 3, 20, sealed.len() - 1] {
        let r = send(&net.http, &net.relay, sealed[..cut].to_vec(), false);
        assert_eq!(r.status(), 400, "cut at {cut}");
        let v: Value = r.json().unwrap();
        assert!(
            matches!(
                v["error"]["code"].as_str(),
                Some("truncated" | "request_decrypt_failed")
            ),
            "{v}"
        );
    }
    // Replayed: the second copy is refused.
    let r = send(&net.http, &net.relay, sealed.clone(), false);
    assert_eq!(r.status(), 200);
    let r = send(&net.http, &net.relay, sealed, false);
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().unwrap()["error"]["code"],
        "replayed_request"
    );
    // Another media type: 415.
    let r = net
        .http
        .post(format!("{}/v1/ohttp", net.gateway))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .unwrap();
    assert_eq!(r.status(), 415);
    // Another method: 405 in the API's shape.
    let r = net
        .http
        .get(format!("{}/v1/ohttp", net.gateway))
        .send()
        .unwrap();
    assert_eq!(r.status(), 405);
    assert!(r.json::<Value>().unwrap()["error"]["code"].is_string());
    // The gateway still serves.
    let answer = private_chat(&net.http, &net.relay);
    assert_eq!(answer["choices"][0]["message"]["content"], ANSWER);
}

#[test]
fn a_private_request_is_met_by_the_ohttp_path_and_refused_on_the_direct_one() {
    let net = devnet();
    let body = json!({"model": "fake/m1", "privacy": "private",
                      "messages": [{"role": "user", "content": PROMPT}]});
    // Direct, a standard upstream cannot meet it: refused before anything is sent.
    let r = net
        .http
        .post(format!("{}/v1/chat/completions", net.gateway))
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().unwrap()["error"]["code"], "privacy_unmet");
    // Sealed through the relay, the node never learns who asked: served, policy kept.
    let config = &keys(&net.http, &net.relay)[0];
    let (sealed, ctx) = haca_relay::encapsulate(config, body.to_string().as_bytes()).unwrap();
    let r = send(&net.http, &net.relay, sealed, false);
    let answer: Value = serde_json::from_slice(&ctx.open(&r.bytes().unwrap()).unwrap()).unwrap();
    assert_eq!(
        answer["choices"][0]["message"]["content"], ANSWER,
        "{answer}"
    );
    assert_eq!(answer["haca"]["route"]["path"], "ohttp");
    assert_eq!(answer["haca"]["route"]["policy"], "private");
}

/// A TCP proxy to `target` recording every byte both ways.
fn recording_proxy(target: String) -> (u16, Arc<Mutex<Vec<u8>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(client) = conn else { continue };
            let Ok(server) = TcpStream::connect(&target) else {
                continue;
            };
            for (mut from, mut to) in [
                (client.try_clone().unwrap(), server.try_clone().unwrap()),
                (server, client),
            ] {
                let record = record.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 8192];
                    loop {
                        match from.read(&mut buf) {
                            Ok(0) | Err(_) => {
                                let _ = to.shutdown(std::net::Shutdown::Write);
                                return;
                            }
                            Ok(n) => {
                                record.lock().unwrap().extend_from_slice(&buf[..n]);
                                if to.write_all(&buf[..n]).is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        }
    });
    (port, seen)
}

#[test]
fn the_relays_traffic_and_logs_hold_no_plaintext_of_the_prompt_or_the_answer() {
    let net = devnet();
    let target = net.gateway.trim_start_matches("http://").to_owned();
    let (port, seen) = recording_proxy(target);
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new(BIN)
        .args(["node", "--roles", "relay", "--listen", "127.0.0.1:0"])
        .args(["--gateway", &format!("http://127.0.0.1:{port}")])
        .env("HACA_LOG", "trace")
        .stdout(Stdio::piped())
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    let relay = printed(&mut child, "url:");
    let _relay = Proc(child);
    let answer = private_chat(&net.http, &relay);
    assert_eq!(answer["choices"][0]["message"]["content"], ANSWER);
    assert_eq!(answer["haca"]["route"]["relay"], relay.as_str());
    let traffic = seen.lock().unwrap().clone();
    assert!(traffic.len() > 100, "the proxy saw the relay's traffic");
    let logs = std::fs::read(log.path()).unwrap();
    for (what, bytes) in [("traffic", &traffic), ("logs", &logs)] {
        for secret in [PROMPT, ANSWER, "secret-prompt", "secret-answer", "Atlantis"] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "the relay's {what} hold {secret:?}"
            );
        }
    }
    // Client-identifying headers stayed with the relay.
    let text = String::from_utf8_lossy(&traffic).to_ascii_lowercase();
    assert!(!text.contains("x-forwarded-for"), "{text}");
    assert!(!text.contains("alice"), "{text}");
    assert!(text.contains("x-haca-relay"), "{text}");
}

/// OpenGradient's Python with its OHTTP client: `HACA_OG_PYTHON`, else the venv haca-relay's
/// interop test makes (`~/.cache/haca-og-venv`). `None` (after saying why) when it does not
/// load, except under `CI=true`, where that fails the test.
fn og_python() -> Option<PathBuf> {
    let python = std::env::var_os("HACA_OG_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/haca-og-venv/bin/python")
        });
    let loads = Command::new(&python)
        .arg(og_script())
        .arg("check")
        .output()
        .is_ok_and(|o| o.status.success());
    if loads {
        return Some(python);
    }
    let why = format!(
        "OpenGradient's OHTTP client does not load from {} (set HACA_OG_PYTHON, or run haca-relay's og_python test once to make the venv)",
        python.display()
    );
    assert!(!in_ci(), "{why}");
    eprintln!("opengradient_relay_client: skipped: {why}");
    None
}

fn og_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/it/og_relay_client.py")
}

/// OpenGradient's own `OhttpRelayClient`, unchanged, sends a chat sealed to the key `GET
/// /v1/tee` lists through devnet's relay, single-shot and streamed; it verifies the
/// enclave's signature on each answer before returning it.
#[test]
fn opengradients_relay_client_gets_a_verified_private_chat_through_a_haca_relay() {
    let Some(python) = og_python() else { return };
    let Some(model) = local_model("opengradients_relay_client") else {
        return;
    };
    let net = devnet_with(&["--llm-model", model.to_str().unwrap()], &[]);
    let tee: Value = net
        .http
        .get(format!("{}/v1/tee", net.gateway))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let entry = &tee["enclaves"][0];
    let body = json!({"model": "local/gemma-3-270m", "max_tokens": 8, "temperature": 0,
                      "messages": [{"role": "user", "content": "Say hello."}]});
    // The enclave may still be loading the model: retry for a while.
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    let out = loop {
        let out = Command::new(&python)
            .arg(og_script())
            .args(["chat", &net.relay, &entry.to_string(), &body.to_string()])
            .output()
            .unwrap();
        if out.status.success() || std::time::Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_secs(2));
    };
    assert!(
        out.status.success(),
        "OpenGradient's client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    for how in ["single", "stream"] {
        assert_eq!(v[how]["tee_id"], entry["tee_id"], "{v}");
        assert!(!v[how]["content"].as_str().unwrap().is_empty(), "{v}");
        assert_eq!(v[how]["route"]["path"], "ohttp", "{v}");
        assert_eq!(v[how]["route"]["relay"], net.relay.as_str(), "{v}");
    }
    assert!(v["stream"]["frames"].as_u64().unwrap() > 1, "{v}");
}

/// Seals `inner` (BHTTP) to the current key, sends it through the relay, opens the answer.
fn bhttp_call(net: &Net, inner: haca_relay::bhttp::InnerRequest) -> (u16, Value) {
    let config = &keys(&net.http, &net.relay)[0];
    let (sealed, ctx) = haca_relay::encapsulate(config, &inner.encode().unwrap()).unwrap();
    let r = send(&net.http, &net.relay, sealed, false);
    assert_eq!(r.status(), 200);
    let answer = ctx.open(&r.bytes().unwrap()).unwrap();
    let answer = haca_relay::bhttp::InnerResponse::decode(&answer).unwrap();
    (answer.status, serde_json::from_slice(&answer.body).unwrap())
}

#[test]
fn a_standard_bhttp_client_reaches_the_route_its_inner_request_names() {
    let net = devnet();
    let request = |method: &str, path: &str, body: Vec<u8>| haca_relay::bhttp::InnerRequest {
        method: method.into(),
        scheme: "http".into(),
        authority: "gateway".into(),
        path: path.into(),
        headers: vec![("content-type".into(), "application/json".into())],
        body,
    };
    let (status, models) = bhttp_call(&net, request("GET", "/v1/models", vec![]));
    assert_eq!(status, 200);
    assert!(models.to_string().contains("fake/m1"), "{models}");
    let (status, answer) = bhttp_call(
        &net,
        request("POST", "/v1/chat/completions", chat_body(false)),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["choices"][0]["message"]["content"], ANSWER);
    assert_eq!(answer["haca"]["route"]["path"], "ohttp", "{answer}");
    // A sealed request cannot name the OHTTP route again.
    let (status, body) = bhttp_call(&net, request("POST", "/v1/ohttp", vec![]));
    // Not served inside (404), rather than refused for its media type (415) by the route.
    assert_eq!(status, 404, "{body}");
}

#[test]
fn keys_rotate_on_schedule_and_a_request_sealed_to_the_previous_key_still_opens() {
    let port = fake_upstream();
    let spec = format!("name=fake,url=http://127.0.0.1:{port}/v1,models=m1");
    let net = devnet_with(
        &["--no-llm", "--provider", &spec],
        &[("HACA_OHTTP_ROTATE_SECS", "2")],
    );
    let before = keys(&net.http, &net.gateway);
    let (sealed, ctx) = haca_relay::encapsulate(&before[0], &chat_body(false)).unwrap();
    // One rotation later the old current key is still answered.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let after = loop {
        let now = keys(&net.http, &net.gateway);
        if now[0].key_id != before[0].key_id {
            break now;
        }
        assert!(std::time::Instant::now() < deadline, "no rotation in 30 s");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(after.len() >= 2);
    assert!(after.iter().any(|c| c.key_id == before[0].key_id));
    let r = send(&net.http, &net.relay, sealed, false);
    assert_eq!(r.status(), 200);
    let answer: Value = serde_json::from_slice(&ctx.open(&r.bytes().unwrap()).unwrap()).unwrap();
    assert_eq!(answer["choices"][0]["message"]["content"], ANSWER);
    // Two rotations later it is gone: the client is told to fetch the keys again.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while keys(&net.http, &net.gateway)
        .iter()
        .any(|c| c.key_id == before[0].key_id)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the old key was never retired"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (sealed, _) = haca_relay::encapsulate(&before[0], &chat_body(false)).unwrap();
    let r = send(&net.http, &net.relay, sealed, false);
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
}

/// `haca chat --private` seals each turn to the node's key and sends it through devnet's
/// relay, which pays the charging node with its own API key: the answer streams back and the
/// route line says `ohttp via` the relay.
#[test]
fn haca_chat_private_goes_through_the_relay_which_pays_for_it() {
    let port = fake_upstream();
    let spec = format!("name=fake,url=http://127.0.0.1:{port}/v1,models=m1");
    let net = devnet_with(
        &[
            "--no-llm",
            "--provider",
            &spec,
            "--price-per-request",
            "1000",
        ],
        &[],
    );
    let out = Command::new(BIN)
        .args([
            "chat",
            "--private",
            "--relay",
            &net.relay,
            "--node",
            &net.gateway,
        ])
        .args(["--model", "fake/m1", "--once", PROMPT])
        .env_remove("HACA_API_KEY")
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains(ANSWER), "{stdout}");
    assert!(
        stderr.contains(&format!("over ohttp via {}", net.relay)),
        "{stderr}"
    );
    // An API key would name the user to the node: --private refuses one.
    let out = Command::new(BIN)
        .args([
            "chat",
            "--private",
            "--relay",
            &net.relay,
            "--node",
            &net.gateway,
        ])
        .args(["--model", "fake/m1", "--once", "hi", "--api-key", "k"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--private"));
}
