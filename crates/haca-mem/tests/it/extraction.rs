//! The rule extractor against the labelled set `fixtures/memory/extraction.jsonl`, and the set's
//! contradiction pairs replayed through a `MemorySet`.
//!
//! The last `HELD_OUT` conversations were not consulted while the rules were written; their
//! figure is printed apart. Run with `--nocapture` to see the figures (BENCHMARKS.md records them).

use haca_mem::extract::match_facts;
use haca_mem::{evaluate, extract_rules, Extracted, MemoryRow, MemorySet, Message, RowState};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};

const HELD_OUT: usize = 15;

#[derive(Deserialize)]
struct Conversation {
    id: String,
    messages: Vec<Message>,
    expected: Vec<Extracted>,
    #[serde(default)]
    supersedes_conversation: Option<String>,
}

fn labelled_set() -> Vec<Conversation> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/memory/extraction.jsonl"
    );
    let text = std::fs::read_to_string(path).expect("fixtures/memory/extraction.jsonl");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("extraction.jsonl line {}: {e}", i + 1))
        })
        .collect()
}

fn score(convs: &[Conversation]) -> haca_mem::Score {
    let pred: Vec<Vec<Extracted>> = convs.iter().map(|c| extract_rules(&c.messages)).collect();
    let gold: Vec<Vec<Extracted>> = convs.iter().map(|c| c.expected.clone()).collect();
    evaluate(&pred, &gold)
}

fn line(name: &str, convs: &[Conversation], s: &haca_mem::Score) -> String {
    format!(
        "{name:>9}: {n} conversations, {g} gold: P {:.3} R {:.3} F1 {:.3} (tp {} fp {} fn {}); of matched: type {:.2}, category {:.2}, subject {:.2}",
        s.precision,
        s.recall,
        s.f1,
        s.tp,
        s.fp,
        s.fn_,
        s.type_accuracy,
        s.category_accuracy,
        s.subject_accuracy,
        n = convs.len(),
        g = convs.iter().map(|c| c.expected.len()).sum::<usize>(),
    )
}

#[test]
fn the_labelled_set_is_well_formed() {
    let set = labelled_set();
    assert!(set.len() >= 50, "at least 50 conversations");
    let ids: BTreeSet<&str> = set.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids.len(), set.len(), "ids are unique");
    let slots: BTreeSet<&str> = haca_mem::subjects().iter().copied().collect();
    let mut pairs = 0;
    for (i, c) in set.iter().enumerate() {
        for e in &c.expected {
            if let Some(s) = &e.subject {
                assert!(slots.contains(s.as_str()), "{}: unknown subject {s}", c.id);
            }
            assert!(!e.categories.is_empty(), "{}: no category", c.id);
        }
        if let Some(old) = &c.supersedes_conversation {
            pairs += 1;
            let j = set
                .iter()
                .position(|o| &o.id == old)
                .expect("supersedes a known id");
            assert!(j < i, "{}: supersedes a later conversation", c.id);
            let shared = c
                .expected
                .iter()
                .filter_map(|e| e.subject.as_ref())
                .any(|s| {
                    set[j]
                        .expected
                        .iter()
                        .any(|o| o.subject.as_ref() == Some(s))
                });
            assert!(shared, "{} and {old} share no subject", c.id);
        }
    }
    assert!(pairs >= 8, "at least 8 contradiction pairs, found {pairs}");
    let covered: BTreeSet<_> = set
        .iter()
        .flat_map(|c| c.expected.iter())
        .flat_map(|e| e.categories.iter().copied())
        .collect();
    assert_eq!(covered.len(), 10, "every category is covered");
}

#[test]
fn rule_extraction_scores_on_the_labelled_set() {
    let set = labelled_set();
    let split = set.len() - HELD_OUT;
    let (dev, held) = set.split_at(split);
    let (all_s, dev_s, held_s) = (score(&set), score(dev), score(held));
    println!("rule extractor on fixtures/memory/extraction.jsonl");
    println!("{}", line("all", &set, &all_s));
    println!("{}", line("dev", dev, &dev_s));
    println!("{}", line("held-out", held, &held_s));
    for (cat, r) in &all_s.per_category {
        println!(
            "  recall {:>13}: {}/{}",
            format!("{cat:?}").to_lowercase(),
            r.found,
            r.gold
        );
    }
    // Empty conversations: how many the rules leave empty.
    let empty: Vec<&Conversation> = set.iter().filter(|c| c.expected.is_empty()).collect();
    let clean = empty
        .iter()
        .filter(|c| extract_rules(&c.messages).is_empty())
        .count();
    println!(
        "  conversations with nothing to remember left empty: {clean}/{}",
        empty.len()
    );
    // Floors a little under the measured figures (see BENCHMARKS.md, "MemSync extraction").
    assert!(
        all_s.precision >= FLOOR_ALL.0,
        "precision {:.3}",
        all_s.precision
    );
    assert!(all_s.recall >= FLOOR_ALL.1, "recall {:.3}", all_s.recall);
    assert!(held_s.f1 >= FLOOR_HELD_F1, "held-out F1 {:.3}", held_s.f1);
}

/// (precision, recall) on the whole set: measured 0.959 and 0.712 (2026-12-06).
const FLOOR_ALL: (f64, f64) = (0.90, 0.65);
/// Measured 0.500 on the 15 held-out conversations.
const FLOOR_HELD_F1: f64 = 0.45;

/// For looking at the rules' mistakes on the development part only:
/// `cargo test -p haca-mem --test it dev_mistakes -- --ignored --nocapture`.
#[test]
#[ignore]
fn dev_mistakes() {
    let set = labelled_set();
    let split = set.len() - HELD_OUT;
    for c in &set[..split] {
        let pred = extract_rules(&c.messages);
        let m = match_facts(&pred, &c.expected);
        let (mp, mg): (BTreeSet<usize>, BTreeSet<usize>) = (
            m.iter().map(|x| x.0).collect(),
            m.iter().map(|x| x.1).collect(),
        );
        for (i, p) in pred.iter().enumerate().filter(|(i, _)| !mp.contains(i)) {
            let _ = i;
            println!(
                "{} FP {:?} {:?} {:?}",
                c.id, p.memory, p.subject, p.memory_type
            );
        }
        for (j, gd) in c
            .expected
            .iter()
            .enumerate()
            .filter(|(j, _)| !mg.contains(j))
        {
            let _ = j;
            println!("{} FN {:?} {:?}", c.id, gd.memory, gd.subject);
        }
        for &(i, j) in &m {
            if pred[i].memory_type != c.expected[j].memory_type
                || pred[i].subject != c.expected[j].subject
            {
                println!(
                    "{} ~  {:?} {:?} vs {:?} {:?}",
                    c.id,
                    pred[i].memory,
                    pred[i].subject,
                    c.expected[j].memory,
                    c.expected[j].subject
                );
            }
        }
    }
}

/// Conversations linked by `supersedes_conversation`, as chains in file order.
fn chains(set: &[Conversation]) -> Vec<Vec<usize>> {
    let index: BTreeMap<&str, usize> = set
        .iter()
        .enumerate()
        .map(|(i, c)| (c.id.as_str(), i))
        .collect();
    let mut parent: Vec<usize> = (0..set.len()).collect();
    fn root(p: &mut [usize], mut i: usize) -> usize {
        while p[i] != i {
            i = p[i];
        }
        i
    }
    for (i, c) in set.iter().enumerate() {
        if let Some(old) = &c.supersedes_conversation {
            let (a, b) = (root(&mut parent, i), root(&mut parent, index[old.as_str()]));
            parent[a] = b;
        }
    }
    let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for i in 0..set.len() {
        let r = root(&mut parent, i);
        groups.entry(r).or_default().push(i);
    }
    groups.into_values().filter(|g| g.len() > 1).collect()
}

/// One user's history: each conversation's facts inserted in order; returns the set and, per
/// conversation index, the ids of its rows.
fn replay(
    set: &[Conversation],
    chain: &[usize],
    facts: impl Fn(&Conversation) -> Vec<Extracted>,
) -> (MemorySet, BTreeMap<usize, Vec<String>>) {
    let mut mem = MemorySet::new("user");
    let mut ids = BTreeMap::new();
    for (t, &i) in chain.iter().enumerate() {
        let at = 1_000 * (t as u64 + 1);
        for (k, e) in facts(&set[i]).into_iter().enumerate() {
            let id = format!("{}#{k}", set[i].id);
            let mut row = MemoryRow::new(&id, "user", &e.memory, e.memory_type, at)
                .with_categories(&e.categories);
            row.subject = e.subject.clone();
            mem.insert(row, at).expect("insert");
            ids.entry(i).or_insert_with(Vec::new).push(id);
        }
    }
    (mem, ids)
}

/// The pairs (old conversation, new conversation) whose shared subject the replay superseded
/// with a link, out of all pairs.
fn superseded_pairs(
    set: &[Conversation],
    mem: &MemorySet,
    ids: &BTreeMap<usize, Vec<String>>,
    chain: &[usize],
) -> (usize, usize) {
    let mut total = 0;
    let mut linked = 0;
    for &i in chain {
        let Some(old) = &set[i].supersedes_conversation else {
            continue;
        };
        total += 1;
        let j = set.iter().position(|c| &c.id == old).unwrap();
        let new_ids = ids.get(&i).cloned().unwrap_or_default();
        let old_ids = ids.get(&j).cloned().unwrap_or_default();
        let ok = old_ids.iter().any(|o| {
            let row = mem.get(o).unwrap();
            matches!(&row.state, RowState::Superseded { by, .. } if new_ids.contains(by))
                && new_ids
                    .iter()
                    .any(|n| mem.get(n).unwrap().supersedes.as_deref() == Some(o.as_str()))
        });
        linked += usize::from(ok);
    }
    (linked, total)
}

#[test]
fn contradiction_pairs_leave_one_live_row_per_subject() {
    let set = labelled_set();
    let chains = chains(&set);
    assert!(!chains.is_empty());
    let (mut gold_linked, mut rules_linked, mut total) = (0, 0, 0);
    for chain in &chains {
        // The labelled facts: every pair supersedes, exactly one live row per subject, and
        // each superseded row links to the row of a later conversation with its subject.
        let (mem, ids) = replay(&set, chain, |c| c.expected.clone());
        mem.check().unwrap();
        let mut live: BTreeMap<&str, usize> = BTreeMap::new();
        for r in mem.rows() {
            if let (true, Some(s)) = (r.state.is_live(), r.subject.as_deref()) {
                *live.entry(s).or_default() += 1;
            }
            if let RowState::Superseded { by, .. } = &r.state {
                let new = mem.get(by).expect("the link names a row of the set");
                assert_eq!(
                    new.subject, r.subject,
                    "{} superseded by {by} of another subject",
                    r.id
                );
                assert_eq!(new.supersedes.as_deref(), Some(r.id.as_str()));
                assert!(new.created_at > r.created_at);
            }
        }
        let subjects: BTreeSet<&str> = mem
            .rows()
            .iter()
            .filter_map(|r| r.subject.as_deref())
            .collect();
        for s in subjects {
            assert_eq!(live.get(s), Some(&1), "subject {s}: one live row");
        }
        let (l, t) = superseded_pairs(&set, &mem, &ids, chain);
        assert_eq!(l, t, "every labelled pair supersedes");
        gold_linked += l;
        total += t;

        // The rules' facts: the invariants hold whatever they extract; count the pairs they
        // reproduce.
        let (mem, ids) = replay(&set, chain, |c| extract_rules(&c.messages));
        mem.check().unwrap();
        rules_linked += superseded_pairs(&set, &mem, &ids, chain).0;
    }
    println!("contradiction pairs superseded with a link: labelled facts {gold_linked}/{total}, rule-extracted facts {rules_linked}/{total}");
    assert!(total >= 8);
}

#[test]
#[ignore]
fn dev_outputs() {
    let set = labelled_set();
    for c in &set[..set.len() - HELD_OUT] {
        for p in extract_rules(&c.messages) {
            println!(
                "{} {:?} {:?} {:?} {:?}",
                c.id, p.memory, p.memory_type, p.categories, p.subject
            );
        }
    }
}
