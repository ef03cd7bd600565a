//! haca-mem end to end: sealing, ownership, supersession, deletion, freshness, bundles.

mod extraction;

use haca_core::NodeKey;
use haca_mem::{
    for_retrieval, memory_evidence, used_rows, Bundle, Category, MemError, MemoryRow, MemorySet,
    MemoryType, RowState, SealedRow, StalePolicy, UserKey,
};
use proptest::prelude::*;

const DAY: u64 = 86_400_000;

fn alice_key() -> UserKey {
    UserKey::from_bytes([0xA1; 32])
}

fn fact(id: &str, owner: &str, text: &str, subject: &str, at: u64) -> MemoryRow {
    MemoryRow::new(id, owner, text, MemoryType::Semantic, at)
        .with_subject(subject)
        .with_categories(&[Category::Identity])
        .with_source_run("ab".repeat(32))
}

fn alice_set() -> MemorySet {
    let mut set = MemorySet::new("alice");
    set.insert(fact("m1", "alice", "lives in Paris", "home city", DAY), DAY)
        .unwrap();
    set.insert(
        MemoryRow::new(
            "m2",
            "alice",
            "ran a marathon",
            MemoryType::Episodic,
            2 * DAY,
        )
        .with_categories(&[Category::Health, Category::Interests]),
        2 * DAY,
    )
    .unwrap();
    set.insert(
        fact("m3", "alice", "lives in Lyon", "home city", 3 * DAY),
        3 * DAY,
    )
    .unwrap();
    set.insert(
        fact("m4", "alice", "owes Bob 20 EUR", "debt", 4 * DAY),
        4 * DAY,
    )
    .unwrap();
    set.delete("m4", 5 * DAY).unwrap();
    set
}

#[test]
fn seal_open_round_trip() {
    let key = alice_key();
    for row in alice_set().rows().iter().filter(|r| r.state.is_live()) {
        let sealed = SealedRow::seal(&key, row).unwrap();
        let json = serde_json::to_string(&sealed).unwrap();
        assert!(!json.contains(&row.memory), "plaintext leaked: {json}");
        let back: SealedRow = serde_json::from_str(&json).unwrap();
        assert_eq!(&back.open(&key).unwrap(), row);
    }
}

#[test]
fn another_users_key_cannot_open() {
    let row = fact("m1", "alice", "lives in Paris", "home city", DAY);
    let sealed = SealedRow::seal(&alice_key(), &row).unwrap();
    let bob = UserKey::from_bytes([0xB0; 32]);
    assert_eq!(sealed.open(&bob), Err(MemError::Open { id: "m1".into() }));
}

#[test]
fn moved_ciphertext_or_edited_metadata_fails_to_open() {
    let key = alice_key();
    let a = SealedRow::seal(&key, &fact("m1", "alice", "x", "s", DAY)).unwrap();
    let b = SealedRow::seal(&key, &fact("m2", "alice", "y", "t", DAY)).unwrap();

    let mut moved = b.clone();
    moved.nonce = a.nonce.clone();
    moved.ciphertext = a.ciphertext.clone();
    assert!(
        matches!(moved.open(&key), Err(MemError::Open { .. })),
        "other id"
    );

    let mut edits: Vec<(&str, SealedRow)> = Vec::new();
    let mut s = a.clone();
    s.owner = "bob".into();
    edits.push(("owner", s));
    let mut s = a.clone();
    s.created_at += 1;
    edits.push(("created_at", s));
    let mut s = a.clone();
    s.last_validated_at += DAY;
    edits.push(("last_validated_at", s));
    let mut s = a.clone();
    s.supersedes = Some("m0".into());
    edits.push(("supersedes", s));
    let mut s = a.clone();
    s.state = RowState::Superseded {
        by: "m9".into(),
        at: 2 * DAY,
    };
    edits.push(("state", s));
    for (what, s) in edits {
        assert_eq!(
            s.open(&key),
            Err(MemError::Open { id: "m1".into() }),
            "{what}"
        );
    }
}

#[test]
fn malformed_rows_are_refused_by_field() {
    let key = alice_key();
    let good = SealedRow::seal(&key, &fact("m1", "alice", "x", "s", DAY)).unwrap();
    let mut s = good.clone();
    s.nonce.pop();
    assert!(matches!(
        s.open(&key),
        Err(MemError::Field { field: "nonce", .. })
    ));
    let mut s = good.clone();
    s.ciphertext = Some("not base64!".into());
    assert!(matches!(
        s.open(&key),
        Err(MemError::Field {
            field: "ciphertext",
            ..
        })
    ));
    let mut s = good.clone();
    s.ciphertext = None;
    assert!(matches!(
        s.open(&key),
        Err(MemError::Field {
            field: "ciphertext",
            ..
        })
    ));
    let mut s = good.clone();
    s.ciphertext = Some(String::new());
    assert!(matches!(s.open(&key), Err(MemError::Open { .. })));
}

proptest! {
    #[test]
    fn garbage_never_panics(nonce in ".{0,60}", ct in proptest::option::of(".{0,200}"),
                            bytes in proptest::collection::vec(any::<u8>(), 0..120), cut in 0usize..200) {
        let key = alice_key();
        let good = SealedRow::seal(&key, &fact("m1", "alice", "x", "s", DAY)).unwrap();
        let mut s = good.clone();
        s.nonce = nonce;
        s.ciphertext = ct;
        prop_assert!(s.open(&key).is_err());
        let mut s = good.clone();
        let full = s.ciphertext.clone().unwrap();
        s.ciphertext = Some(full[..cut.min(full.len() - 1)].to_string());
        prop_assert!(s.open(&key).is_err());
        let mut s = good.clone();
        s.ciphertext = Some(base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &bytes));
        prop_assert!(s.open(&key).is_err());
        // Garbage bundle JSON is a parse error, never a panic; garbage sealed blobs never open.
        let _ = serde_json::from_slice::<Bundle>(&bytes);
        prop_assert!(key.open_blob("vec:m1", &bytes).is_err());
    }

    /// A bundle with one character of its JSON changed either fails to parse or import, or
    /// imports exactly the rows that were exported (a change JSON does not see: whitespace).
    #[test]
    fn an_edited_bundle_never_imports_other_rows(at in any::<prop::sample::Index>(), to in 32u8..127) {
        let key = alice_key();
        let node = haca_core::NodeKey::from_seed([3; 32]);
        let set = alice_set();
        let json = serde_json::to_string(&Bundle::export(&set, &key, &node, 7 * DAY).unwrap()).unwrap();
        let mut bytes = json.clone().into_bytes();
        let i = at.index(bytes.len());
        bytes[i] = to;
        if let Ok(b) = serde_json::from_slice::<Bundle>(&bytes) {
            if let Ok(imported) = b.import(&key) {
                prop_assert_eq!(imported.rows(), set.rows());
            }
        }
    }
}

#[test]
fn supersession_keeps_the_old_row_linked_and_one_live_row_per_subject() {
    let set = alice_set();
    let old = set.get("m1").unwrap();
    assert_eq!(
        old.state,
        RowState::Superseded {
            by: "m3".into(),
            at: 3 * DAY
        }
    );
    assert_eq!(old.memory, "lives in Paris", "kept, not deleted");
    assert_eq!(set.get("m3").unwrap().supersedes.as_deref(), Some("m1"));
    let live_home: Vec<&str> = set
        .live()
        .filter(|r| r.subject.as_deref() == Some("home city"))
        .map(|r| r.id.as_str())
        .collect();
    assert_eq!(live_home, ["m3"]);

    // A set of two live rows for one subject is refused.
    let rows = vec![
        fact("x", "alice", "a", "home city", 1),
        fact("y", "alice", "b", "home city", 2),
    ];
    assert!(matches!(
        MemorySet::from_rows("alice", rows),
        Err(MemError::TwoLive { .. })
    ));
}

#[test]
fn delete_leaves_a_tombstone_without_ciphertext() {
    let set = alice_set();
    let gone = set.get("m4").unwrap();
    assert_eq!(gone.state, RowState::Deleted { at: 5 * DAY });
    assert!(gone.memory.is_empty());
    let sealed = set.seal_all(&alice_key()).unwrap();
    let tomb = sealed.iter().find(|s| s.id == "m4").unwrap();
    assert_eq!(tomb.ciphertext, None);
    assert_eq!(tomb.state, RowState::Deleted { at: 5 * DAY });
    assert_eq!(
        tomb.open(&alice_key()),
        Err(MemError::Deleted { id: "m4".into() })
    );
}

#[test]
fn freshness_policy_and_evidence() {
    let mut set = alice_set();
    let now = 40 * DAY;
    let max_age = 30 * DAY;
    // Nothing re-validated: every live row (m2 at day 2, m3 at day 3) is stale.
    assert!(for_retrieval(set.rows(), now, max_age, StalePolicy::Exclude).is_empty());
    let surfaced = for_retrieval(set.rows(), now, max_age, StalePolicy::Surface);
    assert_eq!(surfaced.len(), 2);
    assert!(surfaced.iter().all(|r| r.stale));

    set.revalidate("m3", 35 * DAY, Some("cd")).unwrap();
    assert!(set.revalidate("m1", 35 * DAY, None).is_err(), "superseded");
    let got = for_retrieval(set.rows(), now, max_age, StalePolicy::Exclude);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].row.id, "m3");

    let used = used_rows(got.iter().map(|r| (r.row, 0.9)), now);
    assert_eq!(used[0].age_ms, 5 * DAY);
    assert_eq!(used[0].state, "live");
    let policy = haca_mem::RetrievalPolicy {
        embedder: "test".into(),
        max_age_s: max_age / 1000,
        stale: StalePolicy::Exclude,
    };
    let ev = memory_evidence("alice", &used, &policy);
    assert_eq!(ev.rows[0].last_validated_at, 35 * DAY);
    assert_eq!(ev.stale_policy.as_deref(), Some("exclude"));
}

#[test]
fn bundle_round_trips_into_a_fresh_set() {
    let set = alice_set();
    let node = NodeKey::from_seed([9; 32]);
    let bundle = Bundle::export(&set, &alice_key(), &node, 6 * DAY).unwrap();
    let text = serde_json::to_string(&bundle).unwrap();
    assert!(!text.contains("Lyon"), "rows stay sealed");
    let received: Bundle = serde_json::from_str(&text).unwrap();
    assert_eq!(received.verify().unwrap(), node.node_id());
    let imported = received.import(&alice_key()).unwrap();
    assert_eq!(imported, set);
    // Another user's key cannot import it.
    let err = received
        .import(&UserKey::from_bytes([0xB0; 32]))
        .unwrap_err();
    assert!(err.to_string().contains("seal"), "{err}");
}

#[test]
fn tampered_bundles_are_refused_naming_what() {
    let set = alice_set();
    let node = NodeKey::from_seed([9; 32]);
    let key = alice_key();
    let good = Bundle::export(&set, &key, &node, 6 * DAY).unwrap();
    let field = |b: &Bundle| match b.import(&key) {
        Err(MemError::Bundle { field, .. }) => field,
        other => panic!("not refused: {other:?}"),
    };

    let mut b = good.clone();
    b.rows[1].created_at += 1;
    assert_eq!(field(&b), "signature", "row changed");

    let mut b = good.clone();
    b.signature.replace_range(
        0..2,
        if &b.signature[..2] == "00" {
            "11"
        } else {
            "00"
        },
    );
    assert_eq!(field(&b), "signature", "signature changed");

    let mut b = good.clone();
    b.owner = "bob".into();
    assert_eq!(field(&b), "signature", "owner swapped");

    // Re-signed by a node after tampering, without the key: the seal refuses it.
    let mut rows = good.rows.clone();
    rows[2].ciphertext = rows[0].ciphertext.clone();
    rows[2].nonce = rows[0].nonce.clone();
    let mut b = Bundle::sign("alice", rows, &node, 6 * DAY).unwrap();
    assert_eq!(field(&b), "seal");
    // With the seal made under the key (the key's holder did it), the rows are checked still.
    b.seal = hex::encode(key.seal_blob("haca.mem.bundle.seal.v1", &b.signed_message().unwrap()));
    assert_eq!(field(&b), "rows[2].ciphertext");
    // A row dropped and the rest signed by another node keeps a valid signature, not the seal.
    let mut b = good.clone();
    b.rows.remove(b.rows.len() - 1);
    let other = NodeKey::from_seed([10; 32]);
    b.signer = other.node_id();
    b.signature = hex::encode(other.sign(&b.signed_message().unwrap()));
    assert_eq!(b.verify().unwrap(), other.node_id());
    assert_eq!(field(&b), "seal");

    let mut b = good.clone();
    b.owner = "bob".into();
    b.signature = hex::encode(node.sign(&b.signed_message().unwrap()));
    assert_eq!(field(&b), "rows[0].owner");

    let mut b = good.clone();
    b.rows[1].id = b.rows[0].id.clone();
    b.signature = hex::encode(node.sign(&b.signed_message().unwrap()));
    assert_eq!(field(&b), "rows[1].id");

    let mut b = good.clone();
    b.format = "other".into();
    assert_eq!(field(&b), "format");
}
