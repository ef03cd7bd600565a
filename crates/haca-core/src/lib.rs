//! haca's vocabulary: ids, hashing, canonical JSON, keys and signatures, tensors, the
//! Receipt and its boxes, claims and policy evaluation. Pure: this crate does no I/O.

pub mod canonical;
pub mod checkpoint;
pub mod claims;
pub mod data;
pub mod hash;
pub mod ids;
pub mod keys;
pub mod merkle;
pub mod oz;
pub mod receipt;
pub mod settlement;
pub mod tensor;
pub mod testing;
mod time;

pub use claims::{Claim, ClaimOutcome, ClaimState, Policy, PolicyReport, TrustAnchors};
pub use hash::{keccak256, sha256, Digest};
pub use ids::{BlobId, NodeId, RunId};
pub use keys::{random_hex, NodeKey};
pub use receipt::{ParsedReceipt, Receipt};
pub use time::format_unix_ms;
