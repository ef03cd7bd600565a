//! MemSync: each user's memory rows, sealed at rest under a key derived from a credential the
//! user presents (an API key, or an x402 payer's deterministic signature), opened into a
//! working set (rows, embeddings, an approximate index) only while that user is served.
//!
//! The store holds ciphertext only ([`haca_store::MemoryRecord`]); the node never stores the
//! credential, so nothing at rest opens without the user. A working set stays in memory for
//! [`IDLE_EVICT`] after its user's last request, for fast retrieval, and is then dropped.
//!
//! Rows keep their provenance and never vanish silently: a contradicting fact supersedes the
//! old row (kept, linked), a repeated fact re-validates its row, and a delete leaves a tombstone
//! and a `memory.delete` entry in the node's transparency log.

use crate::{now_ms, GatewayError};
use haca_chain::log::{LogEntry, TransparencyLog};
use haca_core::receipt::MemoryEvidence;
use haca_core::{Digest, NodeKey};
use haca_mem::extract::Extracted;
use haca_mem::index::{dot, AnnIndex};
use haca_mem::{
    Bundle, Category, MemError, MemoryRow, MemorySet, RetrievalPolicy, RowState, SealedRow,
    StalePolicy, UsedRow, UserKey,
};
use haca_store::{MemoryRecord, Store};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Rows not re-validated within this are stale (30 days), unless the node says otherwise.
pub const DEFAULT_MAX_AGE_S: u64 = 30 * 86_400;
/// A new fact this close (cosine) to a live row without a subject is that row again: the row
/// is re-validated instead of stored twice.
pub const SAME_FACT_SIMILARITY: f32 = 0.92;
/// A working set unused this long is dropped from memory.
pub const IDLE_EVICT: Duration = Duration::from_secs(600);
/// The embedding width of a user with no rows yet (all-MiniLM-L6-v2's).
const DEFAULT_DIM: usize = 384;
/// Most memories one request may add.
pub const MAX_ADD: usize = 256;
/// Longest memory text, in bytes.
pub const MAX_MEMORY_BYTES: usize = 4_096;

/// Sentence embeddings for retrieval (all-MiniLM-L6-v2 in a node; anything in tests).
pub trait Embed: Send + Sync {
    /// One L2-normalised vector per text.
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, String>;
    /// The model's name and version, recorded in memory boxes.
    fn model_id(&self) -> String;
}

impl Embed for haca_exec::embed::Embedder {
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, String> {
        haca_exec::embed::Embedder::embed(self, texts).map_err(|e| e.to_string())
    }
    fn model_id(&self) -> String {
        haca_exec::embed::Embedder::model_id(self).to_owned()
    }
}

/// all-MiniLM-L6-v2 from a model directory, loaded on first use (on the blocking pool that
/// embeds): a node that never serves memory never pays the load.
pub struct LazyEmbedder {
    dir: std::path::PathBuf,
    loaded: std::sync::OnceLock<Result<haca_exec::embed::Embedder, String>>,
}

impl LazyEmbedder {
    pub fn new(dir: std::path::PathBuf) -> LazyEmbedder {
        LazyEmbedder {
            dir,
            loaded: std::sync::OnceLock::new(),
        }
    }

    fn get(&self) -> Result<&haca_exec::embed::Embedder, String> {
        self.loaded
            .get_or_init(|| {
                let t = Instant::now();
                let e = haca_exec::embed::Embedder::load(&self.dir).map_err(|e| e.to_string());
                if e.is_ok() {
                    tracing::info!(
                        "memory: embedding model {} loaded in {} ms",
                        self.dir.display(),
                        t.elapsed().as_millis()
                    );
                }
                e
            })
            .as_ref()
            .map_err(|e| format!("the embedding model could not be loaded: {e}"))
    }
}

impl Embed for LazyEmbedder {
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, String> {
        Embed::embed(self.get()?, texts)
    }
    fn model_id(&self) -> String {
        match self.get() {
            Ok(e) => Embed::model_id(e),
            Err(_) => haca_exec::embed::EMBED_MODEL.to_owned(),
        }
    }
}

/// A MemSync user, as a request's credential proves it: the owner of the rows (the address
/// that pays for the user's runs, lower case) and the key the credential derives.
#[derive(Clone)]
pub struct MemUser {
    pub owner: String,
    key: UserKey,
}

impl MemUser {
    /// The user `owner` holding `credential` (the API key itself, or the payer's signature of
    /// [`memory_key_message`]).
    pub fn new(owner: &str, credential: &[u8]) -> MemUser {
        MemUser {
            owner: owner.to_ascii_lowercase(),
            key: UserKey::derive(credential),
        }
    }

    fn fingerprint(&self) -> Digest {
        haca_core::sha256(format!("haca.mem.fingerprint:{}", self.key.to_hex()).as_bytes())
    }
}

/// What an x402 payer signs (EIP-191) to use its memory: the signature is deterministic
/// (RFC 6979), so the same wallet derives the same key on every node.
pub fn memory_key_message(address: &str) -> String {
    format!(
        "haca memsync: the memory key of {}",
        address.to_ascii_lowercase()
    )
}

/// How retrieval treats rows not re-validated lately, and who extracts memories from a
/// conversation.
#[derive(Clone, Debug)]
pub struct MemoryConfig {
    pub max_age_s: u64,
    pub stale: StalePolicy,
    /// The chat model (`provider/model`, e.g. `local/gemma-3-270m` or an upstream's) that
    /// extracts memories from conversations; `None`: the rule extractor.
    pub extractor: Option<String>,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            max_age_s: DEFAULT_MAX_AGE_S,
            stale: StalePolicy::Exclude,
            extractor: None,
        }
    }
}

/// A memory to add: its text, type, categories and (optionally) the subject that makes a later
/// fact about the same thing supersede it.
pub type NewMemory = Extracted;

/// What an add did.
#[derive(Serialize, Debug, Default, Clone, PartialEq)]
pub struct AddReport {
    /// New rows' ids.
    pub created: Vec<String>,
    /// Rows a repeated fact re-validated.
    pub revalidated: Vec<String>,
    /// `(old, new)`: rows a contradicting fact superseded, and the row that did.
    pub superseded: Vec<(String, String)>,
    /// Categories of the added and re-validated facts, each once.
    pub categories: Vec<Category>,
}

/// One search result.
#[derive(Clone, Debug)]
pub struct Hit {
    pub row: MemoryRow,
    pub similarity: f32,
    pub stale: bool,
    pub sealed_sha256: Digest,
}

/// MemSync's scopes: the agent and the thread a memory came from. A search naming one finds
/// only rows of that scope.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    pub agent_id: Option<String>,
    pub thread_id: Option<String>,
}

impl Scope {
    fn admits(&self, row: &MemoryRow) -> bool {
        let fits = |want: &Option<String>, have: &Option<String>| {
            want.as_ref().is_none_or(|w| have.as_ref() == Some(w))
        };
        fits(&self.agent_id, &row.agent_id) && fits(&self.thread_id, &row.thread_id)
    }
}

/// A search's filters.
#[derive(Clone, Debug, Default)]
pub struct SearchQuery {
    pub query: String,
    pub limit: usize,
    pub categories: Vec<Category>,
    pub scope: Scope,
}

/// Each user's rows, sealed in the store, opened on demand.
pub struct MemSync {
    store: Arc<Store>,
    log: Arc<TransparencyLog>,
    node: NodeKey,
    embedder: Arc<dyn Embed>,
    pub config: MemoryConfig,
    open: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<Working>>>>,
}

/// A user's opened rows, their embeddings and the index over the live ones.
struct Working {
    fingerprint: Digest,
    set: MemorySet,
    /// SHA-256 of each row's sealed JSON as stored: the memory box names it.
    sealed_sha256: HashMap<String, Digest>,
    vectors: HashMap<String, Vec<f32>>,
    index: RowIndex,
    last_used: Instant,
    /// A write to the store failed after the set changed in memory: reopen before use.
    broken: bool,
}

/// The approximate index over live rows, with the map between its slots and row ids.
struct RowIndex {
    ann: AnnIndex,
    ids: Vec<String>,
    slot_of: HashMap<String, u32>,
}

impl RowIndex {
    fn new(dim: usize) -> RowIndex {
        RowIndex {
            ann: AnnIndex::new(dim),
            ids: Vec::new(),
            slot_of: HashMap::new(),
        }
    }

    fn insert(&mut self, id: &str, v: &[f32]) -> Result<(), GatewayError> {
        let slot = self.ids.len() as u32;
        self.ann
            .insert(slot, v)
            .map_err(|e| GatewayError::internal(format!("memory index: {e}")))?;
        self.ids.push(id.to_owned());
        self.slot_of.insert(id.to_owned(), slot);
        Ok(())
    }

    fn remove(&mut self, id: &str) {
        if let Some(slot) = self.slot_of.remove(id) {
            self.ann.remove(slot);
        }
    }

    fn search(&self, q: &[f32], k: usize) -> Result<Vec<(String, f32)>, GatewayError> {
        Ok(self
            .ann
            .search(q, k)
            .map_err(|e| GatewayError::internal(format!("memory index: {e}")))?
            .into_iter()
            .map(|(slot, sim)| (self.ids[slot as usize].clone(), sim))
            .collect())
    }
}

fn mem_error(e: MemError) -> GatewayError {
    match e {
        MemError::UnknownId { id } => {
            GatewayError::not_found("memory_not_found", format!("memory {id}: no such memory"))
        }
        MemError::NotLive { id, state } => GatewayError::invalid(
            "memory_not_live",
            format!("memory {id} is {state}: only a live memory can change"),
        ),
        MemError::Open { .. } => GatewayError::unauthorized(
            "memory_key_mismatch",
            format!("{e}: the credential presented is not the one these rows were sealed under"),
        ),
        MemError::Bundle { field, reason } => {
            GatewayError::invalid("invalid_bundle", format!("bundle: {field}: {reason}"))
                .param(field)
        }
        other => GatewayError::invalid("invalid_memory", other.to_string()),
    }
}

fn new_row_id() -> String {
    format!("mem_{}", haca_core::random_hex(12))
}

fn vector_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn vector_of(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn vector_label(owner: &str, id: &str) -> String {
    format!("vec:{owner}:{id}")
}

fn bio_label(owner: &str) -> String {
    format!("bio:{owner}")
}

/// Checks a memory to add: text present and not too long.
pub fn check_new_memory(m: &NewMemory, field: &str) -> Result<(), GatewayError> {
    if m.memory.trim().is_empty() {
        return Err(
            GatewayError::invalid("invalid_field", format!("{field}.memory: is empty"))
                .param(format!("{field}.memory")),
        );
    }
    if m.memory.len() > MAX_MEMORY_BYTES {
        return Err(GatewayError::invalid(
            "invalid_field",
            format!("{field}.memory: longer than {MAX_MEMORY_BYTES} bytes"),
        )
        .param(format!("{field}.memory")));
    }
    Ok(())
}

impl MemSync {
    pub fn new(
        store: Arc<Store>,
        log: Arc<TransparencyLog>,
        node: NodeKey,
        embedder: Arc<dyn Embed>,
        config: MemoryConfig,
    ) -> MemSync {
        MemSync {
            store,
            log,
            node,
            embedder,
            config,
            open: std::sync::Mutex::new(HashMap::new()),
        }
    }

    pub fn embedder_id(&self) -> String {
        self.embedder.model_id()
    }

    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, GatewayError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let e = self.embedder.clone();
        tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            e.embed(&refs)
        })
        .await
        .map_err(|e| GatewayError::internal(format!("embedding task: {e}")))?
        .map_err(|e| GatewayError::unavailable("embedding_failed", e))
    }

    /// The user's working set, opened from the store on first use (on the blocking pool: a
    /// large set takes a while to decrypt and index).
    async fn working(
        &self,
        user: &MemUser,
    ) -> Result<Arc<tokio::sync::Mutex<Working>>, GatewayError> {
        let fingerprint = user.fingerprint();
        let cached = {
            let mut open = self.open.lock().expect("memory map lock");
            open.retain(|_, w| {
                w.try_lock()
                    .map(|w| w.last_used.elapsed() < IDLE_EVICT)
                    .unwrap_or(true)
            });
            open.get(&user.owner).cloned()
        };
        if let Some(found) = cached {
            let (same, broken) = {
                let mut w = found.lock().await;
                w.last_used = Instant::now();
                (w.fingerprint == fingerprint, w.broken)
            };
            if broken {
                // A write failed half-way: what is in memory may differ from the store.
                self.forget(&user.owner);
                return Box::pin(self.working(user)).await;
            }
            if same {
                return Ok(found);
            }
            return Err(GatewayError::unauthorized(
                "memory_key_mismatch",
                format!(
                    "the memory of {} is sealed under another credential",
                    user.owner
                ),
            ));
        }
        let store = self.store.clone();
        let owner = user.owner.clone();
        let key = user.key.clone();
        let working =
            tokio::task::spawn_blocking(move || open_working(&store, &owner, &key, fingerprint))
                .await
                .map_err(|e| GatewayError::internal(format!("opening memory: {e}")))??;
        let w = Arc::new(tokio::sync::Mutex::new(working));
        let kept = {
            let mut open = self.open.lock().expect("memory map lock");
            open.entry(user.owner.clone()).or_insert(w).clone()
        };
        // Another request may have opened the set first, with its own credential.
        if kept.lock().await.fingerprint != fingerprint {
            return Err(GatewayError::unauthorized(
                "memory_key_mismatch",
                format!(
                    "the memory of {} is sealed under another credential",
                    user.owner
                ),
            ));
        }
        Ok(kept)
    }

    /// Drops a user's working set, so the next request reopens it from the store (after a
    /// write that failed half-way in memory).
    fn forget(&self, owner: &str) {
        self.open.lock().expect("memory map lock").remove(owner);
    }

    /// Seals rows `ids` of `w` and writes them in one transaction.
    async fn persist(
        &self,
        user: &MemUser,
        w: &mut Working,
        ids: &[String],
    ) -> Result<(), GatewayError> {
        let mut records = Vec::with_capacity(ids.len());
        for id in ids {
            let row = w.set.get(id).expect("a changed row is in its set");
            let sealed = SealedRow::seal(&user.key, row).map_err(mem_error)?;
            let json = serde_json::to_string(&sealed)
                .map_err(|e| GatewayError::internal(format!("sealed row {id}: {e}")))?;
            w.sealed_sha256
                .insert(id.clone(), haca_core::sha256(json.as_bytes()));
            let vector = match (&row.state, w.vectors.get(id)) {
                (RowState::Deleted { .. }, _) | (_, None) => None,
                (_, Some(v)) => Some(
                    user.key
                        .seal_blob(&vector_label(&user.owner, id), &vector_bytes(v)),
                ),
            };
            records.push(MemoryRecord {
                owner: user.owner.clone(),
                id: id.clone(),
                sealed: json,
                vector,
            });
        }
        if let Err(e) = self.store.put_memory_rows(records, now_ms()).await {
            w.broken = true;
            self.forget(&user.owner);
            return Err(e.into());
        }
        Ok(())
    }

    /// Adds memories (from extraction, or given as they are) for `user`, at `source_run` when a
    /// run's conversation produced them: a fact with the subject of a live row supersedes it
    /// unless it says the same; a fact without a subject that says what a live row says
    /// re-validates that row.
    pub async fn add(
        &self,
        user: &MemUser,
        items: Vec<NewMemory>,
        source_run: Option<&str>,
        scope: &Scope,
    ) -> Result<AddReport, GatewayError> {
        if items.len() > MAX_ADD {
            return Err(GatewayError::invalid(
                "invalid_field",
                format!(
                    "memories: {} items, at most {MAX_ADD} per request",
                    items.len()
                ),
            ));
        }
        for (i, m) in items.iter().enumerate() {
            check_new_memory(m, &format!("memories[{i}]"))?;
        }
        let vectors = self
            .embed(items.iter().map(|m| m.memory.clone()).collect())
            .await?;
        let w = self.working(user).await?;
        let mut w = w.lock().await;
        w.last_used = Instant::now();
        let at = now_ms();
        let mut report = AddReport::default();
        let mut changed: Vec<String> = Vec::new();
        for (item, v) in items.into_iter().zip(vectors) {
            for c in &item.categories {
                if !report.categories.contains(c) {
                    report.categories.push(*c);
                }
            }
            let same_subject = item.subject.as_deref().and_then(|s| {
                w.set
                    .live()
                    .find(|r| r.subject.as_deref() == Some(s))
                    .map(|r| r.id.clone())
            });
            let repeated = match &same_subject {
                Some(id) => {
                    let old = w.vectors.get(id).map_or(0.0, |ov| dot(ov, &v));
                    let old_row = w.set.get(id).expect("live row");
                    let said_before = Extracted {
                        memory: old_row.memory.clone(),
                        memory_type: old_row.memory_type,
                        categories: old_row.categories.clone(),
                        subject: old_row.subject.clone(),
                    };
                    // The matcher extraction is scored with, or the embeddings' closeness.
                    (old >= SAME_FACT_SIMILARITY || haca_mem::same_fact(&said_before, &item))
                        .then(|| id.clone())
                }
                None if item.subject.is_none() => w
                    .index
                    .search(&v, 1)?
                    .into_iter()
                    .find(|(id, sim)| {
                        *sim >= SAME_FACT_SIMILARITY
                            && w.set.get(id).is_some_and(|r| r.subject.is_none())
                    })
                    .map(|(id, _)| id),
                None => None,
            };
            if let Some(id) = repeated {
                w.set.revalidate(&id, at, source_run).map_err(mem_error)?;
                report.revalidated.push(id.clone());
                changed.push(id);
                continue;
            }
            let id = new_row_id();
            let mut row = MemoryRow::new(&id, &user.owner, item.memory, item.memory_type, at)
                .with_categories(&item.categories);
            if let Some(s) = item.subject {
                row = row.with_subject(s);
            }
            if let Some(run) = source_run {
                row = row.with_source_run(run);
            }
            row.agent_id = scope.agent_id.clone();
            row.thread_id = scope.thread_id.clone();
            // The fallible index first: a slot whose row never came is skipped by search.
            w.index.insert(&id, &v)?;
            let old = w.set.insert(row, at).map_err(mem_error)?;
            w.vectors.insert(id.clone(), v);
            if let Some(old) = old {
                w.index.remove(&old);
                report.superseded.push((old.clone(), id.clone()));
                changed.push(old);
            }
            report.created.push(id.clone());
            changed.push(id);
        }
        changed.dedup();
        self.persist(user, &mut w, &changed).await?;
        Ok(report)
    }

    /// The user's live rows nearest `q.query`, best first, after the category filter and the
    /// staleness policy.
    pub async fn search(&self, user: &MemUser, q: &SearchQuery) -> Result<Vec<Hit>, GatewayError> {
        if q.limit == 0 || q.query.trim().is_empty() {
            return Ok(Vec::new());
        }
        let v = self
            .embed(vec![q.query.clone()])
            .await?
            .pop()
            .unwrap_or_default();
        let w = self.working(user).await?;
        let mut w = w.lock().await;
        w.last_used = Instant::now();
        let at = now_ms();
        let max_age_ms = self.config.max_age_s.saturating_mul(1000);
        // Filters drop some of what the index returns: ask for more than the limit, and for
        // everything when categories narrow the set a lot.
        let k = if q.categories.is_empty() && q.scope == Scope::default() {
            (q.limit * 4).max(20)
        } else {
            w.index.ann.len()
        };
        let mut hits = Vec::new();
        for (id, similarity) in w.index.search(&v, k)? {
            let Some(row) = w.set.get(&id) else { continue };
            if !row.state.is_live() || !row.is_valid_at(at) {
                continue;
            }
            if !q.categories.is_empty() && !row.categories.iter().any(|c| q.categories.contains(c))
            {
                continue;
            }
            if !q.scope.admits(row) {
                continue;
            }
            let stale = !row.is_fresh(at, max_age_ms);
            if stale && self.config.stale == StalePolicy::Exclude {
                continue;
            }
            hits.push(Hit {
                row: row.clone(),
                similarity,
                stale,
                sealed_sha256: w.sealed_sha256.get(&id).copied().unwrap_or_default(),
            });
            if hits.len() == q.limit {
                break;
            }
        }
        Ok(hits)
    }

    /// Every row of the user's, in order: live, superseded and deleted (tombstones).
    pub async fn list(&self, user: &MemUser) -> Result<Vec<MemoryRow>, GatewayError> {
        let w = self.working(user).await?;
        let mut w = w.lock().await;
        w.last_used = Instant::now();
        Ok(w.set.rows().to_vec())
    }

    /// A user's edit of live row `id`: the new text (and categories) supersede it as a new row;
    /// the old one stays, linked. Returns the new row's id.
    pub async fn update(
        &self,
        user: &MemUser,
        id: &str,
        memory: Option<String>,
        categories: Option<Vec<Category>>,
    ) -> Result<String, GatewayError> {
        let w = self.working(user).await?;
        let old = {
            let w = w.lock().await;
            w.set
                .get(id)
                .cloned()
                .ok_or_else(|| mem_error(MemError::UnknownId { id: id.into() }))?
        };
        if !old.state.is_live() {
            return Err(mem_error(MemError::NotLive {
                id: id.into(),
                state: old.state.name().into(),
            }));
        }
        let text = memory.unwrap_or_else(|| old.memory.clone());
        let edited = NewMemory {
            memory: text.clone(),
            memory_type: old.memory_type,
            categories: categories.unwrap_or_else(|| old.categories.clone()),
            subject: old.subject.clone(),
        };
        check_new_memory(&edited, "body").map_err(|e| {
            let text = e.message().replace("body.memory", "memory");
            e.with_message(text)
        })?;
        let v = self.embed(vec![text]).await?.pop().unwrap_or_default();
        let mut w = w.lock().await;
        w.last_used = Instant::now();
        let at = now_ms();
        let new_id = new_row_id();
        let mut row = MemoryRow::new(&new_id, &user.owner, edited.memory, edited.memory_type, at)
            .with_categories(&edited.categories);
        if let Some(s) = edited.subject {
            row = row.with_subject(s);
        }
        row.agent_id = old.agent_id.clone();
        row.thread_id = old.thread_id.clone();
        w.index.insert(&new_id, &v)?;
        w.set.replace(id, row, at).map_err(mem_error)?;
        w.index.remove(id);
        w.vectors.insert(new_id.clone(), v);
        self.persist(user, &mut w, &[id.to_owned(), new_id.clone()])
            .await?;
        Ok(new_id)
    }

    /// Deletes row `id`: its text, embedding and secret fields are gone from the store; a
    /// tombstone keeps its id and times, and the transparency log says it was deleted.
    pub async fn delete(&self, user: &MemUser, id: &str) -> Result<(), GatewayError> {
        let w = self.working(user).await?;
        let mut w = w.lock().await;
        w.last_used = Instant::now();
        let at = now_ms();
        w.set.delete(id, at).map_err(mem_error)?;
        w.index.remove(id);
        w.vectors.remove(id);
        self.persist(user, &mut w, &[id.to_owned()]).await?;
        tracing::info!(
            "memory {id} of {} deleted: its text and embedding are gone",
            user.owner
        );
        let entry = LogEntry::new(
            "memory.delete",
            serde_json::json!({"owner": user.owner, "id": id, "at": at}),
        );
        if let Err(e) = self.log.append(vec![entry]).await {
            tracing::warn!("memory {id} deleted, but the log did not take the entry: {e}");
        }
        Ok(())
    }

    /// The user's bio, opened.
    pub async fn bio(&self, user: &MemUser) -> Result<Option<String>, GatewayError> {
        let Some(sealed) = self.store.memory_bio(&user.owner)? else {
            return Ok(None);
        };
        let plain = user
            .key
            .open_blob(&bio_label(&user.owner), &sealed)
            .map_err(mem_error)?;
        String::from_utf8(plain)
            .map(Some)
            .map_err(|_| GatewayError::internal("the stored bio is not UTF-8"))
    }

    /// Replaces the user's bio.
    pub async fn set_bio(&self, user: &MemUser, bio: &str) -> Result<(), GatewayError> {
        if bio.len() > MAX_MEMORY_BYTES {
            return Err(GatewayError::invalid(
                "invalid_field",
                format!("bio: longer than {MAX_MEMORY_BYTES} bytes"),
            )
            .param("bio"));
        }
        let sealed = user.key.seal_blob(&bio_label(&user.owner), bio.as_bytes());
        self.store
            .put_memory_bio(&user.owner, sealed, now_ms())
            .await?;
        Ok(())
    }

    /// The user's rows as a bundle signed by this node, sealed under a new bundle key that only
    /// the caller gets (hex): the bundle alone opens nowhere.
    pub async fn export(&self, user: &MemUser) -> Result<(Bundle, String), GatewayError> {
        let w = self.working(user).await?;
        let w = w.lock().await;
        let bundle_key = UserKey::generate();
        let bundle =
            Bundle::export(&w.set, &bundle_key, &self.node, now_ms()).map_err(mem_error)?;
        Ok((bundle, bundle_key.to_hex()))
    }

    /// Imports a bundle (another node's, or this one's) sealed under `bundle_key` into the
    /// user's rows: the signature and every row are checked first, rows keep their ids and
    /// provenance and become this user's; rows already here are skipped; where an imported and
    /// an existing live row share a subject, the one validated later stays live and supersedes
    /// the other. Returns how many rows were imported.
    pub async fn import(
        &self,
        user: &MemUser,
        bundle: &Bundle,
        bundle_key: &str,
    ) -> Result<usize, GatewayError> {
        let key = UserKey::from_hex(bundle_key).map_err(|e| {
            GatewayError::invalid("invalid_field", format!("key: {e}")).param("key")
        })?;
        let imported = bundle.import(&key).map_err(mem_error)?;
        let w = self.working(user).await?;
        let mut w = w.lock().await;
        w.last_used = Instant::now();
        let at = now_ms();
        let mut rows = w.set.rows().to_vec();
        let mut new_rows: Vec<MemoryRow> = imported
            .rows()
            .iter()
            .filter(|r| w.set.get(&r.id).is_none())
            .cloned()
            .map(|mut r| {
                r.owner = user.owner.clone();
                r
            })
            .collect();
        let mut changed: Vec<String> = new_rows.iter().map(|r| r.id.clone()).collect();
        for new in new_rows.iter_mut().filter(|r| r.state.is_live()) {
            let Some(subject) = new.subject.clone() else {
                continue;
            };
            if let Some(old) = rows
                .iter_mut()
                .find(|r| r.state.is_live() && r.subject.as_deref() == Some(&subject))
            {
                // The one validated later stays live; the other is marked superseded by it.
                // Neither row's own `supersedes` link (to its predecessor) is overwritten.
                let (loser, winner) = if new.last_validated_at >= old.last_validated_at {
                    changed.push(old.id.clone());
                    (&mut *old, &mut *new)
                } else {
                    (&mut *new, &mut *old)
                };
                let keep = winner.supersedes.clone();
                haca_mem::supersede(loser, winner, at);
                if keep.is_some() {
                    winner.supersedes = keep;
                }
            }
        }
        let live_texts: Vec<(String, String)> = new_rows
            .iter()
            .filter(|r| r.state.is_live())
            .map(|r| (r.id.clone(), r.memory.clone()))
            .collect();
        let count = new_rows.len();
        rows.extend(new_rows);
        let set = MemorySet::from_rows(user.owner.clone(), rows).map_err(mem_error)?;
        let vectors = self
            .embed(live_texts.iter().map(|(_, t)| t.clone()).collect())
            .await?;
        for ((id, _), v) in live_texts.iter().zip(&vectors) {
            w.index.insert(id, v)?;
        }
        w.set = set;
        for ((id, _), v) in live_texts.iter().zip(vectors) {
            w.vectors.insert(id.clone(), v);
        }
        for id in &changed {
            if !w.set.get(id).is_some_and(|r| r.state.is_live()) {
                w.index.remove(id);
            }
        }
        changed.sort();
        changed.dedup();
        self.persist(user, &mut w, &changed).await?;
        tracing::info!(
            "memory of {}: imported {count} rows from a bundle of {} signed by node {}",
            user.owner,
            bundle.owner,
            bundle.signer
        );
        Ok(count)
    }

    /// For a chat call: the rows nearest the conversation's last user turn, and the memory box
    /// that lists them with their age, score and state.
    pub async fn recall(
        &self,
        user: &MemUser,
        query: &str,
        limit: usize,
    ) -> Result<(Vec<Hit>, MemoryEvidence), GatewayError> {
        let hits = self
            .search(
                user,
                &SearchQuery {
                    query: query.to_owned(),
                    limit,
                    categories: Vec::new(),
                    scope: Scope::default(),
                },
            )
            .await?;
        let at = now_ms();
        let used: Vec<UsedRow> = hits
            .iter()
            .zip(haca_mem::used_rows(
                hits.iter().map(|h| (&h.row, h.similarity as f64)),
                at,
            ))
            .map(|(h, mut u)| {
                u.stale = h.stale;
                u.sealed_sha256 = Some(h.sealed_sha256);
                u
            })
            .collect();
        let policy = RetrievalPolicy {
            embedder: self.embedder.model_id(),
            max_age_s: self.config.max_age_s,
            stale: self.config.stale,
        };
        Ok((hits, haca_mem::memory_evidence(&user.owner, &used, &policy)))
    }
}

/// Opens `owner`'s stored rows under `key` and indexes the live ones.
fn open_working(
    store: &Store,
    owner: &str,
    key: &UserKey,
    fingerprint: Digest,
) -> Result<Working, GatewayError> {
    let records = store.memory_rows(owner)?;
    let mut rows = Vec::with_capacity(records.len());
    let mut sealed_sha256 = HashMap::with_capacity(records.len());
    let mut vectors = HashMap::with_capacity(records.len());
    let mut dim = None;
    for rec in &records {
        let sealed: SealedRow = serde_json::from_str(&rec.sealed).map_err(|e| {
            GatewayError::internal(format!(
                "stored memory {} of {owner} is damaged: {e}",
                rec.id
            ))
        })?;
        let row = match sealed.state {
            RowState::Deleted { .. } => sealed.tombstone(),
            _ => sealed.open(key).map_err(mem_error)?,
        };
        sealed_sha256.insert(rec.id.clone(), haca_core::sha256(rec.sealed.as_bytes()));
        if let (Some(v), true) = (&rec.vector, row.state.is_live()) {
            let plain = key
                .open_blob(&vector_label(owner, &rec.id), v)
                .map_err(mem_error)?;
            let v = vector_of(&plain);
            dim.get_or_insert(v.len());
            vectors.insert(rec.id.clone(), v);
        }
        rows.push(row);
    }
    let set = MemorySet::from_rows(owner, rows).map_err(mem_error)?;
    let mut index = RowIndex::new(dim.unwrap_or(DEFAULT_DIM));
    for r in set.live() {
        if let Some(v) = vectors.get(&r.id) {
            index.insert(&r.id, v)?;
        }
    }
    Ok(Working {
        fingerprint,
        set,
        sealed_sha256,
        vectors,
        index,
        last_used: Instant::now(),
        broken: false,
    })
}
