//! The dev enclave process: a separate process (`haca enclave`) that holds a run key no other process
//! sees, proves it with attestation documents in AWS Nitro's format (signed by a local dev CA,
//! so always marked `dev`), and runs ONNX models on request, signing each run's artifact and
//! hashes with that key.
//!
//! What an attestation proves: measured code (PCR0 is the SHA-384 of this very binary) holds
//! this key. It says nothing about whether an answer is good. In a real Nitro enclave the NSM
//! device stands behind the same `Attester` trait (`haca_tee::attester`, feature `nsm`).
//!
//! The gateway reaches it over loopback HTTP, in the typed messages of
//! [`haca_tee::protocol`] (this process imports nothing of the gateway):
//! - `GET /attestation?nonce=HEX`: a fresh document binding the run key (and the nonce);
//! - `PUT /models/{blob_id}`: the artifact's bytes (the enclave hashes them itself);
//! - `POST /run` `{blob_id, request_hash, input}`: output, hashes, the run signature over
//!   [`haca_core::receipt::tee_run_message`], the document the key is bound by, and the
//!   OpenGradient-compatible `tee` fields ([`haca_tee::og_compat`]);
//! - `POST /chat` `{body}`: a chat completion on the local LLM (started with `--llm-model`),
//!   signed like a run: the artifact is the GGUF, the hashes are haca's chat request, input
//!   and output hashes ([`haca_exec::llm::call`]), and the `tee` fields OpenGradient's chat hashes;
//! - `POST /heartbeat` `{at_ms}`: the run key's heartbeat signature for the TEE registry.
//!
//! Two keys live here: the Ed25519 run key (bound by the document's `public_key`) signs runs
//! and heartbeats; an RSA-2048 key (bound by nitriding-style `user_data`: SHA-256 of its
//! SubjectPublicKeyInfo; the enclave has no TLS certificate, so that digest is of nothing)
//! signs the OpenGradient-compatible fields.

use super::error::ApiError;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use base64::Engine as _;
use haca_core::receipt::tee_run_message;
use haca_core::{tensor, BlobId, NodeKey};
use haca_exec::llm::call::{hash_json, output_json, Cancel};
use haca_exec::llm::{call_hashes, generate_local, Call};
use haca_exec::OnnxModel;
use haca_tee::attester::{Attester, DevAttester};
use haca_tee::dev::{dev_pcrs, DevCa};
use haca_tee::og_compat::OgSigner;
use haca_tee::protocol::{self as wire, Signed};
use haca_tee::NitridingUserData;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path as FsPath;
use std::sync::{Arc, Mutex, RwLock};

/// How long one attestation document is handed out with runs before a fresh one is made.
const DOCUMENT_LIFETIME_MS: u64 = 10 * 60_000;

struct Enclave {
    key: NodeKey,
    og: OgSigner,
    /// The dev CA's attester, or (`haca enclave --nsm`, feature `nsm`) the Nitro Secure
    /// Module's.
    attester: Box<dyn Attester>,
    /// The PCRs the attester's documents state, and the root they chain to.
    pcrs: BTreeMap<u8, Vec<u8>>,
    root_fingerprint: String,
    /// The current document binding `key` (bytes, time made).
    document: RwLock<(Vec<u8>, u64)>,
    models: Mutex<HashMap<BlobId, Arc<OnnxModel>>>,
    /// The GGUF `/chat` serves, loaded on the first chat.
    llm_path: Option<std::path::PathBuf>,
    llm: tokio::sync::OnceCell<Arc<haca_exec::llm::LocalLlm>>,
}

impl Enclave {
    fn fresh_document(&self, nonce: Option<&[u8]>) -> Result<Vec<u8>, ApiError> {
        let public = self.key.node_id().0;
        let user_data = NitridingUserData::for_keys(&[], self.og.spki_der()).to_bytes();
        self.attester
            .attest(Some(&public), Some(&user_data), nonce)
            .map_err(|e| ApiError::internal(format!("attestation: {e}")))
    }

    /// The document runs carry, renewed when it gets old.
    fn run_document(&self) -> Result<Vec<u8>, ApiError> {
        let now = crate::now_ms();
        {
            let d = self.document.read().expect("document lock");
            if now.saturating_sub(d.1) < DOCUMENT_LIFETIME_MS {
                return Ok(d.0.clone());
            }
        }
        let doc = self.fresh_document(None)?;
        *self.document.write().expect("document lock") = (doc.clone(), now);
        Ok(doc)
    }
}

type S = State<Arc<Enclave>>;

#[derive(Deserialize)]
struct NonceQuery {
    nonce: Option<String>,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn pcr_hex(pcrs: &BTreeMap<u8, Vec<u8>>) -> BTreeMap<String, String> {
    pcrs.iter()
        .map(|(k, v)| (k.to_string(), hex::encode(v)))
        .collect()
}

async fn attestation(
    State(e): S,
    Query(q): Query<NonceQuery>,
) -> Result<Json<wire::AttestationAnswer>, ApiError> {
    let nonce = match &q.nonce {
        Some(h) => Some(hex::decode(h).map_err(|err| {
            ApiError::bad_request("invalid_nonce", format!("nonce: not hex: {err}"))
        })?),
        None => None,
    };
    if nonce
        .as_ref()
        .is_some_and(|n| n.len() > wire::MAX_NONCE_BYTES)
    {
        return Err(ApiError::bad_request(
            "invalid_nonce",
            format!("nonce: at most {} bytes", wire::MAX_NONCE_BYTES),
        ));
    }
    let doc = e.fresh_document(nonce.as_deref())?;
    Ok(Json(wire::AttestationAnswer {
        document_b64: b64(&doc),
        enclave_key: e.key.node_id(),
        pcrs: pcr_hex(&e.pcrs),
        root_fingerprint: e.root_fingerprint.clone(),
        dev: e.attester.is_dev(),
        tee_id: e.og.tee_id(),
        signing_key_pem: e.og.public_pem(),
    }))
}

/// Signs a heartbeat for the TEE registry with the run key (only this process holds it).
async fn heartbeat(
    State(e): S,
    Json(req): Json<wire::HeartbeatRequest>,
) -> Json<wire::HeartbeatAnswer> {
    Json(wire::HeartbeatAnswer {
        tee_id: haca_tee::registry::tee_id_of(&e.key.node_id()),
        at_ms: req.at_ms,
        signature: haca_tee::registry::sign_heartbeat(&e.key, req.at_ms),
    })
}

async fn put_model(
    State(e): S,
    Path(blob_id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<wire::PutModelAnswer>, ApiError> {
    let want: BlobId = blob_id
        .parse()
        .map_err(|err| ApiError::bad_request("invalid_blob_id", format!("blob id: {err}")))?;
    let got = BlobId::of(&body);
    if got != want {
        return Err(ApiError::bad_request(
            "blob_mismatch",
            format!("the bytes hash to {got}, not {want}"),
        ));
    }
    let model = tokio::task::spawn_blocking(move || OnnxModel::load(&body))
        .await
        .map_err(|err| ApiError::internal(format!("loader stopped: {err}")))??;
    e.models
        .lock()
        .expect("models lock")
        .insert(want, Arc::new(model));
    Ok(Json(wire::PutModelAnswer { blob_id: want }))
}

impl Enclave {
    /// Signs a finished run: the run key over [`tee_run_message`], the document binding it,
    /// and the OpenGradient-compatible fields over `og` (request and output hashes).
    fn sign(
        &self,
        blob_id: &BlobId,
        request_hash: &haca_core::Digest,
        input_hash: haca_core::Digest,
        output_hash: haca_core::Digest,
        og: ([u8; 32], [u8; 32]),
    ) -> Result<Signed, ApiError> {
        let finished_at = crate::now_ms();
        let msg = tee_run_message(
            blob_id,
            request_hash,
            &input_hash,
            &output_hash,
            finished_at,
        );
        let doc = self.run_document()?;
        Ok(Signed {
            tee: self.og.sign(og.0, og.1, finished_at / 1000),
            signing_key_pem: self.og.public_pem(),
            input_hash,
            output_hash,
            finished_at,
            run_signature: hex::encode(self.key.sign(&msg)),
            enclave_key: self.key.node_id(),
            document_b64: b64(&doc),
        })
    }
}

async fn run(
    State(e): S,
    Json(req): Json<wire::RunRequest>,
) -> Result<Json<wire::RunAnswer>, ApiError> {
    let model = e
        .models
        .lock()
        .expect("models lock")
        .get(&req.blob_id)
        .cloned()
        .ok_or_else(|| {
            ApiError::not_found(
                wire::MODEL_NOT_LOADED,
                format!(
                    "blob {} is not loaded in the enclave; PUT it first",
                    req.blob_id
                ),
            )
        })?;
    let inputs = tensor::parse_input(&req.input, "input")?;
    let outputs = tokio::task::spawn_blocking({
        let inputs = inputs.clone();
        move || model.run(&inputs, "input")
    })
    .await
    .map_err(|err| ApiError::internal(format!("executor stopped: {err}")))??;
    // JSON has no NaN or infinity: such an output is neither signed nor answered.
    let output = tensor::to_json(&outputs, "output").map_err(|err| {
        ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            wire::NON_FINITE_OUTPUT,
            format!("the model's output cannot be answered or signed: {err}"),
        )
    })?;
    let og = haca_tee::og_compat::ml_hashes(&req.blob_id.to_string(), &req.input, &output);
    let signed = e.sign(
        &req.blob_id,
        &req.request_hash,
        tensor::hash_tensors(&inputs),
        tensor::hash_tensors(&outputs),
        og,
    )?;
    Ok(Json(wire::RunAnswer {
        output,
        signed,
        pcrs: pcr_hex(&e.pcrs),
    }))
}

async fn chat(
    State(e): S,
    Json(req): Json<wire::ChatRunRequest>,
) -> Result<Json<wire::ChatAnswer>, ApiError> {
    let path = e.llm_path.clone().ok_or_else(|| {
        ApiError::not_found(
            wire::MODEL_NOT_LOADED,
            "this enclave was started without --llm-model",
        )
    })?;
    let call = Call::Chat(haca_exec::llm::ChatRequest::parse(req.body.clone())?);
    let llm = e
        .llm
        .get_or_try_init(|| async move {
            tokio::task::spawn_blocking(move || {
                haca_exec::llm::LocalLlm::load(&path, &mut |_, _| {})
            })
            .await
            .map_err(|err| ApiError::internal(format!("model loader stopped: {err}")))?
            .map(Arc::new)
            .map_err(|err| ApiError::unavailable("model_unavailable", err.to_string()))
        })
        .await?
        .clone();
    // The enclave hashes the request itself: it signs what it served, not what it was told.
    let (request_hash, input_hash) = call_hashes(&call)?;
    // The gateway hanging up (its client went away) drops this future: stop generating too.
    let cancel = Cancel::new();
    let _stop_when_dropped = cancel.on_drop();
    let answer = tokio::task::spawn_blocking({
        let (llm, call) = (llm.clone(), call.clone());
        move || generate_local(&llm, &call, "", None, &cancel)
    })
    .await
    .map_err(|err| ApiError::internal(format!("generator stopped: {err}")))??;
    let output = output_json(&answer.content, &answer.tool_calls, &answer.finish_reason);
    let output_hash = hash_json(&output)?;
    let og_request = haca_tee::og_compat::chat_request_hash(&req.body)
        .map_err(|err| ApiError::bad_request("invalid_input", err))?;
    let calls =
        (!answer.tool_calls.is_empty()).then(|| serde_json::Value::from(answer.tool_calls.clone()));
    let og_output = haca_tee::og_compat::chat_output_hash(&answer.content, calls.as_ref());
    let signed = e.sign(
        &llm.blob_id,
        &request_hash,
        input_hash,
        output_hash,
        (og_request, og_output),
    )?;
    Ok(Json(wire::ChatAnswer {
        output: wire::ChatOutput {
            content: answer.content,
            tool_calls: answer.tool_calls,
            finish_reason: answer.finish_reason,
        },
        usage: wire::Usage {
            prompt_tokens: answer.prompt_tokens,
            completion_tokens: answer.completion_tokens,
        },
        blob_id: llm.blob_id,
        request_hash,
        signed,
    }))
}

/// Runs the dev enclave until the process is stopped. Prints `enclave: URL` once serving.
/// Where the enclave's attestation documents come from.
pub enum AttesterChoice<'a> {
    /// The dev CA whose seed is in this file (devnet).
    Dev { ca_seed_file: &'a FsPath },
    /// The Nitro Secure Module (`/dev/nsm`), inside an AWS Nitro enclave: documents signed
    /// by AWS. Needs the `nsm` feature.
    Nsm,
}

/// The attester, the PCRs its documents state and the root they chain to.
type AttesterParts = (Box<dyn Attester>, BTreeMap<u8, Vec<u8>>, String);

fn attester(choice: AttesterChoice<'_>) -> Result<AttesterParts, String> {
    match choice {
        AttesterChoice::Dev { ca_seed_file } => {
            let seed = crate::enclave::dev_ca_seed(ca_seed_file)?;
            // PCR0 measures the code that runs: this binary.
            let image = std::env::current_exe()
                .and_then(std::fs::read)
                .map_err(|e| format!("cannot read this binary to measure it: {e}"))?;
            let a = DevAttester::new(DevCa::from_seed(&seed), dev_pcrs(&image), crate::now_ms);
            let (pcrs, root) = (a.pcrs().clone(), a.ca().root_fingerprint());
            Ok((Box::new(a), pcrs, root))
        }
        #[cfg(feature = "nsm")]
        AttesterChoice::Nsm => {
            let a = haca_tee::attester::NsmAttester::open().map_err(|e| e.to_string())?;
            // The module states the enclave image's PCRs in every document: read them, and
            // the root, from a first one checked against AWS's root.
            let doc = a.attest(None, None, None).map_err(|e| e.to_string())?;
            let v = haca_tee::nitro::verify(&doc, &haca_tee::nitro::Policy::at(crate::now_ms(), haca_tee::nitro::DEFAULT_MAX_AGE_MS))
                .map_err(|e| format!("the Nitro Secure Module's document does not verify: {e}"))?;
            let pcrs = v
                .pcrs
                .iter()
                .filter_map(|(i, h)| hex::decode(h).ok().map(|b| (*i, b)))
                .collect();
            Ok((Box::new(a), pcrs, v.root_fingerprint))
        }
        #[cfg(not(feature = "nsm"))]
        AttesterChoice::Nsm => Err(
            "--nsm: this haca was built without the nsm feature (cargo build -p haca --features nsm)"
                .into(),
        ),
    }
}

pub async fn serve(
    listen: SocketAddr,
    choice: AttesterChoice<'_>,
    llm_model: Option<std::path::PathBuf>,
) -> Result<(), String> {
    let (attester, pcrs, root_fingerprint) = attester(choice)?;
    // The run key exists only in this process's memory: a restart makes a new one.
    let key = NodeKey::generate();
    let og = tokio::task::spawn_blocking(OgSigner::generate)
        .await
        .map_err(|e| format!("RSA key generation stopped: {e}"))??;
    let enclave = Arc::new(Enclave {
        og,
        document: RwLock::new((Vec::new(), 0)),
        key,
        attester,
        pcrs,
        root_fingerprint,
        models: Mutex::new(HashMap::new()),
        llm_path: llm_model,
        llm: tokio::sync::OnceCell::new(),
    });
    enclave
        .run_document()
        .map_err(|e| format!("first attestation document: {}", e.message))?;
    let app = Router::new()
        .route(wire::ATTESTATION_PATH, get(attestation))
        .route(
            &format!("{}/{{blob_id}}", wire::MODELS_PATH),
            put(put_model),
        )
        .route(wire::RUN_PATH, post(run))
        .route(wire::CHAT_PATH, post(chat))
        .route(wire::HEARTBEAT_PATH, post(heartbeat))
        .layer(DefaultBodyLimit::max(1 << 30))
        .with_state(enclave.clone());
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    println!("enclave: http://{addr}");
    println!("enclave key: {}", enclave.key.node_id());
    axum::serve(listener, app)
        .await
        .map_err(|e| format!("enclave server: {e}"))
}
