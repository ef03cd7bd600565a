//! The run pipeline, shared by ML runs (`/v1/infer`) and chat calls: resolve the artifact,
//! take the payment (one place: [`Gateway::take_payment`]), execute (an [`infer::MlExecutor`]
//! or a chat route), build every box with one [`builder::ReceiptBuilder`] whose other boxes
//! come from [`builder::EvidenceSource`]s, commit (sign, store the run with its settlement
//! record in one transaction), and hand the record to settlement.
//!
//! Knows nothing of HTTP: every failure is a [`GatewayError`], which the binary's `server`
//! maps to a status code.

pub mod builder;
pub mod chat;
pub mod data;
pub mod enclave;
pub mod error;
pub mod image;
pub mod infer;
pub mod memory;
pub mod payment;
pub mod zk;

pub use builder::{EvidenceSource, ReceiptBuilder, RunFacts};
pub use error::GatewayError;
pub use haca_core::random_hex;

use haca_chain::log::TransparencyLog;
use haca_chain::record::RecordContent;
use haca_chain::validator::{RunSettlement, Validator};
use haca_core::receipt::{BoxStatus, EvidenceBox, ExecMode, ParsedReceipt, Receipt};
use haca_core::settlement::SettlementMode;
use haca_core::{NodeKey, RunId};
use haca_exec::ModelCache;
use haca_hub::Hub;
use haca_store::{RunRecord, Store};
use serde_json::Value;
use std::sync::Arc;

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Everything one gateway node needs to serve runs.
pub struct Gateway {
    pub key: NodeKey,
    pub store: Arc<Store>,
    pub hub: Arc<Hub>,
    pub models: Arc<ModelCache>,
    /// The chain this gateway settles on: its in-process validator (devnet), or a
    /// non-voting copy that follows a remote validator network; `None` when this node
    /// settles nothing.
    pub chain: Option<Arc<Validator>>,
    /// Set when the chain is remote: wakes the task that submits the outbox to it.
    pub remote_outbox: Option<Arc<tokio::sync::Notify>>,
    /// The node's transparency log (run and settlement events, appended as blocks commit).
    pub log: Arc<TransparencyLog>,
    /// The enclave that serves `mode: "tee"` and the chat `tee` path; `None` when this node
    /// has none.
    pub enclave: Option<enclave::EnclaveClient>,
    /// Sources of the boxes the pipeline does not fill itself (proof, data, memory, private
    /// route), applied to every run in order.
    pub evidence: Vec<Arc<dyn EvidenceSource>>,
    /// The prover that serves `mode: "zkml"`; `None` when this node proves nothing.
    pub zk: Option<Arc<zk::ZkProver>>,
    /// Where committed rounds are anchored on an EVM chain (`--evm-registry`): settlement
    /// boxes name the anchoring transaction once it is known.
    pub anchors: Option<Arc<dyn AnchorBook>>,
}

/// The anchors of committed rounds outside the chain (an EVM SettlementRegistry).
pub trait AnchorBook: Send + Sync {
    /// The anchor of the round closed by the block at `height`, once known.
    fn anchor(&self, height: u64) -> Option<haca_core::settlement::EvmAnchor>;
}

/// What a run stores beside its receipt.
pub struct RunToCommit {
    /// The model as the client named it.
    pub model: String,
    /// The artifact's blob id; empty when no artifact is known (an upstream provider).
    pub blob_id: String,
    pub mode: ExecMode,
    pub output: Value,
    /// Input and output for an individually settled record.
    pub content: Option<RecordContent>,
    /// The chat turn the run is, in its conversation.
    pub turn: Option<haca_store::ChatTurn>,
    /// A zkml run's proof job: stored with the run; its settlement record waits for the proof.
    pub zk_job: Option<haca_store::ZkJob>,
}

impl Gateway {
    /// Settles a verified payment for the request `covered` describes, before the request
    /// runs: the one place a run is charged. A refusal (a replay that raced this request,
    /// an API key's balance run short) is [`GatewayError::PaymentRequired`].
    ///
    /// The charge is held by a [`Charge`] until its run is stored: dropped before that (the
    /// run failed, or the request was dropped because its client went away), it is refunded.
    pub async fn take_payment(
        &self,
        pending: Option<payment::PendingPayment>,
        covered: payment::Covered,
    ) -> Result<Option<Charge>, GatewayError> {
        let Some(p) = pending else {
            return Ok(None);
        };
        let run_id = covered.run_id;
        Ok(Some(self.charge(run_id, p.settle(covered).await?)))
    }

    /// A payment settled for `run_id`, refunded if the run is never stored.
    pub(crate) fn charge(&self, run_id: haca_core::RunId, paid: payment::SettledPayment) -> Charge {
        Charge {
            paid: Some(paid),
            refund: Some((self.store.clone(), self.log.clone(), run_id)),
        }
    }

    /// Signs `receipt`, stores the run with its settlement record (and chat turn) in one
    /// transaction, then hands the record to the chain off the answer's path. Returns the
    /// turn's number when the run is a conversation's turn.
    pub async fn commit(
        &self,
        receipt: &mut Receipt,
        run: RunToCommit,
    ) -> Result<Option<u64>, GatewayError> {
        let settlement = receipt.settlement_mode.unwrap_or_default();
        let run_id = receipt.run_id;
        let digest = receipt
            .sign(&self.key)
            .map_err(|e| GatewayError::internal(e.to_string()))?;
        let chain_record = haca_chain::RunRecord::signed(receipt, digest, settlement, run.content)
            .map_err(GatewayError::internal)?;
        let record = RunRecord {
            run_id: run_id.to_string(),
            created_at: receipt.issued_at,
            model: run.model,
            blob_id: run.blob_id,
            mode: run.mode.as_str().into(),
            node_id: self.key.node_id().to_string(),
            receipt_digest: digest.to_hex(),
            // A private run's answer is not retained after the response.
            output: if settlement == SettlementMode::Private {
                "null".into()
            } else {
                run.output.to_string()
            },
            receipt: serde_json::to_string(&receipt).expect("receipt serializes"),
            outbox: self
                .chain
                .as_ref()
                .map(|_| serde_json::to_string(&chain_record).expect("records serialize")),
        };
        if let Some(job) = run.zk_job {
            let zk = self
                .zk
                .as_ref()
                .ok_or_else(|| GatewayError::internal("a zkml run on a node without a prover"))?;
            let record = RunRecord {
                outbox: None,
                ..record
            };
            self.store.insert_zk_run(record, job).await?;
            zk.enqueue(&run_id.to_string());
            return Ok(None);
        }
        let turn = self.store.insert_chat_run(record, run.turn).await?;
        // The record is in the outbox already (a lost submission is retried at restart), so
        // it is verified and queued off the answer's path.
        if let Some(wake) = &self.remote_outbox {
            wake.notify_one();
        } else if let Some(chain) = &self.chain {
            let chain = chain.clone();
            tokio::task::spawn_blocking(move || {
                if let Err(e) = chain.submit(chain_record) {
                    tracing::warn!("run {run_id}: not submitted for settlement yet: {e}");
                }
            });
        }
        Ok(turn)
    }

    /// The stored receipt of `rec` with its settlement box filled, once its round has
    /// committed; `None` while it is pending (the stored text is then the receipt). The
    /// settlement box lies outside the signed view, so the gateway's signature still holds.
    pub fn settled_receipt(&self, rec: &RunRecord) -> Result<Option<Receipt>, GatewayError> {
        let run: RunId = rec
            .run_id
            .parse()
            .map_err(|e| GatewayError::internal(format!("stored run id {}: {e}", rec.run_id)))?;
        let settled = match &self.chain {
            Some(chain) => chain
                .settlement(&run)
                .map_err(|e| GatewayError::internal(e.to_string()))?,
            None => RunSettlement::Pending,
        };
        let RunSettlement::Settled(mut ev) = settled else {
            return Ok(None);
        };
        if let Some(book) = &self.anchors {
            ev.evm_anchor = book.anchor(ev.header.height);
        }
        let mut receipt: Receipt = serde_json::from_str(&rec.receipt)
            .map_err(|e| GatewayError::internal(format!("stored receipt is damaged: {e}")))?;
        let at = ev.header.time_ms;
        receipt.boxes.settlement = EvidenceBox::with(*ev, BoxStatus::Settled, at);
        Ok(Some(receipt))
    }

    /// [`Gateway::settled_receipt`], or the stored receipt, parsed for checking claims.
    pub fn current_receipt(&self, rec: &RunRecord) -> Result<ParsedReceipt, GatewayError> {
        match self.settled_receipt(rec)? {
            Some(r) => Ok(ParsedReceipt::from_receipt(r)),
            None => ParsedReceipt::from_json_str(&rec.receipt).map_err(|e| {
                GatewayError::internal(format!(
                    "stored receipt of run {} is damaged: {e}",
                    rec.run_id
                ))
            }),
        }
    }

    /// Refunds every charge whose run was never stored: the node stopped between taking the
    /// payment and storing the run. Call it at start, before serving. Returns how many.
    pub async fn refund_orphan_charges(&self) -> Result<usize, GatewayError> {
        let refunds = self
            .store
            .refund_orphan_charges(
                "the node stopped after the charge and before the run was stored",
                now_ms(),
            )
            .await?;
        for r in &refunds {
            record_refund(&self.log, r).await;
        }
        Ok(refunds.len())
    }

    /// A new run id for a request with hash `request_hash`.
    pub fn new_run_id(&self, request_hash: &haca_core::Digest) -> RunId {
        let mut nonce = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut nonce);
        RunId::derive(request_hash, &self.key.node_id(), &nonce)
    }
}

/// A settled payment whose run is not stored yet. [`Charge::stored`] ends it, and
/// [`Charge::refund`] gives it back when the run failed; dropped before either (the request
/// was dropped because its client went away), the charge goes back to the payer (on this node's ledger; a remote
/// facilitator's settlement is not refunded here) with a `refund` log entry. A node killed
/// meanwhile refunds it at its next start ([`Gateway::refund_orphan_charges`]).
pub struct Charge {
    paid: Option<payment::SettledPayment>,
    refund: Option<(Arc<Store>, Arc<TransparencyLog>, RunId)>,
}

impl Charge {
    /// What was paid: the payment box and the response header.
    pub fn paid(&self) -> &payment::SettledPayment {
        self.paid
            .as_ref()
            .expect("a charge holds its payment until it ends")
    }

    /// The run failed: the charge goes back now, before the failure is answered.
    pub async fn refund(mut self, why: impl Into<String>) {
        if let Some((store, log, run_id)) = self.refund.take() {
            refund_unstored_run(store, log, run_id, why.into()).await;
        }
    }

    /// The run is stored: the charge stands.
    pub fn stored(mut self) -> payment::SettledPayment {
        self.refund = None;
        self.paid
            .take()
            .expect("a charge holds its payment until it ends")
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        let Some((store, log, run_id)) = self.refund.take() else {
            return;
        };
        // The request was dropped (its client went away) before its run was stored.
        let why = "the call was dropped before its run was stored (its client went away)";
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(refund_unstored_run(store, log, run_id, why.into()));
            }
            Err(_) => tracing::warn!(
                "run {run_id}: its charge is refunded at the next start (no runtime to refund it now)"
            ),
        }
    }
}

/// Gives back the charge of `run_id` if its run was never stored (the store checks that in
/// the refund's own transaction, so a run stored meanwhile keeps its charge).
async fn refund_unstored_run(
    store: Arc<Store>,
    log: Arc<TransparencyLog>,
    run_id: RunId,
    why: String,
) {
    match store
        .refund_unrun(&run_id.to_string(), &why, now_ms())
        .await
    {
        Ok(Some(r)) => record_refund(&log, &r).await,
        Ok(None) => {}
        Err(e) => tracing::error!("run {run_id}: its charge could not be refunded: {e}"),
    }
}

/// Logs a refund and appends it to the transparency log.
async fn record_refund(log: &TransparencyLog, r: &haca_store::Refund) {
    tracing::warn!(
        "refunded {} base units of {} to {} for run {} (charge {}): {}",
        r.amount,
        r.asset,
        r.payer,
        r.run_id,
        r.transaction_id,
        r.reason
    );
    let entry = serde_json::json!({
        "run_id": r.run_id, "transaction": r.transaction_id, "asset": r.asset,
        "payer": r.payer, "pay_to": r.pay_to, "amount": r.amount, "reason": r.reason,
    });
    if let Err(e) = log
        .append_entries(vec![haca_chain::log::LogEntry::new("refund", entry)])
        .await
    {
        tracing::error!(
            "run {}: the refund was not appended to the log: {e}",
            r.run_id
        );
    }
}
