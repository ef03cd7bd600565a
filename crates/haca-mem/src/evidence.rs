//! The memory box: the rows a run used, with their age, score and state.

use crate::row::MemoryRow;
use haca_core::receipt::{MemoryEvidence, MemoryRow as EvidenceRow};
use serde::{Deserialize, Serialize};

/// One row a run used, as the memory box and the review panel's memory continuity view list it.
#[derive(Serialize, Deserialize, Clone, PartialEq, Debug)]
pub struct UsedRow {
    pub id: String,
    pub owner: String,
    pub created_at: u64,
    pub last_validated_at: u64,
    /// Time since the row was last validated, at use: the age `memory.fresh(max_age)` judges.
    pub age_ms: u64,
    /// The retrieval score.
    pub score: f64,
    /// `live`, `superseded` or `deleted`.
    pub state: String,
    /// Not validated within the policy's age, used anyway (the policy surfaces stale rows).
    pub stale: bool,
    /// SHA-256 of the sealed row the text was opened from.
    pub sealed_sha256: Option<haca_core::Digest>,
}

/// The rows used at `t`, each with its retrieval score (not stale, no sealed hash: set them
/// where known).
pub fn used_rows<'a>(rows: impl IntoIterator<Item = (&'a MemoryRow, f64)>, t: u64) -> Vec<UsedRow> {
    rows.into_iter()
        .map(|(r, score)| UsedRow {
            stale: false,
            sealed_sha256: None,
            id: r.id.clone(),
            owner: r.owner.clone(),
            created_at: r.created_at,
            last_validated_at: r.last_validated_at,
            age_ms: r.age_ms(t),
            score,
            state: r.state.name().to_owned(),
        })
        .collect()
}

impl From<&UsedRow> for EvidenceRow {
    fn from(u: &UsedRow) -> Self {
        EvidenceRow {
            id: u.id.clone(),
            owner: u.owner.clone(),
            created_at: u.created_at,
            last_validated_at: u.last_validated_at,
            score: u.score,
            sealed_sha256: u.sealed_sha256,
            stale: u.stale,
        }
    }
}

/// How retrieval chose rows: recorded in the memory box beside them.
#[derive(Clone, Debug, PartialEq)]
pub struct RetrievalPolicy {
    pub embedder: String,
    pub max_age_s: u64,
    pub stale: crate::StalePolicy,
}

/// The receipt's memory box (haca-core's [`MemoryEvidence`]) for `owner`'s rows used.
pub fn memory_evidence(owner: &str, used: &[UsedRow], policy: &RetrievalPolicy) -> MemoryEvidence {
    MemoryEvidence {
        rows: used.iter().map(EvidenceRow::from).collect(),
        owner: Some(owner.to_owned()),
        embedder: Some(policy.embedder.clone()),
        max_age_s: Some(policy.max_age_s),
        stale_policy: Some(
            match policy.stale {
                crate::StalePolicy::Exclude => "exclude",
                crate::StalePolicy::Surface => "surface",
            }
            .to_owned(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::row::MemoryType;

    #[test]
    fn used_rows_carry_age_score_and_state() {
        let r = MemoryRow::new("m1", "alice", "x", MemoryType::Semantic, 1_000);
        let used = used_rows([(&r, 0.75)], 4_000);
        assert_eq!(used[0].age_ms, 3_000);
        assert_eq!(used[0].state, "live");
        let v = serde_json::to_value(&used[0]).unwrap();
        for k in [
            "id",
            "owner",
            "created_at",
            "last_validated_at",
            "age_ms",
            "score",
            "state",
        ] {
            assert!(v.get(k).is_some(), "{k}");
        }
        let policy = RetrievalPolicy {
            embedder: "all-MiniLM-L6-v2".into(),
            max_age_s: 60,
            stale: crate::StalePolicy::Surface,
        };
        let ev = memory_evidence("alice", &used, &policy);
        assert_eq!(ev.owner.as_deref(), Some("alice"));
        assert_eq!(ev.stale_policy.as_deref(), Some("surface"));
        assert_eq!(ev.rows[0].id, "m1");
        assert_eq!(ev.rows[0].score, 0.75);
    }
}
