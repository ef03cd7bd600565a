//! Runs and their receipts.

use crate::{Store, StoreError};
use rusqlite::{params, OptionalExtension, Row};

/// A run as stored: the answer's output and its receipt, both JSON text.
#[derive(Clone, Debug, PartialEq)]
pub struct RunRecord {
    pub run_id: String,
    pub created_at: u64,
    pub model: String,
    pub blob_id: String,
    pub mode: String,
    pub node_id: String,
    pub receipt_digest: String,
    pub output: String,
    pub receipt: String,
}

/// A run without its output and receipt, for listings.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct RunSummary {
    pub run_id: String,
    pub created_at: u64,
    pub model: String,
    pub blob_id: String,
    pub mode: String,
}

fn record(r: &Row<'_>) -> rusqlite::Result<RunRecord> {
    Ok(RunRecord {
        run_id: r.get(0)?,
        created_at: r.get::<_, i64>(1)? as u64,
        model: r.get(2)?,
        blob_id: r.get(3)?,
        mode: r.get(4)?,
        node_id: r.get(5)?,
        receipt_digest: r.get(6)?,
        output: r.get(7)?,
        receipt: r.get(8)?,
    })
}

impl Store {
    /// Stores a run; returns once it is committed. A run id is stored once: a second insert
    /// of the same id is refused.
    pub async fn insert_run(&self, rec: RunRecord) -> Result<(), StoreError> {
        self.write(move |tx| {
            let n = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO runs (run_id, created_at, model, blob_id, mode, node_id, receipt_digest, output, receipt)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )?
                .execute(params![
                    rec.run_id,
                    rec.created_at as i64,
                    rec.model,
                    rec.blob_id,
                    rec.mode,
                    rec.node_id,
                    rec.receipt_digest,
                    rec.output,
                    rec.receipt
                ])?;
            if n == 0 {
                return Err(StoreError::Invalid(format!("run {} is already stored", rec.run_id)));
            }
            Ok(())
        })
        .await
    }

    pub fn get_run(&self, run_id: &str) -> Result<Option<RunRecord>, StoreError> {
        self.read(|c| {
            Ok(c.query_row(
                "SELECT run_id, created_at, model, blob_id, mode, node_id, receipt_digest, output, receipt FROM runs WHERE run_id = ?1",
                [run_id],
                record,
            )
            .optional()?)
        })
    }

    /// The newest runs first, at most `limit`.
    pub fn list_runs(&self, limit: usize) -> Result<Vec<RunSummary>, StoreError> {
        self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT run_id, created_at, model, blob_id, mode FROM runs ORDER BY created_at DESC, rowid DESC LIMIT ?1",
            )?;
            let rows = st.query_map([limit as i64], |r| {
                Ok(RunSummary { run_id: r.get(0)?, created_at: r.get::<_, i64>(1)? as u64, model: r.get(2)?, blob_id: r.get(3)?, mode: r.get(4)? })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    pub fn count_runs(&self) -> Result<u64, StoreError> {
        self.read(|c| {
            Ok(c.query_row("SELECT COUNT(*) FROM runs", [], |r| r.get::<_, i64>(0))? as u64)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, t: u64) -> RunRecord {
        RunRecord {
            run_id: id.into(),
            created_at: t,
            model: "m".into(),
            blob_id: "sha256:00".into(),
            mode: "vanilla".into(),
            node_id: "n".into(),
            receipt_digest: "d".into(),
            output: "{}".into(),
            receipt: "{}".into(),
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn concurrent_inserts_all_commit_and_duplicates_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(Store::open(dir.path().join("haca.db")).unwrap());
        let mut tasks = Vec::new();
        for i in 0..200u64 {
            let s = store.clone();
            tasks.push(tokio::spawn(async move {
                s.insert_run(rec(&format!("r{i}"), i)).await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(store.count_runs().unwrap(), 200);
        let dup = store.insert_run(rec("r5", 5)).await.unwrap_err();
        assert!(dup.to_string().contains("already stored"));
        assert_eq!(store.count_runs().unwrap(), 200);
        assert_eq!(store.list_runs(3).unwrap()[0].run_id, "r199");
        assert_eq!(store.get_run("r7").unwrap().unwrap().created_at, 7);
        drop(store);
        let reopened = Store::open(dir.path().join("haca.db")).unwrap();
        assert_eq!(reopened.count_runs().unwrap(), 200);
    }
}
