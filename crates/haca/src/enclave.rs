//! The dev enclave: a separate process (`haca enclave`) that holds a run key no other process
//! sees, proves it with attestation documents in AWS Nitro's format (signed by a local dev CA,
//! so always marked `dev`), and runs ONNX models on request, signing each run's artifact and
//! hashes with that key.
//!
//! What an attestation proves: measured code (PCR0 is the SHA-384 of this very binary) holds
//! this key. It says nothing about whether an answer is good. In a real Nitro enclave the NSM
//! device stands behind the same `Attester` trait (`haca_tee::attester`, feature `nsm`).
//!
//! The gateway reaches it over loopback HTTP:
//! - `GET /attestation?nonce=HEX`: a fresh document binding the run key (and the nonce);
//! - `PUT /models/{blob_id}`: the artifact's bytes (the enclave hashes them itself);
//! - `POST /run` `{blob_id, request_hash, input}`: output, hashes, the run signature over
//!   [`haca_core::receipt::tee_run_message`], the document the key is bound by, and the
//!   OpenGradient-compatible `tee` fields ([`haca_tee::og_compat`]);
//! - `POST /chat` `{body}`: a chat completion on the local LLM (started with `--llm-model`),
//!   signed like a run: the artifact is the GGUF, the hashes are haca's chat request, input
//!   and output hashes ([`crate::chat`]), and the `tee` fields OpenGradient's chat hashes;
//! - `POST /heartbeat` `{at_ms}`: the run key's heartbeat signature for the TEE registry.
//!
//! Two keys live here: the Ed25519 run key (bound by the document's `public_key`) signs runs
//! and heartbeats; an RSA-2048 key (bound by nitriding-style `user_data`: SHA-256 of its
//! SubjectPublicKeyInfo; the enclave has no TLS certificate, so that digest is of nothing)
//! signs the OpenGradient-compatible fields.

use crate::server::error::ApiError;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use base64::Engine as _;
use haca_core::receipt::tee_run_message;
use haca_core::{tensor, BlobId, Digest, NodeKey};
use haca_exec::OnnxModel;
use haca_tee::attester::{Attester, DevAttester};
use haca_tee::dev::{dev_pcrs, DevCa};
use haca_tee::og_compat::OgSigner;
use haca_tee::NitridingUserData;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path as FsPath;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// How long one attestation document is handed out with runs before a fresh one is made.
const DOCUMENT_LIFETIME_MS: u64 = 10 * 60_000;

struct Enclave {
    key: NodeKey,
    og: OgSigner,
    attester: DevAttester,
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

fn pcr_hex(pcrs: &std::collections::BTreeMap<u8, Vec<u8>>) -> Value {
    json!(pcrs
        .iter()
        .map(|(k, v)| (k.to_string(), hex::encode(v)))
        .collect::<std::collections::BTreeMap<_, _>>())
}

async fn attestation(State(e): S, Query(q): Query<NonceQuery>) -> Result<Json<Value>, ApiError> {
    let nonce = match &q.nonce {
        Some(h) => Some(hex::decode(h).map_err(|err| {
            ApiError::bad_request("invalid_nonce", format!("nonce: not hex: {err}"))
        })?),
        None => None,
    };
    if nonce.as_ref().is_some_and(|n| n.len() > 512) {
        return Err(ApiError::bad_request(
            "invalid_nonce",
            "nonce: at most 512 bytes",
        ));
    }
    let doc = e.fresh_document(nonce.as_deref())?;
    Ok(Json(json!({
        "document_b64": b64(&doc),
        "enclave_key": e.key.node_id(),
        "pcrs": pcr_hex(e.attester.pcrs()),
        "root_fingerprint": e.attester.ca().root_fingerprint(),
        "dev": true,
        "tee_id": e.og.tee_id(),
        "signing_key_pem": e.og.public_pem(),
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HeartbeatRequest {
    at_ms: u64,
}

/// Signs a heartbeat for the TEE registry with the run key (only this process holds it).
async fn heartbeat(State(e): S, Json(req): Json<HeartbeatRequest>) -> Json<Value> {
    let tee_id = haca_tee::registry::tee_id_of(&e.key.node_id());
    Json(json!({
        "tee_id": tee_id,
        "at_ms": req.at_ms,
        "signature": haca_tee::registry::sign_heartbeat(&e.key, req.at_ms),
    }))
}

async fn put_model(
    State(e): S,
    Path(blob_id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
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
    Ok(Json(json!({"blob_id": want})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunRequest {
    blob_id: BlobId,
    request_hash: Digest,
    input: Value,
}

async fn run(State(e): S, Json(req): Json<RunRequest>) -> Result<Json<Value>, ApiError> {
    let model = e
        .models
        .lock()
        .expect("models lock")
        .get(&req.blob_id)
        .cloned()
        .ok_or_else(|| {
            ApiError::not_found(
                "model_not_loaded",
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
    let finished_at = crate::now_ms();
    let input_hash = tensor::hash_tensors(&inputs);
    let output_hash = tensor::hash_tensors(&outputs);
    let msg = tee_run_message(
        &req.blob_id,
        &req.request_hash,
        &input_hash,
        &output_hash,
        finished_at,
    );
    let signature = hex::encode(e.key.sign(&msg));
    let doc = e.run_document()?;
    let output = tensor::to_json(&outputs);
    let (og_request, og_output) =
        haca_tee::og_compat::ml_hashes(&req.blob_id.to_string(), &req.input, &output);
    let tee = e.og.sign(og_request, og_output, finished_at / 1000);
    Ok(Json(json!({
        "output": output,
        "tee": tee,
        "signing_key_pem": e.og.public_pem(),
        "input_hash": input_hash,
        "output_hash": output_hash,
        "finished_at": finished_at,
        "run_signature": signature,
        "enclave_key": e.key.node_id(),
        "document_b64": b64(&doc),
        "pcrs": pcr_hex(e.attester.pcrs()),
    })))
}

#[derive(Deserialize)]
struct ChatRun {
    /// The client's chat body, as the gateway received it.
    body: Value,
}

async fn chat(State(e): S, Json(req): Json<ChatRun>) -> Result<Json<Value>, ApiError> {
    use crate::chat::{generate_local, Call, CallStart};
    let path = e.llm_path.clone().ok_or_else(|| {
        ApiError::not_found(
            "model_not_loaded",
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
    let (request_hash, input_hash) = CallStart::hashes(&call)?;
    let answer = tokio::task::spawn_blocking({
        let (llm, call) = (llm.clone(), call.clone());
        move || generate_local(&llm, &call, "", None)
    })
    .await
    .map_err(|err| ApiError::internal(format!("generator stopped: {err}")))??;
    let finished_at = crate::now_ms();
    let output =
        crate::chat::output_json(&answer.content, &answer.tool_calls, &answer.finish_reason);
    let output_hash = crate::chat::hash_json(&output)?;
    let msg = tee_run_message(
        &llm.blob_id,
        &request_hash,
        &input_hash,
        &output_hash,
        finished_at,
    );
    let signature = hex::encode(e.key.sign(&msg));
    let doc = e.run_document()?;
    let og_request = haca_tee::og_compat::chat_request_hash(&req.body)
        .map_err(|err| ApiError::bad_request("invalid_input", err))?;
    let calls = (!answer.tool_calls.is_empty()).then(|| Value::from(answer.tool_calls.clone()));
    let og_output = haca_tee::og_compat::chat_output_hash(&answer.content, calls.as_ref());
    let tee = e.og.sign(og_request, og_output, finished_at / 1000);
    Ok(Json(json!({
        "output": output,
        "usage": {"prompt_tokens": answer.prompt_tokens, "completion_tokens": answer.completion_tokens},
        "blob_id": llm.blob_id,
        "tee": tee,
        "signing_key_pem": e.og.public_pem(),
        "request_hash": request_hash,
        "input_hash": input_hash,
        "output_hash": output_hash,
        "finished_at": finished_at,
        "run_signature": signature,
        "enclave_key": e.key.node_id(),
        "document_b64": b64(&doc),
    })))
}

/// Loads the dev CA's seed from `path`, creating it once (so the dev root survives restarts).
fn dev_ca_seed(path: &FsPath) -> Result<[u8; 32], String> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let mut seed = [0u8; 32];
            hex::decode_to_slice(text.trim(), &mut seed)
                .map_err(|e| format!("{}: not a 32-byte hex seed: {e}", path.display()))?;
            Ok(seed)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let seed: [u8; 32] = rand::random();
            haca_store::write_atomic(path, hex::encode(seed).as_bytes(), true)
                .map_err(|e| e.to_string())?;
            Ok(seed)
        }
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// The name of the dev CA's seed file, in a devnet's data dir or a testnet's dir.
pub const DEV_CA_SEED_FILE: &str = "dev-enclave-ca.seed";

/// The DER of the dev CA root the enclave seeded from `seed_file` signs under (creating the
/// seed once): what a devnet's genesis names as its TEE dev root.
pub fn dev_ca_root(seed_file: &FsPath) -> Result<Vec<u8>, String> {
    Ok(DevCa::from_seed(&dev_ca_seed(seed_file)?).root_der())
}

/// Runs the dev enclave until the process is stopped. Prints `enclave: URL` once serving.
pub async fn serve(
    listen: SocketAddr,
    ca_seed_file: &FsPath,
    llm_model: Option<std::path::PathBuf>,
) -> Result<(), String> {
    let seed = dev_ca_seed(ca_seed_file)?;
    // PCR0 measures the code that runs: this binary.
    let image = std::env::current_exe()
        .and_then(std::fs::read)
        .map_err(|e| format!("cannot read this binary to measure it: {e}"))?;
    let attester = DevAttester::new(DevCa::from_seed(&seed), dev_pcrs(&image), crate::now_ms);
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
        models: Mutex::new(HashMap::new()),
        llm_path: llm_model,
        llm: tokio::sync::OnceCell::new(),
    });
    enclave
        .run_document()
        .map_err(|e| format!("first attestation document: {}", e.message))?;
    let app = Router::new()
        .route("/attestation", get(attestation))
        .route("/models/{blob_id}", put(put_model))
        .route("/run", post(run))
        .route("/chat", post(chat))
        .route("/heartbeat", post(heartbeat))
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

/// The gateway's handle on its dev enclave process: started with the node, restarted if it
/// dies, killed when the node stops.
pub struct EnclaveSupervisor {
    url: Arc<RwLock<Option<String>>>,
    /// Whether it serves `/chat` (it was given the local LLM).
    pub has_llm: bool,
    task: tokio::task::JoinHandle<()>,
}

impl EnclaveSupervisor {
    /// Starts `haca enclave` with the dev CA seeded from `seed_file` (see [`dev_ca_root`])
    /// and waits (up to 30 s) for it to serve.
    pub async fn start(seed_file: &FsPath, llm_model: Option<&FsPath>) -> Result<Self, String> {
        let url = Arc::new(RwLock::new(None));
        let seed_file = seed_file.to_owned();
        let llm_model = llm_model.map(FsPath::to_path_buf);
        let (first_tx, first_rx) = tokio::sync::oneshot::channel::<Result<(), String>>();
        let has_llm = llm_model.is_some();
        let task = tokio::spawn(supervise(seed_file, llm_model, url.clone(), first_tx));
        match tokio::time::timeout(Duration::from_secs(30), first_rx).await {
            Ok(Ok(Ok(()))) => Ok(EnclaveSupervisor { url, task, has_llm }),
            Ok(Ok(Err(e))) => Err(e),
            _ => Err("the dev enclave did not start within 30 s".into()),
        }
    }

    /// The enclave's URL, while it is up.
    pub fn url(&self) -> Option<String> {
        self.url.read().expect("url lock").clone()
    }
}

impl Drop for EnclaveSupervisor {
    fn drop(&mut self) {
        // Aborting the task drops the child, which kills it (`kill_on_drop`).
        self.task.abort();
    }
}

async fn supervise(
    seed_file: std::path::PathBuf,
    llm_model: Option<std::path::PathBuf>,
    url: Arc<RwLock<Option<String>>>,
    first: tokio::sync::oneshot::Sender<Result<(), String>>,
) {
    use tokio::io::AsyncBufReadExt;
    let mut first = Some(first);
    loop {
        let exe = match std::env::current_exe() {
            Ok(e) => e,
            Err(e) => {
                if let Some(f) = first.take() {
                    let _ = f.send(Err(format!("cannot find the haca binary: {e}")));
                }
                return;
            }
        };
        let mut cmd = tokio::process::Command::new(exe);
        cmd.args(["enclave", "--listen", "127.0.0.1:0", "--ca-seed-file"])
            .arg(&seed_file);
        if let Some(m) = &llm_model {
            cmd.arg("--llm-model").arg(m);
        }
        cmd.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true);
        // It ends with the node even when the node is killed (kill -9 leaves no orphan).
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => {
                let msg = format!("cannot start the dev enclave: {e}");
                match first.take() {
                    Some(f) => {
                        let _ = f.send(Err(msg));
                        return;
                    }
                    None => tracing::error!("{msg}"),
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let stdout = child.stdout.take().expect("stdout piped");
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(u) = line.trim().strip_prefix("enclave:") {
                *url.write().expect("url lock") = Some(u.trim().to_owned());
                tracing::info!("dev enclave serving at {} (pid {:?})", u.trim(), child.id());
                if let Some(f) = first.take() {
                    let _ = f.send(Ok(()));
                }
            }
        }
        let status = child.wait().await;
        *url.write().expect("url lock") = None;
        if let Some(f) = first.take() {
            let _ = f.send(Err(format!("the dev enclave exited at start: {status:?}")));
            return;
        }
        tracing::error!("the dev enclave exited ({status:?}); restarting it");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
