//! x402 on a real EVM chain (anvil, issue 24): `haca evm deploy` puts the token and the
//! settlement registry on it, a devnet settles on it (`--evm-rpc`), the official Python x402
//! client pays a run, the payee's balance rises on chain, the payment box names a real
//! transaction, the run's round root lands in the registry, and a replayed authorization is
//! refused by the node and by the chain. Needs anvil (`.ci/run` installs npm
//! `@foundry-rs/anvil` and sets HACA_ANVIL); elsewhere it skips, saying so.

use crate::common::{self, last_line, mlp_input, python, python_pay, wait_ready, Devnet, BIN};
use haca_evm::anvil::{find_anvil, Anvil, DEV_KEYS};
use haca_evm::contracts::{IHacaToken, ISettlementRegistry};
use haca_evm::{parse_private_key, Rpc, SendError, Sender};
use haca_pay::types::PAYMENT_SIGNATURE_HEADER;
use haca_pay::{
    build_payment, decode_payment_required_header, encode_header, select_requirement, Address,
    PayPolicy, PrivateKeySigner, B256, U256,
};
use reqwest::blocking::Client;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PRICE: u64 = 1000;

fn anvil_bin(test: &str) -> Option<std::path::PathBuf> {
    common::installed(
        test,
        Ok(find_anvil()),
        "anvil: npm install --prefix ~/.cache/haca-anvil @foundry-rs/anvil@1.7.1, or set HACA_ANVIL",
    )
}

fn body() -> Value {
    json!({"model": "example/mnist-mlp", "input": mlp_input(3)})
}

/// `haca evm deploy` from anvil's account 0: (token, registry), from its last line.
fn deploy(rpc: &str, key_file: &std::path::Path) -> (Address, Address) {
    let out = std::process::Command::new(BIN)
        .args(["evm", "deploy", "--rpc", rpc, "--key"])
        .arg(key_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(&last_line(&out)).expect("the last line is JSON");
    assert_eq!(v["chain_id"], 31337);
    (
        v["token"].as_str().unwrap().parse().unwrap(),
        v["registry"].as_str().unwrap().parse().unwrap(),
    )
}

/// anvil, with haca's token and registry deployed from its account 0, whose key is in
/// `key_file`.
struct Chain {
    anvil: Anvil,
    rt: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
    key_file: std::path::PathBuf,
    token: Address,
    registry: Address,
}

impl Chain {
    /// `None` (the test skips) where anvil is not installed, outside CI.
    fn start(test: &str) -> Option<Chain> {
        let bin = anvil_bin(test)?;
        let rt = tokio::runtime::Runtime::new().unwrap();
        let anvil = rt.block_on(Anvil::start(&bin, None)).expect("anvil starts");
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("gas.key");
        std::fs::write(&key_file, DEV_KEYS[0]).unwrap();
        let (token, registry) = deploy(&anvil.url, &key_file);
        Some(Chain {
            anvil,
            rt,
            dir,
            key_file,
            token,
            registry,
        })
    }

    /// A devnet in `dir/name` charging `PRICE` a run, that settles on this chain with the gas
    /// key and, when `anchored`, posts its rounds' roots to the registry.
    fn devnet(&self, name: &str, anchored: bool) -> Devnet {
        let (price, registry) = (PRICE.to_string(), self.registry.to_checksum(None));
        let mut flags = vec![
            "--price-per-request",
            &price,
            "--no-enclave",
            "--evm-rpc",
            &self.anvil.url,
            "--evm-key",
            self.key_file.to_str().unwrap(),
        ];
        if anchored {
            flags.extend(["--evm-registry", &registry]);
        }
        Devnet::start(&self.dir.path().join(name), &flags)
    }
}

/// A payment `wallet` signs for what `url`'s `/v1/infer` asks in its 402.
fn signed_payment(
    http: &Client,
    url: &str,
    wallet: &PrivateKeySigner,
) -> haca_pay::AnyPaymentPayload {
    let resp = http
        .post(format!("{url}/v1/infer"))
        .json(&body())
        .send()
        .unwrap();
    let required =
        decode_payment_required_header(resp.headers()["PAYMENT-REQUIRED"].to_str().unwrap())
            .unwrap();
    let sel = select_requirement(&required, &PayPolicy::default()).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    build_payment(&sel, wallet, now, B256::from(rand::random::<[u8; 32]>()))
}

/// The `transferWithAuthorization` call of a signed x402 payload, as the facilitator sends it.
fn transfer_call(p: &haca_pay::AnyPaymentPayload) -> Vec<u8> {
    let e = p.exact();
    let a = &e.authorization;
    haca_evm::contracts::transfer_with_authorization(
        (a.from, a.to, a.value),
        (a.valid_after, a.valid_before),
        a.nonce,
        e.signature.as_ref(),
    )
    .expect("a 65-byte signature")
}

#[test]
fn x402_settles_on_anvil_and_round_roots_are_anchored_in_the_registry() {
    let Some(c) =
        Chain::start("x402_settles_on_anvil_and_round_roots_are_anchored_in_the_registry")
    else {
        return;
    };
    let (rt, anvil, dir, key_file) = (&c.rt, &c.anvil, &c.dir, &c.key_file);
    let (token, registry) = (c.token, c.registry);
    assert_eq!(
        token,
        haca_gateway::payment::DEVNET_ASSET
            .parse::<Address>()
            .unwrap(),
        "a fresh anvil's first deployment is devnet's asset"
    );

    let node = c.devnet("node", true);
    let http = Client::new();
    wait_ready(&http, &node.url);
    let chain = rt
        .block_on(Sender::connect(
            Arc::new(Rpc::new(&anvil.url, Duration::from_secs(5))),
            parse_private_key(DEV_KEYS[1]).unwrap(),
        ))
        .unwrap();
    let on_chain = |who: Address| -> U256 {
        rt.block_on(chain.view(token, &IHacaToken::balanceOfCall { owner: who }))
            .unwrap()
    };
    let payee: Address = haca_gateway::payment::DEVNET_PAY_TO.parse().unwrap();
    let payee_before = on_chain(payee);

    // The faucet mints on chain.
    let wallet = PrivateKeySigner::random();
    let v: Value = http
        .post(format!("{}/v1/x402/faucet", node.url))
        .json(&json!({"address": wallet.address().to_checksum(None), "amount": (3 * PRICE).to_string()}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(v["transaction"].as_str().unwrap().starts_with("0x"), "{v}");
    assert_eq!(on_chain(wallet.address()), U256::from(3 * PRICE));

    // The official Python client pays a run (required in CI; elsewhere haca-pay's client).
    let answer: Value = match python() {
        Some(py) => {
            let url = format!("{}/v1/infer", node.url);
            let key = format!("0x{}", hex::encode(wallet.to_bytes()));
            let v = python_pay(&py, &url, &key, &body(), false);
            assert_eq!(v["status"], 200, "{v}");
            assert_eq!(v["payment_response"]["success"], true);
            v["body"].clone()
        }
        None => {
            let p = signed_payment(&http, &node.url, &wallet);
            let resp = http
                .post(format!("{}/v1/infer", node.url))
                .header(PAYMENT_SIGNATURE_HEADER, encode_header(&p))
                .json(&body())
                .send()
                .unwrap();
            assert_eq!(resp.status(), 200);
            resp.json().unwrap()
        }
    };
    // The payee's balance rose on chain, the payer's fell; the node reads the chain's.
    assert_eq!(on_chain(payee), payee_before + U256::from(PRICE));
    assert_eq!(on_chain(wallet.address()), U256::from(2 * PRICE));
    let b: Value = http
        .get(format!(
            "{}/v1/x402/balance/{}",
            node.url,
            wallet.address().to_checksum(None)
        ))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(b["balance"], (2 * PRICE).to_string());
    // The payment box names a real transaction, mined and successful.
    let payment = &answer["receipt"]["boxes"]["payment"]["evidence"];
    let tx: B256 = payment["settlement"]["transaction"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let receipt = rt
        .block_on(chain.rpc.receipt(tx))
        .unwrap()
        .expect("the payment's transaction is on chain");
    assert!(receipt.success);

    // The run's round root lands in the registry.
    let run = answer["run_id"].as_str().unwrap().to_owned();
    let out = node.haca_ok(&["receipt", &run, "--wait", "settled", "--json"]);
    let settled: Value = serde_json::from_slice(&out.stdout).unwrap();
    let header = &settled["boxes"]["settlement"]["evidence"]["header"];
    let height = header["height"].as_u64().unwrap();
    let root = header["settlement"]["rfc6962_root"].as_str().unwrap();
    let start = Instant::now();
    let anchored = loop {
        let r = rt
            .block_on(chain.view(registry, &ISettlementRegistry::rootAtCall { height }))
            .unwrap();
        if r.rfc6962Root != B256::ZERO {
            break r;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "height {height} not anchored in 30 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        hex::encode(anchored.rfc6962Root),
        root.trim_start_matches("0x")
    );
    assert_eq!(
        hex::encode(anchored.ozRoot),
        header["settlement"]["oz_root"]
            .as_str()
            .unwrap()
            .trim_start_matches("0x")
    );

    // The settlement box names the anchoring transaction and its block.
    let start = Instant::now();
    let anchor = loop {
        let out = node.haca_ok(&["receipt", &run, "--json"]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let a = v["boxes"]["settlement"]["evidence"]["evm_anchor"].clone();
        if !a.is_null() {
            break a;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no evm_anchor in the settlement box: {v}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(anchor["network"], "eip155:31337");
    assert_eq!(anchor["registry"], json!(registry.to_checksum(None)));
    let anchor_tx: B256 = anchor["transaction"].as_str().unwrap().parse().unwrap();
    let mined = rt
        .block_on(chain.rpc.receipt(anchor_tx))
        .unwrap()
        .expect("the anchoring transaction is on chain");
    assert!(mined.success);
    assert_eq!(json!(mined.block_number), anchor["block"]);
    assert_eq!(mined.block_number, anchored.postedAtBlock);

    // `haca verify --evm-rpc` checks the anchored roots online; a registry that holds
    // nothing for the round fails the receipt.
    let file = dir.path().join("settled.json");
    std::fs::write(&file, &out.stdout).unwrap();
    let (ok, text) = node.verify(
        &file,
        &[
            "--evm-rpc",
            &anvil.url,
            "--evm-registry",
            &registry.to_checksum(None),
        ],
    );
    assert!(ok, "{text}");
    assert!(text.contains("anchored: round"), "{text}");
    let out = std::process::Command::new(BIN)
        .args([
            "evm",
            "deploy",
            "--registry-only",
            "--rpc",
            &anvil.url,
            "--key",
        ])
        .arg(key_file)
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: Value = serde_json::from_str(&last_line(&out)).unwrap();
    assert!(v["token"].is_null(), "{v}");
    let other_registry: Address = v["registry"].as_str().unwrap().parse().unwrap();
    let (ok, text) = node.verify(
        &file,
        &[
            "--evm-rpc",
            &anvil.url,
            "--evm-registry",
            &other_registry.to_checksum(None),
        ],
    );
    assert!(!ok, "{text}");
    assert!(text.contains("nothing is anchored for height"), "{text}");

    // A replayed authorization: the node refuses it, and so does the chain.
    let once = signed_payment(&http, &node.url, &wallet);
    let header = encode_header(&once);
    let paid = |h: &str| {
        http.post(format!("{}/v1/infer", node.url))
            .header(PAYMENT_SIGNATURE_HEADER, h)
            .json(&body())
            .send()
            .unwrap()
    };
    assert_eq!(paid(&header).status(), 200);
    let again = paid(&header);
    assert_eq!(again.status(), 402);
    let e: Value = again.json().unwrap();
    // As for any remote facilitator: its refusal, with the token's own reason in the message.
    assert_eq!(e["error"]["code"], "facilitator_refused", "{e}");
    let msg = e["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("invalid_exact_evm_nonce_already_used"),
        "{msg}"
    );
    match rt.block_on(chain.send(Some(token), transfer_call(&once).into())) {
        Err(SendError::Refused(r)) => {
            assert_eq!(
                r.code, "invalid_exact_evm_nonce_already_used",
                "{}",
                r.message
            )
        }
        other => panic!("the chain took a replay: {other:?}"),
    }
    assert_eq!(on_chain(wallet.address()), U256::from(PRICE));
    assert_eq!(on_chain(payee), payee_before + U256::from(2 * PRICE));

    // Restarted 500 blocks later, the node names the anchor again: it reads the registry's
    // posts from the block of height 1's post on (in windows the RPC accepts: the rpc
    // module's tests), not in one range from block 0.
    node.kill9();
    rt.block_on(chain.rpc.call_raw("anvil_mine", json!(["0x1f4"])))
        .unwrap();
    let node = c.devnet("node", true);
    wait_ready(&http, &node.url);
    let start = Instant::now();
    loop {
        let out = node.haca_ok(&["receipt", &run, "--json"]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        if v["boxes"]["settlement"]["evidence"]["evm_anchor"] == anchor {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the restarted node does not name the anchor: {v}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn an_evm_rpc_that_is_down_refuses_payments_with_a_clear_status_and_charges_nothing() {
    let Some(c) = Chain::start(
        "an_evm_rpc_that_is_down_refuses_payments_with_a_clear_status_and_charges_nothing",
    ) else {
        return;
    };
    // Owned: the chain is stopped halfway.
    let Chain {
        anvil,
        dir,
        key_file,
        ..
    } = c;
    let key_file = &key_file;
    // A token address where no contract lives is refused at start, naming the flag.
    let out = std::process::Command::new(BIN)
        .args([
            "devnet",
            "--listen",
            "127.0.0.1:0",
            "--no-llm",
            "--no-enclave",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("bad"))
        .args(["--evm-rpc", &anvil.url, "--evm-key"])
        .arg(key_file)
        .args(["--evm-token", &Address::repeat_byte(0x42).to_checksum(None)])
        .env("HACA_LOG", "warn")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--evm-token: no contract"), "{err}");
    // A node that serves for free has nothing to settle on chain: said at start.
    let out = std::process::Command::new(BIN)
        .args([
            "devnet",
            "--listen",
            "127.0.0.1:0",
            "--no-llm",
            "--no-enclave",
        ])
        .args(["--price-per-request", "0"])
        .arg("--data-dir")
        .arg(dir.path().join("free"))
        .args(["--evm-rpc", &anvil.url, "--evm-key"])
        .arg(key_file)
        .env("HACA_LOG", "warn")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("serves for free"), "{err}");
    // A gas key without gas: refused at start, naming it.
    let poor_key = dir.path().join("poor.key");
    std::fs::write(
        &poor_key,
        format!("0x{}", hex::encode(PrivateKeySigner::random().to_bytes())),
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .args([
            "devnet",
            "--listen",
            "127.0.0.1:0",
            "--no-llm",
            "--no-enclave",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("poor"))
        .args(["--evm-rpc", &anvil.url, "--evm-key"])
        .arg(&poor_key)
        .env("HACA_LOG", "warn")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("holds no native currency"), "{err}");
    // A token whose EIP-712 domain is not the one payers sign in ("USDC", not "USD Coin"):
    // refused at start too, since every payment would revert.
    let out = std::process::Command::new(BIN)
        .args([
            "evm",
            "deploy",
            "--rpc",
            &anvil.url,
            "--token-name",
            "USDC",
            "--key",
        ])
        .arg(key_file)
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: Value = serde_json::from_str(&last_line(&out)).unwrap();
    let out = std::process::Command::new(BIN)
        .args([
            "devnet",
            "--listen",
            "127.0.0.1:0",
            "--no-llm",
            "--no-enclave",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("bad-domain"))
        .args(["--evm-rpc", &anvil.url, "--evm-key"])
        .arg(key_file)
        .args(["--evm-token", v["token"].as_str().unwrap()])
        .env("HACA_LOG", "warn")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("EIP-712 domain separator"), "{err}");

    let node = Devnet::start(
        &dir.path().join("node"),
        &[
            "--price-per-request",
            &PRICE.to_string(),
            "--no-enclave",
            "--evm-rpc",
            &anvil.url,
            "--evm-key",
            key_file.to_str().unwrap(),
        ],
    );
    let http = Client::new();
    wait_ready(&http, &node.url);
    let wallet = PrivateKeySigner::random();
    common::fund(&http, &node.url, wallet.address(), PRICE);
    let p = signed_payment(&http, &node.url, &wallet);
    // The chain goes away: the payment is neither served nor charged.
    drop(anvil);
    let resp = http
        .post(format!("{}/v1/infer", node.url))
        .header(PAYMENT_SIGNATURE_HEADER, encode_header(&p))
        .json(&body())
        .send()
        .unwrap();
    assert_eq!(resp.status(), 503);
    let e: Value = resp.json().unwrap();
    assert_eq!(e["error"]["code"], "evm_unavailable", "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("nothing was charged"),
        "{e}"
    );
}

#[test]
fn a_settlement_reorganized_away_is_settled_again() {
    let Some(c) = Chain::start("a_settlement_reorganized_away_is_settled_again") else {
        return;
    };
    let (rt, anvil) = (&c.rt, &c.anvil);
    let (token, registry) = (c.token, c.registry);
    let node = c.devnet("node", true);
    let http = Client::new();
    wait_ready(&http, &node.url);
    let rpc = Rpc::new(&anvil.url, Duration::from_secs(5));
    let chain = rt
        .block_on(Sender::connect(
            Arc::new(Rpc::new(&anvil.url, Duration::from_secs(5))),
            parse_private_key(DEV_KEYS[1]).unwrap(),
        ))
        .unwrap();
    let on_chain = |who: Address| -> U256 {
        rt.block_on(chain.view(token, &IHacaToken::balanceOfCall { owner: who }))
            .unwrap()
    };
    let payee: Address = haca_gateway::payment::DEVNET_PAY_TO.parse().unwrap();
    let wallet = PrivateKeySigner::random();
    common::fund(&http, &node.url, wallet.address(), PRICE);
    let before = on_chain(payee);
    let snapshot = rt
        .block_on(rpc.call_raw("evm_snapshot", json!([])))
        .unwrap();

    let p = signed_payment(&http, &node.url, &wallet);
    let resp = http
        .post(format!("{}/v1/infer", node.url))
        .header(PAYMENT_SIGNATURE_HEADER, encode_header(&p))
        .json(&body())
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(on_chain(payee), before + U256::from(PRICE));
    let run = resp.json::<Value>().unwrap()["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = node.haca_ok(&["receipt", &run, "--wait", "settled", "--json"]);
    let settled: Value = serde_json::from_slice(&out.stdout).unwrap();
    let height = settled["boxes"]["settlement"]["evidence"]["header"]["height"]
        .as_u64()
        .unwrap();
    let root_at = |h: u64| -> B256 {
        rt.block_on(chain.view(registry, &ISettlementRegistry::rootAtCall { height: h }))
            .unwrap()
            .rfc6962Root
    };
    let wait_anchored = |what: &str| {
        let start = Instant::now();
        while root_at(height) == B256::ZERO {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "height {height} not anchored {what} in 20 s"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    wait_anchored("at first");

    // The blocks holding the settlement and the anchor are reorganized away (deeper than one
    // confirmation).
    let reverted = rt
        .block_on(rpc.call_raw("evm_revert", json!([snapshot])))
        .unwrap();
    assert_eq!(reverted, json!(true));
    assert_eq!(on_chain(payee), before, "the reorg took the payment back");
    assert_eq!(
        root_at(height),
        B256::ZERO,
        "the reorg took the anchor back"
    );
    // The node notices and settles the same authorization again.
    let start = Instant::now();
    while on_chain(payee) != before + U256::from(PRICE) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the reorganized settlement was not settled again in 20 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(on_chain(wallet.address()), U256::ZERO);
    // And the round's roots are posted to the registry again.
    wait_anchored("again after the reorg");
}

#[test]
fn a_node_settling_on_chain_is_a_facilitator_for_other_gateways() {
    let Some(c) = Chain::start("a_node_settling_on_chain_is_a_facilitator_for_other_gateways")
    else {
        return;
    };
    let (rt, anvil, dir) = (&c.rt, &c.anvil, &c.dir);
    let token = c.token;
    let fac = c.devnet("fac", false);
    let http = Client::new();
    wait_ready(&http, &fac.url);
    // A gateway without a chain of its own settles through that node's /v1/x402.
    let gw = Devnet::start(
        &dir.path().join("gw"),
        &[
            "--price-per-request",
            &PRICE.to_string(),
            "--no-enclave",
            "--facilitator",
            &format!("{}/v1/x402", fac.url),
        ],
    );
    wait_ready(&http, &gw.url);
    let wallet = PrivateKeySigner::random();
    common::fund(&http, &fac.url, wallet.address(), PRICE);
    let chain = rt
        .block_on(Sender::connect(
            Arc::new(Rpc::new(&anvil.url, Duration::from_secs(5))),
            parse_private_key(DEV_KEYS[1]).unwrap(),
        ))
        .unwrap();
    let on_chain = |who: Address| -> U256 {
        rt.block_on(chain.view(token, &IHacaToken::balanceOfCall { owner: who }))
            .unwrap()
    };
    let payee: Address = haca_gateway::payment::DEVNET_PAY_TO.parse().unwrap();
    let before = on_chain(payee);
    let pay = |wallet: &PrivateKeySigner| {
        let p = signed_payment(&http, &gw.url, wallet);
        http.post(format!("{}/v1/infer", gw.url))
            .header(PAYMENT_SIGNATURE_HEADER, encode_header(&p))
            .json(&body())
            .send()
            .unwrap()
    };
    let resp = pay(&wallet);
    assert_eq!(resp.status(), 200, "{}", resp.text().unwrap());
    assert_eq!(on_chain(payee), before + U256::from(PRICE));
    assert_eq!(on_chain(wallet.address()), U256::ZERO);
    // The chain's balance is what the facilitator checks: an unfunded payer is refused.
    let resp = pay(&wallet);
    assert_eq!(resp.status(), 402);
    let e: Value = resp.json().unwrap();
    assert_eq!(e["error"]["code"], "facilitator_refused", "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("insufficient_funds"),
        "{e}"
    );
}

/// Paid runs/s and latency with on-chain settlement, for BENCHMARKS.md (ignored: a
/// measurement, not a check). Each configuration starts its own anvil and devnet and sends
/// HACA_EVM_BENCH_RUNS (default 100) paid runs from 8 (or 32) threads, each with a fresh
/// authorization; one JSON line per configuration:
/// `cargo test -p haca --test it evm_e2e::bench -- --ignored --nocapture`.
#[test]
#[ignore]
fn bench_paid_runs_on_chain() {
    let Some(bin) = anvil_bin("bench_paid_runs_on_chain") else {
        return;
    };
    let runs: usize = std::env::var("HACA_EVM_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    // (label, on chain, anvil block time, client threads)
    for (label, on_chain, block_time, threads) in [
        ("embedded ledger", false, None, 8),
        ("anvil, instant mining", true, None, 8),
        ("anvil, 1 s blocks", true, Some(1), 8),
        ("anvil, 1 s blocks", true, Some(1), 32),
    ] {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let anvil = rt
            .block_on(Anvil::start(&bin, block_time))
            .expect("anvil starts");
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("gas.key");
        std::fs::write(&key_file, DEV_KEYS[0]).unwrap();
        let mut args = vec![
            "--price-per-request".to_owned(),
            PRICE.to_string(),
            "--no-enclave".to_owned(),
        ];
        if on_chain {
            deploy(&anvil.url, &key_file);
            args.extend([
                "--evm-rpc".to_owned(),
                anvil.url.clone(),
                "--evm-key".to_owned(),
                key_file.to_str().unwrap().to_owned(),
            ]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let node = Devnet::start(&dir.path().join("node"), &args);
        let http = Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap();
        wait_ready(&http, &node.url);
        let wallet = PrivateKeySigner::random();
        let r = http
            .post(format!("{}/v1/x402/faucet", node.url))
            .json(&json!({"address": wallet.address().to_checksum(None), "amount": (PRICE * runs as u64).to_string()}))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().unwrap());
        let resp = http
            .post(format!("{}/v1/infer", node.url))
            .json(&body())
            .send()
            .unwrap();
        let required =
            decode_payment_required_header(resp.headers()["PAYMENT-REQUIRED"].to_str().unwrap())
                .unwrap();
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let started = Instant::now();
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let (http, url, required, wallet, next) = (
                    http.clone(),
                    node.url.clone(),
                    required.clone(),
                    wallet.clone(),
                    next.clone(),
                );
                std::thread::spawn(move || {
                    let mut lat = Vec::new();
                    while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < runs {
                        let sel = select_requirement(&required, &PayPolicy::default()).unwrap();
                        let now = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .unwrap()
                            .as_secs();
                        let p = build_payment(
                            &sel,
                            &wallet,
                            now,
                            B256::from(rand::random::<[u8; 32]>()),
                        );
                        let t = Instant::now();
                        let resp = http
                            .post(format!("{url}/v1/infer"))
                            .header(PAYMENT_SIGNATURE_HEADER, encode_header(&p))
                            .json(&body())
                            .send()
                            .unwrap();
                        assert_eq!(resp.status(), 200, "{}", resp.text().unwrap());
                        lat.push(t.elapsed().as_secs_f64() * 1e3);
                    }
                    lat
                })
            })
            .collect();
        let mut lat: Vec<f64> = workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect();
        let secs = started.elapsed().as_secs_f64();
        lat.sort_by(|a, b| a.total_cmp(b));
        let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
        println!(
            "{}",
            json!({
                "config": label,
                "runs": lat.len(),
                "threads": threads,
                "seconds": (secs * 100.0).round() / 100.0,
                "paid_runs_per_s": (lat.len() as f64 / secs * 10.0).round() / 10.0,
                "p50_ms": (pct(0.5) * 10.0).round() / 10.0,
                "p90_ms": (pct(0.9) * 10.0).round() / 10.0,
                "max_ms": (pct(1.0) * 10.0).round() / 10.0,
            })
        );
        drop(node);
        drop(anvil);
    }
}
