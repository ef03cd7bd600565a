//! Continuity views: what a calm label hides. Runs grouped by the artifact that actually ran
//! (its blob id), not by label; the memory rows each run used, with their age, score and state,
//! and the rows shared by runs, flagged stale, over age or owned by someone other than the
//! payer; conversation turns that changed provider or privacy path.

use haca_core::claims::format_duration;
use haca_core::receipt::{MemoryRow, Receipt};
use haca_core::RunId;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// How many runs of one label resolved to one blob (a row of a `GROUP BY label, blob`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelUse {
    pub label: String,
    /// Empty when nobody here can name the bytes (an upstream provider's model).
    pub blob_id: String,
    pub runs: u64,
    pub first_at: u64,
    pub last_at: u64,
}

/// The runs that executed one artifact, whatever label they asked for.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct ArtifactGroup {
    pub blob_id: String,
    pub labels: Vec<String>,
    pub runs: u64,
    pub first_at: u64,
    pub last_at: u64,
    /// How many of the case's own runs ran it.
    pub in_case: u64,
}

/// One label that resolved to more than one artifact.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct LabelDrift {
    pub label: String,
    pub blob_ids: Vec<String>,
    pub message: String,
}

/// Groups label uses by blob id and flags labels that resolved to different blobs.
/// `case_blobs` counts the case's own runs by blob id.
pub fn artifacts(
    uses: &[LabelUse],
    case_blobs: &BTreeMap<String, u64>,
) -> (Vec<ArtifactGroup>, Vec<LabelDrift>) {
    let mut groups: BTreeMap<&str, ArtifactGroup> = BTreeMap::new();
    let mut by_label: BTreeMap<&str, Vec<&LabelUse>> = BTreeMap::new();
    for u in uses {
        let g = groups.entry(&u.blob_id).or_insert_with(|| ArtifactGroup {
            blob_id: u.blob_id.clone(),
            labels: Vec::new(),
            runs: 0,
            first_at: u.first_at,
            last_at: u.last_at,
            in_case: case_blobs.get(&u.blob_id).copied().unwrap_or(0),
        });
        if !g.labels.contains(&u.label) {
            g.labels.push(u.label.clone());
        }
        g.runs += u.runs;
        g.first_at = g.first_at.min(u.first_at);
        g.last_at = g.last_at.max(u.last_at);
        by_label.entry(&u.label).or_default().push(u);
    }
    let drift = by_label
        .into_iter()
        .filter(|(_, v)| v.iter().filter(|u| !u.blob_id.is_empty()).count() > 1)
        .map(|(label, mut v)| {
            v.sort_by_key(|u| u.first_at);
            let spans: Vec<String> = v
                .iter()
                .map(|u| {
                    format!(
                        "{} ({} runs, {}..{})",
                        short(&u.blob_id),
                        u.runs,
                        u.first_at,
                        u.last_at
                    )
                })
                .collect();
            LabelDrift {
                label: label.to_owned(),
                blob_ids: v.iter().map(|u| u.blob_id.clone()).collect(),
                message: format!(
                    "label {label} resolved to {} different artifacts: {}; runs under one label did not all run the same bytes",
                    v.len(),
                    spans.join(", ")
                ),
            }
        })
        .collect();
    let mut groups: Vec<ArtifactGroup> = groups.into_values().collect();
    groups.sort_by(|a, b| b.in_case.cmp(&a.in_case).then(b.runs.cmp(&a.runs)));
    (groups, drift)
}

fn short(blob: &str) -> &str {
    let b = blob.strip_prefix("sha256:").unwrap_or(blob);
    &b[..b.len().min(12)]
}

/// A memory row that steered a run and was not validated within the allowed age.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct StaleMemory {
    pub run_id: RunId,
    pub row_id: String,
    pub owner: String,
    pub created_at: u64,
    pub last_validated_at: u64,
    pub message: String,
}

/// The rows among `used` (run, row) last validated more than `max_age_s` before `at_ms`.
pub fn stale_memory(used: &[(RunId, &MemoryRow)], max_age_s: u64, at_ms: u64) -> Vec<StaleMemory> {
    used.iter()
        .filter(|(_, row)| at_ms.saturating_sub(row.last_validated_at) > max_age_s * 1000)
        .map(|(run, row)| StaleMemory {
            run_id: *run,
            row_id: row.id.clone(),
            owner: row.owner.clone(),
            created_at: row.created_at,
            last_validated_at: row.last_validated_at,
            message: format!(
                "memory row {} was last validated {} before the reference time (allowed: {}); it was preserved, not re-validated",
                row.id,
                format_duration(at_ms.saturating_sub(row.last_validated_at) / 1000),
                format_duration(max_age_s)
            ),
        })
        .collect()
}

/// What a memory row looked like to the review: fresh, flagged stale when the run used it,
/// or older than the case class's `memory.fresh` age at the reference time.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MemoryRowState {
    Fresh,
    /// The receipt says the row was past the retrieval policy's age and used anyway.
    Stale,
    /// Validated longer ago than the class allows, at the reference time.
    OverAge,
}

/// One memory row as one run used it.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct MemoryUse {
    pub row_id: String,
    pub owner: String,
    pub created_at: u64,
    pub last_validated_at: u64,
    /// Seconds between the row's last validation and the run's receipt.
    pub age_at_use_s: u64,
    pub age_at_use: String,
    pub score: f64,
    /// The receipt flagged the row stale when the run used it.
    pub stale_at_use: bool,
    /// Validated more than the class's `memory.fresh` age before the reference time.
    pub over_age: bool,
    /// The receipt names the sealed row (ciphertext hash) the text came from.
    pub sealed: bool,
    /// The row's owner is not who paid for the run (or not the memory box's owner).
    pub owner_differs: bool,
    /// How many of the case's runs used this row.
    pub used_by_runs: usize,
    pub state: MemoryRowState,
}

/// The memory rows one run used.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct RunMemory {
    pub run_id: RunId,
    pub issued_at: u64,
    pub owner: Option<String>,
    /// The payment box's payer, when the run has one.
    pub payer: Option<String>,
    pub embedder: Option<String>,
    pub stale_policy: Option<String>,
    pub rows: Vec<MemoryUse>,
}

/// Why a memory row deserves a reviewer's look.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MemoryWarningKind {
    /// The same row steered several runs of the case.
    Shared,
    /// A run used the row although the receipt flagged it stale.
    Stale,
    /// The row was validated longer ago than the class allows.
    OverAge,
    /// The row's owner is not who paid for the run.
    Owner,
}

/// One warning about one row, with the runs it concerns.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct MemoryWarning {
    pub kind: MemoryWarningKind,
    pub row_id: String,
    pub runs: Vec<RunId>,
    pub message: String,
}

/// The memory continuity of a case: each run's rows, and the warnings across runs.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct MemoryView {
    pub max_age_s: u64,
    pub max_age: String,
    /// (run, row) pairs across the case.
    pub rows_used: usize,
    /// Distinct row ids across the case.
    pub distinct_rows: usize,
    pub runs_with_memory: usize,
    /// Runs with a memory box and at least one row, in the case's order; at most
    /// [`MEMORY_LINES_SHOWN`] rows in all.
    pub runs: Vec<RunMemory>,
    /// Rows left out of `runs` past [`MEMORY_LINES_SHOWN`] (the counts and warnings cover them).
    pub rows_left_out: usize,
    pub warnings: Vec<MemoryWarning>,
}

/// How many (run, row) lines a memory view lists: a case of thousands of chat runs would
/// otherwise carry every row of every run.
pub const MEMORY_LINES_SHOWN: usize = 500;

/// The memory view of a case's runs: `max_age_s` is the class's `memory.fresh` age, `at_ms`
/// the reference time. Owners and payers compare as addresses (case-insensitive).
pub fn memory_view(receipts: &[&Receipt], max_age_s: u64, at_ms: u64) -> MemoryView {
    let same = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    let used: Vec<(RunId, &MemoryRow)> = receipts
        .iter()
        .flat_map(|r| {
            let run = r.run_id;
            r.boxes
                .memory
                .evidence
                .iter()
                .flat_map(move |m| m.rows.iter().map(move |row| (run, row)))
        })
        .collect();
    let mut runs_of_row: BTreeMap<&str, Vec<RunId>> = BTreeMap::new();
    for (run, row) in &used {
        let runs = runs_of_row.entry(&row.id).or_default();
        if !runs.contains(run) {
            runs.push(*run);
        }
    }
    let over_age = stale_memory(&used, max_age_s, at_ms);
    let is_over_age =
        |run: RunId, id: &str| over_age.iter().any(|s| s.run_id == run && s.row_id == id);

    let mut warnings: Vec<MemoryWarning> = Vec::new();
    let mut warn =
        |kind: MemoryWarningKind, row_id: &str, run: RunId, message: String| match warnings
            .iter_mut()
            .find(|w| w.kind == kind && w.row_id == row_id)
        {
            Some(w) if !w.runs.contains(&run) => w.runs.push(run),
            Some(_) => {}
            None => warnings.push(MemoryWarning {
                kind,
                row_id: row_id.to_owned(),
                runs: vec![run],
                message,
            }),
        };
    let mut runs = Vec::new();
    let mut shown = 0;
    let mut runs_with_memory = 0;
    for r in receipts {
        let Some(m) = r
            .boxes
            .memory
            .evidence
            .as_ref()
            .filter(|m| !m.rows.is_empty())
        else {
            continue;
        };
        runs_with_memory += 1;
        let payer = r.boxes.payment.evidence.as_ref().map(|p| p.payer.clone());
        let mut rows = Vec::new();
        for row in &m.rows {
            let age_at_use_s = r.issued_at.saturating_sub(row.last_validated_at) / 1000;
            let over = is_over_age(r.run_id, &row.id);
            let differs_from = match (&payer, &m.owner) {
                (Some(p), _) if !same(p, &row.owner) => Some(("the run was paid by", p)),
                (_, Some(o)) if !same(o, &row.owner) => Some(("the memory box's owner is", o)),
                _ => None,
            };
            if let Some((whose, who)) = differs_from {
                warn(
                    MemoryWarningKind::Owner,
                    &row.id,
                    r.run_id,
                    format!(
                        "memory row {} belongs to {} but {whose} {who}",
                        row.id, row.owner
                    ),
                );
            }
            if row.stale {
                warn(
                    MemoryWarningKind::Stale,
                    &row.id,
                    r.run_id,
                    format!(
                        "memory row {} was used although flagged stale (not re-validated for {} when the run used it{})",
                        row.id,
                        format_age(age_at_use_s),
                        m.stale_policy.as_deref().map(|p| format!("; policy: {p}")).unwrap_or_default()
                    ),
                );
            }
            let used_by_runs = runs_of_row.get(row.id.as_str()).map_or(1, Vec::len);
            if shown < MEMORY_LINES_SHOWN {
                shown += 1;
                rows.push(MemoryUse {
                    row_id: row.id.clone(),
                    owner: row.owner.clone(),
                    created_at: row.created_at,
                    last_validated_at: row.last_validated_at,
                    age_at_use_s,
                    age_at_use: format_age(age_at_use_s),
                    score: row.score,
                    stale_at_use: row.stale,
                    over_age: over,
                    sealed: row.sealed_sha256.is_some(),
                    owner_differs: differs_from.is_some(),
                    used_by_runs,
                    state: if row.stale {
                        MemoryRowState::Stale
                    } else if over {
                        MemoryRowState::OverAge
                    } else {
                        MemoryRowState::Fresh
                    },
                });
            }
        }
        if !rows.is_empty() {
            runs.push(RunMemory {
                run_id: r.run_id,
                issued_at: r.issued_at,
                owner: m.owner.clone(),
                payer,
                embedder: m.embedder.clone(),
                stale_policy: m.stale_policy.clone(),
                rows,
            });
        }
    }
    for s in &over_age {
        warn(
            MemoryWarningKind::OverAge,
            &s.row_id,
            s.run_id,
            s.message.clone(),
        );
    }
    for (row_id, row_runs) in runs_of_row.iter().filter(|(_, v)| v.len() > 1) {
        warnings.push(MemoryWarning {
            kind: MemoryWarningKind::Shared,
            row_id: (*row_id).to_owned(),
            runs: row_runs.clone(),
            message: format!(
                "memory row {row_id} steered {} runs of this case",
                row_runs.len()
            ),
        });
    }
    MemoryView {
        max_age_s,
        max_age: format_duration(max_age_s),
        rows_used: used.len(),
        distinct_rows: runs_of_row.len(),
        runs_with_memory,
        runs,
        rows_left_out: used.len() - shown,
        warnings,
    }
}

/// An age in its two largest units, rounded down: `40d 3h`, `2h 5m`, `45s`.
pub fn format_age(s: u64) -> String {
    let units = [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)];
    let Some(i) = units.iter().position(|(_, size)| s >= *size) else {
        return "0s".into();
    };
    let (u1, s1) = units[i];
    let first = format!("{}{u1}", s / s1);
    match units.get(i + 1) {
        Some((u2, s2)) if (s % s1) / s2 > 0 => format!("{first} {}{u2}", (s % s1) / s2),
        _ => first,
    }
}

/// A conversation turn as the panel shows it.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct Turn {
    pub conversation: String,
    pub turn: u64,
    pub run_id: String,
    pub created_at: u64,
    pub provider: String,
    pub path: String,
    pub privacy: String,
    /// Set when this turn's provider or path differs from the previous turn's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changed: Option<String>,
    /// Whether the run belongs to the case being viewed.
    pub in_case: bool,
}

/// Marks each turn whose provider or privacy path differs from the turn before it.
pub fn mark_route_changes(turns: &mut [Turn]) {
    for i in 1..turns.len() {
        let (prev, cur) = (&turns[i - 1], &turns[i]);
        if prev.conversation != cur.conversation {
            continue;
        }
        let mut what = Vec::new();
        if prev.provider != cur.provider {
            what.push(format!("provider {} -> {}", prev.provider, cur.provider));
        }
        if prev.path != cur.path {
            what.push(format!("privacy path {} -> {}", prev.path, cur.path));
        }
        if !what.is_empty() {
            turns[i].changed = Some(format!(
                "turn {} changed {} since turn {}",
                cur.turn,
                what.join(" and "),
                prev.turn
            ));
        }
    }
}

/// The distinct conversations among turns, in first-seen order.
pub fn conversations(turns: &[Turn]) -> Vec<&str> {
    let mut seen = BTreeSet::new();
    turns
        .iter()
        .filter(|t| seen.insert(t.conversation.as_str()))
        .map(|t| t.conversation.as_str())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(label: &str, blob: &str, runs: u64, first: u64, last: u64) -> LabelUse {
        LabelUse {
            label: label.into(),
            blob_id: blob.into(),
            runs,
            first_at: first,
            last_at: last,
        }
    }

    #[test]
    fn a_label_that_moved_is_flagged_and_runs_group_by_blob() {
        let uses = vec![
            usage("example/mlp", "sha256:aaaa", 5, 10, 20),
            usage("example/mlp", "sha256:bbbb", 2, 30, 40),
            usage("other", "sha256:aaaa", 1, 15, 15),
            usage("up/gpt", "", 3, 1, 2),
        ];
        let case = BTreeMap::from([("sha256:bbbb".to_string(), 2)]);
        let (groups, drift) = artifacts(&uses, &case);
        assert_eq!(
            groups[0].blob_id, "sha256:bbbb",
            "the case's own artifact first"
        );
        let a = groups.iter().find(|g| g.blob_id == "sha256:aaaa").unwrap();
        assert_eq!(a.runs, 6);
        assert_eq!(a.labels, vec!["example/mlp", "other"]);
        assert_eq!(drift.len(), 1);
        assert_eq!(drift[0].label, "example/mlp");
        assert_eq!(drift[0].blob_ids, vec!["sha256:aaaa", "sha256:bbbb"]);
        assert!(drift[0].message.contains("2 different artifacts"));
    }

    #[test]
    fn stale_rows_are_those_past_their_age() {
        let row = |id: &str, validated: u64| MemoryRow {
            id: id.into(),
            owner: "0xabc".into(),
            created_at: 0,
            last_validated_at: validated,
            score: 0.5,
            sealed_sha256: None,
            stale: false,
        };
        let (old, fresh) = (row("m1", 1_000), row("m2", 99_000));
        let run = RunId(haca_core::hash::sha256(b"r"));
        let stale = stale_memory(&[(run, &old), (run, &fresh)], 60, 100_000);
        assert_eq!(stale.len(), 1);
        assert_eq!(stale[0].row_id, "m1");
        assert!(stale[0].message.contains("not re-validated"));
    }

    const DAY_MS: u64 = 86_400_000;

    fn mem_row(id: &str, owner: &str, validated: u64, stale: bool) -> MemoryRow {
        MemoryRow {
            id: id.into(),
            owner: owner.into(),
            created_at: 0,
            last_validated_at: validated,
            score: 0.75,
            sealed_sha256: Some(haca_core::hash::sha256(id.as_bytes())),
            stale,
        }
    }

    /// A receipt issued at `at` whose memory box (of `owner`) holds `rows`, paid by `payer`.
    fn memory_run(
        seed: u64,
        at: u64,
        owner: &str,
        rows: Vec<MemoryRow>,
        payer: Option<&str>,
    ) -> Receipt {
        use haca_core::receipt::{BoxStatus, EvidenceBox, MemoryEvidence, PaymentEvidence};
        let key = haca_core::keys::NodeKey::from_seed([5; 32]);
        let mut r = haca_core::testing::vanilla_receipt(
            &key,
            haca_core::BlobId(haca_core::hash::sha256(b"m")),
            at,
            seed,
        );
        r.boxes.memory = EvidenceBox::with(
            MemoryEvidence {
                rows,
                owner: Some(owner.into()),
                embedder: Some("all-MiniLM-L6-v2".into()),
                max_age_s: Some(30 * 86_400),
                stale_policy: Some("surface".into()),
            },
            BoxStatus::Claimed,
            at,
        );
        if let Some(payer) = payer {
            r.boxes.payment = EvidenceBox::with(
                PaymentEvidence {
                    scheme: "apikey".into(),
                    network: "haca:devnet".into(),
                    asset: "credit".into(),
                    amount: "1".into(),
                    payer: payer.into(),
                    nonce: format!("n{seed}"),
                    resource: "/v1/chat/completions".into(),
                    request_hash: haca_core::hash::sha256(b"req"),
                    model: None,
                    mode: None,
                    max_tokens: None,
                    authorization: None,
                    verified_at: at,
                    settlement: None,
                    upto: None,
                },
                BoxStatus::Claimed,
                at,
            );
        }
        r
    }

    #[test]
    fn memory_view_lists_each_runs_rows_with_age_score_and_state() {
        let now = 100 * DAY_MS;
        // Run 1 (day 50) used m1 validated on day 45 and m2, flagged stale when used.
        let r1 = memory_run(
            1,
            50 * DAY_MS,
            "0xAbC",
            vec![
                mem_row("m1", "0xabc", 45 * DAY_MS, false),
                mem_row("m2", "0xabc", 10 * DAY_MS, true),
            ],
            Some("0xABC"),
        );
        // Run 2 (day 99) used m1 again and m3, re-validated on day 98.
        let r2 = memory_run(
            2,
            99 * DAY_MS,
            "0xabc",
            vec![
                mem_row("m1", "0xabc", 45 * DAY_MS, false),
                mem_row("m3", "0xabc", 98 * DAY_MS, false),
            ],
            Some("0xabc"),
        );
        // Run 3 has no memory box at all.
        let key = haca_core::keys::NodeKey::from_seed([5; 32]);
        let r3 = haca_core::testing::vanilla_receipt(
            &key,
            haca_core::BlobId(haca_core::hash::sha256(b"m")),
            now,
            3,
        );
        let v = memory_view(&[&r1, &r2, &r3], 30 * 86_400, now);
        assert_eq!(
            (v.rows_used, v.distinct_rows, v.runs_with_memory),
            (4, 3, 2)
        );
        assert_eq!(v.max_age, "30d");
        assert_eq!(v.runs.len(), 2, "the run without memory has no lines");
        assert_eq!(v.rows_left_out, 0);

        let first = &v.runs[0].rows;
        assert_eq!(first[0].row_id, "m1");
        assert_eq!(
            first[0].age_at_use_s,
            5 * 86_400,
            "issued_at - last_validated_at"
        );
        assert_eq!(first[0].age_at_use, "5d");
        assert_eq!(first[0].score, 0.75);
        assert!(
            first[0].sealed && !first[0].owner_differs,
            "owners compare as addresses"
        );
        // 55 days before the reference time: over the class's 30 days.
        assert_eq!(first[0].state, MemoryRowState::OverAge);
        assert_eq!(first[0].used_by_runs, 2);
        // Flagged stale at use wins over over-age.
        assert_eq!(first[1].state, MemoryRowState::Stale);
        assert!(first[1].stale_at_use && first[1].over_age);
        let m3 = &v.runs[1].rows[1];
        assert_eq!(
            (m3.state, m3.age_at_use.as_str()),
            (MemoryRowState::Fresh, "1d")
        );

        let kinds = |k: MemoryWarningKind| -> Vec<(&str, usize)> {
            v.warnings
                .iter()
                .filter(|w| w.kind == k)
                .map(|w| (w.row_id.as_str(), w.runs.len()))
                .collect()
        };
        assert_eq!(kinds(MemoryWarningKind::Shared), vec![("m1", 2)]);
        assert_eq!(kinds(MemoryWarningKind::Stale), vec![("m2", 1)]);
        // m1 over age in both runs is one warning naming both; m2 is over age too.
        assert_eq!(
            kinds(MemoryWarningKind::OverAge),
            vec![("m1", 2), ("m2", 1)]
        );
        assert_eq!(kinds(MemoryWarningKind::Owner), vec![]);
        let stale = v
            .warnings
            .iter()
            .find(|w| w.kind == MemoryWarningKind::Stale)
            .unwrap();
        assert!(
            stale.message.contains("40d") && stale.message.contains("policy: surface"),
            "{}",
            stale.message
        );
    }

    #[test]
    fn a_row_owned_by_someone_other_than_the_payer_is_flagged() {
        let at = 10 * DAY_MS;
        let paid_by_other = memory_run(
            1,
            at,
            "0xaaa",
            vec![mem_row("m1", "0xaaa", at, false)],
            Some("0xbbb"),
        );
        let foreign_row = memory_run(
            2,
            at,
            "0xaaa",
            vec![mem_row("m2", "0xccc", at, false)],
            None,
        );
        let v = memory_view(&[&paid_by_other, &foreign_row], 86_400, at);
        let owners: Vec<&str> = v
            .warnings
            .iter()
            .filter(|w| w.kind == MemoryWarningKind::Owner)
            .map(|w| w.message.as_str())
            .collect();
        assert_eq!(owners.len(), 2, "{owners:?}");
        assert!(
            owners[0].contains("m1 belongs to 0xaaa but the run was paid by 0xbbb"),
            "{}",
            owners[0]
        );
        assert!(
            owners[1].contains("m2 belongs to 0xccc but the memory box's owner is 0xaaa"),
            "{}",
            owners[1]
        );
        assert!(v.runs.iter().all(|r| r.rows[0].owner_differs));
        assert!(v
            .runs
            .iter()
            .all(|r| r.rows[0].state == MemoryRowState::Fresh));
    }

    #[test]
    fn no_memory_means_an_empty_view_and_long_cases_are_capped() {
        let key = haca_core::keys::NodeKey::from_seed([5; 32]);
        let plain = haca_core::testing::vanilla_receipt(
            &key,
            haca_core::BlobId(haca_core::hash::sha256(b"m")),
            1,
            1,
        );
        let empty_box = memory_run(2, 1, "0xaaa", vec![], Some("0xaaa"));
        let v = memory_view(&[&plain, &empty_box], 60, 1);
        assert_eq!((v.rows_used, v.runs_with_memory, v.runs.len()), (0, 0, 0));
        assert!(v.warnings.is_empty());

        let rows: Vec<MemoryRow> = (0..MEMORY_LINES_SHOWN + 7)
            .map(|i| mem_row(&format!("m{i}"), "0xaaa", 1, false))
            .collect();
        let big = memory_run(3, 1, "0xaaa", rows, None);
        let v = memory_view(&[&big], 60, 1);
        assert_eq!(v.rows_used, MEMORY_LINES_SHOWN + 7);
        assert_eq!(v.runs[0].rows.len(), MEMORY_LINES_SHOWN);
        assert_eq!(v.rows_left_out, 7);
    }

    #[test]
    fn ages_read_in_their_two_largest_units() {
        assert_eq!(format_age(0), "0s");
        assert_eq!(format_age(45), "45s");
        assert_eq!(format_age(3_600 + 5 * 60 + 9), "1h 5m");
        assert_eq!(format_age(40 * 86_400 + 3 * 3_600), "40d 3h");
        assert_eq!(format_age(2 * 86_400 + 59), "2d");
    }

    #[test]
    fn turns_that_changed_route_are_marked() {
        let t = |n: u64, provider: &str, path: &str| Turn {
            conversation: "c".into(),
            turn: n,
            run_id: format!("r{n}"),
            created_at: n,
            provider: provider.into(),
            path: path.into(),
            privacy: "any".into(),
            changed: None,
            in_case: true,
        };
        let mut turns = vec![
            t(1, "local", "tee"),
            t(2, "local", "tee"),
            t(3, "openai", "direct"),
        ];
        mark_route_changes(&mut turns);
        assert!(turns[1].changed.is_none());
        let c = turns[2].changed.as_deref().unwrap();
        assert!(
            c.contains("provider local -> openai") && c.contains("privacy path tee -> direct"),
            "{c}"
        );
        assert_eq!(conversations(&turns), vec!["c"]);
    }
}
