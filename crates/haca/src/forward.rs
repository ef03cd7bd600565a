//! Passing submissions between validators: a record a gateway gave one validator reaches the
//! others' mempools, so whichever validator proposes next includes it.
//!
//! Best effort by design: a peer that is down misses what was sent meanwhile, and the
//! gateway's outbox (which resubmits until the run is decided) is what guarantees delivery.

use haca_chain::state::Tx;
use haca_chain::RunRecord;
use std::time::Duration;
use tokio::sync::mpsc;

/// Marks a submission a validator passed on to its peers, so that they do not pass it on again.
pub const FORWARDED_HEADER: &str = "x-haca-forwarded";

/// Records passed on in one request at most.
const BATCH: usize = 2_000;
/// How long a lone record waits for company before it is sent.
const LINGER: Duration = Duration::from_millis(5);

enum Item {
    Records(Vec<RunRecord>),
    Tx(Box<Tx>),
}

/// A handle on the forwarding task; cloning it is cheap.
#[derive(Clone)]
pub struct Forwarder {
    tx: mpsc::UnboundedSender<Item>,
}

impl Forwarder {
    /// Starts forwarding to `peers` (validators' HTTP base URLs).
    pub fn start(peers: Vec<String>) -> Forwarder {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(peers, rx));
        Forwarder { tx }
    }

    pub fn records(&self, records: Vec<RunRecord>) {
        if !records.is_empty() {
            let _ = self.tx.send(Item::Records(records));
        }
    }

    pub fn tx(&self, tx: Tx) {
        let _ = self.tx.send(Item::Tx(Box::new(tx)));
    }
}

async fn post_all(client: &reqwest::Client, peers: &[String], path: &str, body: bytes::Bytes) {
    let sends = peers.iter().map(|peer| {
        let (peer, path) = (peer.clone(), path.to_owned());
        let req = client
            .post(format!("{peer}{path}"))
            .header(FORWARDED_HEADER, "1")
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.clone());
        async move {
            match req.send().await {
                Ok(r) if r.status().is_success() => {}
                Ok(r) => {
                    let status = r.status();
                    let text = r.text().await.unwrap_or_default();
                    tracing::debug!(%peer, %status, "peer refused forwarded {path}: {text}");
                }
                Err(e) => tracing::debug!(%peer, "cannot forward {path}: {e}"),
            }
        }
    });
    futures_join_all(sends).await;
}

/// Runs futures concurrently and waits for all (tokio has no join_all of its own).
async fn futures_join_all<F: std::future::Future<Output = ()> + Send + 'static>(
    fs: impl Iterator<Item = F>,
) {
    let handles: Vec<_> = fs.map(tokio::spawn).collect();
    for h in handles {
        let _ = h.await;
    }
}

async fn run(peers: Vec<String>, mut rx: mpsc::UnboundedReceiver<Item>) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("HTTP client");
    let mut pending: Vec<RunRecord> = Vec::new();
    loop {
        let item = if pending.is_empty() {
            match rx.recv().await {
                Some(i) => Some(i),
                None => return,
            }
        } else {
            tokio::time::timeout(LINGER, rx.recv())
                .await
                .unwrap_or(None)
        };
        match item {
            Some(Item::Records(rs)) => {
                pending.extend(rs);
                if pending.len() < BATCH {
                    continue;
                }
            }
            Some(Item::Tx(tx)) => {
                let body = serde_json::to_vec(&tx).expect("txs serialize");
                post_all(&client, &peers, "/v1/chain/txs", body.into()).await;
                continue;
            }
            None => {}
        }
        while !pending.is_empty() {
            let rest = pending.split_off(pending.len().min(BATCH));
            let body = serde_json::to_vec(&pending).expect("records serialize");
            post_all(&client, &peers, "/v1/chain/records", body.into()).await;
            pending = rest;
        }
    }
}
