//! Sample receipts for tests and benchmarks across the workspace (not for production use).

use crate::hash::sha256;
use crate::ids::{BlobId, RunId};
use crate::keys::NodeKey;
use crate::receipt::*;

/// An unsigned receipt of a vanilla run served by `key`'s node at `at` (unix ms): artifact,
/// route and execution boxes claimed, every other box absent. `seed` varies the run id and
/// hashes. Sign it with [`Receipt::sign`].
pub fn vanilla_receipt(key: &NodeKey, blob_id: BlobId, at: u64, seed: u64) -> Receipt {
    let salt = seed.to_le_bytes();
    let h = |tag: &[u8]| sha256(&[tag, &salt].concat());
    let mut r = Receipt::new(RunId(h(b"run")), at);
    r.boxes.artifact = EvidenceBox::with(
        ArtifactEvidence {
            label: Some("example/mnist-mlp".into()),
            revision: Some(1),
            blob_id,
            format: "onnx".into(),
            walrus_blob_id: None,
        },
        BoxStatus::Claimed,
        at,
    );
    r.boxes.route = EvidenceBox::with(
        RouteEvidence::direct("local/tract", key.node_id()),
        BoxStatus::Claimed,
        at,
    );
    r.boxes.execution = EvidenceBox::with(
        ExecutionEvidence {
            mode: ExecMode::Vanilla,
            runtime: "tract-onnx 0.23".into(),
            request_hash: h(b"req"),
            input_hash: h(b"in"),
            output_hash: h(b"out"),
            signer: key.node_id(),
            started_at: at,
            finished_at: at + 1,
            signature: None,
        },
        BoxStatus::Claimed,
        at + 1,
    );
    r
}
