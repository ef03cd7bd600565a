//! The chain state machine: genesis, blocks, and the deterministic transition between them.
//!
//! Pure: no I/O, no clock. The same genesis and the same committed blocks always give the same
//! state hash, which is how a restarted or new validator proves it replayed the chain right.
//!
//! This module holds the state, blocks and the transition (propose, check, replay); the
//! transactions other than records live in `tx`, governance in `governance`, the TEE registry
//! in `tee`, and settlement rounds and outcomes in `rounds`. Everything public is re-exported
//! here.

mod governance;
mod rounds;
mod tee;
mod tx;

pub use governance::{governance_message, Approval, GovAction};
pub use rounds::{walrus_id, Outcome, Outcomes, RoundTrees, SharedMap, SpentPayment};
pub use tee::{TeeConfig, CHAIN_DEV_ROOT_LABEL};
pub use tx::{label_message, LabelRevision, Tx};

use crate::record::{EvidenceVerifier, RejectCode, RunRecord};
use haca_core::canonical;
use haca_core::settlement::{
    BlockHeader, GatewayEntry, Genesis, RoundSummary, SettlementParams, ValidatorEpoch,
    ValidatorHistory, ValidatorSet,
};
use haca_core::{sha256, Digest, NodeId, RunId};
use haca_tee::nitro::TrustedRoot;
use haca_tee::registry::{Enclave, TeeRegistry};
use rounds::spent_rejection;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use tee::is_enclave_tx;

/// Largest encoded block a validator accepts.
pub const MAX_BLOCK_BYTES: usize = 64 << 20;

/// A record the validators refused, kept with why: a stable [`RejectCode`], which validators
/// agree on, and the proposer's words.
#[derive(Serialize, Deserialize, Clone, PartialEq, Debug)]
pub struct Rejected {
    pub record: RunRecord,
    /// Why, as every validator must find it. Absent from blocks made before rejections carried
    /// codes, which decode as [`RejectCode::Unclassified`] and encode as before.
    #[serde(
        default = "RejectCode::unclassified",
        skip_serializing_if = "RejectCode::is_unclassified"
    )]
    pub code: RejectCode,
    /// Why, in the proposer's words (the rejection's detail). Validators do not compare it:
    /// it quotes libraries whose wording may change between versions.
    pub reason: String,
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
}

/// What an [`EvidenceVerifier`] may read of the chain state, and nothing else: the gateway
/// registry, the TEE registry's enclaves, and the roots attestation documents chain to
/// ([`EvidenceView::verify_enclave_document`]). Built by [`ChainState::evidence_view`].
#[derive(Clone, Copy, Debug)]
pub struct EvidenceView<'a> {
    gateways: &'a BTreeMap<NodeId, u64>,
    tee: &'a TeeRegistry,
    tee_dev_root: Option<&'a TrustedRoot>,
}

impl<'a> EvidenceView<'a> {
    /// Whether `node` is a registered gateway of the chain.
    pub fn gateway_registered(&self, node: &NodeId) -> bool {
        self.gateways.contains_key(node)
    }

    /// The enclave registered under `tee_id` in the chain's TEE registry, enabled or not.
    pub fn enclave(&self, tee_id: &Digest) -> Option<&'a Enclave> {
        self.tee.enclave(tee_id)
    }
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

    /// This state without its outcome map (registries, validator set), cheap to share: what
    /// a validator verifies submissions against, through [`ChainState::evidence_view`],
    /// outside its state lock.
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

    /// The read-only view of this state an [`EvidenceVerifier`] gets.
    pub fn evidence_view(&self) -> EvidenceView<'_> {
        EvidenceView {
            gateways: &self.gateways,
            tee: &self.tee,
            tee_dev_root: self.tee_dev_root.as_ref(),
        }
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
        let view = self.evidence_view();
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
            let verdict = verifier
                .verify(&r, &view)
                .and_then(|()| spent_rejection(&self.payments, &r).map_or(Ok(()), Err));
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
                Err(why) => {
                    refused.entry(r.run_id).or_default().push(rejected.len());
                    rejected.push(Rejected {
                        record: r,
                        code: why.code,
                        reason: why.detail,
                    })
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
            if let Some(why) = spent_rejection(&self.payments, r) {
                return Err(format!(
                    "the block settles run {}, but {}",
                    r.run_id, why.detail
                ));
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
            let view = self.evidence_view();
            for r in &block.records {
                verifier.verify(r, &view).map_err(|e| {
                    format!(
                        "the block settles run {} but its evidence fails: {e}",
                        r.run_id
                    )
                })?;
            }
            for x in &block.rejected {
                // Validators agree on the code only: the detail quotes libraries (serde, the
                // TEE and payment crates) whose wording may differ between versions.
                let verdict = verifier
                    .verify(&x.record, &view)
                    .and_then(|()| spent_rejection(&self.payments, &x.record).map_or(Ok(()), Err));
                match verdict {
                    Ok(()) => {
                        return Err(format!(
                            "the block rejects run {} but its evidence holds",
                            x.record.run_id
                        ))
                    }
                    Err(why) if why.code != x.code => {
                        return Err(format!(
                            "the block rejects run {} with code {} ({:?}); this validator finds code {} ({:?})",
                            x.record.run_id, x.code, x.reason, why.code, why.detail
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

    /// Applies a checked body; returns the settlement round it closes, if any.
    fn apply_body(
        &mut self,
        records: &[RunRecord],
        rejected: &[Rejected],
        txs: &[Tx],
        time_ms: u64,
    ) -> Option<RoundSummary> {
        let height = self.height + 1;
        let summary = self.settle_round(records, rejected, height);
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

    /// Advances height and block id and fills the header's state hash.
    fn finish(&mut self, header: &mut BlockHeader) {
        self.height = header.height;
        self.last_time_ms = header.time_ms;
        // `hash` leaves out `last_block_id`: a header cannot contain its own id.
        header.state_hash = self.hash();
        self.last_block_id = header.id();
    }
}
