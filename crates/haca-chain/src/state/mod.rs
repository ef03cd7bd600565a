//! The chain state machine: genesis, blocks, and the deterministic transition between them.
//!
//! Pure: no I/O, no clock. The same genesis and the same committed blocks always give the same
//! state hash, which is how a restarted or new validator proves it replayed the chain right.

use crate::record::{EvidenceVerifier, RunRecord};
use haca_core::canonical;
use haca_core::merkle::{self, Levels};
use haca_core::oz::{OzProof, StandardTree};
use haca_core::settlement::{
    round_leaf, BlockHeader, Certificate, GatewayEntry, Genesis, RoundSummary, SettlementEvidence,
    SettlementParams, Validator, ValidatorEpoch, ValidatorHistory, ValidatorSet,
};
use haca_core::{sha256, Digest, NodeId, NodeKey, RunId};
use haca_tee::nitro::{Policy, TrustedRoot};
use haca_tee::registry::{Enclave, EnclaveFacts, PcrSet, TeeRegistry};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Largest encoded block a validator accepts.
pub const MAX_BLOCK_BYTES: usize = 64 << 20;

/// A record the validators refused, kept with the reason.
#[derive(Serialize, Deserialize, Clone, PartialEq, Debug)]
pub struct Rejected {
    pub record: RunRecord,
    pub reason: String,
}

/// A transaction other than a run record.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Tx {
    /// Points a model label at a blob (the model registry); signed by a registered gateway
    /// over `"haca.label.v1:" || JCS({label, blob_id, at_ms})`.
    MoveLabel {
        label: String,
        blob_id: haca_core::BlobId,
        at_ms: u64,
        gateway: NodeId,
        signature: String,
    },
    /// A change to the validator set or the gateway registry, approved by validators holding
    /// more than 2/3 of the current set's voting power, each signing
    /// [`governance_message`]. `seq` numbers governance changes 1, 2, ... so that an approved
    /// change applies once. A block carries at most one governance transaction; a validator
    /// set change takes effect from the next height.
    Governance {
        seq: u64,
        action: GovAction,
        approvals: Vec<Approval>,
    },
    /// Registers an enclave (the TEE registry) with its AWS Nitro attestation document
    /// (standard base64 of the COSE_Sign1 bytes), which must bind `signing_key` (its
    /// `public_key`, or nitriding `user_data`; see [`haca_tee::registry::check_binding`]).
    /// Anyone may submit it: the document is the authority. Validators verify the document at
    /// its own timestamp (audit mode: deterministic, no local clock) against the roots the
    /// chain trusts (the AWS Nitro root; the chain's dev root when its [`TeeConfig`] names
    /// one), and require its PCR0..2 to be an approved set, the block time to be at most
    /// `max_document_age_ms` after the document's timestamp, and `at_ms` (the registration
    /// time recorded) to be no later than the block time. See
    /// [`TeeRegistry::register`] for the other rules.
    RegisterEnclave {
        document_b64: String,
        signing_key: NodeId,
        at_ms: u64,
    },
    /// An enclave's heartbeat: `signature` is the hex Ed25519 signature by the enclave's
    /// signing key over [`haca_tee::registry::heartbeat_message`]`(tee_id, at_ms)`. Refused
    /// when `at_ms` is after the block time, older than `max_heartbeat_age_ms` at the block
    /// time, or not after the enclave's last heartbeat.
    EnclaveHeartbeat {
        tee_id: Digest,
        at_ms: u64,
        signature: String,
    },
}

/// What a governance transaction changes.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum GovAction {
    /// Adds a validator with `power` (> 0); it signs from the height after the block.
    AddValidator { public_key: NodeId, power: u64 },
    /// Removes a validator; it signs no block after the one that removes it.
    RemoveValidator { public_key: NodeId },
    /// Registers a gateway key: its records settle from the next block.
    RegisterGateway { node: NodeId },
    /// Removes a gateway key: its records settled so far stay settled, later ones are refused.
    RemoveGateway { node: NodeId },
    /// Approves a PCR set (PCR0..2) for enclave registration.
    ApprovePcrs { pcrs: PcrSet },
    /// Revokes an approved PCR set by its id ([`PcrSet::id`]): every enclave registered with
    /// it is disabled, and stays disabled (even if the set is approved again) until it
    /// registers again.
    RevokePcrs { pcr_set: Digest },
}

pub use haca_core::settlement::TeeConfig;

/// The label the chain gives its dev root in verification reports.
pub const CHAIN_DEV_ROOT_LABEL: &str = "chain-dev-root";

/// One validator's approval of a governance transaction: a hex Ed25519 signature over
/// [`governance_message`].
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    pub validator: NodeId,
    pub signature: String,
}

impl Approval {
    /// `key`'s approval of governance change `seq` doing `action` on chain `chain_id`.
    pub fn sign(key: &NodeKey, chain_id: &str, seq: u64, action: &GovAction) -> Approval {
        Approval {
            validator: key.node_id(),
            signature: hex::encode(key.sign(&governance_message(chain_id, seq, action))),
        }
    }
}

/// Bytes a validator signs to approve a governance change:
/// `"haca.gov.v1:" || JCS({chain_id, seq, action})`.
pub fn governance_message(chain_id: &str, seq: u64, action: &GovAction) -> Vec<u8> {
    let mut m = b"haca.gov.v1:".to_vec();
    m.extend(
        canonical::to_vec(&json!({"chain_id": chain_id, "seq": seq, "action": action}))
            .expect("governance actions canonicalize"),
    );
    m
}

/// Bytes a gateway signs to move a label.
pub fn label_message(label: &str, blob_id: &haca_core::BlobId, at_ms: u64) -> Vec<u8> {
    let mut m = b"haca.label.v1:".to_vec();
    m.extend(
        canonical::to_vec(&json!({"label": label, "blob_id": blob_id, "at_ms": at_ms}))
            .expect("strings canonicalize"),
    );
    m
}

/// A block: its header, the records it settles (in leaf order), the records it refused, and
/// other transactions.
#[derive(Serialize, Deserialize, Clone, PartialEq, Debug)]
#[serde(deny_unknown_fields)]
pub struct Block {
    pub header: BlockHeader,
    pub records: Vec<RunRecord>,
    pub rejected: Vec<Rejected>,
    pub txs: Vec<Tx>,
}

impl Block {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("blocks serialize")
    }

    /// Decodes a block; errors name the field and the reason.
    pub fn decode(bytes: &[u8]) -> Result<Block, String> {
        crate::record::decode_json(bytes, MAX_BLOCK_BYTES, "block")
    }

    /// SHA-256 over the canonical JSON of the block body (records, rejected, txs).
    pub fn body_root(records: &[RunRecord], rejected: &[Rejected], txs: &[Tx]) -> Digest {
        sha256(
            &canonical::to_vec(&json!({"records": records, "rejected": rejected, "txs": txs}))
                .expect("block bodies canonicalize"),
        )
    }

    /// The settlement evidence of every record this block settled, given its certificate.
    pub fn settlement_evidence(
        &self,
        certificate: &Certificate,
    ) -> Vec<(RunId, SettlementEvidence)> {
        let Some(trees) = RoundTrees::build(self) else {
            return Vec::new();
        };
        self.records
            .iter()
            .enumerate()
            .map(|(i, r)| (r.run_id, trees.evidence(self, i, certificate)))
            .collect()
    }
}

/// Both trees of a block's round, built once for many proofs.
pub struct RoundTrees {
    levels: Levels,
    oz: StandardTree,
}

impl RoundTrees {
    /// Both trees of `block`'s round; `None` when it closes no round or settled nothing.
    pub fn build(block: &Block) -> Option<Self> {
        block.header.settlement.as_ref()?;
        let pairs: Vec<(Digest, Digest)> = block
            .records
            .iter()
            .map(|r| (r.run_id.0, r.receipt_digest))
            .collect();
        let levels = Levels::build(
            block
                .records
                .iter()
                .map(|r| round_leaf(&r.run_id, &r.receipt_digest))
                .collect(),
        );
        Some(RoundTrees {
            levels,
            oz: StandardTree::build(&pairs)?,
        })
    }

    /// The evidence of leaf `i` (`i` below the block's record count).
    pub fn evidence(
        &self,
        block: &Block,
        i: usize,
        certificate: &Certificate,
    ) -> SettlementEvidence {
        let r = &block.records[i];
        let summary = block.header.settlement.as_ref().expect("checked in build");
        SettlementEvidence {
            round: summary.round,
            leaf_index: i as u64,
            header: block.header.clone(),
            inclusion_proof: self.levels.proof(i as u64).expect("index in range"),
            oz: OzProof::new(
                &self.oz.root(),
                (&r.run_id.0, &r.receipt_digest),
                &self.oz.proof(i),
            ),
            certificate: certificate.clone(),
        }
    }
}

/// What a governance action changes: the new validator set, or the new gateway map with
/// the entry of a removed gateway.
struct Registries {
    validators: Option<ValidatorSet>,
    gateways: Option<(BTreeMap<NodeId, u64>, Option<GatewayEntry>)>,
    tee: Option<TeeRegistry>,
}

/// A label's revision in the model registry.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct LabelRevision {
    pub revision: u64,
    pub blob_id: haca_core::BlobId,
    pub at_ms: u64,
    pub height: u64,
    pub gateway: NodeId,
}

/// Where a run's record ended up.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Outcome {
    Settled { height: u64, round: u64, leaf: u64 },
    Rejected { height: u64 },
}

/// A large map shared between a state and the states built from it, plus the few entries
/// added since, so that proposing or checking a block never copies the map.
#[derive(Clone, Debug)]
pub struct SharedMap<K, V> {
    base: Arc<HashMap<K, V>>,
    recent: HashMap<K, V>,
    len: usize,
}

impl<K, V> Default for SharedMap<K, V> {
    fn default() -> Self {
        SharedMap {
            base: Arc::default(),
            recent: HashMap::new(),
            len: 0,
        }
    }
}

/// Outcomes by run id.
pub type Outcomes = SharedMap<RunId, Outcome>;

/// Where an x402 authorization settled: the run it paid for and the block's height.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpentPayment {
    pub run: RunId,
    pub height: u64,
}

impl<K: std::hash::Hash + Eq + Clone, V: Copy> SharedMap<K, V> {
    pub fn get(&self, k: &K) -> Option<V> {
        self.recent.get(k).or_else(|| self.base.get(k)).copied()
    }

    fn insert(&mut self, run: K, o: V) {
        if self.get(&run).is_none() {
            self.len += 1;
        }
        self.recent.insert(run, o);
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Folds recent outcomes into the shared map. Copies the map only if another state still
    /// shares it, so call it once the older states are dropped.
    pub fn compact(&mut self) {
        if !self.recent.is_empty() {
            let recent = std::mem::take(&mut self.recent);
            Arc::make_mut(&mut self.base).extend(recent);
        }
    }
}

/// Checks the chain's rule for x402 payments, for a record whose evidence holds: an
/// authorization settles once. Returns the rejection reason when it already settled.
fn spent_reason(spent: &SharedMap<Digest, SpentPayment>, r: &RunRecord) -> Option<String> {
    let p = r.payment()?;
    let s = spent.get(&p.key)?;
    Some(format!(
        "payment: authorization nonce {} of {} was already settled with run {} at height {}",
        p.nonce, p.payer, s.run, s.height
    ))
}

/// The chain state.
#[derive(Clone, Debug)]
pub struct ChainState {
    pub chain_id: String,
    pub params: SettlementParams,
    pub height: u64,
    pub last_block_id: Digest,
    pub last_time_ms: u64,
    /// The validator set that signs the next block (`height + 1`).
    pub validators: ValidatorSet,
    /// Every validator set the chain has had, oldest first, each with the first height it
    /// signs (the genesis set from height 1); the last one is `validators`.
    pub validator_history: Vec<ValidatorEpoch>,
    /// Governance changes applied so far (the last applied `seq`).
    pub governance_seq: u64,
    /// Registered gateway keys and the height they were registered at (0: genesis).
    pub gateways: BTreeMap<NodeId, u64>,
    /// Gateways removed by governance, with the heights they were registered for, so that
    /// the exported history still lets their old receipts verify.
    pub removed_gateways: Vec<GatewayEntry>,
    pub models: BTreeMap<String, Vec<LabelRevision>>,
    /// Settlement rounds closed so far.
    pub rounds: u64,
    /// Every run id a block has settled or rejected. Resubmitting a settled run is a no-op;
    /// a rejected run id can still settle with a record that verifies.
    pub outcomes: Outcomes,
    /// Hash chain over every outcome, in commit order (folds `outcomes` into the state hash
    /// without rehashing the whole map each block).
    pub outcomes_acc: Digest,
    /// x402 authorizations settled with their runs, by [`crate::record::RecordPayment`] key.
    pub payments: SharedMap<Digest, SpentPayment>,
    /// Hash chain over `payments`, in commit order.
    pub payments_acc: Digest,
    /// The TEE registry: approved PCR sets and registered enclaves, with its params.
    pub tee: TeeRegistry,
    /// The dev root attestation documents may chain to, from [`TeeConfig::dev_root_der_hex`].
    pub tee_dev_root: Option<TrustedRoot>,
}

impl ChainState {
    /// The state at genesis, with the genesis's TEE settings (`Genesis::tee`, default: no dev
    /// root). Panics when that dev root is not hex DER; [`ChainState::from_genesis`] says why
    /// instead.
    pub fn genesis(g: &Genesis) -> Self {
        Self::from_genesis(g).expect("the genesis's TEE config is valid")
    }

    /// The state at genesis; refused when the genesis's TEE dev root is not hex DER.
    pub fn from_genesis(g: &Genesis) -> Result<Self, String> {
        Self::genesis_with_tee(g, &g.tee.clone().unwrap_or_default())
    }

    /// The state at genesis with TEE settings; refused when the dev root is not hex DER.
    pub fn genesis_with_tee(g: &Genesis, tee: &TeeConfig) -> Result<Self, String> {
        let tee_dev_root = match &tee.dev_root_der_hex {
            None => None,
            Some(h) => {
                let der =
                    hex::decode(h).map_err(|e| format!("tee.dev_root_der_hex: not hex: {e}"))?;
                if der.is_empty() {
                    return Err("tee.dev_root_der_hex: empty".into());
                }
                Some(TrustedRoot::dev(CHAIN_DEV_ROOT_LABEL, &der))
            }
        };
        Ok(ChainState {
            chain_id: g.chain_id.clone(),
            params: g.settlement,
            height: 0,
            last_block_id: Digest::default(),
            last_time_ms: g.genesis_time_ms,
            validators: g.validators.clone(),
            validator_history: vec![ValidatorEpoch {
                from_height: 1,
                validators: g.validators.clone(),
            }],
            governance_seq: 0,
            gateways: g.gateways.iter().map(|n| (*n, 0)).collect(),
            removed_gateways: Vec::new(),
            models: BTreeMap::new(),
            rounds: 0,
            outcomes: Outcomes::default(),
            outcomes_acc: Digest::default(),
            payments: SharedMap::default(),
            payments_acc: Digest::default(),
            tee: TeeRegistry::new(tee.registry),
            tee_dev_root,
        })
    }

    /// SHA-256 of the canonical JSON of the state: everything but the last block id (the
    /// header holds it as `prev_block`) and the outcome map, which enters through its hash
    /// chain. The TEE registry (its canonical JSON) and the dev root's fingerprint enter as
    /// `tee` once either differs from the default, so that chains from before the registry
    /// keep their state hashes.
    pub fn hash(&self) -> Digest {
        let mut v = json!({
            "chain_id": self.chain_id,
            "params": self.params,
            "height": self.height,
            "last_time_ms": self.last_time_ms,
            "validators": self.validators,
            "validator_history": self.validator_history,
            "governance_seq": self.governance_seq,
            "gateways": self.gateways.iter().map(|(k, h)| json!({"node": k, "from_height": h})).collect::<Vec<_>>(),
            "removed_gateways": self.removed_gateways,
            "models": self.models,
            "rounds": self.rounds,
            "outcomes": self.outcomes.len(),
            "outcomes_acc": self.outcomes_acc,
        });
        // Like `tee`: absent until the first payment settles, so older chains keep their
        // state hashes.
        if !self.payments.is_empty() {
            v["payments"] = json!({"settled": self.payments.len(), "acc": self.payments_acc});
        }
        if !self.tee.is_default() || self.tee_dev_root.is_some() {
            v["tee"] = json!({
                "registry": self.tee,
                "dev_root": self.tee_dev_root.as_ref().map(TrustedRoot::fingerprint_hex),
            });
        }
        sha256(&canonical::to_vec(&v).expect("state canonicalizes"))
    }

    /// This state without its outcome map: what evidence verifiers look at (registries,
    /// validator set), cheap to share.
    pub fn registries(&self) -> ChainState {
        ChainState {
            chain_id: self.chain_id.clone(),
            params: self.params,
            height: self.height,
            last_block_id: self.last_block_id,
            last_time_ms: self.last_time_ms,
            validators: self.validators.clone(),
            validator_history: self.validator_history.clone(),
            governance_seq: self.governance_seq,
            gateways: self.gateways.clone(),
            removed_gateways: self.removed_gateways.clone(),
            models: self.models.clone(),
            rounds: self.rounds,
            outcomes: Outcomes::default(),
            outcomes_acc: self.outcomes_acc,
            payments: SharedMap::default(),
            payments_acc: self.payments_acc,
            tee: self.tee.clone(),
            tee_dev_root: self.tee_dev_root.clone(),
        }
    }

    /// The enclaves active at `now_ms`: an approved PCR set, enabled, and a heartbeat at most
    /// the registry's `max_heartbeat_age_ms` old; in tee id order.
    pub fn active_enclaves(&self, now_ms: u64) -> Vec<Enclave> {
        self.tee
            .active(now_ms, self.tee.params.max_heartbeat_age_ms)
            .into_iter()
            .cloned()
            .collect()
    }

    /// What a verifier trusts about this chain: every validator set with the first height it
    /// signs, and every gateway ever registered (removed ones with their last height).
    pub fn history(&self) -> ValidatorHistory {
        let mut gateways: Vec<GatewayEntry> = self
            .removed_gateways
            .iter()
            .cloned()
            .chain(self.gateways.iter().map(|(node, from)| GatewayEntry {
                node: *node,
                from_height: *from,
                until_height: None,
            }))
            .collect();
        gateways.sort_by_key(|g| (g.from_height, g.node));
        ValidatorHistory {
            chain_id: self.chain_id.clone(),
            validator_sets: self.validator_history.clone(),
            gateways,
        }
    }

    /// The validator set that signs `height`, for heights up to the next one (`None` for
    /// height 0 and for heights further ahead, whose set the chain has not decided yet).
    pub fn validator_set_at(&self, height: u64) -> Option<&ValidatorSet> {
        if height == 0 || height > self.height + 1 {
            return None;
        }
        self.validator_history
            .iter()
            .rev()
            .find(|e| e.from_height <= height)
            .map(|e| &e.validators)
    }

    fn is_settled(&self, run: &RunId) -> bool {
        matches!(self.outcomes.get(run), Some(Outcome::Settled { .. }))
    }

    /// Where a run id's latest record ended up.
    pub fn outcome(&self, run: &RunId) -> Option<Outcome> {
        self.outcomes.get(run)
    }

    /// Builds the next block from candidate records (in arrival order) and transactions:
    /// duplicates and already-decided runs are dropped, every other record is verified and
    /// either settled or rejected with its reason. Returns the block and the state after it.
    pub fn propose(
        &self,
        time_ms: u64,
        candidates: Vec<RunRecord>,
        txs: Vec<Tx>,
        verifier: &dyn EvidenceVerifier,
    ) -> (Block, ChainState) {
        // A refused record does not block the run id: a forged record under someone else's
        // run id must not keep the genuine one from settling.
        let mut settled = std::collections::HashSet::new();
        // Positions in `rejected` by run id: an identical copy is refused once, compared only
        // against copies with its own run id.
        let mut refused: HashMap<RunId, Vec<usize>> = HashMap::new();
        let (mut records, mut rejected) = (Vec::new(), Vec::<Rejected>::new());
        let mut paid = std::collections::HashSet::new();
        for r in candidates {
            if self.is_settled(&r.run_id) || settled.contains(&r.run_id) {
                continue;
            }
            let same_run = refused
                .get(&r.run_id)
                .map(Vec::as_slice)
                .unwrap_or_default();
            if same_run.iter().any(|&i| rejected[i].record == r) {
                continue;
            }
            let verdict =
                verifier
                    .verify(&r, self)
                    .and_then(|()| match spent_reason(&self.payments, &r) {
                        Some(reason) => Err(reason),
                        None => Ok(()),
                    });
            match verdict {
                Ok(()) => {
                    // Two records paying with one authorization: the first settles; the
                    // other waits for the next block, where the authorization is spent.
                    if let Some(p) = r.payment() {
                        if !paid.insert(p.key) {
                            continue;
                        }
                    }
                    settled.insert(r.run_id);
                    records.push(r)
                }
                Err(reason) => {
                    refused.entry(r.run_id).or_default().push(rejected.len());
                    rejected.push(Rejected { record: r, reason })
                }
            }
        }
        // At most one governance transaction per block: the next one needs the seq after it
        // and approvals from the set it leaves, so it waits for a later block.
        // Enclave transactions apply in order to a running registry, so that two that conflict
        // (a repeated heartbeat, a registration after its PCR set's revocation) are not both
        // kept.
        let time_ms = time_ms.max(self.last_time_ms);
        let mut governance = false;
        let mut tee = self.tee.clone();
        let txs: Vec<Tx> = txs
            .into_iter()
            .filter(|t| {
                let gov = matches!(t, Tx::Governance { .. });
                let keep = !(gov && governance)
                    && (is_enclave_tx(t) || self.check_tx_at(t, time_ms).is_ok())
                    && self.tee_step(&mut tee, t, Some(time_ms)).is_ok();
                governance |= gov && keep;
                keep
            })
            .collect();
        let mut next = self.clone();
        let summary = next.apply_body(&records, &rejected, &txs, time_ms);
        let header = BlockHeader {
            chain_id: self.chain_id.clone(),
            height: self.height + 1,
            time_ms,
            prev_block: self.last_block_id,
            txs_root: Block::body_root(&records, &rejected, &txs),
            state_hash: Digest::default(),
            validator_set_hash: self.validators.hash(),
            settlement: summary,
        };
        let mut block = Block {
            header,
            records,
            rejected,
            txs,
        };
        next.finish(&mut block.header);
        (block, next)
    }

    /// Re-checks a block someone proposed, the way [`ChainState::propose`] built it, and
    /// returns the state after it (evidence included: this is the vote on a proposal).
    pub fn check(
        &self,
        block: &Block,
        verifier: &dyn EvidenceVerifier,
    ) -> Result<ChainState, String> {
        self.check_block(block, Some(verifier))
    }

    /// Applies a block this chain already committed (it carries a commit certificate, and
    /// its evidence was verified before it was voted on): every structural check, body root,
    /// round roots and state hash, but no per-record evidence check, so that a restart does
    /// not re-verify every signature the chain ever settled.
    pub fn replay(&self, block: &Block) -> Result<ChainState, String> {
        self.check_block(block, None)
    }

    fn check_block(
        &self,
        block: &Block,
        evidence: Option<&dyn EvidenceVerifier>,
    ) -> Result<ChainState, String> {
        let h = &block.header;
        if h.chain_id != self.chain_id {
            return Err(format!(
                "block is for chain {:?}, not {:?}",
                h.chain_id, self.chain_id
            ));
        }
        if h.height != self.height + 1 {
            return Err(format!(
                "block height {} does not follow {}",
                h.height, self.height
            ));
        }
        if h.prev_block != self.last_block_id {
            return Err(format!(
                "block names previous block {}, the chain's last block is {}",
                h.prev_block, self.last_block_id
            ));
        }
        if h.time_ms < self.last_time_ms {
            return Err(format!(
                "block time {} is before the previous block's {}",
                h.time_ms, self.last_time_ms
            ));
        }
        if h.validator_set_hash != self.validators.hash() {
            return Err("block names a validator set other than the chain's".into());
        }
        for r in block
            .records
            .iter()
            .chain(block.rejected.iter().map(|x| &x.record))
        {
            if self.is_settled(&r.run_id) {
                return Err(format!(
                    "run {} was already settled in an earlier block",
                    r.run_id
                ));
            }
        }
        let mut seen = std::collections::HashSet::new();
        let mut paid = std::collections::HashSet::new();
        for r in &block.records {
            if !seen.insert(r.run_id) {
                return Err(format!("run {} is settled twice in the block", r.run_id));
            }
            if let Some(reason) = spent_reason(&self.payments, r) {
                return Err(format!("the block settles run {}, but {reason}", r.run_id));
            }
            if let Some(p) = r.payment() {
                if !paid.insert(p.key) {
                    return Err(format!(
                        "the block settles two runs paid with authorization nonce {} of {}",
                        p.nonce, p.payer
                    ));
                }
            }
        }
        if let Some(verifier) = evidence {
            for r in &block.records {
                verifier.verify(r, self).map_err(|e| {
                    format!(
                        "the block settles run {} but its evidence fails: {e}",
                        r.run_id
                    )
                })?;
            }
            for x in &block.rejected {
                let verdict = verifier.verify(&x.record, self).and_then(|()| {
                    match spent_reason(&self.payments, &x.record) {
                        Some(reason) => Err(reason),
                        None => Ok(()),
                    }
                });
                match verdict {
                    Ok(()) => {
                        return Err(format!(
                            "the block rejects run {} but its evidence holds",
                            x.record.run_id
                        ))
                    }
                    Err(reason) if reason != x.reason => {
                        return Err(format!(
                            "the block rejects run {} for {:?}; this validator finds {:?}",
                            x.record.run_id, x.reason, reason
                        ))
                    }
                    Err(_) => {}
                }
            }
        }
        let governance = block
            .txs
            .iter()
            .filter(|t| matches!(t, Tx::Governance { .. }))
            .count();
        if governance > 1 {
            return Err(format!(
                "the block carries {governance} governance transactions; at most one is allowed"
            ));
        }
        for t in block.txs.iter().filter(|t| !is_enclave_tx(t)) {
            self.check_tx_at(t, h.time_ms)?;
        }
        // The registry effects in order (enclave transactions are checked only here).
        let mut tee = self.tee.clone();
        for t in &block.txs {
            self.tee_step(&mut tee, t, Some(h.time_ms))?;
        }
        if h.txs_root != Block::body_root(&block.records, &block.rejected, &block.txs) {
            return Err("txs_root does not match the block's body".into());
        }
        let mut next = self.clone();
        let summary = next.apply_body(&block.records, &block.rejected, &block.txs, h.time_ms);
        if summary != h.settlement {
            return Err("the settlement round in the header does not match its records".into());
        }
        let mut expected = h.clone();
        next.finish(&mut expected);
        if expected.state_hash != h.state_hash {
            return Err(format!(
                "state hash after the block is {}, the header says {}",
                expected.state_hash, h.state_hash
            ));
        }
        Ok(next)
    }

    /// Checks a transaction against this state, for admission to a mempool: the block time
    /// is not known yet, so relations to it are checked against the last block's time where
    /// that is a necessary condition (a document or heartbeat already too old), and not at all
    /// where it is not (an `at_ms` after the last block). A block checks its transactions with
    /// [`ChainState::check_tx_at`].
    pub fn check_tx(&self, tx: &Tx) -> Result<(), String> {
        self.check_tx_inner(tx, None)
    }

    /// Checks a transaction against this state for a block with time `block_time_ms`.
    pub fn check_tx_at(&self, tx: &Tx, block_time_ms: u64) -> Result<(), String> {
        self.check_tx_inner(tx, Some(block_time_ms))
    }

    fn check_tx_inner(&self, tx: &Tx, block_time_ms: Option<u64>) -> Result<(), String> {
        match tx {
            Tx::MoveLabel {
                label,
                blob_id,
                at_ms,
                gateway,
                signature,
            } => {
                if !self.gateways.contains_key(gateway) {
                    return Err(format!("label move by {gateway}: not a registered gateway"));
                }
                if let Some(r) = self.models.get(label).and_then(|revs| {
                    revs.iter().find(|r| {
                        r.blob_id == *blob_id && r.at_ms == *at_ms && r.gateway == *gateway
                    })
                }) {
                    return Err(format!(
                        "label move of {label}: already recorded as revision {} (a replay)",
                        r.revision
                    ));
                }
                haca_core::keys::verify(gateway, &label_message(label, blob_id, *at_ms), signature)
                    .map_err(|e| format!("label move of {label}: {e}"))
            }
            Tx::Governance {
                seq,
                action,
                approvals,
            } => self.check_governance(*seq, action, approvals),
            Tx::RegisterEnclave { .. } | Tx::EnclaveHeartbeat { .. } => {
                self.tee_step(&mut self.tee.clone(), tx, block_time_ms)
            }
        }
    }

    /// The roots attestation documents may chain to: the AWS Nitro root, and the chain's dev
    /// root if it has one.
    pub fn tee_roots(&self) -> Vec<TrustedRoot> {
        let mut roots = vec![TrustedRoot::aws_nitro_g1()];
        roots.extend(self.tee_dev_root.clone());
        roots
    }

    /// Verifies an enclave registration's document (standard base64) deterministically: at
    /// its own timestamp, against [`ChainState::tee_roots`]. Returns the facts it attests.
    pub fn verify_enclave_document(&self, document_b64: &str) -> Result<EnclaveFacts, String> {
        use base64::Engine as _;
        let limit = haca_tee::nitro::MAX_DOCUMENT_LEN.div_ceil(3) * 4;
        if document_b64.len() > limit {
            return Err(format!(
                "document_b64: {} characters; an attestation document is at most {limit}",
                document_b64.len()
            ));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(document_b64)
            .map_err(|e| format!("document_b64: not standard base64: {e}"))?;
        let policy = Policy::audit().with_roots(self.tee_roots());
        let verified = haca_tee::nitro::verify(&bytes, &policy)
            .map_err(|e| format!("attestation document: {e}"))?;
        Ok(EnclaveFacts::from(&verified))
    }

    /// Applies the TEE registry effect of `tx` (PCR governance, enclave registration,
    /// heartbeat; none for other transactions) to `reg`, in a block with time
    /// `block_time_ms` (`None`: not known yet, see [`ChainState::check_tx`]). On error `reg`
    /// is unchanged.
    fn tee_step(
        &self,
        reg: &mut TeeRegistry,
        tx: &Tx,
        block_time_ms: Option<u64>,
    ) -> Result<(), String> {
        match tx {
            Tx::MoveLabel { .. } => Ok(()),
            Tx::Governance { action, .. } => apply_pcr_action(reg, action),
            Tx::RegisterEnclave {
                document_b64,
                signing_key,
                at_ms,
            } => {
                let e = |m: String| format!("enclave registration of {signing_key}: {m}");
                let facts = self.verify_enclave_document(document_b64).map_err(e)?;
                let now = block_time_ms.unwrap_or(self.last_time_ms);
                if let Some(t) = block_time_ms {
                    if *at_ms > t {
                        return Err(e(format!("at_ms {at_ms} is after the block time {t}")));
                    }
                }
                let max_age_ms = reg.params.max_document_age_ms;
                if now > facts.timestamp_ms && now - facts.timestamp_ms > max_age_ms {
                    return Err(e(format!(
                        "the attestation document (timestamp {}) is {} ms old at the block time {now}; the maximum age is {max_age_ms} ms",
                        facts.timestamp_ms,
                        now - facts.timestamp_ms
                    )));
                }
                reg.register(&facts, *signing_key, *at_ms)
                    .map(drop)
                    .map_err(|x| e(x.to_string()))
            }
            Tx::EnclaveHeartbeat {
                tee_id,
                at_ms,
                signature,
            } => {
                let now = block_time_ms.unwrap_or(self.last_time_ms.max(*at_ms));
                reg.heartbeat_at(tee_id, *at_ms, signature, now)
                    .map_err(|x| x.to_string())
            }
        }
    }

    /// Checks a governance transaction: the next seq, a valid action, and approvals signed
    /// by validators of the current set holding more than 2/3 of its power. Approvals by keys
    /// outside the set do not count; a signature that does not verify refuses the whole
    /// transaction; a validator approving twice counts once.
    fn check_governance(
        &self,
        seq: u64,
        action: &GovAction,
        approvals: &[Approval],
    ) -> Result<(), String> {
        let expected = self.governance_seq + 1;
        if seq <= self.governance_seq {
            return Err(format!(
                "governance seq {seq} was already applied; the next governance change is seq {expected}"
            ));
        }
        if seq != expected {
            return Err(format!(
                "governance seq {seq} is out of order: expected seq {expected}"
            ));
        }
        self.apply_action(action, self.height + 1)
            .map(drop)
            .map_err(|e| format!("governance seq {seq}: {e}"))?;
        let message = governance_message(&self.chain_id, seq, action);
        let mut counted = std::collections::BTreeSet::new();
        let (mut power, mut outsiders) = (0u64, 0usize);
        for a in approvals {
            haca_core::keys::verify(&a.validator, &message, &a.signature).map_err(|e| {
                format!(
                    "governance seq {seq}: the approval of {} does not verify: {e}",
                    a.validator
                )
            })?;
            match self.validators.power_of(&a.validator) {
                Some(p) if counted.insert(a.validator) => power += p,
                Some(_) => {}
                None => outsiders += 1,
            }
        }
        if !self.validators.is_quorum(power) {
            let mut e = format!(
                "governance seq {seq}: approvals hold {power} of {} voting power; more than 2/3 is needed",
                self.validators.total_power()
            );
            if outsiders > 0 {
                e.push_str(&format!(
                    " ({outsiders} approval(s) by keys outside the validator set do not count)"
                ));
            }
            return Err(e);
        }
        Ok(())
    }

    /// Applies a governance action to a copy of the registries; `height` is the block that
    /// carries it. Errors say why the action does not apply to this state.
    fn apply_action(&self, action: &GovAction, height: u64) -> Result<Registries, String> {
        let mut r = Registries {
            validators: None,
            gateways: None,
            tee: None,
        };
        match action {
            GovAction::AddValidator { public_key, power } => {
                if *power == 0 {
                    return Err(format!(
                        "validator {public_key} cannot be added with zero voting power"
                    ));
                }
                if self.validators.power_of(public_key).is_some() {
                    return Err(format!("{public_key} is already a validator"));
                }
                let mut list = self.validators.validators().to_vec();
                list.push(Validator {
                    public_key: *public_key,
                    power: *power,
                });
                r.validators = Some(ValidatorSet::new(list)?);
            }
            GovAction::RemoveValidator { public_key } => {
                if self.validators.power_of(public_key).is_none() {
                    return Err(format!("{public_key} is not a validator"));
                }
                let list: Vec<Validator> = self
                    .validators
                    .validators()
                    .iter()
                    .filter(|v| v.public_key != *public_key)
                    .copied()
                    .collect();
                if list.is_empty() {
                    return Err(format!(
                        "removing {public_key} would leave the validator set empty"
                    ));
                }
                r.validators = Some(ValidatorSet::new(list)?);
            }
            GovAction::RegisterGateway { node } => {
                if self.gateways.contains_key(node) {
                    return Err(format!("gateway {node} is already registered"));
                }
                let mut g = self.gateways.clone();
                g.insert(*node, height);
                r.gateways = Some((g, None));
            }
            GovAction::RemoveGateway { node } => {
                let Some(from) = self.gateways.get(node) else {
                    return Err(format!("gateway {node} is not registered"));
                };
                let entry = GatewayEntry {
                    node: *node,
                    from_height: *from,
                    until_height: Some(height),
                };
                let mut g = self.gateways.clone();
                g.remove(node);
                r.gateways = Some((g, Some(entry)));
            }
            GovAction::ApprovePcrs { .. } | GovAction::RevokePcrs { .. } => {
                let mut tee = self.tee.clone();
                apply_pcr_action(&mut tee, action)?;
                r.tee = Some(tee);
            }
        }
        Ok(r)
    }

    /// Applies a checked body; returns the settlement round it closes, if any.
    fn apply_body(
        &mut self,
        records: &[RunRecord],
        rejected: &[Rejected],
        txs: &[Tx],
        time_ms: u64,
    ) -> Option<RoundSummary> {
        let height = self.height + 1;
        let summary = if records.is_empty() && rejected.is_empty() {
            None
        } else {
            self.rounds += 1;
            let leaves: Vec<Digest> = records
                .iter()
                .map(|r| round_leaf(&r.run_id, &r.receipt_digest))
                .collect();
            let pairs: Vec<(Digest, Digest)> = records
                .iter()
                .map(|r| (r.run_id.0, r.receipt_digest))
                .collect();
            Some(RoundSummary {
                round: self.rounds,
                records: records.len() as u64,
                rejected: rejected.len() as u64,
                rfc6962_root: merkle::root(&leaves),
                oz_root: StandardTree::build(&pairs)
                    .map(|t| t.root())
                    .unwrap_or_default(),
            })
        };
        for (i, r) in records.iter().enumerate() {
            let o = Outcome::Settled {
                height,
                round: self.rounds,
                leaf: i as u64,
            };
            self.record_outcome(r.run_id, o, &r.receipt_digest);
            if let Some(p) = r.payment() {
                self.payments_acc = haca_core::hash::sha256_parts(&[
                    self.payments_acc.as_bytes(),
                    p.key.as_bytes(),
                    r.run_id.0.as_bytes(),
                ]);
                self.payments.insert(
                    p.key,
                    SpentPayment {
                        run: r.run_id,
                        height,
                    },
                );
            }
        }
        for x in rejected {
            if self.is_settled(&x.record.run_id) {
                continue; // the genuine record of this run settled in this same block
            }
            self.record_outcome(
                x.record.run_id,
                Outcome::Rejected { height },
                &x.record.receipt_digest,
            );
        }
        for t in txs {
            match t {
                Tx::MoveLabel {
                    label,
                    blob_id,
                    at_ms,
                    gateway,
                    ..
                } => {
                    let revs = self.models.entry(label.clone()).or_default();
                    let revision = revs.len() as u64 + 1;
                    revs.push(LabelRevision {
                        revision,
                        blob_id: *blob_id,
                        at_ms: *at_ms,
                        height,
                        gateway: *gateway,
                    });
                }
                Tx::Governance { seq, action, .. } => {
                    let r = self
                        .apply_action(action, height)
                        .expect("governance transactions are checked before they apply");
                    if let Some(set) = r.validators {
                        self.validator_history.push(ValidatorEpoch {
                            from_height: height + 1,
                            validators: set.clone(),
                        });
                        self.validators = set;
                    }
                    if let Some((gateways, removed)) = r.gateways {
                        self.gateways = gateways;
                        self.removed_gateways.extend(removed);
                    }
                    if let Some(tee) = r.tee {
                        self.tee = tee;
                    }
                    self.governance_seq = *seq;
                }
                Tx::RegisterEnclave { .. } | Tx::EnclaveHeartbeat { .. } => {
                    let mut tee = self.tee.clone();
                    self.tee_step(&mut tee, t, Some(time_ms))
                        .expect("enclave transactions are checked before they apply");
                    self.tee = tee;
                }
            }
        }
        summary
    }

    fn record_outcome(&mut self, run: RunId, o: Outcome, digest: &Digest) {
        let tag = match o {
            Outcome::Settled { .. } => b"S",
            Outcome::Rejected { .. } => b"R",
        };
        self.outcomes_acc = haca_core::hash::sha256_parts(&[
            self.outcomes_acc.as_bytes(),
            tag,
            run.0.as_bytes(),
            digest.as_bytes(),
        ]);
        self.outcomes.insert(run, o);
    }

    /// Advances height and block id and fills the header's state hash.
    fn finish(&mut self, header: &mut BlockHeader) {
        self.height = header.height;
        self.last_time_ms = header.time_ms;
        // `hash` leaves out `last_block_id`: a header cannot contain its own id.
        header.state_hash = self.hash();
        self.last_block_id = header.id();
    }
}

/// Registration and heartbeats: transactions whose checks depend on the registry as the block
/// leaves it so far, so a block checks them in order.
fn is_enclave_tx(t: &Tx) -> bool {
    matches!(t, Tx::RegisterEnclave { .. } | Tx::EnclaveHeartbeat { .. })
}

/// Applies a PCR governance action to `reg` (other actions leave it alone).
fn apply_pcr_action(reg: &mut TeeRegistry, action: &GovAction) -> Result<(), String> {
    match action {
        GovAction::ApprovePcrs { pcrs } => reg.approve_pcrs(pcrs.clone()).map(drop),
        GovAction::RevokePcrs { pcr_set } => reg.revoke_pcrs(pcr_set).map(drop),
        _ => Ok(()),
    }
    .map_err(|e| e.to_string())
}
