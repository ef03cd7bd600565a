//! The Model Hub: artifacts stored by content (blob id = SHA-256 of the bytes, the same bytes
//! stored once) and labels whose history is append-only (label -> blob id, revision, time,
//! uploader), resolvable now, at a revision, or as of a past time.
//!
//! Architecture invariant: the hub never stores bytes it was not able to validate, and a
//! label's past revisions never change (the database refuses updates and deletes).
//!
//! Large uploads never sit in memory whole: [`Hub::stage`] gives a [`BlobWriter`] that
//! writes the bytes to a temporary file in the blob directory and hashes them as they come;
//! [`Hub::upload_file`] checks the file from disk (one check at a time) and renames it into
//! place, or removes it.

use haca_core::{BlobId, Digest};
use haca_store::{write_atomic, Store, StoreError};
use rusqlite::{params, OptionalExtension};
use serde::Serialize;
use sha2::Digest as _;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Validates artifact bytes before they are stored. Returns the format (such as `onnx`).
pub trait ArtifactCheck: Send + Sync {
    fn check(&self, bytes: &[u8]) -> Result<String, String>;

    /// Validates the artifact in the file at `path` (a staged upload). The default reads the
    /// file and calls [`ArtifactCheck::check`]; a checker that can read from disk without
    /// holding the whole file in memory (ONNX through tract memory-maps it) overrides this.
    fn check_file(&self, path: &Path) -> Result<String, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        self.check(&bytes)
    }
}

/// The prefix of staged uploads' temporary files in the blob directory (never a blob's name,
/// which is hex); any left by a process that died are removed when the hub opens.
const STAGING_PREFIX: &str = ".upload-";

/// How many staged uploads are checked at once: a check may hold the artifact's parsed form
/// in memory, so concurrent uploads queue here instead of each holding theirs.
const CONCURRENT_CHECKS: usize = 1;

/// Hub failures; each names what was wrong.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("label {label:?}: {reason}")]
    InvalidLabel { label: String, reason: String },
    #[error("artifact refused: {0}")]
    Refused(String),
    #[error("no model labelled {0:?}")]
    UnknownLabel(String),
    #[error("label {label:?} has no revision {revision} (latest is {latest})")]
    UnknownRevision {
        label: String,
        revision: u64,
        latest: u64,
    },
    #[error("label {label:?} had no revision yet at {at} (first revision at {first})")]
    NotYetAt {
        label: String,
        at: String,
        first: String,
    },
    #[error("no artifact with blob id {0}")]
    UnknownBlob(String),
    #[error("the model registry did not record label {label:?}: {reason}")]
    Registry { label: String, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One revision of a label.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LabelEntry {
    pub label: String,
    pub revision: u64,
    pub blob_id: BlobId,
    pub created_at: u64,
    pub uploader: String,
}

/// A label's latest revision, with how many it has had.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LabelSummary {
    pub label: String,
    pub revision: u64,
    pub blob_id: BlobId,
    pub updated_at: u64,
    pub format: String,
    pub size: u64,
    /// The artifact's Walrus blob id, when the hub computed one (artifacts stored before
    /// haca computed them have none).
    pub walrus_blob_id: Option<String>,
}

/// What a model reference resolved to.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Resolved {
    pub label: Option<String>,
    pub revision: Option<u64>,
    pub blob_id: BlobId,
    pub format: String,
    /// The artifact's Walrus blob id, when known.
    pub walrus_blob_id: Option<String>,
}

/// The Model Hub over the embedded store and a blob directory.
pub struct Hub {
    store: Arc<Store>,
    blob_dir: PathBuf,
    checker: Arc<dyn ArtifactCheck>,
    authority: Option<Arc<dyn LabelAuthority>>,
    checks: Arc<tokio::sync::Semaphore>,
}

/// An upload being received: its bytes go to a temporary file in the blob directory (the
/// same filesystem, so storing it is a rename) and through SHA-256 as they come. Dropped
/// before [`BlobWriter::finish`], the file is removed.
pub struct BlobWriter {
    out: std::io::BufWriter<tempfile::NamedTempFile>,
    hasher: sha2::Sha256,
    size: u64,
}

impl BlobWriter {
    /// Appends `chunk` (blocking file I/O).
    pub fn write(&mut self, chunk: &[u8]) -> Result<(), HubError> {
        self.out.write_all(chunk).map_err(|e| self.io(e))?;
        self.hasher.update(chunk);
        self.size += chunk.len() as u64;
        Ok(())
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The staged bytes, flushed to the file, with their blob id.
    pub fn finish(self) -> Result<StagedBlob, HubError> {
        let BlobWriter { out, hasher, size } = self;
        let file = out.into_inner().map_err(|e| {
            let (source, out) = e.into_parts();
            HubError::Store(StoreError::Io {
                path: out.get_ref().path().to_owned(),
                source,
            })
        })?;
        Ok(StagedBlob {
            file,
            blob_id: BlobId(Digest(hasher.finalize().into())),
            size,
        })
    }

    fn io(&self, source: std::io::Error) -> HubError {
        HubError::Store(StoreError::Io {
            path: self.out.get_ref().path().to_owned(),
            source,
        })
    }
}

/// Bytes staged by a [`BlobWriter`], not yet checked: [`Hub::upload_file`] stores them or,
/// like dropping this, removes the file. Only a writer makes one, so its blob id is the
/// SHA-256 of exactly the bytes in the file.
pub struct StagedBlob {
    file: tempfile::NamedTempFile,
    blob_id: BlobId,
    size: u64,
}

impl StagedBlob {
    pub fn blob_id(&self) -> BlobId {
        self.blob_id
    }
    pub fn size(&self) -> u64 {
        self.size
    }
    /// The temporary file (in the blob directory) holding the bytes.
    pub fn path(&self) -> &Path {
        self.file.path()
    }
}

/// Who numbers label revisions when the hub is not the authority: the chain's model registry.
pub trait LabelAuthority: Send + Sync {
    /// Records that `label` points at `blob_id` (at `at_ms`) and returns the revision the
    /// authority assigned, once it is final.
    fn record(
        &self,
        label: &str,
        blob_id: BlobId,
        at_ms: u64,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<u64, String>> + Send + '_>>;
}

/// Labels are `segment(/segment)*`, segments of `[A-Za-z0-9._-]` starting with a letter or
/// digit, at most 128 characters; `@` is reserved for revisions (`label@3`).
pub fn validate_label(label: &str) -> Result<(), HubError> {
    let bad = |reason: &str| {
        Err(HubError::InvalidLabel {
            label: label.into(),
            reason: reason.into(),
        })
    };
    if label.is_empty() || label.len() > 128 {
        return bad("must be 1 to 128 characters");
    }
    if BlobId::looks_like(label) {
        return bad("must not look like a blob id");
    }
    for seg in label.split('/') {
        let Some(first) = seg.chars().next() else {
            return bad("has an empty segment between slashes");
        };
        if !first.is_ascii_alphanumeric() {
            return bad("each segment must start with a letter or digit");
        }
        if let Some(c) = seg
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return bad(&format!(
                "character {c:?} is not allowed (letters, digits, '.', '_', '-', '/')"
            ));
        }
    }
    Ok(())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Hub {
    pub fn open(
        store: Arc<Store>,
        blob_dir: impl Into<PathBuf>,
        checker: Arc<dyn ArtifactCheck>,
    ) -> Result<Self, HubError> {
        let blob_dir = blob_dir.into();
        std::fs::create_dir_all(&blob_dir).map_err(|source| StoreError::Io {
            path: blob_dir.clone(),
            source,
        })?;
        remove_staged_leftovers(&blob_dir);
        Ok(Hub {
            store,
            blob_dir,
            checker,
            authority: None,
            checks: Arc::new(tokio::sync::Semaphore::new(CONCURRENT_CHECKS)),
        })
    }

    /// Makes `authority` (the chain's model registry) the owner of label history: every label
    /// move is recorded there first, and this hub's history mirrors the revision it assigned.
    pub fn with_authority(mut self, authority: Arc<dyn LabelAuthority>) -> Self {
        self.authority = Some(authority);
        self
    }

    /// Appends a revision the authority already holds, if this hub lacks it (catching up
    /// after a crash between the authority's commit and the mirror's write).
    pub async fn mirror(
        &self,
        label: &str,
        revision: u64,
        blob_id: BlobId,
        at_ms: u64,
    ) -> Result<bool, HubError> {
        self.blob_format(&blob_id)?;
        let label = label.to_owned();
        Ok(self
            .store
            .write(move |tx| {
                let next: i64 = tx.query_row(
                    "SELECT COALESCE(MAX(revision), 0) + 1 FROM labels WHERE label = ?1",
                    [&label],
                    |r| r.get(0),
                )?;
                if (next as u64) > revision {
                    return Ok(false);
                }
                if next as u64 != revision {
                    return Err(StoreError::Invalid(format!(
                        "label {label:?}: the registry's revision {revision} does not follow this hub's {}",
                        next - 1
                    )));
                }
                append_revision(tx, &label, blob_id, "registry", at_ms)?;
                Ok(true)
            })
            .await?)
    }

    /// Records the move with the authority (if any) and returns the revision it assigned.
    async fn register(
        &self,
        label: &str,
        blob_id: BlobId,
        at_ms: u64,
    ) -> Result<Option<u64>, HubError> {
        match &self.authority {
            None => Ok(None),
            Some(a) => a
                .record(label, blob_id, at_ms)
                .await
                .map(Some)
                .map_err(|reason| HubError::Registry {
                    label: label.to_owned(),
                    reason,
                }),
        }
    }

    /// Where a blob's bytes live.
    pub fn blob_path(&self, id: &BlobId) -> PathBuf {
        self.blob_dir.join(id.0.to_hex())
    }

    /// Validates and stores `bytes` as a new revision of `label`.
    pub async fn upload(
        &self,
        label: &str,
        bytes: &[u8],
        uploader: &str,
    ) -> Result<LabelEntry, HubError> {
        validate_label(label)?;
        let format = self.checker.check(bytes).map_err(HubError::Refused)?;
        let blob_id = BlobId::of(bytes);
        let walrus = walrus_id(bytes);
        let path = self.blob_path(&blob_id);
        if !path.exists() {
            // Bytes first, then the database rows: a crash in between leaves an unreferenced
            // blob (harmless), never a label pointing at missing bytes.
            write_atomic(&path, bytes, false)?;
        }
        self.record_blob(label, blob_id, bytes.len() as u64, format, walrus, uploader)
            .await
    }

    /// The rows of stored bytes: the blob (once), then a new revision of `label` naming it.
    async fn record_blob(
        &self,
        label: &str,
        blob_id: BlobId,
        size: u64,
        format: String,
        walrus: Option<String>,
        uploader: &str,
    ) -> Result<LabelEntry, HubError> {
        let t = now_ms();
        self.store
            .write(move |tx| {
                tx.execute(
                    "INSERT OR IGNORE INTO blobs (blob_id, size, format, created_at, walrus_blob_id) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![blob_id.to_string(), size as i64, format, t as i64, walrus],
                )?;
                // A blob stored before Walrus ids were computed gets its id now.
                tx.execute(
                    "UPDATE blobs SET walrus_blob_id = ?2 WHERE blob_id = ?1 AND walrus_blob_id IS NULL",
                    params![blob_id.to_string(), walrus],
                )?;
                Ok(())
            })
            .await?;
        let entry = self.append(label, blob_id, uploader, t).await?;
        tracing::info!(label = %entry.label, revision = entry.revision, blob = %entry.blob_id, size, "hub: stored artifact");
        Ok(entry)
    }

    /// Starts receiving an upload: a [`BlobWriter`] over a new temporary file in the blob
    /// directory.
    pub fn stage(&self) -> Result<BlobWriter, HubError> {
        let file = tempfile::Builder::new()
            .prefix(STAGING_PREFIX)
            .tempfile_in(&self.blob_dir)
            .map_err(|source| StoreError::Io {
                path: self.blob_dir.clone(),
                source,
            })?;
        Ok(BlobWriter {
            out: std::io::BufWriter::with_capacity(256 << 10, file),
            hasher: sha2::Sha256::new(),
            size: 0,
        })
    }

    /// Validates the staged bytes from disk and stores them as a new revision of `label`:
    /// the same rules as [`Hub::upload`] (the check first, then the bytes, then the rows),
    /// with the bytes renamed into place instead of written from memory. Checks run one at a
    /// time, on the blocking pool; a refused upload leaves no file behind.
    pub async fn upload_file(
        &self,
        label: &str,
        staged: StagedBlob,
        uploader: &str,
    ) -> Result<LabelEntry, HubError> {
        validate_label(label)?;
        let (blob_id, size) = (staged.blob_id, staged.size);
        let path = self.blob_path(&blob_id);
        let checker = self.checker.clone();
        let (format, walrus) = {
            let _turn = self
                .checks
                .clone()
                .acquire_owned()
                .await
                .expect("the check semaphore is never closed");
            tokio::task::spawn_blocking(move || -> Result<(String, Option<String>), HubError> {
                let format = checker
                    .check_file(staged.path())
                    .map_err(HubError::Refused)?;
                // The encoding holds the blob and half again in memory: a large upload's id
                // is computed off this process (the binary's `server::walrus`).
                let walrus = (size <= WALRUS_INLINE_MAX)
                    .then(|| std::fs::read(staged.path()).ok())
                    .flatten()
                    .and_then(|bytes| walrus_id(&bytes));
                if !path.exists() {
                    // Bytes first, then the database rows, as in `upload`.
                    let io = |source| {
                        HubError::Store(StoreError::Io {
                            path: path.clone(),
                            source,
                        })
                    };
                    staged.file.as_file().sync_all().map_err(io)?;
                    set_blob_permissions(staged.file.as_file()).map_err(io)?;
                    staged.file.persist(&path).map_err(|e| io(e.error))?;
                }
                // Otherwise the same bytes are already stored: the staged file is dropped.
                Ok((format, walrus))
            })
            .await
            .map_err(|e| HubError::Refused(format!("the artifact check stopped: {e}")))??
        };
        self.record_blob(label, blob_id, size, format, walrus, uploader)
            .await
    }

    /// Points `label` at an artifact already in the hub, as a new revision.
    pub async fn move_label(
        &self,
        label: &str,
        blob_id: BlobId,
        uploader: &str,
    ) -> Result<LabelEntry, HubError> {
        validate_label(label)?;
        self.blob_format(&blob_id)?;
        self.append(label, blob_id, uploader, now_ms()).await
    }

    /// A new revision of `label`: numbered by the authority when there is one, which this
    /// hub's history then mirrors.
    async fn append(
        &self,
        label: &str,
        blob_id: BlobId,
        uploader: &str,
        t: u64,
    ) -> Result<LabelEntry, HubError> {
        let assigned = self.register(label, blob_id, t).await?;
        let (label, uploader) = (label.to_owned(), uploader.to_owned());
        Ok(self
            .store
            .write(move |tx| {
                let entry = append_revision(tx, &label, blob_id, &uploader, t)?;
                match assigned {
                    Some(r) if r != entry.revision => Err(StoreError::Invalid(format!(
                        "label {label:?}: the registry assigned revision {r}, this hub's history is at {}; restart to resynchronize",
                        entry.revision - 1
                    ))),
                    _ => Ok(entry),
                }
            })
            .await?)
    }

    fn blob_format(&self, blob_id: &BlobId) -> Result<(String, u64), HubError> {
        self.blob_row(blob_id).map(|(f, s, _)| (f, s))
    }

    /// A stored blob's format, size and Walrus blob id.
    fn blob_row(&self, blob_id: &BlobId) -> Result<(String, u64, Option<String>), HubError> {
        self.store
            .read(|c| {
                Ok(c.query_row(
                    "SELECT format, size, walrus_blob_id FROM blobs WHERE blob_id = ?1",
                    [blob_id.to_string()],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, i64>(1)? as u64,
                            r.get::<_, Option<String>>(2)?,
                        ))
                    },
                )
                .optional()?)
            })?
            .ok_or_else(|| HubError::UnknownBlob(blob_id.to_string()))
    }

    /// Resolves `label`, `label@REVISION` or `sha256:<hex>`, as of `at_ms` when given.
    pub fn resolve(&self, reference: &str, at_ms: Option<u64>) -> Result<Resolved, HubError> {
        if BlobId::looks_like(reference) {
            let blob_id: BlobId = reference
                .parse()
                .map_err(|e: haca_core::ids::IdParseError| HubError::UnknownBlob(e.to_string()))?;
            let (format, _, walrus_blob_id) = self.blob_row(&blob_id)?;
            return Ok(Resolved {
                label: None,
                revision: None,
                blob_id,
                format,
                walrus_blob_id,
            });
        }
        let (label, revision) = match reference.rsplit_once('@') {
            Some((l, r)) => {
                let rev = r.parse::<u64>().map_err(|_| HubError::InvalidLabel {
                    label: reference.into(),
                    reason: format!("revision {r:?} after '@' is not a number"),
                })?;
                (l, Some(rev))
            }
            None => (reference, None),
        };
        validate_label(label)?;
        let history = self.history(label)?;
        let latest = history
            .last()
            .ok_or_else(|| HubError::UnknownLabel(label.into()))?;
        let entry = match (revision, at_ms) {
            (Some(rev), _) => {
                history
                    .iter()
                    .find(|e| e.revision == rev)
                    .ok_or(HubError::UnknownRevision {
                        label: label.into(),
                        revision: rev,
                        latest: latest.revision,
                    })?
            }
            (None, Some(at)) => history
                .iter()
                .rev()
                .find(|e| e.created_at <= at)
                .ok_or_else(|| HubError::NotYetAt {
                    label: label.into(),
                    at: haca_core::format_unix_ms(at),
                    first: haca_core::format_unix_ms(history[0].created_at),
                })?,
            (None, None) => latest,
        };
        let (format, _, walrus_blob_id) = self.blob_row(&entry.blob_id)?;
        Ok(Resolved {
            label: Some(label.into()),
            revision: Some(entry.revision),
            blob_id: entry.blob_id,
            format,
            walrus_blob_id,
        })
    }

    /// Every revision of `label`, oldest first; empty when the label is unknown.
    pub fn history(&self, label: &str) -> Result<Vec<LabelEntry>, HubError> {
        let rows = self.store.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT label, revision, blob_id, created_at, uploader FROM labels WHERE label = ?1 ORDER BY revision",
            )?;
            let rows = st.query_map([label], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?, r.get::<_, i64>(3)?, r.get::<_, String>(4)?))
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })?;
        rows.into_iter()
            .map(|(label, rev, blob, t, uploader)| {
                let blob_id = blob
                    .parse()
                    .map_err(|e| StoreError::Corrupt(format!("labels.blob_id {blob:?}: {e}")))?;
                Ok(LabelEntry {
                    label,
                    revision: rev as u64,
                    blob_id,
                    created_at: t as u64,
                    uploader,
                })
            })
            .collect()
    }

    /// Every label at its latest revision.
    pub fn list(&self) -> Result<Vec<LabelSummary>, HubError> {
        let rows = self.store.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT l.label, l.revision, l.blob_id, l.created_at, b.format, b.size, b.walrus_blob_id FROM labels l
                 JOIN blobs b ON b.blob_id = l.blob_id
                 WHERE l.revision = (SELECT MAX(revision) FROM labels WHERE label = l.label)
                 ORDER BY l.label",
            )?;
            let rows = st.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, Option<String>>(6)?,
                ))
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })?;
        rows.into_iter()
            .map(|(label, rev, blob, t, format, size, walrus_blob_id)| {
                let blob_id = blob
                    .parse()
                    .map_err(|e| StoreError::Corrupt(format!("labels.blob_id {blob:?}: {e}")))?;
                Ok(LabelSummary {
                    label,
                    revision: rev as u64,
                    blob_id,
                    updated_at: t as u64,
                    format,
                    size: size as u64,
                    walrus_blob_id,
                })
            })
            .collect()
    }

    /// The artifact's bytes, checked against its blob id on the way out.
    pub fn read_blob(&self, blob_id: &BlobId) -> Result<Vec<u8>, HubError> {
        self.blob_format(blob_id)?;
        let path = self.blob_path(blob_id);
        let bytes = std::fs::read(&path).map_err(|source| StoreError::Io {
            path: path.clone(),
            source,
        })?;
        if BlobId::of(&bytes) != *blob_id {
            return Err(StoreError::Corrupt(format!(
                "{} does not hash to {blob_id}",
                path.display()
            ))
            .into());
        }
        Ok(bytes)
    }

    /// Records the Walrus blob id of a stored artifact that has none (computed elsewhere, as
    /// for a large upload); an id already recorded stays.
    pub async fn set_walrus_id(&self, blob_id: BlobId, walrus: String) -> Result<(), HubError> {
        self.store
            .write(move |tx| {
                tx.execute(
                    "UPDATE blobs SET walrus_blob_id = ?2 WHERE blob_id = ?1 AND walrus_blob_id IS NULL",
                    params![blob_id.to_string(), walrus],
                )?;
                Ok(())
            })
            .await?;
        Ok(())
    }

    /// The Walrus blob id of a stored artifact, when one is recorded.
    pub fn walrus_id_of(&self, blob_id: &BlobId) -> Result<Option<String>, HubError> {
        Ok(self.blob_row(blob_id)?.2)
    }

    /// The artifact whose Walrus blob id is `walrus`, when the hub holds one.
    pub fn blob_by_walrus(&self, walrus: &str) -> Result<Option<BlobId>, HubError> {
        let found = self.store.read(|c| {
            Ok(c.query_row(
                "SELECT blob_id FROM blobs WHERE walrus_blob_id = ?1",
                [walrus],
                |r| r.get::<_, String>(0),
            )
            .optional()?)
        })?;
        found
            .map(|b| {
                b.parse()
                    .map_err(|e| StoreError::Corrupt(format!("blobs.blob_id {b:?}: {e}")).into())
            })
            .transpose()
    }

    pub fn blob_dir(&self) -> &Path {
        &self.blob_dir
    }
}

/// The largest artifact whose Walrus blob id the hub computes at upload, in process: the
/// encoding holds the blob and about half again in memory, and uploads never sit in memory
/// whole. Larger ones get theirs through [`Hub::set_walrus_id`].
pub const WALRUS_INLINE_MAX: u64 = 4 << 20;

/// The Walrus blob id of `bytes` at Walrus mainnet's shard count; `None` (logged) when the
/// encoding refuses them.
fn walrus_id(bytes: &[u8]) -> Option<String> {
    match haca_walrus::mainnet_blob_id(bytes) {
        Ok(id) => Some(id),
        Err(e) => {
            tracing::warn!(
                "hub: no Walrus blob id for a {}-byte artifact: {e}",
                bytes.len()
            );
            None
        }
    }
}

/// Removes staged uploads a previous process left behind (it died while receiving or
/// checking them); nothing refers to them.
fn remove_staged_leftovers(blob_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(blob_dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with(STAGING_PREFIX)
        {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => {
                    tracing::info!(path = %entry.path().display(), "hub: removed an unfinished upload")
                }
                Err(e) => {
                    tracing::warn!(path = %entry.path().display(), "hub: an unfinished upload could not be removed: {e}")
                }
            }
        }
    }
}

/// A stored blob is readable like one `write_atomic` wrote (a temporary file is private).
fn set_blob_permissions(file: &std::fs::File) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o644))
    }
    #[cfg(not(unix))]
    {
        let _ = file;
        Ok(())
    }
}

fn append_revision(
    tx: &rusqlite::Transaction<'_>,
    label: &str,
    blob_id: BlobId,
    uploader: &str,
    t: u64,
) -> Result<LabelEntry, StoreError> {
    let next: i64 = tx.query_row(
        "SELECT COALESCE(MAX(revision), 0) + 1 FROM labels WHERE label = ?1",
        [label],
        |r| r.get(0),
    )?;
    tx.execute(
        "INSERT INTO labels (label, revision, blob_id, created_at, uploader) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![label, next, blob_id.to_string(), t as i64, uploader],
    )?;
    Ok(LabelEntry {
        label: label.into(),
        revision: next as u64,
        blob_id,
        created_at: t,
        uploader: uploader.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Accepts bytes starting with "ok" so that hub logic is tested apart from ONNX parsing
    /// (the ONNX checker itself is tested in haca-exec with real model files).
    struct PrefixCheck;
    impl ArtifactCheck for PrefixCheck {
        fn check(&self, bytes: &[u8]) -> Result<String, String> {
            if bytes.starts_with(b"ok") {
                Ok("test".into())
            } else {
                Err("does not start with ok".into())
            }
        }
    }

    fn hub(dir: &Path) -> Hub {
        let store = Arc::new(Store::open(dir.join("haca.db")).unwrap());
        Hub::open(store, dir.join("blobs"), Arc::new(PrefixCheck)).unwrap()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn same_bytes_are_stored_once_and_history_is_append_only() {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub(dir.path());
        let a = hub.upload("team/m", b"ok-one", "alice").await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(5)).await; // distinct timestamps
        let b = hub.upload("team/m", b"ok-two", "bob").await.unwrap();
        let c = hub.upload("other/m", b"ok-one", "carol").await.unwrap();
        assert_eq!((a.revision, b.revision, c.revision), (1, 2, 1));
        assert_eq!(a.blob_id, c.blob_id);
        assert_eq!(std::fs::read_dir(hub.blob_dir()).unwrap().count(), 2);
        assert_eq!(hub.resolve("team/m", None).unwrap().blob_id, b.blob_id);
        assert_eq!(hub.resolve("team/m@1", None).unwrap().blob_id, a.blob_id);
        assert_eq!(
            hub.resolve("team/m", Some(a.created_at)).unwrap().revision,
            Some(1)
        );
        assert_eq!(
            hub.resolve("team/m", Some(b.created_at)).unwrap().revision,
            Some(2)
        );
        assert!(matches!(
            hub.resolve("team/m@9", None),
            Err(HubError::UnknownRevision { latest: 2, .. })
        ));
        assert!(matches!(
            hub.resolve("team/m", Some(1)),
            Err(HubError::NotYetAt { .. })
        ));
        assert!(matches!(
            hub.resolve("nope", None),
            Err(HubError::UnknownLabel(_))
        ));
        assert_eq!(
            hub.resolve(&a.blob_id.to_string(), None).unwrap().label,
            None
        );
        let err = hub
            .store
            .write(|tx| Ok(tx.execute("UPDATE labels SET blob_id = 'x'", [])?))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("append-only"), "{err}");
        assert_eq!(hub.history("team/m").unwrap().len(), 2);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn refused_bytes_leave_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub(dir.path());
        let e = hub.upload("m", b"bad", "x").await.unwrap_err();
        assert!(e.to_string().contains("does not start with ok"));
        assert_eq!(std::fs::read_dir(hub.blob_dir()).unwrap().count(), 0);
        assert!(hub.list().unwrap().is_empty());
        assert!(matches!(
            hub.upload("Bad Label", b"ok", "x").await,
            Err(HubError::InvalidLabel { .. })
        ));
    }

    fn staged(hub: &Hub, chunks: &[&[u8]]) -> StagedBlob {
        let mut w = hub.stage().unwrap();
        for c in chunks {
            w.write(c).unwrap();
        }
        w.finish().unwrap()
    }

    fn files_in(dir: &Path) -> usize {
        std::fs::read_dir(dir).unwrap().count()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_streamed_upload_is_stored_under_the_hash_of_its_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub(dir.path());
        let s = staged(&hub, &[b"ok-", b"", b"stre", b"amed"]);
        assert_eq!(s.blob_id(), BlobId::of(b"ok-streamed"));
        assert_eq!(s.size(), 11);
        assert!(s.path().starts_with(hub.blob_dir()), "same filesystem");
        let temp = s.path().to_owned();
        let a = hub.upload_file("team/m", s, "alice").await.unwrap();
        assert_eq!((a.revision, a.blob_id), (1, BlobId::of(b"ok-streamed")));
        assert!(!temp.exists(), "renamed into place");
        assert_eq!(hub.read_blob(&a.blob_id).unwrap(), b"ok-streamed");
        assert_eq!(files_in(hub.blob_dir()), 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(hub.blob_path(&a.blob_id))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o644);
        }
        let listed = &hub.list().unwrap()[0];
        assert_eq!((listed.size, listed.format.as_str()), (11, "test"));

        // The same bytes again, streamed or not: stored once, a new revision or label.
        let b = hub
            .upload_file("team/m", staged(&hub, &[b"ok-streamed"]), "bob")
            .await
            .unwrap();
        assert_eq!((b.revision, b.blob_id), (2, a.blob_id));
        let c = hub
            .upload("other/m", b"ok-streamed", "carol")
            .await
            .unwrap();
        assert_eq!(c.blob_id, a.blob_id);
        assert_eq!(files_in(hub.blob_dir()), 1);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_refused_or_abandoned_upload_leaves_no_file_and_no_row() {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub(dir.path());
        let e = hub
            .upload_file("m", staged(&hub, &[b"ba", b"d"]), "x")
            .await
            .unwrap_err();
        assert!(
            matches!(e, HubError::Refused(ref m) if m.contains("does not start with ok")),
            "{e}"
        );
        assert_eq!(files_in(hub.blob_dir()), 0);
        let e = hub
            .upload_file("Bad Label", staged(&hub, &[b"ok"]), "x")
            .await
            .unwrap_err();
        assert!(matches!(e, HubError::InvalidLabel { .. }), "{e}");
        assert_eq!(files_in(hub.blob_dir()), 0);
        // Abandoned mid-stream (the client went away) or after staging.
        let mut w = hub.stage().unwrap();
        w.write(b"ok-partial").unwrap();
        assert_eq!(files_in(hub.blob_dir()), 1);
        drop(w);
        drop(staged(&hub, &[b"ok-whole"]));
        assert_eq!(files_in(hub.blob_dir()), 0);
        assert!(hub.list().unwrap().is_empty());
        assert!(hub.history("m").unwrap().is_empty());
    }

    #[test]
    fn uploads_a_dead_process_left_unfinished_are_removed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = dir.path().join("blobs");
        std::fs::create_dir_all(&blobs).unwrap();
        std::fs::write(blobs.join(format!("{STAGING_PREFIX}abc123")), b"half").unwrap();
        std::fs::write(blobs.join("00ff"), b"not ours to judge").unwrap();
        let hub = hub(dir.path());
        let left: Vec<_> = std::fs::read_dir(hub.blob_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("00ff")]);
    }

    /// Records how many checks run at once.
    #[derive(Default)]
    struct SlowCheck {
        running: std::sync::atomic::AtomicUsize,
        most: std::sync::atomic::AtomicUsize,
    }
    impl ArtifactCheck for SlowCheck {
        fn check(&self, _: &[u8]) -> Result<String, String> {
            use std::sync::atomic::Ordering::SeqCst;
            let now = self.running.fetch_add(1, SeqCst) + 1;
            self.most.fetch_max(now, SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(30));
            self.running.fetch_sub(1, SeqCst);
            Ok("test".into())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn staged_uploads_are_checked_one_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let check = Arc::new(SlowCheck::default());
        let store = Arc::new(Store::open(dir.path().join("haca.db")).unwrap());
        let hub = Arc::new(Hub::open(store, dir.path().join("blobs"), check.clone()).unwrap());
        let uploads: Vec<_> = (0..4u8)
            .map(|i| {
                let hub = hub.clone();
                tokio::spawn(async move {
                    let s = staged(&hub, &[b"ok", &[i]]);
                    hub.upload_file(&format!("m{i}"), s, "x").await
                })
            })
            .collect();
        for u in uploads {
            u.await.unwrap().unwrap();
        }
        assert_eq!(check.most.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(files_in(hub.blob_dir()), 4);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_label_moves_to_an_existing_blob_only() {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub(dir.path());
        let a = hub.upload("m", b"ok-a", "x").await.unwrap();
        hub.upload("m", b"ok-b", "x").await.unwrap();
        let moved = hub.move_label("m", a.blob_id, "x").await.unwrap();
        assert_eq!(moved.revision, 3);
        assert_eq!(hub.resolve("m", None).unwrap().blob_id, a.blob_id);
        assert!(matches!(
            hub.move_label("m", BlobId::of(b"none"), "x").await,
            Err(HubError::UnknownBlob(_))
        ));
        assert_eq!(hub.read_blob(&a.blob_id).unwrap(), b"ok-a");
    }
}
