//! A test host for the consensus engine: blocks are bare headers (canonical JSON of a
//! `BlockHeader`) chained by `prev_block`. Shared by the consensus_* and governance tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use haca_chain::consensus::{EncodedBlock, EngineConfig, Host};
use haca_core::settlement::{BlockHeader, Certificate, Validator, ValidatorSet};
use haca_core::{canonical, sha256, Digest, NodeKey};
use tokio::sync::mpsc;

/// A committed block as the host saw it.
#[derive(Clone, Debug)]
pub struct Committed {
    pub header: BlockHeader,
    pub bytes: Vec<u8>,
    pub certificate: Certificate,
    /// Time from this host's `propose` of the block (if it proposed it) to its commit.
    pub since_propose: Option<Duration>,
}

pub struct HeaderHost {
    pub chain_id: String,
    pub set: ValidatorSet,
    pub blocks: Mutex<BTreeMap<u64, Committed>>,
    proposed: Mutex<BTreeMap<u64, Instant>>,
    /// Mixed into proposed headers so that different proposers build different blocks.
    pub salt: u64,
    events: mpsc::UnboundedSender<Committed>,
}

impl HeaderHost {
    pub fn new(
        chain_id: &str,
        set: ValidatorSet,
        blocks: BTreeMap<u64, Committed>,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<Committed>) {
        Self::salted(chain_id, set, blocks, 0)
    }

    pub fn salted(
        chain_id: &str,
        set: ValidatorSet,
        blocks: BTreeMap<u64, Committed>,
        salt: u64,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<Committed>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let host = HeaderHost {
            chain_id: chain_id.into(),
            set,
            blocks: Mutex::new(blocks),
            proposed: Mutex::new(BTreeMap::new()),
            salt,
            events: tx,
        };
        (Arc::new(host), rx)
    }

    fn tip(&self) -> (u64, Digest) {
        let blocks = self.blocks.lock().unwrap();
        blocks
            .iter()
            .next_back()
            .map(|(h, c)| (*h, c.header.id()))
            .unwrap_or((0, Digest::default()))
    }

    fn header(&self, height: u64, time_ms: u64) -> BlockHeader {
        let (_, prev) = self.tip();
        BlockHeader {
            chain_id: self.chain_id.clone(),
            height,
            time_ms,
            prev_block: prev,
            txs_root: sha256(&height.to_be_bytes()),
            state_hash: sha256(prev.as_bytes()),
            validator_set_hash: self.set.hash(),
            settlement: None,
        }
    }

    fn parse(&self, height: u64, bytes: &[u8]) -> Result<BlockHeader, String> {
        let header: BlockHeader = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let (tip, prev) = self.tip();
        if header.height != height || height != tip + 1 {
            return Err(format!(
                "header height {} at {height}, tip {tip}",
                header.height
            ));
        }
        if header.prev_block != prev || header.chain_id != self.chain_id {
            return Err("header does not extend this chain".into());
        }
        if header.validator_set_hash != self.set.hash() {
            return Err("wrong validator set".into());
        }
        if canonical::to_vec(&header).unwrap() != bytes {
            return Err("header is not canonical JSON".into());
        }
        Ok(header)
    }
}

impl Host for HeaderHost {
    async fn propose(
        &self,
        height: u64,
        _round: u32,
        _deadline: tokio::time::Instant,
    ) -> EncodedBlock {
        self.proposed.lock().unwrap().insert(height, Instant::now());
        let header = self.header(height, height * 1000 + self.salt);
        EncodedBlock {
            id: header.id(),
            bytes: canonical::to_vec(&header).unwrap(),
        }
    }

    fn check(&self, height: u64, bytes: &[u8]) -> Result<Digest, String> {
        self.parse(height, bytes).map(|h| h.id())
    }

    fn commit(&self, height: u64, bytes: &[u8], certificate: Certificate) -> Result<(), String> {
        let header = self.parse(height, bytes)?;
        let since_propose = self
            .proposed
            .lock()
            .unwrap()
            .get(&height)
            .map(|t| t.elapsed());
        let c = Committed {
            header,
            bytes: bytes.to_vec(),
            certificate,
            since_propose,
        };
        self.blocks.lock().unwrap().insert(height, c.clone());
        let _ = self.events.send(c);
        Ok(())
    }

    fn committed_height(&self) -> u64 {
        self.tip().0
    }

    fn committed_block(&self, height: u64) -> Option<(Vec<u8>, Certificate)> {
        let blocks = self.blocks.lock().unwrap();
        blocks
            .get(&height)
            .map(|c| (c.bytes.clone(), c.certificate.clone()))
    }

    fn validator_set(&self, _height: u64) -> Option<ValidatorSet> {
        Some(self.set.clone()) // the set never changes on this host
    }
}

pub fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

pub fn keys(n: u8) -> Vec<NodeKey> {
    (0..n).map(|i| NodeKey::from_seed([i + 1; 32])).collect()
}

pub fn set_of(keys: &[NodeKey]) -> ValidatorSet {
    ValidatorSet::new(
        keys.iter()
            .map(|k| Validator {
                public_key: k.node_id(),
                power: 1,
            })
            .collect(),
    )
    .unwrap()
}

pub fn config(
    home: &Path,
    key: &NodeKey,
    set: &ValidatorSet,
    listen: SocketAddr,
    peers: Vec<SocketAddr>,
) -> EngineConfig {
    EngineConfig {
        chain_id: "haca-test".into(),
        home: home.to_path_buf(),
        key: key.clone(),
        validators: set.clone(),
        listen,
        peers,
        timeout_propose: Duration::from_secs(3),
        timeout_prevote: Duration::from_secs(1),
        timeout_precommit: Duration::from_secs(1),
    }
}

/// Logs to stderr when RUST_LOG is set.
pub fn init_tracing() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}
