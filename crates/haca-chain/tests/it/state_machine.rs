//! The chain state machine: records settle or are rejected with their reason, blocks re-check
//! and replay to the same state hash, settlement evidence verifies offline, and a validator
//! refuses blocks that lie about their records.

use crate::support::certify::certify;

use haca_chain::record::RecordContent;
use haca_chain::state::Tx;
use haca_chain::state::{EvidenceView, Rejected};
use haca_chain::{
    Block, ChainState, EvidenceVerifier, Outcome, RejectCode, Rejection, RunRecord,
    SignatureAndHashes,
};
use haca_core::claims::{Checker, Claim, ClaimState, TrustAnchors};
use haca_core::receipt::ParsedReceipt;
use haca_core::settlement::{
    Genesis, SettlementMode, SettlementParams, Validator, ValidatorHistory, ValidatorSet,
};
use haca_core::tensor;
use haca_core::testing::vanilla_receipt;
use haca_core::{BlobId, NodeKey, Receipt};
use serde_json::json;

struct Fixture {
    gateway: NodeKey,
    validator: NodeKey,
    genesis: Genesis,
}

fn fixture() -> Fixture {
    let gateway = NodeKey::from_seed([1; 32]);
    let validator = NodeKey::from_seed([2; 32]);
    let genesis = Genesis {
        tee: None,
        chain_id: "haca-test".into(),
        genesis_time_ms: 1_700_000_000_000,
        validators: ValidatorSet::new(vec![Validator {
            public_key: validator.node_id(),
            power: 1,
        }])
        .unwrap(),
        gateways: vec![gateway.node_id()],
        settlement: SettlementParams::default(),
    };
    Fixture {
        gateway,
        validator,
        genesis,
    }
}

fn signed(key: &NodeKey, seed: u64, mode: SettlementMode) -> Receipt {
    let mut r = vanilla_receipt(key, BlobId::of(b"model"), 1_700_000_000_000 + seed, seed);
    r.settlement_mode = Some(mode);
    r.sign(key).unwrap();
    r
}

fn batch(key: &NodeKey, seed: u64) -> (Receipt, RunRecord) {
    let r = signed(key, seed, SettlementMode::Batch);
    let rec = RunRecord::new(&r, SettlementMode::Batch, None).unwrap();
    (r, rec)
}

#[test]
fn a_round_settles_its_records_and_each_receipt_verifies_offline() {
    let f = fixture();
    let state = ChainState::genesis(&f.genesis);
    let runs: Vec<(Receipt, RunRecord)> = (0..5).map(|i| batch(&f.gateway, i)).collect();
    let (block, next) = state.propose(
        1_700_000_001_000,
        runs.iter().map(|(_, r)| r.clone()).collect(),
        vec![],
        &SignatureAndHashes,
    );
    assert_eq!(block.records.len(), 5);
    assert!(block.rejected.is_empty());
    let summary = block.header.settlement.as_ref().unwrap();
    assert_eq!((summary.round, summary.records), (1, 5));
    assert_eq!(next.hash(), block.header.state_hash);

    let cert = certify(&[&f.validator], &block);
    let evidence = block.settlement_evidence(&cert);
    let anchors = TrustAnchors::from_history(ValidatorHistory::from(&f.genesis), false);
    for ((receipt, _), (run, ev)) in runs.iter().zip(evidence) {
        assert_eq!(run, receipt.run_id);
        let mut r = receipt.clone();
        r.boxes.settlement = haca_core::receipt::EvidenceBox::with(
            ev,
            haca_core::receipt::BoxStatus::Settled,
            1_700_000_001_000,
        );
        let parsed = ParsedReceipt::from_receipt(r.clone());
        let checker = Checker::new(&parsed, &anchors, 1_700_000_002_000);
        let o = checker.check(Claim::RunSettled);
        assert_eq!(o.state, ClaimState::Holds, "{}", o.detail);
        assert_eq!(
            checker.check(Claim::NodeRegistered).state,
            ClaimState::Holds
        );

        // The same settlement under another receipt of the same run fails.
        let mut swapped = r.to_value();
        swapped["issued_at"] = json!(1);
        let parsed = ParsedReceipt::from_value(swapped).unwrap();
        let o = Checker::new(&parsed, &anchors, 0).check(Claim::RunSettled);
        assert_eq!(o.state, ClaimState::Fails, "{}", o.detail);

        // Without a validator file the claim stays unchecked.
        let parsed = ParsedReceipt::from_receipt(r);
        let none = TrustAnchors::default();
        let o = Checker::new(&parsed, &none, 0).check(Claim::RunSettled);
        assert_eq!(o.state, ClaimState::Unchecked);
    }

    // Another chain's validators do not certify it.
    let mut other = f.genesis.clone();
    other.validators = ValidatorSet::new(vec![Validator {
        public_key: NodeKey::from_seed([9; 32]).node_id(),
        power: 1,
    }])
    .unwrap();
    let (receipt, _) = &runs[0];
    let mut r = receipt.clone();
    let ev = block.settlement_evidence(&cert).remove(0).1;
    r.boxes.settlement =
        haca_core::receipt::EvidenceBox::with(ev, haca_core::receipt::BoxStatus::Settled, 0);
    let parsed = ParsedReceipt::from_receipt(r);
    let anchors = TrustAnchors::from_history(ValidatorHistory::from(&other), false);
    let o = Checker::new(&parsed, &anchors, 0).check(Claim::RunSettled);
    assert_eq!(o.state, ClaimState::Fails);
    assert!(o.detail.contains("commit certificate"), "{}", o.detail);
}

#[test]
fn bad_records_are_rejected_with_their_reason_and_never_settled() {
    let f = fixture();
    let state = ChainState::genesis(&f.genesis);
    let (_, good) = batch(&f.gateway, 1);

    let stranger = NodeKey::from_seed([7; 32]);
    let (_, unregistered) = batch(&stranger, 2);

    let (_, mut forged_sig) = batch(&f.gateway, 3);
    forged_sig.signature = hex::encode(stranger.sign(b"something else"));

    let (_, mut wrong_digest) = batch(&f.gateway, 4);
    wrong_digest.receipt.as_mut().unwrap()["issued_at"] = json!(5);

    let (_, mut private_with_content) = batch(&f.gateway, 5);
    private_with_content.mode = SettlementMode::Private;

    let (block, next) = state.propose(
        1,
        vec![
            good.clone(),
            unregistered.clone(),
            forged_sig.clone(),
            wrong_digest.clone(),
            private_with_content.clone(),
            good.clone(), // a duplicate in the same batch is dropped
        ],
        vec![],
        &SignatureAndHashes,
    );
    assert_eq!(block.records, vec![good.clone()]);
    let reasons: Vec<(String, String)> = block
        .rejected
        .iter()
        .map(|x| (x.record.run_id.to_string(), x.reason.clone()))
        .collect();
    assert_eq!(reasons.len(), 4, "{reasons:#?}");
    assert!(reasons[0].1.contains("not registered"), "{}", reasons[0].1);
    assert!(
        reasons[1].1.contains("gateway signature"),
        "{}",
        reasons[1].1
    );
    assert!(reasons[2].1.contains("receipt digest"), "{}", reasons[2].1);
    assert!(reasons[3].1.contains("only hashes"), "{}", reasons[3].1);
    let codes: Vec<RejectCode> = block.rejected.iter().map(|x| x.code).collect();
    assert_eq!(
        codes,
        [
            RejectCode::GatewayUnregistered,
            RejectCode::GatewaySignature,
            RejectCode::ReceiptDigest,
            RejectCode::RecordShape
        ]
    );
    assert!(matches!(
        next.outcome(&forged_sig.run_id),
        Some(Outcome::Rejected { height: 1 })
    ));
    assert!(matches!(
        next.outcome(&good.run_id),
        Some(Outcome::Settled {
            height: 1,
            round: 1,
            leaf: 0
        })
    ));

    // Resubmitting a settled run after its round committed is a no-op.
    let (again, _) = next.propose(
        2,
        vec![good.clone(), forged_sig],
        vec![],
        &SignatureAndHashes,
    );
    assert!(again.records.is_empty());
    // A rejected record sent again is judged again: rejection never blocks a run id.
    assert_eq!(again.rejected.len(), 1);
    // Identical copies in one batch are judged once.
    let copies = again.rejected[0].record.clone();
    let (once, _) = next.propose(
        3,
        vec![copies.clone(), copies.clone(), copies],
        vec![],
        &SignatureAndHashes,
    );
    assert_eq!(once.rejected.len(), 1);
}

#[test]
fn private_and_individual_records_carry_what_their_mode_allows() {
    let f = fixture();
    let state = ChainState::genesis(&f.genesis);

    let private = signed(&f.gateway, 10, SettlementMode::Private);
    let private_rec = RunRecord::new(&private, SettlementMode::Private, None).unwrap();
    assert!(private_rec.receipt.is_none() && private_rec.content.is_none());

    // An individual run whose receipt hashes real tensors.
    let input = json!({"x": {"dtype": "float32", "shape": [2], "data": [1.5, -2.0]}});
    let output = json!({"y": {"dtype": "float32", "shape": [1], "data": [0.25]}});
    let hash = |v: &serde_json::Value| tensor::hash_tensors(&tensor::parse_input(v, "t").unwrap());
    let mut r = vanilla_receipt(&f.gateway, BlobId::of(b"m"), 5, 11);
    r.settlement_mode = Some(SettlementMode::Individual);
    let exec = r.boxes.execution.evidence.as_mut().unwrap();
    exec.input_hash = hash(&input);
    exec.output_hash = hash(&output);
    r.sign(&f.gateway).unwrap();
    let content = RecordContent {
        input: input.clone(),
        output: output.clone(),
    };
    let individual = RunRecord::new(&r, SettlementMode::Individual, Some(content)).unwrap();

    let mut lying_output = individual.clone();
    lying_output.content.as_mut().unwrap().output =
        json!({"y": {"dtype": "float32", "shape": [1], "data": [0.5]}});

    // The lying copy arrives first: it is refused, and the genuine record still settles.
    let (block, next) = state.propose(
        1,
        vec![lying_output, private_rec, individual.clone()],
        vec![],
        &SignatureAndHashes,
    );
    assert_eq!(block.records.len(), 2);
    assert_eq!(block.records[1], individual);
    assert!(matches!(
        next.outcome(&individual.run_id),
        Some(Outcome::Settled { .. })
    ));
    assert_eq!(block.rejected.len(), 1);
    assert_eq!(block.rejected[0].code, RejectCode::ContentHash);
    assert!(
        block.rejected[0]
            .reason
            .contains("content.output hashes to"),
        "{}",
        block.rejected[0].reason
    );
}

#[test]
fn replay_reaches_the_same_state_hash_and_lying_blocks_are_refused() {
    let f = fixture();
    let genesis = ChainState::genesis(&f.genesis);
    let mut state = genesis.clone();
    let mut blocks = Vec::new();
    for h in 0..4u64 {
        let recs: Vec<RunRecord> = (0..3).map(|i| batch(&f.gateway, h * 10 + i).1).collect();
        let blob = BlobId::of(format!("model {h}").as_bytes());
        let msg = haca_chain::state::label_message("example/m", &blob, h);
        let tx = Tx::MoveLabel {
            label: "example/m".into(),
            blob_id: blob,
            at_ms: h,
            gateway: f.gateway.node_id(),
            signature: hex::encode(f.gateway.sign(&msg)),
        };
        let (block, next) =
            state.propose(1_700_000_000_000 + h, recs, vec![tx], &SignatureAndHashes);
        blocks.push(block);
        state = next;
    }
    assert_eq!(state.models["example/m"].len(), 4);
    assert_eq!(state.rounds, 4);

    // Replay from genesis through the encoded blocks.
    let mut replay = genesis.clone();
    for b in &blocks {
        let decoded = Block::decode(&b.encode()).unwrap();
        replay = replay.check(&decoded, &SignatureAndHashes).unwrap();
    }
    assert_eq!(replay.hash(), state.hash());
    assert_eq!(replay.last_block_id, state.last_block_id);
    // A restart replays committed blocks without re-verifying their evidence, to the same end.
    let mut fast = genesis.clone();
    for b in &blocks {
        fast = fast.replay(b).unwrap();
    }
    assert_eq!(fast.hash(), state.hash());

    // A proposer that moves a good record into `rejected`, drops one, or edits the header
    // is refused by the re-check.
    let (mut b, _) = genesis.propose(
        1,
        vec![batch(&f.gateway, 99).1],
        vec![],
        &SignatureAndHashes,
    );
    let good = b.clone();
    let moved = b.records.pop().unwrap();
    b.rejected.push(Rejected {
        record: moved,
        code: RejectCode::GatewaySignature,
        reason: "made up".into(),
    });
    assert!(genesis
        .check(&b, &SignatureAndHashes)
        .unwrap_err()
        .contains("evidence holds"));

    let mut b = good.clone();
    b.header.settlement.as_mut().unwrap().records = 2;
    assert!(genesis.check(&b, &SignatureAndHashes).is_err());

    let mut b = good.clone();
    b.records[0].receipt_digest = haca_core::sha256(b"forged");
    let err = genesis.check(&b, &SignatureAndHashes).unwrap_err();
    assert!(err.contains("evidence fails"), "{err}");

    let mut b = good.clone();
    b.header.height = 5;
    assert!(genesis
        .check(&b, &SignatureAndHashes)
        .unwrap_err()
        .contains("height"));

    // Garbage is refused with the field named.
    let err = Block::decode(br#"{"header": 5}"#).unwrap_err();
    assert!(err.contains("header"), "{err}");
}

/// A verifier that refuses everything: the trait is the one place evidence checks plug in.
struct RefuseAll;
impl EvidenceVerifier for RefuseAll {
    fn verify(&self, _: &RunRecord, _: &EvidenceView<'_>) -> Result<(), Rejection> {
        Err(RejectCode::AttestationMissing.with("attestation missing"))
    }
}

#[test]
fn every_verifier_in_the_chain_is_consulted() {
    let f = fixture();
    let state = ChainState::genesis(&f.genesis);
    let all = haca_chain::record::AllOf(vec![Box::new(SignatureAndHashes), Box::new(RefuseAll)]);
    let (block, _) = state.propose(1, vec![batch(&f.gateway, 1).1], vec![], &all);
    assert_eq!(block.rejected[0].code, RejectCode::AttestationMissing);
    assert_eq!(block.rejected[0].reason, "attestation missing");
}

/// Another validator's verifier: the same verdicts and codes in other words, as from a
/// validator whose libraries (serde, the TEE and payment crates) word their errors otherwise.
struct Reworded(Box<dyn EvidenceVerifier>);
impl EvidenceVerifier for Reworded {
    fn verify(&self, r: &RunRecord, view: &EvidenceView<'_>) -> Result<(), Rejection> {
        self.0.verify(r, view).map_err(|e| {
            e.code
                .with(format!("in other words ({} characters)", e.detail.len()))
        })
    }
}

/// Recomputes a block's body root after an edit of its body (the state hash after it does
/// not depend on how its rejections are worded or coded).
fn reseal(b: &mut Block) {
    b.header.txs_root = Block::body_root(&b.records, &b.rejected, &b.txs);
}

/// A block that settles one record and rejects three, each for another code, with the states
/// before and after it.
fn rejecting_block(f: &Fixture) -> (ChainState, Block, ChainState) {
    let state = ChainState::genesis(&f.genesis);
    let stranger = NodeKey::from_seed([7; 32]);
    let (_, good) = batch(&f.gateway, 1);
    let (_, unregistered) = batch(&stranger, 2);
    let (_, mut forged_sig) = batch(&f.gateway, 3);
    forged_sig.signature = hex::encode(stranger.sign(b"something else"));
    let (_, mut wrong_digest) = batch(&f.gateway, 4);
    wrong_digest.receipt.as_mut().unwrap()["issued_at"] = json!(5);
    let (block, next) = state.propose(
        1,
        vec![good, unregistered, forged_sig, wrong_digest],
        vec![],
        haca_chain::standard_evidence().as_ref(),
    );
    let codes: Vec<RejectCode> = block.rejected.iter().map(|x| x.code).collect();
    assert_eq!(
        codes,
        [
            RejectCode::GatewayUnregistered,
            RejectCode::GatewaySignature,
            RejectCode::ReceiptDigest
        ]
    );
    (state, block, next)
}

#[test]
fn validators_agree_on_rejection_codes_whatever_their_wording() {
    let f = fixture();
    let (state, block, next) = rejecting_block(&f);
    let standard = haca_chain::standard_evidence();
    let reworded = Reworded(haca_chain::standard_evidence());

    // A validator whose verifier words every rejection otherwise accepts the block, and
    // reaches the same state.
    let checked = state
        .check(&block, &reworded)
        .expect("the same codes in other words");
    assert_eq!(checked.hash(), next.hash());

    // So does a validator checking a block whose proposer worded its rejections otherwise.
    let mut other_words = block.clone();
    for x in &mut other_words.rejected {
        x.reason = format!("the proposer's words ({} characters)", x.reason.len());
    }
    reseal(&mut other_words);
    assert_eq!(
        state.check(&other_words, standard.as_ref()).unwrap().hash(),
        next.hash()
    );

    // A block that rejects a record for another code is refused by both, naming both codes,
    // though its body root is resealed and its wording is the proposer's own.
    let mut other_code = block.clone();
    other_code.rejected[1].code = RejectCode::ReceiptDigest;
    reseal(&mut other_code);
    for v in [standard.as_ref(), &reworded as &dyn EvidenceVerifier] {
        let err = state.check(&other_code, v).unwrap_err();
        assert!(
            err.contains("with code receipt_digest")
                && err.contains("finds code gateway_signature"),
            "{err}"
        );
    }
    // The code is its only lie: without the evidence checks, the block applies.
    assert_eq!(state.replay(&other_code).unwrap().hash(), next.hash());
}

#[test]
fn rejections_from_before_codes_decode_and_replay_but_a_new_block_needs_its_codes() {
    let f = fixture();
    let (state, block, next) = rejecting_block(&f);
    let mut legacy = block.clone();
    for x in &mut legacy.rejected {
        x.code = RejectCode::Unclassified;
    }
    reseal(&mut legacy);
    // Encoded as blocks were before codes: no `code` field, so their body roots stay.
    let bytes = legacy.encode();
    let raw: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert!(raw["rejected"][0].get("code").is_none(), "{raw}");
    let coded: serde_json::Value = serde_json::from_slice(&block.encode()).unwrap();
    assert_eq!(coded["rejected"][1]["code"], "gateway_signature");

    let decoded = Block::decode(&bytes).unwrap();
    assert_eq!(decoded, legacy);
    assert_eq!(state.replay(&decoded).unwrap().hash(), next.hash());
    let err = state.check(&decoded, &SignatureAndHashes).unwrap_err();
    assert!(err.contains("with code unclassified"), "{err}");
}

#[test]
fn label_moves_need_a_registered_signer_and_cannot_be_replayed() {
    let f = fixture();
    let state = ChainState::genesis(&f.genesis);
    let blob = BlobId::of(b"weights");
    let mv = |key: &NodeKey| Tx::MoveLabel {
        label: "team/m".into(),
        blob_id: blob,
        at_ms: 7,
        gateway: key.node_id(),
        signature: hex::encode(key.sign(&haca_chain::state::label_message("team/m", &blob, 7))),
    };
    let stranger = NodeKey::from_seed([5; 32]);
    assert!(state
        .check_tx(&mv(&stranger))
        .unwrap_err()
        .contains("not a registered gateway"));
    let mut forged = mv(&f.gateway);
    let Tx::MoveLabel { at_ms, .. } = &mut forged else {
        unreachable!("mv builds a label move")
    };
    *at_ms = 8;
    assert!(state.check_tx(&forged).is_err());

    let (block, next) = state.propose(1, vec![], vec![mv(&f.gateway)], &SignatureAndHashes);
    assert_eq!(block.txs.len(), 1);
    assert_eq!(next.models["team/m"][0].revision, 1);
    let err = next.check_tx(&mv(&f.gateway)).unwrap_err();
    assert!(err.contains("replay"), "{err}");
    let (again, _) = next.propose(2, vec![], vec![mv(&f.gateway)], &SignatureAndHashes);
    assert!(again.txs.is_empty());
}
