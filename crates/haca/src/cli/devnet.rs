//! Starting a node: the data directory, the store, the hub, the gateway and the HTTP server.
//! `haca devnet` is this with every role that exists, loopback admin, and the example model.

use crate::cli::validator_node::TestnetFile;
use crate::registry::ChainRegistry;
use crate::remote::RemoteChain;
use crate::server::chain::{ChainApi, ChainRole};
use crate::server::{self, AppState, Limits};
use haca_chain::consensus::{EngineConfig, EngineHandle};
use haca_chain::log::{LogEntry, TransparencyLog};
use haca_core::settlement::{Genesis, SettlementParams, TeeConfig, Validator, ValidatorSet};
use haca_core::NodeKey;
use haca_core::{BlobId, NodeId};
use haca_exec::{ModelCache, ModelCheck};
use haca_gateway::enclave::EnclaveClient;
use haca_gateway::Gateway;
use haca_hub::Hub;
use haca_store::{load_or_create_key, load_or_create_token, Store};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The example model devnet seeds: a 784-128-10 MLP (input `input` float32 [1,784]).
pub const EXAMPLE_LABEL: &str = "example/mnist-mlp";
pub const EXAMPLE_MODEL: &[u8] = include_bytes!("../../../../fixtures/models/mnist-mlp.onnx");

/// How to start a node.
/// How long a devnet's settlement round waits for more records after its first.
pub const DEFAULT_ROUND_INTERVAL_MS: u64 = 200;

#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Allow admin actions from loopback without the operator token (devnet).
    pub loopback_admin: bool,
    /// Seed and warm the example model (devnet).
    pub seed_example: bool,
    pub limits: Limits,
    pub cache_bytes: u64,
    /// Run a validator in-process and settle this gateway's runs on it (devnet).
    pub validator: bool,
    /// Settle on the validator network of this testnet directory instead (`haca testnet
    /// up` wrote it); the gateway registers itself by governance if the chain does not know
    /// it.
    pub chain_dir: Option<PathBuf>,
    /// Start a dev enclave process for `mode: "tee"` runs (devnet).
    pub dev_enclave: bool,
    /// Charge for `POST /v1/infer` with x402 and serve the `/v1/x402/*` facilitator; `None`:
    /// runs are free and those routes are absent.
    pub payments: Option<haca_gateway::payment::PaymentConfig>,
    /// The GGUFs served as `local/<name>` (the first also in the enclave); empty: no local LLM.
    pub llm_model: Vec<PathBuf>,
    /// Upstream OpenAI-compatible providers, with their timeouts.
    pub providers: Vec<(haca_exec::llm::router::Provider, Duration)>,
    /// Upstream image providers (`--provider ...,kind=image`), with their timeouts.
    pub image_providers: Vec<(haca_exec::llm::router::Provider, Duration)>,
    /// Review case classes beyond devnet's `default` (which one of the same name replaces).
    pub case_classes: Vec<haca_review::CaseClass>,
    /// A new devnet genesis closes a settlement round when its oldest record is this old.
    pub round_interval_ms: u64,
    /// The URL clients reach this node at (payments name it); `None`: `http://` and the
    /// address the listener bound.
    pub public_url: Option<server::x402::PublicUrl>,
    /// Run the data role (`POST /v1/data/fetch`) with this allowlist (`--data-allow`);
    /// `None`: no data role.
    pub data_allow: Option<Vec<haca_data::AllowRule>>,
    /// The embedding model's directory for MemSync (`--embed-model`); `None`: HACA_EMBED_MODEL,
    /// else `$HACA_HOME/models/all-MiniLM-L6-v2`; memory is off when none is found.
    pub embed_model: Option<PathBuf>,
    /// The chat model that extracts memories from conversations (`--memory-extractor`);
    /// `None`: rules.
    pub memory_extractor: Option<String>,
    /// A Walrus publisher the node stores uploaded artifacts and settled rounds' tree dumps
    /// with (`--walrus-publisher`); `None`: they stay on the node (`GET /v1/blobs/{id}`).
    pub walrus_publisher: Option<String>,
    /// The largest image accepted from an image provider (`--max-image-bytes`).
    pub max_image_bytes: usize,
    /// Settle x402 on an EVM chain (and anchor round roots there) instead of the node's own
    /// ledger (`--evm-rpc`, issue 24); `None`: the node's ledger.
    pub evm: Option<crate::evm::EvmSettings>,
    /// Rate and concurrency limits and CORS around the routes, and `/metrics`
    /// (`server::ops`).
    pub ops: server::ops::OpsConfig,
    /// An enclave process to run `tee` work in instead of a supervised dev enclave
    /// (`--enclave URL`); with no dev enclave, the genesis a new chain gets trusts AWS's
    /// Nitro root only.
    pub enclave_url: Option<String>,
    /// zkml runs that may wait for their proofs; more are refused (503 `prover_busy`).
    pub max_proof_queue: usize,
}

impl NodeConfig {
    pub fn devnet(listen: SocketAddr, data_dir: PathBuf) -> Self {
        NodeConfig {
            listen,
            data_dir,
            loopback_admin: true,
            seed_example: true,
            limits: Limits::default(),
            cache_bytes: 1 << 30,
            validator: true,
            chain_dir: None,
            dev_enclave: true,
            payments: None,
            llm_model: Vec::new(),
            providers: Vec::new(),
            image_providers: Vec::new(),
            case_classes: Vec::new(),
            round_interval_ms: DEFAULT_ROUND_INTERVAL_MS,
            public_url: None,
            data_allow: Some(Vec::new()),
            embed_model: None,
            memory_extractor: None,
            walrus_publisher: None,
            max_image_bytes: haca_exec::image::DEFAULT_MAX_IMAGE_BYTES,
            evm: None,
            ops: Default::default(),
            enclave_url: None,
            max_proof_queue: haca_gateway::zk::DEFAULT_MAX_QUEUED,
        }
    }
}

/// How long a stopping gateway spends sending its outbox to a remote chain.
pub const OUTBOX_FLUSH_LIMIT: Duration = Duration::from_secs(5);

/// A node that is serving.
pub struct RunningNode {
    pub url: String,
    pub node_id: NodeId,
    pub data_dir: PathBuf,
    pub example: Option<(String, BlobId)>,
    /// The chain this node's validator keeps, if it runs one.
    pub chain_id: Option<String>,
    /// What the node charges per run, when it does.
    pub payments: Option<haca_gateway::payment::PaymentConfig>,
    /// The data role's key, when the node runs one.
    pub data_node: Option<NodeId>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
    engine: Option<EngineHandle>,
    logger: Option<JoinHandle<()>>,
    /// Tasks that connect the gateway to a remote chain (outbox pusher, follower).
    remote_tasks: Vec<JoinHandle<()>>,
}

impl RunningNode {
    /// Stops accepting, finishes requests in flight, and returns.
    pub async fn stop(mut self) -> std::io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let served = self.task.await.unwrap_or(Ok(()));
        if let Some(engine) = self.engine.take() {
            engine.stop().await;
        }
        if let Some(logger) = self.logger.take() {
            logger.abort();
        }
        for t in self.remote_tasks.drain(..) {
            t.abort();
        }
        served
    }

    /// Serves until the server ends (or ctrl-c, wired by the caller).
    pub async fn wait(mut self) -> std::io::Result<()> {
        let served = (&mut self.task).await.unwrap_or(Ok(()));
        if let Some(engine) = self.engine.take() {
            engine.stop().await;
        }
        served
    }

    pub fn shutdown_handle(&mut self) -> Option<oneshot::Sender<()>> {
        self.shutdown.take()
    }
}

/// Why a node did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("data dir {0}: {1}")]
    DataDir(PathBuf, std::io::Error),
    #[error(transparent)]
    Store(#[from] haca_store::StoreError),
    #[error("model hub: {0}")]
    Hub(#[from] haca_hub::HubError),
    #[error("example model: {0}")]
    Example(String),
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    #[error("--case-class: {0}")]
    CaseClasses(haca_review::ClassError),
    #[error("genesis {0}: {1}")]
    Genesis(PathBuf, String),
    #[error("validator: {0}")]
    Validator(#[from] haca_chain::validator::ValidatorError),
    #[error("consensus engine: {0}")]
    Engine(#[from] haca_chain::consensus::EngineError),
    #[error("transparency log: {0}")]
    Log(#[from] haca_chain::log::LogError),
    #[error("model registry: {0}")]
    Registry(String),
    #[error("chain {0}: {1}")]
    RemoteChain(PathBuf, String),
    #[error("dev enclave: {0}")]
    Enclave(String),
    #[error("x402 facilitator: {0}")]
    Facilitator(String),
    #[error("LLM providers: {0}")]
    Providers(String),
    #[error("--llm-model {0}")]
    LocalModel(String),
    #[error("memory: {0}")]
    Memory(String),
    #[error("zkml prover: {0}")]
    Prover(String),
    #[error("data role: {0}")]
    Data(String),
    #[error("OHTTP keys: {0}")]
    Ohttp(#[from] server::ohttp::OhttpKeysError),
}

/// The log entries of one committed block: its decided runs, then its round.
fn block_log_entries(block: &haca_chain::Block, block_id: &str) -> Vec<LogEntry> {
    let Some(s) = &block.header.settlement else {
        return Vec::new();
    };
    let h = block.header.height;
    let mut out: Vec<LogEntry> = block
        .records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            LogEntry::new(
                "run",
                serde_json::json!({"run_id": r.run_id, "receipt_digest": r.receipt_digest,
                    "settlement_mode": r.mode.as_str(), "gateway": r.gateway,
                    "outcome": "settled", "height": h, "leaf_index": i}),
            )
        })
        .collect();
    out.extend(block.rejected.iter().map(|x| {
        LogEntry::new(
            "run",
            serde_json::json!({"run_id": x.record.run_id, "receipt_digest": x.record.receipt_digest,
                "settlement_mode": x.record.mode.as_str(), "gateway": x.record.gateway,
                "outcome": "rejected", "reason": x.reason, "height": h}),
        )
    }));
    out.push(LogEntry::new(
        "settlement",
        serde_json::json!({
            "height": h,
            "block_id": block_id,
            "time_ms": block.header.time_ms,
            "round": s.round,
            "records": s.records,
            "rejected": s.rejected,
            "rfc6962_root": s.rfc6962_root,
            "oz_root": s.oz_root,
        }),
    ));
    out
}

/// The height of the last block whose round the log records (0 when none).
fn last_logged_height(log: &TransparencyLog) -> Result<u64, haca_chain::log::LogError> {
    for index in (0..log.size()).rev() {
        if let Some(e) = log.entry(index)? {
            if e.kind == "settlement" {
                return Ok(e.data["height"].as_u64().unwrap_or(0));
            }
        }
    }
    Ok(0)
}

/// Appends, for each committed block that closes a round and in height order, one `run` entry
/// per record it decided (settled or rejected, with the reason) and one `settlement` entry, in
/// one append: a block's entries land together or not at all, and a restart catches up from
/// the last logged height.
async fn log_settlements(
    validator: Arc<haca_chain::validator::Validator>,
    store: Arc<Store>,
    log: Arc<TransparencyLog>,
) {
    let mut heights = validator.heights();
    let mut logged = match last_logged_height(&log) {
        Ok(h) => h,
        Err(e) => {
            tracing::error!("transparency log: cannot find the last settlement entry: {e}");
            return;
        }
    };
    loop {
        let committed = *heights.borrow_and_update();
        while logged < committed {
            let h = logged + 1;
            let entries = match store.block(h) {
                Ok(Some(b)) => haca_chain::Block::decode(&b.block)
                    .ok()
                    .map(|block| block_log_entries(&block, &b.block_id))
                    .unwrap_or_default(),
                other => {
                    tracing::error!("transparency log: block {h} unreadable: {other:?}");
                    return;
                }
            };
            if !entries.is_empty() {
                if let Err(e) = log.append(entries).await {
                    tracing::error!("transparency log: settlement of block {h} not appended: {e}");
                    return;
                }
            }
            logged = h;
        }
        if heights.changed().await.is_err() {
            return;
        }
    }
}

/// Loads `DATA_DIR/genesis.json`, or writes a new one-validator genesis that registers this
/// gateway.
fn load_or_create_genesis(
    path: &Path,
    validator: &NodeKey,
    gateway: NodeId,
    tee: Option<TeeConfig>,
    round_interval_ms: u64,
) -> Result<Genesis, StartError> {
    let err = |e: String| StartError::Genesis(path.to_owned(), e);
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let g: Genesis = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
            if !g.gateways.contains(&gateway) {
                tracing::warn!(
                    "gateway {gateway} is not registered in {}: its runs will be rejected",
                    path.display()
                );
            }
            Ok(g)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = validator.node_id();
            let g = Genesis {
                chain_id: format!("haca-devnet-{}", &id.to_string()[..8]),
                genesis_time_ms: crate::now_ms(),
                validators: ValidatorSet::new(vec![Validator {
                    public_key: id,
                    power: 1,
                }])
                .map_err(err)?,
                gateways: vec![gateway],
                settlement: SettlementParams {
                    max_round_records: 10_000,
                    round_interval_ms,
                },
                tee,
            };
            let text = serde_json::to_string_pretty(&g).expect("genesis serializes");
            haca_store::write_atomic(path, text.as_bytes(), false)?;
            Ok(g)
        }
        Err(e) => Err(err(e.to_string())),
    }
}

/// The TEE settings of a devnet genesis: its dev enclave's CA root is trusted (documents under
/// it stay marked dev) and dev enclaves may register.
pub fn devnet_tee_config(dev_root_der: &[u8]) -> TeeConfig {
    TeeConfig {
        registry: haca_core::settlement::RegistryParams::devnet(),
        dev_root_der_hex: Some(hex::encode(dev_root_der)),
    }
}

/// A free loopback port for the consensus engine's peer-to-peer listener.
fn free_loopback_port() -> Result<SocketAddr, StartError> {
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("valid address");
    let l = std::net::TcpListener::bind(addr).map_err(|e| StartError::Listen(addr, e))?;
    l.local_addr().map_err(|e| StartError::Listen(addr, e))
}

pub async fn start(cfg: NodeConfig) -> Result<RunningNode, StartError> {
    std::fs::create_dir_all(&cfg.data_dir)
        .map_err(|e| StartError::DataDir(cfg.data_dir.clone(), e))?;
    let key = load_or_create_key(&cfg.data_dir.join("node.key"))?;
    let operator_token = load_or_create_token(&cfg.data_dir.join("operator.token"))?;
    let store = Arc::new(Store::open(cfg.data_dir.join("haca.db"))?);
    // The dev enclave's CA: a testnet's own (its genesis names the root), else this node's.
    let dev_ca_seed = cfg
        .chain_dir
        .as_deref()
        .unwrap_or(&cfg.data_dir)
        .join(crate::enclave::DEV_CA_SEED_FILE);
    // Validator keys this node holds, to approve its enclave's PCR set by governance.
    let mut approvers: Vec<NodeKey> = Vec::new();
    let mut remote = None;
    let (chain, engine) = if let Some(dir) = &cfg.chain_dir {
        let err = |e: String| StartError::RemoteChain(dir.clone(), e);
        let file = TestnetFile::load(dir).map_err(err)?;
        let genesis = crate::cli::validator_node::read_genesis(&dir.join("genesis.json"))
            .map_err(|e| err(e.to_string()))?;
        if file.chain_id != genesis.chain_id {
            return Err(err(format!(
                "testnet.json is for chain {}, genesis.json for {}",
                file.chain_id, genesis.chain_id
            )));
        }
        let follower = Arc::new(haca_chain::validator::Validator::open(
            genesis,
            store.clone(),
            haca_chain::standard_evidence(),
        )?);
        remote = Some(Arc::new(RemoteChain::new(file.urls())));
        approvers = file.validator_keys(dir).unwrap_or_default();
        (Some(follower), None)
    } else if cfg.validator {
        let validator_key = load_or_create_key(&cfg.data_dir.join("validator.key"))?;
        let tee = if cfg.dev_enclave {
            let root = crate::enclave::dev_ca_root(&dev_ca_seed).map_err(StartError::Enclave)?;
            Some(devnet_tee_config(&root))
        } else if cfg.enclave_url.is_some() {
            Some(haca_core::settlement::TeeConfig {
                registry: Default::default(),
                dev_root_der_hex: None,
            })
        } else {
            None
        };
        let genesis = load_or_create_genesis(
            &cfg.data_dir.join("genesis.json"),
            &validator_key,
            key.node_id(),
            tee,
            cfg.round_interval_ms,
        )?;
        approvers.push(validator_key.clone());
        let validator = Arc::new(haca_chain::validator::Validator::open(
            genesis.clone(),
            store.clone(),
            haca_chain::standard_evidence(),
        )?);
        // Records acknowledged before a crash and not yet in a committed block.
        let mut resubmitted = 0;
        for (run_id, text) in store.outbox()? {
            match haca_chain::RunRecord::from_json_slice(text.as_bytes()) {
                Ok(r) => {
                    validator.submit(r)?;
                    resubmitted += 1;
                }
                Err(e) => tracing::error!("outbox record of run {run_id} is damaged: {e}"),
            }
        }
        if resubmitted > 0 {
            tracing::info!("resubmitted {resubmitted} records from the outbox");
        }
        let engine = haca_chain::consensus::start(
            EngineConfig {
                chain_id: genesis.chain_id.clone(),
                home: cfg.data_dir.join("consensus"),
                key: validator_key,
                validators: genesis.validators.clone(),
                listen: free_loopback_port()?,
                peers: vec![],
                // A proposer out of time proposes what is waiting: give a longer round
                // interval the time to elapse.
                timeout_propose: Duration::from_secs(3).max(
                    Duration::from_millis(genesis.settlement.round_interval_ms)
                        + Duration::from_secs(2),
                ),
                timeout_prevote: Duration::from_secs(1),
                timeout_precommit: Duration::from_secs(1),
            },
            validator.clone(),
        )
        .await?;
        (Some(validator), Some(engine))
    } else {
        (None, None)
    };
    let mut hub = Hub::open(
        store.clone(),
        cfg.data_dir.join("blobs"),
        Arc::new(ModelCheck),
    )?;
    let mut remote_tasks = Vec::new();
    let remote_outbox = remote
        .as_ref()
        .map(|_| Arc::new(tokio::sync::Notify::new()));
    if let (Some(r), Some(v), Some(wake)) = (&remote, &chain, &remote_outbox) {
        remote_tasks.push(tokio::spawn(crate::remote::follow(r.clone(), v.clone())));
        remote_tasks.push(tokio::spawn(crate::remote::push_outbox(
            r.clone(),
            store.clone(),
            wake.clone(),
        )));
        let dir = cfg.chain_dir.as_ref().expect("remote chain has a dir");
        crate::remote::ensure_registered(r, v, dir, key.node_id())
            .await
            .map_err(|e| StartError::RemoteChain(dir.clone(), e))?;
    }
    if let Some(v) = &chain {
        // The chain's model registry owns label history; the hub mirrors it.
        let registry = Arc::new(ChainRegistry {
            validator: v.clone(),
            key: key.clone(),
            remote: remote.clone(),
        });
        crate::registry::reconcile(&hub, &registry)
            .await
            .map_err(StartError::Registry)?;
        hub = hub.with_authority(registry);
    }
    let hub = Arc::new(hub);
    let log = Arc::new(TransparencyLog::open(
        store.clone(),
        key.clone(),
        format!("haca/{}", key.node_id()),
    )?);
    let logger = chain
        .as_ref()
        .map(|v| tokio::spawn(log_settlements(v.clone(), store.clone(), log.clone())));
    let chain_api = chain.as_ref().map(|v| {
        Arc::new(ChainApi {
            validator: v.clone(),
            store: store.clone(),
            role: if remote.is_some() {
                ChainRole::Follower
            } else {
                ChainRole::Validator { forward: None }
            },
        })
    });
    let enclave_at = if let Some(url) = &cfg.enclave_url {
        Some(crate::enclave::EnclaveAt::Remote(url.clone()))
    } else if cfg.dev_enclave {
        let supervisor = crate::enclave::EnclaveSupervisor::start(
            &dev_ca_seed,
            cfg.llm_model.first().map(PathBuf::as_path),
        )
        .await
        .map_err(StartError::Enclave)?;
        Some(crate::enclave::EnclaveAt::Supervised(Arc::new(supervisor)))
    } else {
        None
    };
    let enclave = enclave_at.map(|at| {
        EnclaveClient::new(Arc::new(crate::enclave::HttpEnclave {
            at,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("HTTP client"),
        }))
    });
    if let (Some(enclave), Some(validator)) = (&enclave, &chain) {
        let registrar = crate::tee_registrar::TeeRegistrar {
            validator: validator.clone(),
            remote: remote.clone(),
            approvers,
            enclave: enclave.clone(),
        };
        // Registered before serving, so that the first tee run can settle.
        match registrar.step().await {
            Ok(done) => tracing::info!("dev enclave: {done} in the chain's TEE registry"),
            Err(e) => tracing::warn!("dev enclave not registered: {e}"),
        }
        remote_tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(60)).await;
            registrar.run().await
        }));
    }
    // Every gateway proves: zkml runs answer at once and their proofs follow from here.
    let zk = haca_gateway::zk::ZkProver::start(
        hub.clone(),
        store.clone(),
        chain.clone(),
        remote_outbox.clone(),
    )
    .map_err(|e| StartError::Prover(e.message().to_string()))?;
    zk.set_max_queued(cfg.max_proof_queue);
    let gateway = Gateway {
        enclave,
        evidence: Vec::new(),
        zk: Some(zk),
        anchors: None,
        key,
        store: store.clone(),
        hub: hub.clone(),
        models: Arc::new(ModelCache::new(cfg.cache_bytes)),
        chain,
        remote_outbox,
        log,
    };

    let mut example = None;
    if cfg.seed_example {
        if hub.history(EXAMPLE_LABEL)?.is_empty() {
            hub.upload(EXAMPLE_LABEL, EXAMPLE_MODEL, "devnet-seed")
                .await?;
        }
        let resolved = hub.resolve(EXAMPLE_LABEL, None)?;
        gateway
            .warm(resolved.blob_id)
            .await
            .map_err(|e| StartError::Example(e.to_string()))?;
        example = Some((EXAMPLE_LABEL.to_owned(), resolved.blob_id));
        let input: Vec<f32> = (0..784).map(|i| ((i * 37) % 256) as f32 / 255.0).collect();
        let body = serde_json::json!({"input": {"shape": [1, 784], "data": input}});
        haca_store::write_atomic(
            &cfg.data_dir.join("example-input.json"),
            body.to_string().as_bytes(),
            false,
        )?;
    }

    let node_id = gateway.key.node_id();
    let chain_id = gateway.chain.as_ref().map(|v| v.genesis().chain_id.clone());
    if cfg.evm.is_some() && cfg.payments.is_none() {
        return Err(StartError::Facilitator(
            "--evm-rpc settles the payments and anchors the rounds of a node that charges: this one serves for free (set --price-per-request)".into(),
        ));
    }
    let mut evm = None;
    let payments = match cfg.payments.clone() {
        None => None,
        Some(mut config) => {
            if let Some(s) = &cfg.evm {
                if config.facilitator.is_some() {
                    return Err(StartError::Facilitator(
                        "--facilitator and --evm-rpc: settle with one of them".into(),
                    ));
                }
                let c = crate::evm::connect(s, &mut config)
                    .await
                    .map_err(StartError::Facilitator)?;
                evm = Some(c);
            }
            let facilitator = match &config.facilitator {
                None => evm
                    .as_ref()
                    .map(|c| c.facilitator.clone() as Arc<dyn haca_gateway::payment::Facilitator>),
                Some(url) => {
                    let f = crate::facilitator::HttpFacilitator::new(url);
                    f.check_supports(&config.network)
                        .await
                        .map_err(StartError::Facilitator)?;
                    Some(Arc::new(f) as Arc<dyn haca_gateway::payment::Facilitator>)
                }
            };
            Some(Arc::new(haca_gateway::payment::Payments {
                config,
                store: gateway.store.clone(),
                facilitator,
            }))
        }
    };
    let mut anchor_book: Option<Arc<dyn haca_gateway::AnchorBook>> = None;
    if let Some((c, registry)) = evm.as_ref().and_then(|c| Some((c, c.registry?))) {
        match &gateway.chain {
            Some(v) if remote.is_none() => {
                let book = crate::evm::EvmAnchors::new(&c.facilitator, registry);
                anchor_book = Some(book.clone());
                remote_tasks.push(tokio::spawn(crate::evm::anchor_rounds(
                    v.clone(),
                    store.clone(),
                    book,
                )))
            }
            _ => tracing::warn!(
                "--evm-registry: this node keeps no chain of its own (no in-process validator), so it anchors nothing"
            ),
        }
    }
    let chat = if !cfg.llm_model.is_empty() || !cfg.providers.is_empty() {
        let local = cfg
            .llm_model
            .iter()
            .map(|p| haca_gateway::chat::LocalModel::start(p.clone()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(StartError::LocalModel)?;
        Some(Arc::new(
            haca_gateway::chat::ChatGateway::new(
                local,
                gateway.enclave.clone().filter(|e| e.has_llm()),
                cfg.providers.clone(),
                &haca_exec::llm::upstream::UpstreamPool::new(),
            )
            .map_err(StartError::Providers)?,
        ))
    } else {
        None
    };
    let images = if cfg.image_providers.is_empty() {
        None
    } else {
        let mut images = haca_gateway::image::ImageGateway::new(
            cfg.image_providers.clone(),
            &haca_exec::llm::upstream::UpstreamPool::new(),
            cfg.data_dir.join("images"),
        )
        .map_err(StartError::Providers)?;
        images.max_image_bytes = cfg.max_image_bytes;
        Some(Arc::new(images))
    };
    let classes =
        haca_review::CaseClasses::new(cfg.case_classes.clone()).map_err(StartError::CaseClasses)?;
    let review = Arc::new(crate::review::Review::new(classes, cfg.dev_enclave));
    let stop_review = review.clone();
    // No run is in flight yet: a charge without its run was taken by a node that stopped
    // between the two, and goes back to its payer.
    match gateway.refund_orphan_charges().await {
        Ok(0) => {}
        Ok(n) => tracing::warn!("refunded {n} charges whose runs were never stored"),
        Err(e) => tracing::error!("charges without runs could not be reconciled: {e}"),
    }
    match crate::review::resume_webhooks(&review, &gateway) {
        Ok(0) => {}
        Ok(n) => tracing::info!("sending {n} pending review webhooks again"),
        Err(e) => tracing::error!("pending review webhooks could not be read: {e}"),
    }
    // Bound before the state is made: the default public URL is the address bound.
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| StartError::Listen(cfg.listen, e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| StartError::Listen(cfg.listen, e))?;
    let public_url = cfg
        .public_url
        .clone()
        .unwrap_or_else(|| server::x402::PublicUrl::of_listener(addr));
    let ohttp = Arc::new(server::ohttp::OhttpKeys::load_or_create(&cfg.data_dir)?);
    let mut remote_tasks = remote_tasks;
    remote_tasks.push(server::ohttp::spawn_rotation(ohttp.clone()));
    let memory = server::memory::start(
        cfg.embed_model.as_deref(),
        cfg.memory_extractor.clone(),
        &gateway,
    )
    .map_err(StartError::Memory)?;
    let payments_served = payments.as_ref().map(|p| p.config.clone());
    let mut gateway = gateway;
    gateway.anchors = anchor_book;
    let blobs = Arc::new(
        crate::walrus::LocalBlobs::open(&cfg.data_dir.join("walrus"))
            .map_err(|source| haca_store::StoreError::Io {
                path: cfg.data_dir.join("walrus"),
                source,
            })?
            .with_publisher(cfg.walrus_publisher.clone()),
    );
    // A round's Walrus id costs about 0.1 s of CPU at 1,000 shards whatever the dump's size
    // (a million symbol leaves): computed at every commit it took a tenth of a core from a
    // busy node. Without a publisher, a round's dump is made and kept when one of its receipts
    // is first read (server::routes::get_receipt), which is when anyone learns its id.
    if let (Some(chain), Some(_)) = (&gateway.chain, &cfg.walrus_publisher) {
        remote_tasks.push(tokio::spawn(crate::walrus::mirror_rounds(
            chain.clone(),
            blobs.clone(),
        )));
    }
    let state = Arc::new(AppState {
        memory,
        ohttp: Some(ohttp),
        public_url,
        review,
        chat,
        images,
        blobs: blobs.clone(),
        payments,
        gateway,
        operator_token,
        loopback_admin: cfg.loopback_admin,
        example_blob: example.as_ref().map(|(_, b)| *b),
        limits: cfg.limits,
    });
    let (tx, rx) = oneshot::channel::<()>();
    let gauges = server::ops::GaugeSources {
        store: Some(state.gateway.store.clone()),
        chain: state.gateway.chain.clone(),
    };
    let mut app = server::router(state, chain_api);
    let data_node = match data_api(&cfg, store.clone())? {
        Some(api) => {
            let id = api.key.node_id();
            app = app.merge(server::data::router(Arc::new(api)));
            Some(id)
        }
        None => None,
    };
    let app = server::ops::wrap(app, &cfg.ops, gauges);
    // Stopping: live case views end with a last event, requests in flight finish (at most
    // SHUTDOWN_GRACE), then a gateway on a remote chain sends its outbox once more.
    let flush = remote.clone().map(|r| (r, store.clone()));
    let limits = cfg.limits;
    let task = tokio::spawn(async move {
        let stopped = async move {
            let _ = rx.await;
            stop_review.stop_watches();
        };
        let served = server::serve(listener, app, limits, stopped).await;
        if let Some((remote, store)) = flush {
            let sent = tokio::time::timeout(
                OUTBOX_FLUSH_LIMIT,
                crate::remote::flush_outbox(&remote, store),
            )
            .await;
            match sent {
                Ok(Ok(0)) => {}
                Ok(Ok(n)) => tracing::info!("stopping: sent the outbox's {n} records"),
                Ok(Err(e)) => tracing::warn!(
                    "stopping: the outbox was not sent ({e}); it is sent at the next start"
                ),
                Err(_) => tracing::warn!(
                    "stopping: the outbox was not sent in time; it is sent at the next start"
                ),
            }
        }
        served
    });
    Ok(RunningNode {
        url: format!("http://{addr}"),
        node_id,
        data_dir: cfg.data_dir,
        example,
        chain_id,
        // As served: with --evm-rpc, the asset is the chain's token.
        payments: payments_served,
        data_node,
        shutdown: Some(tx),
        task,
        engine,
        logger,
        remote_tasks,
    })
}

/// The data role of a node: its key (`data.key`), the node's store, a fetcher over the
/// allowlist; `None` when the node runs no data role.
fn data_api(
    cfg: &NodeConfig,
    store: Arc<Store>,
) -> Result<Option<server::data::DataApi>, StartError> {
    let Some(rules) = &cfg.data_allow else {
        return Ok(None);
    };
    let fetcher = haca_data::Fetcher::new(
        haca_data::Allowlist::new(rules.clone()),
        haca_data::FreshnessPolicy::default(),
        haca_data::fetch::DEFAULT_MAX_BYTES,
        haca_data::fetch::DEFAULT_TIMEOUT,
    )
    .map_err(|e| StartError::Data(e.to_string()))?;
    Ok(Some(server::data::DataApi {
        key: load_or_create_key(&cfg.data_dir.join("data.key"))?,
        store,
        fetcher,
    }))
}

/// A node with the data role alone (`haca node --roles data`): its store, its key and the
/// data routes.
pub async fn start_data_only(cfg: NodeConfig) -> Result<RunningNode, StartError> {
    std::fs::create_dir_all(&cfg.data_dir)
        .map_err(|e| StartError::DataDir(cfg.data_dir.clone(), e))?;
    let store = Arc::new(Store::open(cfg.data_dir.join("haca.db"))?);
    let api = data_api(&cfg, store)?.ok_or_else(|| StartError::Data("no data role".into()))?;
    let node_id = api.key.node_id();
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| StartError::Listen(cfg.listen, e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| StartError::Listen(cfg.listen, e))?;
    let app = server::data::router(Arc::new(api))
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .layer(tower_http::trace::TraceLayer::new_for_http());
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(server::serve(listener, app, cfg.limits, async move {
        let _ = rx.await;
    }));
    Ok(RunningNode {
        url: format!("http://{addr}"),
        node_id,
        data_dir: cfg.data_dir,
        example: None,
        chain_id: None,
        payments: None,
        data_node: Some(node_id),
        shutdown: Some(tx),
        task,
        engine: None,
        logger: None,
        remote_tasks: Vec::new(),
    })
}
