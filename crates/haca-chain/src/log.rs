//! The transparency log: an append-only RFC 6962 / RFC 9162 Merkle log of runs, settlements
//! and review decisions, with signed C2SP checkpoints, inclusion and consistency proofs for
//! any checkpointed size, and durable storage in the node's store.
//!
//! Appends go to one sequencer thread. It takes every append that is waiting, numbers their
//! entries in arrival order, extends the in-memory tree, signs one checkpoint over the result
//! and writes entries and checkpoint in one store transaction (group commit); every caller in
//! the group hears back only after that commit. Readers see only committed sizes: the tree may
//! briefly hold leaves of a commit in progress, and they are cut off again if it fails.

use haca_core::checkpoint::{check_origin, Checkpoint, CheckpointError, SignedCheckpoint};
use haca_core::merkle::{empty_root, leaf_hash, LogTree, TreeError};
use haca_core::{canonical, Digest, NodeId, NodeKey};
use haca_store::{LogCheckpointRow, LogEntryRow, Store, StoreError};
use serde::{Deserialize, Serialize};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};

/// The entry kinds the log accepts: runs and their settlements, review decisions, refunds of
/// charges whose runs were never stored, and deletions of users' memory rows (MemSync).
pub const KINDS: &[&str] = &["run", "settlement", "decision", "refund", "memory.delete"];

/// Entries taken into one group commit, at most (a single larger append still goes alone):
/// bounds the transaction and the time readers wait for the tree lock.
const MAX_GROUP: usize = 65_536;

/// One log entry. Its leaf data is the RFC 8785 canonical JSON of `{"data": .., "kind": ..}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogEntry {
    pub kind: String,
    pub data: serde_json::Value,
}

impl LogEntry {
    pub fn new(kind: impl Into<String>, data: serde_json::Value) -> Self {
        LogEntry {
            kind: kind.into(),
            data,
        }
    }

    /// The bytes the leaf hash is computed over.
    pub fn leaf_data(&self) -> Result<Vec<u8>, LogError> {
        self.canonical(0).map(String::into_bytes)
    }

    /// RFC 6962 leaf hash of [`LogEntry::leaf_data`].
    pub fn leaf_hash(&self) -> Result<Digest, LogError> {
        Ok(leaf_hash(&self.leaf_data()?))
    }

    /// Checks the entry and gives its canonical JSON; `position` names it in errors.
    fn canonical(&self, position: usize) -> Result<String, LogError> {
        if !KINDS.contains(&self.kind.as_str()) {
            return Err(LogError::BadEntry {
                position,
                field: "kind",
                reason: format!("{:?} is not one of {KINDS:?}", self.kind),
            });
        }
        canonical::to_string(self).map_err(|e| LogError::BadEntry {
            position,
            field: "data",
            reason: e.to_string(),
        })
    }
}

/// Where an append landed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Appended {
    /// Index of the append's first entry; the others follow in order.
    pub first_index: u64,
    pub count: u64,
    /// The checkpoint committed with the entries; it covers them (and may cover entries of
    /// appends committed in the same group).
    pub checkpoint: SignedCheckpoint,
}

/// Why the log refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("the stored log is damaged: {0}")]
    Damaged(String),
    #[error("origin: {0}")]
    Origin(CheckpointError),
    #[error("the store holds the log of origin {stored:?}, not {given:?}")]
    OriginMismatch { stored: String, given: String },
    #[error("the latest stored checkpoint (size {size}) is not signed by this log's key {key}: {reason}")]
    NotSignedByKey {
        size: u64,
        key: NodeId,
        reason: CheckpointError,
    },
    #[error("entries[{position}].{field}: {reason}")]
    BadEntry {
        position: usize,
        field: &'static str,
        reason: String,
    },
    #[error("entries: an append needs at least one entry")]
    EmptyAppend,
    #[error("index {index} is not below size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("size {size} is beyond the log's committed size {log_size}")]
    SizeBeyondLog { size: u64, log_size: u64 },
    #[error("first size {first} is larger than second size {second}")]
    SizesOutOfOrder { first: u64, second: u64 },
    #[error(
        "the append of {count} entries was not committed; nothing of it was written: {reason}"
    )]
    NotCommitted { count: u64, reason: String },
    #[error("the log's sequencer thread has stopped")]
    Stopped,
    #[error("cannot start the log's sequencer thread: {0}")]
    Spawn(std::io::Error),
}

impl From<TreeError> for LogError {
    fn from(e: TreeError) -> Self {
        match e {
            TreeError::SizeBeyondTree { size, tree_size } => LogError::SizeBeyondLog {
                size,
                log_size: tree_size,
            },
            TreeError::IndexOutOfRange { index, size } => LogError::IndexOutOfRange { index, size },
            TreeError::SizesOutOfOrder { first, second } => {
                LogError::SizesOutOfOrder { first, second }
            }
        }
    }
}

/// The tree and the latest committed checkpoint; the tree may run ahead of it during a commit.
struct Shared {
    tree: LogTree,
    head: SignedCheckpoint,
}

struct Request {
    /// (kind, canonical JSON, leaf hash) of each entry, in order.
    rows: Vec<(String, String, Digest)>,
    reply: tokio::sync::oneshot::Sender<Result<Appended, LogError>>,
}

/// The transparency log of one origin, kept in one store.
pub struct TransparencyLog {
    store: Arc<Store>,
    origin: String,
    key: NodeId,
    shared: Arc<Mutex<Shared>>,
    queue: mpsc::Sender<Request>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // A panic while holding the lock cannot leave a half-pushed tree that a reader would
    // trust beyond the committed head, so the state stays usable.
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

impl TransparencyLog {
    /// Opens the log kept in `store`: rebuilds the tree from the stored leaf hashes and checks
    /// that the latest stored checkpoint is this origin's, signed by `key`, over exactly the
    /// stored entries with the root they give.
    pub fn open(store: Arc<Store>, key: NodeKey, origin: String) -> Result<Self, LogError> {
        check_origin(&origin).map_err(LogError::Origin)?;
        let damaged = |e: StoreError| match e {
            StoreError::Corrupt(m) => LogError::Damaged(m),
            e => LogError::Store(e),
        };
        let tree = LogTree::from_leaves(store.log_leaf_hashes().map_err(damaged)?);
        let head = match store.log_latest_checkpoint().map_err(damaged)? {
            None if tree.size() == 0 => Checkpoint {
                origin: origin.clone(),
                size: 0,
                root: empty_root(),
                timestamp_ms: now_ms(),
            }
            .sign(&key)
            .map_err(LogError::Origin)?,
            None => {
                return Err(LogError::Damaged(format!(
                    "{} entries are stored but no checkpoint",
                    tree.size()
                )))
            }
            Some(row) => check_head(&row, &tree, &key, &origin)?,
        };
        let shared = Arc::new(Mutex::new(Shared { tree, head }));
        let (queue, rx) = mpsc::channel();
        let sequencer = Sequencer {
            store: store.clone(),
            key: key.clone(),
            origin: origin.clone(),
            shared: shared.clone(),
        };
        std::thread::Builder::new()
            .name("haca-log-sequencer".into())
            .spawn(move || sequencer.run(rx))
            .map_err(LogError::Spawn)?;
        Ok(TransparencyLog {
            store,
            origin,
            key: key.node_id(),
            shared,
            queue,
        })
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The key that signs this log's checkpoints.
    pub fn public_key(&self) -> NodeId {
        self.key
    }

    /// Appends `entries` in order and returns the checkpoint committed with them, once they
    /// and it are durable.
    pub async fn append(&self, entries: Vec<LogEntry>) -> Result<SignedCheckpoint, LogError> {
        Ok(self.append_entries(entries).await?.checkpoint)
    }

    /// [`TransparencyLog::append`], also telling where the entries landed.
    pub async fn append_entries(&self, entries: Vec<LogEntry>) -> Result<Appended, LogError> {
        if entries.is_empty() {
            return Err(LogError::EmptyAppend);
        }
        // Canonical JSON and hashing happen here, on the caller's task, so that the sequencer
        // only numbers, signs and writes.
        let rows = entries
            .into_iter()
            .enumerate()
            .map(|(i, e)| {
                let data = e.canonical(i)?;
                let hash = leaf_hash(data.as_bytes());
                Ok((e.kind, data, hash))
            })
            .collect::<Result<Vec<_>, LogError>>()?;
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.queue
            .send(Request { rows, reply })
            .map_err(|_| LogError::Stopped)?;
        answer.await.map_err(|_| LogError::Stopped)?
    }

    /// The latest committed checkpoint.
    pub fn checkpoint(&self) -> SignedCheckpoint {
        lock(&self.shared).head.clone()
    }

    /// The committed size.
    pub fn size(&self) -> u64 {
        lock(&self.shared).head.checkpoint.size
    }

    /// The checkpoint the log signed at exactly `size`, if it signed one there.
    pub fn checkpoint_at(&self, size: u64) -> Result<Option<SignedCheckpoint>, LogError> {
        if size == 0 {
            let head = self.checkpoint();
            if head.checkpoint.size == 0 {
                return Ok(Some(head));
            }
        }
        self.store
            .log_checkpoint(size)?
            .map(|row| {
                SignedCheckpoint::parse(&row.note)
                    .map_err(|e| LogError::Damaged(format!("the checkpoint at size {size}: {e}")))
            })
            .transpose()
    }

    /// Entry `index`, or `None` when the log has not committed it. The stored bytes are
    /// checked against the tree's leaf hash, so damage is an error rather than a wrong entry.
    pub fn entry(&self, index: u64) -> Result<Option<LogEntry>, LogError> {
        let leaf = {
            let s = lock(&self.shared);
            if index >= s.head.checkpoint.size {
                return Ok(None);
            }
            s.tree.leaf(index)
        };
        let row = self.store.log_entry(index)?.ok_or_else(|| {
            LogError::Damaged(format!("committed entry {index} is missing from the store"))
        })?;
        let bad = |why: String| LogError::Damaged(format!("entry {index}: {why}"));
        if Some(leaf_hash(row.data.as_bytes())) != leaf || Some(row.leaf_hash) != leaf {
            return Err(bad("its stored bytes do not hash to the tree's leaf".into()));
        }
        let entry: LogEntry =
            serde_json::from_str(&row.data).map_err(|e| bad(format!("not an entry: {e}")))?;
        if entry.kind != row.kind {
            return Err(bad(format!(
                "kind column {:?} differs from the entry's {:?}",
                row.kind, entry.kind
            )));
        }
        Ok(Some(entry))
    }

    /// The leaf hash of entry `index`.
    pub fn leaf_hash(&self, index: u64) -> Result<Digest, LogError> {
        let s = lock(&self.shared);
        let size = s.head.checkpoint.size;
        if index >= size {
            return Err(LogError::IndexOutOfRange { index, size });
        }
        Ok(s.tree
            .leaf(index)
            .expect("committed leaves are in the tree"))
    }

    /// The tree head at a committed `size`.
    pub fn root_at(&self, size: u64) -> Result<Digest, LogError> {
        let s = Self::committed(&self.shared, size)?;
        Ok(s.tree.root_at(size)?)
    }

    /// The audit path of entry `index` in the tree of the first `size` entries.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Digest>, LogError> {
        let s = Self::committed(&self.shared, size)?;
        Ok(s.tree.inclusion_proof(index, size)?)
    }

    /// The proof that the tree at `first` entries is a prefix of the tree at `second`.
    pub fn consistency_proof(&self, first: u64, second: u64) -> Result<Vec<Digest>, LogError> {
        let s = Self::committed(&self.shared, second)?;
        Ok(s.tree.consistency_proof(first, second)?)
    }

    /// Locks the state after checking that `size` is committed.
    fn committed(shared: &Mutex<Shared>, size: u64) -> Result<MutexGuard<'_, Shared>, LogError> {
        let s = lock(shared);
        let log_size = s.head.checkpoint.size;
        if size > log_size {
            return Err(LogError::SizeBeyondLog { size, log_size });
        }
        Ok(s)
    }
}

/// Checks the latest stored checkpoint against the rebuilt tree.
fn check_head(
    row: &LogCheckpointRow,
    tree: &LogTree,
    key: &NodeKey,
    origin: &str,
) -> Result<SignedCheckpoint, LogError> {
    let size = row.size;
    let signed = SignedCheckpoint::parse(&row.note)
        .map_err(|e| LogError::Damaged(format!("the latest checkpoint (size {size}): {e}")))?;
    let c = &signed.checkpoint;
    if c.origin != origin {
        return Err(LogError::OriginMismatch {
            stored: c.origin.clone(),
            given: origin.to_owned(),
        });
    }
    signed
        .verify(&key.node_id())
        .map_err(|reason| LogError::NotSignedByKey {
            size,
            key: key.node_id(),
            reason,
        })?;
    if (c.size, c.root, c.timestamp_ms) != (row.size, row.root, row.timestamp_ms) {
        return Err(LogError::Damaged(format!(
            "the checkpoint row at size {size} disagrees with its own signed note"
        )));
    }
    if c.size != tree.size() {
        return Err(LogError::Damaged(format!(
            "the latest checkpoint covers {} entries but the store holds {}",
            c.size,
            tree.size()
        )));
    }
    let root = tree.root();
    if root != c.root {
        return Err(LogError::Damaged(format!(
            "the stored leaf hashes give root {root} at size {size}, the checkpoint signed {}",
            c.root
        )));
    }
    Ok(signed)
}

struct Sequencer {
    store: Arc<Store>,
    key: NodeKey,
    origin: String,
    shared: Arc<Mutex<Shared>>,
}

impl Sequencer {
    /// Runs until every [`TransparencyLog`] handle is gone.
    fn run(self, rx: mpsc::Receiver<Request>) {
        while let Ok(first) = rx.recv() {
            let mut count = first.rows.len();
            let mut group = vec![first];
            while count < MAX_GROUP {
                match rx.try_recv() {
                    Ok(r) => {
                        count += r.rows.len();
                        group.push(r);
                    }
                    Err(_) => break,
                }
            }
            self.commit(group, count);
        }
    }

    fn commit(&self, group: Vec<Request>, count: usize) {
        let mut rows = Vec::with_capacity(count);
        let mut replies = Vec::with_capacity(group.len());
        let (start, checkpoint) = {
            let mut s = lock(&self.shared);
            let start = s.tree.size();
            for req in group {
                let first_index = s.tree.size();
                let n = req.rows.len() as u64;
                for (kind, data, hash) in req.rows {
                    let index = s.tree.push(hash);
                    rows.push(LogEntryRow {
                        index,
                        kind,
                        data,
                        leaf_hash: hash,
                    });
                }
                replies.push((first_index, n, req.reply));
            }
            let checkpoint = Checkpoint {
                origin: self.origin.clone(),
                size: s.tree.size(),
                root: s.tree.root(),
                // Never earlier than the last checkpoint, even if the clock steps back.
                timestamp_ms: now_ms().max(s.head.checkpoint.timestamp_ms),
            };
            (start, checkpoint)
        };
        let result = checkpoint
            .sign(&self.key)
            .map_err(|e| e.to_string())
            .and_then(|signed| {
                let row = LogCheckpointRow {
                    size: checkpoint.size,
                    root: checkpoint.root,
                    timestamp_ms: checkpoint.timestamp_ms,
                    note: signed.to_note(),
                };
                self.store
                    .log_append_blocking(rows, row)
                    .map(|()| signed)
                    .map_err(|e| e.to_string())
            });
        let mut s = lock(&self.shared);
        match result {
            Ok(signed) => {
                s.head = signed.clone();
                drop(s);
                for (first_index, count, reply) in replies {
                    let _ = reply.send(Ok(Appended {
                        first_index,
                        count,
                        checkpoint: signed.clone(),
                    }));
                }
            }
            Err(reason) => {
                // Nothing was written: return the tree to the committed state so the next
                // group numbers from the stored end again.
                s.tree.truncate(start);
                drop(s);
                tracing::error!("transparency log: append of {count} entries failed: {reason}");
                for (_, count, reply) in replies {
                    let _ = reply.send(Err(LogError::NotCommitted {
                        count,
                        reason: reason.clone(),
                    }));
                }
            }
        }
    }
}
