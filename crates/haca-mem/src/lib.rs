//! MemSync's foundation, as pure logic: no HTTP, no store, no clock (times are arguments, unix
//! milliseconds).
//!
//! - [`row`]: a [`MemoryRow`] (plaintext, in memory only) with its provenance (created_at, source
//!   run, valid_from / valid_until, last re-validation), [`supersede`], [`revalidate`], freshness
//!   and the retrieval filter under a [`StalePolicy`].
//! - [`seal`]: a [`UserKey`] from which each row's key is derived (HKDF-SHA256), and the
//!   [`SealedRow`] the store holds: XChaCha20-Poly1305 ciphertext whose associated data binds the
//!   row's id, owner and metadata.
//! - [`set`]: a user's [`MemorySet`], which never holds two live rows for one subject (a new fact
//!   supersedes the old row, kept and linked) and deletes to a tombstone.
//! - [`bundle`]: the signed export [`Bundle`] (rows stay sealed under the user's key) and its
//!   import checks.
//! - [`evidence`]: the rows a run used, with age, score and state, for the receipt's memory box.
//! - [`extract`]: memories from a conversation (rules, and the pure halves of extraction by a
//!   language model), [`same_fact`] for re-validation, and [`evaluate`] against a labelled set.
//! - [`index`]: the approximate nearest-neighbour index for retrieval ([`AnnIndex`], HNSW over
//!   unit vectors keyed by `u32` slots), and [`recall_at_k`].

pub mod bundle;
pub mod evidence;
pub mod extract;
pub mod index;
pub mod row;
pub mod seal;
pub mod set;

pub use bundle::{Bundle, BUNDLE_DOMAIN, BUNDLE_FORMAT};
pub use evidence::{memory_evidence, used_rows, RetrievalPolicy, UsedRow};
pub use extract::{
    evaluate, extract_rules, llm_extraction_prompt, parse_llm_extraction, same_fact, subjects,
    ExtractError, Extracted, Message, Role, Score,
};
pub use index::{recall_at_k, AnnIndex, HnswParams, IndexError};
pub use row::{
    for_retrieval, revalidate, supersede, Category, MemoryRow, MemoryType, Retrieved, RowState,
    StalePolicy,
};
pub use seal::{SealedRow, UserKey, ROW_KEY_INFO};
pub use set::MemorySet;

/// Why a row, a set or a bundle was refused. Each variant names the row and the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemError {
    #[error("row {id}: {field}: {reason}")]
    Field {
        id: String,
        field: &'static str,
        reason: String,
    },
    #[error("row {id}: ciphertext does not open under this key with this id, owner and metadata (wrong key, moved or tampered)")]
    Open { id: String },
    #[error("row {id} is deleted: a tombstone has no ciphertext")]
    Deleted { id: String },
    #[error("row {id}: owner is {found}, this set belongs to {expected}")]
    Owner {
        id: String,
        expected: String,
        found: String,
    },
    #[error("row {id}: the id is already in the set")]
    DuplicateId { id: String },
    #[error("row {id}: no such row")]
    UnknownId { id: String },
    #[error("row {id} is {state}, not live")]
    NotLive { id: String, state: String },
    #[error("rows {a} and {b} are both live for subject {subject:?}")]
    TwoLive {
        subject: String,
        a: String,
        b: String,
    },
    #[error("bundle: {field}: {reason}")]
    Bundle { field: String, reason: String },
}
