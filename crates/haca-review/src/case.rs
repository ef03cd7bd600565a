//! A case's state from its runs' evidence, the decisions it admits, and the snapshot each
//! decision records.

use haca_core::claims::{Checker, Claim, ClaimOutcome, ClaimState, Policy, TrustAnchors};
use haca_core::receipt::ParsedReceipt;
use haca_core::RunId;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;

/// Default ages of the freshness claims a case shows when its policy names none.
pub const DEFAULT_DATA_MAX_AGE_S: u64 = 300;
pub const DEFAULT_MEMORY_MAX_AGE_S: u64 = 30 * 86_400;

/// DESIGN.md's case states.
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug, Hash)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CaseState {
    /// A run's answer is not a signed answer, or a required claim fails: nothing to act on.
    Hold,
    /// Every answer is visible and signed; some required claims do not hold yet. The queue
    /// does not move.
    Provisional,
    /// Every required claim holds for every run.
    Ready,
    Cleared,
    Rejected,
}

impl CaseState {
    pub fn as_str(self) -> &'static str {
        match self {
            CaseState::Hold => "HOLD",
            CaseState::Provisional => "PROVISIONAL",
            CaseState::Ready => "READY",
            CaseState::Cleared => "CLEARED",
            CaseState::Rejected => "REJECTED",
        }
    }
    /// CLEARED and REJECTED: no decision follows.
    pub fn is_decided(self) -> bool {
        matches!(self, CaseState::Cleared | CaseState::Rejected)
    }
}

impl std::str::FromStr for CaseState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s.to_ascii_uppercase().as_str() {
            "HOLD" => CaseState::Hold,
            "PROVISIONAL" => CaseState::Provisional,
            "READY" => CaseState::Ready,
            "CLEARED" => CaseState::Cleared,
            "REJECTED" => CaseState::Rejected,
            _ => {
                return Err(format!(
                    "state {s:?}: expected HOLD, PROVISIONAL, READY, CLEARED or REJECTED"
                ))
            }
        })
    }
}

/// One run's claims at the reference time: every claim (for the panel's box panels), the
/// required ones marked by the evaluation's `required`.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct RunClaims {
    pub run_id: RunId,
    pub outcomes: Vec<ClaimOutcome>,
}

impl RunClaims {
    pub fn state_of(&self, claim: Claim) -> Option<&ClaimOutcome> {
        self.outcomes.iter().find(|o| o.claim == claim)
    }
}

/// A case's evidence read at one reference time.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct Evaluation {
    pub at_ms: u64,
    pub required: Vec<Claim>,
    /// The state the evidence gives (never CLEARED or REJECTED: those come from decisions).
    pub state: CaseState,
    pub runs: Vec<RunClaims>,
}

/// Every claim shown for a run: DESIGN.md's list, with the policy's own freshness ages.
fn shown_claims(policy: &Policy) -> Vec<Claim> {
    let mut data = DEFAULT_DATA_MAX_AGE_S;
    let mut memory = DEFAULT_MEMORY_MAX_AGE_S;
    for c in &policy.required {
        match c {
            Claim::DataFresh { max_age_s } => data = *max_age_s,
            Claim::MemoryFresh { max_age_s } => memory = *max_age_s,
            _ => {}
        }
    }
    let mut all = Claim::all(data, memory);
    // A policy may require a second age of the same claim; show it too.
    for c in &policy.required {
        if !all.contains(c) {
            all.push(*c);
        }
    }
    all
}

/// Reads a case's state off its runs' receipts at `at_ms` under `anchors`.
///
/// HOLD when some run's answer is not a signed answer (`execution.signed` does not hold) or
/// a required claim fails; READY when every required claim holds for every run; otherwise
/// PROVISIONAL (the answers are visible, evidence is still landing).
pub fn evaluate(
    policy: &Policy,
    runs: &[(RunId, &ParsedReceipt)],
    anchors: &TrustAnchors,
    at_ms: u64,
) -> Evaluation {
    let shown = shown_claims(policy);
    let mut hold = runs.is_empty();
    let mut ready = !runs.is_empty();
    let runs = runs
        .iter()
        .map(|(run_id, parsed)| {
            let checker = Checker::new(parsed, anchors, at_ms);
            let outcomes: Vec<ClaimOutcome> = shown.iter().map(|c| checker.check(*c)).collect();
            let state = |c: Claim| outcomes.iter().find(|o| o.claim == c).map(|o| o.state);
            if state(Claim::ExecutionSigned) != Some(ClaimState::Holds) {
                hold = true;
            }
            for c in &policy.required {
                match state(*c) {
                    Some(ClaimState::Holds) => {}
                    Some(ClaimState::Fails) => {
                        hold = true;
                        ready = false;
                    }
                    _ => ready = false,
                }
            }
            RunClaims {
                run_id: *run_id,
                outcomes,
            }
        })
        .collect();
    let state = if hold {
        CaseState::Hold
    } else if ready {
        CaseState::Ready
    } else {
        CaseState::Provisional
    };
    Evaluation {
        at_ms,
        required: policy.required.clone(),
        state,
        runs,
    }
}

/// A required claim that does not hold for one run.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct Missing {
    pub run_id: RunId,
    pub claim: Claim,
    pub state: ClaimState,
    pub detail: String,
}

impl Evaluation {
    /// The required claims that do not hold for at least one run, in the policy's order.
    pub fn missing_claims(&self) -> Vec<Claim> {
        self.required
            .iter()
            .copied()
            .filter(|c| {
                self.runs
                    .iter()
                    .any(|r| r.state_of(*c).is_none_or(|o| o.state != ClaimState::Holds))
            })
            .collect()
    }

    /// Each run's required claims that do not hold, with the reason.
    pub fn missing(&self) -> Vec<Missing> {
        let mut out = Vec::new();
        for r in &self.runs {
            for c in &self.required {
                if let Some(o) = r.state_of(*c) {
                    if o.state != ClaimState::Holds {
                        out.push(Missing {
                            run_id: r.run_id,
                            claim: *c,
                            state: o.state,
                            detail: o.detail.clone(),
                        });
                    }
                }
            }
        }
        out
    }

    /// What a decision reads: the state and each run's required claims' states. Its `id`
    /// is what a client sends back as `seen`.
    pub fn snapshot(&self, case_id: &str) -> Snapshot {
        let runs: Vec<SnapshotRun> = self
            .runs
            .iter()
            .map(|r| SnapshotRun {
                run: r.run_id,
                claims: self
                    .required
                    .iter()
                    .filter_map(|c| r.state_of(*c))
                    .map(|o| (o.claim.to_string(), o.state))
                    .collect(),
            })
            .collect();
        let body = json!({"case": case_id, "state": self.state, "runs": runs});
        let text = haca_core::canonical::to_string(&body).expect("snapshot is canonical JSON");
        Snapshot {
            id: haca_core::hash::sha256(text.as_bytes()).to_hex(),
            at_ms: self.at_ms,
            state: self.state,
            runs,
        }
    }
}

/// The evidence a decision read. The transparency log's size and root at that moment are
/// recorded beside it (the log is I/O, so the caller adds them).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// SHA-256 of the canonical JSON of `{case, state, runs}`: changes whenever a required
    /// claim of any run changes state.
    pub id: String,
    pub at_ms: u64,
    pub state: CaseState,
    pub runs: Vec<SnapshotRun>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SnapshotRun {
    pub run: RunId,
    pub claims: BTreeMap<String, ClaimState>,
}

/// What a reviewer asks for.
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Clear,
    Reject,
    /// Clear although required claims do not hold: needs a reason, stays marked.
    Override,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Clear => "clear",
            Action::Reject => "reject",
            Action::Override => "override",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct DecisionInput {
    pub action: Action,
    pub reason: Option<String>,
    /// The snapshot id the reviewer was looking at, when the client sends it.
    pub seen: Option<String>,
}

/// A decision taken: the case's new state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decided {
    pub state: CaseState,
    pub overridden: bool,
}

/// Why a decision is refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Refusal {
    #[error("the case is already {}; a decided case takes no further decision", .0.as_str())]
    AlreadyDecided(CaseState),
    #[error("seen: the case changed since snapshot {seen} (it is now {current}); reload it and decide on what it shows now")]
    Stale { seen: String, current: String },
    #[error("the case is {}, not READY: {} does not hold for every run; clear it once it does, or override with a reason", .state.as_str(), list(.missing))]
    NotReady {
        state: CaseState,
        missing: Vec<Claim>,
    },
    #[error("reason: an override needs a reason (it stays on record beside the missing claims)")]
    ReasonRequired,
}

fn list(claims: &[Claim]) -> String {
    claims
        .iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Applies DESIGN.md's rules to a decision on a case whose evidence reads `eval` and whose
/// last decision left it in `decided` (if any).
pub fn decide(
    case_id: &str,
    decided: Option<CaseState>,
    eval: &Evaluation,
    input: &DecisionInput,
) -> Result<Decided, Refusal> {
    if let Some(s) = decided.filter(|s| s.is_decided()) {
        return Err(Refusal::AlreadyDecided(s));
    }
    if let Some(seen) = &input.seen {
        let current = eval.snapshot(case_id).id;
        if *seen != current {
            return Err(Refusal::Stale {
                seen: seen.clone(),
                current,
            });
        }
    }
    match input.action {
        Action::Clear if eval.state == CaseState::Ready => Ok(Decided {
            state: CaseState::Cleared,
            overridden: false,
        }),
        Action::Clear => Err(Refusal::NotReady {
            state: eval.state,
            missing: eval.missing_claims(),
        }),
        Action::Reject => Ok(Decided {
            state: CaseState::Rejected,
            overridden: false,
        }),
        Action::Override => {
            if input.reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
                return Err(Refusal::ReasonRequired);
            }
            Ok(Decided {
                state: CaseState::Cleared,
                overridden: true,
            })
        }
    }
}

/// One step of a case's chronology: when something first (and last) happened across its runs.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct Event {
    pub event: &'static str,
    pub first_at: u64,
    pub last_at: u64,
    /// How many of the case's runs reached this step.
    pub runs: usize,
    pub of: usize,
}

/// The case's chronology from its receipts: answer shown, payment verified and settled,
/// attested, proved, settled; in time order. Steps no run reached are left out (the box
/// panels say `absent`).
pub fn chronology(receipts: &[&ParsedReceipt]) -> Vec<Event> {
    let mut steps: BTreeMap<&'static str, (u64, u64, usize)> = BTreeMap::new();
    let mut note = |step: &'static str, at: u64| {
        let e = steps.entry(step).or_insert((at, at, 0));
        e.0 = e.0.min(at);
        e.1 = e.1.max(at);
        e.2 += 1;
    };
    for p in receipts {
        let b = &p.receipt.boxes;
        if let Some(e) = &b.execution.evidence {
            note("answer shown", e.finished_at);
        }
        if let Some(pay) = &b.payment.evidence {
            note("payment verified", pay.verified_at);
            if let Some(s) = &pay.settlement {
                note("payment settled", s.settled_at);
            }
        }
        if let Some(first) = b.attestation.history.first() {
            note("attested", first.at);
        }
        if let Some(first) = b.proof.history.first() {
            note("proved", first.at);
        }
        if let Some(s) = &b.settlement.evidence {
            note("settled", s.header.time_ms);
        }
    }
    let of = receipts.len();
    let mut out: Vec<Event> = steps
        .into_iter()
        .map(|(event, (first_at, last_at, runs))| Event {
            event,
            first_at,
            last_at,
            runs,
            of,
        })
        .collect();
    out.sort_by_key(|e| (e.first_at, e.event));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use haca_core::keys::NodeKey;
    use haca_core::testing::vanilla_receipt;
    use haca_core::BlobId;

    fn policy(claims: &[&str]) -> Policy {
        Policy {
            name: "default".into(),
            required: claims.iter().map(|c| c.parse().unwrap()).collect(),
        }
    }

    fn signed_run(seed: u64) -> (RunId, ParsedReceipt) {
        let key = NodeKey::from_seed([3; 32]);
        let mut r = vanilla_receipt(&key, BlobId(haca_core::hash::sha256(b"m")), 1_000, seed);
        r.sign(&key).unwrap();
        (r.run_id, ParsedReceipt::from_receipt(r))
    }

    fn eval(p: &Policy, runs: &[(RunId, ParsedReceipt)]) -> Evaluation {
        let refs: Vec<_> = runs.iter().map(|(id, r)| (*id, r)).collect();
        evaluate(p, &refs, &TrustAnchors::default(), 5_000)
    }

    #[test]
    fn a_signed_answer_waiting_for_settlement_is_provisional_and_cannot_be_cleared() {
        let runs = [signed_run(1), signed_run(2)];
        let e = eval(&policy(&["execution.signed", "run.settled"]), &runs);
        assert_eq!(e.state, CaseState::Provisional);
        assert_eq!(e.missing_claims(), vec![Claim::RunSettled]);
        assert_eq!(e.missing().len(), 2);
        let clear = DecisionInput {
            action: Action::Clear,
            reason: None,
            seen: None,
        };
        match decide("c1", None, &e, &clear) {
            Err(Refusal::NotReady { state, missing }) => {
                assert_eq!(state, CaseState::Provisional);
                assert_eq!(missing, vec![Claim::RunSettled]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_required_claim_holding_makes_it_ready_and_clearable() {
        let runs = [signed_run(1)];
        let e = eval(&policy(&["execution.signed", "artifact.identified"]), &runs);
        assert_eq!(e.state, CaseState::Ready);
        let d = decide(
            "c1",
            None,
            &e,
            &DecisionInput {
                action: Action::Clear,
                reason: None,
                seen: Some(e.snapshot("c1").id),
            },
        )
        .unwrap();
        assert_eq!(d.state, CaseState::Cleared);
        assert!(!d.overridden);
    }

    #[test]
    fn an_unsigned_or_tampered_answer_holds_the_case() {
        let (id, mut parsed) = signed_run(1);
        // Tamper with the signed output hash: the signature no longer covers it.
        parsed
            .receipt
            .boxes
            .execution
            .evidence
            .as_mut()
            .unwrap()
            .output_hash = haca_core::hash::sha256(b"other");
        let parsed = ParsedReceipt::from_receipt(parsed.receipt);
        let e = eval(&policy(&["run.settled"]), &[(id, parsed)]);
        assert_eq!(e.state, CaseState::Hold);
        assert!(eval(&policy(&["run.settled"]), &[]).state == CaseState::Hold);
    }

    #[test]
    fn override_needs_a_reason_and_stays_marked() {
        let runs = [signed_run(1)];
        let e = eval(&policy(&["run.settled"]), &runs);
        let mut input = DecisionInput {
            action: Action::Override,
            reason: Some("  ".into()),
            seen: None,
        };
        assert_eq!(decide("c", None, &e, &input), Err(Refusal::ReasonRequired));
        input.reason = Some("settlement is stuck; customer waiting".into());
        assert_eq!(
            decide("c", None, &e, &input),
            Ok(Decided {
                state: CaseState::Cleared,
                overridden: true
            })
        );
    }

    #[test]
    fn a_stale_snapshot_and_a_decided_case_are_refused() {
        let runs = [signed_run(1)];
        let e = eval(&policy(&["execution.signed"]), &runs);
        let stale = DecisionInput {
            action: Action::Reject,
            reason: None,
            seen: Some("00".repeat(32)),
        };
        assert!(matches!(
            decide("c", None, &e, &stale),
            Err(Refusal::Stale { .. })
        ));
        let fresh = DecisionInput {
            seen: Some(e.snapshot("c").id),
            ..stale
        };
        assert!(decide("c", None, &e, &fresh).is_ok());
        assert_eq!(
            decide("c", Some(CaseState::Rejected), &e, &fresh),
            Err(Refusal::AlreadyDecided(CaseState::Rejected))
        );
    }

    #[test]
    fn the_snapshot_id_follows_the_required_claims_and_the_case() {
        let runs = [signed_run(1)];
        let a = eval(&policy(&["execution.signed", "run.settled"]), &runs);
        let b = eval(&policy(&["execution.signed"]), &runs);
        assert_ne!(a.snapshot("c").id, b.snapshot("c").id);
        assert_ne!(a.snapshot("c").id, a.snapshot("d").id);
        // The reference time alone does not make a snapshot stale.
        let refs: Vec<_> = runs.iter().map(|(id, r)| (*id, r)).collect();
        let later = evaluate(
            &policy(&["execution.signed", "run.settled"]),
            &refs,
            &TrustAnchors::default(),
            9_000,
        );
        assert_eq!(a.snapshot("c").id, later.snapshot("c").id);
    }

    #[test]
    fn chronology_orders_the_steps_the_runs_reached() {
        let runs = [signed_run(1), signed_run(2)];
        let refs: Vec<_> = runs.iter().map(|(_, r)| r).collect();
        let c = chronology(&refs);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].event, "answer shown");
        assert_eq!((c[0].runs, c[0].of), (2, 2));
    }

    #[test]
    fn states_parse_and_print() {
        for s in ["HOLD", "PROVISIONAL", "READY", "CLEARED", "REJECTED"] {
            assert_eq!(s.parse::<CaseState>().unwrap().as_str(), s);
        }
        assert_eq!("ready".parse::<CaseState>().unwrap(), CaseState::Ready);
        assert!("DONE".parse::<CaseState>().is_err());
    }
}
