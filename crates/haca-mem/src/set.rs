//! One user's rows, with the invariant that at most one row per subject is live.

use crate::row::{revalidate, supersede, MemoryRow, RowState};
use crate::seal::{SealedRow, UserKey};
use crate::MemError;
use std::collections::HashMap;

/// A user's memory rows, in insertion order. It never holds two live rows for one subject (a
/// row with the subject of a live row supersedes it), never drops a row (delete leaves a
/// tombstone), and holds only its owner's rows.
#[derive(Clone, PartialEq, Debug)]
pub struct MemorySet {
    owner: String,
    rows: Vec<MemoryRow>,
}

impl MemorySet {
    pub fn new(owner: impl Into<String>) -> Self {
        MemorySet {
            owner: owner.into(),
            rows: Vec::new(),
        }
    }

    /// The rows as given, after checking the set's invariants ([`MemorySet::check`]).
    pub fn from_rows(owner: impl Into<String>, rows: Vec<MemoryRow>) -> Result<Self, MemError> {
        let set = MemorySet {
            owner: owner.into(),
            rows,
        };
        set.check()?;
        Ok(set)
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    pub fn rows(&self) -> &[MemoryRow] {
        &self.rows
    }

    pub fn get(&self, id: &str) -> Option<&MemoryRow> {
        self.rows.iter().find(|r| r.id == id)
    }

    pub fn live(&self) -> impl Iterator<Item = &MemoryRow> {
        self.rows.iter().filter(|r| r.state.is_live())
    }

    /// Adds a live row at `at`. When a live row has the same subject, the new row supersedes it
    /// (the old one is kept, linked); returns the superseded row's id.
    pub fn insert(&mut self, row: MemoryRow, at: u64) -> Result<Option<String>, MemError> {
        self.admit(&row)?;
        let old = row.subject.as_deref().and_then(|s| self.live_for(s));
        self.push_superseding(old, row, at)
    }

    /// `row` contradicts the live row `old_id` (whatever their subjects): it supersedes it.
    pub fn replace(&mut self, old_id: &str, row: MemoryRow, at: u64) -> Result<(), MemError> {
        self.admit(&row)?;
        let old = self.live_index(old_id)?;
        if let Some(other) = row.subject.as_deref().and_then(|s| self.live_for(s)) {
            if other != old {
                return Err(MemError::TwoLive {
                    subject: row.subject.clone().unwrap_or_default(),
                    a: self.rows[other].id.clone(),
                    b: row.id,
                });
            }
        }
        self.push_superseding(Some(old), row, at).map(|_| ())
    }

    /// Deletes row `id` at `at`: its text and secret fields are dropped, a tombstone stays (and
    /// seals without ciphertext), so the log can say it was deleted.
    pub fn delete(&mut self, id: &str, at: u64) -> Result<(), MemError> {
        let i = self.index(id)?;
        let r = &mut self.rows[i];
        if let RowState::Deleted { .. } = r.state {
            return Err(MemError::NotLive {
                id: id.into(),
                state: "deleted".into(),
            });
        }
        r.state = RowState::Deleted { at };
        r.memory.clear();
        r.categories.clear();
        r.subject = None;
        r.source_run = None;
        r.last_validated_run = None;
        r.agent_id = None;
        r.thread_id = None;
        Ok(())
    }

    /// A later conversation (`run`) re-validated live row `id` at `at`.
    pub fn revalidate(&mut self, id: &str, at: u64, run: Option<&str>) -> Result<(), MemError> {
        let i = self.live_index(id)?;
        revalidate(&mut self.rows[i], at, run);
        Ok(())
    }

    /// Every row sealed under `key`, in order.
    pub fn seal_all(&self, key: &UserKey) -> Result<Vec<SealedRow>, MemError> {
        self.rows.iter().map(|r| SealedRow::seal(key, r)).collect()
    }

    /// Opens sealed rows (tombstones become metadata-only rows) and checks the set's invariants.
    pub fn open_all(
        owner: impl Into<String>,
        key: &UserKey,
        sealed: &[SealedRow],
    ) -> Result<Self, MemError> {
        let rows = sealed
            .iter()
            .map(|s| match s.state {
                RowState::Deleted { .. } => s.check_shape().map(|()| s.tombstone()),
                _ => s.open(key),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_rows(owner, rows)
    }

    /// The invariants: every row is the owner's, ids are unique, at most one live row per
    /// subject, and supersession links name rows of the set.
    pub fn check(&self) -> Result<(), MemError> {
        let mut ids = HashMap::new();
        for r in &self.rows {
            if r.owner != self.owner {
                return Err(MemError::Owner {
                    id: r.id.clone(),
                    expected: self.owner.clone(),
                    found: r.owner.clone(),
                });
            }
            if ids.insert(r.id.as_str(), ()).is_some() {
                return Err(MemError::DuplicateId { id: r.id.clone() });
            }
        }
        let mut live: HashMap<&str, &str> = HashMap::new();
        for r in &self.rows {
            if let (true, Some(s)) = (r.state.is_live(), r.subject.as_deref()) {
                if let Some(a) = live.insert(s, &r.id) {
                    return Err(MemError::TwoLive {
                        subject: s.into(),
                        a: a.into(),
                        b: r.id.clone(),
                    });
                }
            }
            let link = match &r.state {
                RowState::Superseded { by, .. } => Some(("state.superseded.by", by)),
                _ => None,
            };
            for (field, target) in link
                .into_iter()
                .chain(r.supersedes.as_ref().map(|t| ("supersedes", t)))
            {
                if !ids.contains_key(target.as_str()) {
                    return Err(MemError::Field {
                        id: r.id.clone(),
                        field,
                        reason: format!("names {target}, which is not in the set"),
                    });
                }
            }
        }
        Ok(())
    }

    fn admit(&self, row: &MemoryRow) -> Result<(), MemError> {
        if row.owner != self.owner {
            return Err(MemError::Owner {
                id: row.id.clone(),
                expected: self.owner.clone(),
                found: row.owner.clone(),
            });
        }
        if row.id.is_empty() {
            return Err(MemError::Field {
                id: String::new(),
                field: "id",
                reason: "is empty".into(),
            });
        }
        if self.get(&row.id).is_some() {
            return Err(MemError::DuplicateId { id: row.id.clone() });
        }
        if !row.state.is_live() {
            return Err(MemError::NotLive {
                id: row.id.clone(),
                state: row.state.name().into(),
            });
        }
        if row.supersedes.is_some() {
            return Err(MemError::Field {
                id: row.id.clone(),
                field: "supersedes",
                reason: "is set by the set (insert by subject, or replace)".into(),
            });
        }
        Ok(())
    }

    fn push_superseding(
        &mut self,
        old: Option<usize>,
        mut row: MemoryRow,
        at: u64,
    ) -> Result<Option<String>, MemError> {
        let old_id = old.map(|i| {
            supersede(&mut self.rows[i], &mut row, at);
            self.rows[i].id.clone()
        });
        self.rows.push(row);
        Ok(old_id)
    }

    fn live_for(&self, subject: &str) -> Option<usize> {
        self.rows
            .iter()
            .position(|r| r.state.is_live() && r.subject.as_deref() == Some(subject))
    }

    fn index(&self, id: &str) -> Result<usize, MemError> {
        self.rows
            .iter()
            .position(|r| r.id == id)
            .ok_or_else(|| MemError::UnknownId { id: id.into() })
    }

    fn live_index(&self, id: &str) -> Result<usize, MemError> {
        let i = self.index(id)?;
        if !self.rows[i].state.is_live() {
            return Err(MemError::NotLive {
                id: id.into(),
                state: self.rows[i].state.name().into(),
            });
        }
        Ok(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::row::MemoryType;

    fn fact(id: &str, text: &str, at: u64) -> MemoryRow {
        MemoryRow::new(id, "alice", text, MemoryType::Semantic, at).with_subject("home city")
    }

    #[test]
    fn a_new_fact_supersedes_the_old_one() {
        let mut set = MemorySet::new("alice");
        assert_eq!(set.insert(fact("a", "lives in Paris", 1), 1).unwrap(), None);
        assert_eq!(
            set.insert(fact("b", "lives in Lyon", 2), 2).unwrap(),
            Some("a".into())
        );
        assert_eq!(set.rows().len(), 2);
        let live: Vec<&str> = set.live().map(|r| r.id.as_str()).collect();
        assert_eq!(live, ["b"]);
        assert_eq!(set.get("a").unwrap().memory, "lives in Paris");
        set.check().unwrap();
    }

    #[test]
    fn refusals_name_the_row() {
        let mut set = MemorySet::new("alice");
        set.insert(fact("a", "x", 1), 1).unwrap();
        assert!(matches!(
            set.insert(fact("a", "y", 2), 2),
            Err(MemError::DuplicateId { .. })
        ));
        let mut bob = fact("c", "z", 3);
        bob.owner = "bob".into();
        assert!(matches!(set.insert(bob, 3), Err(MemError::Owner { .. })));
        assert!(matches!(
            set.revalidate("nope", 4, None),
            Err(MemError::UnknownId { .. })
        ));
        set.delete("a", 5).unwrap();
        assert!(matches!(set.delete("a", 6), Err(MemError::NotLive { .. })));
    }

    #[test]
    fn replace_supersedes_without_a_subject() {
        let mut set = MemorySet::new("alice");
        set.insert(
            MemoryRow::new("a", "alice", "x", MemoryType::Semantic, 1),
            1,
        )
        .unwrap();
        set.replace(
            "a",
            MemoryRow::new("b", "alice", "y", MemoryType::Semantic, 2),
            2,
        )
        .unwrap();
        assert_eq!(set.get("b").unwrap().supersedes.as_deref(), Some("a"));
        assert!(!set.get("a").unwrap().state.is_live());
        assert!(set
            .replace(
                "a",
                MemoryRow::new("c", "alice", "z", MemoryType::Semantic, 3),
                3
            )
            .is_err());
    }
}
