//! The TEE registry on chain: PCR governance applied to it, enclave registration and
//! heartbeats, and the deterministic verification of attestation documents against the roots
//! the chain trusts.

use super::governance::GovAction;
use super::tx::Tx;
use super::{ChainState, EvidenceView};
use haca_tee::nitro::{Policy, TrustedRoot};
use haca_tee::registry::{Enclave, EnclaveFacts, TeeRegistry};

pub use haca_core::settlement::TeeConfig;

/// The label the chain gives its dev root in verification reports.
pub const CHAIN_DEV_ROOT_LABEL: &str = "chain-dev-root";

impl EvidenceView<'_> {
    /// The roots attestation documents may chain to: the AWS Nitro root, and the chain's dev
    /// root if it has one.
    pub fn tee_roots(&self) -> Vec<TrustedRoot> {
        let mut roots = vec![TrustedRoot::aws_nitro_g1()];
        roots.extend(self.tee_dev_root.cloned());
        roots
    }

    /// Verifies an enclave's attestation document (standard base64) deterministically: at
    /// its own timestamp, against [`EvidenceView::tee_roots`]. Returns the facts it attests.
    pub fn verify_enclave_document(&self, document_b64: &str) -> Result<EnclaveFacts, String> {
        use base64::Engine as _;
        let limit = haca_tee::nitro::MAX_DOCUMENT_LEN.div_ceil(3) * 4;
        if document_b64.len() > limit {
            return Err(format!(
                "document_b64: {} characters; an attestation document is at most {limit}",
                document_b64.len()
            ));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(document_b64)
            .map_err(|e| format!("document_b64: not standard base64: {e}"))?;
        let policy = Policy::audit().with_roots(self.tee_roots());
        let verified = haca_tee::nitro::verify(&bytes, &policy)
            .map_err(|e| format!("attestation document: {e}"))?;
        Ok(EnclaveFacts::from(&verified))
    }
}

impl ChainState {
    /// The enclaves active at `now_ms`: an approved PCR set, enabled, and a heartbeat at most
    /// the registry's `max_heartbeat_age_ms` old; in tee id order.
    pub fn active_enclaves(&self, now_ms: u64) -> Vec<Enclave> {
        self.tee
            .active(now_ms, self.tee.params.max_heartbeat_age_ms)
            .into_iter()
            .cloned()
            .collect()
    }

    /// Verifies an enclave registration's document (standard base64) deterministically: at
    /// its own timestamp, against the chain's roots (`EvidenceView::tee_roots`). Returns the facts it attests.
    pub fn verify_enclave_document(&self, document_b64: &str) -> Result<EnclaveFacts, String> {
        self.evidence_view().verify_enclave_document(document_b64)
    }

    /// Applies the TEE registry effect of `tx` (PCR governance, enclave registration,
    /// heartbeat; none for other transactions) to `reg`, in a block with time
    /// `block_time_ms` (`None`: not known yet, see [`ChainState::check_tx`]). On error `reg`
    /// is unchanged.
    pub(super) fn tee_step(
        &self,
        reg: &mut TeeRegistry,
        tx: &Tx,
        block_time_ms: Option<u64>,
    ) -> Result<(), String> {
        match tx {
            Tx::MoveLabel { .. } => Ok(()),
            Tx::Governance { action, .. } => apply_pcr_action(reg, action),
            Tx::RegisterEnclave {
                document_b64,
                signing_key,
                at_ms,
            } => {
                let e = |m: String| format!("enclave registration of {signing_key}: {m}");
                let facts = self.verify_enclave_document(document_b64).map_err(e)?;
                let now = block_time_ms.unwrap_or(self.last_time_ms);
                if let Some(t) = block_time_ms {
                    if *at_ms > t {
                        return Err(e(format!("at_ms {at_ms} is after the block time {t}")));
                    }
                }
                let max_age_ms = reg.params.max_document_age_ms;
                if now > facts.timestamp_ms && now - facts.timestamp_ms > max_age_ms {
                    return Err(e(format!(
                        "the attestation document (timestamp {}) is {} ms old at the block time {now}; the maximum age is {max_age_ms} ms",
                        facts.timestamp_ms,
                        now - facts.timestamp_ms
                    )));
                }
                reg.register(&facts, *signing_key, *at_ms)
                    .map(drop)
                    .map_err(|x| e(x.to_string()))
            }
            Tx::EnclaveHeartbeat {
                tee_id,
                at_ms,
                signature,
            } => {
                let now = block_time_ms.unwrap_or(self.last_time_ms.max(*at_ms));
                reg.heartbeat_at(tee_id, *at_ms, signature, now)
                    .map_err(|x| x.to_string())
            }
        }
    }
}

/// Registration and heartbeats: transactions whose checks depend on the registry as the block
/// leaves it so far, so a block checks them in order.
pub(super) fn is_enclave_tx(t: &Tx) -> bool {
    matches!(t, Tx::RegisterEnclave { .. } | Tx::EnclaveHeartbeat { .. })
}

/// Applies a PCR governance action to `reg` (other actions leave it alone).
pub(super) fn apply_pcr_action(reg: &mut TeeRegistry, action: &GovAction) -> Result<(), String> {
    match action {
        GovAction::ApprovePcrs { pcrs } => reg.approve_pcrs(pcrs.clone()).map(drop),
        GovAction::RevokePcrs { pcr_set } => reg.revoke_pcrs(pcr_set).map(drop),
        _ => Ok(()),
    }
    .map_err(|e| e.to_string())
}
