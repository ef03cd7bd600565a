//! Memory rows: categories, types, provenance, supersession and freshness.

use serde::{Deserialize, Serialize};

/// MemSync's ten categories.
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    Identity,
    Career,
    Interests,
    Relationships,
    Health,
    Finance,
    Learning,
    Travel,
    Productivity,
    Private,
}

impl Category {
    pub const ALL: [Category; 10] = [
        Category::Identity,
        Category::Career,
        Category::Interests,
        Category::Relationships,
        Category::Health,
        Category::Finance,
        Category::Learning,
        Category::Travel,
        Category::Productivity,
        Category::Private,
    ];
}

/// A lasting fact (semantic) or something that happened (episodic).
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[serde(rename_all = "lowercase")]
pub enum MemoryType {
    Semantic,
    Episodic,
}

/// Where a row stands. Superseded rows are kept, linked to the row that replaced them; deleted
/// rows are tombstones (no text, no ciphertext) so the log can say so.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
pub enum RowState {
    Live,
    Superseded { by: String, at: u64 },
    Deleted { at: u64 },
}

impl RowState {
    /// `live`, `superseded` or `deleted`.
    pub fn name(&self) -> &'static str {
        match self {
            RowState::Live => "live",
            RowState::Superseded { .. } => "superseded",
            RowState::Deleted { .. } => "deleted",
        }
    }
    pub fn is_live(&self) -> bool {
        matches!(self, RowState::Live)
    }
}

/// One memory row, in plaintext: it exists only in the execution path; the store holds its
/// [`crate::SealedRow`].
#[derive(Serialize, Deserialize, Clone, PartialEq, Debug)]
pub struct MemoryRow {
    pub id: String,
    /// The user: an API key id or an address.
    pub owner: String,
    pub memory: String,
    pub categories: Vec<Category>,
    #[serde(rename = "type")]
    pub memory_type: MemoryType,
    /// What the fact is about ("home city", "employer"): rows of one owner with one subject are
    /// one fact, so at most one of them is live. None: the row contradicts nothing.
    pub subject: Option<String>,
    pub created_at: u64,
    /// The run whose conversation produced the row (a RunId's hex), when there was one.
    pub source_run: Option<String>,
    pub valid_from: u64,
    pub valid_until: Option<u64>,
    pub last_validated_at: u64,
    /// The run that last re-validated the row.
    pub last_validated_run: Option<String>,
    pub state: RowState,
    /// The row this one replaced.
    pub supersedes: Option<String>,
    /// MemSync's scopes: the agent and the thread whose conversation produced the row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<String>,
}

impl MemoryRow {
    /// A live row created (and validated) at `at`, valid from then on.
    pub fn new(
        id: impl Into<String>,
        owner: impl Into<String>,
        memory: impl Into<String>,
        memory_type: MemoryType,
        at: u64,
    ) -> Self {
        MemoryRow {
            id: id.into(),
            owner: owner.into(),
            memory: memory.into(),
            categories: Vec::new(),
            memory_type,
            subject: None,
            created_at: at,
            source_run: None,
            valid_from: at,
            valid_until: None,
            last_validated_at: at,
            last_validated_run: None,
            state: RowState::Live,
            supersedes: None,
            agent_id: None,
            thread_id: None,
        }
    }

    pub fn with_subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    pub fn with_categories(mut self, categories: &[Category]) -> Self {
        self.categories = categories.to_vec();
        self
    }

    pub fn with_source_run(mut self, run: impl Into<String>) -> Self {
        self.source_run = Some(run.into());
        self
    }

    /// How long ago, at `t`, the row was last validated (0 when `t` is earlier).
    pub fn age_ms(&self, t: u64) -> u64 {
        t.saturating_sub(self.last_validated_at)
    }

    /// Fresh at `t`: validated at most `max_age_ms` before `t` (`memory.fresh(max_age)`).
    pub fn is_fresh(&self, t: u64, max_age_ms: u64) -> bool {
        self.age_ms(t) <= max_age_ms
    }

    /// Within its validity window at `t`: `valid_from <= t`, and before `valid_until` if any.
    pub fn is_valid_at(&self, t: u64) -> bool {
        self.valid_from <= t && self.valid_until.is_none_or(|u| t < u)
    }
}

/// `new` replaces `old` at `at`: `old` is kept, marked superseded with a link to `new`, and its
/// validity ends at `at`; `new` links back. Nothing is deleted.
pub fn supersede(old: &mut MemoryRow, new: &mut MemoryRow, at: u64) {
    old.state = RowState::Superseded {
        by: new.id.clone(),
        at,
    };
    old.valid_until = Some(old.valid_until.map_or(at, |u| u.min(at)));
    new.supersedes = Some(old.id.clone());
}

/// A later conversation re-earned the row at `at` (by `run`, when known). Validation never moves
/// backwards.
pub fn revalidate(row: &mut MemoryRow, at: u64, run: Option<&str>) {
    if at >= row.last_validated_at {
        row.last_validated_at = at;
        row.last_validated_run = run.map(str::to_owned);
    }
}

/// What retrieval does with a live row that is not fresh.
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
pub enum StalePolicy {
    /// Stale rows are not retrieved.
    Exclude,
    /// Stale rows are retrieved, flagged stale.
    Surface,
}

/// A row retrieval may use, and whether it is stale.
#[derive(Clone, Copy, PartialEq, Debug)]
pub struct Retrieved<'a> {
    pub row: &'a MemoryRow,
    pub stale: bool,
}

/// The rows retrieval may use at `t`: live rows within their validity window; those not
/// validated within `max_age_ms` are dropped or flagged stale as `policy` says. Superseded and
/// deleted rows are never retrieved.
pub fn for_retrieval<'a>(
    rows: impl IntoIterator<Item = &'a MemoryRow>,
    t: u64,
    max_age_ms: u64,
    policy: StalePolicy,
) -> Vec<Retrieved<'a>> {
    rows.into_iter()
        .filter(|r| r.state.is_live() && r.is_valid_at(t))
        .filter_map(|row| {
            let stale = !row.is_fresh(t, max_age_ms);
            match (stale, policy) {
                (true, StalePolicy::Exclude) => None,
                _ => Some(Retrieved { row, stale }),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_and_types_serialize_as_memsync_strings() {
        let names: Vec<String> = Category::ALL
            .iter()
            .map(|c| serde_json::to_string(c).unwrap())
            .collect();
        assert_eq!(
            names.join(","),
            r#""identity","career","interests","relationships","health","finance","learning","travel","productivity","private""#
        );
        assert_eq!(
            serde_json::to_string(&MemoryType::Episodic).unwrap(),
            r#""episodic""#
        );
        let row = MemoryRow::new("m1", "u", "x", MemoryType::Semantic, 1);
        let v = serde_json::to_value(&row).unwrap();
        assert_eq!(v["type"], "semantic");
        assert_eq!(v["state"], "live");
        let s = RowState::Superseded {
            by: "b".into(),
            at: 2,
        };
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"{"superseded":{"by":"b","at":2}}"#
        );
    }

    #[test]
    fn supersede_links_both_ways_and_ends_validity() {
        let mut old = MemoryRow::new("a", "u", "lives in Paris", MemoryType::Semantic, 10);
        let mut new = MemoryRow::new("b", "u", "lives in Lyon", MemoryType::Semantic, 20);
        supersede(&mut old, &mut new, 20);
        assert_eq!(
            old.state,
            RowState::Superseded {
                by: "b".into(),
                at: 20
            }
        );
        assert_eq!(old.valid_until, Some(20));
        assert_eq!(new.supersedes.as_deref(), Some("a"));
        assert!(new.state.is_live());
    }

    #[test]
    fn freshness_and_revalidation() {
        let mut row = MemoryRow::new("a", "u", "x", MemoryType::Semantic, 1_000);
        assert!(row.is_fresh(1_100, 100));
        assert!(!row.is_fresh(1_101, 100));
        assert!(row.is_fresh(0, 0), "a time before validation is age 0");
        revalidate(&mut row, 2_000, Some("run1"));
        assert!(row.is_fresh(2_100, 100));
        assert_eq!(row.last_validated_run.as_deref(), Some("run1"));
        revalidate(&mut row, 1_500, Some("run0"));
        assert_eq!(row.last_validated_at, 2_000, "validation never moves back");
        assert_eq!(row.last_validated_run.as_deref(), Some("run1"));
    }

    #[test]
    fn retrieval_policy_excludes_or_surfaces_stale_rows() {
        let fresh = MemoryRow::new("f", "u", "x", MemoryType::Semantic, 900);
        let stale = MemoryRow::new("s", "u", "y", MemoryType::Semantic, 100);
        let mut gone = MemoryRow::new("g", "u", "z", MemoryType::Semantic, 950);
        gone.state = RowState::Deleted { at: 960 };
        let mut expired = MemoryRow::new("e", "u", "w", MemoryType::Episodic, 950);
        expired.valid_until = Some(990);
        let rows = [fresh, stale, gone, expired];

        let ex = for_retrieval(&rows, 1_000, 500, StalePolicy::Exclude);
        assert_eq!(ex.len(), 1);
        assert_eq!((ex[0].row.id.as_str(), ex[0].stale), ("f", false));

        let su = for_retrieval(&rows, 1_000, 500, StalePolicy::Surface);
        let got: Vec<(&str, bool)> = su.iter().map(|r| (r.row.id.as_str(), r.stale)).collect();
        assert_eq!(got, [("f", false), ("s", true)]);
    }
}
