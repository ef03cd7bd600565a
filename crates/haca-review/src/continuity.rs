//! Continuity views: what a calm label hides. Runs grouped by the artifact that actually ran
//! (its blob id), not by label; memory rows used but not re-validated; conversation turns that
//! changed provider or privacy path.

use haca_core::claims::format_duration;
use haca_core::receipt::MemoryRow;
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
