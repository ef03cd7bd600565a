//! What a validator signs and what a verifier checks offline: validator sets, block headers,
//! vote signing bytes and commit certificates.
//!
//! A block's id is SHA-256 of the canonical JSON (RFC 8785) of its [`BlockHeader`]. Validators
//! sign their consensus votes over [`vote_sign_bytes`]; a commit certificate is the set of
//! precommit signatures for one block id, and it holds when its signers carry more than 2/3 of
//! the voting power of the validator set in force at that height.

use crate::canonical;
use crate::hash::{sha256, Digest};
use crate::ids::NodeId;
use crate::keys;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Domain prefix of every consensus vote signature.
pub const VOTE_DOMAIN: &[u8] = b"haca.vote.v1:";

/// Prevote or precommit: the two Tendermint vote kinds.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum VoteKind {
    Prevote = 1,
    Precommit = 2,
}

/// The bytes a validator signs for one vote, a fixed layout:
///
/// ```text
/// "haca.vote.v1:" | kind (1 byte: 1 prevote, 2 precommit) | height (u64 BE) | round (u32 BE)
///                 | 0x00 (nil) or 0x01 followed by the 32-byte block id
/// ```
///
/// ```
/// use haca_core::settlement::{vote_sign_bytes, VoteKind};
/// use haca_core::Digest;
/// let b = vote_sign_bytes(VoteKind::Precommit, 7, 0, Some(&Digest([0xab; 32])));
/// assert_eq!(b.len(), 13 + 1 + 8 + 4 + 1 + 32);
/// assert_eq!(&b[13..27], &[2, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0, 1]);
/// ```
pub fn vote_sign_bytes(kind: VoteKind, height: u64, round: u32, block: Option<&Digest>) -> Vec<u8> {
    let mut out = Vec::with_capacity(VOTE_DOMAIN.len() + 46);
    out.extend_from_slice(VOTE_DOMAIN);
    out.push(kind as u8);
    out.extend_from_slice(&height.to_be_bytes());
    out.extend_from_slice(&round.to_be_bytes());
    match block {
        None => out.push(0),
        Some(id) => {
            out.push(1);
            out.extend_from_slice(id.as_bytes());
        }
    }
    out
}

/// One validator: its Ed25519 key and voting power.
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
pub struct Validator {
    pub public_key: NodeId,
    pub power: u64,
}

/// A validator set, kept sorted by key so its hash does not depend on listing order.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[serde(try_from = "Vec<Validator>", into = "Vec<Validator>")]
pub struct ValidatorSet(Vec<Validator>);

impl ValidatorSet {
    /// Refuses an empty set, a duplicate key or zero power.
    pub fn new(mut validators: Vec<Validator>) -> Result<Self, String> {
        if validators.is_empty() {
            return Err("a validator set needs at least one validator".into());
        }
        validators.sort_by_key(|v| v.public_key);
        for w in validators.windows(2) {
            if w[0].public_key == w[1].public_key {
                return Err(format!("validator {} is listed twice", w[0].public_key));
            }
        }
        if let Some(v) = validators.iter().find(|v| v.power == 0) {
            return Err(format!("validator {} has zero voting power", v.public_key));
        }
        validators
            .iter()
            .try_fold(0u64, |acc, v| acc.checked_add(v.power))
            .ok_or("total voting power overflows u64")?;
        Ok(ValidatorSet(validators))
    }

    pub fn validators(&self) -> &[Validator] {
        &self.0
    }

    pub fn total_power(&self) -> u64 {
        self.0.iter().map(|v| v.power).sum()
    }

    pub fn power_of(&self, key: &NodeId) -> Option<u64> {
        self.0
            .binary_search_by_key(key, |v| v.public_key)
            .ok()
            .map(|i| self.0[i].power)
    }

    /// SHA-256 of the canonical JSON of the sorted list `[{power, public_key}, ...]`.
    pub fn hash(&self) -> Digest {
        sha256(&canonical::to_vec(&self.0).expect("validators serialize"))
    }

    /// Whether `power` is more than 2/3 of the total.
    pub fn is_quorum(&self, power: u64) -> bool {
        (power as u128) * 3 > (self.total_power() as u128) * 2
    }
}

impl TryFrom<Vec<Validator>> for ValidatorSet {
    type Error = String;
    fn try_from(v: Vec<Validator>) -> Result<Self, String> {
        ValidatorSet::new(v)
    }
}

impl From<ValidatorSet> for Vec<Validator> {
    fn from(s: ValidatorSet) -> Self {
        s.0
    }
}

/// The settlement round a block closes: the roots of its accepted records.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct RoundSummary {
    /// Settlement round number (1, 2, ...), counted apart from consensus heights.
    pub round: u64,
    /// Accepted records, the leaves of both trees.
    pub records: u64,
    /// Records refused by the validators' evidence checks (kept with their reasons).
    pub rejected: u64,
    /// RFC 6962 root over leaves `run_id || receipt_digest`.
    pub rfc6962_root: Digest,
    /// OpenZeppelin StandardMerkleTree root, leaf encoding `["bytes32","bytes32"]`.
    pub oz_root: Digest,
}

/// A block header: what the validators' precommits sign (through its id).
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct BlockHeader {
    pub chain_id: String,
    pub height: u64,
    /// Proposer's clock, unix milliseconds.
    pub time_ms: u64,
    /// Id of the block at `height - 1` (zero for height 1).
    pub prev_block: Digest,
    /// SHA-256 over the block's transactions (see haca-chain for the layout).
    pub txs_root: Digest,
    /// Chain state hash after applying this block.
    pub state_hash: Digest,
    /// Hash of the validator set that signs this height.
    pub validator_set_hash: Digest,
    /// The settlement round this block closes, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settlement: Option<RoundSummary>,
}

impl BlockHeader {
    /// The block id: SHA-256 of the header's canonical JSON.
    pub fn id(&self) -> Digest {
        sha256(&canonical::to_vec(self).expect("headers serialize"))
    }
}

/// One validator's precommit signature (hex, 64 bytes).
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct CommitSignature {
    pub validator: NodeId,
    pub signature: String,
}

/// Precommit signatures of the validators for one block id at one height and consensus round.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct Certificate {
    pub height: u64,
    /// Consensus (Tendermint) round in which the block was decided.
    pub round: u32,
    pub block_id: Digest,
    pub signatures: Vec<CommitSignature>,
}

/// Why a certificate does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    #[error("certificate is for height {got}, the header is height {want}")]
    Height { got: u64, want: u64 },
    #[error("certificate is for block {got}, the header's id is {want}")]
    BlockId { got: Digest, want: Digest },
    #[error("header names validator set {got}, the trusted set at height {height} is {want}")]
    ValidatorSet {
        height: u64,
        got: Digest,
        want: Digest,
    },
    #[error("signer {0} is not in the validator set")]
    UnknownSigner(NodeId),
    #[error("validator {0} signed twice")]
    DuplicateSigner(NodeId),
    #[error("signature of validator {0} does not verify: {1}")]
    BadSignature(NodeId, String),
    #[error("signers hold {got} of {total} voting power; more than 2/3 is needed")]
    NoQuorum { got: u64, total: u64 },
}

impl Certificate {
    /// Checks that the certificate commits `header` under `set`: every signature verifies
    /// over the precommit bytes for the header's id, and the signers hold more than 2/3.
    pub fn verify(&self, header: &BlockHeader, set: &ValidatorSet) -> Result<(), CertificateError> {
        if self.height != header.height {
            return Err(CertificateError::Height {
                got: self.height,
                want: header.height,
            });
        }
        let id = header.id();
        if self.block_id != id {
            return Err(CertificateError::BlockId {
                got: self.block_id,
                want: id,
            });
        }
        if header.validator_set_hash != set.hash() {
            return Err(CertificateError::ValidatorSet {
                height: header.height,
                got: header.validator_set_hash,
                want: set.hash(),
            });
        }
        let msg = vote_sign_bytes(VoteKind::Precommit, self.height, self.round, Some(&id));
        let mut seen = BTreeSet::new();
        let mut power = 0u64;
        for s in &self.signatures {
            let p = set
                .power_of(&s.validator)
                .ok_or(CertificateError::UnknownSigner(s.validator))?;
            if !seen.insert(s.validator) {
                return Err(CertificateError::DuplicateSigner(s.validator));
            }
            keys::verify(&s.validator, &msg, &s.signature)
                .map_err(|e| CertificateError::BadSignature(s.validator, e.to_string()))?;
            power += p;
        }
        if !set.is_quorum(power) {
            return Err(CertificateError::NoQuorum {
                got: power,
                total: set.total_power(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::NodeKey;

    fn set_of(keys: &[&NodeKey]) -> ValidatorSet {
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

    fn header(set: &ValidatorSet) -> BlockHeader {
        BlockHeader {
            chain_id: "test".into(),
            height: 3,
            time_ms: 1,
            prev_block: Digest::default(),
            txs_root: Digest([1; 32]),
            state_hash: Digest([2; 32]),
            validator_set_hash: set.hash(),
            settlement: None,
        }
    }

    fn sign(k: &NodeKey, h: &BlockHeader, round: u32) -> CommitSignature {
        let msg = vote_sign_bytes(VoteKind::Precommit, h.height, round, Some(&h.id()));
        CommitSignature {
            validator: k.node_id(),
            signature: hex::encode(k.sign(&msg)),
        }
    }

    #[test]
    fn quorum_is_strictly_more_than_two_thirds() {
        let ks: Vec<NodeKey> = (0..4).map(|i| NodeKey::from_seed([i; 32])).collect();
        let set = set_of(&ks.iter().collect::<Vec<_>>());
        let h = header(&set);
        let cert = |n: usize| Certificate {
            height: 3,
            round: 1,
            block_id: h.id(),
            signatures: ks[..n].iter().map(|k| sign(k, &h, 1)).collect(),
        };
        assert_eq!(
            cert(2).verify(&h, &set),
            Err(CertificateError::NoQuorum { got: 2, total: 4 })
        );
        cert(3).verify(&h, &set).unwrap();
        cert(4).verify(&h, &set).unwrap();
    }

    #[test]
    fn certificate_rejects_tampering() {
        let ks: Vec<NodeKey> = (0..1).map(|i| NodeKey::from_seed([i; 32])).collect();
        let set = set_of(&[&ks[0]]);
        let h = header(&set);
        let good = Certificate {
            height: 3,
            round: 0,
            block_id: h.id(),
            signatures: vec![sign(&ks[0], &h, 0)],
        };
        good.verify(&h, &set).unwrap();

        let mut other = h.clone();
        other.state_hash = Digest([9; 32]);
        assert!(matches!(
            good.verify(&other, &set),
            Err(CertificateError::BlockId { .. })
        ));

        let mut wrong_round = good.clone();
        wrong_round.round = 1;
        assert!(matches!(
            wrong_round.verify(&h, &set),
            Err(CertificateError::BadSignature(..))
        ));

        let mut dup = good.clone();
        dup.signatures.push(dup.signatures[0].clone());
        assert!(matches!(
            dup.verify(&h, &set),
            Err(CertificateError::DuplicateSigner(_))
        ));

        let stranger = NodeKey::from_seed([42; 32]);
        let mut unknown = good.clone();
        unknown.signatures = vec![sign(&stranger, &h, 0)];
        assert!(matches!(
            unknown.verify(&h, &set),
            Err(CertificateError::UnknownSigner(_))
        ));

        let other_set = set_of(&[&stranger]);
        assert!(matches!(
            good.verify(&h, &other_set),
            Err(CertificateError::ValidatorSet { .. })
        ));
    }

    #[test]
    fn validator_set_hash_ignores_listing_order_and_refuses_bad_sets() {
        let a = Validator {
            public_key: NodeId([1; 32]),
            power: 1,
        };
        let b = Validator {
            public_key: NodeId([2; 32]),
            power: 5,
        };
        assert_eq!(
            ValidatorSet::new(vec![a, b]).unwrap().hash(),
            ValidatorSet::new(vec![b, a]).unwrap().hash()
        );
        assert!(ValidatorSet::new(vec![]).is_err());
        assert!(ValidatorSet::new(vec![a, a]).is_err());
        assert!(ValidatorSet::new(vec![Validator { power: 0, ..a }]).is_err());
        let parsed: Result<ValidatorSet, _> = serde_json::from_str("[]");
        assert!(parsed.is_err());
    }
}
