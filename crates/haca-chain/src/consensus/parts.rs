//! Streaming a block as proposal parts, and putting received streams back together.
//!
//! A stream is `Init` (height, round, POL round, proposer, claimed block id, length), the
//! block's bytes in `Data` chunks, then `Fin` with the proposer's signature over
//! [`fin_sign_bytes`], and Malachite's end-of-stream marker.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use haca_core::sha256;
use malachitebft_app_channel::app::streaming::{StreamContent, StreamId, StreamMessage};
use malachitebft_app_channel::app::types::core::Round;
use malachitebft_app_channel::app::types::PeerId;

use super::context::{put_round, BlockId, ProposalInit, ProposalPart, Signature, Signer};

/// Domain prefix of the signature in a stream's `Fin` part.
pub const STREAM_DOMAIN: &[u8] = b"haca.proposal-stream.v1:";

/// Largest `Data` chunk.
pub const CHUNK: usize = 128 * 1024;

/// Most streams buffered from peers at once (older ones are dropped first).
const MAX_STREAMS: usize = 64;

/// The bytes the proposer signs in `Fin`, a fixed layout:
///
/// ```text
/// "haca.proposal-stream.v1:" | height (u64 BE) | round | pol_round | proposer key (32)
///                            | claimed block id (32) | SHA-256 of the block bytes (32)
/// ```
///
/// with rounds as `0x00` (nil) or `0x01` and a u32 BE.
pub fn fin_sign_bytes(init: &ProposalInit, block: &[u8]) -> Vec<u8> {
    let mut out = STREAM_DOMAIN.to_vec();
    out.extend_from_slice(&init.height.0.to_be_bytes());
    put_round(&mut out, init.round);
    put_round(&mut out, init.pol_round);
    out.extend_from_slice(&init.proposer.0 .0);
    out.extend_from_slice(init.block_id.0.as_bytes());
    out.extend_from_slice(sha256(block).as_bytes());
    out
}

fn stream_id(init: &ProposalInit) -> StreamId {
    let mut id = Vec::with_capacity(8 + 5 + 32);
    id.extend_from_slice(&init.height.0.to_be_bytes());
    put_round(&mut id, init.round);
    id.extend_from_slice(&init.proposer.0 .0);
    StreamId::new(Bytes::from(id))
}

/// The stream messages for one block.
pub fn stream(
    init: ProposalInit,
    block: &Bytes,
    signer: &Signer,
) -> Vec<StreamMessage<ProposalPart>> {
    let id = stream_id(&init);
    let signature = signer.sign(&fin_sign_bytes(&init, block));
    let mut parts = vec![ProposalPart::Init(init)];
    parts.extend(
        block
            .chunks(CHUNK)
            .map(|c| ProposalPart::Data(block.slice_ref(c))),
    );
    parts.push(ProposalPart::Fin(signature));
    let mut msgs: Vec<_> = parts
        .into_iter()
        .enumerate()
        .map(|(i, p)| StreamMessage::new(id.clone(), i as u64, StreamContent::Data(p)))
        .collect();
    msgs.push(StreamMessage::new(
        id,
        msgs.len() as u64,
        StreamContent::Fin,
    ));
    msgs
}

/// A complete received stream.
#[derive(Debug)]
pub struct Assembled {
    pub init: ProposalInit,
    pub block: Bytes,
    pub signature: Signature,
}

#[derive(Default)]
struct Partial {
    parts: BTreeMap<u64, StreamContent<ProposalPart>>,
    end: Option<u64>,
    /// Insertion order, to drop the oldest stream when too many are open.
    seq: u64,
}

/// Open streams from peers.
#[derive(Default)]
pub struct Streams {
    open: BTreeMap<(PeerId, StreamId), Partial>,
    counter: u64,
}

impl Streams {
    /// Adds one message; returns the stream once it is complete, or an error if it is
    /// complete but malformed.
    pub fn insert(
        &mut self,
        from: PeerId,
        msg: StreamMessage<ProposalPart>,
    ) -> Option<Result<Assembled, String>> {
        let key = (from, msg.stream_id.clone());
        if !self.open.contains_key(&key) && self.open.len() >= MAX_STREAMS {
            if let Some(oldest) = self
                .open
                .iter()
                .min_by_key(|(_, p)| p.seq)
                .map(|(k, _)| k.clone())
            {
                self.open.remove(&oldest);
            }
        }
        self.counter += 1;
        let counter = self.counter;
        let partial = self.open.entry(key.clone()).or_insert_with(|| Partial {
            seq: counter,
            ..Default::default()
        });
        if msg.content.is_fin() {
            partial.end = Some(msg.sequence);
        }
        partial.parts.entry(msg.sequence).or_insert(msg.content);
        let end = partial.end?;
        if partial.parts.len() as u64 != end + 1 {
            return None;
        }
        let partial = self.open.remove(&key).expect("present");
        Some(assemble(partial.parts.into_values().collect()))
    }
}

fn assemble(contents: Vec<StreamContent<ProposalPart>>) -> Result<Assembled, String> {
    let mut it = contents.into_iter();
    let Some(StreamContent::Data(ProposalPart::Init(init))) = it.next() else {
        return Err("stream does not start with Init".into());
    };
    let mut block = BytesMut::with_capacity(init.len.min(64 << 20) as usize);
    let mut signature = None;
    for content in it {
        match content {
            StreamContent::Data(ProposalPart::Data(d)) if signature.is_none() => {
                block.extend_from_slice(&d)
            }
            StreamContent::Data(ProposalPart::Fin(s)) if signature.is_none() => signature = Some(s),
            StreamContent::Fin if signature.is_some() => {}
            _ => return Err("stream parts out of order".into()),
        }
    }
    let signature = signature.ok_or("stream has no Fin part")?;
    if block.len() as u64 != init.len {
        return Err(format!(
            "stream carries {} bytes, Init says {}",
            block.len(),
            init.len
        ));
    }
    Ok(Assembled {
        init,
        block: block.freeze(),
        signature,
    })
}

/// The `Init` for our own block.
pub fn init_for(
    height: super::context::Height,
    round: Round,
    pol_round: Round,
    proposer: super::context::Address,
    block_id: BlockId,
    block: &[u8],
) -> ProposalInit {
    ProposalInit {
        height,
        round,
        pol_round,
        proposer,
        block_id,
        len: block.len() as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consensus::context::{verify_signature, Address, Height};
    use haca_core::{Digest, NodeKey};

    #[test]
    fn stream_round_trips_in_any_order() {
        let key = NodeKey::from_seed([9; 32]);
        let signer = Signer::new(key.clone());
        let block = Bytes::from(vec![7u8; CHUNK * 2 + 5]);
        let init = init_for(
            Height(3),
            Round::new(1),
            Round::Nil,
            Address(key.node_id()),
            BlockId(Digest([1; 32])),
            &block,
        );
        let mut msgs = stream(init.clone(), &block, &signer);
        assert_eq!(msgs.len(), 1 + 3 + 1 + 1);
        msgs.reverse();
        let mut streams = Streams::default();
        let libp2p_id =
            malachitebft_app_channel::app::types::Keypair::ed25519_from_bytes([1u8; 32])
                .unwrap()
                .public()
                .to_peer_id();
        let peer = PeerId::from_bytes(&libp2p_id.to_bytes()).unwrap();
        let mut done = None;
        for m in msgs {
            if let Some(r) = streams.insert(peer, m) {
                done = Some(r.unwrap());
            }
        }
        let a = done.unwrap();
        assert_eq!(a.init, init);
        assert_eq!(a.block, block);
        assert!(verify_signature(
            &key.node_id(),
            &fin_sign_bytes(&a.init, &a.block),
            &a.signature
        ));
    }
}
