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
    let stdout = child.stdout.take().expect("stdout piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = line.trim().strip_prefix("url:") {
                let _ = tx.send(url.trim().to_owned());
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(60))
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

fn fresh_signer() -> PrivateKeySigner {
    loop {
        if let Ok(s) = PrivateKeySigner::from_bytes(&B256::from(rand::random::<[u8; 32]>())) {
            return s;
        }
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
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

/// The facilitator test: a gateway configured by file for Base Sepolia (USDC's
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
    let wallet = fresh_signer();
    let resp = http
        .post(format!("{}/v1/x402/faucet", fac.url))
        .json(&json!({"address": wallet.address().to_checksum(None), "amount": "6000"}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().unwrap());
    let sel = select_requirement(&required, &PayPolicy::default()).unwrap();
    let payment = build_payment(&sel, &wallet, now(), B256::from(rand::random::<[u8; 32]>()));
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
