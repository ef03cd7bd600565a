//! Adapter onto the Malachite consensus engine (the Tendermint algorithm).
//!
//! The chain state machine sees consensus only through [`Host`]: it proposes blocks, checks
//! blocks proposed by others, and applies decided blocks with their commit certificates. The
//! engine signs votes over [`haca_core::settlement::vote_sign_bytes`], so a certificate can be
//! checked offline with [`haca_core::settlement::Certificate::verify`].
//!
//! How it sits on Malachite (`informalsystems-malachitebft-app-channel` 0.5):
//! - [`context`]: the Malachite `Context`. Consensus decides a block id; addresses are
//!   Ed25519 public keys; proposals are signed over a fixed layout
//!   ([`context::Proposal::sign_bytes`]); the proposer rotates round robin over the
//!   validators sorted by key.
//! - [`parts`]: the proposer streams the block's bytes as proposal parts (`Init`, `Data`
//!   chunks, a signed `Fin`); receivers re-assemble them, check the stream signature, and
//!   accept the block only if [`Host::check`] returns the claimed id (otherwise they vote nil).
//! - [`codec`]: a fixed binary encoding for network and WAL messages (no protobuf).
//! - On disk under `EngineConfig::home`: Malachite's WAL (`wal/consensus.wal`) and the bytes
//!   of undecided blocks (`blocks/`), so a restart mid-height re-proposes or commits the
//!   same block.
//! - Networking is Malachite's libp2p (TCP, with every validator dialling `peers` and
//!   messages broadcast to connected peers); value sync serves catch-up requests from
//!   [`Host::committed_block`].

use haca_core::settlement::{Certificate, ValidatorSet};
use haca_core::{Digest, NodeKey};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use malachitebft_app_channel::app::config::{
    ConsensusConfig, DiscoveryConfig, P2pConfig, PubSubProtocol, TimeoutConfig, ValuePayload,
    ValueSyncConfig,
};
use malachitebft_app_channel::app::node::EngineHandle as MalachiteHandle;

mod app;
pub mod codec;
pub mod context;
mod node;
pub mod parts;
mod store;

pub use app::{from_settlement, propose_deadline, to_settlement};

/// A block as consensus carries it: its id (SHA-256 of its header) and its encoded bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedBlock {
    pub id: Digest,
    pub bytes: Vec<u8>,
}

/// The application behind the engine: the chain state machine.
pub trait Host: Send + Sync + 'static {
    /// The block to propose at `height`. It may wait for transactions, but must return
    /// before `deadline` (an empty block is a valid answer).
    fn propose(
        &self,
        height: u64,
        round: u32,
        deadline: tokio::time::Instant,
    ) -> impl Future<Output = EncodedBlock> + Send;

    /// Decodes and re-checks a block another validator proposed; returns its id.
    /// An `Err` makes this validator vote nil, with the reason logged.
    fn check(&self, height: u64, bytes: &[u8]) -> Result<Digest, String>;

    /// Applies a decided block and makes it durable before returning.
    fn commit(&self, height: u64, bytes: &[u8], certificate: Certificate) -> Result<(), String>;

    /// The last durably committed height (0: only genesis).
    fn committed_height(&self) -> u64;

    /// A committed block and its certificate, for a peer that is catching up.
    fn committed_block(&self, height: u64) -> Option<(Vec<u8>, Certificate)>;

    /// The validator set that signs `height`: known for every committed height and for
    /// `committed_height() + 1` (the current state's set); `None` for heights further ahead
    /// (the blocks before them may still change the set) and for height 0.
    fn validator_set(&self, height: u64) -> Option<ValidatorSet>;
}

/// Deliberate misbehaviour, for fault tests only: a validator configured with one acts as a
/// Byzantine validator would, so tests can show that the honest majority outvotes it. No
/// production path sets one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// When this validator proposes, its block settles a forged record (a record whose
    /// evidence fails, built with a verifier that accepts everything, so the block is
    /// otherwise consistent). Honest validators refuse the block and vote nil. Acted on by
    /// [`crate::validator::Validator::with_fault`].
    SettleForged,
    /// When this validator proposes, it builds two different blocks for the same height
    /// and round and streams both, each signed with its key. Acted on by
    /// [`start_with_fault`].
    Equivocate,
}

impl Fault {
    /// The name `haca testnet up --fault I=NAME` takes (`settle-forged`, `equivocate`).
    pub fn name(self) -> &'static str {
        match self {
            Fault::SettleForged => "settle-forged",
            Fault::Equivocate => "equivocate",
        }
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Fault {
    type Err = String;

    /// Accepts `settle-forged` / `settle_forged` and `equivocate`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.replace('_', "-").as_str() {
            "settle-forged" => Ok(Fault::SettleForged),
            "equivocate" => Ok(Fault::Equivocate),
            _ => Err(format!(
                "unknown fault {s:?}; expected settle-forged or equivocate"
            )),
        }
    }
}

/// How to run one validator.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub chain_id: String,
    /// Where the engine keeps its write-ahead log.
    pub home: PathBuf,
    /// This node's consensus key. While its public key is not in the set of the height
    /// being decided, the node follows the chain without voting (how a validator added by
    /// governance catches up); it votes from the first height whose set includes it.
    pub key: NodeKey,
    /// The genesis (or start) validator set. The engine takes each height's set from
    /// [`Host::validator_set`]; this one is only a fallback should the host not name one.
    pub validators: ValidatorSet,
    /// Peer-to-peer listen address (loopback on devnet).
    pub listen: SocketAddr,
    /// Other validators' peer-to-peer addresses.
    pub peers: Vec<SocketAddr>,
    pub timeout_propose: Duration,
    pub timeout_prevote: Duration,
    pub timeout_precommit: Duration,
}

/// Why the engine did not start.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("engine home {path}: {source}")]
    Home {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the WAL {0} is locked by another running engine")]
    WalLocked(PathBuf),
    #[error("malachite engine: {0}")]
    Engine(String),
}

/// Where Malachite keeps its WAL under the engine home.
fn wal_path(home: &std::path::Path) -> PathBuf {
    home.join("wal").join("consensus.wal")
}

/// Waits until no engine holds the WAL's exclusive lock (Malachite's WAL thread lets go of
/// it shortly after the engine stops). Returns false if it is still held after `patience`.
async fn wait_wal_unlocked(home: &std::path::Path, patience: Duration) -> bool {
    use advisory_lock::{AdvisoryFileLock, FileLockError, FileLockMode};
    let path = wal_path(home);
    let give_up = tokio::time::Instant::now() + patience;
    loop {
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(_) => return true, // no WAL yet
        };
        match AdvisoryFileLock::try_lock(&file, FileLockMode::Exclusive) {
            Ok(()) => {
                let _ = AdvisoryFileLock::unlock(&file);
                return true;
            }
            Err(FileLockError::AlreadyLocked) if tokio::time::Instant::now() < give_up => {
                tokio::time::sleep(Duration::from_millis(5)).await
            }
            Err(_) => return false,
        }
    }
}

/// A running engine. Dropping it, or [`EngineHandle::stop`], shuts the engine down.
pub struct EngineHandle {
    home: PathBuf,
    engine: Option<MalachiteHandle>,
    app: Option<tokio::task::JoinHandle<()>>,
}

impl EngineHandle {
    /// Stops the engine's actors (consensus, network, WAL, sync) and the adapter, and waits
    /// for them to end.
    pub async fn stop(mut self) {
        if let Some(engine) = self.engine.take() {
            if let Err(e) = engine.actor.kill_and_wait(None).await {
                tracing::warn!("stopping the consensus engine: {e}");
            }
            engine.handle.abort();
            let _ = engine.handle.await;
        }
        if let Some(app) = self.app.take() {
            app.abort();
            let _ = app.await;
        }
        if !wait_wal_unlocked(&self.home, Duration::from_secs(5)).await {
            tracing::warn!(home = %self.home.display(), "the consensus WAL is still locked after stop");
        }
    }
}

impl Drop for EngineHandle {
    fn drop(&mut self) {
        if let Some(engine) = self.engine.take() {
            engine.actor.kill();
            engine.handle.abort();
        }
        if let Some(app) = self.app.take() {
            app.abort();
        }
    }
}

fn multiaddr(
    addr: &SocketAddr,
) -> Result<malachitebft_app_channel::app::consensus::Multiaddr, EngineError> {
    let text = match addr {
        SocketAddr::V4(a) => format!("/ip4/{}/tcp/{}", a.ip(), a.port()),
        SocketAddr::V6(a) => format!("/ip6/{}/tcp/{}", a.ip(), a.port()),
    };
    text.parse()
        .map_err(|e| EngineError::Engine(format!("address {addr}: {e}")))
}

fn engine_config(config: &EngineConfig) -> Result<node::Config, EngineError> {
    let timeouts = TimeoutConfig {
        timeout_propose: config.timeout_propose,
        timeout_propose_delta: config.timeout_propose / 4,
        timeout_prevote: config.timeout_prevote,
        timeout_prevote_delta: config.timeout_prevote / 4,
        timeout_precommit: config.timeout_precommit,
        timeout_precommit_delta: config.timeout_precommit / 4,
        timeout_rebroadcast: config.timeout_propose
            + config.timeout_prevote
            + config.timeout_precommit,
    };
    Ok(node::Config {
        moniker: format!("haca-{}", &config.key.node_id().to_string()[..8]),
        consensus: ConsensusConfig {
            timeouts,
            p2p: P2pConfig {
                listen_addr: multiaddr(&config.listen)?,
                persistent_peers: config
                    .peers
                    .iter()
                    .map(multiaddr)
                    .collect::<Result<_, _>>()?,
                discovery: DiscoveryConfig::default(),
                // Validators dial each other directly, so every message goes straight to
                // every connected peer (and publishing with no peers is not an error).
                protocol: PubSubProtocol::Broadcast,
                ..P2pConfig::default()
            },
            value_payload: ValuePayload::ProposalAndParts,
            queue_capacity: 100,
        },
        value_sync: ValueSyncConfig {
            enabled: true,
            status_update_interval: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            ..ValueSyncConfig::default()
        },
    })
}

/// Starts the engine at `host.committed_height() + 1`; decided blocks go to
/// [`Host::commit`]. A key outside the validator set runs as a non-voting follower: Malachite
/// gives it no role (it neither proposes nor votes) but it still receives proposals and votes
/// and syncs decided blocks from its peers, and becomes a voting validator at the first
/// height whose set (from [`Host::validator_set`]) includes it.
pub async fn start<H: Host>(
    config: EngineConfig,
    host: Arc<H>,
) -> Result<EngineHandle, EngineError> {
    start_with_fault(config, host, None).await
}

/// [`start`], with deliberate misbehaviour for fault tests. Only [`Fault::Equivocate`] acts
/// here (when this validator proposes, it streams a second, different block for the same
/// height and round); [`Fault::SettleForged`] acts in the host
/// ([`crate::validator::Validator::with_fault`]) and is ignored here. `None` is [`start`].
pub async fn start_with_fault<H: Host>(
    config: EngineConfig,
    host: Arc<H>,
    fault: Option<Fault>,
) -> Result<EngineHandle, EngineError> {
    use malachitebft_app_channel::app::types::core::Height as _;

    let me = config.key.node_id();
    std::fs::create_dir_all(&config.home).map_err(|source| EngineError::Home {
        path: config.home.clone(),
        source,
    })?;
    let blocks_dir = config.home.join("blocks");
    let store = store::BlockStore::open(&blocks_dir).map_err(|source| EngineError::Home {
        path: blocks_dir,
        source,
    })?;

    // An engine that was just dropped may still be letting go of the WAL.
    if !wait_wal_unlocked(&config.home, Duration::from_secs(5)).await {
        return Err(EngineError::WalLocked(wal_path(&config.home)));
    }

    let start_set = host
        .validator_set(host.committed_height() + 1)
        .unwrap_or_else(|| config.validators.clone());
    if start_set.power_of(&me).is_none() {
        tracing::info!(
            key = %me,
            height = host.committed_height() + 1,
            "this node's key is not in the validator set: it follows the chain without voting"
        );
    }
    let validators = context::ValidatorSet::from_settlement(&start_set);
    let node = node::HacaNode {
        home: config.home.clone(),
        key: config.key.clone(),
        config: engine_config(&config)?,
    };
    let start_height = context::Height(host.committed_height()).increment();
    let (channels, engine) = malachitebft_app_channel::start_engine(
        context::HacaContext,
        node.clone(),
        node.config.clone(),
        codec::HacaCodec,
        codec::HacaCodec,
        Some(start_height),
        validators.clone(),
    )
    .await
    .map_err(|e| EngineError::Engine(format!("{e:#}")))?;

    let app = app::App {
        host,
        signer: context::Signer::new(config.key.clone()),
        address: context::Address(me),
        fallback: validators,
        store,
        streams: parts::Streams::default(),
        current: start_height.0,
        undecided: Default::default(),
        future: Default::default(),
        peers: config.peers.clone(),
        peer_patience: config.timeout_propose,
        equivocate: fault == Some(Fault::Equivocate),
    };
    let app = tokio::spawn(app.run(channels));
    Ok(EngineHandle {
        home: config.home,
        engine: Some(engine),
        app: Some(app),
    })
}

#[cfg(test)]
mod tests {
    use super::Fault;

    #[test]
    fn faults_read_and_write_their_names() {
        for (f, json, cli) in [
            (Fault::SettleForged, "\"settle_forged\"", "settle-forged"),
            (Fault::Equivocate, "\"equivocate\"", "equivocate"),
        ] {
            assert_eq!(serde_json::to_string(&f).unwrap(), json);
            assert_eq!(serde_json::from_str::<Fault>(json).unwrap(), f);
            assert_eq!(cli.parse::<Fault>().unwrap(), f);
            assert_eq!(f.to_string(), cli);
        }
        assert_eq!("settle_forged".parse::<Fault>(), Ok(Fault::SettleForged));
        assert!("lie"
            .parse::<Fault>()
            .unwrap_err()
            .contains("settle-forged"));
    }
}
