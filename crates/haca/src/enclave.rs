//! The dev enclave's supervisor: `haca devnet` starts the enclave process (`haca enclave`,
//! served by the HTTP layer's `enclave` module) and keeps it running, restarted if it dies, killed
//! with the node even on `kill -9`. The gateway reaches it through
//! [`haca_gateway::enclave::EnclaveClient`] over [`HttpEnclave`], at the URL this supervisor
//! knows.

use haca_core::BlobId;
use haca_gateway::enclave::{EnclaveTransport, TransportError};
use haca_tee::dev::DevCa;
use haca_tee::protocol as wire;
use std::path::Path as FsPath;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Loads the dev CA's seed from `path`, creating it once (so the dev root survives restarts).
pub(crate) fn dev_ca_seed(path: &FsPath) -> Result<[u8; 32], String> {
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

/// Where the enclave process is.
pub enum EnclaveAt {
    /// The dev enclave this node supervises, on loopback.
    Supervised(Arc<EnclaveSupervisor>),
    /// An enclave process elsewhere (`--enclave URL`), such as `haca enclave --nsm` in an AWS
    /// Nitro enclave behind a vsock proxy: this node trusts none of its answers on its word;
    /// every document is checked against the chain's roots, as the dev enclave's are.
    Remote(String),
}

/// The enclave protocol over HTTP to the enclave process (`haca enclave`).
pub struct HttpEnclave {
    pub at: EnclaveAt,
    pub http: reqwest::Client,
}

impl HttpEnclave {
    fn url(&self, path: &str) -> Result<String, TransportError> {
        match &self.at {
            EnclaveAt::Supervised(s) => s
                .url()
                .map(|u| format!("{u}{path}"))
                .ok_or_else(|| TransportError::Down("the enclave is restarting; try again".into())),
            EnclaveAt::Remote(base) => Ok(format!("{}{path}", base.trim_end_matches('/'))),
        }
    }

    /// Sends one request and reads its typed answer: a 4xx is a refusal (with the protocol's
    /// error code), any other failure status the enclave's failure.
    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<T, TransportError> {
        let down = |e: reqwest::Error| TransportError::Down(e.to_string());
        let resp = req.send().await.map_err(down)?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(down)?;
        if !status.is_success() {
            let (code, message) = serde_json::from_slice::<wire::ErrorAnswer>(&bytes)
                .map(|e| (e.error.code, e.error.message))
                .unwrap_or_else(|_| (String::new(), "no reason given".into()));
            return Err(if status.is_client_error() {
                TransportError::Refused { code, message }
            } else {
                TransportError::Failed(message)
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| TransportError::Malformed(e.to_string()))
    }
}

#[async_trait::async_trait]
impl EnclaveTransport for HttpEnclave {
    fn has_llm(&self) -> bool {
        match &self.at {
            EnclaveAt::Supervised(s) => s.has_llm,
            // Its chat path is not offered: whether it holds a model is not known here.
            EnclaveAt::Remote(_) => false,
        }
    }

    async fn attestation(
        &self,
        nonce: Option<&[u8]>,
    ) -> Result<wire::AttestationAnswer, TransportError> {
        let mut url = self.url(wire::ATTESTATION_PATH)?;
        if let Some(n) = nonce {
            url.push_str(&format!("?nonce={}", hex::encode(n)));
        }
        self.call(self.http.get(url)).await
    }

    async fn heartbeat(
        &self,
        request: &wire::HeartbeatRequest,
    ) -> Result<wire::HeartbeatAnswer, TransportError> {
        let url = self.url(wire::HEARTBEAT_PATH)?;
        self.call(self.http.post(url).json(request)).await
    }

    async fn run(&self, request: &wire::RunRequest) -> Result<wire::RunAnswer, TransportError> {
        let url = self.url(wire::RUN_PATH)?;
        self.call(self.http.post(url).json(request)).await
    }

    async fn put_model(
        &self,
        blob_id: BlobId,
        bytes: Vec<u8>,
    ) -> Result<wire::PutModelAnswer, TransportError> {
        let url = self.url(&format!("{}/{blob_id}", wire::MODELS_PATH))?;
        self.call(self.http.put(url).body(bytes)).await
    }

    async fn chat(
        &self,
        request: &wire::ChatRunRequest,
    ) -> Result<wire::ChatAnswer, TransportError> {
        let url = self.url(wire::CHAT_PATH)?;
        self.call(self.http.post(url).json(request)).await
    }
}
