//! A commit certificate for a block, signed by the given validators (round 0), as the
//! engine would make one.

use haca_chain::Block;
use haca_core::settlement::{vote_sign_bytes, Certificate, CommitSignature, VoteKind};
use haca_core::NodeKey;

pub fn certify(signers: &[&NodeKey], block: &Block) -> Certificate {
    let id = block.header.id();
    let msg = vote_sign_bytes(VoteKind::Precommit, block.header.height, 0, Some(&id));
    Certificate {
        height: block.header.height,
        round: 0,
        block_id: id,
        signatures: signers
            .iter()
            .map(|k| CommitSignature {
                validator: k.node_id(),
                signature: hex::encode(k.sign(&msg)),
            })
            .collect(),
    }
}
