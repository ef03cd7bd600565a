//! A gateway that settles on a validator network it does not run (`haca devnet --chain DIR`).
//!
//! Two tasks connect it to the validators over HTTP:
//! - the outbox pusher submits every record in the outbox (written with the run, in one
//!   transaction) in batches, to any validator that answers, and submits it again if its
//!   run is still undecided a while later (a validator may have crashed with it in its
//!   mempool);
//! - the follower fetches each committed block with its commit certificate, checks the
//!   certificate against the validator set, and applies the block to a local, non-voting
//!   copy of the chain state. That copy answers settlement queries and fills receipts'
//!   settlement boxes; applying a block also removes its decided runs from the outbox.

use haca_chain::consensus::Host;
use haca_chain::state::Tx;
use haca_chain::validator::Validator;
use haca_chain::RunRecord;
use haca_core::settlement::Certificate;
use haca_store::Store;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Records per submission.
const PUSH_BATCH: usize = 5_000;
/// An undecided run's record is submitted again after this long.
const RESUBMIT_AFTER: Duration = Duration::from_secs(10);
/// How often the follower asks for the chain's height when nothing woke it.
const FOLLOW_POLL: Duration = Duration::from_millis(50);

/// HTTP access to a set of validators; requests go to one that answers.
pub struct RemoteChain {
    urls: Vec<String>,
    http: reqwest::Client,
    /// The validator that answered last (tried first next time).
    current: AtomicUsize,
}

impl RemoteChain {
    pub fn new(urls: Vec<String>) -> Self {
        RemoteChain {
            urls,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("HTTP client"),
            current: AtomicUsize::new(0),
        }
    }

    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// Sends a request to each validator in turn until one answers with success; the
    /// error lists what each said.
    async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<bytes::Bytes>,
    ) -> Result<Value, String> {
        let start = self.current.load(Ordering::Relaxed);
        let mut errors = Vec::new();
        for k in 0..self.urls.len() {
            let i = (start + k) % self.urls.len();
            let mut req = self
                .http
                .request(method.clone(), format!("{}{path}", self.urls[i]));
            if let Some(b) = &body {
                req = req
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(b.clone());
            }
            match req.send().await {
                Ok(r) if r.status().is_success() => {
                    self.current.store(i, Ordering::Relaxed);
                    return r
                        .json()
                        .await
                        .map_err(|e| format!("{}{path}: answer is not JSON: {e}", self.urls[i]));
                }
                Ok(r) if r.status().is_client_error() => {
                    // The request itself is wrong: another validator would say the same.
                    let status = r.status();
                    let v: Value = r.json().await.unwrap_or(Value::Null);
                    let msg = v["error"]["message"].as_str().unwrap_or("no reason given");
                    return Err(format!("{}{path}: {status}: {msg}", self.urls[i]));
                }
                Ok(r) => errors.push(format!("{}: {}", self.urls[i], r.status())),
                Err(e) => errors.push(format!("{}: {e}", self.urls[i])),
            }
        }
        Err(format!(
            "no validator answered {path}: {}",
            errors.join("; ")
        ))
    }

    pub async fn get(&self, path: &str) -> Result<Value, String> {
        self.request(reqwest::Method::GET, path, None).await
    }

    pub async fn submit_records(&self, records: &[RunRecord]) -> Result<(), String> {
        let body = serde_json::to_vec(records).expect("records serialize");
        self.request(
            reqwest::Method::POST,
            "/v1/chain/records",
            Some(body.into()),
        )
        .await
        .map(|_| ())
    }

    pub async fn submit_tx(&self, tx: &Tx) -> Result<(), String> {
        let body = serde_json::to_vec(tx).expect("txs serialize");
        self.request(reqwest::Method::POST, "/v1/chain/txs", Some(body.into()))
            .await
            .map(|_| ())
    }
}

/// Submits outbox records until their runs are decided (the follower's commits remove them).
pub async fn push_outbox(remote: Arc<RemoteChain>, store: Arc<Store>, wake: Arc<Notify>) {
    let mut pushed: HashMap<String, Instant> = HashMap::new();
    loop {
        let rows = match tokio::task::spawn_blocking({
            let store = store.clone();
            move || store.outbox()
        })
        .await
        {
            Ok(Ok(rows)) => rows,
            Ok(Err(e)) => {
                tracing::error!("outbox unreadable: {e}");
                Vec::new()
            }
            Err(_) => return,
        };
        let waiting: std::collections::HashSet<&str> =
            rows.iter().map(|(id, _)| id.as_str()).collect();
        pushed.retain(|id, _| waiting.contains(id.as_str()));
        let due: Vec<RunRecord> = rows
            .iter()
            .filter(|(id, _)| pushed.get(id).is_none_or(|t| t.elapsed() >= RESUBMIT_AFTER))
            .filter_map(
                |(id, text)| match RunRecord::from_json_slice(text.as_bytes()) {
                    Ok(r) => Some(r),
                    Err(e) => {
                        tracing::error!("outbox record of run {id} is damaged: {e}");
                        None
                    }
                },
            )
            .collect();
        for chunk in due.chunks(PUSH_BATCH) {
            match remote.submit_records(chunk).await {
                Ok(()) => {
                    let now = Instant::now();
                    for r in chunk {
                        pushed.insert(r.run_id.to_string(), now);
                    }
                }
                Err(e) => {
                    tracing::warn!("{} records not submitted yet: {e}", chunk.len());
                    break;
                }
            }
        }
        // Woken by new runs; otherwise look again for records to resubmit.
        let _ = tokio::time::timeout(Duration::from_secs(1), wake.notified()).await;
    }
}

/// Submits every record still in the outbox once, as a stopping gateway does: the records
/// stay in the outbox (durable) until a block settles them, so this only saves the next
/// start a round trip. Returns how many were sent.
pub async fn flush_outbox(remote: &RemoteChain, store: Arc<Store>) -> Result<usize, String> {
    let rows = tokio::task::spawn_blocking(move || store.outbox())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let records: Vec<RunRecord> = rows
        .iter()
        .filter_map(|(_, text)| RunRecord::from_json_slice(text.as_bytes()).ok())
        .collect();
    for chunk in records.chunks(PUSH_BATCH) {
        remote.submit_records(chunk).await?;
    }
    Ok(records.len())
}

/// Applies the chain's committed blocks to `follower`, in order, each with its certificate
/// checked.
pub async fn follow(remote: Arc<RemoteChain>, follower: Arc<Validator>) {
    let mut warned = false;
    loop {
        let top = match remote.get("/v1/chain/status").await {
            Ok(s) => s["height"].as_u64().unwrap_or(0),
            Err(e) => {
                if !warned {
                    tracing::warn!("cannot reach the chain: {e}");
                    warned = true;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        warned = false;
        let mut h = follower.committed_height() + 1;
        while h <= top {
            match fetch_and_apply(&remote, &follower, h).await {
                Ok(()) => h += 1,
                Err(e) => {
                    tracing::error!("block {h} from the chain not applied: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    break;
                }
            }
        }
        tokio::time::sleep(FOLLOW_POLL).await;
    }
}

async fn fetch_and_apply(
    remote: &RemoteChain,
    follower: &Arc<Validator>,
    h: u64,
) -> Result<(), String> {
    let v = remote.get(&format!("/v1/chain/blocks/{h}")).await?;
    let block: haca_chain::Block = serde_json::from_value(v["block"].clone())
        .map_err(|e| format!("block {h} does not decode: {e}"))?;
    let certificate: Certificate = serde_json::from_value(v["certificate"].clone())
        .map_err(|e| format!("certificate of block {h} does not decode: {e}"))?;
    let follower = follower.clone();
    tokio::task::spawn_blocking(move || follower.apply_certified(h, &block.encode(), certificate))
        .await
        .map_err(|e| format!("apply task failed: {e}"))?
}

/// Whether the chain state `follower` holds has `node` registered now.
fn registered(follower: &Validator, node: &haca_core::NodeId) -> bool {
    follower
        .validator_history()
        .gateways
        .iter()
        .any(|g| g.node == *node && g.until_height.is_none())
}

/// Waits until `follower` has applied every block the chain had when called.
async fn catch_up(
    remote: &RemoteChain,
    follower: &Validator,
    patience: Duration,
) -> Result<(), String> {
    let top = remote.get("/v1/chain/status").await?["height"]
        .as_u64()
        .unwrap_or(0);
    let mut heights = follower.heights();
    tokio::time::timeout(patience, async {
        while *heights.borrow_and_update() < top {
            if heights.changed().await.is_err() {
                return;
            }
        }
    })
    .await
    .map_err(|_| {
        format!(
            "this gateway did not catch up with the chain's height {top} within {}s",
            patience.as_secs()
        )
    })
}

/// Makes sure the chain knows this gateway. If it does not, proposes registering it by
/// governance, approved with the validator keys the testnet directory holds (whoever runs a
/// testnet holds its keys; on a real network the validators' operators sign instead), and
/// waits until the registration has committed.
pub async fn ensure_registered(
    remote: &RemoteChain,
    follower: &Arc<Validator>,
    dir: &std::path::Path,
    node: haca_core::NodeId,
) -> Result<(), String> {
    use haca_chain::state::{Approval, GovAction};
    let patience = Duration::from_secs(60);
    catch_up(remote, follower, patience).await?;
    if registered(follower, &node) {
        return Ok(());
    }
    let file = crate::cli::validator_node::TestnetFile::load(dir)?;
    let keys = file.validator_keys(dir)?;
    let chain_id = follower.genesis().chain_id.clone();
    let seq = follower.governance_seq() + 1;
    let action = GovAction::RegisterGateway { node };
    let approvals = keys
        .iter()
        .map(|k| Approval::sign(k, &chain_id, seq, &action))
        .collect();
    tracing::info!(
        "registering gateway {node} on chain {chain_id} (governance seq {seq}, {} approvals)",
        keys.len()
    );
    remote
        .submit_tx(&Tx::Governance {
            seq,
            action,
            approvals,
        })
        .await
        .map_err(|e| format!("registering this gateway: {e}"))?;
    let mut heights = follower.heights();
    tokio::time::timeout(patience, async {
        while !registered(follower, &node) {
            if heights.changed().await.is_err() {
                return;
            }
        }
    })
    .await
    .map_err(|_| "the registration of this gateway did not commit within 60 s".to_string())
}
