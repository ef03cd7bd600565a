//! A validator reopened over its store replays every committed block to the same state hash,
//! keeps settlement evidence available, and refuses to start over a damaged block.

use haca_chain::consensus::Host;
use haca_chain::validator::{RunSettlement, Submitted, Validator};
use haca_chain::{RunRecord, SignatureAndHashes};
use haca_core::settlement::{
    vote_sign_bytes, Certificate, CommitSignature, Genesis, SettlementMode, SettlementParams,
    Validator as ValidatorEntry, ValidatorSet, VoteKind,
};
use haca_core::testing::vanilla_receipt;
use haca_core::{BlobId, NodeKey};
use haca_store::Store;
use std::sync::Arc;
use std::time::Duration;

fn genesis(validator: &NodeKey, gateway: &NodeKey) -> Genesis {
    Genesis {
        tee: None,
        chain_id: "haca-replay".into(),
        genesis_time_ms: 0,
        validators: ValidatorSet::new(vec![ValidatorEntry {
            public_key: validator.node_id(),
            power: 1,
        }])
        .unwrap(),
        gateways: vec![gateway.node_id()],
        settlement: SettlementParams {
            max_round_records: 3,
            round_interval_ms: 0,
        },
    }
}

fn record(key: &NodeKey, seed: u64) -> RunRecord {
    let mut r = vanilla_receipt(key, BlobId::of(b"m"), 1_700_000_000_000, seed);
    r.settlement_mode = Some(SettlementMode::Batch);
    r.sign(key).unwrap();
    RunRecord::new(&r, SettlementMode::Batch, None).unwrap()
}

/// Proposes and commits one block the way the engine would, with a real certificate.
async fn commit_next(v: &Validator, key: &NodeKey) -> u64 {
    let height = v.committed_height() + 1;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    let block = v.propose(height, 0, deadline).await;
    let msg = vote_sign_bytes(VoteKind::Precommit, height, 0, Some(&block.id));
    let cert = Certificate {
        height,
        round: 0,
        block_id: block.id,
        signatures: vec![CommitSignature {
            validator: key.node_id(),
            signature: hex::encode(key.sign(&msg)),
        }],
    };
    v.commit(height, &block.bytes, cert).unwrap();
    height
}

#[tokio::test(flavor = "multi_thread")]
async fn reopening_replays_to_the_same_state_and_damage_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (vkey, gkey) = (NodeKey::from_seed([2; 32]), NodeKey::from_seed([1; 32]));
    let g = genesis(&vkey, &gkey);
    let path = dir.path().join("chain.db");
    let (hash, settled_run) = {
        let store = Arc::new(Store::open(&path).unwrap());
        let v = Validator::open(g.clone(), store, Box::new(SignatureAndHashes)).unwrap();
        let recs: Vec<RunRecord> = (0..7).map(|i| record(&gkey, i)).collect();
        for r in &recs {
            assert_eq!(v.submit(r.clone()).unwrap(), Submitted::Queued);
        }
        assert_eq!(v.submit(recs[0].clone()).unwrap(), Submitted::AlreadyQueued);
        for _ in 0..3 {
            commit_next(&v, &vkey).await;
        }
        assert_eq!(v.pending(), 0);
        assert_eq!(
            v.submit(recs[0].clone()).unwrap(),
            Submitted::AlreadySettled
        );
        (v.state_hash(), recs[6].run_id)
    };

    // Reopen: the same height and state hash, and evidence still served.
    let store = Arc::new(Store::open(&path).unwrap());
    let v = Validator::open(g.clone(), store.clone(), Box::new(SignatureAndHashes)).unwrap();
    assert_eq!(v.state_hash(), hash);
    match v.settlement(&settled_run).unwrap() {
        RunSettlement::Settled(ev) => assert_eq!(ev.header.height, 3),
        other => panic!("{other:?}"),
    }
    drop(v);

    // Damage a committed block behind the store's back: the validator refuses to start.
    store
        .write_blocking(|tx| {
            tx.execute_batch(
                "DROP TRIGGER chain_blocks_no_update;
                 UPDATE chain_blocks SET block = CAST(REPLACE(CAST(block AS TEXT), '\"round\":1', '\"round\":9') AS BLOB) WHERE height = 1;",
            )?;
            Ok(())
        })
        .unwrap();
    let err = Validator::open(g, store, Box::new(SignatureAndHashes))
        .err()
        .expect("a damaged block must be refused");
    assert!(
        err.to_string().contains("height 1 does not replay"),
        "{err}"
    );
}

/// A forged record queued first under a run id must not keep the genuine record out: the
/// genuine one takes its place and settles, and a second forgery cannot displace it.
#[tokio::test(flavor = "multi_thread")]
async fn a_forgery_queued_first_does_not_hold_the_run_id() {
    let dir = tempfile::tempdir().unwrap();
    let (vkey, gkey) = (NodeKey::from_seed([2; 32]), NodeKey::from_seed([1; 32]));
    let store = Arc::new(Store::open(dir.path().join("chain.db")).unwrap());
    let v = Validator::open(genesis(&vkey, &gkey), store, Box::new(SignatureAndHashes)).unwrap();
    let genuine = record(&gkey, 1);
    let mut forged = genuine.clone();
    forged.signature = hex::encode([7u8; 64]);
    assert_eq!(v.submit(forged.clone()).unwrap(), Submitted::Queued);
    assert_eq!(v.submit(forged.clone()).unwrap(), Submitted::AlreadyQueued);
    assert_eq!(v.submit(genuine.clone()).unwrap(), Submitted::Queued);
    assert_eq!(v.pending(), 1);
    let mut forged2 = genuine.clone();
    forged2.signature = hex::encode([8u8; 64]);
    assert_eq!(v.submit(forged2).unwrap(), Submitted::AlreadyQueued);
    commit_next(&v, &vkey).await;
    assert_eq!(v.pending(), 0);
    assert!(
        matches!(
            v.settlement(&genuine.run_id).unwrap(),
            RunSettlement::Settled(_)
        ),
        "the genuine record did not settle"
    );
}
