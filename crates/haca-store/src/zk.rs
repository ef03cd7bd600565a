//! Proof jobs of zkml runs: stored with their run, finished by attaching the proof to the
//! run's receipt and queueing its settlement record, in one transaction.

use crate::runs::{insert_run_tx, RunRecord};
use crate::{Store, StoreError};
use rusqlite::{params, OptionalExtension};

/// What proving a run needs: the model and the input the run computed on.
#[derive(Clone, Debug, PartialEq)]
pub struct ZkJob {
    pub run_id: String,
    pub blob_id: String,
    /// The input, rounded to the model's fixed-point grid, as JSON (a dense array of numbers).
    pub input: String,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ZkJobRow {
    pub run_id: String,
    pub blob_id: String,
    #[serde(skip)]
    pub input: String,
    /// `queued`, `proving`, `proved` or `failed`
    pub status: String,
    pub error: Option<String>,
    pub created_at: u64,
    pub finished_at: Option<u64>,
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ZkJobRow> {
    Ok(ZkJobRow {
        run_id: r.get(0)?,
        blob_id: r.get(1)?,
        input: r.get(2)?,
        status: r.get(3)?,
        error: r.get(4)?,
        created_at: r.get::<_, i64>(5)? as u64,
        finished_at: r.get::<_, Option<i64>>(6)?.map(|v| v as u64),
    })
}

const COLUMNS: &str = "run_id, blob_id, input, status, error, created_at, finished_at";

impl Store {
    /// Stores a zkml run and its proof job in one transaction. The run's settlement record
    /// waits for the proof (`rec.outbox` must be `None`).
    pub async fn insert_zk_run(&self, rec: RunRecord, job: ZkJob) -> Result<(), StoreError> {
        if rec.outbox.is_some() {
            return Err(StoreError::Invalid(format!(
                "run {}: a zkml run's settlement record is queued when its proof is attached",
                rec.run_id
            )));
        }
        self.write(move |tx| {
            insert_run_tx(tx, &rec)?;
            tx.prepare_cached(
                "INSERT INTO zk_jobs (run_id, blob_id, input, status, created_at) VALUES (?1, ?2, ?3, 'queued', ?4)",
            )?
            .execute(params![job.run_id, job.blob_id, job.input, rec.created_at as i64])?;
            Ok(())
        })
        .await
    }

    pub fn zk_job(&self, run_id: &str) -> Result<Option<ZkJobRow>, StoreError> {
        self.read(|c| {
            Ok(
                c.prepare_cached(&format!("SELECT {COLUMNS} FROM zk_jobs WHERE run_id = ?1"))?
                    .query_row([run_id], row)
                    .optional()?,
            )
        })
    }

    /// Jobs not finished, oldest first: what a restarted node proves.
    pub fn unfinished_zk_jobs(&self) -> Result<Vec<ZkJobRow>, StoreError> {
        self.read(|c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM zk_jobs WHERE status IN ('queued', 'proving') ORDER BY created_at, rowid"
            ))?;
            let rows = st.query_map([], row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    pub async fn set_zk_proving(&self, run_id: &str) -> Result<(), StoreError> {
        let id = run_id.to_string();
        self.write(move |tx| {
            tx.execute(
                "UPDATE zk_jobs SET status = 'proving' WHERE run_id = ?1 AND status = 'queued'",
                [id],
            )?;
            Ok(())
        })
        .await
    }

    /// Ends a job: its run's receipt becomes `receipt` (the proof box filled) and, when the
    /// node settles, its record enters the outbox; `error` marks it failed instead of proved.
    pub async fn finish_zk_job(
        &self,
        run_id: &str,
        receipt: String,
        outbox: Option<String>,
        error: Option<String>,
        at: u64,
    ) -> Result<(), StoreError> {
        let id = run_id.to_string();
        self.write(move |tx| {
            let status = if error.is_some() { "failed" } else { "proved" };
            let n = tx.execute(
                "UPDATE zk_jobs SET status = ?2, error = ?3, finished_at = ?4 WHERE run_id = ?1 AND status IN ('queued', 'proving')",
                params![id, status, error, at as i64],
            )?;
            if n == 0 {
                return Err(StoreError::Invalid(format!("run {id} has no unfinished proof job")));
            }
            tx.execute("UPDATE runs SET receipt = ?2 WHERE run_id = ?1", params![id, receipt])?;
            if let Some(record) = outbox {
                tx.prepare_cached("INSERT INTO outbox (run_id, record, created_at) VALUES (?1, ?2, ?3)")?
                    .execute(params![id, record, at as i64])?;
            }
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(id: &str) -> RunRecord {
        RunRecord {
            run_id: id.into(),
            created_at: 1,
            model: "m".into(),
            blob_id: "b".into(),
            mode: "zkml".into(),
            node_id: "n".into(),
            receipt_digest: "d".into(),
            output: "[]".into(),
            receipt: "{\"claimed\": true}".into(),
            outbox: None,
        }
    }

    #[tokio::test]
    async fn a_job_lives_with_its_run_and_ends_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("db")).unwrap();
        let job = ZkJob {
            run_id: "r1".into(),
            blob_id: "b".into(),
            input: "[0.5]".into(),
        };
        store.insert_zk_run(run("r1"), job).await.unwrap();
        assert_eq!(store.unfinished_zk_jobs().unwrap().len(), 1);
        store.set_zk_proving("r1").await.unwrap();
        assert_eq!(store.zk_job("r1").unwrap().unwrap().status, "proving");
        store
            .finish_zk_job(
                "r1",
                "{\"proved\": true}".into(),
                Some("{\"rec\": 1}".into()),
                None,
                5,
            )
            .await
            .unwrap();
        assert!(store.unfinished_zk_jobs().unwrap().is_empty());
        assert_eq!(
            store.get_run("r1").unwrap().unwrap().receipt,
            "{\"proved\": true}"
        );
        assert_eq!(
            store.outbox().unwrap(),
            vec![("r1".to_string(), "{\"rec\": 1}".to_string())]
        );
        let again = store
            .finish_zk_job("r1", "{}".into(), None, Some("late".into()), 6)
            .await;
        assert!(again.is_err(), "a finished job does not end twice");
        let mut with_outbox = run("r2");
        with_outbox.outbox = Some("x".into());
        let job = ZkJob {
            run_id: "r2".into(),
            blob_id: "b".into(),
            input: "[]".into(),
        };
        assert!(store.insert_zk_run(with_outbox, job).await.is_err());
    }
}
