//! Governance transactions: validators holding more than 2/3 of the current set's power add
//! and remove validators and gateways; set changes take effect from the next height, the
//! exported history keeps old certificates and old receipts verifiable, replay reaches the
//! same state, and live consensus follows the set.

use crate::support::certify::certify;

use crate::support::consensus_host;

use haca_chain::consensus::{self, EngineConfig, Host};
use haca_chain::state::{governance_message, Approval, GovAction, Tx};
use haca_chain::validator::Validator as ChainValidator;
use haca_chain::{Block, ChainState, RejectCode, RunRecord, SignatureAndHashes};
use haca_core::settlement::{
    CertificateError, Genesis, SettlementMode, SettlementParams, Validator, ValidatorSet,
};
use haca_core::testing::vanilla_receipt;
use haca_core::{BlobId, NodeKey};
use haca_store::Store;
use std::sync::Arc;
use std::time::Duration;

const CHAIN: &str = "haca-gov";

fn key(i: u8) -> NodeKey {
    NodeKey::from_seed([i; 32])
}

/// Validators A..D (seeds 10..13), power 1 each.
fn validators(n: u8) -> Vec<NodeKey> {
    (0..n).map(|i| key(10 + i)).collect()
}

fn set_of(keys: &[NodeKey]) -> ValidatorSet {
    ValidatorSet::new(
        keys.iter()
            .map(|k| Validator {
                public_key: k.node_id(),
                power: 1,
            })
            .collect(),
    )
    .unwrap()
}

fn genesis(vals: &[NodeKey], gateways: &[&NodeKey]) -> Genesis {
    Genesis {
        tee: None,
        chain_id: CHAIN.into(),
        genesis_time_ms: 1_700_000_000_000,
        validators: set_of(vals),
        gateways: gateways.iter().map(|k| k.node_id()).collect(),
        settlement: SettlementParams::default(),
    }
}

/// The next governance transaction on `state`, approved by `signers`.
fn gov(state: &ChainState, action: GovAction, signers: &[&NodeKey]) -> Tx {
    let seq = state.governance_seq + 1;
    Tx::Governance {
        seq,
        approvals: signers
            .iter()
            .map(|k| Approval::sign(k, CHAIN, seq, &action))
            .collect(),
        action,
    }
}

fn record(gateway: &NodeKey, seed: u64) -> RunRecord {
    let mut r = vanilla_receipt(gateway, BlobId::of(b"m"), 1_700_000_000_000, seed);
    r.settlement_mode = Some(SettlementMode::Batch);
    r.sign(gateway).unwrap();
    RunRecord::new(&r, SettlementMode::Batch, None).unwrap()
}

/// Proposes the next block, checks that another validator accepts it, and returns both.
fn step(state: &ChainState, records: Vec<RunRecord>, txs: Vec<Tx>) -> (Block, ChainState) {
    let (block, next) = state.propose(state.last_time_ms + 1000, records, txs, &SignatureAndHashes);
    let checked = state.check(&block, &SignatureAndHashes).unwrap();
    assert_eq!(checked.hash(), next.hash());
    assert_eq!(block.header.state_hash, next.hash());
    (block, next)
}

fn add(k: &NodeKey) -> GovAction {
    GovAction::AddValidator {
        public_key: k.node_id(),
        power: 1,
    }
}

#[test]
fn refused_without_a_quorum_of_approvals() {
    let v = validators(4);
    let state = ChainState::genesis(&genesis(&v, &[]));
    let newcomer = key(50);

    let two = gov(&state, add(&newcomer), &[&v[0], &v[1]]);
    let err = state.check_tx(&two).unwrap_err();
    assert!(
        err.contains("hold 2 of 4 voting power; more than 2/3 is needed"),
        "{err}"
    );
    // The proposer leaves it out; a block carrying it is refused.
    let (block, _) = step(&state, vec![], vec![two.clone()]);
    assert!(block.txs.is_empty());

    let three = gov(&state, add(&newcomer), &[&v[0], &v[1], &v[2]]);
    state.check_tx(&three).unwrap();
    let (block, next) = step(&state, vec![], vec![three]);
    assert_eq!(block.txs.len(), 1);
    assert_eq!(next.governance_seq, 1);
    assert_eq!(next.validators.validators().len(), 5);

    // A proposer that slips the under-approved change into a block is refused.
    let mut forged = block.clone();
    forged.txs = vec![two];
    assert!(state.check(&forged, &SignatureAndHashes).is_err());
}

#[test]
fn a_bad_signature_refuses_the_transaction() {
    let v = validators(4);
    let state = ChainState::genesis(&genesis(&v, &[]));
    let action = add(&key(50));

    // One approval signed over another seq: it does not verify for seq 1.
    let mut approvals: Vec<Approval> = v[..3]
        .iter()
        .map(|k| Approval::sign(k, CHAIN, 1, &action))
        .collect();
    approvals[2] = Approval::sign(&v[2], CHAIN, 2, &action);
    let tx = Tx::Governance {
        seq: 1,
        action: action.clone(),
        approvals: approvals.clone(),
    };
    let err = state.check_tx(&tx).unwrap_err();
    assert!(err.contains("does not verify"), "{err}");
    assert!(err.contains(&v[2].node_id().to_string()), "{err}");

    // Signed for another chain.
    approvals[2] = Approval::sign(&v[2], "other-chain", 1, &action);
    let tx = Tx::Governance {
        seq: 1,
        action: action.clone(),
        approvals: approvals.clone(),
    };
    assert!(state.check_tx(&tx).unwrap_err().contains("does not verify"));

    // Approvals of one action do not approve another.
    approvals[2] = Approval::sign(&v[2], CHAIN, 1, &action);
    let tx = Tx::Governance {
        seq: 1,
        action: add(&key(51)),
        approvals: approvals.clone(),
    };
    assert!(state.check_tx(&tx).unwrap_err().contains("does not verify"));

    // Not hex at all.
    approvals[2].signature = "zz".into();
    let tx = Tx::Governance {
        seq: 1,
        action,
        approvals,
    };
    assert!(state.check_tx(&tx).unwrap_err().contains("does not verify"));

    // The signed bytes are the documented layout.
    let m = governance_message(
        CHAIN,
        7,
        &GovAction::RemoveGateway {
            node: key(1).node_id(),
        },
    );
    let text = String::from_utf8(m).unwrap();
    assert_eq!(
        text,
        format!(
            "haca.gov.v1:{{\"action\":{{\"action\":\"remove_gateway\",\"node\":\"{}\"}},\"chain_id\":\"haca-gov\",\"seq\":7}}",
            key(1).node_id()
        )
    );
}

#[test]
fn duplicate_approvals_count_once() {
    let v = validators(4);
    let state = ChainState::genesis(&genesis(&v, &[]));
    let tx = gov(&state, add(&key(50)), &[&v[0], &v[0], &v[0], &v[1]]);
    let err = state.check_tx(&tx).unwrap_err();
    assert!(err.contains("hold 2 of 4"), "{err}");
    let tx = gov(&state, add(&key(50)), &[&v[0], &v[0], &v[1], &v[2]]);
    state.check_tx(&tx).unwrap();
}

#[test]
fn approvals_from_non_validators_do_not_count() {
    let v = validators(4);
    let state = ChainState::genesis(&genesis(&v, &[]));
    let (x, y) = (key(60), key(61));
    let tx = gov(&state, add(&key(50)), &[&v[0], &v[1], &x, &y]);
    let err = state.check_tx(&tx).unwrap_err();
    assert!(err.contains("hold 2 of 4"), "{err}");
    assert!(err.contains("2 approval(s) by keys outside"), "{err}");
    // The newcomer cannot approve its own admission either.
    let tx = gov(&state, add(&key(50)), &[&v[0], &v[1], &key(50)]);
    assert!(state.check_tx(&tx).is_err());
}

#[test]
fn a_replayed_or_out_of_order_seq_is_refused() {
    let v = validators(4);
    let all: Vec<&NodeKey> = v.iter().collect();
    let state = ChainState::genesis(&genesis(&v, &[]));
    let gw = key(1);
    let tx = gov(
        &state,
        GovAction::RegisterGateway { node: gw.node_id() },
        &all,
    );
    let (b1, s1) = step(&state, vec![], vec![tx.clone()]);
    assert_eq!(b1.txs, vec![tx.clone()]);
    assert_eq!(s1.governance_seq, 1);
    assert_eq!(s1.gateways.get(&gw.node_id()), Some(&1));

    let err = s1.check_tx(&tx).unwrap_err();
    assert!(
        err.contains("governance seq 1 was already applied"),
        "{err}"
    );
    // Even if the action would apply again (removed and re-registered), the seq is spent.
    let (_, s2) = step(
        &s1,
        vec![],
        vec![gov(
            &s1,
            GovAction::RemoveGateway { node: gw.node_id() },
            &all,
        )],
    );
    assert!(s2
        .check_tx(&tx)
        .unwrap_err()
        .contains("was already applied"));
    // A block replaying it is refused.
    let (mut b3, _) = step(&s2, vec![], vec![]);
    b3.txs = vec![tx.clone()];
    assert!(s2
        .check(&b3, &SignatureAndHashes)
        .unwrap_err()
        .contains("already applied"));

    // Skipping ahead is refused too.
    let mut ahead = gov(&s2, add(&key(50)), &all);
    if let Tx::Governance {
        seq,
        approvals,
        action,
    } = &mut ahead
    {
        *seq = 5;
        *approvals = all
            .iter()
            .map(|k| Approval::sign(k, CHAIN, 5, action))
            .collect();
    }
    let err = s2.check_tx(&ahead).unwrap_err();
    assert!(
        err.contains("governance seq 5 is out of order: expected seq 3"),
        "{err}"
    );

    // Two governance transactions: the proposer takes the first; a block with both is refused.
    let first = gov(&s2, add(&key(50)), &all);
    let second = gov(&s2, add(&key(51)), &all); // also seq 3
    let (b, s3) = step(&s2, vec![], vec![first.clone(), second.clone()]);
    assert_eq!(b.txs, vec![first.clone()]);
    assert!(s3.check_tx(&second).is_err(), "seq 3 is spent");
    let mut both = b.clone();
    both.txs = vec![first, second];
    let err = s2.check(&both, &SignatureAndHashes).unwrap_err();
    assert!(err.contains("at most one is allowed"), "{err}");
}

#[test]
fn actions_are_checked_against_the_state() {
    let v = validators(1);
    let state = ChainState::genesis(&genesis(&v, &[&key(1)]));
    let a = &v[0];
    let refused = |action: GovAction, why: &str| {
        let err = state.check_tx(&gov(&state, action, &[a])).unwrap_err();
        assert!(err.contains(why), "{err}");
    };
    refused(add(a), "is already a validator");
    refused(
        GovAction::AddValidator {
            public_key: key(50).node_id(),
            power: 0,
        },
        "zero voting power",
    );
    refused(
        GovAction::RemoveValidator {
            public_key: key(50).node_id(),
        },
        "is not a validator",
    );
    refused(
        GovAction::RemoveValidator {
            public_key: a.node_id(),
        },
        "would leave the validator set empty",
    );
    refused(
        GovAction::RegisterGateway {
            node: key(1).node_id(),
        },
        "is already registered",
    );
    refused(
        GovAction::RemoveGateway {
            node: key(2).node_id(),
        },
        "is not registered",
    );

    // The wire form: tagged by "type" and "action"; unknown fields are refused.
    let tx = gov(&state, add(&key(50)), &[a]);
    let json = serde_json::to_value(&tx).unwrap();
    assert_eq!(json["type"], "governance");
    assert_eq!(json["action"]["action"], "add_validator");
    assert_eq!(serde_json::from_value::<Tx>(json.clone()).unwrap(), tx);
    let mut extra = json;
    extra["action"]["note"] = "x".into();
    assert!(serde_json::from_value::<Tx>(extra).is_err());
}

#[test]
fn an_added_validator_signs_from_the_next_height() {
    let v = validators(4);
    let all: Vec<&NodeKey> = v.iter().collect();
    let state = ChainState::genesis(&genesis(&v, &[]));
    let e = key(50);
    let old = state.validators.clone();

    let (b1, s1) = step(&state, vec![], vec![gov(&state, add(&e), &all[..3])]);
    assert_eq!(
        b1.header.validator_set_hash,
        old.hash(),
        "block 1 is signed by the old set"
    );
    let mut five = v.clone();
    five.push(e.clone());
    let new = set_of(&five);
    assert_eq!(
        s1.validators, new,
        "the state holds the set that signs block 2"
    );

    let (b2, s2) = step(&s1, vec![], vec![]);
    assert_eq!(b2.header.validator_set_hash, new.hash());
    assert_ne!(b2.header.validator_set_hash, b1.header.validator_set_hash);

    let history = s2.history();
    assert_eq!(history.chain_id, CHAIN);
    assert_eq!(history.validator_sets.len(), 2);
    assert_eq!(history.validator_sets[1].from_height, 2);
    assert_eq!(history.set_at(1), Some(&old));
    assert_eq!(history.set_at(2), Some(&new));
    assert_eq!(history.set_at(3), Some(&new));
    assert_eq!(s2.validator_set_at(1), Some(&old));
    assert_eq!(s2.validator_set_at(3), Some(&new));
    assert_eq!(s2.validator_set_at(4), None, "not decided yet");

    // Block 1's certificate comes from the old set; block 2's needs 4 of the 5.
    certify(&all, &b1)
        .verify(&b1.header, history.set_at(1).unwrap())
        .unwrap();
    let mut signers: Vec<&NodeKey> = vec![&e, &v[0], &v[1]];
    assert!(matches!(
        certify(&signers, &b2).verify(&b2.header, history.set_at(2).unwrap()),
        Err(CertificateError::NoQuorum { got: 3, total: 5 })
    ));
    signers.push(&v[2]);
    certify(&signers, &b2)
        .verify(&b2.header, history.set_at(2).unwrap())
        .unwrap();
    // The old set does not certify block 2.
    assert!(matches!(
        certify(&all, &b2).verify(&b2.header, &old),
        Err(CertificateError::ValidatorSet { .. })
    ));

    // The newcomer's approval counts for the next change.
    let tx = gov(&s2, add(&key(51)), &[&e, &v[0], &v[1]]);
    assert!(s2.check_tx(&tx).unwrap_err().contains("hold 3 of 5"));
    let tx = gov(&s2, add(&key(51)), &[&e, &v[0], &v[1], &v[2]]);
    s2.check_tx(&tx).unwrap();
}

#[test]
fn old_certificates_and_receipts_verify_after_a_removal() {
    let v = validators(4);
    let all: Vec<&NodeKey> = v.iter().collect();
    let gw = key(1);
    let state = ChainState::genesis(&genesis(&v, &[&gw]));
    let rec = record(&gw, 1);

    let (b1, s1) = step(&state, vec![rec.clone()], vec![]);
    assert_eq!(b1.records.len(), 1);
    let cert1 = certify(&all, &b1);
    let evidence = b1.settlement_evidence(&cert1).remove(0).1;

    let removed = &v[3];
    let tx = gov(
        &s1,
        GovAction::RemoveValidator {
            public_key: removed.node_id(),
        },
        &all[..3],
    );
    let (_b2, s2) = step(&s1, vec![], vec![tx]);
    let (b3, s3) = step(&s2, vec![], vec![]);
    let three = set_of(&v[..3]);
    assert_eq!(b3.header.validator_set_hash, three.hash());

    let history = s3.history();
    assert_eq!(history.set_at(1), Some(&set_of(&v)));
    assert_eq!(history.set_at(3), Some(&three));
    // The receipt settled at height 1 still verifies against the exported history, and so
    // does the file written from it.
    let text = serde_json::to_string(&history).unwrap();
    let read = haca_core::settlement::ValidatorHistory::from_json_str(&text).unwrap();
    assert_eq!(read, history);
    let ok = evidence
        .verify(&rec.run_id, &rec.receipt_digest, &read)
        .unwrap();
    assert!(ok.contains("certified by 4 of 4 validators"), "{ok}");
    // Block 3: the removed validator's signature is not welcome, the other three suffice.
    assert!(matches!(
        certify(&all, &b3).verify(&b3.header, history.set_at(3).unwrap()),
        Err(CertificateError::UnknownSigner(k)) if k == removed.node_id()
    ));
    certify(&all[..3], &b3)
        .verify(&b3.header, history.set_at(3).unwrap())
        .unwrap();
    // The removed validator's approval no longer counts.
    let tx = gov(&s3, add(&key(50)), &[&v[0], &v[1], removed]);
    assert!(s3.check_tx(&tx).unwrap_err().contains("hold 2 of 3"));
}

#[test]
fn a_registered_gateway_settles_and_a_removed_one_is_refused() {
    let v = validators(1);
    let a = &v[0];
    let gw = key(1);
    let state = ChainState::genesis(&genesis(&v, &[]));

    // Not registered: refused.
    let early = record(&gw, 1);
    let (b1, s1) = step(&state, vec![early.clone()], vec![]);
    assert!(b1.records.is_empty());
    assert!(b1.rejected[0].reason.contains("not registered"));
    assert_eq!(b1.rejected[0].code, RejectCode::GatewayUnregistered);

    // Registered in block 2: its records settle from block 3.
    let reg = gov(&s1, GovAction::RegisterGateway { node: gw.node_id() }, &[a]);
    let rec = record(&gw, 2);
    let (b2, s2) = step(&s1, vec![rec.clone()], vec![reg]);
    assert_eq!(b2.txs.len(), 1);
    assert!(
        b2.records.is_empty(),
        "checked against the state before the block"
    );
    let (b3, s3) = step(&s2, vec![rec.clone(), early.clone()], vec![]);
    assert_eq!(b3.records, vec![rec.clone(), early.clone()]);
    let cert3 = certify(&[a], &b3);
    let evidence = b3.settlement_evidence(&cert3);

    // Removed in block 4: later records are refused.
    let rm = gov(&s3, GovAction::RemoveGateway { node: gw.node_id() }, &[a]);
    let (_b4, s4) = step(&s3, vec![], vec![rm]);
    assert!(!s4.gateways.contains_key(&gw.node_id()));
    let late = record(&gw, 3);
    let (b5, s5) = step(&s4, vec![late.clone()], vec![]);
    assert!(b5.records.is_empty());
    assert!(
        b5.rejected[0].reason.contains("not registered"),
        "{:?}",
        b5.rejected
    );
    assert_eq!(b5.rejected[0].code, RejectCode::GatewayUnregistered);

    // The old settlements remain, and verify with the exported history.
    assert!(matches!(
        s5.outcome(&rec.run_id),
        Some(haca_chain::Outcome::Settled { height: 3, .. })
    ));
    let history = s5.history();
    let entry = history
        .gateways
        .iter()
        .find(|g| g.node == gw.node_id())
        .unwrap();
    assert_eq!((entry.from_height, entry.until_height), (2, Some(4)));
    assert!(history.gateway_keys().contains(&gw.node_id()));
    assert!(!history.gateway_at(&gw.node_id(), 2));
    assert!(history.gateway_at(&gw.node_id(), 3));
    assert!(history.gateway_at(&gw.node_id(), 4));
    assert!(!history.gateway_at(&gw.node_id(), 5));
    for (run, ev) in evidence {
        let r = if run == rec.run_id { &rec } else { &early };
        ev.verify(&run, &r.receipt_digest, &history).unwrap();
    }
    // A still-registered gateway's entry carries no until_height on the wire.
    let s6 = step(
        &s5,
        vec![],
        vec![gov(
            &s5,
            GovAction::RegisterGateway { node: gw.node_id() },
            &[a],
        )],
    )
    .1;
    let h6 = serde_json::to_value(s6.history()).unwrap();
    let entries = h6["gateways"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["until_height"], 4);
    assert!(entries[1].get("until_height").is_none());
    assert_eq!(entries[1]["from_height"], 6);
}

/// Every kind of governance change, then a replay of the blocks from genesis.
#[test]
fn replay_reaches_the_same_state_hash() {
    let v = validators(4);
    let all: Vec<&NodeKey> = v.iter().collect();
    let gw = key(1);
    let g = genesis(&v, &[]);
    let mut state = ChainState::genesis(&g);
    let mut blocks = Vec::new();
    let e = key(50);
    let actions = [
        GovAction::RegisterGateway { node: gw.node_id() },
        add(&e),
        GovAction::RemoveValidator {
            public_key: v[3].node_id(),
        },
        GovAction::RemoveGateway { node: gw.node_id() },
    ];
    let mut approvers: Vec<&NodeKey> = all.clone();
    for (i, action) in actions.into_iter().enumerate() {
        if i == 1 {
            approvers.push(&e);
        }
        let tx = gov(&state, action, &approvers);
        let (b, next) = step(&state, vec![record(&gw, i as u64)], vec![tx]);
        assert_eq!(b.txs.len(), 1, "change {i} applies");
        blocks.push(b);
        state = next;
    }
    assert_eq!(state.governance_seq, 4);

    let mut replayed = ChainState::genesis(&g);
    for b in &blocks {
        replayed = replayed.replay(b).unwrap();
    }
    assert_eq!(replayed.hash(), state.hash());
    assert_eq!(replayed.history(), state.history());

    // The history is part of the state hash.
    let mut other = state.clone();
    other.validator_history.pop();
    assert_ne!(other.hash(), state.hash());
    let mut other = state.clone();
    other.governance_seq += 1;
    assert_ne!(other.hash(), state.hash());
    let mut other = state.clone();
    other.removed_gateways.clear();
    assert_ne!(other.hash(), state.hash());
}

/// Proposes and commits one block on a `Validator` the way the engine would.
async fn commit_next(v: &ChainValidator, signers: &[&NodeKey]) -> u64 {
    let height = v.committed_height() + 1;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(200);
    let block = v.propose(height, 0, deadline).await;
    let b = Block::decode(&block.bytes).unwrap();
    v.commit(height, &block.bytes, certify(signers, &b))
        .unwrap();
    height
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reopened_validator_replays_governance() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chain.db");
    let v = validators(1);
    let (a, b) = (&v[0], key(50));
    let g = genesis(&v, &[]);
    let (hash, history) = {
        let val = ChainValidator::open(
            g.clone(),
            Arc::new(Store::open(&path).unwrap()),
            Box::new(SignatureAndHashes),
        )
        .unwrap();
        let add_b = Tx::Governance {
            seq: 1,
            approvals: vec![Approval::sign(a, CHAIN, 1, &add(&b))],
            action: add(&b),
        };
        // Approvals from the wrong set are refused at submission.
        let bad = Tx::Governance {
            seq: 1,
            approvals: vec![Approval::sign(&b, CHAIN, 1, &add(&b))],
            action: add(&b),
        };
        assert!(val.submit_tx(bad).is_err());
        val.submit_tx(add_b.clone()).unwrap();
        assert_eq!(commit_next(&val, &[a]).await, 1);
        assert!(val
            .submit_tx(add_b)
            .unwrap_err()
            .contains("already applied"));
        assert_eq!(val.governance_seq(), 1);
        assert_eq!(val.validator_set(1), Some(set_of(&v)));
        let two = ValidatorSet::new(vec![
            Validator {
                public_key: a.node_id(),
                power: 1,
            },
            Validator {
                public_key: b.node_id(),
                power: 1,
            },
        ])
        .unwrap();
        assert_eq!(val.validator_set(2), Some(two.clone()));
        assert_eq!(Host::validator_set(&val, 2), Some(two));
        assert_eq!(val.validator_set(3), None);
        assert_eq!(commit_next(&val, &[a, &b]).await, 2);
        let gw = key(1);
        val.submit_tx(Tx::Governance {
            seq: 2,
            approvals: [a, &b]
                .iter()
                .map(|k| {
                    Approval::sign(
                        k,
                        CHAIN,
                        2,
                        &GovAction::RegisterGateway { node: gw.node_id() },
                    )
                })
                .collect(),
            action: GovAction::RegisterGateway { node: gw.node_id() },
        })
        .unwrap();
        assert_eq!(commit_next(&val, &[a, &b]).await, 3);
        assert_eq!(val.validator_history().gateways.len(), 1);
        (val.state_hash(), val.validator_history())
    };
    let val = ChainValidator::open(
        g,
        Arc::new(Store::open(&path).unwrap()),
        Box::new(SignatureAndHashes),
    )
    .unwrap();
    assert_eq!(val.state_hash(), hash);
    assert_eq!(val.validator_history(), history);
    assert_eq!(val.governance_seq(), 2);
}

/// Live consensus on loopback: a chain whose genesis set is {A}; B runs as a follower
/// peered with A; an AddValidator(B) approved by A commits, and later blocks carry both
/// signatures.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_added_by_governance_joins_consensus() {
    consensus_host::init_tracing();
    let (a, b) = (key(10), key(11));
    let mut g = genesis(std::slice::from_ref(&a), &[]);
    g.settlement.round_interval_ms = 50;
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let open = |i: usize| {
        Arc::new(
            ChainValidator::open(
                g.clone(),
                Arc::new(Store::open(dirs[i].path().join("chain.db")).unwrap()),
                Box::new(SignatureAndHashes),
            )
            .unwrap(),
        )
    };
    let (va, vb) = (open(0), open(1));
    let (addr_a, addr_b) = (consensus_host::free_addr(), consensus_host::free_addr());
    let config = |i: usize, k: &NodeKey, listen, peers| EngineConfig {
        chain_id: CHAIN.into(),
        home: dirs[i].path().join("engine"),
        key: k.clone(),
        validators: g.validators.clone(),
        listen,
        peers,
        timeout_propose: Duration::from_millis(600),
        timeout_prevote: Duration::from_millis(300),
        timeout_precommit: Duration::from_millis(300),
    };
    let ea = consensus::start(config(0, &a, addr_a, vec![]), va.clone())
        .await
        .unwrap();
    let eb = consensus::start(config(1, &b, addr_b, vec![addr_a]), vb.clone())
        .await
        .expect("a key outside the set starts as a follower");

    async fn reach(v: &ChainValidator, height: u64, what: &str) {
        let mut rx = v.heights();
        tokio::time::timeout(Duration::from_secs(15), rx.wait_for(|h| *h >= height))
            .await
            .unwrap_or_else(|_| panic!("{what} reaches height {height}"))
            .unwrap();
    }
    // B follows A's chain without voting.
    reach(&va, 2, "A").await;
    reach(&vb, 2, "follower B").await;
    let (_, cert) = vb.committed_block(2).unwrap();
    assert_eq!(cert.signatures.len(), 1);

    let action = add(&b);
    let seq = va.governance_seq() + 1;
    va.submit_tx(Tx::Governance {
        seq,
        approvals: vec![Approval::sign(&a, CHAIN, seq, &action)],
        action,
    })
    .unwrap();
    let mut rx = va.heights();
    let added_at = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if va.governance_seq() == seq {
                return va.committed_height();
            }
            rx.changed().await.unwrap();
        }
    })
    .await
    .expect("the AddValidator commits");
    let both = set_of(&[a.clone(), b.clone()]);
    assert_eq!(va.validator_set(added_at + 1), Some(both.clone()));

    // Later blocks need both signatures (2 of 2 is the only quorum), and keep coming.
    let target = added_at + 3;
    reach(&va, target, "A, with B voting").await;
    reach(&vb, target, "B").await;
    let history = va.validator_history();
    assert_eq!(history, vb.validator_history());
    assert_eq!(history.set_at(added_at), Some(&g.validators));
    assert_eq!(history.set_at(added_at + 1), Some(&both));
    for height in [added_at, added_at + 1, target] {
        let (bytes, cert) = va.committed_block(height).unwrap();
        let header = Block::decode(&bytes).unwrap().header;
        cert.verify(&header, history.set_at(height).unwrap())
            .unwrap_or_else(|e| panic!("certificate of height {height}: {e}"));
        let signers: Vec<_> = cert.signatures.iter().map(|s| s.validator).collect();
        if height > added_at {
            assert!(
                signers.contains(&a.node_id()) && signers.contains(&b.node_id()),
                "height {height} is signed by A and B: {signers:?}"
            );
        }
    }
    eb.stop().await;
    ea.stop().await;
    // B's state matches the state A's block at B's height committed to.
    let (hb, hash_b) = vb.state_hash();
    assert!(hb >= target);
    let (bytes, _) = va.committed_block(hb).unwrap();
    assert_eq!(Block::decode(&bytes).unwrap().header.state_hash, hash_b);
}
