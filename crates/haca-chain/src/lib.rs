//! The validator's side of haca: the chain state machine, settlement rounds,
//! the transparency log, and the adapter onto the Malachite consensus engine.

pub mod consensus;
pub mod log;
pub mod record;
pub mod state;
pub mod validator;

pub use record::{
    standard_evidence, AllOf, EvidenceVerifier, RejectCode, Rejection, RunRecord,
    SignatureAndHashes, TeeEvidence,
};
pub use state::{Block, ChainState, EvidenceView, Outcome, Tx};
