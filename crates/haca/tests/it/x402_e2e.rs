//! x402 on a real devnet with a price: the 402 (v2 header and v1 body), a funded wallet
//! paying with haca-pay's client, every refusal with its code, concurrent replays settling
//! once, balances surviving kill -9, the official Python `x402` client paying, and `haca infer`
//! paying from its own wallet (funded by the devnet faucet; `haca wallet`, `haca wallet fund`).

use crate::common::{self, balance, fund, mlp_input, python, python_pay, wait_ready, Devnet};
use haca_pay::types::{
    PAYMENT_REQUIRED_HEADER, PAYMENT_RESPONSE_HEADER, PAYMENT_SIGNATURE_HEADER, X_PAYMENT_HEADER,
    X_PAYMENT_RESPONSE_HEADER,
};
use haca_pay::{
    build_payment, decode_payment_required_body, decode_payment_required_header,
    decode_payment_response_header, encode_header, select_requirement, Address, AnyPaymentPayload,
    AnyPaymentRequired, PayPolicy, PrivateKeySigner, B256,
};
use reqwest::blocking::{Client, Response};
use serde_json::{json, Value};
use std::process::Command;

const PRICE: u64 = 1000;

/// A change to a valid payment that one check must catch.
type Tamper = Box<dyn Fn(&mut AnyPaymentPayload)>;

fn body() -> Value {
    json!({"model": "example/mnist-mlp", "input": mlp_input(1)})
}

fn infer(http: &Client, url: &str, header: Option<(&str, &str)>) -> Response {
    let mut req = http.post(format!("{url}/v1/infer")).json(&body());
    if let Some((k, v)) = header {
        req = req.header(k, v);
    }
    req.send().unwrap()
}

/// A 402 refusal: its code and message; it always carries a decodable `PAYMENT-REQUIRED`.
fn refusal(resp: Response) -> (String, String) {
    assert_eq!(resp.status(), 402);
    let h = resp.headers()[PAYMENT_REQUIRED_HEADER].to_str().unwrap();
    decode_payment_required_header(h).expect("PAYMENT-REQUIRED decodes");
    let body: Value = resp.json().unwrap();
    (
        body["error"]["code"].as_str().unwrap().to_owned(),
        body["error"]["message"].as_str().unwrap().to_owned(),
    )
}

/// The node's 402: the v2 header's requirements and the v1 body's.
fn required(http: &Client, url: &str) -> (AnyPaymentRequired, AnyPaymentRequired) {
    let resp = infer(http, url, None);
    assert_eq!(resp.status(), 402);
    let v2 =
        decode_payment_required_header(resp.headers()[PAYMENT_REQUIRED_HEADER].to_str().unwrap())
            .unwrap();
    let v1 = decode_payment_required_body(&resp.bytes().unwrap()).unwrap();
    (v2, v1)
}

fn pay(required: &AnyPaymentRequired, signer: &PrivateKeySigner, at: u64) -> AnyPaymentPayload {
    let sel = select_requirement(required, &PayPolicy::default()).unwrap();
    build_payment(&sel, signer, at, B256::from(rand::random::<[u8; 32]>()))
}

fn v2_mut(p: &mut AnyPaymentPayload) -> &mut haca_pay::PaymentPayload {
    match p {
        AnyPaymentPayload::V2(p) => p,
        AnyPaymentPayload::V1(_) => panic!("expected v2"),
    }
}

#[test]
fn devnet_with_a_price_charges_each_run_with_x402() {
    let dir = tempfile::tempdir().unwrap();
    let node = Devnet::start(dir.path(), &["--price-per-request", &PRICE.to_string()]);
    let http = Client::new();
    wait_ready(&http, &node.url);
    let url = node.url.clone();

    // No payment: 402 with the v2 header and the v1 body, both naming the same terms.
    let (req_v2, req_v1) = required(&http, &url);
    let AnyPaymentRequired::V2(r2) = &req_v2 else {
        panic!("v2 header")
    };
    let AnyPaymentRequired::V1(r1) = &req_v1 else {
        panic!("v1 body")
    };
    assert_eq!(r2.x402_version, 2);
    assert_eq!(r2.accepts[0].scheme, "exact");
    assert_eq!(r2.accepts[0].network, "eip155:31337");
    assert_eq!(r2.accepts[0].amount, PRICE.to_string());
    assert_eq!(r2.accepts[0].extra["name"], "USD Coin");
    assert!(r2.resource.as_ref().unwrap().url.ends_with("/v1/infer"));
    assert_eq!(r1.x402_version, 1);
    assert_eq!(r1.accepts[0].max_amount_required, PRICE.to_string());
    assert_eq!(r1.accepts[0].pay_to, r2.accepts[0].pay_to);
    assert_eq!(r1.accepts[0].asset, r2.accepts[0].asset);
    let pay_to = r2.accepts[0].pay_to.clone();

    // A funded wallet pays and gets its answer, the settlement and a receipt with a
    // payment box.
    let wallet = PrivateKeySigner::random();
    fund(&http, &url, wallet.address(), 10 * PRICE);
    let paid = pay(&req_v2, &wallet, common::now_s());
    let header = encode_header(&paid);
    let resp = infer(&http, &url, Some((PAYMENT_SIGNATURE_HEADER, &header)));
    assert_eq!(resp.status(), 200);
    let settled =
        decode_payment_response_header(resp.headers()[PAYMENT_RESPONSE_HEADER].to_str().unwrap())
            .unwrap();
    assert!(settled.success, "{settled:?}");
    assert_eq!(settled.network, "eip155:31337");
    assert_eq!(settled.amount.as_deref(), Some("1000"));
    assert_eq!(
        settled.payer.as_deref(),
        Some(wallet.address().to_checksum(None).as_str())
    );
    let ans: Value = resp.json().unwrap();
    assert_eq!(ans["output"]["output"]["shape"], json!([1, 10]));
    let pbox = &ans["receipt"]["boxes"]["payment"];
    assert_eq!(pbox["evidence"]["amount"], "1000");
    assert_eq!(
        pbox["evidence"]["payer"],
        json!(wallet.address().to_checksum(None))
    );
    assert_eq!(
        pbox["evidence"]["settlement"]["transaction"],
        json!(settled.transaction)
    );
    assert_eq!(
        pbox["evidence"]["request_hash"],
        ans["receipt"]["boxes"]["execution"]["evidence"]["request_hash"]
    );
    assert_eq!(balance(&http, &url, &pay_to), PRICE);
    assert_eq!(
        balance(&http, &url, &wallet.address().to_checksum(None)),
        9 * PRICE
    );

    assert_eq!(
        pbox["evidence"]["model"],
        ans["receipt"]["boxes"]["artifact"]["evidence"]["blob_id"]
    );
    assert_eq!(pbox["evidence"]["mode"], "vanilla");
    assert_eq!(pbox["evidence"]["authorization"]["token_name"], "USD Coin");

    // Offline: the payer's signature recovers from the box (payment.authorized holds), and
    // once the run's round lands, the payment settled with it (validators checked it).
    let run_id = ans["run_id"].as_str().unwrap();
    let out = node.haca_ok(&["receipt", run_id, "--wait", "settled", "--json"]);
    let file = dir.path().join("receipt.json");
    std::fs::write(&file, &out.stdout).unwrap();
    let genesis = dir.path().join("genesis.json");
    let v = node.haca(&[
        "verify",
        file.to_str().unwrap(),
        "--validators",
        genesis.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&v.stdout);
    assert!(v.status.success(), "{text}");
    let line = |claim: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(claim))
            .unwrap_or_else(|| panic!("{claim}: {text}"))
            .to_owned()
    };
    let authorized = line("payment.authorized");
    assert!(authorized.contains("holds"), "{authorized}");
    assert!(
        authorized.contains(&wallet.address().to_checksum(None)),
        "{authorized}"
    );
    let settled_line = line("payment.settled");
    assert!(settled_line.contains("holds"), "{settled_line}");
    assert!(line("run.settled").contains("holds"), "{text}");

    // Replaying it is refused: the nonce is spent.
    let (code, msg) = refusal(infer(
        &http,
        &url,
        Some((PAYMENT_SIGNATURE_HEADER, &header)),
    ));
    assert_eq!(code, "invalid_exact_evm_nonce_already_used", "{msg}");
    assert!(msg.contains("already used"), "{msg}");

    // Each check, refused with its code.
    let cases: Vec<(&str, Tamper, &str)> = vec![
        (
            "wrong amount",
            Box::new(|p| v2_mut(p).payload.authorization.value += haca_pay::U256::from(1)),
            "invalid_exact_evm_payload_authorization_value",
        ),
        (
            "wrong recipient",
            Box::new(|p| v2_mut(p).payload.authorization.to = Address::repeat_byte(9)),
            "invalid_exact_evm_payload_recipient_mismatch",
        ),
        (
            "bad signature",
            Box::new(|p| {
                let mut s = v2_mut(p).payload.signature.to_vec();
                s[10] ^= 1;
                v2_mut(p).payload.signature = s.into();
            }),
            "invalid_exact_evm_payload_signature",
        ),
        (
            "unknown scheme",
            Box::new(|p| v2_mut(p).accepted.scheme = "upto".into()),
            "unsupported_scheme",
        ),
    ];
    for (what, tamper, want) in cases {
        let mut p = pay(&req_v2, &wallet, common::now_s());
        tamper(&mut p);
        let (code, msg) = refusal(infer(
            &http,
            &url,
            Some((PAYMENT_SIGNATURE_HEADER, &encode_header(&p))),
        ));
        assert_eq!(code, want, "{what}: {msg}");
    }
    // Expired: signed two hours ago for a 60 s window.
    let old = pay(&req_v2, &wallet, common::now_s() - 7200);
    let (code, msg) = refusal(infer(
        &http,
        &url,
        Some((PAYMENT_SIGNATURE_HEADER, &encode_header(&old))),
    ));
    assert_eq!(
        code, "invalid_exact_evm_payload_authorization_valid_before",
        "{msg}"
    );
    // Insufficient balance: a wallet nobody funded.
    let broke = pay(&req_v2, &PrivateKeySigner::random(), common::now_s());
    let (code, msg) = refusal(infer(
        &http,
        &url,
        Some((PAYMENT_SIGNATURE_HEADER, &encode_header(&broke))),
    ));
    assert_eq!(code, "insufficient_funds", "{msg}");
    // Malformed headers: not base64, and a field that is not a number, each named.
    let (code, msg) = refusal(infer(
        &http,
        &url,
        Some((PAYMENT_SIGNATURE_HEADER, "%%% not base64")),
    ));
    assert_eq!(code, "invalid_payload", "{msg}");
    assert!(msg.contains(PAYMENT_SIGNATURE_HEADER), "{msg}");
    let mut bad = serde_json::to_value(pay(&req_v2, &wallet, common::now_s())).unwrap();
    bad["payload"]["authorization"]["value"] = json!("ten");
    let (code, msg) = refusal(infer(
        &http,
        &url,
        Some((PAYMENT_SIGNATURE_HEADER, &encode_header(&bad))),
    ));
    assert_eq!(code, "invalid_payload", "{msg}");
    assert!(msg.contains("payload.authorization.value"), "{msg}");
    // None of the refusals moved money.
    assert_eq!(balance(&http, &url, &pay_to), PRICE);

    // x402 version 1: X-PAYMENT against the v1 body's requirements, X-PAYMENT-RESPONSE back.
    let p1 = pay(&req_v1, &wallet, common::now_s());
    assert!(matches!(p1, AnyPaymentPayload::V1(_)));
    let resp = infer(&http, &url, Some((X_PAYMENT_HEADER, &encode_header(&p1))));
    assert_eq!(resp.status(), 200);
    let s1 =
        decode_payment_response_header(resp.headers()[X_PAYMENT_RESPONSE_HEADER].to_str().unwrap())
            .unwrap();
    assert!(s1.success, "{s1:?}");
    assert_eq!(balance(&http, &url, &pay_to), 2 * PRICE);

    // 100 concurrent replays of one fresh authorization: exactly one is served.
    let once = encode_header(&pay(&req_v2, &wallet, common::now_s()));
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..100)
            .map(|_| {
                let (http, url, once) = (http.clone(), url.clone(), once.clone());
                s.spawn(move || {
                    infer(&http, &url, Some((PAYMENT_SIGNATURE_HEADER, &once)))
                        .status()
                        .as_u16()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 402).count(),
        99,
        "{statuses:?}"
    );
    assert_eq!(balance(&http, &url, &pay_to), 3 * PRICE);

    // The facilitator endpoints answer per the spec.
    let sup: Value = http
        .get(format!("{url}/v1/x402/supported"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(sup["kinds"][0]["network"], "eip155:31337");
    let AnyPaymentRequired::V2(r) = &req_v2 else {
        unreachable!()
    };
    let fresh = pay(&req_v2, &wallet, common::now_s());
    let freq =
        json!({"x402Version": 2, "paymentPayload": fresh, "paymentRequirements": r.accepts[0]});
    let v: Value = http
        .post(format!("{url}/v1/x402/verify"))
        .json(&freq)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(v["isValid"], true, "{v}");
    let s: Value = http
        .post(format!("{url}/v1/x402/settle"))
        .json(&freq)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(s["success"], true, "{s}");
    let s: Value = http
        .post(format!("{url}/v1/x402/settle"))
        .json(&freq)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(s["success"], false, "{s}");
    assert_eq!(s["errorReason"], "invalid_exact_evm_nonce_already_used");
    assert_eq!(balance(&http, &url, &pay_to), 4 * PRICE);

    // kill -9 and restart: the ledger is as it was, and the spent nonce stays spent.
    node.kill9();
    let node = Devnet::start(dir.path(), &["--price-per-request", &PRICE.to_string()]);
    wait_ready(&http, &node.url);
    let url = node.url.clone();
    assert_eq!(balance(&http, &url, &pay_to), 4 * PRICE);
    assert_eq!(
        balance(&http, &url, &wallet.address().to_checksum(None)),
        6 * PRICE
    );
    let (code, _) = refusal(infer(&http, &url, Some((PAYMENT_SIGNATURE_HEADER, &once))));
    assert_eq!(code, "invalid_exact_evm_nonce_already_used");
}

#[test]
fn the_official_python_x402_client_pays_a_devnet() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let node = Devnet::start(dir.path(), &["--price-per-request", &PRICE.to_string()]);
    let http = Client::new();
    wait_ready(&http, &node.url);
    let wallet = PrivateKeySigner::random();
    fund(&http, &node.url, wallet.address(), PRICE);
    let url = format!("{}/v1/infer", node.url);
    let key = format!("0x{}", hex::encode(wallet.to_bytes()));
    let v = python_pay(&py, &url, &key, &body(), false);
    assert_eq!(v["status"], 200);
    assert_eq!(v["payment_response"]["success"], true);
    assert_eq!(v["body"]["output"]["output"]["shape"], json!([1, 10]));
    assert_eq!(
        v["body"]["receipt"]["boxes"]["payment"]["evidence"]["payer"],
        json!(wallet.address().to_checksum(None))
    );
    assert_eq!(
        balance(&http, &node.url, &wallet.address().to_checksum(None)),
        0
    );
}

fn stdout_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn haca_infer_pays_from_a_wallet_the_devnet_faucet_funds() {
    let dir = tempfile::tempdir().unwrap();
    let node = Devnet::start(
        &dir.path().join("node"),
        &["--price-per-request", &PRICE.to_string()],
    );
    let http = Client::new();
    wait_ready(&http, &node.url);
    let url = node.url.clone();
    let home = dir.path().join("home");
    let env = [("HACA_HOME", home.as_path())];
    let input = dir.path().join("input.json");
    std::fs::write(&input, mlp_input(3).to_string()).unwrap();
    let input = input.to_str().unwrap();

    // First use creates the wallet key, private, holding nothing yet.
    let out = node.haca_env(&["wallet", "--json"], &env);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let w: Value = serde_json::from_str(&stdout_of(&out)).unwrap();
    let address = w["address"].as_str().unwrap().to_owned();
    assert!(address.starts_with("0x") && address.len() == 42, "{w}");
    assert_eq!(w["balance"], "0", "{w}");
    let key = home.join("wallet.key");
    assert!(key.exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // `haca infer` meets the 402, tops the wallet up from the faucet once, pays and prints
    // the node's answer unchanged, with the payment box in its receipt.
    let out = node.haca_env(
        &["infer", "example/mnist-mlp", "--input", input, "--json"],
        &env,
    );
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains(&format!(
            "funded wallet {address} with 1.000000 from the devnet faucet"
        )),
        "{}",
        stderr_of(&out)
    );
    let ans: Value = serde_json::from_str(&stdout_of(&out)).unwrap();
    assert_eq!(ans["output"]["output"]["shape"], json!([1, 10]));
    let pbox = &ans["receipt"]["boxes"]["payment"]["evidence"];
    assert_eq!(pbox["amount"], PRICE.to_string(), "{pbox}");
    assert_eq!(pbox["payer"], json!(address));
    assert!(pbox["settlement"]["transaction"]
        .as_str()
        .is_some_and(|t| t.starts_with("0x")));
    assert_eq!(balance(&http, &url, &address), 1_000_000 - PRICE);

    // A second run pays from what is left (no faucet), and the plain output shows the payment.
    let out = node.haca_env(&["infer", "example/mnist-mlp", "--input", input], &env);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(!stderr_of(&out).contains("funded"), "{}", stderr_of(&out));
    let text = stdout_of(&out);
    assert!(
        text.contains("paid:     0.001000 (1000 base units)"),
        "{text}"
    );
    assert!(text.contains(&address), "{text}");
    assert!(text.contains("tx:       0x"), "{text}");
    assert_eq!(balance(&http, &url, &address), 1_000_000 - 2 * PRICE);

    // `haca wallet` shows the same address and its balance.
    let out = node.haca_env(&["wallet"], &env);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let text = stdout_of(&out);
    assert!(text.contains(&format!("address:  {address}")), "{text}");
    assert!(text.contains("0.998000"), "{text}");

    // `haca wallet fund` is the faucet for any address.
    let other = PrivateKeySigner::random().address().to_checksum(None);
    let before = balance(&http, &url, &other);
    let out = node.haca_env(&["wallet", "fund", &other, "5000"], &env);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(stdout_of(&out).contains("0.005000"), "{}", stdout_of(&out));
    assert_eq!(balance(&http, &url, &other), before + 5000);
    let out = node.haca_env(&["wallet", "fund", "0x1234", "5000"], &env);
    assert!(!out.status.success());
    assert!(
        stderr_of(&out).contains("invalid_address"),
        "{}",
        stderr_of(&out)
    );

    // A node asking more than the client's cap is not paid.
    let out = Command::new(common::BIN)
        .args(["infer", "example/mnist-mlp", "--input", input])
        .args(["--max-payment", "999"])
        .env("HACA_NODE", &url)
        .env("HACA_LOG", "warn")
        .env("HACA_HOME", dir.path().join("capped-home"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr_of(&out);
    assert!(err.contains("over the limit of 999"), "{err}");
    assert!(err.contains("--max-payment"), "{err}");

    // When the faucet refuses (here: a wrong operator token), an empty wallet says why,
    // with the 402's reason.
    let empty = dir.path().join("empty-home");
    let out = Command::new(common::BIN)
        .args(["infer", "example/mnist-mlp", "--input", input])
        .env("HACA_NODE", &url)
        .env("HACA_LOG", "warn")
        .env("HACA_HOME", &empty)
        .env("HACA_TOKEN", "not-the-token")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr_of(&out);
    assert!(err.contains("faucet"), "{err}");
    assert!(err.contains("this node charges 1000 base units"), "{err}");
    assert!(err.contains("forbidden"), "{err}");
}

/// Clients without x402 pay with an API key: `haca apikey create --fund` prints the key on
/// its last line; each run is charged to its prepaid balance; an unknown key is 401 and a
/// drained one 402, each with its reason.
#[test]
fn an_api_key_pays_for_runs_from_its_prepaid_balance() {
    let dir = tempfile::tempdir().unwrap();
    let node = Devnet::start(dir.path(), &["--price-per-request", &PRICE.to_string()]);
    let http = Client::new();
    wait_ready(&http, &node.url);
    let url = node.url.clone();

    let out = node.haca_ok(&["apikey", "create", "--fund", &(2 * PRICE + 500).to_string()]);
    let stdout = stdout_of(&out);
    let key = stdout.lines().last().unwrap().trim().to_owned();
    assert!(key.starts_with("hk_") && key.len() == 67, "{stdout}");
    let me: Value = http
        .get(format!("{url}/v1/apikeys/self"))
        .bearer_auth(&key)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(me["balance"], (2 * PRICE + 500).to_string(), "{me}");
    let account = me["account"].as_str().unwrap().to_owned();
    assert!(stdout.contains(&account), "{stdout}");

    let with_key = |k: &str| {
        http.post(format!("{url}/v1/infer"))
            .bearer_auth(k)
            .json(&body())
            .send()
            .unwrap()
    };
    for _ in 0..2 {
        let resp = with_key(&key);
        assert_eq!(resp.status(), 200);
        assert!(resp.headers().get(PAYMENT_RESPONSE_HEADER).is_none());
        let ans: Value = resp.json().unwrap();
        let p = &ans["receipt"]["boxes"]["payment"]["evidence"];
        assert_eq!(p["scheme"], "apikey", "{p}");
        assert_eq!(p["payer"], json!(account));
        assert_eq!(p["amount"], PRICE.to_string());
        assert!(p["settlement"]["transaction"].is_string(), "{p}");
    }
    assert_eq!(balance(&http, &url, &account), 500);

    // Drained: 402 saying the balance and the price.
    let (code, msg) = refusal(with_key(&key));
    assert_eq!(code, "insufficient_funds", "{msg}");
    assert!(msg.contains("500") && msg.contains("1000"), "{msg}");
    // A bearer that is not a haca key pays for nothing: 402, asking for a payment.
    let resp = with_key("sk-not-a-haca-key");
    assert_eq!(resp.status(), 402);
    let v: Value = resp.json().unwrap();
    assert!(v["error"].as_str().unwrap().contains("API key"), "{v}");
    // Unknown keys: 401 with the reason.
    for bad in ["hk_0000", &format!("hk_{}", "ab".repeat(32))] {
        let resp = with_key(bad);
        assert_eq!(resp.status(), 401);
        let v: Value = resp.json().unwrap();
        assert_eq!(v["error"]["code"], "invalid_api_key", "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("Authorization"),
            "{v}"
        );
    }
    assert_eq!(balance(&http, &url, &account), 500);

    // Revoked: 401 saying so.
    let id = me["id"].as_str().unwrap().to_owned();
    node.haca_ok(&["apikey", "revoke", &id]);
    let resp = with_key(&key);
    assert_eq!(resp.status(), 401);
    let v: Value = resp.json().unwrap();
    assert!(
        v["error"]["message"].as_str().unwrap().contains("revoked"),
        "{v}"
    );
    let out = node.haca(&["apikey", "revoke", "0123456789abcdef"]);
    assert!(!out.status.success());
    assert!(
        stderr_of(&out).contains("no API key"),
        "{}",
        stderr_of(&out)
    );

    // Keys are an admin action: a wrong operator token is refused.
    let resp = http
        .post(format!("{url}/v1/apikeys"))
        .bearer_auth("not-the-operator-token")
        .json(&json!({}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 403);

    // haca loadgen meets the 402 and pays its burst from one funded key.
    let out = node.haca_ok(&[
        "loadgen",
        "--requests",
        "20",
        "--concurrency",
        "4",
        "--json",
    ]);
    let v: Value = serde_json::from_str(stdout_of(&out).trim()).unwrap();
    assert_eq!(v["ok"], 20, "{v}");
    assert_eq!(v["errors"], 0, "{v}");
}

/// A node that charges can verify and settle with a remote facilitator (here another devnet's
/// `/v1/x402`) instead of its own ledger: the money moves on the facilitator's ledger, the
/// facilitator's refusals reach the client as 402s with its reason, and a facilitator that is
/// gone is a 503 that says so.
#[test]
fn a_node_settles_through_a_remote_facilitator() {
    let (dir_f, dir_g) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let fac = Devnet::start(dir_f.path(), &["--price-per-request", &PRICE.to_string()]);
    let http = Client::new();
    wait_ready(&http, &fac.url);
    let facilitator = format!("{}/v1/x402", fac.url);
    let gw = Devnet::start(
        dir_g.path(),
        &[
            "--price-per-request",
            &PRICE.to_string(),
            "--facilitator",
            &facilitator,
        ],
    );
    wait_ready(&http, &gw.url);
    let (req_v2, _) = required(&http, &gw.url);

    // Funded on the facilitator's ledger only: the gateway's own ledger is never consulted.
    let wallet = PrivateKeySigner::random();
    fund(&http, &fac.url, wallet.address(), 3 * PRICE);
    let paid = encode_header(&pay(&req_v2, &wallet, common::now_s()));
    let resp = infer(&http, &gw.url, Some((PAYMENT_SIGNATURE_HEADER, &paid)));
    assert_eq!(resp.status(), 200);
    let settled =
        decode_payment_response_header(resp.headers()[PAYMENT_RESPONSE_HEADER].to_str().unwrap())
            .unwrap();
    assert!(settled.success, "{settled:?}");
    let ans: Value = resp.json().unwrap();
    assert_eq!(
        ans["receipt"]["boxes"]["payment"]["evidence"]["settlement"]["transaction"],
        json!(settled.transaction)
    );
    let payer = wallet.address().to_checksum(None);
    assert_eq!(balance(&http, &fac.url, &payer), 2 * PRICE);
    assert_eq!(balance(&http, &gw.url, &payer), 0);

    // The facilitator refuses a replay; its reason reaches the client.
    let (code, msg) = refusal(infer(
        &http,
        &gw.url,
        Some((PAYMENT_SIGNATURE_HEADER, &paid)),
    ));
    assert_eq!(code, "facilitator_refused", "{msg}");
    assert!(msg.contains("nonce"), "{msg}");
    // An unfunded payer: refused by the facilitator, as insufficient funds.
    let poor = PrivateKeySigner::random();
    let (code, msg) = refusal(infer(
        &http,
        &gw.url,
        Some((
            PAYMENT_SIGNATURE_HEADER,
            &encode_header(&pay(&req_v2, &poor, common::now_s())),
        )),
    ));
    assert_eq!(code, "facilitator_refused", "{msg}");
    assert!(msg.contains("insufficient"), "{msg}");

    // The facilitator is gone: 503, naming it; nothing is charged.
    fac.kill9();
    let resp = infer(
        &http,
        &gw.url,
        Some((
            PAYMENT_SIGNATURE_HEADER,
            &encode_header(&pay(&req_v2, &wallet, common::now_s())),
        )),
    );
    assert_eq!(resp.status(), 503);
    let v: Value = resp.json().unwrap();
    assert_eq!(v["error"]["code"], "facilitator_unavailable", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&facilitator),
        "{v}"
    );

    // A gateway cannot start on a facilitator that does not answer.
    let dir_h = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(common::BIN)
        .args(["devnet", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir_h.path())
        .args(["--facilitator", &facilitator])
        .env("HACA_LOG", "warn")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr_of(&out).contains("x402 facilitator"),
        "{}",
        stderr_of(&out)
    );
}

/// Prices per model: a priced label costs its price whether it is named by label or by blob
/// id; an unknown model is refused before any payment is asked.
#[test]
fn a_model_costs_its_own_price_by_label_or_by_blob() {
    let dir = tempfile::tempdir().unwrap();
    let node = Devnet::start(
        dir.path(),
        &[
            "--price-per-request",
            &PRICE.to_string(),
            "--model-price",
            "example/mnist-mlp=2500",
        ],
    );
    let http = Client::new();
    wait_ready(&http, &node.url);
    let url = node.url.clone();
    let (req_v2, req_v1) = required(&http, &url);
    let (AnyPaymentRequired::V2(r2), AnyPaymentRequired::V1(r1)) = (&req_v2, &req_v1) else {
        panic!("v2 header, v1 body")
    };
    assert_eq!(r2.accepts[0].amount, "2500");
    assert_eq!(r1.accepts[0].max_amount_required, "2500");

    // By blob id: the same price, and a payment of it is served.
    let blob: Value = http
        .get(format!("{url}/v1/hub/resolve/example/mnist-mlp"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let blob_id = blob["blob_id"].as_str().unwrap().to_owned();
    let by_blob = json!({"model": blob_id, "input": mlp_input(1)});
    let resp = http
        .post(format!("{url}/v1/infer"))
        .json(&by_blob)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 402);
    let h = resp.headers()[PAYMENT_REQUIRED_HEADER].to_str().unwrap();
    let AnyPaymentRequired::V2(again) = decode_payment_required_header(h).unwrap() else {
        panic!("v2")
    };
    assert_eq!(again.accepts[0].amount, "2500");
    let wallet = PrivateKeySigner::random();
    fund(&http, &url, wallet.address(), 10_000);
    let paid = encode_header(&pay(&req_v2, &wallet, common::now_s()));
    let resp = http
        .post(format!("{url}/v1/infer"))
        .header(PAYMENT_SIGNATURE_HEADER, paid)
        .json(&by_blob)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let ans: Value = resp.json().unwrap();
    assert_eq!(
        ans["receipt"]["boxes"]["payment"]["evidence"]["amount"],
        "2500"
    );
    assert_eq!(
        balance(&http, &url, &wallet.address().to_checksum(None)),
        7500
    );

    // Unknown model: 404 with the reason, no 402.
    let resp = http
        .post(format!("{url}/v1/infer"))
        .json(&json!({"model": "nobody/nothing", "input": mlp_input(1)}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 404);

    // /v1/node lists the prices.
    let info: Value = http
        .get(format!("{url}/v1/node"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        info["payments"]["model_prices"]["example/mnist-mlp"], "2500",
        "{info}"
    );
}
