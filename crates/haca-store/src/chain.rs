//! The chain's durable side: committed blocks with their certificates, each run's settlement
//! outcome, and the gateway's outbox of records waiting for a round.

use crate::{Store, StoreError};
use rusqlite::{params, OptionalExtension};

/// A committed block as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredBlock {
    pub height: u64,
    pub block_id: String,
    pub block: Vec<u8>,
    pub certificate: String,
    pub committed_at: u64,
}

/// Where a run's settlement record ended up.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct SettlementRow {
    pub run_id: String,
    /// `settled` or `rejected`.
    pub status: String,
    pub height: u64,
    pub round: Option<u64>,
    pub leaf_index: Option<u64>,
    pub reason: Option<String>,
}

impl Store {
    /// Commits a block and the outcome of every record in it in one transaction, and clears
    /// those runs from the outbox. A height is committed once; a second commit of the same
    /// height is refused. A `rejected` outcome never overwrites `settled`. Blocks the calling
    /// thread until committed (the consensus engine's commit hook is synchronous).
    pub fn commit_block(
        &self,
        block: StoredBlock,
        outcomes: Vec<SettlementRow>,
    ) -> Result<(), StoreError> {
        self.write_blocking(move |tx| {
            tx.prepare_cached(
                "INSERT INTO chain_blocks (height, block_id, block, certificate, committed_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                block.height as i64,
                block.block_id,
                block.block,
                block.certificate,
                block.committed_at as i64
            ])?;
            for o in &outcomes {
                tx.prepare_cached(
                    "INSERT INTO settlements (run_id, status, height, round, leaf_index, reason)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT(run_id) DO UPDATE SET status = excluded.status, height = excluded.height,
                        round = excluded.round, leaf_index = excluded.leaf_index, reason = excluded.reason
                     WHERE settlements.status != 'settled'",
                )?
                .execute(params![
                    o.run_id,
                    o.status,
                    o.height as i64,
                    o.round.map(|r| r as i64),
                    o.leaf_index.map(|r| r as i64),
                    o.reason
                ])?;
                tx.prepare_cached("DELETE FROM outbox WHERE run_id = ?1")?
                    .execute([&o.run_id])?;
            }
            Ok(())
        })
    }

    /// The highest committed height (0 when none).
    pub fn last_height(&self) -> Result<u64, StoreError> {
        self.read(|c| {
            Ok(c.query_row(
                "SELECT COALESCE(MAX(height), 0) FROM chain_blocks",
                [],
                |r| r.get::<_, i64>(0),
            )? as u64)
        })
    }

    pub fn block(&self, height: u64) -> Result<Option<StoredBlock>, StoreError> {
        self.read(|c| {
            Ok(c.query_row(
                "SELECT height, block_id, block, certificate, committed_at FROM chain_blocks WHERE height = ?1",
                [height as i64],
                |r| {
                    Ok(StoredBlock {
                        height: r.get::<_, i64>(0)? as u64,
                        block_id: r.get(1)?,
                        block: r.get(2)?,
                        certificate: r.get(3)?,
                        committed_at: r.get::<_, i64>(4)? as u64,
                    })
                },
            )
            .optional()?)
        })
    }

    /// The heights and block ids of the latest `limit` blocks, newest first.
    pub fn recent_blocks(&self, limit: usize) -> Result<Vec<(u64, String)>, StoreError> {
        self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT height, block_id FROM chain_blocks ORDER BY height DESC LIMIT ?1",
            )?;
            let rows = st.query_map([limit as i64], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get(1)?))
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    pub fn settlement(&self, run_id: &str) -> Result<Option<SettlementRow>, StoreError> {
        self.read(|c| {
            Ok(c.query_row(
                "SELECT run_id, status, height, round, leaf_index, reason FROM settlements WHERE run_id = ?1",
                [run_id],
                |r| {
                    Ok(SettlementRow {
                        run_id: r.get(0)?,
                        status: r.get(1)?,
                        height: r.get::<_, i64>(2)? as u64,
                        round: r.get::<_, Option<i64>>(3)?.map(|v| v as u64),
                        leaf_index: r.get::<_, Option<i64>>(4)?.map(|v| v as u64),
                        reason: r.get(5)?,
                    })
                },
            )
            .optional()?)
        })
    }

    /// Every record still waiting in the outbox, oldest first: what a restarted gateway
    /// submits again.
    pub fn outbox(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.read(|c| {
            let mut st =
                c.prepare_cached("SELECT run_id, record FROM outbox ORDER BY created_at, rowid")?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }
}
