//! x402 payments settle with their runs: validators check the payer's signature and that
//! the authorization never settled before, and a receipt whose run settled proves its
//! payment settled too (`payment.settled`, offline).

use crate::support::certify::certify;

use haca_chain::{standard_evidence, ChainState, Outcome, RejectCode, RunRecord};
use haca_core::claims::{Checker, Claim, ClaimState, TrustAnchors};
use haca_core::receipt::ParsedReceipt;
use haca_core::receipt::{BoxStatus, EvidenceBox, PaymentEvidence};
use haca_core::settlement::{
    Genesis, SettlementMode, SettlementParams, Validator, ValidatorHistory, ValidatorSet,
};
use haca_core::testing::vanilla_receipt;
use haca_core::{BlobId, NodeKey, Receipt};
use haca_pay::PrivateKeySigner;

const T0: u64 = 1_764_000_000_000;

fn genesis(gateway: &NodeKey, validator: &NodeKey) -> Genesis {
    Genesis {
        tee: None,
        chain_id: "haca-pay-test".into(),
        genesis_time_ms: T0,
        validators: ValidatorSet::new(vec![Validator {
            public_key: validator.node_id(),
            power: 1,
        }])
        .unwrap(),
        gateways: vec![gateway.node_id()],
        settlement: SettlementParams::default(),
    }
}

/// A signed receipt for run `seed`, paid by `payer` with authorization `nonce`; `tamper`
/// changes the box before the node signs it.
fn paid(
    key: &NodeKey,
    payer: &PrivateKeySigner,
    seed: u64,
    nonce: u8,
    mode: SettlementMode,
    tamper: fn(&mut PaymentEvidence),
) -> (Receipt, RunRecord) {
    let mut r = vanilla_receipt(key, BlobId::of(b"model"), T0 + seed, seed);
    r.settlement_mode = Some(mode);
    let exec = r.boxes.execution.evidence.clone().unwrap();
    let mut p = haca_pay::testing::signed_payment(
        payer,
        exec.request_hash,
        nonce,
        T0 + seed - 1,
        T0 / 1000 + 3600,
    );
    p.model = Some(BlobId::of(b"model"));
    p.mode = Some(exec.mode);
    tamper(&mut p);
    r.boxes.payment = EvidenceBox::with(p, BoxStatus::Claimed, T0 + seed);
    r.sign(key).unwrap();
    let rec = RunRecord::new(&r, mode, None).unwrap();
    (r, rec)
}

fn rejected_reason(
    state: &ChainState,
    block: &haca_chain::Block,
    run: &RunRecord,
) -> (RejectCode, String) {
    assert!(matches!(
        state.outcome(&run.run_id),
        Some(Outcome::Rejected { .. })
    ));
    block
        .rejected
        .iter()
        .find(|x| x.record.run_id == run.run_id)
        .map(|x| (x.code, x.reason.clone()))
        .unwrap()
}

#[test]
fn an_authorization_settles_once_and_its_receipt_proves_it_offline() {
    let (gw, val) = (NodeKey::from_seed([1; 32]), NodeKey::from_seed([2; 32]));
    let g = genesis(&gw, &val);
    let s0 = ChainState::genesis(&g);
    let ev = standard_evidence();
    let payer = PrivateKeySigner::random();

    // Two runs paid with one authorization in one block: the first settles, the second
    // waits, and is rejected in the next block as a replay.
    let (r1, a) = paid(&gw, &payer, 1, 7, SettlementMode::Batch, |_| {});
    let (_, b) = paid(&gw, &payer, 2, 7, SettlementMode::Batch, |_| {});
    let (_, c) = paid(&gw, &payer, 3, 8, SettlementMode::Batch, |_| {});
    // A box whose payer did not sign it is refused by evidence.
    let (_, forged) = paid(&gw, &payer, 4, 9, SettlementMode::Batch, |p| {
        p.amount = "1".into()
    });
    let (b1, s1) = s0.propose(
        T0 + 10,
        vec![a.clone(), b.clone(), c.clone(), forged.clone()],
        vec![],
        &*ev,
    );
    assert_eq!(b1.records.len(), 2, "{:?}", b1.rejected);
    assert!(s0.check(&b1, &*ev).is_ok());
    let (code, reason) = rejected_reason(&s1, &b1, &forged);
    assert_eq!(code, RejectCode::PaymentInvalid, "{reason}");
    assert!(reason.starts_with("payment:"), "{reason}");
    assert!(s1.outcome(&b.run_id).is_none(), "the second waits");
    assert_ne!(s1.hash(), s0.hash());

    let (b2, s2) = s1.propose(T0 + 20, vec![b.clone()], vec![], &*ev);
    let (code, reason) = rejected_reason(&s2, &b2, &b);
    assert_eq!(code, RejectCode::PaymentSpent, "{reason}");
    assert!(
        reason.contains("already settled") && reason.contains(&a.run_id.to_string()),
        "{reason}"
    );
    assert!(s1.check(&b2, &*ev).is_ok());
    assert_eq!(s1.replay(&b2).unwrap().hash(), s2.hash());

    // A block that settles the replay anyway is refused by every validator.
    let mut lying = b2.clone();
    lying.records = std::mem::take(&mut lying.rejected)
        .into_iter()
        .map(|x| x.record)
        .collect();
    let err = s1.check(&lying, &*ev).unwrap_err();
    assert!(err.contains("already settled"), "{err}");

    // Offline: before its round lands, payment.settled is not present; once the round's
    // evidence is in the receipt, it holds. The payer's signature holds either way.
    let mut anchors = TrustAnchors::from_history(ValidatorHistory::from(&g), false);
    anchors.payment = Some(&haca_pay::receipt_check::PAYMENT_VERIFIER);
    let check = |r: &Receipt, claim: Claim| {
        let parsed = ParsedReceipt::from_receipt(r.clone());
        let o = Checker::new(&parsed, &anchors, T0 + 40).check(claim);
        (o.state, o.detail)
    };
    let (state, detail) = check(&r1, Claim::PaymentSettled);
    assert_eq!(state, ClaimState::NotPresent, "{detail}");
    let (state, detail) = check(&r1, Claim::PaymentAuthorized);
    assert_eq!(state, ClaimState::Holds, "{detail}");
    let (_, ev) = b1
        .settlement_evidence(&certify(&[&val], &b1))
        .into_iter()
        .find(|(run, _)| *run == r1.run_id)
        .unwrap();
    let mut r = r1.clone();
    r.boxes.settlement = EvidenceBox::with(ev, BoxStatus::Settled, T0 + 30);
    let (state, detail) = check(&r, Claim::PaymentSettled);
    assert_eq!(state, ClaimState::Holds, "{detail}");
    assert!(detail.contains("spent its nonce"), "{detail}");
}

/// A private record shows validators only its digest: its payment is not checked on chain,
/// and the receipt does not claim it was.
#[test]
fn a_private_run_leaves_its_payment_to_the_nodes_word() {
    let (gw, val) = (NodeKey::from_seed([1; 32]), NodeKey::from_seed([2; 32]));
    let payer = PrivateKeySigner::random();
    let (r, rec) = paid(&gw, &payer, 1, 7, SettlementMode::Private, |_| {});
    assert!(rec.payment().is_none());
    let anchors = TrustAnchors::from_history(ValidatorHistory::from(&genesis(&gw, &val)), false);
    let parsed = ParsedReceipt::from_receipt(r);
    let o = Checker::new(&parsed, &anchors, T0 + 40).check(Claim::PaymentSettled);
    assert_eq!(o.state, ClaimState::Unchecked, "{}", o.detail);
    assert!(o.detail.contains("privately"), "{}", o.detail);
}
