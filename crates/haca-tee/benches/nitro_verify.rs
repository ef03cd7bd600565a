//! Attestation verifications per second: a real AWS-signed Nitro document (full chain and
//! COSE signature, at its own timestamp), a dev-CA document of the same format, and Intel
//! TDX/SGX quotes with their offline collateral (dcap-qvl's samples).

use criterion::{criterion_group, criterion_main, Criterion};
use haca_tee::{parse, verify, Policy};

const DOC: &[u8] = include_bytes!("../tests/fixtures/nitro/base_nitro_validator.cbor");

fn bench(c: &mut Criterion) {
    let at: u64 = include_str!("../tests/fixtures/nitro/base_nitro_validator.at")
        .trim()
        .parse()
        .unwrap();
    let policy = Policy::at(at, 5 * 60_000);
    c.bench_function("nitro_parse", |b| b.iter(|| parse(DOC).unwrap()));
    c.bench_function("nitro_verify_full", |b| {
        b.iter(|| verify(DOC, &policy).unwrap())
    });

    let ca = haca_tee::DevCa::from_seed(&[7; 32]);
    let t = 1_790_000_000_000;
    let dev_doc = ca
        .document(&haca_tee::DocumentRequest {
            timestamp_ms: t,
            pcrs: haca_tee::dev_pcrs(b"bench image"),
            public_key: Some(vec![1; 32]),
            ..Default::default()
        })
        .unwrap();
    let dev_policy = Policy::at(t, 5 * 60_000).with_roots(vec![ca.trusted_root()]);
    c.bench_function("dev_document_verify_full", |b| {
        b.iter(|| verify(&dev_doc, &dev_policy).unwrap())
    });

    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dcap");
    for (name, tcb) in [
        ("tdx_quote", None),
        ("sgx_quote", Some("configuration_and_sw_hardening_needed")),
    ] {
        let quote = std::fs::read(dir.join(name)).unwrap();
        let collateral = haca_tee::dcap::parse_collateral(
            &std::fs::read(dir.join(format!("{name}_collateral.json"))).unwrap(),
        )
        .unwrap();
        let at: u64 = std::fs::read_to_string(dir.join(format!("{name}.at")))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let mut policy = haca_tee::DcapPolicy::default();
        if let Some(s) = tcb {
            policy = policy.allow_tcb(s.parse().unwrap());
        }
        c.bench_function(&format!("dcap_verify_{name}"), |b| {
            b.iter(|| haca_tee::dcap::verify(&quote, &collateral, at, &policy).unwrap())
        });
    }

    // OpenGradient-compatible answer signatures: what an enclave adds per answer (RSA-PSS
    // sign), what a client or gateway spends checking one, and the chat request hash.
    let signer = haca_tee::og_compat::OgSigner::generate().unwrap();
    let fields = signer.sign([1; 32], [2; 32], 1_764_000_000);
    c.bench_function("og_rsa_pss_sign", |b| {
        b.iter(|| signer.sign([1; 32], [2; 32], 1_764_000_000))
    });
    c.bench_function("og_rsa_pss_verify", |b| {
        b.iter(|| haca_tee::og_compat::verify_fields(signer.spki_der(), &fields).unwrap())
    });
    let body = serde_json::json!({
        "model": "local/gemma-3-270m", "temperature": 0.7, "max_tokens": 256,
        "messages": [{"role": "system", "content": "You are concise."},
                     {"role": "user", "content": "Summarize the TEE registry rules in one line, please."}]
    });
    c.bench_function("og_chat_request_hash", |b| {
        b.iter(|| haca_tee::og_compat::chat_request_hash(&body).unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
