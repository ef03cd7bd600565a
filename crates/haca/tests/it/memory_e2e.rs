//! MemSync over HTTP on a real devnet with the real embedding model: per-user rows sealed at
//! rest, supersession of a contradicted fact, field-named refusals, export from one node and
//! import into another, and a chat call whose memory box lists the rows it used.

use crate::common::{embed_model, fake_upstream, last_line, Devnet};
use reqwest::blocking::{Client, RequestBuilder};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const FUNDS: u64 = 100_000;

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

fn api_key(node: &Devnet) -> String {
    last_line(&node.haca_ok(&["apikey", "create", "--fund", &FUNDS.to_string()]))
}

/// Sends `req` with the API key; the status and the JSON answer.
fn send(req: RequestBuilder, key: &str) -> (u16, Value) {
    let r = req.header("x-api-key", key).send().unwrap();
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

fn remember(http: &Client, url: &str, key: &str, said: &str) -> Value {
    let (s, v) = send(
        http.post(format!("{url}/v1/memories")).json(&json!({
            "messages": [{"role": "user", "content": said}],
            "agent_id": "test-agent",
            "source": "chat"
        })),
        key,
    );
    assert_eq!(s, 200, "{v}");
    v
}

fn search(http: &Client, url: &str, key: &str, query: &str) -> Vec<Value> {
    let (s, v) = send(
        http.post(format!("{url}/v1/memories/search"))
            .json(&json!({"query": query, "limit": 5, "include_bio": true})),
        key,
    );
    assert_eq!(s, 200, "{v}");
    v["memories"].as_array().unwrap().clone()
}

fn list(http: &Client, url: &str, key: &str) -> Vec<Value> {
    let (s, v) = send(http.get(format!("{url}/v1/memories")), key);
    assert_eq!(s, 200, "{v}");
    v["memories"].as_array().unwrap().clone()
}

/// Every byte of the node's database files.
fn database_bytes(dir: &std::path::Path) -> Vec<u8> {
    let mut all = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("haca.db") {
            all.extend(std::fs::read(e.path()).unwrap());
        }
    }
    all
}

#[test]
fn memories_are_per_user_sealed_at_rest_and_superseded_not_lost() {
    if embed_model("memsync").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let node = Devnet::start(dir.path(), &["--price-per-request", "1000"]);
    let (http, url) = (client(), node.url.clone());
    let (alice, bob) = (api_key(&node), api_key(&node));

    let added = remember(
        &http,
        &url,
        &alice,
        "I live in Lisbon. I work at Acme Robotics as a data engineer.",
    );
    assert!(added["memories_created"].as_u64().unwrap() >= 2, "{added}");
    assert_eq!(added["success"], true);
    assert!(added["processing_time"].as_f64().is_some(), "{added}");
    let cats = added["categories_detected"].as_array().unwrap();
    assert!(cats.iter().any(|c| c == "career"), "{added}");

    let hits = search(&http, &url, &alice, "which city is my home?");
    assert!(
        hits[0]["memory"].as_str().unwrap().contains("Lisbon"),
        "{hits:?}"
    );
    for k in [
        "id",
        "memory",
        "categories",
        "type",
        "vector_distance",
        "rerank_score",
    ] {
        assert!(hits[0].get(k).is_some(), "{k} in {}", hits[0]);
    }
    let lisbon = hits[0]["id"].as_str().unwrap().to_owned();

    // MemSync's scopes: a search naming another agent finds none of this agent's rows.
    for (agent, found) in [("test-agent", true), ("other-agent", false)] {
        let (s, v) = send(
            http.post(format!("{url}/v1/memories/search"))
                .json(&json!({"query": "which city is my home?", "agent_id": agent})),
            &alice,
        );
        assert_eq!(s, 200, "{v}");
        assert_eq!(
            !v["memories"].as_array().unwrap().is_empty(),
            found,
            "{agent}: {v}"
        );
    }
    assert_eq!(hits[0]["agent_id"], "test-agent", "{}", hits[0]);

    // Bob's key sees none of it, and cannot change or delete Alice's row.
    assert!(search(&http, &url, &bob, "which city is my home?").is_empty());
    assert!(list(&http, &url, &bob).is_empty());
    let (s, v) = send(
        http.patch(format!("{url}/v1/memories/{lisbon}"))
            .json(&json!({"memory": "Lives in Paris"})),
        &bob,
    );
    assert_eq!(s, 404, "{v}");
    let (s, v) = send(http.delete(format!("{url}/v1/memories/{lisbon}")), &bob);
    assert_eq!(s, 404, "{v}");

    // The store holds ciphertext only.
    let db = database_bytes(dir.path());
    assert!(
        !db.windows(6).any(|w| w == b"Lisbon"),
        "plaintext in the database"
    );

    // A contradicting fact supersedes the old row: kept, linked, never two live.
    let moved = remember(&http, &url, &alice, "I live in Berlin now.");
    let sup = moved["superseded"].as_array().unwrap();
    assert_eq!(sup.len(), 1, "{moved}");
    assert_eq!(sup[0]["id"], lisbon.as_str());
    let rows = list(&http, &url, &alice);
    let old = rows.iter().find(|r| r["id"] == lisbon.as_str()).unwrap();
    assert_eq!(old["state"], "superseded", "{old}");
    assert_eq!(old["superseded_by"], sup[0]["by"]);
    assert!(old["valid_until"].as_u64().is_some(), "{old}");
    let homes: Vec<&Value> = rows
        .iter()
        .filter(|r| r["subject"] == "home_city" && r["state"] == "live")
        .collect();
    assert_eq!(homes.len(), 1, "{rows:?}");
    assert!(homes[0]["memory"].as_str().unwrap().contains("Berlin"));
    let hits = search(&http, &url, &alice, "which city is my home?");
    assert!(hits.iter().all(|h| h["id"] != lisbon.as_str()), "{hits:?}");

    // Saying a fact again re-validates its row instead of storing it twice.
    let again = remember(&http, &url, &alice, "I live in Berlin now.");
    assert_eq!(again["memories_created"], 0, "{again}");
    assert_eq!(again["revalidated"].as_array().unwrap().len(), 1, "{again}");

    // Bad input names the field.
    for (body, field) in [
        (json!({"query": "x", "limit": 0}), "limit"),
        (json!({"query": "x", "limit": 101}), "limit"),
        (json!({"query": ""}), "query"),
        (json!({"limit": 5}), "query"),
        (
            json!({"query": "x", "categories": ["hobbies"]}),
            "categories",
        ),
    ] {
        let (s, v) = send(
            http.post(format!("{url}/v1/memories/search")).json(&body),
            &alice,
        );
        assert_eq!(s, 400, "{body}: {v}");
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(field), "{body}: {v}");
    }
    let r = http
        .post(format!("{url}/v1/memories/search"))
        .json(&json!({"query": "x"}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let (s, v) = send(
        http.post(format!("{url}/v1/memories/search"))
            .json(&json!({"query": "x"})),
        "hk_unknown",
    );
    assert_eq!(s, 401, "{v}");

    // Bio and profile.
    let (s, v) = send(
        http.patch(format!("{url}/v1/profile/bio"))
            .json(&json!({"bio": "Data engineer in Berlin."})),
        &alice,
    );
    assert_eq!(s, 200, "{v}");
    let (_, profile) = send(http.get(format!("{url}/v1/profile")), &alice);
    assert_eq!(profile["user_bio"], "Data engineer in Berlin.", "{profile}");
    assert_eq!(profile["superseded"], 1, "{profile}");
    let (_, other) = send(http.get(format!("{url}/v1/profile/bio")), &bob);
    assert_eq!(other["user_bio"], Value::Null, "{other}");

    // A delete deletes: the text is gone, a tombstone stays, and the log says so.
    let berlin = homes[0]["id"].as_str().unwrap().to_owned();
    let (s, v) = send(http.delete(format!("{url}/v1/memories/{berlin}")), &alice);
    assert_eq!(s, 200, "{v}");
    let rows = list(&http, &url, &alice);
    let gone = rows.iter().find(|r| r["id"] == berlin.as_str()).unwrap();
    assert_eq!(gone["state"], "deleted", "{gone}");
    assert_eq!(gone["memory"], "", "{gone}");
    let head: Value = http
        .get(format!("{url}/v1/log"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let size = head["size"].as_u64().unwrap();
    let mut logged = false;
    for i in 0..size {
        let e: Value = http
            .get(format!("{url}/v1/log/entries/{i}"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        if e["kind"] == "memory.delete" && e["data"]["id"] == berlin.as_str() {
            logged = true;
        }
    }
    assert!(
        logged,
        "no memory.delete entry for {berlin} in {size} log entries"
    );
}

#[test]
fn a_bundle_exported_from_one_node_imports_into_another_and_tampering_is_refused() {
    if embed_model("memsync export").is_none() {
        return;
    }
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let one = Devnet::start(d1.path(), &["--price-per-request", "1000"]);
    let two = Devnet::start(d2.path(), &["--price-per-request", "1000"]);
    let http = client();
    let (k1, k2) = (api_key(&one), api_key(&two));
    remember(
        &http,
        &one.url,
        &k1,
        "I'm allergic to peanuts. I live in Porto.",
    );
    remember(&http, &one.url, &k1, "I moved to Madrid last month.");
    one.haca_ok(&[
        "memory",
        "add",
        "Prefers window seats on long flights",
        "--category",
        "travel",
        "--api-key",
        &k1,
    ]);
    let before = list(&http, &one.url, &k1);

    let file = d1.path().join("alice.bundle.json");
    let out = one.haca_ok(&["memory", "export", file.to_str().unwrap(), "--api-key", &k1]);
    assert_eq!(last_line(&out), file.to_str().unwrap());
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(!text.contains("peanuts"), "the bundle is sealed");

    let out = two.haca_ok(&["memory", "import", file.to_str().unwrap(), "--api-key", &k2]);
    assert_eq!(last_line(&out), format!("imported {}", before.len()));
    let after = list(&http, &two.url, &k2);
    let view = |rows: &[Value]| {
        let mut v: Vec<(String, String, String, Value)> = rows
            .iter()
            .map(|r| {
                (
                    r["id"].as_str().unwrap().to_owned(),
                    r["memory"].as_str().unwrap().to_owned(),
                    r["state"].as_str().unwrap().to_owned(),
                    r["created_at"].clone(),
                )
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    assert_eq!(view(&before), view(&after));
    let hits = search(&http, &two.url, &k2, "what food must I avoid?");
    assert!(
        hits[0]["memory"].as_str().unwrap().contains("peanut"),
        "{hits:?}"
    );

    // A ciphertext changed by one character, or a signature's row list edited, is refused.
    let mut bundle: Value = serde_json::from_str(&text).unwrap();
    let ct = bundle["rows"][0]["ciphertext"].as_str().unwrap().to_owned();
    let first = if ct.starts_with('A') { "B" } else { "A" };
    let flipped = format!("{first}{}", &ct[1..]);
    bundle["rows"][0]["ciphertext"] = json!(flipped);
    let key = std::fs::read_to_string(d1.path().join("alice.bundle.json.key")).unwrap();
    let k3 = api_key(&two);
    let (s, v) = send(
        http.post(format!("{}/v1/memories/import", two.url))
            .json(&json!({"bundle": bundle, "key": key.trim()})),
        &k3,
    );
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("signature"),
        "{v}"
    );
    let mut wrong_key = key.trim().to_owned();
    wrong_key.replace_range(
        0..2,
        if wrong_key.starts_with("00") {
            "11"
        } else {
            "00"
        },
    );
    let original: Value = serde_json::from_str(&text).unwrap();
    let (s, v) = send(
        http.post(format!("{}/v1/memories/import", two.url))
            .json(&json!({"bundle": original, "key": wrong_key})),
        &k3,
    );
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("seal"),
        "{v}"
    );
    assert!(list(&http, &two.url, &k3).is_empty());
    // Rows dropped and the rest signed again by another node: the signature holds, the seal
    // made under the bundle key does not.
    let mut fewer: haca_mem::Bundle = serde_json::from_value(original.clone()).unwrap();
    fewer.rows.pop();
    let other = haca_core::NodeKey::from_seed([77; 32]);
    fewer.signer = other.node_id();
    fewer.signature = hex::encode(other.sign(&fewer.signed_message().unwrap()));
    assert!(fewer.verify().is_ok());
    let (s, v) = send(
        http.post(format!("{}/v1/memories/import", two.url))
            .json(&json!({"bundle": fewer, "key": key.trim()})),
        &k3,
    );
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("seal"),
        "{v}"
    );

    // The wallet is a user too (an x402 payer's signature), the same one on every node.
    let home = tempfile::tempdir().unwrap();
    let env = [("HACA_HOME", home.path())];
    let out = one.haca_env(&["memory", "add", "Speaks Portuguese and Spanish"], &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = one.haca_env(&["memory", "search", "which languages do I speak?"], &env);
    assert!(String::from_utf8_lossy(&out.stdout).contains("Portuguese"));
    let out = two.haca_env(&["memory", "list"], &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).trim().is_empty(),
        "node two has none of it"
    );
}

/// An OpenAI-compatible upstream that answers each chat call with the system message it got
/// (what haca let into the prompt), so the test sees what the model saw.
fn echo_upstream() -> u16 {
    fake_upstream(|req| {
        req["messages"]
            .as_array()
            .and_then(|m| m.iter().find(|m| m["role"] == "system"))
            .map(|m| m["content"].as_str().unwrap_or("").to_owned())
            .unwrap_or_else(|| "no system message".into())
    })
}

#[test]
fn a_chat_with_memory_lists_the_rows_it_used_in_its_receipt() {
    if embed_model("memsync chat").is_none() {
        return;
    }
    let port = echo_upstream();
    let dir = tempfile::tempdir().unwrap();
    let spec = format!("name=up,url=http://127.0.0.1:{port}/v1,models=m");
    let node = Devnet::start(
        dir.path(),
        &["--price-per-request", "1000", "--provider", &spec],
    );
    let (http, url) = (client(), node.url.clone());
    let key = api_key(&node);
    remember(&http, &url, &key, "I'm vegetarian. I live in Oslo.");

    let r = http
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&json!({"model": "up/m", "memory": {"limit": 2},
                      "messages": [{"role": "user", "content": "Suggest a dinner place near my home. My dog is called Rex."}]}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let answer: Value = r.json().unwrap();
    let seen = answer["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(
        seen.contains("Oslo") || seen.contains("vegetarian"),
        "the model saw: {seen}"
    );
    let run = answer["id"]
        .as_str()
        .unwrap()
        .trim_start_matches("chatcmpl-")
        .to_owned();
    let receipt: Value = http
        .get(format!("{url}/v1/runs/{run}/receipt"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let mem = &receipt["boxes"]["memory"]["evidence"];
    let rows = mem["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{mem}");
    let payer = receipt["boxes"]["payment"]["evidence"]["payer"]
        .as_str()
        .unwrap();
    assert!(
        mem["owner"].as_str().unwrap().eq_ignore_ascii_case(payer),
        "{mem}"
    );
    for r in rows {
        assert!(r["sealed_sha256"].as_str().is_some(), "{r}");
        assert!(r["score"].as_f64().unwrap() > 0.0, "{r}");
    }
    assert!(
        mem["embedder"]
            .as_str()
            .unwrap()
            .starts_with("all-MiniLM-L6-v2"),
        "{mem}"
    );

    // `haca verify` finds memory.owned and memory.fresh holding for this run.
    let file = dir.path().join("receipt.json");
    std::fs::write(&file, receipt.to_string()).unwrap();
    let (_, printed) = node.verify(&file, &["--memory-max-age", "1d"]);
    for claim in ["memory.owned", "memory.fresh(1d)"] {
        let line = crate::common::claim_line(&printed, claim);
        assert!(line.contains("holds"), "{claim}: {line}\n{printed}");
    }

    // What the user said in the call is remembered, naming the run.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows = list(&http, &url, &key);
        if let Some(dog) = rows
            .iter()
            .find(|r| r["memory"].as_str().unwrap_or("").contains("Rex"))
        {
            assert_eq!(dog["source_run"], run.as_str(), "{dog}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the call's fact was not remembered: {rows:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // `haca chat --memory` does the same from the terminal.
    let out = node.haca_ok(&[
        "chat",
        "--model",
        "up/m",
        "--memory",
        "--api-key",
        &key,
        "--once",
        "Where do I live?",
    ]);
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("Oslo"), "{printed}");

    // `memory` must be true, false or {limit}; a chat without credentials for memory is refused.
    let r = http
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&json!({"model": "up/m", "memory": {"limit": 99}, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let v: Value = r.json().unwrap();
    assert!(
        v["error"]["message"].as_str().unwrap().contains("memory"),
        "{v}"
    );
    let r = http
        .post(format!("{url}/v1/chat/completions"))
        .json(&json!({"model": "up/m", "memory": true, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401, "no user, no memory");
}

#[test]
fn a_model_extracts_memories_in_a_run_of_its_own_and_an_unparsable_answer_falls_back_to_rules() {
    if embed_model("memsync extractor").is_none() {
        return;
    }
    // The "model" answers in prose around a fenced JSON list, as small models do; a
    // conversation about pottery gets an answer that is not JSON at all.
    let port = fake_upstream(|req| {
        let said = req.to_string();
        if said.contains("pottery") {
            "I could not find anything.".into()
        } else {
            "Here you go:\n```json\n[{\"memory\": \"Works as a nurse in Leeds\", \"type\": \"semantic\", \"categories\": [\"career\"], \"subject\": \"job_title\"}]\n```".into()
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let spec = format!("name=up,url=http://127.0.0.1:{port}/v1,models=m");
    let node = Devnet::start(
        dir.path(),
        &[
            "--price-per-request",
            "1000",
            "--provider",
            &spec,
            "--memory-extractor",
            "up/m",
        ],
    );
    let (http, url) = (client(), node.url.clone());
    let key = api_key(&node);
    let v = remember(
        &http,
        &url,
        &key,
        "These night shifts at the hospital are long.",
    );
    assert_eq!(v["extractor"], "up/m", "{v}");
    assert_eq!(v["memories_created"], 1, "{v}");
    let run = v["extraction_run"].as_str().unwrap().to_owned();
    let rows = list(&http, &url, &key);
    assert_eq!(rows[0]["memory"], "Works as a nurse in Leeds", "{rows:?}");
    assert_eq!(rows[0]["source_run"], run.as_str(), "{rows:?}");
    // The extraction is a run with a receipt like any other.
    let r = http
        .get(format!("{url}/v1/runs/{run}/receipt"))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);

    let v = remember(
        &http,
        &url,
        &key,
        "I live in York. I started a pottery class.",
    );
    let extractor = v["extractor"].as_str().unwrap();
    assert!(extractor.starts_with("rules (up/m failed"), "{v}");
    let rows = list(&http, &url, &key);
    assert!(
        rows.iter()
            .any(|r| r["memory"].as_str().unwrap_or("").contains("York")),
        "{rows:?}"
    );
}

/// The labelled set's conversations (`fixtures/memory/extraction.jsonl`): messages and the
/// memories expected from them.
fn labelled_set() -> Vec<(Vec<Value>, Vec<haca_mem::extract::Extracted>)> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/memory/extraction.jsonl"
    );
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let expected = serde_json::from_value(v["expected"].clone()).unwrap();
            (v["messages"].as_array().unwrap().clone(), expected)
        })
        .collect()
}

/// Extraction by the local LLM through the node, measured on the labelled set's held-out
/// conversations (all of them with HACA_EVAL_ALL=1): each conversation goes to a new user, whose
/// rows are what was extracted. A measurement, not a check (BENCHMARKS.md records it):
/// `cargo test -p haca --test it extraction_by_the_local_model -- --ignored --nocapture`.
#[test]
#[ignore]
fn extraction_by_the_local_model_on_the_labelled_set() {
    let Some(gguf) = crate::common::local_model("extraction eval") else {
        return;
    };
    if embed_model("extraction eval").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let node = Devnet::start(
        dir.path(),
        &[
            "--price-per-request",
            "1",
            "--llm-model",
            gguf.to_str().unwrap(),
        ],
    );
    let http = Client::builder()
        .timeout(Duration::from_secs(900))
        .build()
        .unwrap();
    let url = node.url.clone();
    let models: Value = http
        .get(format!("{url}/v1/models"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let local = models["data"][0]["id"].as_str().unwrap().to_owned();
    drop(node);
    let node = Devnet::start(
        dir.path(),
        &[
            "--price-per-request",
            "1",
            "--llm-model",
            gguf.to_str().unwrap(),
            "--memory-extractor",
            &local,
        ],
    );
    let url = node.url.clone();
    let set = labelled_set();
    let from = if std::env::var_os("HACA_EVAL_ALL").is_some() {
        0
    } else {
        set.len() - 15
    };
    let (mut pred, mut gold, mut by_model) = (Vec::new(), Vec::new(), 0);
    let mut model_only = Vec::new();
    let started = Instant::now();
    for (messages, expected) in &set[from..] {
        let key = api_key(&node);
        let (s, v) = send(
            http.post(format!("{url}/v1/memories"))
                .json(&json!({"messages": messages})),
            &key,
        );
        assert_eq!(s, 200, "{v}");
        let answered = v["extractor"] == local.as_str();
        by_model += usize::from(answered);
        let rows: Vec<haca_mem::extract::Extracted> = list(&http, &url, &key)
            .into_iter()
            .map(|r| {
                serde_json::from_value(json!({"memory": r["memory"], "type": r["type"],
                    "categories": r["categories"], "subject": r["subject"]}))
                .unwrap()
            })
            .collect();
        model_only.push(if answered { rows.clone() } else { Vec::new() });
        pred.push(rows);
        gold.push(expected.clone());
    }
    let score = haca_mem::extract::evaluate(&pred, &gold);
    let alone = haca_mem::extract::evaluate(&model_only, &gold);
    println!(
        "the model alone (a fallback counts as nothing found): P {:.3} R {:.3} F1 {:.3} (tp {} fp {} fn {})",
        alone.precision, alone.recall, alone.f1, alone.tp, alone.fp, alone.fn_
    );
    println!(
        "extraction by {local} on {} conversations: {} answered in JSON that parsed (the rest fell back to rules); P {:.3} R {:.3} F1 {:.3} (tp {} fp {} fn {}); {:.0} s",
        pred.len(),
        by_model,
        score.precision,
        score.recall,
        score.f1,
        score.tp,
        score.fp,
        score.fn_,
        started.elapsed().as_secs_f64()
    );
}
