//! The gateway's ML path: resolve the model, run it, build and sign the receipt, persist the
//! run, answer. Every acknowledged run is committed to the store before the answer leaves.

use crate::now_ms;
use crate::server::error::ApiError;
use haca_chain::log::TransparencyLog;
use haca_chain::record::RecordContent;
use haca_chain::validator::Validator;
use haca_core::canonical;
use haca_core::receipt::*;
use haca_core::settlement::SettlementMode;
use haca_core::tensor::{self, TensorMap};
use haca_core::{sha256, BlobId, NodeKey, RunId};
use haca_exec::{ModelCache, OnnxModel, RUNTIME};
use haca_hub::Hub;
use haca_store::{RunRecord, Store};
use rand::RngCore;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

/// The body of `POST /v1/infer`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct InferRequest {
    /// A label (`example/mnist-mlp`), a label at a revision (`example/mnist-mlp@2`) or a blob id.
    pub model: String,
    pub input: Value,
    #[serde(default)]
    pub mode: Option<ExecMode>,
}

/// What `POST /v1/infer` answers.
pub struct InferAnswer {
    pub run_id: RunId,
    pub output: Value,
    pub receipt: Receipt,
}

/// Everything one gateway node needs to serve ML runs.
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
}

impl Gateway {
    /// Loads (or finds cached) the model behind `blob_id`.
    pub async fn warm(&self, blob_id: BlobId) -> Result<(), ApiError> {
        let (hub, models) = (self.hub.clone(), self.models.clone());
        tokio::task::spawn_blocking(move || load_model(&hub, &models, blob_id).map(|_| ()))
            .await
            .map_err(|e| ApiError::internal(format!("model loader stopped: {e}")))??;
        Ok(())
    }

    pub async fn infer(
        &self,
        req: InferRequest,
        settlement: SettlementMode,
    ) -> Result<InferAnswer, ApiError> {
        let mode = req.mode.unwrap_or(ExecMode::Vanilla);
        if mode != ExecMode::Vanilla {
            return Err(ApiError::bad_request(
                "mode_unavailable",
                format!("mode: {:?} is not available on this node (it has no enclave or prover); use \"vanilla\"", mode.as_str()),
            ));
        }
        let inputs = tensor::parse_input(&req.input, "input")?;
        let resolved = self.hub.resolve(&req.model, None)?;
        if resolved.format != "onnx" {
            return Err(ApiError::bad_request(
                "unsupported_model",
                format!(
                    "model: {} is a {} artifact, not ONNX",
                    req.model, resolved.format
                ),
            ));
        }
        let started_at = now_ms();
        let blob_id = resolved.blob_id;
        let (hub, models) = (self.hub.clone(), self.models.clone());
        let (inputs, outputs) =
            tokio::task::spawn_blocking(move || -> Result<(TensorMap, TensorMap), ApiError> {
                let model = load_model(&hub, &models, blob_id)?;
                let out = model.run(&inputs, "input")?;
                Ok((inputs, out))
            })
            .await
            .map_err(|e| ApiError::internal(format!("executor stopped: {e}")))??;
        let finished_at = now_ms();

        let input_hash = tensor::hash_tensors(&inputs);
        let output_hash = tensor::hash_tensors(&outputs);
        let request_hash = sha256(
            &canonical::to_vec(&json!({"kind": "infer", "model": req.model, "mode": mode.as_str(), "input_hash": input_hash.to_hex()}))
                .expect("strings canonicalize"),
        );
        let mut nonce = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let node = self.key.node_id();
        let run_id = RunId::derive(&request_hash, &node, &nonce);

        let mut receipt = Receipt::new(run_id, finished_at);
        receipt.settlement_mode = Some(settlement);
        receipt.boxes.artifact = EvidenceBox::with(
            ArtifactEvidence {
                label: resolved.label.clone(),
                revision: resolved.revision,
                blob_id,
                format: resolved.format.clone(),
            },
            BoxStatus::Claimed,
            started_at,
        );
        receipt.boxes.route = EvidenceBox::with(
            RouteEvidence::direct("local/tract", node),
            BoxStatus::Claimed,
            started_at,
        );
        receipt.boxes.execution = EvidenceBox::with(
            ExecutionEvidence {
                mode,
                runtime: RUNTIME.into(),
                request_hash,
                input_hash,
                output_hash,
                signer: node,
                started_at,
                finished_at,
                signature: None,
            },
            BoxStatus::Claimed,
            finished_at,
        );
        let digest = receipt
            .sign(&self.key)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let output = tensor::to_json(&outputs);
        let content = (settlement == SettlementMode::Individual).then(|| RecordContent {
            input: tensor::to_json(&inputs),
            output: output.clone(),
        });
        let chain_record = haca_chain::RunRecord::signed(&receipt, digest, settlement, content)
            .map_err(ApiError::internal)?;
        let record = RunRecord {
            run_id: run_id.to_string(),
            created_at: finished_at,
            model: req.model,
            blob_id: blob_id.to_string(),
            mode: mode.as_str().into(),
            node_id: node.to_string(),
            receipt_digest: digest.to_hex(),
            // A private run's answer is not retained after the response.
            output: if settlement == SettlementMode::Private {
                "null".into()
            } else {
                output.to_string()
            },
            receipt: serde_json::to_string(&receipt).expect("receipt serializes"),
            outbox: self
                .chain
                .as_ref()
                .map(|_| serde_json::to_string(&chain_record).expect("records serialize")),
        };
        self.store.insert_run(record).await?;
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
        Ok(InferAnswer {
            run_id,
            output,
            receipt,
        })
    }
}

/// The cached model for `blob_id`, read from the hub and loaded on a miss. Blocking.
fn load_model(hub: &Hub, models: &ModelCache, blob_id: BlobId) -> Result<Arc<OnnxModel>, ApiError> {
    Ok(models.get_or_load(&blob_id, || {
        hub.read_blob(&blob_id).map_err(|e| e.to_string())
    })?)
}
