//! The review role's wiring: cases over stored runs, their evidence read through the node's
//! chain and verifiers, decisions appended to the transparency log, and clearances announced
//! by signed webhooks. The rules themselves live in `haca-review`.

use crate::{now_ms, random_hex};
use haca_chain::log::LogEntry;
use haca_core::claims::{Claim, ClaimState, TrustAnchors};
use haca_core::receipt::{ParsedReceipt, BOX_NAMES};
use haca_core::RunId;
use haca_gateway::{Gateway, GatewayError};
use haca_review::case::{chronology, Evaluation};
use haca_review::continuity::{self, LabelUse, Turn};
use haca_review::{Action, CaseClasses, CaseState, DecisionInput, Refusal, Role};
use haca_store::{CaseRow, DecisionRow, RunRecord};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Why a review action did not go through. The HTTP layer (the `server` module's review) gives each its
/// status.
#[derive(Debug)]
pub enum ReviewError {
    /// A field of the request is malformed.
    Invalid {
        code: &'static str,
        message: String,
        param: Option<String>,
    },
    /// The case, policy or run does not exist here.
    NotFound {
        code: &'static str,
        message: String,
        param: Option<String>,
    },
    /// The decision rules refused the decision; `missing` lists per-run missing claims (at
    /// most [`MISSING_DETAIL_LIMIT`]) for a case that is not ready.
    Refused {
        refusal: Refusal,
        missing: Vec<Value>,
    },
    /// Another decision on the case landed first.
    AlreadyDecided(String),
    /// The token already watches [`MAX_WATCHERS_PER_TOKEN`] live views.
    TooManyWatchers(String),
    /// Reading runs or receipts failed.
    Gateway(GatewayError),
    Internal(String),
}

impl ReviewError {
    fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        ReviewError::Invalid {
            code,
            message: message.into(),
            param: None,
        }
    }
    fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        ReviewError::NotFound {
            code,
            message: message.into(),
            param: None,
        }
    }
    /// Names the request field at fault.
    fn param(mut self, field: impl Into<String>) -> Self {
        if let ReviewError::Invalid { param, .. } | ReviewError::NotFound { param, .. } = &mut self
        {
            *param = Some(field.into());
        }
        self
    }
}

impl From<GatewayError> for ReviewError {
    fn from(e: GatewayError) -> Self {
        ReviewError::Gateway(e)
    }
}

impl From<haca_store::StoreError> for ReviewError {
    fn from(e: haca_store::StoreError) -> Self {
        ReviewError::Gateway(e.into())
    }
}

/// Live views (`GET /v1/cases/{id}/events`) one token may hold open at once.
pub const MAX_WATCHERS_PER_TOKEN: usize = 16;

/// Reads a case's live summary (blocking work: it checks every run's receipt).
pub type ReadSummary = Arc<dyn Fn() -> Result<String, ReviewError> + Send + Sync>;

/// One watcher's view of a case's live summary. The summary is read once per change for all
/// of the case's watchers, not once per watcher; dropping the watch frees its token's slot,
/// and the case's reader stops when its last watcher leaves.
pub struct CaseWatch {
    /// The latest summary; `None` until the first change after the watch began.
    pub updates: tokio::sync::watch::Receiver<Option<String>>,
    /// Becomes true when the node stops ([`Review::stop_watches`]): the view sends its
    /// last event and ends, so that no open panel holds the node's shutdown.
    pub stopping: tokio::sync::watch::Receiver<bool>,
    _slot: WatcherSlot,
}

struct WatcherSlot {
    review: Arc<Review>,
    token: String,
}

impl Drop for WatcherSlot {
    fn drop(&mut self) {
        let mut w = self.review.watchers.lock().expect("watchers lock");
        if let Some(n) = w.get_mut(&self.token) {
            *n -= 1;
            if *n == 0 {
                w.remove(&self.token);
            }
        }
    }
}

/// The most runs one case may hold.
pub const MAX_CASE_RUNS: usize = 10_000;
/// Per-run detail rows of missing claims a refusal lists (the claim names are always whole).
const MISSING_DETAIL_LIMIT: usize = 50;
/// Webhook deliveries: attempts and the first pause between them (doubling).
const WEBHOOK_ATTEMPTS: u64 = 5;
const WEBHOOK_FIRST_PAUSE: Duration = Duration::from_secs(1);

/// Who is acting on the review API.
#[derive(Clone, Debug)]
pub struct Principal {
    /// The token's id (`operator` for the node's operator token).
    pub id: String,
    pub role: Role,
}

/// The review queue of one node.
pub struct Review {
    pub classes: CaseClasses,
    /// Accept the dev enclave's root for `enclave.genuine` (devnet), reported as dev.
    pub allow_dev_root: bool,
    /// Decisions are taken one at a time: each reads the evidence and appends in order.
    decide_lock: tokio::sync::Mutex<()>,
    /// Bumped on every new case and decision, so live views refresh.
    changes: tokio::sync::watch::Sender<u64>,
    /// Each watched case's live summary, shared by its watchers (see [`Review::watch`]).
    feeds: std::sync::Mutex<
        std::collections::HashMap<String, tokio::sync::watch::Receiver<Option<String>>>,
    >,
    /// Open live views per token.
    watchers: std::sync::Mutex<std::collections::HashMap<String, usize>>,
    /// Sends clearance webhooks.
    http: reqwest::Client,
    /// Set once when the node stops: every live view ends.
    stopping: tokio::sync::watch::Sender<bool>,
}

/// A case with its runs' current receipts.
pub struct LoadedCase {
    pub row: CaseRow,
    pub runs: Vec<(RunRecord, ParsedReceipt)>,
}

impl Review {
    pub fn new(classes: CaseClasses, allow_dev_root: bool) -> Self {
        Review {
            classes,
            allow_dev_root,
            decide_lock: tokio::sync::Mutex::new(()),
            changes: tokio::sync::watch::channel(0).0,
            feeds: Default::default(),
            watchers: Default::default(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("an HTTP client builds"),
            stopping: tokio::sync::watch::channel(false).0,
        }
    }

    /// Ends every live case view (each sends a final `shutdown` event), now and for views
    /// opened from now on: called as the node stops.
    pub fn stop_watches(&self) {
        self.stopping.send_replace(true);
    }

    /// Watches case `case_id` for token `token`: the case's summary, read by `read` once per
    /// change (a new block `heights` reports, a case or decision, or every 10 s since
    /// freshness claims age), and shared by every watcher of the case. At most
    /// [`MAX_WATCHERS_PER_TOKEN`] watches per token.
    pub fn watch(
        self: &Arc<Self>,
        case_id: &str,
        token: &str,
        heights: Option<tokio::sync::watch::Receiver<u64>>,
        read: ReadSummary,
    ) -> Result<CaseWatch, ReviewError> {
        {
            let mut w = self.watchers.lock().expect("watchers lock");
            let n = w.entry(token.to_owned()).or_default();
            if *n >= MAX_WATCHERS_PER_TOKEN {
                return Err(ReviewError::TooManyWatchers(format!(
                    "token {token} already holds {MAX_WATCHERS_PER_TOKEN} live views open; close one"
                )));
            }
            *n += 1;
        }
        let slot = WatcherSlot {
            review: self.clone(),
            token: token.to_owned(),
        };
        let mut feeds = self.feeds.lock().expect("feeds lock");
        if let Some(rx) = feeds.get(case_id) {
            let mut updates = rx.clone();
            // Only what changes from now on: the watcher has just read the case.
            updates.borrow_and_update();
            return Ok(CaseWatch {
                updates,
                stopping: self.stopping.subscribe(),
                _slot: slot,
            });
        }
        let (tx, rx) = tokio::sync::watch::channel(None);
        feeds.insert(case_id.to_owned(), rx.clone());
        drop(feeds);
        tokio::spawn(self.clone().feed(case_id.to_owned(), tx, heights, read));
        Ok(CaseWatch {
            updates: rx,
            stopping: self.stopping.subscribe(),
            _slot: slot,
        })
    }

    /// Reads one case's summary for its watchers until the last one leaves.
    async fn feed(
        self: Arc<Self>,
        case_id: String,
        tx: tokio::sync::watch::Sender<Option<String>>,
        mut heights: Option<tokio::sync::watch::Receiver<u64>>,
        read: ReadSummary,
    ) {
        let mut changes = self.subscribe();
        let mut cost = Duration::ZERO;
        // The feed's own entry in `feeds` holds one receiver: more means someone watches.
        let watched = |tx: &tokio::sync::watch::Sender<Option<String>>| {
            let mut feeds = self.feeds.lock().expect("feeds lock");
            if tx.receiver_count() > 1 {
                return true;
            }
            feeds.remove(&case_id);
            false
        };
        loop {
            // A large case costs real work to read: at most a quarter of one core for the
            // case, however many watch it, and never more often than every 2 s.
            let pause = (cost * 3).max(Duration::from_secs(2));
            tokio::time::sleep(pause).await;
            let height = async {
                match heights.as_mut() {
                    Some(h) => {
                        if h.changed().await.is_err() {
                            std::future::pending::<()>().await
                        }
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = height => {}
                r = changes.changed() => if r.is_err() { break },
                // Freshness claims age without any event.
                _ = tokio::time::sleep(Duration::from_secs(10)) => {}
            }
            if !watched(&tx) {
                return;
            }
            let started = tokio::time::Instant::now();
            let read = read.clone();
            let summary = tokio::task::spawn_blocking(move || read()).await;
            cost = started.elapsed();
            match summary {
                Ok(Ok(text)) => {
                    tx.send_if_modified(|last| {
                        if last.as_deref() == Some(text.as_str()) {
                            false
                        } else {
                            *last = Some(text);
                            true
                        }
                    });
                }
                Ok(Err(e)) => tracing::warn!("live view of case {case_id}: {e:?}"),
                Err(e) => tracing::error!("live view of case {case_id}: the reader stopped: {e}"),
            }
        }
        self.feeds.lock().expect("feeds lock").remove(&case_id);
    }

    /// Wakes on every new case and decision.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// What claims are checked against: the chain's validator history (so `run.settled` and
    /// `node.registered` are checked, not assumed), the TEE, x402 and ZK proof verifiers.
    pub fn anchors(&self, gw: &Gateway) -> TrustAnchors {
        let mut a = match &gw.chain {
            Some(chain) => {
                TrustAnchors::from_history(chain.validator_history(), self.allow_dev_root)
            }
            None => TrustAnchors {
                allow_dev_root: self.allow_dev_root,
                ..TrustAnchors::default()
            },
        };
        a.attestation = Some(&haca_tee::receipt_check::TEE_VERIFIER);
        a.payment = Some(&haca_pay::receipt_check::PAYMENT_VERIFIER);
        a.proof = Some(&haca_zk::receipt_check::ZK_VERIFIER);
        a
    }

    fn class(&self, name: &str) -> Result<&haca_review::CaseClass, ReviewError> {
        self.classes.get(name).ok_or_else(|| {
            ReviewError::not_found(
                "unknown_policy",
                format!(
                    "policy: no case class {name:?} on this node (known: {})",
                    self.classes.names().collect::<Vec<_>>().join(", ")
                ),
            )
            .param("policy")
        })
    }

    /// Opens a case over stored runs.
    pub async fn create_case(
        &self,
        gw: &Gateway,
        runs: Vec<String>,
        policy: Option<String>,
        by: &Principal,
    ) -> Result<(String, CaseState), ReviewError> {
        let policy = policy.unwrap_or_else(|| "default".into());
        self.class(&policy)?;
        if runs.is_empty() {
            return Err(
                ReviewError::invalid("invalid_field", "runs: name at least one run id")
                    .param("runs"),
            );
        }
        if runs.len() > MAX_CASE_RUNS {
            return Err(ReviewError::invalid(
                "invalid_field",
                format!(
                    "runs: {} run ids; a case holds at most {MAX_CASE_RUNS}",
                    runs.len()
                ),
            )
            .param("runs"));
        }
        let mut ids = Vec::with_capacity(runs.len());
        let mut seen = std::collections::HashSet::new();
        for (i, r) in runs.iter().enumerate() {
            let id: RunId = r.parse().map_err(|e| {
                ReviewError::invalid("invalid_run_id", format!("runs[{i}]: {e}"))
                    .param(format!("runs[{i}]"))
            })?;
            if !seen.insert(id) {
                return Err(ReviewError::invalid(
                    "invalid_field",
                    format!("runs[{i}]: run {id} is named twice"),
                )
                .param(format!("runs[{i}]")));
            }
            ids.push(id.to_string());
        }
        let id = format!("case_{}", random_hex(8));
        match gw
            .store
            .create_case(id.clone(), policy, now_ms(), by.id.clone(), ids.clone())
            .await
        {
            Ok(()) => {}
            Err(haca_store::StoreError::NotFound(run)) => {
                let i = ids.iter().position(|r| *r == run).unwrap_or(0);
                return Err(ReviewError::not_found(
                    "unknown_run",
                    format!("runs[{i}]: no run {run} on this node"),
                )
                .param(format!("runs[{i}]")));
            }
            Err(e) => return Err(e.into()),
        }
        self.changes.send_modify(|n| *n += 1);
        // Checking thousands of receipts is blocking work: tell the runtime.
        let state = tokio::task::block_in_place(|| {
            let loaded = self.load(gw, &id)?;
            Ok::<_, ReviewError>(self.state(gw, &loaded, now_ms()).0)
        })?;
        Ok((id, state))
    }

    /// The case and its runs' current receipts; 404 for an unknown case.
    pub fn load(&self, gw: &Gateway, id: &str) -> Result<LoadedCase, ReviewError> {
        let row = gw.store.case(id)?.ok_or_else(|| {
            ReviewError::not_found("unknown_case", format!("no case {id:?} on this node"))
        })?;
        let runs = gw
            .store
            .case_runs(id)?
            .into_iter()
            .map(|r| {
                let p = gw.current_receipt(&r)?;
                Ok((r, p))
            })
            .collect::<Result<Vec<_>, ReviewError>>()?;
        Ok(LoadedCase { row, runs })
    }

    /// Reads the case's evidence at `at_ms`: its evaluation, and its state (a decision's, once
    /// decided).
    pub fn state(&self, gw: &Gateway, case: &LoadedCase, at_ms: u64) -> (CaseState, Evaluation) {
        let policy = self
            .classes
            .get(&case.row.policy)
            .map(|c| c.policy.clone())
            // A class removed from the configuration after its cases were opened: read them
            // against no requirement beyond a signed answer, and say so in the view.
            .unwrap_or_else(|| haca_core::claims::Policy {
                name: case.row.policy.clone(),
                required: vec![Claim::ExecutionSigned],
            });
        let anchors = self.anchors(gw);
        let refs: Vec<(RunId, &ParsedReceipt)> = case
            .runs
            .iter()
            .map(|(_, p)| (p.receipt.run_id, p))
            .collect();
        let eval = haca_review::evaluate(&policy, &refs, &anchors, at_ms);
        let state = decided_state(&case.row).unwrap_or(eval.state);
        (state, eval)
    }

    /// Takes a decision: reads the evidence now, applies the rules, appends the decision with
    /// its snapshot to the transparency log, stores it, and announces a clearance.
    pub async fn decide(
        &self,
        gw: &Gateway,
        case_id: &str,
        input: DecisionInput,
        by: &Principal,
    ) -> Result<Value, ReviewError> {
        let _one_at_a_time = self.decide_lock.lock().await;
        let at = now_ms();
        let (case, eval) = tokio::task::block_in_place(|| {
            let case = self.load(gw, case_id)?;
            let (_, eval) = self.state(gw, &case, at);
            Ok::<_, ReviewError>((case, eval))
        })?;
        let decided = haca_review::decide(case_id, decided_state(&case.row), &eval, &input)
            .map_err(|refusal| ReviewError::Refused {
                missing: eval
                    .missing()
                    .into_iter()
                    .take(MISSING_DETAIL_LIMIT)
                    .map(|m| json!(m))
                    .collect(),
                refusal,
            })?;
        let snapshot = eval.snapshot(case_id);
        let head = gw.log.checkpoint().checkpoint;
        let entry = json!({
            "case": case_id,
            "policy": case.row.policy,
            "action": input.action.as_str(),
            "override": decided.overridden,
            "reason": input.reason,
            "by": by.id,
            "at": at,
            "state_before": eval.state,
            "state_after": decided.state,
            "snapshot": {
                "id": snapshot.id,
                "at": snapshot.at_ms,
                "state": snapshot.state,
                "log_size": head.size,
                "log_root": head.root,
                "runs": snapshot.runs,
            },
        });
        let appended = gw
            .log
            .append_entries(vec![LogEntry::new("decision", entry.clone())])
            .await
            .map_err(|e| {
                ReviewError::Internal(format!(
                    "transparency log: the decision was not appended: {e}"
                ))
            })?;
        let seq = gw
            .store
            .insert_decision(DecisionRow {
                case_id: case_id.to_owned(),
                seq: 0,
                action: input.action.as_str().into(),
                overridden: decided.overridden,
                reason: input.reason.clone(),
                decided_by: by.id.clone(),
                at,
                state_before: eval.state.as_str().into(),
                state_after: decided.state.as_str().into(),
                snapshot: entry["snapshot"].to_string(),
                log_index: appended.first_index,
            })
            .await
            .map_err(|e| match e {
                haca_store::StoreError::Conflict(m) => ReviewError::AlreadyDecided(m),
                e => e.into(),
            })?;
        self.changes.send_modify(|n| *n += 1);
        tracing::info!(
            case = case_id,
            action = input.action.as_str(),
            state = decided.state.as_str(),
            log_index = appended.first_index,
            "review decision by {}",
            by.id
        );
        if decided.state == CaseState::Cleared {
            if let Some(url) = self
                .classes
                .get(&case.row.policy)
                .and_then(|c| c.webhook.clone())
            {
                let payload = json!({
                    "type": "case.cleared",
                    "case": case_id,
                    "policy": case.row.policy,
                    "override": decided.overridden,
                    "reason": input.reason,
                    "decided_by": by.id,
                    "decided_at": at,
                    "snapshot": snapshot.id,
                    "log_index": appended.first_index,
                    "node": gw.key.node_id().to_string(),
                    "runs": case.runs.iter().map(|(r, _)| r.run_id.clone()).collect::<Vec<_>>(),
                });
                let mut payload = payload;
                let id = format!("msg_{}", random_hex(12));
                payload["id"] = json!(id);
                let delivery = haca_store::WebhookDelivery {
                    id,
                    case_id: case_id.to_owned(),
                    url,
                    attempts: 0,
                    status: "pending".into(),
                    last_error: None,
                    updated_at: now_ms(),
                    body: payload.to_string(),
                };
                // Queued durably before the clearance is acknowledged: a restart sends it.
                gw.store.record_webhook(delivery.clone()).await?;
                tokio::spawn(deliver_webhook(
                    gw.store.clone(),
                    self.http.clone(),
                    gw.key.clone(),
                    delivery,
                ));
            }
        }
        Ok(json!({
            "case": case_id,
            "seq": seq,
            "action": input.action.as_str(),
            "override": decided.overridden,
            "state": decided.state,
            "snapshot": snapshot.id,
            "log_index": appended.first_index,
            "log_size": appended.checkpoint.checkpoint.size,
        }))
    }

    /// The queue row of a case: its state now, counts and what it ran.
    pub fn queue_row(&self, gw: &Gateway, case: &LoadedCase, at: u64) -> Value {
        let (state, eval) = self.state(gw, case, at);
        let mut models: Vec<&str> = case.runs.iter().map(|(r, _)| r.model.as_str()).collect();
        models.sort();
        models.dedup();
        let mut blobs: Vec<&str> = case.runs.iter().map(|(r, _)| r.blob_id.as_str()).collect();
        blobs.sort();
        blobs.dedup();
        json!({
            "id": case.row.id,
            "policy": case.row.policy,
            "state": state,
            "created_at": case.row.created_at,
            "decided_at": case.row.decided_at,
            "runs": case.runs.len(),
            "models": models,
            "artifacts": blobs,
            "missing_claims": eval.missing_claims(),
        })
    }

    /// Everything the case page shows.
    pub fn view(&self, gw: &Gateway, case: &LoadedCase, at: u64) -> Result<Value, ReviewError> {
        let (state, eval) = self.state(gw, case, at);
        let class = self.classes.get(&case.row.policy);
        let head = gw.log.checkpoint().checkpoint;
        let snapshot = eval.snapshot(&case.row.id);
        let decisions = gw.store.decisions(&case.row.id)?;
        let required: Vec<String> = eval.required.iter().map(|c| c.to_string()).collect();

        let runs: Vec<Value> = case
            .runs
            .iter()
            .zip(&eval.runs)
            .map(|((r, p), claims)| {
                let b = &p.raw["boxes"];
                let boxes: serde_json::Map<String, Value> = BOX_NAMES
                    .iter()
                    .map(|n| (n.to_string(), b[n]["status"].clone()))
                    .collect();
                let required: Vec<Value> = eval
                    .required
                    .iter()
                    .filter_map(|c| claims.state_of(*c))
                    // A pass's reason is in the box panel; a run's row names only what is off.
                    .map(|o| match o.state {
                        ClaimState::Holds => json!({"claim": o.claim, "state": o.state}),
                        _ => json!({"claim": o.claim, "state": o.state, "detail": o.detail}),
                    })
                    .collect();
                json!({
                    "run_id": r.run_id,
                    "model": r.model,
                    "blob_id": r.blob_id,
                    "mode": r.mode,
                    "created_at": r.created_at,
                    "boxes": boxes,
                    "required": required,
                })
            })
            .collect();

        Ok(json!({
            "id": case.row.id,
            "policy": {
                "name": case.row.policy,
                "required": required,
                "configured": class.is_some(),
                "webhook": class.and_then(|c| c.webhook.as_ref()).is_some(),
            },
            "state": state,
            "evidence_state": eval.state,
            "at": at,
            "created_at": case.row.created_at,
            "created_by": case.row.created_by,
            "decided_at": case.row.decided_at,
            "missing_claims": eval.missing_claims(),
            "missing": eval.missing().into_iter().take(MISSING_DETAIL_LIMIT).collect::<Vec<_>>(),
            "snapshot": {"id": snapshot.id, "log_size": head.size, "log_root": head.root},
            "boxes": box_panels(case, &eval),
            "runs": runs,
            "chronology": self.chronology(case, &decisions),
            "decisions": decisions.iter().map(decision_json).collect::<Vec<_>>(),
            "webhooks": gw.store.webhooks(&case.row.id)?,
            "continuity": continuity_view(gw, case, &eval, at)?,
        }))
    }

    fn chronology(&self, case: &LoadedCase, decisions: &[DecisionRow]) -> Vec<Value> {
        let receipts: Vec<&ParsedReceipt> = case.runs.iter().map(|(_, p)| p).collect();
        let mut out: Vec<(u64, Value)> = chronology(&receipts)
            .into_iter()
            .map(|e| (e.first_at, json!(e)))
            .collect();
        out.insert(
            0,
            (
                case.row.created_at,
                json!({"event": "case opened", "first_at": case.row.created_at, "last_at": case.row.created_at, "by": case.row.created_by}),
            ),
        );
        for d in decisions {
            out.push((
                d.at,
                json!({
                    "event": if d.overridden { "decided (override)" } else { "decided" },
                    "first_at": d.at, "last_at": d.at,
                    "action": d.action, "state": d.state_after, "by": d.decided_by,
                }),
            ));
        }
        out.sort_by_key(|(at, _)| *at);
        out.into_iter().map(|(_, v)| v).collect()
    }
}

fn decided_state(row: &CaseRow) -> Option<CaseState> {
    row.decided.as_deref().and_then(|s| s.parse().ok())
}

fn decision_json(d: &DecisionRow) -> Value {
    json!({
        "seq": d.seq,
        "action": d.action,
        "override": d.overridden,
        "reason": d.reason,
        "by": d.decided_by,
        "at": d.at,
        "state_before": d.state_before,
        "state_after": d.state_after,
        "log_index": d.log_index,
        "snapshot": serde_json::from_str::<Value>(&d.snapshot).unwrap_or(Value::Null),
    })
}

/// One panel per box: what it proves and never proves, how many runs have it in each status,
/// and each of its claims' states across the runs. No panel speaks for another, and nothing
/// adds them up into one badge.
fn box_panels(case: &LoadedCase, eval: &Evaluation) -> Vec<Value> {
    let statuses: Vec<&Value> = case.runs.iter().map(|(_, p)| &p.raw["boxes"]).collect();
    haca_review::BOX_MEANINGS
        .iter()
        .map(|(name, proves, never)| {
            let mut counts: BTreeMap<String, usize> = BTreeMap::new();
            for b in &statuses {
                let s = b[name]["status"].as_str().unwrap_or("absent").to_owned();
                *counts.entry(s).or_default() += 1;
            }
            let mut claims: Vec<Value> = Vec::new();
            let mut names: Vec<Claim> = Vec::new();
            for r in &eval.runs {
                for o in &r.outcomes {
                    if o.claim.box_name() == *name && !names.contains(&o.claim) {
                        names.push(o.claim);
                    }
                }
            }
            for c in names {
                let mut by_state: BTreeMap<&str, usize> = BTreeMap::new();
                let mut detail = None;
                for r in &eval.runs {
                    if let Some(o) = r.state_of(c) {
                        *by_state.entry(state_key(o.state)).or_default() += 1;
                        // The first reason that is not a pass says the most.
                        let better = match &detail {
                            None => true,
                            Some((s, _)) => *s == ClaimState::Holds && o.state != ClaimState::Holds,
                        };
                        if better {
                            detail = Some((o.state, o.detail.clone()));
                        }
                    }
                }
                claims.push(json!({
                    "claim": c,
                    "required": eval.required.contains(&c),
                    "states": by_state,
                    "detail": detail.map(|(_, d)| d),
                }));
            }
            json!({"box": name, "proves": proves, "never_proves": never, "statuses": counts, "claims": claims})
        })
        .collect()
}

fn state_key(s: ClaimState) -> &'static str {
    match s {
        ClaimState::Holds => "holds",
        ClaimState::Fails => "fails",
        ClaimState::NotPresent => "not_present",
        ClaimState::Unchecked => "unchecked",
    }
}

/// The continuity views of a case: its labels' runs grouped by artifact, the memory rows each
/// run used (with the rows shared, stale, over age or not the payer's), and the turns of its
/// conversations with route changes marked.
fn continuity_view(
    gw: &Gateway,
    case: &LoadedCase,
    eval: &Evaluation,
    at: u64,
) -> Result<Value, ReviewError> {
    let mut labels: Vec<String> = case.runs.iter().map(|(r, _)| r.model.clone()).collect();
    labels.sort();
    labels.dedup();
    let uses: Vec<LabelUse> = gw
        .store
        .label_uses(&labels)?
        .into_iter()
        .map(|u| LabelUse {
            label: u.label,
            blob_id: u.blob_id,
            runs: u.runs,
            first_at: u.first_at,
            last_at: u.last_at,
        })
        .collect();
    let mut in_case: BTreeMap<String, u64> = BTreeMap::new();
    for (r, _) in &case.runs {
        *in_case.entry(r.blob_id.clone()).or_default() += 1;
    }
    let (groups, drift) = continuity::artifacts(&uses, &in_case);

    let memory_age = eval
        .required
        .iter()
        .find_map(|c| match c {
            Claim::MemoryFresh { max_age_s } => Some(*max_age_s),
            _ => None,
        })
        .unwrap_or(haca_review::case::DEFAULT_MEMORY_MAX_AGE_S);
    let receipts: Vec<&haca_core::receipt::Receipt> =
        case.runs.iter().map(|(_, p)| &p.receipt).collect();
    let memory = continuity::memory_view(&receipts, memory_age, at);

    let mut turns: Vec<Turn> = Vec::new();
    let case_runs: std::collections::HashSet<&str> =
        case.runs.iter().map(|(r, _)| r.run_id.as_str()).collect();
    let mut conversations: Vec<String> = Vec::new();
    // At most 20 conversations are shown (a case of thousands of chat runs would otherwise
    // carry every turn of every conversation).
    for (r, _) in &case.runs {
        if let Some(c) = gw.store.conversation_of_run(&r.run_id)? {
            if !conversations.contains(&c) {
                conversations.push(c);
            }
        }
        if conversations.len() >= 20 {
            break;
        }
    }
    for c in &conversations {
        for t in gw.store.chat_turns(c)? {
            turns.push(Turn {
                conversation: c.clone(),
                turn: t.turn,
                in_case: case_runs.contains(t.run_id.as_str()),
                run_id: t.run_id,
                created_at: t.created_at,
                provider: t.provider,
                path: t.path,
                privacy: t.privacy,
                changed: None,
            });
        }
    }
    continuity::mark_route_changes(&mut turns);
    Ok(json!({
        "artifacts": groups,
        "label_drift": drift,
        "memory": memory,
        "turns": turns,
    }))
}

/// A new review token and its stored row.
pub fn new_token(
    role: Role,
    label: Option<String>,
    by: &str,
) -> (String, haca_store::ReviewTokenRow) {
    let token = format!("{}{}", haca_review::TOKEN_PREFIX, random_hex(24));
    let row = haca_store::ReviewTokenRow {
        id: random_hex(8),
        token_hash: haca_review::token_hash(&token),
        role: role.as_str().into(),
        label,
        created_at: now_ms(),
        created_by: by.to_owned(),
        revoked_at: None,
    };
    (token, row)
}

/// Sends again every delivery a stopped node left `pending` (each with a new round of
/// attempts; the `webhook-id` stays the same, so a receiver can drop a duplicate).
pub fn resume_webhooks(review: &Review, gw: &Gateway) -> Result<usize, haca_store::StoreError> {
    let pending = gw.store.pending_webhooks()?;
    for d in &pending {
        tracing::info!(
            "webhook {} of case {}: sending again after a restart",
            d.id,
            d.case_id
        );
        tokio::spawn(deliver_webhook(
            gw.store.clone(),
            review.http.clone(),
            gw.key.clone(),
            d.clone(),
        ));
    }
    Ok(pending.len())
}

/// Posts a signed `case.cleared` event, retrying with doubling pauses, and records each
/// attempt; the receiver checks it with `haca_review::webhook::verify` and the node id.
async fn deliver_webhook(
    store: Arc<haca_store::Store>,
    http: reqwest::Client,
    key: haca_core::NodeKey,
    mut d: haca_store::WebhookDelivery,
) {
    let (id, case, url) = (d.id.clone(), d.case_id.clone(), d.url.clone());
    let last = d.attempts + WEBHOOK_ATTEMPTS;
    let mut pause = WEBHOOK_FIRST_PAUSE;
    for attempt in d.attempts + 1..=last {
        let ts = now_ms() / 1000;
        let sig = haca_review::webhook::sign(&key, &id, ts, d.body.as_bytes());
        let result = http
            .post(&url)
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", sig)
            .timeout(Duration::from_secs(10))
            .body(d.body.clone())
            .send()
            .await;
        let error = match result {
            Ok(r) if r.status().is_success() => None,
            Ok(r) => Some(format!("the receiver answered {}", r.status())),
            Err(e) => Some(format!("not delivered: {e}")),
        };
        d.attempts = attempt;
        d.status = match (&error, attempt) {
            (None, _) => "delivered",
            (Some(_), n) if n == last => "failed",
            _ => "pending",
        }
        .into();
        d.last_error = error.clone();
        d.updated_at = now_ms();
        if let Err(e) = store.record_webhook(d.clone()).await {
            tracing::error!("webhook {id} of case {case}: delivery not recorded: {e}");
        }
        match error {
            None => {
                tracing::info!("webhook {id}: case {case} cleared, delivered to {url}");
                return;
            }
            Some(e) => tracing::warn!("webhook {id} to {url}, attempt {attempt} of {last}: {e}"),
        }
        if attempt < last {
            tokio::time::sleep(pause).await;
            pause *= 2;
        }
    }
}

/// Parses a decision body's action (for errors that name the field).
pub fn parse_action(s: &str) -> Result<Action, ReviewError> {
    match s {
        "clear" => Ok(Action::Clear),
        "reject" => Ok(Action::Reject),
        "override" => Ok(Action::Override),
        other => Err(ReviewError::invalid(
            "invalid_field",
            format!("action: {other:?} is not one of clear, reject, override"),
        )
        .param("action")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sixteen_watchers_of_a_case_share_one_read_per_change() {
        let classes = haca_review::CaseClasses::new(Vec::new()).unwrap();
        let review = Arc::new(Review::new(classes, false));
        let reads = Arc::new(AtomicUsize::new(0));
        let counter = reads.clone();
        let read: ReadSummary = Arc::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            Ok("the case's summary".to_string())
        });
        let (heights, height) = tokio::sync::watch::channel(0u64);
        let mut views: Vec<CaseWatch> = (0..MAX_WATCHERS_PER_TOKEN)
            .map(|_| {
                review
                    .watch("case_1", "rt_a", Some(height.clone()), read.clone())
                    .unwrap()
            })
            .collect();
        let refused = review.watch("case_1", "rt_a", Some(height.clone()), read.clone());
        assert!(matches!(refused, Err(ReviewError::TooManyWatchers(_))));
        assert_eq!(
            reads.load(Ordering::SeqCst),
            0,
            "nothing is read before a change"
        );

        // One new block: one read, and every view gets its summary.
        heights.send(1).unwrap();
        for v in &mut views {
            tokio::time::timeout(Duration::from_secs(10), v.updates.changed())
                .await
                .expect("a view hears of the change")
                .unwrap();
            assert_eq!(v.updates.borrow().as_deref(), Some("the case's summary"));
        }
        assert_eq!(reads.load(Ordering::SeqCst), 1, "16 views, one read");

        // Closing a view frees its token's slot.
        views.pop();
        review
            .watch("case_1", "rt_a", Some(height.clone()), read.clone())
            .unwrap();
    }
}
