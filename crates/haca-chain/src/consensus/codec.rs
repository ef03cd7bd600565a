//! A fixed binary encoding of the messages Malachite puts on the wire and in its WAL
//! (no protobuf). Integers are big-endian; byte strings carry a u32 length; optional and
//! enum fields start with a one-byte tag. Every decoder refuses trailing bytes.

use bytes::Bytes;
use haca_core::{Digest, NodeId};
use malachitebft_app_channel::app::consensus::{LivenessMsg, ProposedValue, SignedConsensusMsg};
use malachitebft_app_channel::app::streaming::{StreamContent, StreamId, StreamMessage};
use malachitebft_app_channel::app::types::codec::Codec;
use malachitebft_app_channel::app::types::core::{
    CommitCertificate, CommitSignature, NilOrVal, PolkaCertificate, PolkaSignature, Round,
    RoundCertificate, RoundCertificateType, RoundSignature, SignedMessage, Validity, VoteType,
};
use malachitebft_app_channel::app::types::sync::{RawDecidedValue, Request, Response, Status};
use malachitebft_app_channel::app::types::PeerId;

use super::context::{
    Address, BlockId, HacaContext, Height, Proposal, ProposalInit, ProposalPart, Signature, Vote,
};

/// Why bytes did not decode.
#[derive(Debug, thiserror::Error)]
#[error("consensus codec: {0}")]
pub struct CodecError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, CodecError> {
    Err(CodecError(msg.into()))
}

/// The codec for the network and the WAL.
#[derive(Copy, Clone, Debug, Default)]
pub struct HacaCodec;

pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if self.buf.len() < n {
            return err(format!("needs {n} more bytes, has {}", self.buf.len()));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        Ok(self.take(N)?.try_into().expect("length checked"))
    }

    fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, CodecError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, CodecError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn bytes(&mut self) -> Result<Bytes, CodecError> {
        let n = self.u32()? as usize;
        Ok(Bytes::copy_from_slice(self.take(n)?))
    }

    pub(crate) fn finish(self) -> Result<(), CodecError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            err(format!("{} trailing bytes", self.buf.len()))
        }
    }
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u32(
        out,
        u32::try_from(b.len()).expect("a message field is under 4 GiB"),
    );
    out.extend_from_slice(b);
}

/// A type with a binary encoding.
pub(crate) trait Wire: Sized {
    fn put(&self, out: &mut Vec<u8>);
    fn get(r: &mut Reader<'_>) -> Result<Self, CodecError>;
}

impl Wire for Height {
    fn put(&self, out: &mut Vec<u8>) {
        put_u64(out, self.0)
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Ok(Height(r.u64()?))
    }
}

impl Wire for Round {
    fn put(&self, out: &mut Vec<u8>) {
        super::context::put_round(out, *self)
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        match r.u8()? {
            0 => Ok(Round::Nil),
            1 => Ok(Round::new(r.u32()?)),
            t => err(format!("bad round tag {t}")),
        }
    }
}

impl Wire for Address {
    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0 .0)
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Ok(Address(NodeId(r.array()?)))
    }
}

impl Wire for BlockId {
    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.0.as_bytes())
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Ok(BlockId(Digest(r.array()?)))
    }
}

impl Wire for Signature {
    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0)
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Ok(Signature(r.array()?))
    }
}

impl Wire for Bytes {
    fn put(&self, out: &mut Vec<u8>) {
        put_bytes(out, self)
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        r.bytes()
    }
}

impl Wire for VoteType {
    fn put(&self, out: &mut Vec<u8>) {
        out.push(match self {
            VoteType::Prevote => 1,
            VoteType::Precommit => 2,
        })
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        match r.u8()? {
            1 => Ok(VoteType::Prevote),
            2 => Ok(VoteType::Precommit),
            t => err(format!("bad vote type {t}")),
        }
    }
}

impl<T: Wire> Wire for NilOrVal<T> {
    fn put(&self, out: &mut Vec<u8>) {
        match self {
            NilOrVal::Nil => out.push(0),
            NilOrVal::Val(v) => {
                out.push(1);
                v.put(out);
            }
        }
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        match r.u8()? {
            0 => Ok(NilOrVal::Nil),
            1 => Ok(NilOrVal::Val(T::get(r)?)),
            t => err(format!("bad nil-or-value tag {t}")),
        }
    }
}

impl<T: Wire> Wire for Option<T> {
    fn put(&self, out: &mut Vec<u8>) {
        match self {
            None => out.push(0),
            Some(v) => {
                out.push(1);
                v.put(out);
            }
        }
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        match r.u8()? {
            0 => Ok(None),
            1 => Ok(Some(T::get(r)?)),
            t => err(format!("bad option tag {t}")),
        }
    }
}

impl<T: Wire> Wire for Vec<T> {
    fn put(&self, out: &mut Vec<u8>) {
        put_u32(out, self.len() as u32);
        for v in self {
            v.put(out);
        }
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        let n = r.u32()? as usize;
        // Each element takes at least one byte: refuse counts the buffer cannot hold.
        if n > r.buf.len() {
            return err(format!("list of {n} elements in {} bytes", r.buf.len()));
        }
        (0..n).map(|_| T::get(r)).collect()
    }
}

impl<M: Wire> Wire for SignedMessage<HacaContext, M> {
    fn put(&self, out: &mut Vec<u8>) {
        self.message.put(out);
        self.signature.put(out);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        let message = M::get(r)?;
        let signature = Signature::get(r)?;
        Ok(SignedMessage::new(message, signature))
    }
}

impl Wire for Vote {
    fn put(&self, out: &mut Vec<u8>) {
        self.typ.put(out);
        self.height.put(out);
        self.round.put(out);
        self.value.put(out);
        self.validator.put(out);
        self.extension.put(out);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Ok(Vote {
            typ: Wire::get(r)?,
            height: Wire::get(r)?,
            round: Wire::get(r)?,
            value: Wire::get(r)?,
            validator: Wire::get(r)?,
            extension: Wire::get(r)?,
        })
    }
}

impl Wire for Proposal {
    fn put(&self, out: &mut Vec<u8>) {
        self.height.put(out);
        self.round.put(out);
        self.value.put(out);
        self.pol_round.put(out);
        self.proposer.put(out);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Ok(Proposal {
            height: Wire::get(r)?,
            round: Wire::get(r)?,
            value: Wire::get(r)?,
            pol_round: Wire::get(r)?,
            proposer: Wire::get(r)?,
        })
    }
}

impl Wire for ProposalPart {
    fn put(&self, out: &mut Vec<u8>) {
        match self {
            ProposalPart::Init(init) => {
                out.push(1);
                init.height.put(out);
                init.round.put(out);
                init.pol_round.put(out);
                init.proposer.put(out);
                init.block_id.put(out);
                put_u64(out, init.len);
            }
            ProposalPart::Data(data) => {
                out.push(2);
                data.put(out);
            }
            ProposalPart::Fin(sig) => {
                out.push(3);
                sig.put(out);
            }
        }
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        match r.u8()? {
            1 => Ok(ProposalPart::Init(ProposalInit {
                height: Wire::get(r)?,
                round: Wire::get(r)?,
                pol_round: Wire::get(r)?,
                proposer: Wire::get(r)?,
                block_id: Wire::get(r)?,
                len: r.u64()?,
            })),
            2 => Ok(ProposalPart::Data(Wire::get(r)?)),
            3 => Ok(ProposalPart::Fin(Wire::get(r)?)),
            t => err(format!("bad proposal part tag {t}")),
        }
    }
}

/// Appends a proposal part's encoding (also what `sign_proposal_part` signs).
pub(crate) fn put_part(out: &mut Vec<u8>, part: &ProposalPart) {
    part.put(out)
}

impl Wire for SignedConsensusMsg<HacaContext> {
    fn put(&self, out: &mut Vec<u8>) {
        match self {
            SignedConsensusMsg::Vote(v) => {
                out.push(1);
                v.put(out);
            }
            SignedConsensusMsg::Proposal(p) => {
                out.push(2);
                p.put(out);
            }
        }
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        match r.u8()? {
            1 => Ok(SignedConsensusMsg::Vote(Wire::get(r)?)),
            2 => Ok(SignedConsensusMsg::Proposal(Wire::get(r)?)),
            t => err(format!("bad consensus message tag {t}")),
        }
    }
}

impl Wire for StreamMessage<ProposalPart> {
    fn put(&self, out: &mut Vec<u8>) {
        put_bytes(out, &self.stream_id.to_bytes());
        put_u64(out, self.sequence);
        match &self.content {
            StreamContent::Fin => out.push(0),
            StreamContent::Data(part) => {
                out.push(1);
                part.put(out);
            }
        }
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        let stream_id = StreamId::new(r.bytes()?);
        let sequence = r.u64()?;
        let content = match r.u8()? {
            0 => StreamContent::Fin,
            1 => StreamContent::Data(ProposalPart::get(r)?),
            t => return err(format!("bad stream content tag {t}")),
        };
        Ok(StreamMessage::new(stream_id, sequence, content))
    }
}

impl Wire for CommitSignature<HacaContext> {
    fn put(&self, out: &mut Vec<u8>) {
        self.address.put(out);
        self.signature.put(out);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Ok(CommitSignature::new(Wire::get(r)?, Wire::get(r)?))
    }
}

impl Wire for PolkaSignature<HacaContext> {
    fn put(&self, out: &mut Vec<u8>) {
        self.address.put(out);
        self.signature.put(out);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Ok(PolkaSignature::new(Wire::get(r)?, Wire::get(r)?))
    }
}

impl Wire for RoundSignature<HacaContext> {
    fn put(&self, out: &mut Vec<u8>) {
        self.vote_type.put(out);
        self.value_id.put(out);
        self.address.put(out);
        self.signature.put(out);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Ok(RoundSignature::new(
            Wire::get(r)?,
            Wire::get(r)?,
            Wire::get(r)?,
            Wire::get(r)?,
        ))
    }
}

impl Wire for CommitCertificate<HacaContext> {
    fn put(&self, out: &mut Vec<u8>) {
        self.height.put(out);
        self.round.put(out);
        self.value_id.put(out);
        self.commit_signatures.put(out);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Ok(CommitCertificate {
            height: Wire::get(r)?,
            round: Wire::get(r)?,
            value_id: Wire::get(r)?,
            commit_signatures: Wire::get(r)?,
        })
    }
}

impl Wire for LivenessMsg<HacaContext> {
    fn put(&self, out: &mut Vec<u8>) {
        match self {
            LivenessMsg::Vote(v) => {
                out.push(1);
                v.put(out);
            }
            LivenessMsg::PolkaCertificate(c) => {
                out.push(2);
                c.height.put(out);
                c.round.put(out);
                c.value_id.put(out);
                c.polka_signatures.put(out);
            }
            LivenessMsg::SkipRoundCertificate(c) => {
                out.push(3);
                c.height.put(out);
                c.round.put(out);
                out.push(match c.cert_type {
                    RoundCertificateType::Skip => 1,
                    RoundCertificateType::Precommit => 2,
                });
                c.round_signatures.put(out);
            }
        }
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        match r.u8()? {
            1 => Ok(LivenessMsg::Vote(Wire::get(r)?)),
            2 => Ok(LivenessMsg::PolkaCertificate(PolkaCertificate {
                height: Wire::get(r)?,
                round: Wire::get(r)?,
                value_id: Wire::get(r)?,
                polka_signatures: Wire::get(r)?,
            })),
            3 => Ok(LivenessMsg::SkipRoundCertificate(RoundCertificate {
                height: Wire::get(r)?,
                round: Wire::get(r)?,
                cert_type: match r.u8()? {
                    1 => RoundCertificateType::Skip,
                    2 => RoundCertificateType::Precommit,
                    t => return err(format!("bad round certificate type {t}")),
                },
                round_signatures: Wire::get(r)?,
            })),
            t => err(format!("bad liveness message tag {t}")),
        }
    }
}

impl Wire for PeerId {
    fn put(&self, out: &mut Vec<u8>) {
        put_bytes(out, &self.to_bytes())
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        PeerId::from_bytes(&r.bytes()?).map_err(|e| CodecError(format!("bad peer id: {e}")))
    }
}

impl Wire for Status<HacaContext> {
    fn put(&self, out: &mut Vec<u8>) {
        self.peer_id.put(out);
        self.tip_height.put(out);
        self.history_min_height.put(out);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Ok(Status {
            peer_id: Wire::get(r)?,
            tip_height: Wire::get(r)?,
            history_min_height: Wire::get(r)?,
        })
    }
}

impl Wire for Request<HacaContext> {
    fn put(&self, out: &mut Vec<u8>) {
        match self {
            Request::ValueRequest(req) => {
                out.push(1);
                req.height.put(out);
            }
        }
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        use malachitebft_sync::ValueRequest;
        match r.u8()? {
            1 => Ok(Request::ValueRequest(ValueRequest::new(Wire::get(r)?))),
            t => err(format!("bad sync request tag {t}")),
        }
    }
}

impl Wire for RawDecidedValue<HacaContext> {
    fn put(&self, out: &mut Vec<u8>) {
        self.value_bytes.put(out);
        self.certificate.put(out);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Ok(RawDecidedValue::new(Wire::get(r)?, Wire::get(r)?))
    }
}

impl Wire for Response<HacaContext> {
    fn put(&self, out: &mut Vec<u8>) {
        match self {
            Response::ValueResponse(resp) => {
                out.push(1);
                resp.height.put(out);
                resp.value.put(out);
            }
        }
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        use malachitebft_sync::ValueResponse;
        match r.u8()? {
            1 => Ok(Response::ValueResponse(ValueResponse::new(
                Wire::get(r)?,
                Wire::get(r)?,
            ))),
            t => err(format!("bad sync response tag {t}")),
        }
    }
}

impl Wire for ProposedValue<HacaContext> {
    fn put(&self, out: &mut Vec<u8>) {
        self.height.put(out);
        self.round.put(out);
        self.valid_round.put(out);
        self.proposer.put(out);
        self.value.put(out);
        out.push(match self.validity {
            Validity::Valid => 1,
            Validity::Invalid => 0,
        });
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Ok(ProposedValue {
            height: Wire::get(r)?,
            round: Wire::get(r)?,
            valid_round: Wire::get(r)?,
            proposer: Wire::get(r)?,
            value: Wire::get(r)?,
            validity: match r.u8()? {
                1 => Validity::Valid,
                0 => Validity::Invalid,
                t => return err(format!("bad validity {t}")),
            },
        })
    }
}

/// Encodes one value.
pub(crate) fn encode<T: Wire>(v: &T) -> Vec<u8> {
    let mut out = Vec::new();
    v.put(&mut out);
    out
}

/// Decodes one value, refusing trailing bytes.
pub(crate) fn decode<T: Wire>(bytes: &[u8]) -> Result<T, CodecError> {
    let mut r = Reader::new(bytes);
    let v = T::get(&mut r)?;
    r.finish()?;
    Ok(v)
}

/// Reads `bytes` as each kind of message a peer can send and reports how many parsed: what
/// the fuzz target drives (no input may panic a decoder).
pub fn decode_untrusted(bytes: &[u8]) -> usize {
    [
        decode::<ProposalPart>(bytes).is_ok(),
        decode::<SignedConsensusMsg<HacaContext>>(bytes).is_ok(),
        decode::<LivenessMsg<HacaContext>>(bytes).is_ok(),
        decode::<StreamMessage<ProposalPart>>(bytes).is_ok(),
        decode::<Status<HacaContext>>(bytes).is_ok(),
        decode::<Request<HacaContext>>(bytes).is_ok(),
        decode::<Response<HacaContext>>(bytes).is_ok(),
        decode::<ProposedValue<HacaContext>>(bytes).is_ok(),
    ]
    .iter()
    .filter(|ok| **ok)
    .count()
}

macro_rules! wire_codec {
    ($($t:ty),* $(,)?) => {$(
        impl Codec<$t> for HacaCodec {
            type Error = CodecError;

            fn decode(&self, bytes: Bytes) -> Result<$t, CodecError> {
                decode(&bytes)
            }

            fn encode(&self, msg: &$t) -> Result<Bytes, CodecError> {
                Ok(Bytes::from(encode(msg)))
            }
        }
    )*};
}

wire_codec!(
    ProposalPart,
    SignedConsensusMsg<HacaContext>,
    LivenessMsg<HacaContext>,
    StreamMessage<ProposalPart>,
    Status<HacaContext>,
    Request<HacaContext>,
    Response<HacaContext>,
    ProposedValue<HacaContext>,
);

#[cfg(test)]
mod tests {
    use super::*;
    use malachitebft_app_channel::app::types::core::SignedVote;

    #[test]
    fn messages_round_trip() {
        let vote = Vote {
            typ: VoteType::Precommit,
            height: Height(7),
            round: Round::new(2),
            value: NilOrVal::Val(BlockId(Digest([3; 32]))),
            validator: Address(NodeId([4; 32])),
            extension: None,
        };
        let signed: SignedVote<HacaContext> = SignedMessage::new(vote, Signature([5; 64]));
        let msg = SignedConsensusMsg::Vote(signed);
        let bytes = encode(&msg);
        let back: SignedConsensusMsg<HacaContext> = decode(&bytes).unwrap();
        assert_eq!(encode(&back), bytes);

        let part = StreamMessage::new(
            StreamId::new(Bytes::from_static(b"s")),
            1,
            StreamContent::Data(ProposalPart::Init(ProposalInit {
                height: Height(1),
                round: Round::new(0),
                pol_round: Round::Nil,
                proposer: Address(NodeId([1; 32])),
                block_id: BlockId(Digest([2; 32])),
                len: 10,
            })),
        );
        let bytes = encode(&part);
        let back: StreamMessage<ProposalPart> = decode(&bytes).unwrap();
        assert_eq!(back, part);

        let mut long = bytes.clone();
        long.push(0);
        assert!(decode::<StreamMessage<ProposalPart>>(&long).is_err());
        assert!(decode::<StreamMessage<ProposalPart>>(&bytes[..bytes.len() - 1]).is_err());
    }

    fn decode_all(bytes: &[u8]) {
        let _ = decode_untrusted(bytes);
    }

    proptest::proptest! {
        /// Peers send anything: no byte string may panic a decoder.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            decode_all(&bytes);
        }

        /// A valid message cut short or with one byte changed is refused or read, never a panic.
        #[test]
        fn mangled_votes_never_panic(cut in 0usize..200, flip in 0usize..200, bit in 0u8..8) {
            let vote = Vote {
                typ: VoteType::Prevote,
                height: Height(9),
                round: Round::new(1),
                value: NilOrVal::Val(BlockId(Digest([7; 32]))),
                validator: Address(NodeId([8; 32])),
                extension: None,
            };
            let msg = SignedConsensusMsg::Vote(SignedMessage::new(vote, Signature([1; 64])));
            let mut bytes = encode(&msg);
            if flip < bytes.len() {
                bytes[flip] ^= 1 << bit;
            }
            decode_all(&bytes);
            let cut = cut.min(bytes.len());
            proptest::prop_assert!(decode::<SignedConsensusMsg<HacaContext>>(&encode(&msg)[..cut]).is_err() || cut == encode(&msg).len());
        }
    }
}
