//! Starting a node: the data directory, the store, the hub, the gateway and the HTTP server.
//! `haca devnet` is this with every role that exists, loopback admin, and the example model.

use crate::gateway::Gateway;
use crate::server::{self, AppState, Limits};
use haca_core::{BlobId, NodeId};
use haca_exec::{ModelCache, OnnxCheck};
use haca_hub::Hub;
use haca_store::{load_or_create_key, load_or_create_token, Store};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The example model devnet seeds: a 784-128-10 MLP (input `input` float32 [1,784]).
pub const EXAMPLE_LABEL: &str = "example/mnist-mlp";
pub const EXAMPLE_MODEL: &[u8] = include_bytes!("../../../fixtures/models/mnist-mlp.onnx");

/// How to start a node.
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
        }
    }
}

/// A node that is serving.
pub struct RunningNode {
    pub url: String,
    pub node_id: NodeId,
    pub data_dir: PathBuf,
    pub example: Option<(String, BlobId)>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl RunningNode {
    /// Stops accepting, finishes requests in flight, and returns.
    pub async fn stop(mut self) -> std::io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.await.unwrap_or(Ok(()))
    }

    /// Serves until the server ends (or ctrl-c, wired by the caller).
    pub async fn wait(self) -> std::io::Result<()> {
        self.task.await.unwrap_or(Ok(()))
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
}

pub async fn start(cfg: NodeConfig) -> Result<RunningNode, StartError> {
    std::fs::create_dir_all(&cfg.data_dir)
        .map_err(|e| StartError::DataDir(cfg.data_dir.clone(), e))?;
    let key = load_or_create_key(&cfg.data_dir.join("node.key"))?;
    let operator_token = load_or_create_token(&cfg.data_dir.join("operator.token"))?;
    let store = Arc::new(Store::open(cfg.data_dir.join("haca.db"))?);
    let hub = Arc::new(Hub::open(
        store.clone(),
        cfg.data_dir.join("blobs"),
        Arc::new(OnnxCheck),
    )?);
    let gateway = Gateway {
        key,
        store,
        hub: hub.clone(),
        models: Arc::new(ModelCache::new(cfg.cache_bytes)),
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
            .map_err(|e| StartError::Example(e.message))?;
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
    let state = Arc::new(AppState {
        gateway,
        operator_token,
        loopback_admin: cfg.loopback_admin,
        example_blob: example.as_ref().map(|(_, b)| *b),
        limits: cfg.limits,
    });
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| StartError::Listen(cfg.listen, e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| StartError::Listen(cfg.listen, e))?;
    let (tx, rx) = oneshot::channel::<()>();
    let app = server::router(state);
    let task = tokio::spawn(server::serve(listener, app, async move {
        let _ = rx.await;
    }));
    Ok(RunningNode {
        url: format!("http://{addr}"),
        node_id,
        data_dir: cfg.data_dir,
        example,
        shutdown: Some(tx),
        task,
    })
}
