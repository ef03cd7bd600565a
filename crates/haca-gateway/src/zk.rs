//! zkml runs: the quantized model answers at once, and its proof is made in the background, one
//! run at a time. A proved run's receipt gets its proof box filled (`verified`), then its
//! settlement record goes to the chain, whose validators check the proof again.

use crate::error::GatewayError;
use crate::now_ms;
use haca_chain::record::RecordContent;
use haca_chain::validator::Validator;
use haca_core::receipt::{receipt_digest, BoxStatus, EvidenceBox, Receipt};
use haca_core::settlement::SettlementMode;
use haca_core::tensor::{self, TensorData, TensorMap};
use haca_core::BlobId;
use haca_hub::Hub;
use haca_store::{Store, ZkJob};
use haca_zk::receipt_check::proved_evidence;
use haca_zk::{ProvingKey, ZkError};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, Notify};

/// Where a run's proof stands, for `GET /v1/runs/{id}/proof`.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct ProofStatus {
    /// `queued`, `proving`, `proved` or `failed`
    pub status: String,
    /// Runs ahead of this one in the queue (while queued).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ahead: Option<usize>,
    /// Milliseconds since proving started (while proving), or how long it took (proved).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub elapsed_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The prover of a gateway: proving keys per blob, the job queue and its worker.
pub struct ZkProver {
    hub: Arc<Hub>,
    store: Arc<Store>,
    chain: Option<Arc<Validator>>,
    remote_outbox: Option<Arc<Notify>>,
    keys: Mutex<HashMap<BlobId, Arc<ProvingKey>>>,
    queue: mpsc::UnboundedSender<String>,
    live: Mutex<Live>,
    /// Runs queued or proving at most; a zkml run beyond is refused before payment
    /// ([`ZkProver::admit`]).
    max_queued: std::sync::atomic::AtomicUsize,
}

/// How many zkml runs may wait for their proofs by default.
pub const DEFAULT_MAX_QUEUED: usize = 64;

/// The runs queued or proving now: a counter for queue order, and per run id its place in the
/// queue and when proving started.
type Live = (u64, HashMap<String, (u64, Option<u64>)>);

fn zk_error(e: ZkError) -> GatewayError {
    match e {
        ZkError::UnsupportedOperator { .. } | ZkError::Model(_) => {
            GatewayError::invalid("zkml_unsupported", format!("model: cannot be proved: {e}"))
                .param("model")
        }
        ZkError::Input(m) => {
            GatewayError::invalid("invalid_input", format!("input: {m}")).param("input")
        }
        other => GatewayError::internal(other.to_string()),
    }
}

impl ZkProver {
    /// Starts the prover and its worker; unfinished jobs of an earlier process are queued again.
    pub fn start(
        hub: Arc<Hub>,
        store: Arc<Store>,
        chain: Option<Arc<Validator>>,
        remote_outbox: Option<Arc<Notify>>,
    ) -> Result<Arc<ZkProver>, GatewayError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let zk = Arc::new(ZkProver {
            hub,
            store,
            chain,
            remote_outbox,
            keys: Mutex::new(HashMap::new()),
            queue: tx,
            live: Mutex::new((0, HashMap::new())),
            max_queued: std::sync::atomic::AtomicUsize::new(DEFAULT_MAX_QUEUED),
        });
        let pending = zk.store.unfinished_zk_jobs()?;
        if !pending.is_empty() {
            tracing::info!(
                "zkml: proving {} runs an earlier process left unproved",
                pending.len()
            );
        }
        for job in pending {
            zk.enqueue(&job.run_id);
        }
        tokio::spawn(worker(Arc::downgrade(&zk), rx));
        Ok(zk)
    }

    /// The proving key of a blob: its model quantized and its weights committed, made once.
    pub async fn key(&self, blob_id: BlobId) -> Result<Arc<ProvingKey>, GatewayError> {
        if let Some(k) = self.keys.lock().expect("keys lock").get(&blob_id) {
            return Ok(k.clone());
        }
        let hub = self.hub.clone();
        let pk = tokio::task::spawn_blocking(move || {
            let bytes = hub.read_blob(&blob_id)?;
            let started = std::time::Instant::now();
            let pk = haca_zk::setup(&bytes, haca_zk::DEFAULT_INPUT_BOUND).map_err(zk_error)?;
            tracing::info!(
                "zkml: blob {blob_id} quantized (activation scale 2^{}) and its weights committed in {} ms",
                pk.vk.net.act_scale,
                started.elapsed().as_millis()
            );
            Ok::<_, GatewayError>(Arc::new(pk))
        })
        .await
        .map_err(|e| GatewayError::internal(format!("zkml setup stopped: {e}")))??;
        // Two first uses may both have made it: every caller gets the one kept.
        Ok(self
            .keys
            .lock()
            .expect("keys lock")
            .entry(blob_id)
            .or_insert(pk)
            .clone())
    }

    /// Rounds a request's input to the model's fixed-point grid: the values the model and its
    /// proof compute on, and what the receipt's input hash names. Returns the rounded tensors
    /// and the quantized values.
    pub fn round_input(
        pk: &ProvingKey,
        inputs: &TensorMap,
    ) -> Result<(TensorMap, Vec<i64>), GatewayError> {
        let spec = &pk.vk.net;
        let name = &spec.input_name;
        let [(given, t)] = inputs.iter().collect::<Vec<_>>()[..] else {
            return Err(GatewayError::invalid(
                "invalid_input",
                format!(
                    "input: a zkml run takes one tensor, {name:?}; {} were given",
                    inputs.len()
                ),
            )
            .param("input"));
        };
        if given != name {
            return Err(GatewayError::invalid(
                "invalid_input",
                format!("input.{given}: the model's input is named {name:?}"),
            )
            .param(format!("input.{given}")));
        }
        let at = format!("input.{name}");
        if t.shape.iter().product::<usize>() != spec.input_shape.iter().product::<usize>() {
            return Err(GatewayError::invalid(
                "invalid_input",
                format!(
                    "{at}.shape: {:?} does not fit the model's input {:?}",
                    t.shape, spec.input_shape
                ),
            )
            .param(format!("{at}.shape")));
        }
        let data: Vec<f32> = match &t.data {
            TensorData::F32(v) => v.clone(),
            TensorData::F64(v) => v.iter().map(|&x| x as f32).collect(),
            TensorData::I64(v) => v.iter().map(|&x| x as f32).collect(),
            TensorData::I32(v) => v.iter().map(|&x| x as f32).collect(),
            TensorData::U8(v) => v.iter().map(|&x| x as f32).collect(),
            TensorData::Bool(_) | TensorData::Str(_) => {
                return Err(GatewayError::invalid(
                    "invalid_input",
                    format!("{at}.dtype: zkml takes numbers"),
                )
                .param(at))
            }
        };
        let q = spec.quantize_input(&data).map_err(|e| {
            GatewayError::invalid(
                "invalid_input",
                format!("{at}.data: {}", e.to_string().trim_start_matches("input")),
            )
            .param(format!("{at}.data"))
        })?;
        Ok((spec.input_tensors(&q), q))
    }

    /// The quantized model's output for a rounded input: what the proof will show.
    pub async fn execute(pk: Arc<ProvingKey>, q: Vec<i64>) -> Result<TensorMap, GatewayError> {
        tokio::task::spawn_blocking(move || {
            let trace = pk.net.run(&q).map_err(zk_error)?;
            Ok::<_, GatewayError>(pk.vk.net.output_tensors(&trace.output))
        })
        .await
        .map_err(|e| GatewayError::internal(format!("zkml executor stopped: {e}")))?
    }

    /// The job a zkml run stores with itself.
    pub fn job(run_id: &str, blob_id: BlobId, q: &[i64], pk: &ProvingKey) -> ZkJob {
        let x = pk.vk.net.dequantize_input(q);
        ZkJob {
            run_id: run_id.to_string(),
            blob_id: blob_id.to_string(),
            input: serde_json::to_string(&x).expect("finite numbers serialize"),
        }
    }

    /// Sets how many runs may be queued or proving at once (at least 1).
    pub fn set_max_queued(&self, n: usize) {
        self.max_queued
            .store(n.max(1), std::sync::atomic::Ordering::Relaxed);
    }

    /// Refuses a new zkml run while the proof queue is full: 503 `prover_busy` with
    /// Retry-After, before anything is paid or run. (Runs admitted at once may pass the bound
    /// by their number: a soft limit on what waits, not a reservation.)
    pub fn admit(&self) -> Result<(), GatewayError> {
        let max = self.max_queued.load(std::sync::atomic::Ordering::Relaxed);
        let n = self.live.lock().expect("live lock").1.len();
        if n >= max {
            return Err(GatewayError::unavailable(
                "prover_busy",
                format!("{n} zkml runs wait for their proofs (at most {max}); retry later or use mode vanilla"),
            )
            .retry_after(5));
        }
        Ok(())
    }

    pub fn enqueue(&self, run_id: &str) {
        {
            let mut live = self.live.lock().expect("live lock");
            live.0 += 1;
            let order = live.0;
            live.1.insert(run_id.to_string(), (order, None));
        }
        let _ = self.queue.send(run_id.to_string());
    }

    /// Where the proof of `run_id` stands; `None` for a run that is not zkml.
    pub fn status(&self, run_id: &str) -> Result<Option<ProofStatus>, GatewayError> {
        {
            let live = self.live.lock().expect("live lock");
            if let Some(&(order, started)) = live.1.get(run_id) {
                return Ok(Some(match started {
                    Some(t) => ProofStatus {
                        status: "proving".into(),
                        ahead: None,
                        elapsed_ms: Some(now_ms().saturating_sub(t)),
                        error: None,
                    },
                    None => ProofStatus {
                        status: "queued".into(),
                        ahead: Some(live.1.values().filter(|(o, _)| *o < order).count()),
                        elapsed_ms: None,
                        error: None,
                    },
                }));
            }
        }
        let Some(job) = self.store.zk_job(run_id)? else {
            return Ok(None);
        };
        Ok(Some(ProofStatus {
            status: job.status,
            ahead: None,
            elapsed_ms: job.finished_at.map(|f| f.saturating_sub(job.created_at)),
            error: job.error,
        }))
    }

    /// Proves one queued run and attaches the outcome to its receipt.
    async fn prove_one(&self, run_id: &str) -> Result<(), GatewayError> {
        let job = self
            .store
            .zk_job(run_id)?
            .ok_or_else(|| GatewayError::internal(format!("run {run_id} has no proof job")))?;
        if job.status == "proved" || job.status == "failed" {
            return Ok(());
        }
        self.store.set_zk_proving(run_id).await?;
        let started = now_ms();
        if let Some(e) = self.live.lock().expect("live lock").1.get_mut(run_id) {
            e.1 = Some(started);
        }
        let blob_id: BlobId = job.blob_id.parse().map_err(|e| {
            GatewayError::internal(format!("proof job of run {run_id}: blob id: {e}"))
        })?;
        let x: Vec<f32> = serde_json::from_str(&job.input).map_err(|e| {
            GatewayError::internal(format!("proof job of run {run_id}: input: {e}"))
        })?;
        let pk = self.key(blob_id).await?;
        let proving = pk.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            let t = std::time::Instant::now();
            let (_, proof) = proving.prove(&x)?;
            let ms = t.elapsed().as_millis() as u64;
            // The node checks its own proof with the verifier, not the prover's word.
            haca_zk::verify(&proving.vk, &proof)?;
            Ok::<_, ZkError>((proof, ms))
        })
        .await
        .map_err(|e| GatewayError::internal(format!("prover stopped: {e}")))?;

        let rec = self
            .store
            .get_run(run_id)?
            .ok_or_else(|| GatewayError::internal(format!("run {run_id} is not stored")))?;
        let mut receipt: Receipt = serde_json::from_str(&rec.receipt)
            .map_err(|e| GatewayError::internal(format!("stored receipt of run {run_id}: {e}")))?;
        let now = now_ms();
        let (outbox, error, record) = match outcome {
            Ok((proof, ms)) => {
                let claimed = receipt.boxes.proof.evidence.clone();
                let ev = proved_evidence(&pk.vk, &proof, ms);
                if let Some(c) = claimed {
                    if c.input_hash != ev.input_hash || c.output_hash != ev.output_hash {
                        return Err(GatewayError::internal(format!(
                            "run {run_id}: the proof's statement is not the one its receipt claimed"
                        )));
                    }
                }
                let history = std::mem::take(&mut receipt.boxes.proof.history);
                receipt.boxes.proof = EvidenceBox {
                    status: BoxStatus::Claimed,
                    history,
                    evidence: Some(ev),
                };
                receipt.boxes.proof.set_status(BoxStatus::Verified, now);
                tracing::info!("run {run_id}: proved in {ms} ms and verified");
                let settlement = receipt.settlement_mode.unwrap_or_default();
                let content = (settlement == SettlementMode::Individual).then(|| RecordContent {
                    input: tensor::to_json(&pk.vk.net.input_tensors(&proof.input), "input")
                        .expect("finite input"),
                    output: tensor::to_json(&pk.vk.net.output_tensors(&proof.output), "output")
                        .expect("finite output"),
                });
                let digest = receipt_digest(&receipt.to_value());
                let record = haca_chain::RunRecord::signed(&receipt, digest, settlement, content)
                    .map_err(GatewayError::internal)?;
                let outbox = self
                    .chain
                    .as_ref()
                    .map(|_| serde_json::to_string(&record).expect("records serialize"));
                (outbox, None, Some(record))
            }
            Err(e) => {
                tracing::error!("run {run_id}: its proof failed: {e}");
                receipt.boxes.proof.set_status(BoxStatus::Failed, now);
                (None, Some(e.to_string()), None)
            }
        };
        let text = serde_json::to_string(&receipt).expect("receipt serializes");
        self.store
            .finish_zk_job(run_id, text, outbox, error, now)
            .await?;
        self.live.lock().expect("live lock").1.remove(run_id);
        if let Some(record) = record {
            if let Some(wake) = &self.remote_outbox {
                wake.notify_one();
            } else if let Some(chain) = &self.chain {
                let chain = chain.clone();
                let id = run_id.to_string();
                tokio::task::spawn_blocking(move || {
                    if let Err(e) = chain.submit(record) {
                        tracing::warn!("run {id}: not submitted for settlement yet: {e}");
                    }
                });
            }
        }
        Ok(())
    }
}

async fn worker(zk: std::sync::Weak<ZkProver>, mut rx: mpsc::UnboundedReceiver<String>) {
    while let Some(run_id) = rx.recv().await {
        let Some(zk) = zk.upgrade() else { return };
        if let Err(e) = zk.prove_one(&run_id).await {
            tracing::error!("run {run_id}: proof job stopped: {}", e.message());
            zk.live.lock().expect("live lock").1.remove(&run_id);
        }
    }
}

#[cfg(test)]
mod bound_tests {
    use super::*;

    /// The worker runs only when the test yields, so what waits is exactly what was queued.
    #[tokio::test(flavor = "current_thread")]
    async fn a_full_proof_queue_refuses_new_zkml_runs_with_retry_after() {
        let dir = std::env::temp_dir().join(format!("haca-zk-bound-{}", crate::random_hex(8)));
        std::fs::create_dir_all(&dir).unwrap();
        let store = Arc::new(Store::open(dir.join("haca.db")).unwrap());
        let hub = Arc::new(
            Hub::open(
                store.clone(),
                dir.join("blobs"),
                Arc::new(haca_exec::ModelCheck),
            )
            .unwrap(),
        );
        let zk = ZkProver::start(hub, store, None, None).unwrap();
        zk.set_max_queued(2);
        zk.admit().unwrap();
        zk.enqueue("run-a");
        zk.admit().unwrap();
        zk.enqueue("run-b");
        let e = zk.admit().unwrap_err();
        assert_eq!(e.code(), "prover_busy");
        assert!(e.message().contains("at most 2"), "{}", e.message());
        zk.set_max_queued(3);
        zk.admit().unwrap();
        drop(zk);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
