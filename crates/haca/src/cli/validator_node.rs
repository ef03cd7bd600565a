//! A validator as its own process: `haca node --roles validator --config FILE`.
//!
//! It keeps the chain (store, state, consensus engine with its peers) and serves `/v1/chain`
//! over HTTP; gateways submit records to any validator, which passes them on to the others.

use crate::forward::Forwarder;
use crate::server::chain::{ChainApi, ChainRole};
use crate::server::error::ApiError;
use axum::routing::get;
use axum::{Json, Router};
use haca_chain::consensus::{EngineConfig, EngineHandle, Fault};
use haca_core::settlement::Genesis;
use haca_core::NodeId;
use haca_store::{load_or_create_key, Store};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Another validator, as this one reaches it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    /// Its consensus (libp2p) address.
    pub p2p: SocketAddr,
    /// Its HTTP base URL (submissions are passed on there).
    pub http: String,
}

/// Consensus timeouts in milliseconds.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsMs {
    pub propose: u64,
    pub prevote: u64,
    pub precommit: u64,
}

impl Default for TimeoutsMs {
    fn default() -> Self {
        TimeoutsMs {
            propose: 1_000,
            prevote: 500,
            precommit: 500,
        }
    }
}

/// A validator's config file. Relative paths are relative to the file's directory.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ValidatorConfig {
    /// Store, keys (`validator.key`) and consensus WAL.
    pub data_dir: PathBuf,
    /// The chain's genesis file.
    pub genesis: PathBuf,
    pub http_listen: SocketAddr,
    pub p2p_listen: SocketAddr,
    #[serde(default)]
    pub peers: Vec<Peer>,
    #[serde(default)]
    pub timeouts_ms: TimeoutsMs,
    /// Deliberate misbehaviour, for fault tests only (`"settle_forged"`: proposals settle a
    /// forged record; `"equivocate"`: proposals come as two different blocks for one
    /// round). Absent on every honest validator; `haca testnet up --fault I=KIND` sets it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<Fault>,
}

/// Why a validator did not start.
#[derive(Debug, thiserror::Error)]
pub enum ValidatorStartError {
    #[error("config {path}: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error("data dir {0}: {1}")]
    DataDir(PathBuf, std::io::Error),
    #[error(transparent)]
    Store(#[from] haca_store::StoreError),
    #[error("genesis {0}: {1}")]
    Genesis(PathBuf, String),
    #[error("validator: {0}")]
    Validator(#[from] haca_chain::validator::ValidatorError),
    #[error("consensus engine: {0}")]
    Engine(#[from] haca_chain::consensus::EngineError),
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
}

impl ValidatorConfig {
    /// Reads a config file; errors name the field and the reason. Relative paths are resolved
    /// against the file's directory.
    pub fn load(path: &Path) -> Result<Self, ValidatorStartError> {
        let err = |reason: String| ValidatorStartError::Config {
            path: path.to_owned(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let mut de = serde_json::Deserializer::from_str(&text);
        let mut cfg: ValidatorConfig = serde_path_to_error::deserialize(&mut de)
            .map_err(|e| err(format!("field {}: {}", e.path(), e.inner())))?;
        let base = path.parent().unwrap_or(Path::new("."));
        cfg.resolve_paths(base).map_err(err)?;
        Ok(cfg)
    }

    /// Resolves relative paths against `base` (the config file's directory) and checks the
    /// peers' URLs.
    pub fn resolve_paths(&mut self, base: &Path) -> Result<(), String> {
        self.data_dir = base.join(&self.data_dir);
        self.genesis = base.join(&self.genesis);
        for p in &self.peers {
            reqwest::Url::parse(&p.http)
                .map_err(|e| format!("field peers[].http: {:?}: {e}", p.http))?;
        }
        Ok(())
    }
}

/// `DIR/testnet.json`: where each validator lives and listens.
#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct TestnetFile {
    pub chain_id: String,
    pub validators: Vec<TestnetValidator>,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct TestnetValidator {
    pub index: usize,
    pub validator_id: NodeId,
    pub http: String,
    pub p2p: SocketAddr,
    /// Its directory, relative to the testnet's.
    pub dir: PathBuf,
}

impl TestnetFile {
    pub fn load(dir: &Path) -> Result<Self, String> {
        let path = dir.join("testnet.json");
        let text = std::fs::read_to_string(&path).map_err(|e| {
            format!(
                "{}: {e} (create the testnet with `haca testnet up --dir {}`)",
                path.display(),
                dir.display()
            )
        })?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The keys of every validator in the testnet directory `dir` (whoever runs a testnet
    /// holds them all); an unreadable key is an error naming its file.
    pub fn validator_keys(&self, dir: &Path) -> Result<Vec<haca_core::NodeKey>, String> {
        self.validators
            .iter()
            .map(|v| {
                let path = dir.join(&v.dir).join("validator.key");
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                haca_core::NodeKey::from_file_string(&text)
                    .map_err(|e| format!("{}: {e}", path.display()))
            })
            .collect()
    }

    /// Every validator's HTTP URL.
    pub fn urls(&self) -> Vec<String> {
        self.validators.iter().map(|v| v.http.clone()).collect()
    }
}

/// Reads a genesis file; errors name the field and the reason.
pub fn read_genesis(path: &Path) -> Result<Genesis, ValidatorStartError> {
    let err = |e: String| ValidatorStartError::Genesis(path.to_owned(), e);
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let mut de = serde_json::Deserializer::from_str(&text);
    serde_path_to_error::deserialize(&mut de)
        .map_err(|e| err(format!("field {}: {}", e.path(), e.inner())))
}

/// A validator that is serving.
pub struct RunningValidator {
    pub url: String,
    pub validator_id: NodeId,
    pub chain_id: String,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
    engine: Option<EngineHandle>,
}

impl RunningValidator {
    pub fn shutdown_handle(&mut self) -> Option<oneshot::Sender<()>> {
        self.shutdown.take()
    }

    /// Serves until the HTTP server ends, then stops the engine.
    pub async fn wait(mut self) -> std::io::Result<()> {
        let served = (&mut self.task).await.unwrap_or(Ok(()));
        if let Some(engine) = self.engine.take() {
            engine.stop().await;
        }
        served
    }
}

/// Starts the validator of `cfg`, serving its HTTP API within `limits` (timeouts and the
/// connection limit; its bodies have their own limits).
pub async fn start(
    cfg: ValidatorConfig,
    limits: crate::server::Limits,
) -> Result<RunningValidator, ValidatorStartError> {
    std::fs::create_dir_all(&cfg.data_dir)
        .map_err(|e| ValidatorStartError::DataDir(cfg.data_dir.clone(), e))?;
    let key = load_or_create_key(&cfg.data_dir.join("validator.key"))?;
    let genesis = read_genesis(&cfg.genesis)?;
    let store = Arc::new(Store::open(cfg.data_dir.join("haca.db"))?);
    if let Some(fault) = cfg.fault {
        tracing::warn!(
            "THIS VALIDATOR MISBEHAVES ON PURPOSE: fault {fault} is set in its config (for \
             fault tests only; remove the \"fault\" field to run it honestly)"
        );
    }
    let validator = Arc::new(
        haca_chain::validator::Validator::open(
            genesis.clone(),
            store.clone(),
            haca_chain::standard_evidence(),
        )?
        .with_fault(cfg.fault),
    );
    let t = cfg.timeouts_ms;
    let engine = haca_chain::consensus::start_with_fault(
        EngineConfig {
            chain_id: genesis.chain_id.clone(),
            home: cfg.data_dir.join("consensus"),
            key: key.clone(),
            validators: genesis.validators.clone(),
            listen: cfg.p2p_listen,
            peers: cfg.peers.iter().map(|p| p.p2p).collect(),
            timeout_propose: Duration::from_millis(t.propose),
            timeout_prevote: Duration::from_millis(t.prevote),
            timeout_precommit: Duration::from_millis(t.precommit),
        },
        validator.clone(),
        cfg.fault,
    )
    .await?;
    let forward = (!cfg.peers.is_empty())
        .then(|| Forwarder::start(cfg.peers.iter().map(|p| p.http.clone()).collect()));
    let api = Arc::new(ChainApi {
        validator: validator.clone(),
        store,
        role: ChainRole::Validator { forward },
    });
    let id = key.node_id();
    let chain_id = genesis.chain_id.clone();
    let info = json!({
        "node_id": id.to_string(),
        "roles": ["validator"],
        "chain_id": chain_id,
        "version": env!("CARGO_PKG_VERSION"),
    });
    let app = Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/v1/node", get(move || async move { Json(info) }))
        .merge(crate::server::chain::router(api))
        .fallback(|req: axum::extract::Request| async move {
            ApiError::not_found(
                "not_found",
                format!(
                    "{} {}: a validator serves /v1/chain/* only",
                    req.method(),
                    req.uri().path()
                ),
            )
        })
        .layer(tower_http::trace::TraceLayer::new_for_http());
    let app = crate::server::ops::wrap(
        app,
        &Default::default(),
        crate::server::ops::GaugeSources {
            store: None,
            chain: Some(validator.clone()),
        },
    );
    let listener = tokio::net::TcpListener::bind(cfg.http_listen)
        .await
        .map_err(|e| ValidatorStartError::Listen(cfg.http_listen, e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| ValidatorStartError::Listen(cfg.http_listen, e))?;
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(crate::server::serve(listener, app, limits, async move {
        let _ = rx.await;
    }));
    Ok(RunningValidator {
        url: format!("http://{addr}"),
        validator_id: id,
        chain_id,
        shutdown: Some(tx),
        task,
        engine: Some(engine),
    })
}
