//! What `malachitebft_app_channel::start_engine` needs to know about a node: its home
//! directory (the WAL goes to `<home>/wal/consensus.wal`), its keys, and its configuration.

use std::path::PathBuf;

use async_trait::async_trait;
use haca_core::{NodeId, NodeKey};
use malachitebft_app_channel::app::config::{ConsensusConfig, ValueSyncConfig};
use malachitebft_app_channel::app::events::{RxEvent, TxEvent};
use malachitebft_app_channel::app::node::{Node, NodeConfig, NodeHandle};
use malachitebft_app_channel::app::types::Keypair;
use serde::{Deserialize, Serialize};

use super::context::{Address, HacaContext, Signer};

/// The engine's configuration (as `start_engine` wants it).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Config {
    pub moniker: String,
    pub consensus: ConsensusConfig,
    pub value_sync: ValueSyncConfig,
}

impl NodeConfig for Config {
    fn moniker(&self) -> &str {
        &self.moniker
    }

    fn consensus(&self) -> &ConsensusConfig {
        &self.consensus
    }

    fn value_sync(&self) -> &ValueSyncConfig {
        &self.value_sync
    }
}

/// One validator, as Malachite's `Node` trait sees it. Only the key and path accessors are
/// used by `start_engine`; the adapter starts the engine itself.
#[derive(Clone)]
pub struct HacaNode {
    pub home: PathBuf,
    pub key: NodeKey,
    pub config: Config,
}

/// The 32-byte Ed25519 seed of a key (the libp2p identity uses the same key).
pub fn seed_of(key: &NodeKey) -> [u8; 32] {
    let text = key.to_file_string();
    let hex = text.trim().rsplit(':').next().unwrap_or_default();
    let mut seed = [0u8; 32];
    hex::decode_to_slice(hex, &mut seed).expect("a key file string holds a 64-hex seed");
    seed
}

/// Unused: the adapter returns its own handle.
pub struct UnusedHandle(TxEvent<HacaContext>);

#[async_trait]
impl NodeHandle<HacaContext> for UnusedHandle {
    fn subscribe(&self) -> RxEvent<HacaContext> {
        self.0.subscribe()
    }

    async fn kill(&self, _reason: Option<String>) -> eyre::Result<()> {
        Ok(())
    }
}

#[async_trait]
impl Node for HacaNode {
    type Context = HacaContext;
    type Config = Config;
    type Genesis = ();
    /// The key file text (`haca-ed25519-seed:<hex>`).
    type PrivateKeyFile = String;
    type SigningProvider = Signer;
    type NodeHandle = UnusedHandle;

    async fn start(&self) -> eyre::Result<UnusedHandle> {
        Err(eyre::eyre!(
            "start the engine with haca_chain::consensus::start"
        ))
    }

    async fn run(self) -> eyre::Result<()> {
        Err(eyre::eyre!(
            "start the engine with haca_chain::consensus::start"
        ))
    }

    fn get_home_dir(&self) -> PathBuf {
        self.home.clone()
    }

    fn load_config(&self) -> eyre::Result<Config> {
        Ok(self.config.clone())
    }

    fn get_address(&self, pk: &NodeId) -> Address {
        Address(*pk)
    }

    fn get_public_key(&self, pk: &NodeKey) -> NodeId {
        pk.node_id()
    }

    fn get_keypair(&self, pk: NodeKey) -> Keypair {
        Keypair::ed25519_from_bytes(seed_of(&pk)).expect("a 32-byte seed is an Ed25519 key")
    }

    fn load_private_key(&self, file: String) -> NodeKey {
        NodeKey::from_file_string(&file).unwrap_or_else(|_| self.key.clone())
    }

    fn load_private_key_file(&self) -> eyre::Result<String> {
        Ok(self.key.to_file_string())
    }

    fn load_genesis(&self) -> eyre::Result<()> {
        Ok(())
    }

    fn get_signing_provider(&self, private_key: NodeKey) -> Signer {
        Signer::new(private_key)
    }
}
