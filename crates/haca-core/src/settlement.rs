//! What a validator signs and what a verifier checks offline: validator sets, block headers,
//! vote signing bytes and commit certificates.
//!
//! A block's id is SHA-256 of the canonical JSON (RFC 8785) of its [`BlockHeader`]. Validators
//! sign their consensus votes over [`vote_sign_bytes`]; a commit certificate is the set of
//! precommit signatures for one block id, and it holds when its signers carry more than 2/3 of
//! the voting power of the validator set in force at that height.

use crate::canonical;
use crate::hash::{sha256, Digest};
use crate::ids::{NodeId, RunId};
use crate::keys;
use crate::merkle;
use crate::oz::OzProof;
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

/// How a request's run is settled (OpenGradient's `X-SETTLEMENT-TYPE`).
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug, Default)]
#[serde(rename_all = "lowercase")]
pub enum SettlementMode {
    /// Only hashes leave the gateway; input and output are not retained after the answer.
    Private,
    /// The receipt's signed view is settled in a round (the default).
    #[default]
    Batch,
    /// Input and output are kept and settled in full, so validators re-check their hashes.
    Individual,
}

impl SettlementMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SettlementMode::Private => "private",
            SettlementMode::Batch => "batch",
            SettlementMode::Individual => "individual",
        }
    }

    /// Reads the header value (case-insensitive).
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "private" => Ok(SettlementMode::Private),
            "batch" => Ok(SettlementMode::Batch),
            "individual" => Ok(SettlementMode::Individual),
            other => Err(format!(
                "{other:?} is not a settlement type; use private, batch or individual"
            )),
        }
    }
}

/// Settlement parameters fixed at genesis.
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
pub struct SettlementParams {
    /// A round closes when it holds this many records...
    pub max_round_records: u64,
    /// ...or when its oldest record has waited this long.
    pub round_interval_ms: u64,
}

impl Default for SettlementParams {
    fn default() -> Self {
        SettlementParams {
            max_round_records: 10_000,
            round_interval_ms: 250,
        }
    }
}

/// A chain's genesis: its id, first validator set and registered gateway keys.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[serde(deny_unknown_fields)]
pub struct Genesis {
    pub chain_id: String,
    pub genesis_time_ms: u64,
    pub validators: ValidatorSet,
    /// Gateway node keys registered from the start (`node.registered`).
    pub gateways: Vec<NodeId>,
    #[serde(default)]
    pub settlement: SettlementParams,
    /// TEE settings (dev root, registry rules); absent: the defaults, which trust no dev root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tee: Option<TeeConfig>,
}

/// Default maximum age of an attestation document at registration: five minutes.
pub const DEFAULT_MAX_DOCUMENT_AGE_MS: u64 = 5 * 60_000;
/// Default maximum age of an enclave's last heartbeat for it to count as active: ten minutes.
pub const DEFAULT_MAX_HEARTBEAT_AGE_MS: u64 = 10 * 60_000;

/// The registry's rules that a chain (or a local mirror) sets once.
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(deny_unknown_fields)]
pub struct RegistryParams {
    /// Enclaves attested under a dev root may register (devnet: yes; default: no).
    #[serde(default)]
    pub allow_dev_roots: bool,
    /// Maximum age of the attestation document at the registration time.
    #[serde(default = "default_max_document_age_ms")]
    pub max_document_age_ms: u64,
    /// Maximum age of the last heartbeat for an enclave to count as active (and of a heartbeat
    /// when it arrives, for `TeeRegistry::heartbeat_at`).
    #[serde(default = "default_max_heartbeat_age_ms")]
    pub max_heartbeat_age_ms: u64,
}

fn default_max_document_age_ms() -> u64 {
    DEFAULT_MAX_DOCUMENT_AGE_MS
}

fn default_max_heartbeat_age_ms() -> u64 {
    DEFAULT_MAX_HEARTBEAT_AGE_MS
}

impl Default for RegistryParams {
    fn default() -> Self {
        RegistryParams {
            allow_dev_roots: false,
            max_document_age_ms: DEFAULT_MAX_DOCUMENT_AGE_MS,
            max_heartbeat_age_ms: DEFAULT_MAX_HEARTBEAT_AGE_MS,
        }
    }
}

impl RegistryParams {
    /// The defaults, with dev roots allowed (devnet).
    pub fn devnet() -> Self {
        RegistryParams {
            allow_dev_roots: true,
            ..RegistryParams::default()
        }
    }
}

/// A chain's TEE settings, set at genesis (`Genesis::tee`). Every field has a serde default, so a genesis or
/// config file without them still parses (and gives the defaults: no dev root, dev enclaves
/// refused).
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct TeeConfig {
    /// The registry's rules (dev roots allowed, maximum document and heartbeat ages).
    #[serde(default)]
    pub registry: RegistryParams,
    /// Hex DER of a dev root certificate (haca's dev enclave CA) that attestation documents
    /// may chain to besides the AWS Nitro root. Documents under it are marked dev, and
    /// register only when `registry.allow_dev_roots` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev_root_der_hex: Option<String>,
}

/// A validator set and the first height it signs.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct ValidatorEpoch {
    pub from_height: u64,
    pub validators: ValidatorSet,
}

/// A gateway key and the heights it was registered for: registered by the block at
/// `from_height` (0: at genesis), so its records settle from block `from_height + 1`, and,
/// once removed, by the block at `until_height`, the last block that could settle its
/// records. An entry without `until_height` is still registered.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct GatewayEntry {
    pub node: NodeId,
    pub from_height: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_height: Option<u64>,
}

impl GatewayEntry {
    /// Whether a record of this gateway could settle in the block at `height`.
    pub fn covers(&self, height: u64) -> bool {
        height > self.from_height && self.until_height.is_none_or(|u| height <= u)
    }
}

/// What a verifier trusts about a chain: every validator set it has had, and the gateway
/// keys it registered. Written by `haca chain validators --export`; a genesis reads as the
/// history of a chain whose set never changed.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[serde(deny_unknown_fields)]
pub struct ValidatorHistory {
    pub chain_id: String,
    pub validator_sets: Vec<ValidatorEpoch>,
    pub gateways: Vec<GatewayEntry>,
}

impl From<&Genesis> for ValidatorHistory {
    fn from(g: &Genesis) -> Self {
        ValidatorHistory {
            chain_id: g.chain_id.clone(),
            validator_sets: vec![ValidatorEpoch {
                from_height: 1,
                validators: g.validators.clone(),
            }],
            gateways: g
                .gateways
                .iter()
                .map(|n| GatewayEntry {
                    node: *n,
                    from_height: 0,
                    until_height: None,
                })
                .collect(),
        }
    }
}

impl ValidatorHistory {
    /// Reads either a genesis or an exported history; errors name the field and the reason.
    pub fn from_json_str(text: &str) -> Result<Self, String> {
        let raw: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
        let history = if raw.get("validator_sets").is_some() {
            serde_path_to_error::deserialize::<_, ValidatorHistory>(&raw)
                .map_err(|e| format!("validator history field {}: {}", e.path(), e.inner()))?
        } else {
            let g: Genesis = serde_path_to_error::deserialize(&raw)
                .map_err(|e| format!("genesis field {}: {}", e.path(), e.inner()))?;
            ValidatorHistory::from(&g)
        };
        if history.validator_sets.is_empty() {
            return Err("validator_sets: the history lists no validator set".into());
        }
        Ok(history)
    }

    /// The set that signs `height`: the last epoch starting at or before it.
    pub fn set_at(&self, height: u64) -> Option<&ValidatorSet> {
        self.validator_sets
            .iter()
            .filter(|e| e.from_height <= height)
            .max_by_key(|e| e.from_height)
            .map(|e| &e.validators)
    }

    /// Every gateway key ever registered (removed ones too: their old receipts still verify).
    pub fn gateway_keys(&self) -> BTreeSet<NodeId> {
        self.gateways.iter().map(|g| g.node).collect()
    }

    /// Whether `node` was a registered gateway for records settled in the block at `height`.
    pub fn gateway_at(&self, node: &NodeId, height: u64) -> bool {
        self.gateways
            .iter()
            .any(|g| g.node == *node && g.covers(height))
    }
}

/// The RFC 6962 leaf data of a settled run: run id (32 bytes) followed by receipt digest.
pub fn round_leaf(run_id: &RunId, receipt_digest: &Digest) -> Digest {
    let mut data = [0u8; 64];
    data[..32].copy_from_slice(run_id.0.as_bytes());
    data[32..].copy_from_slice(receipt_digest.as_bytes());
    merkle::leaf_hash(&data)
}

/// A round's roots posted to a SettlementRegistry contract on an EVM chain.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct EvmAnchor {
    /// CAIP-2, e.g. `eip155:84532`.
    pub network: String,
    /// The registry contract (0x + 40 hex digits).
    pub registry: String,
    /// The transaction that posted the roots (0x + 64 hex digits), and its block.
    pub transaction: String,
    pub block: u64,
}

/// The settlement box's evidence: where a run sits in a committed round, and the proof.
#[derive(Serialize, Deserialize, Clone, PartialEq, Debug)]
pub struct SettlementEvidence {
    pub round: u64,
    pub leaf_index: u64,
    /// The header of the block that closed the round (its id is what validators signed).
    pub header: BlockHeader,
    /// RFC 6962 audit path from the run's leaf to `header.settlement.rfc6962_root`.
    pub inclusion_proof: Vec<Digest>,
    /// The same round as an OpenZeppelin StandardMerkleTree.
    pub oz: OzProof,
    pub certificate: Certificate,
    /// Where the round's roots are anchored on an EVM chain, when the node anchors them
    /// (`--evm-registry`) and the anchoring transaction is known. Not covered by the
    /// certificate: `haca verify --evm-rpc` checks it against the chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evm_anchor: Option<EvmAnchor>,
    /// The Walrus blob id of the round's tree dump ([`crate::oz::StandardTree::dump`] as
    /// canonical JSON, RS2 over 1000 shards): where the whole round's tree is stored, on
    /// Walrus or at the node's `GET /v1/blobs/{id}`. Absent in older settlement boxes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub walrus_blob_id: Option<String>,
}

impl SettlementEvidence {
    /// Checks that this evidence settles the run `run_id` with receipt digest `digest`
    /// under the trusted validator history. Returns what was checked, in plain words.
    pub fn verify(
        &self,
        run_id: &RunId,
        digest: &Digest,
        trust: &ValidatorHistory,
    ) -> Result<String, String> {
        let h = &self.header;
        if h.chain_id != trust.chain_id {
            return Err(format!(
                "header is for chain {:?}, the validator file is for chain {:?}",
                h.chain_id, trust.chain_id
            ));
        }
        let round = h
            .settlement
            .as_ref()
            .ok_or("the header closes no settlement round")?;
        if round.round != self.round {
            return Err(format!(
                "evidence names round {}, the header closes round {}",
                self.round, round.round
            ));
        }
        let leaf = round_leaf(run_id, digest);
        merkle::verify_inclusion(
            &leaf,
            self.leaf_index,
            round.records,
            &self.inclusion_proof,
            &round.rfc6962_root,
        )
        .map_err(|e| format!("RFC 6962 inclusion of this receipt's leaf: {e}"))?;
        let (oz_run, oz_digest) = self.oz.values()?;
        if oz_run != run_id.0 || oz_digest != *digest {
            return Err("the OpenZeppelin leaf is not (this run id, this receipt digest)".into());
        }
        if self.oz.root != format!("0x{}", round.oz_root) {
            return Err(format!(
                "the OpenZeppelin proof's root {} is not the header's {}",
                self.oz.root, round.oz_root
            ));
        }
        self.oz
            .verify()
            .map_err(|e| format!("OpenZeppelin proof: {e}"))?;
        let set = trust
            .set_at(h.height)
            .ok_or_else(|| format!("the validator file has no set for height {}", h.height))?;
        self.certificate
            .verify(h, set)
            .map_err(|e| format!("commit certificate: {e}"))?;
        Ok(format!(
            "round {} at height {} of {}, leaf {} of {}, certified by {} of {} validators",
            self.round,
            h.height,
            h.chain_id,
            self.leaf_index,
            round.records,
            self.certificate.signatures.len(),
            set.validators().len()
        ))
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
