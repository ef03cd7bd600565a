//! The chain's model registry as the Model Hub's label authority: a label move is a signed
//! transaction; the hub mirrors the revision once the block that records it has committed.

use crate::remote::RemoteChain;
use haca_chain::state::{label_message, Tx};
use haca_chain::validator::Validator;
use haca_core::{BlobId, NodeKey};
use haca_hub::{Hub, LabelAuthority};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// How long a label move waits for its block.
const COMMIT_PATIENCE: Duration = Duration::from_secs(30);

pub struct ChainRegistry {
    /// The chain's state: the in-process validator, or a copy following a remote chain.
    pub validator: Arc<Validator>,
    /// The gateway key that signs label moves (a registered gateway).
    pub key: NodeKey,
    /// Where moves are submitted when the chain is remote.
    pub remote: Option<Arc<RemoteChain>>,
}

impl ChainRegistry {
    async fn record_move(&self, label: &str, blob_id: BlobId, at_ms: u64) -> Result<u64, String> {
        let gateway = self.key.node_id();
        let signature = hex::encode(self.key.sign(&label_message(label, &blob_id, at_ms)));
        let mut heights = self.validator.heights();
        let tx = Tx::MoveLabel {
            label: label.to_owned(),
            blob_id,
            at_ms,
            gateway,
            signature,
        };
        match &self.remote {
            Some(remote) => remote.submit_tx(&tx).await?,
            None => self.validator.submit_tx(tx)?,
        }
        let wait = async {
            loop {
                let revs = self.validator.label_revisions(label);
                if let Some(r) = revs
                    .iter()
                    .find(|r| r.blob_id == blob_id && r.at_ms == at_ms && r.gateway == gateway)
                {
                    return r.revision;
                }
                if heights.changed().await.is_err() {
                    return 0;
                }
            }
        };
        match tokio::time::timeout(COMMIT_PATIENCE, wait).await {
            Ok(0) => Err("the validator stopped before the move committed".into()),
            Ok(revision) => Ok(revision),
            Err(_) => Err(format!(
                "no block recorded the move within {}s",
                COMMIT_PATIENCE.as_secs()
            )),
        }
    }
}

impl LabelAuthority for ChainRegistry {
    fn record(
        &self,
        label: &str,
        blob_id: BlobId,
        at_ms: u64,
    ) -> Pin<Box<dyn Future<Output = Result<u64, String>> + Send + '_>> {
        let label = label.to_owned();
        Box::pin(async move { self.record_move(&label, blob_id, at_ms).await })
    }
}

/// Brings the hub's history and the chain's registry together at start: labels the chain
/// has never seen (history from before the chain) are recorded on it in order, and revisions
/// the chain committed but the hub did not write (a crash in between) are mirrored.
pub async fn reconcile(hub: &Hub, registry: &ChainRegistry) -> Result<(), String> {
    for entry in hub.list().map_err(|e| e.to_string())? {
        if registry.validator.label_revisions(&entry.label).is_empty() {
            for rev in hub.history(&entry.label).map_err(|e| e.to_string())? {
                registry
                    .record_move(&rev.label, rev.blob_id, rev.created_at)
                    .await?;
            }
        }
    }
    for (label, revs) in registry.validator.models() {
        for r in revs {
            match hub.mirror(&label, r.revision, r.blob_id, r.at_ms).await {
                Ok(true) => tracing::info!(
                    "hub: mirrored {label} revision {} from the chain",
                    r.revision
                ),
                Ok(false) => {}
                Err(e) => tracing::warn!("hub: cannot mirror {label} revision {}: {e}", r.revision),
            }
        }
    }
    Ok(())
}
