//! The ML path: resolve the model, take the payment, run it through an [`MlExecutor`], build
//! the receipt, commit. Every acknowledged run is committed to the store before the answer
//! leaves.

use crate::builder::{Execution, ReceiptBuilder};
use crate::enclave::{enclave_evidence, EnclaveClient, EnclaveEvidence};
use crate::error::GatewayError;
use crate::payment::{Covered, PendingPayment, SettledPayment};
use crate::zk::ZkProver;
use crate::{now_ms, Gateway, RunToCommit};
use haca_chain::record::RecordContent;
use haca_core::canonical;
use haca_core::receipt::*;
use haca_core::settlement::SettlementMode;
use haca_core::tensor::{self, TensorMap};
use haca_core::{sha256, BlobId, Digest};
use haca_exec::{ModelCache, OnnxModel, RUNTIME};
use haca_hub::Hub;
use haca_tee::protocol::NON_FINITE_OUTPUT;
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
    /// Data items to admit, by id (a data node fetched and signed them); each must be fresh.
    #[serde(default)]
    pub data: Vec<String>,
}

/// What a run answers.
pub struct InferAnswer {
    pub run_id: haca_core::RunId,
    pub output: Value,
    pub receipt: Receipt,
    /// OpenGradient-compatible `tee_*` fields, on answers produced inside an enclave only.
    pub tee: Option<haca_tee::og_compat::TeeFields>,
    /// The x402 payment this run settled, when the node charges.
    pub payment: Option<SettledPayment>,
}

/// One ML job, as every executor takes it.
pub struct MlJob<'a> {
    pub blob_id: BlobId,
    pub request_hash: Digest,
    pub input: &'a Value,
    pub inputs: TensorMap,
}

/// What an executor returns.
pub struct Executed {
    pub outputs: TensorMap,
    pub finished_at: u64,
    /// The runtime the execution box names.
    pub runtime: String,
    /// The provider the route box names.
    pub provider: &'static str,
    pub enclave: Option<EnclaveEvidence>,
}

/// The executors of ML runs, one per mode (a zkML prover joins as a third).
pub enum MlExecutor<'a> {
    /// tract, in this process.
    Vanilla {
        hub: &'a Arc<Hub>,
        models: &'a Arc<ModelCache>,
    },
    /// tract inside the enclave, which signs the run.
    Enclave {
        client: &'a EnclaveClient,
        hub: &'a Arc<Hub>,
    },
    /// The quantized model in this process; its proof follows in the background.
    Zkml { zk: &'a ZkProver },
}

impl MlExecutor<'_> {
    pub async fn run(&self, job: MlJob<'_>) -> Result<Executed, GatewayError> {
        match self {
            MlExecutor::Vanilla { hub, models } => {
                let (hub, models) = ((*hub).clone(), (*models).clone());
                let (blob_id, inputs) = (job.blob_id, job.inputs);
                let outputs = tokio::task::spawn_blocking(move || {
                    let model = load_model(&hub, &models, blob_id)?;
                    Ok::<_, GatewayError>(model.run(&inputs, "input")?)
                })
                .await
                .map_err(|e| GatewayError::internal(format!("executor stopped: {e}")))??;
                Ok(Executed {
                    outputs,
                    finished_at: now_ms(),
                    runtime: RUNTIME.into(),
                    provider: "local/tract",
                    enclave: None,
                })
            }
            MlExecutor::Zkml { zk } => {
                let key = zk.key(job.blob_id).await?;
                // Already on the grid when the pipeline rounded it: rounding again is exact.
                let (_, q) = ZkProver::round_input(&key, &job.inputs)?;
                let outputs = ZkProver::execute(key, q).await?;
                Ok(Executed {
                    outputs,
                    finished_at: now_ms(),
                    runtime: haca_zk::SYSTEM.into(),
                    provider: "local/haca-zk",
                    enclave: None,
                })
            }
            MlExecutor::Enclave { client, hub } => {
                let hub = (*hub).clone();
                let blob_id = job.blob_id;
                let request = haca_tee::protocol::RunRequest {
                    blob_id,
                    request_hash: job.request_hash,
                    input: job.input.clone(),
                };
                let answer = client
                    .run(request, || async move {
                        tokio::task::spawn_blocking(move || hub.read_blob(&blob_id))
                            .await
                            .map_err(|e| {
                                GatewayError::internal(format!("hub reader stopped: {e}"))
                            })?
                            .map_err(GatewayError::from)
                    })
                    .await?;
                let outputs = tensor::parse_input(&answer.output, "output")
                    .map_err(|e| GatewayError::internal(format!("the enclave's output: {e}")))?;
                let evidence = enclave_evidence(&answer.signed)?;
                Ok(Executed {
                    outputs,
                    finished_at: evidence.finished_at,
                    runtime: format!("dev-enclave/{RUNTIME}"),
                    provider: "local/dev-enclave",
                    enclave: Some(evidence),
                })
            }
        }
    }
}

impl Gateway {
    /// The executor for `mode` on this node, or why the mode is not served here.
    pub fn ml_executor(&self, mode: ExecMode) -> Result<MlExecutor<'_>, GatewayError> {
        match (mode, &self.enclave) {
            (ExecMode::Vanilla, _) => Ok(MlExecutor::Vanilla {
                hub: &self.hub,
                models: &self.models,
            }),
            (ExecMode::Tee, Some(client)) => Ok(MlExecutor::Enclave {
                client,
                hub: &self.hub,
            }),
            (ExecMode::Tee, None) => Err(GatewayError::invalid(
                "mode_unavailable",
                "mode: \"tee\" is not available on this node (it runs no enclave); use \"vanilla\"",
            )),
            (ExecMode::Zkml, _) if self.zk.is_some() => {
                let zk = self.zk.as_deref().expect("checked");
                zk.admit()?;
                Ok(MlExecutor::Zkml { zk })
            }
            (ExecMode::Zkml, _) => Err(GatewayError::invalid(
                "mode_unavailable",
                "mode: \"zkml\" is not available on this node (it runs no prover); use \"vanilla\" or \"tee\"",
            )),
        }
    }

    /// Loads (or finds cached) the model behind `blob_id`.
    pub async fn warm(&self, blob_id: BlobId) -> Result<(), GatewayError> {
        let (hub, models) = (self.hub.clone(), self.models.clone());
        tokio::task::spawn_blocking(move || load_model(&hub, &models, blob_id).map(|_| ()))
            .await
            .map_err(|e| GatewayError::internal(format!("model loader stopped: {e}")))??;
        Ok(())
    }

    /// One ML run, paid by `payment` when the node charges.
    pub async fn infer(
        &self,
        req: InferRequest,
        settlement: SettlementMode,
        payment: Option<PendingPayment>,
    ) -> Result<InferAnswer, GatewayError> {
        let mode = req.mode.unwrap_or(ExecMode::Vanilla);
        if mode == ExecMode::Zkml && settlement == SettlementMode::Private {
            return Err(GatewayError::invalid(
                "mode_unavailable",
                "settlement: private is not available with mode: \"zkml\" (a proof publishes its input and output)",
            )
            .param("settlement"));
        }
        let executor = self.ml_executor(mode)?;
        let mut inputs = tensor::parse_input(&req.input, "input")?;
        let resolved = self.hub.resolve(&req.model, None)?;
        if resolved.format != "onnx" {
            return Err(GatewayError::invalid(
                "unsupported_model",
                format!(
                    "model: {} is a {} artifact, not ONNX",
                    req.model, resolved.format
                ),
            ));
        }
        let started_at = now_ms();
        // Before the run is charged: an unknown, tampered or stale item refuses it.
        let admitted = self.admit_data(&req.data, started_at)?;
        let blob_id = resolved.blob_id;
        // zkml: the model computes on its fixed-point grid, so the input is rounded to it first
        // and the receipt's input hash names the rounded input (what the proof shows).
        let mut zk_key = None;
        if mode == ExecMode::Zkml {
            let zk = self
                .zk
                .as_ref()
                .expect("ml_executor refused zkml without a prover");
            let key = zk.key(blob_id).await?;
            let (rounded, q) = ZkProver::round_input(&key, &inputs)?;
            inputs = rounded;
            zk_key = Some((key, q));
        }
        let input_hash = tensor::hash_tensors(&inputs);
        let mut hashed = json!({"kind": "infer", "model": req.model, "mode": mode.as_str(), "input_hash": input_hash.to_hex()});
        if !admitted.is_empty() {
            // The items are part of the request (a run without data hashes as before).
            hashed["data"] = json!(admitted.iter().map(|i| i.id).collect::<Vec<_>>());
        }
        let request_hash = sha256(&canonical::to_vec(&hashed).expect("strings canonicalize"));
        let run_id = self.new_run_id(&request_hash);
        // The request is runnable: its payment settles before the model runs (a replay that
        // raced this one is refused here, by the ledger's transaction).
        let charge = self
            .take_payment(
                payment,
                Covered {
                    run_id,
                    request_hash,
                    model: Some(blob_id),
                    mode,
                    max_tokens: None,
                },
            )
            .await?;
        let run = async {
            let kept_inputs = (settlement == SettlementMode::Individual).then(|| inputs.clone());
            let executed = executor
                .run(MlJob {
                    blob_id,
                    request_hash,
                    input: &req.input,
                    inputs,
                })
                .await?;
            // JSON has no NaN or infinity: an output holding one could not be re-hashed by
            // whoever receives it, so it gets no receipt (and the charge goes back).
            let output = tensor::to_json(&executed.outputs, "output").map_err(non_finite)?;
            let output_hash = tensor::hash_tensors(&executed.outputs);
            let node = self.key.node_id();
            let mut builder = ReceiptBuilder::new(run_id, settlement, started_at);
            builder
                .artifact(ArtifactEvidence {
                    label: resolved.label.clone(),
                    revision: resolved.revision,
                    blob_id,
                    format: resolved.format.clone(),
                    walrus_blob_id: resolved.walrus_blob_id.clone(),
                })
                .route(RouteEvidence::direct(executed.provider, node))
                .payment(charge.as_ref().map(|c| c.paid().evidence.clone()))
                .data(admitted)
                .proof(zk_key.as_ref().map(|(k, _)| {
                    haca_zk::receipt_check::claimed_evidence(&k.vk, input_hash, output_hash)
                }));
            let tee = executed.enclave.as_ref().map(|e| e.tee.clone());
            builder.executed(Execution {
                mode,
                runtime: executed.runtime,
                request_hash,
                input_hash,
                output_hash,
                signer: node,
                started_at,
                finished_at: executed.finished_at,
                enclave: executed.enclave,
            })?;
            let mut receipt = builder.build(&self.evidence)?;
            let content = match kept_inputs {
                Some(inputs) => Some(RecordContent {
                    input: tensor::to_json(&inputs, "input").map_err(|e| {
                        GatewayError::internal(format!("a parsed input has no JSON form: {e}"))
                    })?,
                    output: output.clone(),
                }),
                None => None,
            };
            self.commit(
                &mut receipt,
                RunToCommit {
                    model: req.model.clone(),
                    blob_id: blob_id.to_string(),
                    mode,
                    output: output.clone(),
                    content,
                    turn: None,
                    zk_job: zk_key
                        .as_ref()
                        .map(|(k, q)| ZkProver::job(&run_id.to_string(), blob_id, q, k)),
                },
            )
            .await?;
            Ok::<_, GatewayError>((output, receipt, tee))
        };
        let (output, receipt, tee) = match run.await {
            Ok(done) => done,
            Err(e) => {
                // Paid for and not stored: the charge goes back before the error is answered.
                if let Some(c) = charge {
                    c.refund(format!("the run failed: {}", e.message())).await;
                }
                return Err(e);
            }
        };
        Ok(InferAnswer {
            run_id,
            output,
            receipt,
            tee,
            payment: charge.map(crate::Charge::stored),
        })
    }
}

/// A run whose output holds a NaN or an infinity: unprocessable, [`NON_FINITE_OUTPUT`], naming the
/// element.
fn non_finite(e: tensor::TensorError) -> GatewayError {
    GatewayError::Unprocessable {
        code: NON_FINITE_OUTPUT,
        message: format!("the model's output cannot be answered or receipted: {e}"),
    }
}

/// The cached model for `blob_id`, read from the hub and loaded on a miss. Blocking.
fn load_model(
    hub: &Hub,
    models: &ModelCache,
    blob_id: BlobId,
) -> Result<Arc<OnnxModel>, GatewayError> {
    Ok(models.get_or_load(&blob_id, || {
        hub.read_blob(&blob_id).map_err(|e| e.to_string())
    })?)
}
