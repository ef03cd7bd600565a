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
}

/// The rows used at `t`, each with its retrieval score.
pub fn used_rows<'a>(rows: impl IntoIterator<Item = (&'a MemoryRow, f64)>, t: u64) -> Vec<UsedRow> {
    rows.into_iter()
        .map(|(r, score)| UsedRow {
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
        }
    }
}

/// The receipt's memory box (haca-core's [`MemoryEvidence`]) for the rows used.
pub fn memory_evidence(used: &[UsedRow]) -> MemoryEvidence {
    MemoryEvidence {
        rows: used.iter().map(EvidenceRow::from).collect(),
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
        let ev = memory_evidence(&used);
        assert_eq!(ev.rows[0].id, "m1");
        assert_eq!(ev.rows[0].score, 0.75);
    }
}
