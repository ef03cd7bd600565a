//! haca's types for Malachite's `Context`: heights, addresses (Ed25519 public keys), values
//! (block ids), votes, proposals, proposal parts, validators and the Ed25519 signing scheme.
//!
//! Consensus agrees on a block id only; the block's bytes travel as proposal parts (see
//! [`super::parts`]) and are kept by the adapter until the height is decided.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use ed25519_dalek::{Verifier, VerifyingKey};
use haca_core::settlement::{vote_sign_bytes, VoteKind};
use haca_core::{Digest, NodeId, NodeKey};
use malachitebft_app_channel::app::types::core::{
    self as mcore, NilOrVal, Round, SignedExtension, SignedMessage, SignedProposal,
    SignedProposalPart, SignedVote, SigningProvider, SigningScheme, VoteType, VotingPower,
};

/// Domain prefix of a proposal signature.
pub const PROPOSAL_DOMAIN: &[u8] = b"haca.proposal.v1:";
/// Domain prefix of a proposal part signature (Malachite's `sign_proposal_part`).
pub const PART_DOMAIN: &[u8] = b"haca.part.v1:";
/// Domain prefix of a vote extension signature (extensions are not used yet).
pub const EXTENSION_DOMAIN: &[u8] = b"haca.extension.v1:";

/// The Malachite context of a haca chain.
#[derive(Clone, Copy, Debug, Default)]
pub struct HacaContext;

/// A consensus height (1 is the first block after genesis).
#[derive(Copy, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Height(pub u64);

impl fmt::Display for Height {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for Height {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Height({})", self.0)
    }
}

impl mcore::Height for Height {
    const ZERO: Self = Height(0);
    const INITIAL: Self = Height(1);

    fn increment_by(&self, n: u64) -> Self {
        Height(self.0 + n)
    }

    fn decrement_by(&self, n: u64) -> Option<Self> {
        self.0.checked_sub(n).map(Height)
    }

    fn as_u64(&self) -> u64 {
        self.0
    }
}

/// A validator's address: its Ed25519 public key.
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address(pub NodeId);

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({})", self.0)
    }
}

impl mcore::Address for Address {}

/// The value consensus decides on: a block id (SHA-256 of the block header). It is also its
/// own value id.
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlockId(pub Digest);

impl fmt::Display for BlockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for BlockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlockId({})", self.0)
    }
}

impl mcore::Value for BlockId {
    type Id = BlockId;

    fn id(&self) -> BlockId {
        *self
    }
}

/// A 64-byte Ed25519 signature.
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Signature(pub [u8; 64]);

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", hex::encode(&self.0[..8]))
    }
}

/// Ed25519 over haca's fixed signing layouts; public keys are [`NodeId`]s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ed25519;

impl SigningScheme for Ed25519 {
    type DecodingError = String;
    type Signature = Signature;
    type PublicKey = NodeId;
    type PrivateKey = NodeKey;

    fn decode_signature(bytes: &[u8]) -> Result<Signature, String> {
        <[u8; 64]>::try_from(bytes)
            .map(Signature)
            .map_err(|_| format!("a signature is 64 bytes, got {}", bytes.len()))
    }

    fn encode_signature(signature: &Signature) -> Vec<u8> {
        signature.0.to_vec()
    }
}

/// Checks an Ed25519 signature (strict verification).
pub fn verify_signature(key: &NodeId, msg: &[u8], signature: &Signature) -> bool {
    let Ok(key) = VerifyingKey::from_bytes(&key.0) else {
        return false;
    };
    key.verify(msg, &ed25519_dalek::Signature::from_bytes(&signature.0))
        .is_ok()
}

/// A prevote or precommit.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Vote {
    pub typ: VoteType,
    pub height: Height,
    pub round: Round,
    pub value: NilOrVal<BlockId>,
    pub validator: Address,
    pub extension: Option<SignedExtension<HacaContext>>,
}

impl Vote {
    /// The bytes a validator signs: exactly [`vote_sign_bytes`] (the validator's address is
    /// not in them; the signature is checked under that validator's key). A nil round never
    /// occurs in a vote; it would sign as round `u32::MAX`.
    pub fn sign_bytes(&self) -> Vec<u8> {
        let kind = match self.typ {
            VoteType::Prevote => VoteKind::Prevote,
            VoteType::Precommit => VoteKind::Precommit,
        };
        let block = match &self.value {
            NilOrVal::Nil => None,
            NilOrVal::Val(id) => Some(&id.0),
        };
        vote_sign_bytes(
            kind,
            self.height.0,
            self.round.as_u32().unwrap_or(u32::MAX),
            block,
        )
    }
}

impl mcore::Vote<HacaContext> for Vote {
    fn height(&self) -> Height {
        self.height
    }

    fn round(&self) -> Round {
        self.round
    }

    fn value(&self) -> &NilOrVal<BlockId> {
        &self.value
    }

    fn take_value(self) -> NilOrVal<BlockId> {
        self.value
    }

    fn vote_type(&self) -> VoteType {
        self.typ
    }

    fn validator_address(&self) -> &Address {
        &self.validator
    }

    fn extension(&self) -> Option<&SignedExtension<HacaContext>> {
        self.extension.as_ref()
    }

    fn take_extension(&mut self) -> Option<SignedExtension<HacaContext>> {
        self.extension.take()
    }

    fn extend(self, extension: SignedExtension<HacaContext>) -> Self {
        Vote {
            extension: Some(extension),
            ..self
        }
    }
}

/// A proposal: the proposer's claim that `value` is its block for `(height, round)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proposal {
    pub height: Height,
    pub round: Round,
    pub value: BlockId,
    pub pol_round: Round,
    pub proposer: Address,
}

/// Appends a round in the signing layouts: `0x00` for nil, or `0x01` and the round (u32 BE).
pub(crate) fn put_round(out: &mut Vec<u8>, round: Round) {
    match round.as_u32() {
        None => out.push(0),
        Some(r) => {
            out.push(1);
            out.extend_from_slice(&r.to_be_bytes());
        }
    }
}

impl Proposal {
    /// The bytes a proposer signs, a fixed layout:
    ///
    /// ```text
    /// "haca.proposal.v1:" | height (u64 BE) | round (0x01, u32 BE) | pol_round (0x00 nil, or
    ///                       0x01 and u32 BE) | block id (32 bytes) | proposer key (32 bytes)
    /// ```
    pub fn sign_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(PROPOSAL_DOMAIN.len() + 8 + 5 + 5 + 64);
        out.extend_from_slice(PROPOSAL_DOMAIN);
        out.extend_from_slice(&self.height.0.to_be_bytes());
        put_round(&mut out, self.round);
        put_round(&mut out, self.pol_round);
        out.extend_from_slice(self.value.0.as_bytes());
        out.extend_from_slice(&self.proposer.0 .0);
        out
    }
}

impl mcore::Proposal<HacaContext> for Proposal {
    fn height(&self) -> Height {
        self.height
    }

    fn round(&self) -> Round {
        self.round
    }

    fn value(&self) -> &BlockId {
        &self.value
    }

    fn take_value(self) -> BlockId {
        self.value
    }

    fn pol_round(&self) -> Round {
        self.pol_round
    }

    fn validator_address(&self) -> &Address {
        &self.proposer
    }
}

/// First part of a streamed proposal: what the stream carries and who sends it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProposalInit {
    pub height: Height,
    pub round: Round,
    pub pol_round: Round,
    pub proposer: Address,
    /// The id the proposer claims for the block; receivers recompute it with `Host::check`.
    pub block_id: BlockId,
    /// Total length of the block bytes.
    pub len: u64,
}

/// One piece of a streamed proposal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProposalPart {
    Init(ProposalInit),
    /// A chunk of the block's bytes, in order.
    Data(Bytes),
    /// The proposer's signature over the whole stream (see [`super::parts::fin_sign_bytes`]).
    Fin(Signature),
}

impl mcore::ProposalPart<HacaContext> for ProposalPart {
    fn is_first(&self) -> bool {
        matches!(self, ProposalPart::Init(_))
    }

    fn is_last(&self) -> bool {
        matches!(self, ProposalPart::Fin(_))
    }
}

/// A validator: its key (also its address) and voting power.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validator {
    pub address: Address,
    pub public_key: NodeId,
    pub voting_power: VotingPower,
}

impl mcore::Validator<HacaContext> for Validator {
    fn address(&self) -> &Address {
        &self.address
    }

    fn public_key(&self) -> &NodeId {
        &self.public_key
    }

    fn voting_power(&self) -> VotingPower {
        self.voting_power
    }
}

/// The validators, in the order of [`haca_core::settlement::ValidatorSet`] (sorted by key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidatorSet {
    pub validators: Arc<Vec<Validator>>,
}

impl ValidatorSet {
    pub fn from_settlement(set: &haca_core::settlement::ValidatorSet) -> Self {
        ValidatorSet {
            validators: Arc::new(
                set.validators()
                    .iter()
                    .map(|v| Validator {
                        address: Address(v.public_key),
                        public_key: v.public_key,
                        voting_power: v.power,
                    })
                    .collect(),
            ),
        }
    }

    pub fn get(&self, address: &Address) -> Option<&Validator> {
        self.validators
            .binary_search_by(|v| v.address.cmp(address))
            .ok()
            .map(|i| &self.validators[i])
    }
}

impl mcore::ValidatorSet<HacaContext> for ValidatorSet {
    fn count(&self) -> usize {
        self.validators.len()
    }

    fn total_voting_power(&self) -> VotingPower {
        self.validators.iter().map(|v| v.voting_power).sum()
    }

    fn get_by_address(&self, address: &Address) -> Option<&Validator> {
        self.get(address)
    }

    fn get_by_index(&self, index: usize) -> Option<&Validator> {
        self.validators.get(index)
    }
}

impl mcore::Context for HacaContext {
    type Address = Address;
    type Height = Height;
    type ProposalPart = ProposalPart;
    type Proposal = Proposal;
    type Validator = Validator;
    type ValidatorSet = ValidatorSet;
    type Value = BlockId;
    type Vote = Vote;
    type Extension = Bytes;
    type SigningScheme = Ed25519;

    /// Round robin over the validators sorted by key: `(height - 1 + round) mod n`.
    fn select_proposer<'a>(
        &self,
        validator_set: &'a ValidatorSet,
        height: Height,
        round: Round,
    ) -> &'a Validator {
        let n = validator_set.validators.len() as u64;
        assert!(n > 0, "a validator set is never empty");
        let round = round.as_u32().unwrap_or(0) as u64;
        let index = height.0.saturating_sub(1).wrapping_add(round) % n;
        &validator_set.validators[index as usize]
    }

    fn new_proposal(
        &self,
        height: Height,
        round: Round,
        value: BlockId,
        pol_round: Round,
        address: Address,
    ) -> Proposal {
        Proposal {
            height,
            round,
            value,
            pol_round,
            proposer: address,
        }
    }

    fn new_prevote(
        &self,
        height: Height,
        round: Round,
        value_id: NilOrVal<BlockId>,
        address: Address,
    ) -> Vote {
        Vote {
            typ: VoteType::Prevote,
            height,
            round,
            value: value_id,
            validator: address,
            extension: None,
        }
    }

    fn new_precommit(
        &self,
        height: Height,
        round: Round,
        value_id: NilOrVal<BlockId>,
        address: Address,
    ) -> Vote {
        Vote {
            typ: VoteType::Precommit,
            height,
            round,
            value: value_id,
            validator: address,
            extension: None,
        }
    }
}

/// Signs with the validator's [`NodeKey`] and verifies with ed25519-dalek.
pub struct Signer {
    key: NodeKey,
}

impl Signer {
    pub fn new(key: NodeKey) -> Self {
        Signer { key }
    }

    pub fn sign(&self, msg: &[u8]) -> Signature {
        Signature(self.key.sign(msg))
    }
}

fn part_sign_bytes(part: &ProposalPart) -> Vec<u8> {
    let mut out = PART_DOMAIN.to_vec();
    super::codec::put_part(&mut out, part);
    out
}

fn extension_sign_bytes(extension: &Bytes) -> Vec<u8> {
    let mut out = EXTENSION_DOMAIN.to_vec();
    out.extend_from_slice(extension);
    out
}

impl SigningProvider<HacaContext> for Signer {
    fn sign_vote(&self, vote: Vote) -> SignedVote<HacaContext> {
        let signature = self.sign(&vote.sign_bytes());
        SignedMessage::new(vote, signature)
    }

    fn verify_signed_vote(&self, vote: &Vote, signature: &Signature, public_key: &NodeId) -> bool {
        verify_signature(public_key, &vote.sign_bytes(), signature)
    }

    fn sign_proposal(&self, proposal: Proposal) -> SignedProposal<HacaContext> {
        let signature = self.sign(&proposal.sign_bytes());
        SignedMessage::new(proposal, signature)
    }

    fn verify_signed_proposal(
        &self,
        proposal: &Proposal,
        signature: &Signature,
        public_key: &NodeId,
    ) -> bool {
        verify_signature(public_key, &proposal.sign_bytes(), signature)
    }

    fn sign_proposal_part(&self, part: ProposalPart) -> SignedProposalPart<HacaContext> {
        let signature = self.sign(&part_sign_bytes(&part));
        SignedMessage::new(part, signature)
    }

    fn verify_signed_proposal_part(
        &self,
        part: &ProposalPart,
        signature: &Signature,
        public_key: &NodeId,
    ) -> bool {
        verify_signature(public_key, &part_sign_bytes(part), signature)
    }

    fn sign_vote_extension(&self, extension: Bytes) -> SignedExtension<HacaContext> {
        let signature = self.sign(&extension_sign_bytes(&extension));
        SignedMessage::new(extension, signature)
    }

    fn verify_signed_vote_extension(
        &self,
        extension: &Bytes,
        signature: &Signature,
        public_key: &NodeId,
    ) -> bool {
        verify_signature(public_key, &extension_sign_bytes(extension), signature)
    }
}
