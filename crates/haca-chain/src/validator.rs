//! One validator's application: the mempool of submitted records, the chain state rebuilt
//! from committed blocks, and the consensus [`Host`] that proposes, checks and commits.

use crate::consensus::{EncodedBlock, Fault, Host};
use crate::record::{EvidenceVerifier, Rejection, RunRecord};
use crate::state::{Block, ChainState, EvidenceView, Outcome, RoundTrees, Tx};
use haca_core::settlement::{
    Certificate, Genesis, SettlementEvidence, ValidatorHistory, ValidatorSet,
};
use haca_core::{Digest, RunId};
use haca_store::{SettlementRow, Store, StoredBlock};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{watch, Notify};

/// Most bytes of records one block carries: a round closes early when this much waits.
/// Larger blocks take longer to stream and check than consensus timeouts allow, and a
/// lagging validator fetches committed blocks whole (Malachite's sync messages are bounded).
pub const MAX_ROUND_BYTES: usize = 4 << 20;

/// The encoded size of a record, near enough to budget a block by (private records are
/// small and alike; the receipt and content of the others are measured).
fn record_size(r: &RunRecord) -> usize {
    let measured = |v: &serde_json::Value| serde_json::to_vec(v).map(|b| b.len()).unwrap_or(0);
    400 + r.receipt.as_ref().map(measured).unwrap_or(0)
        + r.content
            .as_ref()
            .map(|c| measured(&c.input) + measured(&c.output))
            .unwrap_or(0)
}

/// Most records waiting in the mempool before submissions are refused.
pub const MAX_MEMPOOL: usize = 1_000_000;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Why a validator could not open or take a submission.
#[derive(Debug, thiserror::Error)]
pub enum ValidatorError {
    #[error("store: {0}")]
    Store(#[from] haca_store::StoreError),
    #[error("committed block at height {height} does not replay: {reason}")]
    Replay { height: u64, reason: String },
    #[error("the mempool holds {MAX_MEMPOOL} records; try again after the next round")]
    MempoolFull,
}

/// What a submission did.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Submitted {
    /// Queued for the next round.
    Queued,
    /// Already waiting in the mempool.
    AlreadyQueued,
    /// Already settled: resubmission is a no-op.
    AlreadySettled,
}

/// Where a run stands on this chain.
#[derive(Clone, Debug)]
pub enum RunSettlement {
    Pending,
    Settled(Box<SettlementEvidence>),
    /// Rejected at `height`; `reason` is the proposer's detail text (the block's
    /// `rejected[].reason`), the code validators agreed on is in the committed block.
    Rejected {
        height: u64,
        reason: String,
    },
}

/// A record waiting for its round, with the verdict computed when it arrived (so the
/// proposer does not re-verify thousands of records inside its propose timeout).
struct Pending {
    record: Arc<RunRecord>,
    /// Its encoded size, about ([`record_size`]).
    size: usize,
    arrived: Instant,
    verdict: Verdict,
}

/// An evidence verdict and the gateway registry it was reached against.
#[derive(Clone)]
struct Verdict {
    registry: Digest,
    result: Result<(), Rejection>,
}

#[derive(Default)]
struct Mempool {
    queue: VecDeque<Pending>,
    index: HashMap<RunId, usize>,
    /// Sum of the waiting records' sizes.
    bytes: usize,
    /// Transactions other than records (label moves), in arrival order.
    txs: Vec<Tx>,
}

/// What a block will carry: records with their verdicts, and transactions.
#[derive(Default)]
struct Batch {
    records: Vec<RunRecord>,
    verdicts: HashMap<RunId, (Arc<RunRecord>, Verdict)>,
    txs: Vec<Tx>,
}

/// Hash of the registered gateways (keys and the heights they were registered at, so a
/// gateway removed and registered again also changes it): a verdict stays valid while it
/// does not change.
fn registry_hash(state: &ChainState) -> Digest {
    let keys: Vec<String> = state
        .gateways
        .iter()
        .map(|(k, from)| format!("{k}@{from}"))
        .collect();
    haca_core::sha256(keys.join(",").as_bytes())
}

/// Answers from verdicts reached at submission while the registry is unchanged; asks the
/// inner verifier otherwise.
struct Prejudged<'a> {
    /// The record each verdict is about: a block may carry another record under the same
    /// run id (a forgery), which gets its own verification.
    verdicts: HashMap<RunId, (Arc<RunRecord>, Verdict)>,
    registry: Digest,
    inner: &'a dyn EvidenceVerifier,
}

impl EvidenceVerifier for Prejudged<'_> {
    fn verify(&self, record: &RunRecord, view: &EvidenceView<'_>) -> Result<(), Rejection> {
        match self.verdicts.get(&record.run_id) {
            Some((judged, v)) if v.registry == self.registry && **judged == *record => {
                v.result.clone()
            }
            _ => self.inner.verify(record, view),
        }
    }
}

impl Mempool {
    /// Drops every record the committed block settled, and every record it rejected. A
    /// queued record that differs from the rejected one under its run id stays: it may be
    /// the genuine record of a forged run id.
    fn remove_decided(&mut self, block: &Block) {
        let settled: std::collections::HashSet<RunId> =
            block.records.iter().map(|r| r.run_id).collect();
        let rejected: HashMap<RunId, &RunRecord> = block
            .rejected
            .iter()
            .map(|x| (x.record.run_id, &x.record))
            .collect();
        if settled.is_empty() && rejected.is_empty() {
            return;
        }
        self.queue.retain(|p| {
            !settled.contains(&p.record.run_id)
                && rejected.get(&p.record.run_id) != Some(&&*p.record)
        });
        self.bytes = self.queue.iter().map(|p| p.size).sum();
        self.index = self
            .queue
            .iter()
            .enumerate()
            .map(|(i, p)| (p.record.run_id, i))
            .collect();
    }
}

/// How many rounds' tree-dump Walrus ids a validator keeps (about 60 bytes each).
const WALRUS_IDS_KEPT: usize = 4096;

/// A committed round, decoded, with its trees built.
struct CachedRound {
    height: u64,
    block: Block,
    certificate: Certificate,
    trees: RoundTrees,
}

/// One validator's application state.
pub struct Validator {
    genesis: Genesis,
    store: Arc<Store>,
    verifier: Box<dyn EvidenceVerifier>,
    state: Mutex<ChainState>,
    /// The state's registries without its outcome map, for verifying submissions outside
    /// the state lock.
    registries: Mutex<Arc<ChainState>>,
    mempool: Mutex<Mempool>,
    arrivals: Notify,
    /// Blocks this validator proposed or checked, by id, with the state after them: commit
    /// applies the checked result instead of re-verifying.
    checked: Mutex<HashMap<Digest, (Block, ChainState)>>,
    height: watch::Sender<u64>,
    round_cache: Mutex<Option<Arc<CachedRound>>>,
    /// Recent rounds' tree-dump Walrus ids by height: receipts of several rounds read in turn
    /// rebuild their trees, and the id is the one costly part of that.
    walrus_ids: Mutex<VecDeque<(u64, String)>>,
    /// Deliberate misbehaviour for fault tests ([`Validator::with_fault`]); `None` in
    /// production.
    fault: Option<Fault>,
}

/// A verifier that accepts every record: what a Byzantine proposer "verifies" with
/// ([`Fault::SettleForged`]).
struct AcceptAll;

impl EvidenceVerifier for AcceptAll {
    fn verify(&self, _: &RunRecord, _: &EvidenceView<'_>) -> Result<(), Rejection> {
        Ok(())
    }
}

/// For [`Fault::SettleForged`]: a record no honest validator accepts, under a run id of its
/// own (unique per block built): a private record naming a registered gateway (an
/// unregistered one if the chain has none) with a signature that gateway never made.
fn forged_record(state: &ChainState, time_ms: u64) -> RunRecord {
    let seed = format!(
        "haca.fault.settle-forged:{}:{}:{time_ms}",
        state.chain_id,
        state.height + 1
    );
    let run_id = RunId(haca_core::sha256(seed.as_bytes()));
    let gateway = state
        .gateways
        .keys()
        .next()
        .copied()
        .unwrap_or_else(|| haca_core::NodeKey::generate().node_id());
    RunRecord {
        run_id,
        mode: haca_core::settlement::SettlementMode::Private,
        receipt_digest: haca_core::sha256(run_id.0.as_bytes()),
        gateway,
        signature: hex::encode([0x5a; 64]),
        receipt: None,
        content: None,
    }
}

impl Validator {
    /// Opens the validator: starts from genesis and replays every committed block through
    /// [`ChainState::replay`] (body root, round roots, state hash), so a damaged store is
    /// found here, not later.
    pub fn open(
        genesis: Genesis,
        store: Arc<Store>,
        verifier: Box<dyn EvidenceVerifier>,
    ) -> Result<Self, ValidatorError> {
        let mut state =
            ChainState::from_genesis(&genesis).map_err(|reason| ValidatorError::Replay {
                height: 0,
                reason: format!("genesis: {reason}"),
            })?;
        let last = store.last_height()?;
        for h in 1..=last {
            let stored = store.block(h)?.ok_or_else(|| ValidatorError::Replay {
                height: h,
                reason: "missing from the store".into(),
            })?;
            let block = Block::decode(&stored.block)
                .map_err(|reason| ValidatorError::Replay { height: h, reason })?;
            state = state
                .replay(&block)
                .map_err(|reason| ValidatorError::Replay { height: h, reason })?;
            state.outcomes.compact();
            state.payments.compact();
        }
        if last > 0 {
            tracing::info!(
                "chain {}: replayed {last} blocks, state hash {}",
                genesis.chain_id,
                state.hash()
            );
        }
        let (height, _) = watch::channel(last);
        Ok(Validator {
            genesis,
            store,
            verifier,
            registries: Mutex::new(Arc::new(state.registries())),
            state: Mutex::new(state),
            mempool: Mutex::new(Mempool::default()),
            arrivals: Notify::new(),
            checked: Mutex::new(HashMap::new()),
            height,
            round_cache: Mutex::new(None),
            walrus_ids: Mutex::new(VecDeque::new()),
            fault: None,
        })
    }

    /// Deliberate misbehaviour, for fault tests only. With [`Fault::SettleForged`], every
    /// block this validator proposes settles a forged record (and every waiting record, its
    /// verdict ignored), built with a verifier that accepts everything so that the block is
    /// otherwise consistent (body root, round roots, state hash); honest validators refuse
    /// it and vote nil. Checking and committing others' blocks stay honest. Other faults act
    /// in the consensus adapter and change nothing here; `None` is the honest validator.
    pub fn with_fault(mut self, fault: Option<Fault>) -> Self {
        self.fault = fault;
        self
    }

    pub fn genesis(&self) -> &Genesis {
        &self.genesis
    }

    /// A receiver that sees every new committed height.
    pub fn heights(&self) -> watch::Receiver<u64> {
        self.height.subscribe()
    }

    /// Every validator set this chain has had and every gateway it registered: what a
    /// verifier needs to check settlement evidence from any height (`haca chain validators
    /// --export`).
    pub fn validator_history(&self) -> ValidatorHistory {
        self.state.lock().expect("state lock").history()
    }

    /// The validator set that signs `height`, for every committed height and the next one;
    /// `None` for height 0 and heights further ahead (a block not yet committed may change
    /// the set).
    pub fn validator_set(&self, height: u64) -> Option<ValidatorSet> {
        self.state
            .lock()
            .expect("state lock")
            .validator_set_at(height)
            .cloned()
    }

    /// The governance changes applied so far: the next governance transaction needs
    /// `seq = governance_seq() + 1`.
    pub fn governance_seq(&self) -> u64 {
        self.state.lock().expect("state lock").governance_seq
    }

    /// The chain's TEE registry (approved PCR sets, registered enclaves) and its dev root's
    /// presence, as of the last committed block.
    pub fn tee_registry(&self) -> (haca_tee::registry::TeeRegistry, bool) {
        let s = self.state.lock().expect("state lock");
        (s.tee.clone(), s.tee_dev_root.is_some())
    }

    pub fn state_hash(&self) -> (u64, Digest) {
        let s = self.state.lock().expect("state lock");
        (s.height, s.hash())
    }

    /// Queues a record for the next round, verifying its evidence now, on the caller's
    /// thread. Idempotent by run id: the first record queued under a run id holds its place,
    /// unless its evidence failed and the newcomer's passes; a forgery must not keep the
    /// genuine record of its run id out of the round.
    pub fn submit(&self, record: RunRecord) -> Result<Submitted, ValidatorError> {
        if matches!(
            self.state
                .lock()
                .expect("state lock")
                .outcome(&record.run_id),
            Some(Outcome::Settled { .. })
        ) {
            return Ok(Submitted::AlreadySettled);
        }
        let holds_slot = |pool: &Mempool| {
            pool.index.get(&record.run_id).map(|&at| {
                pool.queue[at].verdict.result.is_ok() || *pool.queue[at].record == record
            })
        };
        if holds_slot(&self.mempool.lock().expect("mempool lock")) == Some(true) {
            return Ok(Submitted::AlreadyQueued);
        }
        let registries = self.registries.lock().expect("registries lock").clone();
        let verdict = Verdict {
            registry: registry_hash(&registries),
            result: self.verifier.verify(&record, &registries.evidence_view()),
        };
        let mut pool = self.mempool.lock().expect("mempool lock");
        let size = record_size(&record);
        match holds_slot(&pool) {
            Some(true) => return Ok(Submitted::AlreadyQueued),
            // The queued record under this run id failed its evidence check.
            Some(false) => {
                if verdict.result.is_err() {
                    return Ok(Submitted::AlreadyQueued);
                }
                let at = pool.index[&record.run_id];
                let old = std::mem::replace(
                    &mut pool.queue[at],
                    Pending {
                        size,
                        record: Arc::new(record),
                        arrived: Instant::now(),
                        verdict,
                    },
                );
                pool.bytes = pool.bytes - old.size + size;
            }
            None => {
                if pool.queue.len() >= MAX_MEMPOOL {
                    return Err(ValidatorError::MempoolFull);
                }
                let at = pool.queue.len();
                pool.index.insert(record.run_id, at);
                pool.bytes += size;
                pool.queue.push_back(Pending {
                    size,
                    record: Arc::new(record),
                    arrived: Instant::now(),
                    verdict,
                });
            }
        }
        drop(pool);
        self.arrivals.notify_one();
        Ok(Submitted::Queued)
    }

    /// Where the chain state says `run` ended up (no store read).
    pub fn outcome(&self, run: &RunId) -> Option<Outcome> {
        self.state.lock().expect("state lock").outcome(run)
    }

    pub fn pending(&self) -> usize {
        self.mempool.lock().expect("mempool lock").queue.len()
    }

    /// Where `run` stands, with its settlement evidence once its round has committed.
    pub fn settlement(&self, run: &RunId) -> Result<RunSettlement, ValidatorError> {
        let Some(row) = self.store.settlement(&run.to_string())? else {
            return Ok(RunSettlement::Pending);
        };
        if row.status != "settled" {
            return Ok(RunSettlement::Rejected {
                height: row.height,
                reason: row.reason.unwrap_or_default(),
            });
        }
        let corrupt = |reason: String| ValidatorError::Replay {
            height: row.height,
            reason,
        };
        // Receipts of one round are usually read together: keep the last round's decoded
        // block and trees rather than decoding a block of thousands of records per receipt.
        let cached = self
            .round_cache
            .lock()
            .expect("round cache lock")
            .clone()
            .filter(|r| r.height == row.height);
        let round = match cached {
            Some(r) => r,
            None => {
                let stored =
                    self.store
                        .block(row.height)?
                        .ok_or_else(|| ValidatorError::Replay {
                            height: row.height,
                            reason: "a settled run names a block the store does not hold".into(),
                        })?;
                let block = Block::decode(&stored.block).map_err(corrupt)?;
                let certificate: Certificate = serde_json::from_str(&stored.certificate)
                    .map_err(|e| corrupt(format!("stored certificate: {e}")))?;
                let trees =
                    RoundTrees::build_with(&block, |dump| self.walrus_id_at(row.height, dump))
                        .ok_or_else(|| corrupt("the block closes no settlement round".into()))?;
                let r = Arc::new(CachedRound {
                    height: row.height,
                    block,
                    certificate,
                    trees,
                });
                *self.round_cache.lock().expect("round cache lock") = Some(r.clone());
                r
            }
        };
        let leaf = row.leaf_index.unwrap_or(0) as usize;
        if round.block.records.get(leaf).map(|r| r.run_id) != Some(*run) {
            return Err(corrupt(format!(
                "leaf {leaf} of the block is not run {run}"
            )));
        }
        let ev = round.trees.evidence(&round.block, leaf, &round.certificate);
        Ok(RunSettlement::Settled(Box::new(ev)))
    }

    /// The tree dump of the round the block at `height` closed, with its Walrus blob id;
    /// `None` when that block closed no round (or is not stored).
    pub fn round_dump_at(&self, height: u64) -> Result<Option<(String, Vec<u8>)>, ValidatorError> {
        let Some(stored) = self.store.block(height)? else {
            return Ok(None);
        };
        let block = Block::decode(&stored.block)
            .map_err(|reason| ValidatorError::Replay { height, reason })?;
        Ok(
            RoundTrees::build_with(&block, |dump| self.walrus_id_at(height, dump))
                .and_then(|t| Some((t.walrus_blob_id.clone()?, t.dump(&block)))),
        )
    }

    /// The Walrus id of the tree dump of the round at `height`, computed once per height
    /// among the last [`WALRUS_IDS_KEPT`] asked for.
    fn walrus_id_at(&self, height: u64, dump: &dyn Fn() -> Vec<u8>) -> Option<String> {
        let known = |ids: &VecDeque<(u64, String)>| {
            ids.iter()
                .find(|(h, _)| *h == height)
                .map(|(_, id)| id.clone())
        };
        if let Some(id) = known(&self.walrus_ids.lock().expect("walrus ids lock")) {
            return Some(id);
        }
        let id = crate::state::walrus_id(&dump())?;
        let mut ids = self.walrus_ids.lock().expect("walrus ids lock");
        if known(&ids).is_none() {
            if ids.len() == WALRUS_IDS_KEPT {
                ids.pop_front();
            }
            ids.push_back((height, id.clone()));
        }
        Some(id)
    }

    /// Picks the records for a block: everything waiting once the round is due (full, or
    /// its oldest record has waited the round interval), at most a round's worth, with the
    /// verdicts reached when they arrived.
    fn due_records(&self, force: bool) -> Option<Batch> {
        let params = self.genesis.settlement;
        let pool = self.mempool.lock().expect("mempool lock");
        let oldest = pool.queue.front().map(|p| p.arrived.elapsed());
        // A transaction (a label move) is waited on by an operator: it never waits for a round.
        let due = pool.queue.len() as u64 >= params.max_round_records
            || pool.bytes >= MAX_ROUND_BYTES
            || oldest.is_some_and(|a| a >= Duration::from_millis(params.round_interval_ms))
            || !pool.txs.is_empty();
        (due || force).then(|| {
            // At most a round's worth of records and of bytes (at least one record).
            let mut budget = MAX_ROUND_BYTES;
            let count = pool
                .queue
                .iter()
                .take(params.max_round_records as usize)
                .take_while(|p| {
                    let fits = p.size <= budget;
                    budget = budget.saturating_sub(p.size);
                    fits
                })
                .count()
                .max(1);
            let take = pool.queue.iter().take(count);
            Batch {
                verdicts: take
                    .clone()
                    .map(|p| (p.record.run_id, (p.record.clone(), p.verdict.clone())))
                    .collect(),
                records: take.map(|p| (*p.record).clone()).collect(),
                txs: pool.txs.clone(),
            }
        })
    }

    /// Queues a transaction (a label move, a governance change) for the next block. Refused
    /// at once when it does not check against the current state (so a governance change is
    /// taken only once the one before it has committed).
    pub fn submit_tx(&self, tx: Tx) -> Result<(), String> {
        self.state.lock().expect("state lock").check_tx(&tx)?;
        let mut pool = self.mempool.lock().expect("mempool lock");
        if !pool.txs.contains(&tx) {
            pool.txs.push(tx);
        }
        drop(pool);
        self.arrivals.notify_one();
        Ok(())
    }

    /// A label's revisions in the chain's model registry.
    pub fn label_revisions(&self, label: &str) -> Vec<crate::state::LabelRevision> {
        let state = self.state.lock().expect("state lock");
        state.models.get(label).cloned().unwrap_or_default()
    }

    /// Every label in the chain's model registry with its revisions.
    pub fn models(&self) -> std::collections::BTreeMap<String, Vec<crate::state::LabelRevision>> {
        self.state.lock().expect("state lock").models.clone()
    }

    fn time_until_due(&self) -> Option<Duration> {
        let interval = Duration::from_millis(self.genesis.settlement.round_interval_ms);
        let pool = self.mempool.lock().expect("mempool lock");
        pool.queue
            .front()
            .map(|p| interval.saturating_sub(p.arrived.elapsed()))
    }

    fn build(&self, batch: Batch) -> EncodedBlock {
        let t = Instant::now();
        let state = self.state.lock().expect("state lock").clone();
        let verifier = Prejudged {
            verdicts: batch.verdicts,
            registry: registry_hash(&state),
            inner: self.verifier.as_ref(),
        };
        let offered = batch.txs.len();
        let (block, next) = if self.fault == Some(Fault::SettleForged) {
            let time_ms = now_ms();
            let forged = forged_record(&state, time_ms);
            tracing::warn!(
                "fault settle-forged: proposing block {} that settles forged run {}",
                state.height + 1,
                forged.run_id
            );
            let mut records = batch.records;
            records.insert(0, forged);
            state.propose(time_ms, records, batch.txs, &AcceptAll)
        } else {
            state.propose(now_ms(), batch.records, batch.txs, &verifier)
        };
        if block.txs.len() < offered {
            tracing::warn!(
                "{} transaction(s) no longer check against the state and were left out",
                offered - block.txs.len()
            );
        }
        let id = block.header.id();
        let bytes = block.encode();
        tracing::debug!(
            "built block {} ({} records, {} bytes) in {:?}",
            block.header.height,
            block.records.len() + block.rejected.len(),
            bytes.len(),
            t.elapsed()
        );
        self.checked
            .lock()
            .expect("checked lock")
            .insert(id, (block, next));
        EncodedBlock { id, bytes }
    }
}

impl Host for Validator {
    async fn propose(
        &self,
        height: u64,
        round: u32,
        deadline: tokio::time::Instant,
    ) -> EncodedBlock {
        tracing::debug!("proposing height {height} round {round}");
        loop {
            if let Some(records) = self.due_records(false) {
                return self.build(records);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                // Out of time: propose what is waiting (maybe nothing) rather than time out.
                return self.build(self.due_records(true).unwrap_or_default());
            }
            let wake = match self.time_until_due() {
                Some(d) => (now + d).min(deadline),
                None => deadline,
            };
            tokio::select! {
                _ = self.arrivals.notified() => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    fn check(&self, height: u64, bytes: &[u8]) -> Result<Digest, String> {
        let block = Block::decode(bytes)?;
        if block.header.height != height {
            return Err(format!(
                "block says height {}, consensus is at {height}",
                block.header.height
            ));
        }
        let id = block.header.id();
        if self.checked.lock().expect("checked lock").contains_key(&id) {
            return Ok(id);
        }
        let state = self.state.lock().expect("state lock").clone();
        // Records this validator verified when they reached its mempool are not verified
        // again: its own verdict on the identical record stands.
        let verdicts = {
            let pool = self.mempool.lock().expect("mempool lock");
            block
                .records
                .iter()
                .chain(block.rejected.iter().map(|x| &x.record))
                .filter_map(|r| {
                    let p = &pool.queue[*pool.index.get(&r.run_id)?];
                    Some((r.run_id, (p.record.clone(), p.verdict.clone())))
                })
                .collect()
        };
        let verifier = Prejudged {
            verdicts,
            registry: registry_hash(&state),
            inner: self.verifier.as_ref(),
        };
        let next = state.check(&block, &verifier)?;
        self.checked
            .lock()
            .expect("checked lock")
            .insert(id, (block, next));
        Ok(id)
    }

    fn commit(&self, height: u64, bytes: &[u8], certificate: Certificate) -> Result<(), String> {
        let t = Instant::now();
        let cached = self
            .checked
            .lock()
            .expect("checked lock")
            .remove(&certificate.block_id);
        let (block, next) = match cached {
            Some(c) => c,
            None => {
                let block = Block::decode(bytes)?;
                let state = self.state.lock().expect("state lock").clone();
                let next = state.check(&block, self.verifier.as_ref())?;
                (block, next)
            }
        };
        if block.header.height != height || block.header.id() != certificate.block_id {
            return Err(format!(
                "decided block {} at height {height} is not the block certified ({} at {})",
                block.header.id(),
                certificate.block_id,
                certificate.height
            ));
        }
        self.persist(height, bytes, block, next, certificate, t)
    }

    fn committed_height(&self) -> u64 {
        self.state.lock().expect("state lock").height
    }

    fn committed_block(&self, height: u64) -> Option<(Vec<u8>, Certificate)> {
        let stored = self.store.block(height).ok()??;
        let cert = serde_json::from_str(&stored.certificate).ok()?;
        Some((stored.block, cert))
    }

    fn validator_set(&self, height: u64) -> Option<ValidatorSet> {
        Validator::validator_set(self, height)
    }
}

impl Validator {
    /// Applies a block a validator network committed, on a node that follows the chain
    /// without voting (a gateway settling on a remote chain). The certificate must carry
    /// signatures of more than 2/3 of the set that signs `height`; the block then replays
    /// (structure, roots, state hash) without re-verifying each record's evidence, which
    /// the certificate's signers checked before voting.
    pub fn apply_certified(
        &self,
        height: u64,
        bytes: &[u8],
        certificate: Certificate,
    ) -> Result<(), String> {
        let t = Instant::now();
        let block = Block::decode(bytes)?;
        let state = self.state.lock().expect("state lock").clone();
        if height != state.height + 1 || block.header.height != height {
            return Err(format!(
                "block {} at height {height} does not follow this node's height {}",
                block.header.height, state.height
            ));
        }
        let set = state
            .validator_set_at(height)
            .ok_or_else(|| format!("no validator set is known for height {height}"))?;
        if certificate.height != height {
            return Err(format!(
                "the certificate is for height {}, the block for {height}",
                certificate.height
            ));
        }
        certificate
            .verify(&block.header, set)
            .map_err(|e| format!("certificate of block {height}: {e}"))?;
        let next = state.replay(&block)?;
        drop(state);
        self.persist(height, bytes, block, next, certificate, t)
    }

    /// Makes a checked block durable (block, certificate and every outcome in one store
    /// transaction), then moves the state, mempool and height watchers past it.
    fn persist(
        &self,
        height: u64,
        bytes: &[u8],
        block: Block,
        next: ChainState,
        certificate: Certificate,
        t: Instant,
    ) -> Result<(), String> {
        let mut outcomes = Vec::with_capacity(block.records.len() + block.rejected.len());
        let round = block.header.settlement.as_ref().map(|s| s.round);
        for (i, r) in block.records.iter().enumerate() {
            outcomes.push(SettlementRow {
                run_id: r.run_id.to_string(),
                status: "settled".into(),
                height,
                round,
                leaf_index: Some(i as u64),
                reason: None,
            });
        }
        for x in &block.rejected {
            outcomes.push(SettlementRow {
                run_id: x.record.run_id.to_string(),
                status: "rejected".into(),
                height,
                round,
                leaf_index: None,
                // The detail; the code stays in the stored block (`rejected[].code`).
                reason: Some(x.reason.clone()),
            });
        }
        self.store
            .commit_block(
                StoredBlock {
                    height,
                    block_id: certificate.block_id.to_hex(),
                    block: bytes.to_vec(),
                    certificate: serde_json::to_string(&certificate)
                        .expect("certificates serialize"),
                    committed_at: now_ms(),
                },
                outcomes,
            )
            .map_err(|e| format!("store: {e}"))?;
        if !block.records.is_empty() || !block.rejected.is_empty() {
            tracing::info!(
                "height {height}: settled {} records, rejected {}",
                block.records.len(),
                block.rejected.len()
            );
        }
        for x in &block.rejected {
            tracing::warn!(
                "run {} rejected ({}): {}",
                x.record.run_id,
                x.code,
                x.reason
            );
        }
        {
            let mut pool = self.mempool.lock().expect("mempool lock");
            pool.remove_decided(&block);
            // Included transactions leave; so do ones that no longer check.
            let state_after = &next;
            pool.txs
                .retain(|t| !block.txs.contains(t) && state_after.check_tx(t).is_ok());
        }
        let mut state = self.state.lock().expect("state lock");
        *state = next;
        // Blocks checked for this height lost the vote; drop them (and their share of the
        // outcome map, so that compacting it does not copy it).
        self.checked
            .lock()
            .expect("checked lock")
            .retain(|_, (b, _)| b.header.height > height);
        state.outcomes.compact();
        state.payments.compact();
        *self.registries.lock().expect("registries lock") = Arc::new(state.registries());
        drop(state);
        tracing::debug!("committed block {height} in {:?}", t.elapsed());
        self.height.send_replace(height);
        Ok(())
    }
}
