//! haca's embedded store: one SQLite database in WAL mode, its migrations, and the files
//! beside it (node key, operator token).
//!
//! Writes go through one writer thread that commits whatever is queued in one transaction
//! (group commit) and answers each caller only after its commit: an acknowledged write has
//! reached the WAL file, so it survives `kill -9` of the process (`synchronous=NORMAL`; a
//! power cut may lose the last transactions, which is SQLite's documented WAL trade-off).

mod chain;
mod data;
mod files;
mod log;
mod memory;
mod migrations;
mod ops;
mod payments;
mod review;
mod runs;
mod zk;

pub use chain::{SettlementRow, StoredBlock};
pub use files::{load_or_create_key, load_or_create_token, write_atomic};
pub use log::{LogCheckpointRow, LogEntryRow};
pub use memory::MemoryRecord;
pub use ops::OpsCounts;
pub use payments::{parse_amount, ApiKeyRow, PaymentRow, Refund, Transfer, TransferRefusal};
pub use review::{CaseFilter, CaseRow, DecisionRow, LabelUseRow, ReviewTokenRow, WebhookDelivery};
pub use runs::{ChatTurn, ChatTurnRow, RunRecord, RunSummary};
pub use zk::{ZkJob, ZkJobRow};

use rusqlite::{Connection, OpenFlags, Transaction};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Mutex};
use std::thread;

/// Store failures, in plain words.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("the store's writer has stopped")]
    WriterGone,
    #[error("stored data is damaged: {0}")]
    Corrupt(String),
    /// A row the write needs does not exist (its key).
    #[error("{0} is not stored here")]
    NotFound(String),
    /// The write lost a race with another (a case decided meanwhile).
    #[error("{0}")]
    Conflict(String),
}

/// A queued write. Running it returns a finisher that delivers its reply once the batch's
/// commit is known (true: committed), so no caller hears "done" before its commit.
type Job = Box<dyn FnOnce(&Transaction<'_>) -> Finisher + Send>;
type Finisher = Box<dyn FnOnce(Result<(), String>) + Send>;

/// The embedded store. Cheap to share behind an `Arc`.
pub struct Store {
    writer: Mutex<mpsc::Sender<Job>>,
    reader: Mutex<Connection>,
}

/// Creates the database file readable by its owner only (0600, like the node's keys), before
/// SQLite opens it: the store holds outputs, conversations and balances. SQLite gives its
/// `-wal` and `-shm` files the database file's permissions.
fn create_private(path: &Path) -> Result<(), StoreError> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    o.open(path).map(drop).map_err(|source| StoreError::Io {
        path: path.to_owned(),
        source,
    })
}

fn open_conn(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
    )
    .map_err(|source| StoreError::Open {
        path: path.to_owned(),
        source,
    })?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

impl Store {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_owned();
        create_private(&path)?;
        let mut writer_conn = open_conn(&path)?;
        migrations::apply(&mut writer_conn)?;
        let reader = open_conn(&path)?;
        let (tx, rx) = mpsc::channel::<Job>();
        thread::Builder::new()
            .name("haca-store-writer".into())
            .spawn(move || writer_loop(writer_conn, rx))
            .map_err(|source| StoreError::Io {
                path: path.clone(),
                source,
            })?;
        Ok(Store {
            writer: Mutex::new(tx),
            reader: Mutex::new(reader),
        })
    }

    /// Runs `f` in a write transaction and returns once that transaction has committed.
    /// If `f` fails, its changes are rolled back and other queued writes are unaffected.
    pub async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        self.submit(f)?.await.map_err(|_| StoreError::WriterGone)?
    }

    /// [`Store::write`] for synchronous callers (a consensus engine's commit hook): blocks
    /// the calling thread until the transaction has committed.
    pub fn write_blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.enqueue(f, move |r| {
            let _ = tx.send(r);
        })?;
        // The writer is its own thread, so waiting here cannot deadlock it.
        rx.recv().map_err(|_| StoreError::WriterGone)?
    }

    fn submit<T, F>(
        &self,
        f: F,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<T, StoreError>>, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        self.enqueue(f, move |r| {
            let _ = done_tx.send(r);
        })?;
        Ok(done_rx)
    }

    fn enqueue<T, F>(
        &self,
        f: F,
        reply: impl FnOnce(Result<T, StoreError>) + Send + 'static,
    ) -> Result<(), StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let job: Job = Box::new(move |tx: &Transaction<'_>| {
            // Each job runs under a savepoint so that one failing job leaves the batch intact.
            let result = (|| {
                tx.prepare_cached("SAVEPOINT job")?.execute([])?;
                match f(tx) {
                    Ok(v) => {
                        tx.prepare_cached("RELEASE job")?.execute([])?;
                        Ok(v)
                    }
                    Err(e) => {
                        tx.execute_batch("ROLLBACK TO job; RELEASE job")?;
                        Err(e)
                    }
                }
            })();
            Box::new(move |commit: Result<(), String>| {
                let reply_value = match (commit, result) {
                    (Ok(()), r) => r,
                    (Err(e), _) => Err(StoreError::Invalid(format!(
                        "commit failed, nothing was written: {e}"
                    ))),
                };
                reply(reply_value);
            })
        });
        self.writer
            .lock()
            .expect("writer lock")
            .send(job)
            .map_err(|_| StoreError::WriterGone)
    }

    /// Runs a read-only query on the reader connection (it sees every committed write).
    pub fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let conn = self.reader.lock().expect("reader lock");
        f(&conn)
    }

    /// True when the database answers a query.
    pub fn is_healthy(&self) -> bool {
        self.read(|c| Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?))
            .is_ok()
    }
}

fn writer_loop(mut conn: Connection, rx: mpsc::Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < 4096 {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let tx = match conn.transaction() {
            Ok(tx) => tx,
            Err(e) => {
                tracing::error!("store: cannot begin a transaction: {e}");
                continue; // dropping the jobs drops their reply senders: callers see WriterGone
            }
        };
        let finishers: Vec<Finisher> = batch.into_iter().map(|job| job(&tx)).collect();
        let outcome = tx.commit().map_err(|e| {
            tracing::error!("store: commit failed: {e}");
            e.to_string()
        });
        for finish in finishers {
            finish(outcome.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn a_new_database_is_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("haca.db");
        let store = Store::open(&path).unwrap();
        store
            .write_blocking(|tx| Ok(tx.execute("CREATE TABLE t (x INTEGER)", [])?))
            .unwrap();
        for f in ["haca.db", "haca.db-wal", "haca.db-shm"] {
            let mode = std::fs::metadata(dir.path().join(f))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{f}: {mode:o}");
        }
    }
}
