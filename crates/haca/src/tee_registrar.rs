//! Keeps this node's dev enclave in the chain's TEE registry: approves its PCR set by
//! governance when this node holds validator keys (devnet), registers the enclave with a
//! fresh attestation document, registers it again after a restart (a new run key), and sends
//! a heartbeat signed by the enclave every minute, so the enclave stays active.
//!
//! Validators settle a TEE run only when its enclave is registered and enabled
//! (`haca_chain::TeeEvidence`), so devnet registers before it serves.

use crate::remote::RemoteChain;
use base64::Engine as _;
use haca_chain::state::{Approval, GovAction, Tx};
use haca_chain::validator::Validator;
use haca_core::NodeKey;
use haca_gateway::enclave::EnclaveClient;
use haca_tee::protocol::AttestationAnswer;
use haca_tee::registry::{tee_id_of, PcrSet, TeeRegistry};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Time between heartbeats (the registry's default maximum age is ten minutes).
const HEARTBEAT_EVERY: Duration = Duration::from_secs(60);
/// How long a registration or approval may take to commit.
const COMMIT_PATIENCE: Duration = Duration::from_secs(30);

pub struct TeeRegistrar {
    pub validator: Arc<Validator>,
    /// Where transactions go when the chain is a remote testnet; `None`: `validator` takes
    /// them itself.
    pub remote: Option<Arc<RemoteChain>>,
    /// Validator keys whose approvals approve the enclave's PCR set; empty: someone else must
    /// approve it (`haca chain govern`).
    pub approvers: Vec<NodeKey>,
    pub enclave: EnclaveClient,
}

impl TeeRegistrar {
    /// Registers (or heartbeats) once, then every [`HEARTBEAT_EVERY`] until the task ends.
    pub async fn run(self) {
        loop {
            let pause = match self.step().await {
                Ok(_) => HEARTBEAT_EVERY,
                Err(e) => {
                    tracing::warn!("TEE registry: {e}");
                    Duration::from_secs(5)
                }
            };
            tokio::time::sleep(pause).await;
        }
    }

    /// One pass: approve, register or heartbeat, whichever the registry needs. Returns what
    /// it did.
    pub async fn step(&self) -> Result<&'static str, String> {
        let (_, dev_root) = self.validator.tee_registry();
        if !dev_root {
            return Err(
                "this chain's genesis trusts no dev root, so the dev enclave cannot \
                        register and its runs will not settle (start devnet with a fresh data \
                        dir to get a genesis that names the dev root)"
                    .into(),
            );
        }
        let att = self
            .enclave
            .attestation(None)
            .await
            .map_err(|e| e.error.to_string())?;
        let key = att.enclave_key;
        let pcrs = document_pcrs(&att)?;
        if !self.validator.tee_registry().0.is_approved(&pcrs.id()) {
            self.approve(pcrs.clone()).await?;
        }
        let tee_id = tee_id_of(&key);
        let enabled = |r: &TeeRegistry| r.enclave(&tee_id).is_some_and(|e| e.enabled);
        if enabled(&self.validator.tee_registry().0) {
            let at_ms = crate::now_ms();
            let hb = self.enclave.heartbeat(at_ms).await.map_err(|e| {
                crate::metrics::metrics().enclave_heartbeat("failed");
                e.error.to_string()
            })?;
            crate::metrics::metrics().enclave_heartbeat("ok");
            self.submit(Tx::EnclaveHeartbeat {
                tee_id,
                at_ms,
                signature: hb.signature,
            })
            .await?;
            return Ok("heartbeat");
        }
        // The enclave made this document just now (registration refuses one older than five
        // minutes).
        let document_b64 = att.document_b64;
        tracing::info!("registering dev enclave {tee_id} (key {key}) in the chain's TEE registry");
        self.submit(Tx::RegisterEnclave {
            document_b64,
            signing_key: key,
            at_ms: crate::now_ms(),
        })
        .await?;
        self.wait_until("the enclave's registration", enabled)
            .await?;
        Ok("registered")
    }

    async fn approve(&self, pcrs: PcrSet) -> Result<(), String> {
        if self.approvers.is_empty() {
            return Err(format!(
                "the enclave's PCR set {} is not approved and this node holds no validator \
                 keys; approve it with `haca chain govern`",
                pcrs.id()
            ));
        }
        let chain_id = self.validator.genesis().chain_id.clone();
        let seq = self.validator.governance_seq() + 1;
        let id = pcrs.id();
        let action = GovAction::ApprovePcrs { pcrs };
        let approvals = self
            .approvers
            .iter()
            .map(|k| Approval::sign(k, &chain_id, seq, &action))
            .collect();
        tracing::info!("approving the dev enclave's PCR set {id} (governance seq {seq})");
        self.submit(Tx::Governance {
            seq,
            action,
            approvals,
        })
        .await?;
        self.wait_until("the PCR approval", |r| r.is_approved(&id))
            .await
    }

    async fn submit(&self, tx: Tx) -> Result<(), String> {
        match &self.remote {
            Some(r) => r.submit_tx(&tx).await,
            None => self.validator.submit_tx(tx),
        }
    }

    async fn wait_until(
        &self,
        what: &str,
        done: impl Fn(&TeeRegistry) -> bool,
    ) -> Result<(), String> {
        let mut heights = self.validator.heights();
        tokio::time::timeout(COMMIT_PATIENCE, async {
            while !done(&self.validator.tee_registry().0) {
                if heights.changed().await.is_err() {
                    return;
                }
            }
        })
        .await
        .map_err(|_| format!("{what} did not commit within {COMMIT_PATIENCE:?}"))
    }
}

/// The PCR set (PCR0..2) of the document in an enclave's `/attestation` answer.
fn document_pcrs(att: &AttestationAnswer) -> Result<PcrSet, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&att.document_b64)
        .map_err(|e| format!("the enclave's document_b64: {e}"))?;
    let doc = haca_tee::nitro::parse(&bytes).map_err(|e| format!("the enclave's document: {e}"))?;
    let pcrs: BTreeMap<u8, String> = doc.pcrs.iter().map(|(k, v)| (*k, hex::encode(v))).collect();
    PcrSet::from_pcrs(&pcrs).map_err(|e| e.to_string())
}
