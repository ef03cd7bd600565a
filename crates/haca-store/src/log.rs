//! The transparency log's durable side: its entries (append-only, by index, with their leaf
//! hashes) and its signed checkpoints. The tree itself lives in memory (haca-chain) and is
//! rebuilt from the stored leaf hashes.

use crate::{Store, StoreError};
use haca_core::Digest;
use rusqlite::{params, OptionalExtension, Transaction};

/// A log entry as stored: `data` is the canonical JSON the leaf hash is computed over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntryRow {
    pub index: u64,
    pub kind: String,
    pub data: String,
    pub leaf_hash: Digest,
}

/// A signed checkpoint as stored: the note text and, for lookups, its size, root and time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogCheckpointRow {
    pub size: u64,
    pub root: Digest,
    pub timestamp_ms: u64,
    pub note: String,
}

fn digest(bytes: Vec<u8>, what: &str) -> Result<Digest, StoreError> {
    <[u8; 32]>::try_from(bytes.as_slice())
        .map(Digest)
        .map_err(|_| StoreError::Corrupt(format!("{what} is {} bytes, not 32", bytes.len())))
}

fn append_in(
    tx: &Transaction<'_>,
    entries: &[LogEntryRow],
    checkpoint: &LogCheckpointRow,
) -> Result<(), StoreError> {
    // The caller numbered the entries from its in-memory tree; a second writer or an earlier
    // failed append would leave a gap or a clash, so the stored end must be exactly there.
    let next: i64 = tx
        .prepare_cached("SELECT COALESCE(MAX(idx) + 1, 0) FROM log_entries")?
        .query_row([], |r| r.get(0))?;
    let first = entries.first().map_or(checkpoint.size, |e| e.index);
    if next as u64 != first {
        return Err(StoreError::Invalid(format!(
            "log append starts at index {first}, but the stored log ends at {next}"
        )));
    }
    if first + entries.len() as u64 != checkpoint.size {
        return Err(StoreError::Invalid(format!(
            "checkpoint size {} is not the log's size after the append ({})",
            checkpoint.size,
            first + entries.len() as u64
        )));
    }
    let mut insert = tx.prepare_cached(
        "INSERT INTO log_entries (idx, kind, leaf_hash, data) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for (i, e) in entries.iter().enumerate() {
        if e.index != first + i as u64 {
            return Err(StoreError::Invalid(format!(
                "log entry {} follows {} in the batch",
                e.index,
                first + i as u64 - 1
            )));
        }
        insert.execute(params![e.index as i64, e.kind, &e.leaf_hash.0[..], e.data])?;
    }
    tx.prepare_cached(
        "INSERT INTO log_checkpoints (size, root, timestamp_ms, note) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![
        checkpoint.size as i64,
        &checkpoint.root.0[..],
        checkpoint.timestamp_ms as i64,
        checkpoint.note
    ])?;
    Ok(())
}

impl Store {
    /// Appends entries (numbered on from the stored end) and the checkpoint over them in one
    /// transaction; blocks until it has committed. Refused, with nothing written, when the
    /// first index is not the stored log's size or the checkpoint's size is not the size after.
    pub fn log_append_blocking(
        &self,
        entries: Vec<LogEntryRow>,
        checkpoint: LogCheckpointRow,
    ) -> Result<(), StoreError> {
        self.write_blocking(move |tx| append_in(tx, &entries, &checkpoint))
    }

    /// [`Store::log_append_blocking`] for async callers.
    pub async fn log_append(
        &self,
        entries: Vec<LogEntryRow>,
        checkpoint: LogCheckpointRow,
    ) -> Result<(), StoreError> {
        self.write(move |tx| append_in(tx, &entries, &checkpoint))
            .await
    }

    /// Every stored leaf hash in index order. Damage (a gap in the indices, a hash that is not
    /// 32 bytes) is an error naming the index.
    pub fn log_leaf_hashes(&self) -> Result<Vec<Digest>, StoreError> {
        self.read(|c| {
            let mut st = c.prepare("SELECT idx, leaf_hash FROM log_entries ORDER BY idx")?;
            let mut rows = st.query([])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                let idx: i64 = r.get(0)?;
                if idx as u64 != out.len() as u64 {
                    return Err(StoreError::Corrupt(format!(
                        "log entry {} is missing (the next stored index is {idx})",
                        out.len()
                    )));
                }
                out.push(digest(
                    r.get(1)?,
                    &format!("the leaf hash of log entry {idx}"),
                )?);
            }
            Ok(out)
        })
    }

    /// The number of stored entries.
    pub fn log_size(&self) -> Result<u64, StoreError> {
        self.read(|c| {
            Ok(c.query_row(
                "SELECT COALESCE(MAX(idx) + 1, 0) FROM log_entries",
                [],
                |r| r.get::<_, i64>(0),
            )? as u64)
        })
    }

    pub fn log_entry(&self, index: u64) -> Result<Option<LogEntryRow>, StoreError> {
        let Ok(idx) = i64::try_from(index) else {
            return Ok(None);
        };
        self.read(|c| {
            let row = c
                .prepare_cached("SELECT kind, leaf_hash, data FROM log_entries WHERE idx = ?1")?
                .query_row([idx], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, Vec<u8>>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                })
                .optional()?;
            row.map(|(kind, hash, data)| {
                Ok(LogEntryRow {
                    index,
                    kind,
                    data,
                    leaf_hash: digest(hash, &format!("the leaf hash of log entry {index}"))?,
                })
            })
            .transpose()
        })
    }

    /// The checkpoint with the largest size, if any.
    pub fn log_latest_checkpoint(&self) -> Result<Option<LogCheckpointRow>, StoreError> {
        self.log_checkpoint_where("ORDER BY size DESC LIMIT 1", None)
    }

    /// The checkpoint signed at exactly `size`, if the log signed one there.
    pub fn log_checkpoint(&self, size: u64) -> Result<Option<LogCheckpointRow>, StoreError> {
        let Ok(size) = i64::try_from(size) else {
            return Ok(None);
        };
        self.log_checkpoint_where("WHERE size = ?1", Some(size))
    }

    fn log_checkpoint_where(
        &self,
        clause: &str,
        arg: Option<i64>,
    ) -> Result<Option<LogCheckpointRow>, StoreError> {
        let sql = format!("SELECT size, root, timestamp_ms, note FROM log_checkpoints {clause}");
        self.read(|c| {
            let mut st = c.prepare_cached(&sql)?;
            let map = |r: &rusqlite::Row<'_>| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, String>(3)?,
                ))
            };
            let row = match arg {
                Some(a) => st.query_row([a], map),
                None => st.query_row([], map),
            }
            .optional()?;
            row.map(|(size, root, ts, note)| {
                Ok(LogCheckpointRow {
                    size: size as u64,
                    root: digest(root, &format!("the root of the checkpoint at size {size}"))?,
                    timestamp_ms: ts as u64,
                    note,
                })
            })
            .transpose()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(index: u64) -> LogEntryRow {
        LogEntryRow {
            index,
            kind: "run".into(),
            data: format!("{{\"i\":{index}}}"),
            leaf_hash: Digest([index as u8; 32]),
        }
    }

    fn cp(size: u64) -> LogCheckpointRow {
        LogCheckpointRow {
            size,
            root: Digest([size as u8; 32]),
            timestamp_ms: 1000 + size,
            note: format!("note {size}"),
        }
    }

    #[test]
    fn appends_in_order_and_refuses_gaps_edits_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("db.sqlite")).unwrap();
        store
            .log_append_blocking(vec![row(0), row(1)], cp(2))
            .unwrap();
        store.log_append_blocking(vec![row(2)], cp(3)).unwrap();
        assert_eq!(store.log_size().unwrap(), 3);
        assert_eq!(
            store.log_leaf_hashes().unwrap(),
            vec![Digest([0; 32]), Digest([1; 32]), Digest([2; 32])]
        );
        assert_eq!(store.log_entry(1).unwrap(), Some(row(1)));
        assert_eq!(store.log_entry(3).unwrap(), None);
        assert_eq!(store.log_latest_checkpoint().unwrap(), Some(cp(3)));
        assert_eq!(store.log_checkpoint(2).unwrap(), Some(cp(2)));
        assert_eq!(store.log_checkpoint(1).unwrap(), None);

        // A gap, a replay, a checkpoint of the wrong size: refused, nothing written.
        assert!(store.log_append_blocking(vec![row(4)], cp(5)).is_err());
        assert!(store.log_append_blocking(vec![row(2)], cp(3)).is_err());
        assert!(store.log_append_blocking(vec![row(3)], cp(5)).is_err());
        assert!(store
            .log_append_blocking(vec![row(3), row(5)], cp(5))
            .is_err());
        assert_eq!(store.log_size().unwrap(), 3);

        for sql in [
            "UPDATE log_entries SET kind = 'x' WHERE idx = 0",
            "DELETE FROM log_entries WHERE idx = 2",
            "UPDATE log_checkpoints SET note = 'x'",
            "DELETE FROM log_checkpoints",
        ] {
            let r = store.write_blocking(move |tx| Ok(tx.execute(sql, [])?));
            assert!(r.is_err(), "{sql} was allowed");
        }
        assert_eq!(store.log_size().unwrap(), 3);
    }
}
