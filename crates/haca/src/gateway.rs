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
    /// OpenGradient-compatible `tee_*` fields, on answers produced inside an enclave only.
    pub tee: Option<haca_tee::og_compat::TeeFields>,
    /// The x402 payment this run settled, when the node charges.
    pub payment: Option<crate::payments::SettledPayment>,
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
    /// The dev enclave process that serves `mode: "tee"` (devnet); `None` when this node has
    /// no enclave.
    pub enclave: Option<Arc<crate::enclave::EnclaveSupervisor>>,
    pub http: reqwest::Client,
}

/// What the enclave answered for one run.
struct EnclaveRun {
    tee: haca_tee::og_compat::TeeFields,
    outputs: TensorMap,
    output_hash: haca_core::Digest,
    finished_at: u64,
    attestation: AttestationEvidence,
}

impl Gateway {
    /// The stored receipt of `rec` with its settlement box filled, once its round has
    /// committed; `None` while it is pending (the stored text is then the receipt). The
    /// settlement box lies outside the signed view, so the gateway's signature still holds.
    pub fn settled_receipt(
        &self,
        rec: &haca_store::RunRecord,
    ) -> Result<Option<haca_core::Receipt>, ApiError> {
        let run: haca_core::RunId = rec
            .run_id
            .parse()
            .map_err(|e| ApiError::internal(format!("stored run id {}: {e}", rec.run_id)))?;
        let settled = match &self.chain {
            Some(chain) => chain
                .settlement(&run)
                .map_err(|e| ApiError::internal(e.to_string()))?,
            None => haca_chain::validator::RunSettlement::Pending,
        };
        let haca_chain::validator::RunSettlement::Settled(ev) = settled else {
            return Ok(None);
        };
        let mut receipt: haca_core::Receipt = serde_json::from_str(&rec.receipt)
            .map_err(|e| ApiError::internal(format!("stored receipt is damaged: {e}")))?;
        let at = ev.header.time_ms;
        receipt.boxes.settlement =
            haca_core::receipt::EvidenceBox::with(*ev, haca_core::receipt::BoxStatus::Settled, at);
        Ok(Some(receipt))
    }

    /// [`Gateway::settled_receipt`], or the stored receipt, parsed for checking claims.
    pub fn current_receipt(
        &self,
        rec: &haca_store::RunRecord,
    ) -> Result<haca_core::receipt::ParsedReceipt, ApiError> {
        use haca_core::receipt::ParsedReceipt;
        match self.settled_receipt(rec)? {
            Some(r) => Ok(ParsedReceipt::from_receipt(r)),
            None => ParsedReceipt::from_json_str(&rec.receipt).map_err(|e| {
                ApiError::internal(format!(
                    "stored receipt of run {} is damaged: {e}",
                    rec.run_id
                ))
            }),
        }
    }

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
        payment: Option<crate::payments::PendingPayment>,
    ) -> Result<InferAnswer, ApiError> {
        let mode = req.mode.unwrap_or(ExecMode::Vanilla);
        match mode {
            ExecMode::Vanilla => {}
            ExecMode::Tee if self.enclave.is_some() => {}
            ExecMode::Tee => {
                return Err(ApiError::bad_request(
                    "mode_unavailable",
                    "mode: \"tee\" is not available on this node (it runs no enclave); use \"vanilla\"",
                ))
            }
            ExecMode::Zkml => {
                return Err(ApiError::bad_request(
                    "mode_unavailable",
                    "mode: \"zkml\" is not available on this node (it runs no prover); use \"vanilla\" or \"tee\"",
                ))
            }
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
        let input_hash = tensor::hash_tensors(&inputs);
        let request_hash = sha256(
            &canonical::to_vec(&json!({"kind": "infer", "model": req.model, "mode": mode.as_str(), "input_hash": input_hash.to_hex()}))
                .expect("strings canonicalize"),
        );
        // x402: the request is runnable; settle its payment before the model runs (a replay
        // that raced this one is refused here, by the ledger's transaction).
        let payment = match payment {
            Some(p) => Some(
                p.settle(crate::payments::Covered {
                    request_hash,
                    model: Some(blob_id),
                    mode,
                    max_tokens: None,
                })
                .await?,
            ),
            None => None,
        };
        let (inputs, outputs, finished_at, attestation) = if mode == ExecMode::Tee {
            let run = self
                .run_in_enclave(blob_id, request_hash, &req.input, input_hash)
                .await?;
            (
                inputs,
                run.outputs,
                run.finished_at,
                Some((run.attestation, run.output_hash, run.tee)),
            )
        } else {
            let (hub, models) = (self.hub.clone(), self.models.clone());
            let (inputs, outputs) =
                tokio::task::spawn_blocking(move || -> Result<(TensorMap, TensorMap), ApiError> {
                    let model = load_model(&hub, &models, blob_id)?;
                    let out = model.run(&inputs, "input")?;
                    Ok((inputs, out))
                })
                .await
                .map_err(|e| ApiError::internal(format!("executor stopped: {e}")))??;
            (inputs, outputs, now_ms(), None)
        };
        let output_hash = tensor::hash_tensors(&outputs);
        if let Some((_, enclave_hash, _)) = &attestation {
            if *enclave_hash != output_hash {
                return Err(ApiError::internal(
                    "the enclave's output does not hash to the output hash it signed",
                ));
            }
        }
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
        let provider = if attestation.is_some() {
            "local/dev-enclave"
        } else {
            "local/tract"
        };
        receipt.boxes.route = EvidenceBox::with(
            RouteEvidence::direct(provider, node),
            BoxStatus::Claimed,
            started_at,
        );
        let mut tee = None;
        if let Some((att, _, fields)) = attestation {
            let at = att.timestamp;
            receipt.boxes.attestation = EvidenceBox::with(att, BoxStatus::Claimed, at);
            tee = Some(fields);
        }
        receipt.boxes.execution = EvidenceBox::with(
            ExecutionEvidence {
                mode,
                runtime: if mode == ExecMode::Tee {
                    format!("dev-enclave/{RUNTIME}")
                } else {
                    RUNTIME.into()
                },
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
        if let Some(paid) = &payment {
            receipt.boxes.payment = EvidenceBox::with(
                paid.evidence.clone(),
                BoxStatus::Claimed,
                paid.evidence.verified_at,
            );
        }
        let output = tensor::to_json(&outputs);
        let content = (settlement == SettlementMode::Individual).then(|| RecordContent {
            input: tensor::to_json(&inputs),
            output: output.clone(),
        });
        self.commit(
            &mut receipt,
            RunToCommit {
                model: req.model,
                blob_id: blob_id.to_string(),
                mode,
                output: output.clone(),
                content,
                turn: None,
            },
        )
        .await?;
        Ok(InferAnswer {
            run_id,
            output,
            receipt,
            tee,
            payment,
        })
    }
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
    /// Signs `receipt`, stores the run with its settlement record (and chat turn) in one
    /// transaction, then hands the record to the chain off the answer's path. Returns the
    /// turn's number when the run is a conversation's turn.
    pub async fn commit(
        &self,
        receipt: &mut Receipt,
        run: RunToCommit,
    ) -> Result<Option<u64>, ApiError> {
        let settlement = receipt.settlement_mode.unwrap_or_default();
        let run_id = receipt.run_id;
        let digest = receipt
            .sign(&self.key)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let chain_record = haca_chain::RunRecord::signed(receipt, digest, settlement, run.content)
            .map_err(ApiError::internal)?;
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

    /// Runs the model in the dev enclave: sends it the artifact when it lacks it, the input,
    /// and takes back the output with the run signature and the attestation document.
    async fn run_in_enclave(
        &self,
        blob_id: BlobId,
        request_hash: haca_core::Digest,
        input: &Value,
        input_hash: haca_core::Digest,
    ) -> Result<EnclaveRun, ApiError> {
        let url = self.enclave.as_ref().and_then(|e| e.url()).ok_or_else(|| {
            ApiError::unavailable("enclave_down", "the enclave is restarting; try again")
        })?;
        let unreachable = |e: reqwest::Error| {
            ApiError::unavailable("enclave_down", format!("the enclave did not answer: {e}"))
        };
        let body = json!({"blob_id": blob_id, "request_hash": request_hash, "input": input});
        let mut resp = self
            .http
            .post(format!("{url}/run"))
            .json(&body)
            .send()
            .await
            .map_err(unreachable)?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            // First run of this artifact in this enclave: hand it the bytes (it hashes them).
            let hub = self.hub.clone();
            let bytes = tokio::task::spawn_blocking(move || hub.read_blob(&blob_id))
                .await
                .map_err(|e| ApiError::internal(format!("hub reader stopped: {e}")))??;
            let put = self
                .http
                .put(format!("{url}/models/{blob_id}"))
                .body(bytes)
                .send()
                .await
                .map_err(unreachable)?;
            if !put.status().is_success() {
                let text = put.text().await.unwrap_or_default();
                return Err(ApiError::internal(format!(
                    "the enclave refused the artifact: {text}"
                )));
            }
            resp = self
                .http
                .post(format!("{url}/run"))
                .json(&body)
                .send()
                .await
                .map_err(unreachable)?;
        }
        let status = resp.status();
        let v: Value = resp
            .json()
            .await
            .map_err(|e| ApiError::internal(format!("the enclave's answer is not JSON: {e}")))?;
        if !status.is_success() {
            let msg = v["error"]["message"]
                .as_str()
                .unwrap_or("no reason given")
                .to_owned();
            return Err(if status.is_client_error() {
                ApiError::bad_request("enclave_refused", msg)
            } else {
                ApiError::internal(format!("the enclave failed: {msg}"))
            });
        }
        let bad =
            |what: &str| ApiError::internal(format!("the enclave's answer lacks a valid {what}"));
        let digest = |field: &str| -> Result<haca_core::Digest, ApiError> {
            v[field]
                .as_str()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| bad(field))
        };
        if digest("input_hash")? != input_hash {
            return Err(ApiError::internal(
                "the enclave hashed a different input than the gateway sent",
            ));
        }
        let outputs = tensor::parse_input(&v["output"], "output")
            .map_err(|e| ApiError::internal(format!("the enclave's output: {e}")))?;
        let (attestation, tee) = enclave_evidence(&v)?;
        Ok(EnclaveRun {
            tee,
            outputs,
            output_hash: digest("output_hash")?,
            finished_at: v["finished_at"]
                .as_u64()
                .ok_or_else(|| bad("finished_at"))?,
            attestation,
        })
    }
}

/// The attestation box and OpenGradient-compatible fields of an enclave's answer `v`
/// (`document_b64`, `enclave_key`, `run_signature`, `tee`, `signing_key_pem`), checked
/// before they reach a client.
pub(crate) fn enclave_evidence(
    v: &Value,
) -> Result<(AttestationEvidence, haca_tee::og_compat::TeeFields), ApiError> {
    let bad = |what: &str| ApiError::internal(format!("the enclave's answer lacks a valid {what}"));
    let document_b64 = v["document_b64"]
        .as_str()
        .ok_or_else(|| bad("document_b64"))?
        .to_owned();
    let document =
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &document_b64)
            .map_err(|_| bad("document_b64"))?;
    let enclave_key: haca_core::NodeId = v["enclave_key"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("enclave_key"))?;
    let doc = haca_tee::nitro::parse(&document)
        .map_err(|e| ApiError::internal(format!("the enclave's attestation document: {e}")))?;
    let tee = og_fields(v, &doc).map_err(|e| {
        ApiError::internal(format!("the enclave's OpenGradient-compatible fields: {e}"))
    })?;
    let attestation = AttestationEvidence {
        kind: "dev".into(),
        document_digest: sha256(&document),
        pcrs: doc
            .pcrs
            .iter()
            .filter(|(_, v)| v.iter().any(|b| *b != 0))
            .map(|(k, v)| (k.to_string(), hex::encode(v)))
            .collect(),
        key_binding: "public_key".into(),
        timestamp: doc.timestamp_ms,
        root: "haca dev enclave root".into(),
        dev: true,
        document_b64: Some(document_b64),
        enclave_key: Some(enclave_key),
        run_signature: Some(
            v["run_signature"]
                .as_str()
                .ok_or_else(|| bad("run_signature"))?
                .to_owned(),
        ),
    };
    Ok((attestation, tee))
}

/// The enclave's `tee` fields, checked before they reach a client: signed by the RSA key
/// whose SubjectPublicKeyInfo digest the document's nitriding `user_data` holds.
fn og_fields(
    v: &Value,
    doc: &haca_tee::AttestationDocument,
) -> Result<haca_tee::og_compat::TeeFields, String> {
    use haca_tee::og_compat;
    let fields: og_compat::TeeFields =
        serde_json::from_value(v["tee"].clone()).map_err(|e| format!("tee: {e}"))?;
    let pem = v["signing_key_pem"]
        .as_str()
        .ok_or("signing_key_pem: missing")?;
    let spki = og_compat::spki_der_of_pem(pem)?;
    let bound = doc
        .user_data
        .as_deref()
        .ok_or("the document has no user_data binding the RSA key")
        .and_then(|u| {
            haca_tee::NitridingUserData::parse(u)
                .map_err(|_| "the document's user_data is not nitriding's")
        })?;
    if bound.signing_key_sha256 != sha256(&spki).0 {
        return Err("the document's user_data binds another RSA key".into());
    }
    og_compat::verify_fields(&spki, &fields)?;
    Ok(fields)
}

/// The cached model for `blob_id`, read from the hub and loaded on a miss. Blocking.
fn load_model(hub: &Hub, models: &ModelCache, blob_id: BlobId) -> Result<Arc<OnnxModel>, ApiError> {
    Ok(models.get_or_load(&blob_id, || {
        hub.read_blob(&blob_id).map_err(|e| e.to_string())
    })?)
}
