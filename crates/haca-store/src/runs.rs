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
    /// The settlement record to queue in the outbox with the run (same transaction), so
    /// every acknowledged run is eventually submitted. Not read back by `get_run`.
    pub outbox: Option<String>,
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

/// A chat run's place in a conversation, written with the run.
#[derive(Clone, Debug, PartialEq)]
pub struct ChatTurn {
    pub conversation: String,
    /// The public model name the client asked for.
    pub model: String,
    /// The provider that served the turn, and over which path (`direct`, `tee`).
    pub provider: String,
    pub path: String,
    /// The privacy the turn required.
    pub privacy: String,
    /// Routes tried, the serving one included.
    pub attempts: u64,
}

/// A stored turn.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ChatTurnRow {
    pub turn: u64,
    pub run_id: String,
    pub created_at: u64,
    pub model: String,
    pub provider: String,
    pub path: String,
    pub privacy: String,
    pub attempts: u64,
}

pub(crate) fn insert_run_tx(
    tx: &rusqlite::Transaction<'_>,
    rec: &RunRecord,
) -> Result<(), StoreError> {
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
        return Err(StoreError::Invalid(format!(
            "run {} is already stored",
            rec.run_id
        )));
    }
    if let Some(record) = &rec.outbox {
        tx.prepare_cached("INSERT INTO outbox (run_id, record, created_at) VALUES (?1, ?2, ?3)")?
            .execute(params![rec.run_id, record, rec.created_at as i64])?;
    }
    Ok(())
}

pub(crate) fn record(r: &Row<'_>) -> rusqlite::Result<RunRecord> {
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
        outbox: None,
    })
}

impl Store {
    /// Stores a run; returns once it is committed. A run id is stored once: a second insert
    /// of the same id is refused.
    pub async fn insert_run(&self, rec: RunRecord) -> Result<(), StoreError> {
        self.write(move |tx| insert_run_tx(tx, &rec)).await
    }

    /// Stores a chat run and, when it belongs to a conversation, its turn, in one
    /// transaction; returns the turn's number (1 for a conversation's first).
    pub async fn insert_chat_run(
        &self,
        rec: RunRecord,
        turn: Option<ChatTurn>,
    ) -> Result<Option<u64>, StoreError> {
        self.write(move |tx| {
            insert_run_tx(tx, &rec)?;
            let Some(t) = turn else { return Ok(None) };
            let n: i64 = tx
                .prepare_cached("SELECT COALESCE(MAX(turn), 0) + 1 FROM chat_turns WHERE conversation = ?1")?
                .query_row([&t.conversation], |r| r.get(0))?;
            tx.prepare_cached(
                "INSERT INTO chat_turns (conversation, turn, run_id, created_at, model, provider, path, privacy, attempts)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?
            .execute(params![
                t.conversation,
                n,
                rec.run_id,
                rec.created_at as i64,
                t.model,
                t.provider,
                t.path,
                t.privacy,
                t.attempts as i64
            ])?;
            Ok(Some(n as u64))
        })
        .await
    }

    /// A conversation's turns, first to last (empty for an unknown conversation).
    pub fn chat_turns(&self, conversation: &str) -> Result<Vec<ChatTurnRow>, StoreError> {
        self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT turn, run_id, created_at, model, provider, path, privacy, attempts
                 FROM chat_turns WHERE conversation = ?1 ORDER BY turn",
            )?;
            let rows = st.query_map([conversation], |r| {
                Ok(ChatTurnRow {
                    turn: r.get::<_, i64>(0)? as u64,
                    run_id: r.get(1)?,
                    created_at: r.get::<_, i64>(2)? as u64,
                    model: r.get(3)?,
                    provider: r.get(4)?,
                    path: r.get(5)?,
                    privacy: r.get(6)?,
                    attempts: r.get::<_, i64>(7)? as u64,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
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
            outbox: Some(format!("{{\"run\": \"{id}\"}}")),
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn outbox_rows_leave_when_a_block_decides_their_runs() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("t.db")).unwrap();
        store.insert_run(rec("a", 1)).await.unwrap();
        store.insert_run(rec("b", 2)).await.unwrap();
        assert_eq!(store.outbox().unwrap().len(), 2);
        let block = |h: u64| crate::StoredBlock {
            height: h,
            block_id: format!("id{h}"),
            block: vec![h as u8],
            certificate: "{}".into(),
            committed_at: 3,
        };
        let row = |id: &str, status: &str| crate::SettlementRow {
            run_id: id.into(),
            status: status.into(),
            height: 1,
            round: Some(1),
            leaf_index: Some(0),
            reason: None,
        };
        store
            .commit_block(block(1), vec![row("a", "settled")])
            .unwrap();
        assert_eq!(
            store.outbox().unwrap(),
            vec![("b".to_string(), "{\"run\": \"b\"}".to_string())]
        );
        assert_eq!(store.last_height().unwrap(), 1);
        // A height commits once, and a later rejection never overwrites a settlement.
        assert!(store.commit_block(block(1), vec![]).is_err());
        store
            .commit_block(block(2), vec![row("a", "rejected")])
            .unwrap();
        assert_eq!(store.settlement("a").unwrap().unwrap().status, "settled");
        // Committed blocks are append-only.
        let err = store
            .write_blocking(|tx| Ok(tx.execute("DELETE FROM chain_blocks", [])?))
            .unwrap_err();
        assert!(err.to_string().contains("never change"), "{err}");
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
