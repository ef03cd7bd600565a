//! `data.attested` and `data.fresh` on receipts that carry data items.

use haca_core::claims::{Checker, Claim, ClaimState, TrustAnchors};
use haca_core::receipt::{BoxStatus, DataEvidence, DataItem, EvidenceBox};
use haca_core::{sha256, BlobId, NodeId, NodeKey, ParsedReceipt};

const T0: u64 = 1_764_000_000_000;

fn item(data_key: &NodeKey) -> DataItem {
    DataItem {
        id: None,
        source: "http://127.0.0.1:9/rates".into(),
        fetched_at: T0 - 2_000,
        valid_until: Some(T0 + 58_000),
        http_status: Some(200),
        sha256: sha256(b"1.08"),
        tls_cert_sha256: None,
        content_type: Some("text/plain".into()),
        size: Some(4),
        signer: NodeId([0; 32]),
        signature: String::new(),
        age_ms: None,
    }
    .sign(data_key)
}

/// A receipt whose data box holds `items`, signed by the gateway.
fn receipt(items: Vec<DataItem>) -> ParsedReceipt {
    let gw = NodeKey::from_seed([1; 32]);
    let mut r = haca_core::testing::vanilla_receipt(&gw, BlobId::of(b"m"), T0, 0);
    r.boxes.data = EvidenceBox::with(DataEvidence { items }, BoxStatus::Claimed, T0);
    r.sign(&gw).unwrap();
    ParsedReceipt::from_json_str(&serde_json::to_string(&r).unwrap()).unwrap()
}

fn check(p: &ParsedReceipt, trusted: Option<&NodeKey>, claim: Claim) -> (ClaimState, String) {
    let anchors = TrustAnchors {
        data_nodes: trusted.map(|k| [k.node_id()].into_iter().collect()),
        ..TrustAnchors::default()
    };
    let o = Checker::new(p, &anchors, T0 + 1_000).check(claim);
    (o.state, o.detail)
}

#[test]
fn data_attested_holds_for_a_trusted_node_and_is_unchecked_without_anchors() {
    let dn = NodeKey::from_seed([9; 32]);
    let mut i = item(&dn);
    i.age_ms = Some(2_000);
    let p = receipt(vec![i]);
    let (s, d) = check(&p, Some(&dn), Claim::DataAttested);
    assert_eq!(s, ClaimState::Holds, "{d}");
    let (s, d) = check(&p, None, Claim::DataAttested);
    assert_eq!(s, ClaimState::Unchecked, "{d}");
    assert!(d.contains("--data-node"), "{d}");
    let other = NodeKey::from_seed([10; 32]);
    let (s, d) = check(&p, Some(&other), Claim::DataAttested);
    assert_eq!(s, ClaimState::Fails, "{d}");
    assert!(d.contains("not a trusted data node"), "{d}");
    let (s, d) = check(&p, None, Claim::DataFresh { max_age_s: 60 });
    assert_eq!(s, ClaimState::Holds, "{d}");
}

#[test]
fn a_tampered_item_or_a_forged_signature_fails_data_attested() {
    let dn = NodeKey::from_seed([9; 32]);
    let mut hash_changed = item(&dn);
    hash_changed.sha256 = sha256(b"9.99");
    let mut source_changed = item(&dn);
    source_changed.source = "http://127.0.0.1:9/other".into();
    source_changed.id = Some(source_changed.computed_id());
    let mut forged = item(&NodeKey::from_seed([66; 32]));
    forged.signer = dn.node_id();
    forged.id = Some(forged.computed_id());
    for (what, bad) in [
        ("content hash", hash_changed),
        ("source", source_changed),
        ("forged signature", forged),
    ] {
        let p = receipt(vec![item(&dn), bad]);
        for anchors in [Some(&dn), None] {
            let (s, d) = check(&p, anchors, Claim::DataAttested);
            assert_eq!(s, ClaimState::Fails, "{what}: {d}");
        }
    }
}

#[test]
fn an_item_used_after_its_valid_until_fails_data_fresh() {
    let dn = NodeKey::from_seed([9; 32]);
    let mut late = item(&dn);
    late.age_ms = Some(61_000);
    let p = receipt(vec![late]);
    let (s, d) = check(&p, None, Claim::DataFresh { max_age_s: 3600 });
    assert_eq!(s, ClaimState::Fails, "{d}");
    assert!(d.contains("after its valid_until"), "{d}");
}
