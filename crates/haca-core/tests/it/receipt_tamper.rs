//! A signed receipt detects any changed value in what it signs, and late boxes stay outside
//! the signature so that settlement can land without re-signing.

use haca_core::claims::{Checker, Claim, ClaimState, TrustAnchors};
use haca_core::ids::BlobId;
use haca_core::keys::NodeKey;
use haca_core::receipt::*;
use proptest::prelude::*;
use serde_json::Value;

static ANCHORS: TrustAnchors = TrustAnchors {
    registered_nodes: None,
    allow_dev_root: false,
    validators: None,
    attestation: None,
    payment: None,
    proof: None,
    data_nodes: None,
};

fn signed_receipt() -> (Receipt, NodeKey) {
    let key = NodeKey::from_seed([42; 32]);
    let mut r =
        haca_core::testing::vanilla_receipt(&key, BlobId::of(b"model"), 1_764_000_000_000, 0);
    let t = r.issued_at;
    r.boxes.memory = EvidenceBox::with(
        MemoryEvidence {
            rows: vec![MemoryRow {
                id: "m1".into(),
                owner: "0xabc".into(),
                created_at: t - 10,
                last_validated_at: t - 5,
                score: 0.5,
                sealed_sha256: Some(haca_core::sha256(b"sealed row")),
                stale: false,
            }],
            owner: Some("0xabc".into()),
            ..Default::default()
        },
        BoxStatus::Claimed,
        t,
    );
    r.sign(&key).unwrap();
    (r, key)
}

/// Paths to every leaf of a JSON value.
fn leaves(v: &Value, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match v {
        Value::Object(m) => m.iter().for_each(|(k, c)| {
            path.push(k.clone());
            leaves(c, path, out);
            path.pop();
        }),
        Value::Array(a) if !a.is_empty() => a.iter().enumerate().for_each(|(i, c)| {
            path.push(i.to_string());
            leaves(c, path, out);
            path.pop();
        }),
        _ => out.push(path.clone()),
    }
}

fn at<'a>(v: &'a mut Value, path: &[String]) -> &'a mut Value {
    path.iter().fold(v, |v, k| match v {
        Value::Array(a) => &mut a[k.parse::<usize>().unwrap()],
        other => &mut other[k.as_str()],
    })
}

fn mutate(v: &mut Value, salt: u8) {
    *v = match v.take() {
        Value::Null => Value::from(salt),
        Value::Bool(b) => Value::Bool(!b),
        Value::Number(n) => Value::from(n.as_f64().unwrap() + 1.0 + salt as f64),
        Value::String(s) if s.len() == 64 && s.chars().all(|c| c.is_ascii_hexdigit()) => {
            // keep it well-formed hex so the parser accepts it and the signature must catch it
            let flipped = if s.starts_with('0') { "1" } else { "0" };
            Value::String(format!("{flipped}{}", &s[1..]))
        }
        Value::String(s) => Value::String(format!("{s}{}", salt as char)),
        Value::Array(_) => Value::Array(vec![Value::from(salt)]),
        Value::Object(_) => Value::from(salt),
    };
}

#[test]
fn untouched_receipt_verifies() {
    let (r, _) = signed_receipt();
    let parsed = ParsedReceipt::from_value(r.to_value()).unwrap();
    let c = Checker::new(&parsed, &ANCHORS, r.issued_at);
    assert_eq!(c.check(Claim::ExecutionSigned).state, ClaimState::Holds);
    assert_eq!(c.check(Claim::ArtifactIdentified).state, ClaimState::Holds);
    assert!(c.problems().is_empty(), "{:?}", c.problems());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_changed_value_in_the_signed_view_is_detected(pick in any::<prop::sample::Index>(), salt in 33u8..126) {
        let (r, _) = signed_receipt();
        let raw = r.to_value();
        let mut paths = Vec::new();
        leaves(&signed_view(&raw), &mut Vec::new(), &mut paths);
        let path = pick.get(&paths).clone();
        let mut tampered = raw.clone();
        mutate(at(&mut tampered, &path), salt);
        match ParsedReceipt::from_value(tampered) {
            Err(_) => {} // refused as malformed: detected
            Ok(parsed) => {
                let c = Checker::new(&parsed, &ANCHORS, r.issued_at);
                prop_assert_eq!(c.check(Claim::ExecutionSigned).state, ClaimState::Fails, "path {:?}", path);
            }
        }
    }
}

#[test]
fn adding_a_field_breaks_the_signature() {
    let (r, _) = signed_receipt();
    let mut raw = r.to_value();
    raw["boxes"]["route"]["evidence"]["note"] = Value::from("trust me");
    let parsed = ParsedReceipt::from_value(raw).unwrap();
    let c = Checker::new(&parsed, &ANCHORS, r.issued_at);
    assert_eq!(c.check(Claim::ExecutionSigned).state, ClaimState::Fails);
}

#[test]
fn settlement_lands_without_breaking_the_signature_but_a_bare_status_is_flagged() {
    let (r, _) = signed_receipt();
    let mut raw = r.to_value();
    raw["boxes"]["settlement"]["status"] = Value::from("settled");
    let parsed = ParsedReceipt::from_value(raw).unwrap();
    let c = Checker::new(&parsed, &ANCHORS, r.issued_at);
    assert_eq!(c.check(Claim::ExecutionSigned).state, ClaimState::Holds);
    assert_eq!(c.check(Claim::RunSettled).state, ClaimState::NotPresent);
    assert!(
        c.problems().iter().any(|p| p.contains("boxes.settlement")),
        "{:?}",
        c.problems()
    );
}

#[test]
fn stale_memory_row_fails_freshness_at_the_reference_time() {
    let (r, _) = signed_receipt();
    let parsed = ParsedReceipt::from_receipt(r.clone());
    let anchors = TrustAnchors::default();
    let fresh =
        Checker::new(&parsed, &anchors, r.issued_at).check(Claim::MemoryFresh { max_age_s: 60 });
    assert_eq!(fresh.state, ClaimState::Holds, "{}", fresh.detail);
    let later = Checker::new(&parsed, &anchors, r.issued_at + 3_600_000)
        .check(Claim::MemoryFresh { max_age_s: 60 });
    assert_eq!(later.state, ClaimState::Fails);
    assert!(later.detail.contains("m1"), "{}", later.detail);
}

#[test]
fn truncated_and_non_json_receipts_get_clear_errors() {
    let (r, _) = signed_receipt();
    let text = serde_json::to_string(&r).unwrap();
    let e = ParsedReceipt::from_json_str(&text[..text.len() / 2])
        .unwrap_err()
        .to_string();
    assert!(e.contains("truncated"), "{e}");
    let e = ParsedReceipt::from_json_str("hello")
        .unwrap_err()
        .to_string();
    assert!(e.contains("not valid JSON"), "{e}");
    let mut raw = r.to_value();
    raw["boxes"]["execution"]["evidence"]["input_hash"] = Value::from("xyz");
    let e = ParsedReceipt::from_value(raw).unwrap_err().to_string();
    assert!(e.contains("boxes.execution.evidence.input_hash"), "{e}");
}

#[test]
fn claims_parse_and_print_round_trip() {
    for c in Claim::all(300, 30 * 86_400) {
        assert_eq!(c.to_string().parse::<Claim>().unwrap(), c);
    }
    assert_eq!(
        "data.fresh(300s)".parse::<Claim>().unwrap(),
        Claim::DataFresh { max_age_s: 300 }
    );
    assert_eq!(
        "memory.fresh(30d)".parse::<Claim>().unwrap().to_string(),
        "memory.fresh(30d)"
    );
    assert!("execution.vibes".parse::<Claim>().is_err());
}

/// The payment claims say what the box shows and no more: a box covering another request
/// fails `payment.authorized`; an API-key charge carries no signature (unchecked); a box
/// signed before settlement fails `payment.settled`; a settled one is the node's word only.
#[test]
fn payment_claims_check_what_the_payment_covered() {
    let key = NodeKey::from_seed([42; 32]);
    let with_payment = |edit: &dyn Fn(&mut PaymentEvidence)| {
        let mut r =
            haca_core::testing::vanilla_receipt(&key, BlobId::of(b"model"), 1_764_000_000_000, 0);
        let exec = r.boxes.execution.evidence.clone().unwrap();
        let mut p = PaymentEvidence {
            scheme: "apikey".into(),
            network: "eip155:31337".into(),
            asset: "0x5FbDB2315678afecb367f032d93F642f64180aa3".into(),
            amount: "1000".into(),
            payer: "0x00000000000000000000000000000000000000aa".into(),
            nonce: format!("0x{}", "11".repeat(32)),
            resource: "http://127.0.0.1/v1/infer".into(),
            request_hash: exec.request_hash,
            model: Some(BlobId::of(b"model")),
            mode: Some(ExecMode::Vanilla),
            max_tokens: None,
            authorization: None,
            verified_at: r.issued_at - 5,
            settlement: Some(PaymentSettlement {
                transaction: "0xabc".into(),
                settled_at: r.issued_at - 4,
                round: None,
            }),
            upto: None,
        };
        edit(&mut p);
        r.boxes.payment = EvidenceBox::with(p, BoxStatus::Claimed, r.issued_at);
        r.sign(&key).unwrap();
        ParsedReceipt::from_json_str(&serde_json::to_string(&r).unwrap()).unwrap()
    };
    let state = |parsed: &ParsedReceipt, claim: Claim| {
        let c = Checker::new(parsed, &ANCHORS, parsed.receipt.issued_at);
        let o = c.check(claim);
        (o.state, o.detail)
    };

    let ok = with_payment(&|_| {});
    let (s, d) = state(&ok, Claim::PaymentAuthorized);
    assert_eq!(s, ClaimState::Unchecked, "{d}");
    assert!(d.contains("API-key"), "{d}");
    let (s, d) = state(&ok, Claim::PaymentSettled);
    assert_eq!(s, ClaimState::Unchecked, "{d}");
    assert!(d.contains("0xabc"), "{d}");

    let other_request = with_payment(&|p| p.request_hash = haca_core::sha256(b"another"));
    let (s, d) = state(&other_request, Claim::PaymentAuthorized);
    assert_eq!(s, ClaimState::Fails, "{d}");
    assert!(d.contains("covered request"), "{d}");

    let other_model = with_payment(&|p| p.model = Some(BlobId::of(b"another")));
    let (s, d) = state(&other_model, Claim::PaymentAuthorized);
    assert_eq!(s, ClaimState::Fails, "{d}");
    assert!(d.contains("covered artifact"), "{d}");

    let unsettled = with_payment(&|p| p.settlement = None);
    assert_eq!(
        state(&unsettled, Claim::PaymentSettled).0,
        ClaimState::Fails
    );

    // An x402 box verified outside its window fails before any signature check.
    let late = with_payment(&|p| {
        p.scheme = "exact".into();
        p.authorization = Some(PaymentAuthorization {
            token_name: "USD Coin".into(),
            token_version: "2".into(),
            chain_id: 31337,
            pay_to: "0x70997970C51812dc3A010C7d01b50e0d17dc79C8".into(),
            valid_after: 0,
            valid_before: 1_000,
            signature: "0x00".into(),
        })
    });
    let (s, d) = state(&late, Claim::PaymentAuthorized);
    assert_eq!(s, ClaimState::Fails, "{d}");
    assert!(d.contains("window"), "{d}");
}

/// `memory.owned` holds only when every row is the box owner's, sealed, and the owner paid.
#[test]
fn memory_owned_needs_the_payer_to_own_every_sealed_row() {
    let key = NodeKey::from_seed([42; 32]);
    let payer = "0x00000000000000000000000000000000000000aa";
    let build = |edit: &dyn Fn(&mut MemoryEvidence), paid_by: Option<&str>| {
        let (mut r, _) = signed_receipt();
        let mut m = r.boxes.memory.evidence.clone().unwrap();
        m.owner = Some(payer.into());
        m.rows[0].owner = payer.into();
        edit(&mut m);
        r.boxes.memory = EvidenceBox::with(m, BoxStatus::Claimed, r.issued_at);
        if let Some(p) = paid_by {
            let exec = r.boxes.execution.evidence.clone().unwrap();
            r.boxes.payment = EvidenceBox::with(
                PaymentEvidence {
                    scheme: "apikey".into(),
                    network: "eip155:31337".into(),
                    asset: "0x5FbDB2315678afecb367f032d93F642f64180aa3".into(),
                    amount: "1000".into(),
                    payer: p.into(),
                    nonce: format!("0x{}", "11".repeat(32)),
                    resource: "http://127.0.0.1/v1/chat/completions".into(),
                    request_hash: exec.request_hash,
                    model: None,
                    mode: None,
                    max_tokens: None,
                    authorization: None,
                    verified_at: r.issued_at - 5,
                    settlement: None,
                    upto: None,
                },
                BoxStatus::Claimed,
                r.issued_at,
            );
        }
        r.sign(&key).unwrap();
        ParsedReceipt::from_json_str(&serde_json::to_string(&r).unwrap()).unwrap()
    };
    let owned = |parsed: &ParsedReceipt| {
        let o = Checker::new(parsed, &ANCHORS, parsed.receipt.issued_at).check(Claim::MemoryOwned);
        (o.state, o.detail)
    };
    let (s, d) = owned(&build(
        &|_| {},
        Some(&payer.to_uppercase().replace("0X", "0x")),
    ));
    assert_eq!(s, ClaimState::Holds, "{d}");
    let (s, d) = owned(&build(
        &|_| {},
        Some("0x00000000000000000000000000000000000000bb"),
    ));
    assert_eq!(s, ClaimState::Fails, "{d}");
    assert!(d.contains("paid by"), "{d}");
    let (s, d) = owned(&build(&|m| m.rows[0].owner = "0xcc".into(), Some(payer)));
    assert_eq!(s, ClaimState::Fails, "{d}");
    assert!(d.contains("row m1 belongs to 0xcc"), "{d}");
    let (s, d) = owned(&build(&|m| m.rows[0].sealed_sha256 = None, Some(payer)));
    assert_eq!(s, ClaimState::Fails, "{d}");
    assert!(d.contains("sealed"), "{d}");
    let (s, d) = owned(&build(&|_| {}, None));
    assert_eq!(s, ClaimState::Unchecked, "{d}");
}
