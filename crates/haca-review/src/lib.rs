//! The review queue as pure logic: no I/O and no clock (the reference time is an argument).
//!
//! A *case* holds one or more runs. Its *class* names the claims it requires (a
//! [`haca_core::claims::Policy`]) and where a clearance is announced (a webhook). The case's
//! state is read off the runs' evidence at a reference time ([`case::evaluate`]):
//!
//! ```text
//! HOLD ──► PROVISIONAL ──► READY ──► CLEARED
//!   │           │            │   └─► REJECTED
//!   └───────────┴────────────┴─ override (with a reason) ─► CLEARED, marked as an override
//! ```
//!
//! A clear is refused before READY with the claims that are missing ([`case::decide`]); every
//! decision carries the [`case::Snapshot`] of the evidence it read.

pub mod case;
pub mod class;
pub mod continuity;
pub mod webhook;

pub use case::{decide, evaluate, Action, CaseState, Decided, DecisionInput, Evaluation, Refusal};
pub use class::{CaseClass, CaseClasses, ClassError};

use serde::{Deserialize, Serialize};

/// Who holds a review token: reviewers decide, viewers only read.
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Reviewer,
    Viewer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reviewer => "reviewer",
            Role::Viewer => "viewer",
        }
    }
    pub fn can_decide(self) -> bool {
        self == Role::Reviewer
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "reviewer" => Ok(Role::Reviewer),
            "viewer" => Ok(Role::Viewer),
            other => Err(format!("role {other:?}: expected reviewer or viewer")),
        }
    }
}

/// The prefix of review tokens, so that a token pasted in the wrong place is recognised.
pub const TOKEN_PREFIX: &str = "rt_";

/// What the store keeps of a review token: its SHA-256, hex. Never the token.
pub fn token_hash(token: &str) -> String {
    haca_core::hash::sha256(token.as_bytes()).to_hex()
}

/// What each box proves and what it never proves (DESIGN.md's table), for the panel's box
/// panels: each box speaks for itself, and none for the others.
pub const BOX_MEANINGS: [(&str, &str, &str); 9] = [
    ("artifact", "which blob (content hash) ran under the requested label, at which label revision; bound only when an attestation or proof names that blob", "that the label still means the same bytes today"),
    ("route", "which provider and node got the request, over which privacy path, under which route policy, and the fallbacks tried", "anything about the answer"),
    ("execution", "that the named node key signed these request, input and output hashes (tamper evidence)", "that the signer sits in an enclave"),
    ("attestation", "that a genuine enclave with these measurements held the key that signed this run", "that the answer is good"),
    ("proof", "that the committed model maps this input to this output (a zero-knowledge proof)", "that the input was true"),
    ("data", "which external data items were admitted, from where, when, signed by which data node", "that the source was right"),
    ("memory", "which memory rows steered the run, whose they are and when they were last validated", "that a row is still relevant"),
    ("payment", "what was paid, by whom, and what it covered (resource and request hash)", "anything about execution"),
    ("settlement", "that validators settled this run in a round: Merkle inclusion under a certified block", "answer quality"),
];
