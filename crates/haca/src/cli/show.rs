//! Plain-words output of client commands.

use haca_core::format_unix_ms;
use serde_json::Value;

fn time(v: &Value) -> String {
    v.as_u64().map(format_unix_ms).unwrap_or_else(|| "-".into())
}

fn short(s: &str) -> String {
    match s.char_indices().nth(20) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_owned(),
    }
}

pub fn answer(ans: &Value, base: &str) {
    let id = ans["run_id"].as_str().unwrap_or("?");
    println!("run {id}");
    if let Some(outputs) = ans["output"].as_object() {
        for (name, t) in outputs {
            let data = t["data"].as_array().map(|d| {
                let head: Vec<String> = d.iter().take(10).map(|x| x.to_string()).collect();
                format!(
                    "[{}{}]",
                    head.join(", "),
                    if d.len() > 10 {
                        format!(", … {} more", d.len() - 10)
                    } else {
                        String::new()
                    }
                )
            });
            println!(
                "  output {name}: {} {} {}",
                t["dtype"].as_str().unwrap_or("?"),
                t["shape"],
                data.unwrap_or_default()
            );
        }
    }
    let exec = &ans["receipt"]["boxes"]["execution"];
    println!(
        "  executed: {} by node {}",
        exec["evidence"]["mode"].as_str().unwrap_or("?"),
        short(exec["evidence"]["signer"].as_str().unwrap_or("?"))
    );
    let pay = &ans["receipt"]["boxes"]["payment"]["evidence"];
    if let Some(amount) = pay["amount"].as_str() {
        let units = amount
            .parse::<haca_pay::U256>()
            .map(super::wallet::fmt_units)
            .unwrap_or_else(|_| amount.to_owned());
        println!(
            "  paid:     {units} ({amount} base units) from {} on {}",
            pay["payer"].as_str().unwrap_or("?"),
            pay["network"].as_str().unwrap_or("?")
        );
        if let Some(tx) = pay["settlement"]["transaction"].as_str() {
            println!("  tx:       {tx}");
        }
    }
    println!("  receipt:  {base}/v1/runs/{id}/receipt  (haca receipt {id})");
}

pub fn runs(v: &Value) {
    let runs = v["runs"].as_array().cloned().unwrap_or_default();
    if runs.is_empty() {
        println!("no runs yet");
        return;
    }
    println!("{:<66} {:<25} {:<8} MODEL", "RUN", "TIME", "MODE");
    for r in runs {
        println!(
            "{:<66} {:<25} {:<8} {}",
            r["run_id"].as_str().unwrap_or(""),
            time(&r["created_at"]),
            r["mode"].as_str().unwrap_or(""),
            r["model"].as_str().unwrap_or("")
        );
    }
}

/// What each box proves and does not, as DESIGN.md's table says.
const BOX_MEANING: [(&str, &str, &str); 9] = [
    (
        "artifact",
        "which bytes ran under which label",
        "that the label still means the same bytes today",
    ),
    (
        "route",
        "which provider and node got the request, over which path",
        "anything about the answer",
    ),
    (
        "execution",
        "that the named node key signed these input and output hashes",
        "that the signer sits in an enclave",
    ),
    (
        "attestation",
        "that measured enclave code held the signing key",
        "that the answer is good",
    ),
    (
        "proof",
        "that the committed model maps this input to this output",
        "that the input was true",
    ),
    (
        "data",
        "which external data was admitted, from where, and when",
        "that the source was right",
    ),
    (
        "memory",
        "which memory rows steered the run, whose, and how old",
        "that the row is still relevant",
    ),
    (
        "payment",
        "what was paid and what it covered",
        "anything about execution",
    ),
    (
        "settlement",
        "that a validator round committed this run",
        "answer quality",
    ),
];

pub fn receipt(r: &Value) {
    println!(
        "receipt for run {} (schema version {}), issued {}",
        r["run_id"].as_str().unwrap_or("?"),
        r["version"],
        time(&r["issued_at"])
    );
    for (name, proves, not) in BOX_MEANING {
        let b = &r["boxes"][name];
        let status = b["status"].as_str().unwrap_or("absent");
        println!();
        println!("[{name}] {status}");
        if let Some(h) = b["history"].as_array() {
            for c in h {
                println!(
                    "    {} at {}",
                    c["status"].as_str().unwrap_or("?"),
                    time(&c["at"])
                );
            }
        }
        if name == "settlement" && b["evidence"].is_object() {
            settlement(&b["evidence"]);
        } else if let Some(ev) = b["evidence"].as_object() {
            for (k, v) in ev {
                let text = match v {
                    // A proof or a document is for machines: its size, not its bytes.
                    Value::String(s) if s.len() > 120 => {
                        let head: String = s.chars().take(48).collect();
                        format!("{head}… ({} characters)", s.len())
                    }
                    Value::String(s) => s.clone(),
                    Value::Number(_) if k.ends_with("_at") => time(v),
                    other => {
                        let t = other.to_string();
                        if t.len() > 200 {
                            format!("({} characters of JSON; --json shows it)", t.len())
                        } else {
                            t
                        }
                    }
                };
                println!("    {k}: {text}");
            }
        }
        println!("    proves: {proves}; does not prove: {not}");
    }
    println!();
    println!(
        "check it offline: haca receipt {} --json > receipt.json && haca verify receipt.json",
        r["run_id"].as_str().unwrap_or("RUN")
    );
}

fn settlement(ev: &Value) {
    let h = &ev["header"];
    println!(
        "    round {} at height {} of chain {}, committed {}",
        ev["round"],
        h["height"],
        h["chain_id"].as_str().unwrap_or("?"),
        time(&h["time_ms"])
    );
    println!(
        "    leaf {} of {}; RFC 6962 root {}",
        ev["leaf_index"],
        h["settlement"]["records"],
        h["settlement"]["rfc6962_root"].as_str().unwrap_or("?")
    );
    println!(
        "    OpenZeppelin root {}",
        ev["oz"]["root"].as_str().unwrap_or("?")
    );
    println!(
        "    certificate: {} validator signature(s) over block {}",
        ev["certificate"]["signatures"]
            .as_array()
            .map_or(0, |a| a.len()),
        ev["certificate"]["block_id"].as_str().unwrap_or("?")
    );
}

pub fn chain_status(v: &Value) {
    println!("chain {}", v["chain_id"].as_str().unwrap_or("?"));
    println!("  height:      {}", v["height"]);
    println!("  state hash:  {}", v["state_hash"].as_str().unwrap_or("?"));
    println!("  pending:     {} records", v["pending"]);
    for b in v["recent_blocks"].as_array().into_iter().flatten() {
        println!(
            "  block {:>8}  {}",
            b["height"],
            b["block_id"].as_str().unwrap_or("?")
        );
    }
}

pub fn validators(v: &Value) {
    println!("chain {}", v["chain_id"].as_str().unwrap_or("?"));
    for e in v["validator_sets"].as_array().into_iter().flatten() {
        println!("  from height {}:", e["from_height"]);
        for val in e["validators"].as_array().into_iter().flatten() {
            println!(
                "    validator {}  power {}",
                val["public_key"].as_str().unwrap_or("?"),
                val["power"]
            );
        }
    }
    for g in v["gateways"].as_array().into_iter().flatten() {
        println!("  gateway {}", g["node"].as_str().unwrap_or("?"));
    }
    println!("export it for offline checks: haca chain validators --export > validators.json");
}

pub fn models(v: &Value) {
    let models = v["models"].as_array().cloned().unwrap_or_default();
    if models.is_empty() {
        println!("no models yet");
        return;
    }
    println!(
        "{:<32} {:>4} {:<8} {:>10}  {:<25} {:<71} WALRUS BLOB ID",
        "LABEL", "REV", "FORMAT", "BYTES", "UPDATED", "BLOB (SHA-256)"
    );
    for m in models {
        println!(
            "{:<32} {:>4} {:<8} {:>10}  {:<25} {:<71} {}",
            m["label"].as_str().unwrap_or(""),
            m["revision"],
            m["format"].as_str().unwrap_or(""),
            m["size"],
            time(&m["updated_at"]),
            m["blob_id"].as_str().unwrap_or(""),
            m["walrus_blob_id"].as_str().unwrap_or("-")
        );
    }
}

pub fn history(v: &Value) {
    println!("{}", v["label"].as_str().unwrap_or(""));
    for e in v["history"].as_array().cloned().unwrap_or_default() {
        println!(
            "  rev {:>3}  {}  {}  by {}",
            e["revision"],
            time(&e["created_at"]),
            e["blob_id"].as_str().unwrap_or(""),
            e["uploader"].as_str().unwrap_or("")
        );
    }
}

/// A signed data item, as `haca data fetch` prints it.
pub fn data_item(v: &Value) {
    println!("data item {}", v["id"].as_str().unwrap_or("?"));
    println!("  source:      {}", v["source"].as_str().unwrap_or("?"));
    println!(
        "  status:      {} {} ({} bytes)",
        v["http_status"],
        v["content_type"].as_str().unwrap_or("-"),
        v["size"]
    );
    println!("  sha256:      {}", v["sha256"].as_str().unwrap_or("?"));
    if let Some(t) = v["tls_cert_sha256"].as_str() {
        println!("  tls cert:    sha256 {t}");
    }
    println!("  fetched at:  {}", time(&v["fetched_at"]));
    println!("  valid until: {}", time(&v["valid_until"]));
    println!("  signer:      {}", v["signer"].as_str().unwrap_or("?"));
    println!(
        "  signature:   {}",
        short(v["signature"].as_str().unwrap_or("?"))
    );
}
