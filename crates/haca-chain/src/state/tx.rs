//! Transactions other than run records, the model registry's label moves, and the checks a
//! mempool and a block apply to them.

use super::governance::{Approval, GovAction};
use super::ChainState;
use haca_core::canonical;
use haca_core::{Digest, NodeId};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// A transaction other than a run record.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Tx {
    /// Points a model label at a blob (the model registry); signed by a registered gateway
    /// over `"haca.label.v1:" || JCS({label, blob_id, at_ms})`.
    MoveLabel {
        label: String,
        blob_id: haca_core::BlobId,
        at_ms: u64,
        gateway: NodeId,
        signature: String,
    },
    /// A change to the validator set or the gateway registry, approved by validators holding
    /// more than 2/3 of the current set's voting power, each signing
    /// [`governance_message`](super::governance_message). `seq` numbers governance changes
    /// 1, 2, ... so that an approved change applies once. A block carries at most one
    /// governance transaction; a validator set change takes effect from the next height.
    Governance {
        seq: u64,
        action: GovAction,
        approvals: Vec<Approval>,
    },
    /// Registers an enclave (the TEE registry) with its AWS Nitro attestation document
    /// (standard base64 of the COSE_Sign1 bytes), which must bind `signing_key` (its
    /// `public_key`, or nitriding `user_data`; see [`haca_tee::registry::check_binding`]).
    /// Anyone may submit it: the document is the authority. Validators verify the document at
    /// its own timestamp (audit mode: deterministic, no local clock) against the roots the
    /// chain trusts (the AWS Nitro root; the chain's dev root when its
    /// [`TeeConfig`](super::TeeConfig) names one), and require its PCR0..2 to be an approved
    /// set, the block time to be at most `max_document_age_ms` after the document's
    /// timestamp, and `at_ms` (the registration time recorded) to be no later than the block
    /// time. See [`haca_tee::registry::TeeRegistry::register`] for the other rules.
    RegisterEnclave {
        document_b64: String,
        signing_key: NodeId,
        at_ms: u64,
    },
    /// An enclave's heartbeat: `signature` is the hex Ed25519 signature by the enclave's
    /// signing key over [`haca_tee::registry::heartbeat_message`]`(tee_id, at_ms)`. Refused
    /// when `at_ms` is after the block time, older than `max_heartbeat_age_ms` at the block
    /// time, or not after the enclave's last heartbeat.
    EnclaveHeartbeat {
        tee_id: Digest,
        at_ms: u64,
        signature: String,
    },
}

/// A label's revision in the model registry.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct LabelRevision {
    pub revision: u64,
    pub blob_id: haca_core::BlobId,
    pub at_ms: u64,
    pub height: u64,
    pub gateway: NodeId,
}

/// Bytes a gateway signs to move a label.
pub fn label_message(label: &str, blob_id: &haca_core::BlobId, at_ms: u64) -> Vec<u8> {
    let mut m = b"haca.label.v1:".to_vec();
    m.extend(
        canonical::to_vec(&json!({"label": label, "blob_id": blob_id, "at_ms": at_ms}))
            .expect("strings canonicalize"),
    );
    m
}

impl ChainState {
    /// Checks a transaction against this state, for admission to a mempool: the block time
    /// is not known yet, so relations to it are checked against the last block's time where
    /// that is a necessary condition (a document or heartbeat already too old), and not at all
    /// where it is not (an `at_ms` after the last block). A block checks its transactions with
    /// [`ChainState::check_tx_at`].
    pub fn check_tx(&self, tx: &Tx) -> Result<(), String> {
        self.check_tx_inner(tx, None)
    }

    /// Checks a transaction against this state for a block with time `block_time_ms`.
    pub fn check_tx_at(&self, tx: &Tx, block_time_ms: u64) -> Result<(), String> {
        self.check_tx_inner(tx, Some(block_time_ms))
    }

    fn check_tx_inner(&self, tx: &Tx, block_time_ms: Option<u64>) -> Result<(), String> {
        match tx {
            Tx::MoveLabel {
                label,
                blob_id,
                at_ms,
                gateway,
                signature,
            } => {
                if !self.gateways.contains_key(gateway) {
                    return Err(format!("label move by {gateway}: not a registered gateway"));
                }
                if let Some(r) = self.models.get(label).and_then(|revs| {
                    revs.iter().find(|r| {
                        r.blob_id == *blob_id && r.at_ms == *at_ms && r.gateway == *gateway
                    })
                }) {
                    return Err(format!(
                        "label move of {label}: already recorded as revision {} (a replay)",
                        r.revision
                    ));
                }
                haca_core::keys::verify(gateway, &label_message(label, blob_id, *at_ms), signature)
                    .map_err(|e| format!("label move of {label}: {e}"))
            }
            Tx::Governance {
                seq,
                action,
                approvals,
            } => self.check_governance(*seq, action, approvals),
            Tx::RegisterEnclave { .. } | Tx::EnclaveHeartbeat { .. } => {
                self.tee_step(&mut self.tee.clone(), tx, block_time_ms)
            }
        }
    }
}
