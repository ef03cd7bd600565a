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
pub mod enclave;
pub mod error;
pub mod infer;
pub mod payment;

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
}

impl Gateway {
    /// Settles a verified payment for the request `covered` describes, before the request
    /// runs: the one place a run is charged. A refusal (a replay that raced this request,
    /// an API key's balance run short) is [`GatewayError::PaymentRequired`].
    pub async fn take_payment(
        &self,
        pending: Option<payment::PendingPayment>,
        covered: payment::Covered,
    ) -> Result<Option<payment::SettledPayment>, GatewayError> {
        match pending {
            Some(p) => Ok(Some(p.settle(covered).await?)),
            None => Ok(None),
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
        let RunSettlement::Settled(ev) = settled else {
            return Ok(None);
        };
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

    /// Gives back the charge of `run_id`, a run that will not be stored (it failed after its
    /// payment settled): the value returns to the payer, and the refund is logged and
    /// appended to the transparency log. A payment settled by a remote facilitator is not on
    /// this node's ledger and is not refunded here.
    pub async fn refund_failed_run(&self, run_id: RunId, why: &str) {
        match self
            .store
            .refund_unrun(&run_id.to_string(), why, now_ms())
            .await
        {
            Ok(Some(r)) => self.record_refund(&r).await,
            Ok(None) => {}
            Err(e) => tracing::error!("run {run_id}: its charge could not be refunded: {e}"),
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
            self.record_refund(r).await;
        }
        Ok(refunds.len())
    }

    async fn record_refund(&self, r: &haca_store::Refund) {
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
        if let Err(e) = self
            .log
            .append_entries(vec![haca_chain::log::LogEntry::new("refund", entry)])
            .await
        {
            tracing::error!(
                "run {}: the refund was not appended to the log: {e}",
                r.run_id
            );
        }
    }

    /// A new run id for a request with hash `request_hash`.
    pub fn new_run_id(&self, request_hash: &haca_core::Digest) -> RunId {
        let mut nonce = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut nonce);
        RunId::derive(request_hash, &self.key.node_id(), &nonce)
    }
}
