//! The transparency log end to end: batches, proofs between every pair of checkpoints,
//! durability across reopen, signatures, damage detection and concurrent appends.

use haca_chain::log::{LogEntry, LogError, TransparencyLog};
use haca_core::checkpoint::SignedCheckpoint;
use haca_core::merkle::{empty_root, verify_consistency, verify_inclusion};
use haca_core::NodeKey;
use haca_store::Store;
use serde_json::json;
use std::sync::Arc;

const ORIGIN: &str = "haca.test/log";

fn key() -> NodeKey {
    NodeKey::from_seed([3; 32])
}

fn entry(i: u64) -> LogEntry {
    let kind = ["run", "settlement", "decision"][(i % 3) as usize];
    LogEntry::new(kind, json!({"i": i, "note": format!("entry {i}")}))
}

fn open(dir: &tempfile::TempDir) -> (Arc<Store>, TransparencyLog) {
    let store = Arc::new(Store::open(dir.path().join("haca.db")).unwrap());
    let log = TransparencyLog::open(store.clone(), key(), ORIGIN.into()).unwrap();
    (store, log)
}

#[tokio::test]
async fn batches_prove_inclusion_and_consistency_between_every_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, log) = open(&dir);
    assert_eq!(log.size(), 0);
    assert_eq!(log.checkpoint().checkpoint.root, empty_root());

    let mut checkpoints: Vec<SignedCheckpoint> = vec![log.checkpoint()];
    let mut next = 0u64;
    for batch in [1u64, 2, 5, 1, 8, 13, 3, 1, 30] {
        let entries: Vec<LogEntry> = (next..next + batch).map(entry).collect();
        let appended = log.append_entries(entries).await.unwrap();
        assert_eq!(appended.first_index, next);
        assert_eq!(appended.count, batch);
        next += batch;
        assert_eq!(appended.checkpoint.checkpoint.size, next);
        appended.checkpoint.verify(&key().node_id()).unwrap();
        // What the store kept is what the caller was given, byte for byte.
        let stored = log.checkpoint_at(next).unwrap().unwrap();
        assert_eq!(stored.to_note(), appended.checkpoint.to_note());
        checkpoints.push(appended.checkpoint);
    }
    assert_eq!(log.size(), next);

    for (i, cp) in checkpoints.iter().enumerate() {
        let size = cp.checkpoint.size;
        assert_eq!(log.root_at(size).unwrap(), cp.checkpoint.root);
        for index in 0..size {
            let e = log.entry(index).unwrap().unwrap();
            assert_eq!(e, entry(index));
            let leaf = e.leaf_hash().unwrap();
            assert_eq!(leaf, log.leaf_hash(index).unwrap());
            let proof = log.inclusion_proof(index, size).unwrap();
            verify_inclusion(&leaf, index, size, &proof, &cp.checkpoint.root)
                .unwrap_or_else(|e| panic!("entry {index} in size {size}: {e}"));
        }
        for later in &checkpoints[i..] {
            let second = later.checkpoint.size;
            let proof = log.consistency_proof(size, second).unwrap();
            verify_consistency(
                size,
                second,
                &cp.checkpoint.root,
                &later.checkpoint.root,
                &proof,
            )
            .unwrap_or_else(|e| panic!("{size} -> {second}: {e}"));
        }
    }
    assert_eq!(log.entry(next).unwrap(), None);
}

#[tokio::test]
async fn bad_arguments_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, log) = open(&dir);
    log.append((0..4).map(entry).collect()).await.unwrap();
    assert!(matches!(
        log.inclusion_proof(4, 4),
        Err(LogError::IndexOutOfRange { index: 4, size: 4 })
    ));
    assert!(matches!(
        log.inclusion_proof(0, 5),
        Err(LogError::SizeBeyondLog {
            size: 5,
            log_size: 4
        })
    ));
    assert!(matches!(
        log.consistency_proof(3, 2),
        Err(LogError::SizesOutOfOrder {
            first: 3,
            second: 2
        })
    ));
    assert!(matches!(
        log.consistency_proof(1, 9),
        Err(LogError::SizeBeyondLog { size: 9, .. })
    ));
    assert!(matches!(
        log.append(vec![]).await,
        Err(LogError::EmptyAppend)
    ));
    let err = log
        .append(vec![entry(4), LogEntry::new("gossip", json!(1))])
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "entries[1].kind: \"gossip\" is not one of [\"run\", \"settlement\", \"decision\", \"refund\", \"memory.delete\"]"
    );
    assert_eq!(log.size(), 4, "a refused append writes nothing");
}

#[tokio::test]
async fn reopening_gives_the_same_log_and_checks_origin_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let (head, appended_after) = {
        let (_store, log) = open(&dir);
        for b in 0..5u64 {
            log.append((b * 7..b * 7 + 7).map(entry).collect())
                .await
                .unwrap();
        }
        (log.checkpoint(), log.size())
    };
    assert_eq!(appended_after, 35);
    let (store, log) = open(&dir);
    assert_eq!(log.size(), 35);
    assert_eq!(log.checkpoint(), head);
    assert_eq!(log.root_at(35).unwrap(), head.checkpoint.root);
    // The reopened log keeps appending where it stopped.
    let more = log.append(vec![entry(35)]).await.unwrap();
    assert_eq!(more.checkpoint.size, 36);
    let proof = log.consistency_proof(35, 36).unwrap();
    verify_consistency(35, 36, &head.checkpoint.root, &more.checkpoint.root, &proof).unwrap();
    drop(log);

    // Another origin, another key: refused, naming what differs.
    let other_origin = TransparencyLog::open(store.clone(), key(), "other.test/log".into());
    assert!(matches!(other_origin, Err(LogError::OriginMismatch { .. })));
    let other_key =
        TransparencyLog::open(store.clone(), NodeKey::from_seed([4; 32]), ORIGIN.into());
    assert!(matches!(
        other_key,
        Err(LogError::NotSignedByKey { size: 36, .. })
    ));
    assert!(matches!(
        TransparencyLog::open(store, key(), "bad origin".into()),
        Err(LogError::Origin(_))
    ));
}

#[tokio::test]
async fn signed_checkpoints_verify_only_with_the_log_key() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, log) = open(&dir);
    let cp = log.append((0..3).map(entry).collect()).await.unwrap();
    let note = cp.to_note();
    let parsed = SignedCheckpoint::parse(&note).unwrap();
    assert_eq!(parsed, cp);
    assert_eq!(parsed.checkpoint.origin, ORIGIN);
    parsed.verify(&key().node_id()).unwrap();
    assert_eq!(log.public_key(), key().node_id());
    assert!(parsed
        .verify(&NodeKey::from_seed([9; 32]).node_id())
        .is_err());
    let tampered = note.replacen("\n3\n", "\n4\n", 1);
    assert!(SignedCheckpoint::parse(&tampered)
        .unwrap()
        .verify(&key().node_id())
        .is_err());
}

#[tokio::test]
async fn damage_is_reported_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let (store, log) = open(&dir);
    log.append((0..5).map(entry).collect()).await.unwrap();
    drop(log);
    drop(store);
    // Bypass the store's triggers the way an attacker with the file would.
    edit_database(
        &dir,
        "DROP TRIGGER log_entries_no_update; UPDATE log_entries SET leaf_hash = zeroblob(32) WHERE idx = 2;",
    );
    let store = Arc::new(Store::open(dir.path().join("haca.db")).unwrap());
    match TransparencyLog::open(store, key(), ORIGIN.into()) {
        Err(LogError::Damaged(m)) => assert!(m.contains("root"), "{m}"),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a changed leaf hash went unnoticed"),
    }
}

/// Runs raw SQL on the database file, as someone with the file could.
fn edit_database(dir: &tempfile::TempDir, sql: &'static str) {
    let store = Store::open(dir.path().join("haca.db")).unwrap();
    store
        .write_blocking(move |tx| Ok(tx.execute_batch(sql)?))
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_land_once_each_in_one_consistent_tree() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, log) = open(&dir);
    let log = Arc::new(log);
    let tasks = 8u64;
    let per_task = 25u64;
    let mut handles = Vec::new();
    for t in 0..tasks {
        let log = log.clone();
        handles.push(tokio::spawn(async move {
            let mut landed = Vec::new();
            for j in 0..per_task {
                let n = 1 + (j % 3);
                let entries: Vec<LogEntry> = (0..n)
                    .map(|k| LogEntry::new("run", json!({"task": t, "j": j, "k": k})))
                    .collect();
                let a = log.append_entries(entries).await.unwrap();
                assert!(a.checkpoint.checkpoint.size >= a.first_index + a.count);
                a.checkpoint.verify(&key().node_id()).unwrap();
                for k in 0..n {
                    landed.push((a.first_index + k, (t, j, k)));
                }
            }
            landed
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    let size = log.size();
    assert_eq!(size as usize, all.len());
    all.sort();
    for (i, (index, (t, j, k))) in all.iter().enumerate() {
        assert_eq!(*index, i as u64, "indices are distinct and contiguous");
        let e = log.entry(*index).unwrap().unwrap();
        assert_eq!(e.data, json!({"task": t, "j": j, "k": k}));
    }
    // The tree over the stored entries, in index order, is the signed one.
    let leaves: Vec<_> = (0..size)
        .map(|i| log.entry(i).unwrap().unwrap().leaf_hash().unwrap())
        .collect();
    assert_eq!(
        haca_core::merkle::root(&leaves),
        log.checkpoint().checkpoint.root
    );
}
