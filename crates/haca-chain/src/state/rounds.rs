//! Settlement rounds: where each run's record ended up, the x402 authorizations spent, the
//! round roots a block's header commits to, and the settlement evidence built from them.

use super::{Block, ChainState, Rejected};
use crate::record::{RejectCode, Rejection, RunRecord};
use haca_core::merkle::{self, Levels};
use haca_core::oz::{OzProof, StandardTree};
use haca_core::settlement::{round_leaf, Certificate, RoundSummary, SettlementEvidence};
use haca_core::{Digest, RunId};
use std::collections::HashMap;
use std::sync::Arc;

impl Block {
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
    /// The Walrus blob id of the round's tree dump ([`RoundTrees::dump`]).
    pub walrus_blob_id: Option<String>,
}

impl RoundTrees {
    /// Both trees of `block`'s round; `None` when it closes no round or settled nothing.
    pub fn build(block: &Block) -> Option<Self> {
        Self::build_with(block, |dump| walrus_id(&dump()))
    }

    /// [`RoundTrees::build`], the dump's Walrus id from `walrus`, given a maker of the dump:
    /// a caller that has the id already returns it without making the dump (canonical JSON of
    /// every record) or its encoding (about 0.1 s of CPU at 1,000 shards).
    pub fn build_with(
        block: &Block,
        walrus: impl FnOnce(&dyn Fn() -> Vec<u8>) -> Option<String>,
    ) -> Option<Self> {
        block.header.settlement.as_ref()?;
        let pairs = pairs(block);
        let levels = Levels::build(
            block
                .records
                .iter()
                .map(|r| round_leaf(&r.run_id, &r.receipt_digest))
                .collect(),
        );
        let oz = StandardTree::build(&pairs)?;
        let walrus_blob_id = walrus(&|| dump_of(&oz, &pairs));
        Some(RoundTrees {
            levels,
            oz,
            walrus_blob_id,
        })
    }

    /// The round's tree dump: OpenZeppelin's standard-v1 of `block`'s records (the block the
    /// trees were built from), as canonical JSON.
    pub fn dump(&self, block: &Block) -> Vec<u8> {
        dump_of(&self.oz, &pairs(block))
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
            evm_anchor: None,
            walrus_blob_id: self.walrus_blob_id.clone(),
        }
    }
}

/// A block's records as the round's OpenZeppelin tree takes them: (run id, receipt digest).
fn pairs(block: &Block) -> Vec<(Digest, Digest)> {
    block
        .records
        .iter()
        .map(|r| (r.run_id.0, r.receipt_digest))
        .collect()
}

fn dump_of(oz: &StandardTree, pairs: &[(Digest, Digest)]) -> Vec<u8> {
    haca_core::canonical::to_vec(&oz.dump(pairs)).expect("plain JSON canonicalizes")
}

/// The Walrus blob id of a round's tree dump, at Walrus mainnet's shard count.
pub fn walrus_id(dump: &[u8]) -> Option<String> {
    haca_walrus::mainnet_blob_id(dump).ok()
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
/// authorization settles once. Returns the rejection ([`RejectCode::PaymentSpent`]) when it
/// already settled.
pub(super) fn spent_rejection(
    spent: &SharedMap<Digest, SpentPayment>,
    r: &RunRecord,
) -> Option<Rejection> {
    let p = r.payment()?;
    let s = spent.get(&p.key)?;
    Some(RejectCode::PaymentSpent.with(format!(
        "payment: authorization nonce {} of {} was already settled with run {} at height {}",
        p.nonce, p.payer, s.run, s.height
    )))
}

impl ChainState {
    pub(super) fn is_settled(&self, run: &RunId) -> bool {
        matches!(self.outcomes.get(run), Some(Outcome::Settled { .. }))
    }

    /// Where a run id's latest record ended up.
    pub fn outcome(&self, run: &RunId) -> Option<Outcome> {
        self.outcomes.get(run)
    }

    /// Settles a checked block's records at `height`: closes a round (its summary with both
    /// roots) when the block decided any record, and records every outcome and every x402
    /// authorization spent. Returns the round's summary, if any.
    pub(super) fn settle_round(
        &mut self,
        records: &[RunRecord],
        rejected: &[Rejected],
        height: u64,
    ) -> Option<RoundSummary> {
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
}
