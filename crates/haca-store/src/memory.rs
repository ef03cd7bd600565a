//! MemSync's rows at rest: per owner, each row's sealed JSON and sealed embedding, and the
//! owner's sealed bio. The store never sees plaintext; it keeps what the gateway sealed.

use crate::{Store, StoreError};
use rusqlite::{params, OptionalExtension};

/// One stored memory row: `sealed` is haca-mem's `SealedRow` as JSON; `vector` the row's
/// embedding sealed under the owner's key (none for a tombstone).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryRecord {
    pub owner: String,
    pub id: String,
    pub sealed: String,
    pub vector: Option<Vec<u8>>,
}

impl Store {
    /// Every stored row of `owner` (tombstones and superseded rows included), oldest first.
    pub fn memory_rows(&self, owner: &str) -> Result<Vec<MemoryRecord>, StoreError> {
        self.read(|c| {
            let mut q = c.prepare_cached(
                "SELECT id, sealed, vector FROM memory_rows WHERE owner = ?1 ORDER BY rowid",
            )?;
            let rows = q.query_map([owner], |r| {
                Ok(MemoryRecord {
                    owner: owner.to_owned(),
                    id: r.get(0)?,
                    sealed: r.get(1)?,
                    vector: r.get(2)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// Writes `rows` (new or changed) in one transaction: a supersession changes two rows, and
    /// both land or neither does.
    pub async fn put_memory_rows(
        &self,
        rows: Vec<MemoryRecord>,
        at_ms: u64,
    ) -> Result<(), StoreError> {
        self.write(move |tx| {
            let mut q = tx.prepare_cached(
                "INSERT INTO memory_rows (owner, id, sealed, vector, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (owner, id) DO UPDATE SET sealed = ?3, vector = ?4, updated_at = ?5",
            )?;
            for r in &rows {
                q.execute(params![r.owner, r.id, r.sealed, r.vector, at_ms as i64])?;
            }
            Ok(())
        })
        .await
    }

    /// The owner's sealed bio.
    pub fn memory_bio(&self, owner: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(|c| {
            Ok(
                c.prepare_cached("SELECT sealed FROM memory_bios WHERE owner = ?1")?
                    .query_row([owner], |r| r.get(0))
                    .optional()?,
            )
        })
    }

    /// Replaces the owner's sealed bio.
    pub async fn put_memory_bio(
        &self,
        owner: &str,
        sealed: Vec<u8>,
        at_ms: u64,
    ) -> Result<(), StoreError> {
        let owner = owner.to_owned();
        self.write(move |tx| {
            tx.prepare_cached(
                "INSERT INTO memory_bios (owner, sealed, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (owner) DO UPDATE SET sealed = ?2, updated_at = ?3",
            )?
            .execute(params![owner, sealed, at_ms as i64])?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(owner: &str, id: &str, sealed: &str) -> MemoryRecord {
        MemoryRecord {
            owner: owner.into(),
            id: id.into(),
            sealed: sealed.into(),
            vector: Some(vec![1, 2, 3]),
        }
    }

    #[tokio::test]
    async fn rows_are_kept_per_owner_and_replaced_by_id() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("haca.db")).unwrap();
        store
            .put_memory_rows(vec![record("a", "m1", "s1"), record("b", "m1", "other")], 1)
            .await
            .unwrap();
        let mut tomb = record("a", "m1", "s1-deleted");
        tomb.vector = None;
        store
            .put_memory_rows(vec![tomb.clone(), record("a", "m2", "s2")], 2)
            .await
            .unwrap();
        assert_eq!(
            store.memory_rows("a").unwrap(),
            vec![tomb, record("a", "m2", "s2")]
        );
        assert_eq!(store.memory_rows("b").unwrap().len(), 1);
        assert!(store.memory_rows("c").unwrap().is_empty());
        assert_eq!(store.memory_bio("a").unwrap(), None);
        store.put_memory_bio("a", vec![9], 3).await.unwrap();
        store.put_memory_bio("a", vec![8], 4).await.unwrap();
        assert_eq!(store.memory_bio("a").unwrap(), Some(vec![8]));
    }
}
