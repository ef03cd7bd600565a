//! x402 `upto` for metered LLM calls on a real devnet: the payer authorizes a maximum (an
//! EIP-3009 authorization of it), the node settles what the tokens served cost, after the
//! answer; an authorization below the call's worst case is refused before any work, and a
//! call whose every route failed settles nothing.

use crate::common::{balance, fake_upstream, fund, python_pay, wait_ready, Devnet};
use haca_gateway::payment::{DEVNET_ASSET, DEVNET_PAY_TO, DEVNET_TOKEN_NAME, DEVNET_TOKEN_VERSION};
use haca_pay::types::{Authorization, ExactEvmPayload, PaymentPayload, PaymentRequirements};
use haca_pay::{
    encode_header, Address, AnyPaymentPayload, PrivateKeySigner, TokenDomain, B256, U256,
};
use reqwest::blocking::Client;
use serde_json::{json, Value};

/// A version-2 `upto` payment: `signer` authorizes at most `max` base units.
fn upto_header(signer: &PrivateKeySigner, max: u64, nonce: u8) -> String {
    let asset: Address = DEVNET_ASSET.parse().unwrap();
    let pay_to: Address = DEVNET_PAY_TO.parse().unwrap();
    let mut accepted = PaymentRequirements::exact_evm(
        "eip155:31337",
        asset,
        pay_to,
        U256::from(max),
        60,
        DEVNET_TOKEN_NAME,
        DEVNET_TOKEN_VERSION,
    );
    accepted.scheme = "upto".into();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let authorization = Authorization {
        from: signer.address(),
        to: pay_to,
        value: U256::from(max),
        valid_after: U256::ZERO,
        valid_before: U256::from(now + 60),
        nonce: B256::from([nonce; 32]),
    };
    let domain = TokenDomain {
        name: DEVNET_TOKEN_NAME.into(),
        version: DEVNET_TOKEN_VERSION.into(),
        chain_id: 31337,
        verifying_contract: asset,
    };
    let signature = domain.sign(&authorization, signer);
    encode_header(&AnyPaymentPayload::V2(PaymentPayload {
        x402_version: 2,
        payload: ExactEvmPayload {
            authorization,
            signature,
        },
        accepted,
        resource: None,
        extensions: None,
    }))
}

fn chat(
    http: &Client,
    url: &str,
    model: &str,
    max_tokens: Option<u64>,
    header: &str,
) -> (u16, Value) {
    let mut body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    if let Some(m) = max_tokens {
        body["max_tokens"] = m.into();
    }
    let r = http
        .post(format!("{url}/v1/chat/completions"))
        .header("PAYMENT-SIGNATURE", header)
        .json(&body)
        .send()
        .unwrap();
    (r.status().as_u16(), r.json().unwrap())
}

#[test]
fn upto_settles_what_the_tokens_cost_and_nothing_when_every_route_failed() {
    let dir = tempfile::tempdir().unwrap();
    // The fake upstream reports 5 prompt and 3 completion tokens.
    let up = fake_upstream(|_| "hello".into());
    let node = Devnet::start(
        dir.path(),
        &[
            "--price-per-request",
            "1000",
            "--provider",
            &format!("name=up,url=http://127.0.0.1:{up}/v1,models=m"),
            "--provider",
            "name=down,url=http://127.0.0.1:1/v1,models=m",
            "--model-price",
            "up/m=1000/2000",
            "--model-price",
            "down/m=1000/2000",
        ],
    );
    let http = Client::new();
    wait_ready(&http, &node.url);
    let signer = PrivateKeySigner::random();
    let payer = signer.address().to_checksum(None);
    fund(&http, &node.url, signer.address(), 1_000_000);

    // Up to 10,000 authorized; 5 prompt tokens at 1,000 per 1,000 and 3 completion tokens at
    // 2,000 per 1,000 cost 5 + 6 = 11, which is all that moves.
    let (status, v) = chat(
        &http,
        &node.url,
        "up/m",
        Some(16),
        &upto_header(&signer, 10_000, 1),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(balance(&http, &node.url, &payer), 1_000_000 - 11);
    assert_eq!(balance(&http, &node.url, DEVNET_PAY_TO), 11);
    let run = v["haca"]["run_id"].as_str().unwrap();
    // Validators check the upto box too: the run settles.
    let out = node.haca_ok(&["receipt", run, "--wait", "settled", "--json"]);
    let receipt: Value = serde_json::from_slice(&out.stdout).unwrap();
    let p = &receipt["boxes"]["payment"]["evidence"];
    assert_eq!(p["scheme"], "upto", "{p}");
    assert_eq!(p["amount"], "11");
    assert_eq!(p["upto"]["authorized"], "10000");
    assert_eq!(p["upto"]["prompt_tokens"], 5);
    assert_eq!(p["upto"]["completion_tokens"], 3);
    // Offline, the payer's signature over the maximum verifies and the amount follows from
    // the tokens (a box claiming more than was authorized: haca-pay's receipt_check tests).
    let rfile = dir.path().join("r.json");
    std::fs::write(&rfile, receipt.to_string()).unwrap();
    let (ok, out) = node.verify(&rfile, &[]);
    assert!(ok, "{out}");
    assert!(out.contains("signed up to 10000 base units"), "{out}");

    // Below the worst case (16 completion tokens alone cost 32): refused before any work.
    let (status, v) = chat(
        &http,
        &node.url,
        "up/m",
        Some(16),
        &upto_header(&signer, 20, 2),
    );
    assert_eq!(status, 402, "{v}");
    assert_eq!(v["error"]["code"], "upto_below_worst_case", "{v}");
    // A call without payment is offered upto beside exact, at its worst case: the prompt's
    // JSON (32 bytes) at 1,000 and 16 completion tokens at 2,000 per 1,000.
    let r = http
        .post(format!("{}/v1/chat/completions", node.url))
        .json(&json!({"model": "up/m", "max_tokens": 16,
                      "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 402);
    let required =
        haca_pay::decode_payment_required_header(r.headers()["PAYMENT-REQUIRED"].to_str().unwrap())
            .unwrap();
    let haca_pay::types::AnyPaymentRequired::V2(required) = required else {
        panic!("a v2 PAYMENT-REQUIRED")
    };
    let schemes: Vec<&str> = required.accepts.iter().map(|a| a.scheme.as_str()).collect();
    assert_eq!(schemes, ["exact", "upto"]);
    assert_eq!(required.accepts[1].amount, "64");
    assert_eq!(required.accepts[1].extra["outputPer1k"], "2000");
    // Without max_tokens there is no worst case: the field is named.
    let (status, v) = chat(
        &http,
        &node.url,
        "up/m",
        None,
        &upto_header(&signer, 10_000, 3),
    );
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["param"], "max_tokens", "{v}");

    // Every route failed: nothing settles, and the same authorization still pays later.
    let (status, v) = chat(
        &http,
        &node.url,
        "down/m",
        Some(16),
        &upto_header(&signer, 10_000, 4),
    );
    assert_eq!(status, 502, "{v}");
    assert_eq!(balance(&http, &node.url, &payer), 1_000_000 - 11);
    // Sent without base64 padding (x402 clients differ): read as upto all the same. The JSON
    // is given a trailing space where needed so that its base64 would be padded.
    let unpadded = {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut json = b64.decode(upto_header(&signer, 10_000, 4)).unwrap();
        if json.len().is_multiple_of(3) {
            json.push(b' ');
        }
        let text = b64.encode(&json);
        assert!(text.ends_with('='));
        text.trim_end_matches('=').to_owned()
    };
    let (status, v) = chat(&http, &node.url, "up/m", Some(16), &unpadded);
    assert_eq!(status, 200, "{v}");
    assert_eq!(balance(&http, &node.url, &payer), 1_000_000 - 22);
    // A replay of a settled authorization is refused.
    let (status, v) = chat(
        &http,
        &node.url,
        "up/m",
        Some(16),
        &upto_header(&signer, 10_000, 1),
    );
    assert_eq!(status, 402, "{v}");
    assert_eq!(
        v["error"]["code"], "invalid_exact_evm_nonce_already_used",
        "{v}"
    );
    assert_eq!(
        balance(&http, &node.url, &payer),
        1_000_000 - 22,
        "nothing moved"
    );
}

/// The official Python `x402` client's upto (Permit2 `PermitWitnessTransferFrom`, as
/// OpenGradient's SDK pays) against haca's offer: the maximum is the call's worst case, the
/// settled amount what the tokens cost, and the receipt verifies offline.
#[test]
fn the_official_python_x402_upto_client_pays_a_metered_call() {
    let Some(py) = crate::common::python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let up = fake_upstream(|_| "hello".into());
    let node = Devnet::start(
        dir.path(),
        &[
            "--price-per-request",
            "1000",
            "--provider",
            &format!("name=up,url=http://127.0.0.1:{up}/v1,models=m"),
            "--model-price",
            "up/m=1000/2000",
        ],
    );
    let http = Client::new();
    wait_ready(&http, &node.url);
    let signer = PrivateKeySigner::random();
    let payer = signer.address().to_checksum(None);
    fund(&http, &node.url, signer.address(), 1_000_000);
    let body = json!({"model": "up/m", "max_tokens": 16,
                      "messages": [{"role": "user", "content": "hi"}]});
    let url = format!("{}/v1/chat/completions", node.url);
    let key = format!("0x{}", hex::encode(signer.to_bytes()));
    let v = python_pay(&py, &url, &key, &body, true);
    assert_eq!(v["payment_response"]["amount"], "11", "{v}");
    // 5 + 6 moved of the 64 authorized (the worst case the 402 offered).
    assert_eq!(balance(&http, &node.url, &payer), 1_000_000 - 11);
    let run = v["body"]["haca"]["run_id"].as_str().unwrap();
    // Validators check the Permit2 box too: the run settles.
    let out = node.haca_ok(&["receipt", run, "--wait", "settled", "--json"]);
    let receipt: Value = serde_json::from_slice(&out.stdout).unwrap();
    let p = &receipt["boxes"]["payment"]["evidence"];
    assert_eq!(p["upto"]["authorized"], "64", "{p}");
    assert_eq!(
        p["upto"]["permit2"]["spender"],
        "0x4020A4f3b7b90ccA423B9fabCc0CE57C6C240002"
    );
    let rfile = dir.path().join("r.json");
    std::fs::write(&rfile, receipt.to_string()).unwrap();
    let (ok, out) = node.verify(&rfile, &[]);
    assert!(ok, "{out}");
    assert!(out.contains("(Permit2, chain 31337)"), "{out}");
}
