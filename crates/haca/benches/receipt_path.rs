//! The receipt path: build + sign, build + sign + persist, and a whole HTTP run against an
//! in-process node, beside a direct tract call on the same model and input (the floor).

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use haca::devnet::{self, NodeConfig, EXAMPLE_MODEL};
use haca_core::receipt::*;
use haca_core::tensor::parse_input;
use haca_core::{BlobId, NodeKey};
use haca_exec::OnnxModel;
use haca_pay::types::{PAYMENT_REQUIRED_HEADER, PAYMENT_SIGNATURE_HEADER};
use haca_pay::{
    build_payment, decode_payment_required_header, encode_header, select_requirement, PayPolicy,
    PrivateKeySigner, B256, U256,
};
use haca_store::{RunRecord, Store};
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};

fn input() -> serde_json::Value {
    let data: Vec<f32> = (0..784).map(|i| (i % 255) as f32 / 255.0).collect();
    json!({"input": {"shape": [1, 784], "data": data}})
}

fn receipt(key: &NodeKey, blob_id: BlobId, n: u64) -> Receipt {
    haca_core::testing::vanilla_receipt(key, blob_id, 1_764_000_000_000 + n, n)
}

/// One `POST /v1/infer`, paid with `payment` when given; asserts success.
fn post_infer(
    http: &reqwest::blocking::Client,
    url: &str,
    body: &[u8],
    payment: Option<String>,
) -> bytes::Bytes {
    let mut req = http
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(p) = payment {
        req = req.header(PAYMENT_SIGNATURE_HEADER, p);
    }
    let resp = req.send().unwrap();
    assert!(resp.status().is_success());
    resp.bytes().unwrap()
}

fn bench(c: &mut Criterion) {
    let key = NodeKey::generate();
    let blob_id = BlobId::of(EXAMPLE_MODEL); // hashed once: the gateway gets it from the hub
    let counter = AtomicU64::new(0);
    c.bench_function("receipt_build_sign", |b| {
        b.iter(|| {
            let mut r = receipt(&key, blob_id, counter.fetch_add(1, Ordering::Relaxed));
            r.sign(&key).unwrap()
        })
    });

    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("bench.db")).unwrap();
    c.bench_function("receipt_build_sign_persist", |b| {
        b.iter(|| {
            let n = counter.fetch_add(1, Ordering::Relaxed);
            let mut r = receipt(&key, blob_id, n);
            let digest = r.sign(&key).unwrap();
            let rec = RunRecord {
                run_id: r.run_id.to_string(),
                created_at: r.issued_at,
                model: "example/mnist-mlp".into(),
                blob_id: blob_id.to_string(),
                mode: "vanilla".into(),
                node_id: key.node_id().to_string(),
                receipt_digest: digest.to_hex(),
                output: "{}".into(),
                receipt: serde_json::to_string(&r).unwrap(),
                // The settlement record goes to the outbox in the same transaction, as on
                // the gateway.
                outbox: Some(
                    serde_json::to_string(
                        &haca_chain::RunRecord::new(&r, Default::default(), None).unwrap(),
                    )
                    .unwrap(),
                ),
            };
            rt.block_on(store.insert_run(rec)).unwrap()
        })
    });

    // The floor: tract alone on the same model and input.
    let model = OnnxModel::load(EXAMPLE_MODEL).unwrap();
    let tensors = parse_input(&input(), "input").unwrap();
    c.bench_function("tract_direct_mlp", |b| {
        b.iter(|| model.run(&tensors, "input").unwrap())
    });

    // The whole path over HTTP on loopback: parse, resolve, run, hash, sign, commit, answer.
    let node_dir = tempfile::tempdir().unwrap();
    // No dev enclave: it is started from the running binary, which here is this bench.
    let mut cfg = NodeConfig::devnet("127.0.0.1:0".parse().unwrap(), node_dir.path().to_owned());
    cfg.dev_enclave = false;
    let node = rt.block_on(devnet::start(cfg)).unwrap();
    let http = reqwest::blocking::Client::new();
    let body =
        serde_json::to_vec(&json!({"model": "example/mnist-mlp", "input": input()})).unwrap();
    let url = format!("{}/v1/infer", node.url);
    c.bench_function("http_infer_mlp_with_receipt", |b| {
        b.iter(|| post_infer(&http, &url, &body, None))
    });
    rt.block_on(node.stop()).unwrap();

    // The same, on a node that keeps no chain: what settlement's background work (submission,
    // rounds, commits) costs the answer path on a machine shared with it.
    let bare_dir = tempfile::tempdir().unwrap();
    let mut cfg = NodeConfig::devnet("127.0.0.1:0".parse().unwrap(), bare_dir.path().to_owned());
    cfg.dev_enclave = false;
    cfg.validator = false;
    let bare = rt.block_on(devnet::start(cfg)).unwrap();
    let bare_url = format!("{}/v1/infer", bare.url);
    c.bench_function("http_infer_mlp_no_chain", |b| {
        b.iter(|| post_infer(&http, &bare_url, &body, None))
    });
    rt.block_on(bare.stop()).unwrap();

    // The ops layer's cost on that path (issue 23): the same no-chain node with no ops layer
    // at all, and with every limit on (per-key and per-IP buckets too large to refuse, a
    // concurrency limit on /v1/infer), each request carrying an API key; the default node
    // above has the layer with no limits (/metrics, request ids, per-route counters).
    let ops_node = |ops: haca::server::ops::OpsConfig| {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = NodeConfig::devnet("127.0.0.1:0".parse().unwrap(), dir.path().to_owned());
        cfg.dev_enclave = false;
        cfg.validator = false;
        cfg.ops = ops;
        (rt.block_on(devnet::start(cfg)).unwrap(), dir)
    };
    let (off, _off_dir) = ops_node(haca::server::ops::OpsConfig {
        off: true,
        ..Default::default()
    });
    let off_url = format!("{}/v1/infer", off.url);
    c.bench_function("http_infer_mlp_no_chain_no_ops_layer", |b| {
        b.iter(|| post_infer(&http, &off_url, &body, None))
    });
    rt.block_on(off.stop()).unwrap();
    let (limited, _limited_dir) = ops_node(haca::server::ops::OpsConfig {
        per_key: Some((1e9, u32::MAX)),
        per_ip: Some((1e9, u32::MAX)),
        max_concurrent: [("/v1/infer".to_owned(), 1024)].into(),
        ..Default::default()
    });
    let limited_url = format!("{}/v1/infer", limited.url);
    c.bench_function("http_infer_mlp_no_chain_all_limits", |b| {
        b.iter(|| {
            let resp = http
                .post(&limited_url)
                .header("content-type", "application/json")
                .header("x-api-key", "hk_bench")
                .body(body.clone())
                .send()
                .unwrap();
            assert!(resp.status().is_success());
            resp.bytes().unwrap()
        })
    });
    rt.block_on(limited.stop()).unwrap();

    // The same run paid with x402 (`exact`, v2). The client's signature is made outside the
    // timing (`iter_batched` setup); the timed part adds the gateway's header decode, EIP-712
    // recovery and checks, and the ledger transaction that settles before the model runs.
    let paid_dir = tempfile::tempdir().unwrap();
    let mut cfg = NodeConfig::devnet("127.0.0.1:0".parse().unwrap(), paid_dir.path().to_owned());
    cfg.payments = Some(haca_gateway::payment::PaymentConfig::devnet(U256::from(
        1_000u64,
    )));
    cfg.dev_enclave = false;
    let paid = rt.block_on(devnet::start(cfg)).unwrap();
    let signer = PrivateKeySigner::from_bytes(&B256::repeat_byte(7)).unwrap();
    let funded = http
        .post(format!("{}/v1/x402/faucet", paid.url))
        .json(&json!({"address": signer.address().to_checksum(None), "amount": "1000000000000"}))
        .send()
        .unwrap();
    assert!(funded.status().is_success());
    let paid_url = format!("{}/v1/infer", paid.url);
    let refused = http
        .post(&paid_url)
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .unwrap();
    assert_eq!(refused.status().as_u16(), 402);
    let required = decode_payment_required_header(
        refused.headers()[PAYMENT_REQUIRED_HEADER].to_str().unwrap(),
    )
    .unwrap();
    let selected = select_requirement(&required, &PayPolicy::default()).unwrap();
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    c.bench_function("http_infer_mlp_paid_x402", |b| {
        b.iter_batched(
            || {
                let nonce = B256::from(rand::random::<[u8; 32]>());
                encode_header(&build_payment(&selected, &signer, now(), nonce))
            },
            |header| post_infer(&http, &paid_url, &body, Some(header)),
            BatchSize::SmallInput,
        )
    });
    rt.block_on(paid.stop()).unwrap();
}

criterion_group!(benches, bench);
criterion_main!(benches);
