//! Claims, their evaluation against a receipt at a reference time, and policies.
//!
//! A claim holds only when the evidence that proves it is present and checks out against trust
//! anchors the verifier was given, never against anything the receipt says about itself.

use crate::ids::NodeId;
use crate::receipt::{
    check_signature, tee_run_message, AttestationEvidence, BoxStatus, ExecutionEvidence,
    ParsedReceipt, PaymentEvidence, PrivacyPath, ProofEvidence, SignatureProblem,
};
use crate::settlement::ValidatorHistory;
use crate::BlobId;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

/// A claim a receipt's box can carry (DESIGN.md's table).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub enum Claim {
    ArtifactIdentified,
    ArtifactBound,
    RoutePrivate,
    ExecutionSigned,
    NodeRegistered,
    EnclaveGenuine,
    ExecutionCorrect,
    DataAttested,
    /// Every admitted data item is at most this many seconds old at the reference time.
    DataFresh {
        max_age_s: u64,
    },
    MemoryOwned,
    /// Every memory row used was validated at most this many seconds before the reference time.
    MemoryFresh {
        max_age_s: u64,
    },
    PaymentAuthorized,
    PaymentSettled,
    RunSettled,
}

impl Claim {
    /// Every claim, with the default ages `haca verify` uses for the freshness claims.
    pub fn all(data_max_age_s: u64, memory_max_age_s: u64) -> Vec<Claim> {
        use Claim::*;
        vec![
            ArtifactIdentified,
            ArtifactBound,
            RoutePrivate,
            ExecutionSigned,
            NodeRegistered,
            EnclaveGenuine,
            ExecutionCorrect,
            DataAttested,
            DataFresh {
                max_age_s: data_max_age_s,
            },
            MemoryOwned,
            MemoryFresh {
                max_age_s: memory_max_age_s,
            },
            PaymentAuthorized,
            PaymentSettled,
            RunSettled,
        ]
    }

    /// The box that carries this claim.
    pub fn box_name(self) -> &'static str {
        use Claim::*;
        match self {
            ArtifactIdentified | ArtifactBound => "artifact",
            RoutePrivate => "route",
            ExecutionSigned | NodeRegistered => "execution",
            EnclaveGenuine => "attestation",
            ExecutionCorrect => "proof",
            DataAttested | DataFresh { .. } => "data",
            MemoryOwned | MemoryFresh { .. } => "memory",
            PaymentAuthorized | PaymentSettled => "payment",
            RunSettled => "settlement",
        }
    }
}

impl fmt::Display for Claim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Claim::*;
        match self {
            ArtifactIdentified => f.write_str("artifact.identified"),
            ArtifactBound => f.write_str("artifact.bound"),
            RoutePrivate => f.write_str("route.private"),
            ExecutionSigned => f.write_str("execution.signed"),
            NodeRegistered => f.write_str("node.registered"),
            EnclaveGenuine => f.write_str("enclave.genuine"),
            ExecutionCorrect => f.write_str("execution.correct"),
            DataAttested => f.write_str("data.attested"),
            DataFresh { max_age_s } => write!(f, "data.fresh({})", format_duration(*max_age_s)),
            MemoryOwned => f.write_str("memory.owned"),
            MemoryFresh { max_age_s } => write!(f, "memory.fresh({})", format_duration(*max_age_s)),
            PaymentAuthorized => f.write_str("payment.authorized"),
            PaymentSettled => f.write_str("payment.settled"),
            RunSettled => f.write_str("run.settled"),
        }
    }
}

/// Writes seconds in the largest unit that divides them: `30d`, `5m`, `300s` -> `5m`.
/// `memory.owned`: every row the run used is the box owner's, sealed under that owner's key
/// (the box names the sealed row's hash), and the owner is who paid for the run.
fn memory_owned(
    m: &crate::receipt::MemoryEvidence,
    payment: Option<&crate::receipt::PaymentEvidence>,
) -> (ClaimState, String) {
    use ClaimState::*;
    let Some(owner) = m.owner.as_deref() else {
        return (Fails, "the memory box names no owner".into());
    };
    if let Some(r) = m.rows.iter().find(|r| !r.owner.eq_ignore_ascii_case(owner)) {
        return (
            Fails,
            format!(
                "row {} belongs to {}, not to the box's owner {owner}",
                r.id, r.owner
            ),
        );
    }
    if let Some(r) = m.rows.iter().find(|r| r.sealed_sha256.is_none()) {
        return (
            Fails,
            format!("row {} names no sealed row it was opened from", r.id),
        );
    }
    let Some(p) = payment else {
        return (
            Unchecked,
            format!(
                "{} rows of {owner}; no payment box names who ran it",
                m.rows.len()
            ),
        );
    };
    if !p.payer.eq_ignore_ascii_case(owner) {
        return (
            Fails,
            format!(
                "the memory is {owner}'s but the run was paid by {}",
                p.payer
            ),
        );
    }
    if m.rows.is_empty() {
        return (Holds, format!("no memory row of {owner} steered the run"));
    }
    (
        Holds,
        format!(
            "{} rows, each sealed under the key of {owner}, who paid for the run",
            m.rows.len()
        ),
    )
}

/// An item the run used after the `valid_until` its data node signed, in words.
fn used_after_valid_until(i: &crate::receipt::DataItem) -> Option<String> {
    let (until, age) = (i.valid_until?, i.age_ms?);
    let used = i.fetched_at.saturating_add(age);
    (used > until).then(|| {
        format!(
            "{} was used {} ms after its valid_until",
            i.label(),
            used - until
        )
    })
}

pub fn format_duration(s: u64) -> String {
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if s > 0 && s.is_multiple_of(size) {
            return format!("{}{unit}", s / size);
        }
    }
    format!("{s}s")
}

/// Reads `300s`, `5m`, `2h`, `30d` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<u64, ClaimParseError> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, 's')) => (&s[..i], 1),
        Some((i, 'm')) => (&s[..i], 60),
        Some((i, 'h')) => (&s[..i], 3_600),
        Some((i, 'd')) => (&s[..i], 86_400),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| {
            ClaimParseError(format!(
                "duration {s:?}: expected a number with s, m, h or d"
            ))
        })
}

/// A claim name that is not one of DESIGN.md's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown claim: {0}")]
pub struct ClaimParseError(pub String);

impl FromStr for Claim {
    type Err = ClaimParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        use Claim::*;
        let s = s.trim();
        if let Some(rest) = s
            .strip_prefix("data.fresh(")
            .and_then(|r| r.strip_suffix(')'))
        {
            return Ok(DataFresh {
                max_age_s: parse_duration(rest)?,
            });
        }
        if let Some(rest) = s
            .strip_prefix("memory.fresh(")
            .and_then(|r| r.strip_suffix(')'))
        {
            return Ok(MemoryFresh {
                max_age_s: parse_duration(rest)?,
            });
        }
        Ok(match s {
            "artifact.identified" => ArtifactIdentified,
            "artifact.bound" => ArtifactBound,
            "route.private" => RoutePrivate,
            "execution.signed" => ExecutionSigned,
            "node.registered" => NodeRegistered,
            "enclave.genuine" => EnclaveGenuine,
            "execution.correct" => ExecutionCorrect,
            "data.attested" => DataAttested,
            "memory.owned" => MemoryOwned,
            "payment.authorized" => PaymentAuthorized,
            "payment.settled" => PaymentSettled,
            "run.settled" => RunSettled,
            other => return Err(ClaimParseError(format!("{other:?} (known: artifact.identified, artifact.bound, route.private, execution.signed, node.registered, enclave.genuine, execution.correct, data.attested, data.fresh(AGE), memory.owned, memory.fresh(AGE), payment.authorized, payment.settled, run.settled)"))),
        })
    }
}

impl Serialize for Claim {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Claim {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// The state of one claim after checking.
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "snake_case")]
pub enum ClaimState {
    Holds,
    Fails,
    /// The box that would carry it is absent.
    NotPresent,
    /// It needs a trust anchor or a checker the verifier does not have.
    Unchecked,
}

impl ClaimState {
    pub fn as_str(self) -> &'static str {
        match self {
            ClaimState::Holds => "holds",
            ClaimState::Fails => "fails",
            ClaimState::NotPresent => "not present",
            ClaimState::Unchecked => "unchecked",
        }
    }
}

/// One claim's state with the reason, in plain words.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct ClaimOutcome {
    pub claim: Claim,
    pub state: ClaimState,
    pub detail: String,
}

/// What the verifier trusts. Never taken from the receipt itself.
#[derive(Clone, Debug, Default)]
pub struct TrustAnchors {
    /// Registered gateway node keys, from a genesis or validator-set history; `None` when the
    /// verifier was given none, which leaves `node.registered` unchecked.
    pub registered_nodes: Option<BTreeSet<NodeId>>,
    /// Accept a dev-enclave root (reported as `holds (dev root)`).
    pub allow_dev_root: bool,
    /// Validator sets of the chain that settles runs; `None` leaves `run.settled` unchecked.
    pub validators: Option<ValidatorHistory>,
    /// The TEE verifier (attestation documents are parsed outside this crate); `None` leaves
    /// `enclave.genuine` and attestation-based `artifact.bound` unchecked.
    pub attestation: Option<&'static dyn AttestationVerifier>,
    /// The x402 signature verifier (EIP-712 recovery lives outside this crate); `None` leaves
    /// `payment.authorized` unchecked.
    pub payment: Option<&'static dyn PaymentVerifier>,
    /// The ZK proof verifier (haca-zk); `None` leaves `execution.correct` and proof-based
    /// `artifact.bound` unchecked.
    pub proof: Option<&'static dyn ProofVerifier>,
    /// Data nodes whose signed items are trusted (`haca verify --data-node`); `None` leaves
    /// `data.attested` unchecked once every item's signature verifies.
    pub data_nodes: Option<BTreeSet<NodeId>>,
}

/// Verifies proof boxes for the claims checker (haca-zk implements it).
pub trait ProofVerifier: Send + Sync + fmt::Debug {
    /// Checks the box's proof against its verifying key, and that the proof's public input
    /// and output are the ones the execution box hashes. A description, or the reason.
    fn verify(
        &self,
        proof: &ProofEvidence,
        execution: &ExecutionEvidence,
    ) -> Result<String, String>;

    /// Whether the box's verifying key is the one the model blob `blob_id` gives. `Ok` with a
    /// description; `Err((NotPresent | Unchecked | Fails, reason))` otherwise (the verifier
    /// may not hold the model's bytes).
    fn bound(
        &self,
        proof: &ProofEvidence,
        blob_id: &BlobId,
    ) -> Result<String, (ClaimState, String)>;
}

/// Whether payment box `p` covers the run of `receipt`: the request and artifact it paid for
/// are the ones the run executed, and it was verified inside its authorization's window.
/// The signature is the [`PaymentVerifier`]'s to check.
pub fn payment_covers(receipt: &crate::Receipt, p: &PaymentEvidence) -> Result<(), String> {
    let b = &receipt.boxes;
    if let Some(e) = &b.execution.evidence {
        if e.request_hash != p.request_hash {
            return Err(format!(
                "the payment covered request {}, the run executed request {}",
                p.request_hash, e.request_hash
            ));
        }
    }
    if let (Some(paid), Some(a)) = (&p.model, &b.artifact.evidence) {
        if *paid != a.blob_id {
            return Err(format!(
                "the payment covered artifact {paid}, the run used {}",
                a.blob_id
            ));
        }
    }
    if let Some(auth) = &p.authorization {
        let verified_s = p.verified_at / 1000;
        if verified_s < auth.valid_after || verified_s >= auth.valid_before {
            return Err(format!(
                "verified at {verified_s} s, outside the authorization's window [{}, {})",
                auth.valid_after, auth.valid_before
            ));
        }
    }
    Ok(())
}

/// Verifies a payment box's authorization for the claims checker (haca-pay implements it).
pub trait PaymentVerifier: Send + Sync + fmt::Debug {
    /// Recovers who signed the box's authorization in the token's EIP-712 domain. `Ok` with a
    /// description when it is the box's payer, paying the box's amount to the box's payee;
    /// otherwise the reason.
    fn verify(&self, payment: &PaymentEvidence) -> Result<String, String>;
}

/// What a TEE verifier established about an attestation box's document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttestedKey {
    /// The Ed25519 key the document binds.
    pub key: NodeId,
    /// The document chains to a development root, not a hardware vendor's.
    pub dev: bool,
    /// The root's name, for reports.
    pub root: String,
}

/// Verifies attestation documents for the claims checker (haca-tee implements it).
pub trait AttestationVerifier: Send + Sync + fmt::Debug {
    /// Verifies the document in `evidence` at its own timestamp (an audit: leaf certificates
    /// live hours, receipts are checked for years), trusting hardware vendors' roots and, only
    /// with `allow_dev_root`, a development root. Returns the key it binds, or the reason.
    fn verify(
        &self,
        evidence: &AttestationEvidence,
        allow_dev_root: bool,
    ) -> Result<AttestedKey, String>;
}

impl TrustAnchors {
    /// Anchors from a genesis or validator-set history: its validators and gateway keys.
    pub fn from_history(history: ValidatorHistory, allow_dev_root: bool) -> Self {
        TrustAnchors {
            registered_nodes: Some(history.gateway_keys()),
            allow_dev_root,
            validators: Some(history),
            attestation: None,
            payment: None,
            proof: None,
            data_nodes: None,
        }
    }
}

/// Checks claims of one receipt. Reference time `at_ms` is unix milliseconds.
pub struct Checker<'a> {
    parsed: &'a ParsedReceipt,
    anchors: &'a TrustAnchors,
    at_ms: u64,
    signature: Result<NodeId, SignatureProblem>,
}

impl<'a> Checker<'a> {
    pub fn new(parsed: &'a ParsedReceipt, anchors: &'a TrustAnchors, at_ms: u64) -> Self {
        let signature = check_signature(parsed);
        Checker {
            parsed,
            anchors,
            at_ms,
            signature,
        }
    }

    /// The proof box, verified against the execution box: `execution.correct`.
    fn proved(&self) -> Result<String, (ClaimState, String)> {
        use ClaimState::*;
        let b = &self.parsed.receipt.boxes;
        let Some(p) = &b.proof.evidence else {
            return Err((NotPresent, "the proof box is absent".into()));
        };
        if p.proof_b64.is_none() {
            return Err((
                NotPresent,
                "the proof is still being made (the box is claimed, no proof is attached)".into(),
            ));
        }
        let Some(exec) = &b.execution.evidence else {
            return Err((
                Fails,
                "a proof without an execution box proves nothing about this run".into(),
            ));
        };
        let Some(v) = self.anchors.proof else {
            return Err((Unchecked, "no ZK verifier was given".into()));
        };
        v.verify(p, exec).map_err(|why| (Fails, why))
    }

    /// The attestation box's document, verified, binding the key the box names.
    fn attested(&self, att: &AttestationEvidence) -> Result<AttestedKey, (ClaimState, String)> {
        use ClaimState::*;
        let Some(verifier) = self.anchors.attestation else {
            return Err((Unchecked, "no TEE verifier in this check".into()));
        };
        let k = verifier
            .verify(att, self.anchors.allow_dev_root)
            .map_err(|e| (Fails, e))?;
        match att.enclave_key {
            Some(named) if named == k.key => Ok(k),
            Some(named) => Err((
                Fails,
                format!(
                    "the box names enclave key {named}, the document binds {}",
                    k.key
                ),
            )),
            None => Err((Fails, "the attestation box names no enclave key".into())),
        }
    }

    /// The enclave's signature over this run (artifact and execution hashes), under the
    /// attested key. Returns the key and whether its root is a dev root.
    fn enclave_run(
        &self,
        att: &AttestationEvidence,
    ) -> Result<(NodeId, bool), (ClaimState, String)> {
        use ClaimState::*;
        let k = self.attested(att)?;
        let b = &self.parsed.receipt.boxes;
        let (Some(a), Some(e)) = (&b.artifact.evidence, &b.execution.evidence) else {
            return Err((NotPresent, "the artifact or execution box is absent".into()));
        };
        let sig = att.run_signature.as_deref().ok_or((
            Fails,
            "the attestation box carries no run signature".to_string(),
        ))?;
        let msg = tee_run_message(
            &a.blob_id,
            &e.request_hash,
            &e.input_hash,
            &e.output_hash,
            e.finished_at,
        );
        crate::keys::verify(&k.key, &msg, sig).map_err(|err| {
            (
                Fails,
                format!(
                    "the enclave's run signature over blob {} and this run's hashes: {err}",
                    a.blob_id
                ),
            )
        })?;
        Ok((k.key, k.dev))
    }

    pub fn check(&self, claim: Claim) -> ClaimOutcome {
        let (state, detail) = self.evaluate(claim);
        ClaimOutcome {
            claim,
            state,
            detail,
        }
    }

    fn evaluate(&self, claim: Claim) -> (ClaimState, String) {
        use ClaimState::*;
        let b = &self.parsed.receipt.boxes;
        let signed = self
            .signature
            .as_ref()
            .map_err(|p| format!("not signed by the node: {p}"));
        match claim {
            Claim::ExecutionSigned => match &self.signature {
                Ok(signer) => (Holds, format!("signed by node {signer}")),
                Err(SignatureProblem::NoExecutionBox) => (NotPresent, "the execution box is absent".into()),
                Err(p) => (Fails, p.to_string()),
            },
            Claim::NodeRegistered => {
                let Some(exec) = &b.execution.evidence else {
                    return (NotPresent, "the execution box is absent".into());
                };
                if let Err(e) = signed {
                    return (Fails, e);
                }
                match &self.anchors.registered_nodes {
                    None => (Unchecked, "no validator set given (pass --validators FILE)".into()),
                    Some(set) if set.contains(&exec.signer) => (Holds, format!("node {} is a registered gateway", exec.signer)),
                    Some(_) => (Fails, format!("node {} is not in the given validator set's gateway registry", exec.signer)),
                }
            }
            Claim::ArtifactIdentified => match &b.artifact.evidence {
                None => (NotPresent, "the artifact box is absent".into()),
                Some(a) => match signed {
                    Err(e) => (Fails, e),
                    Ok(_) => {
                        let label = match (&a.label, a.revision) {
                            (Some(l), Some(r)) => format!(" as {l} revision {r}"),
                            (Some(l), None) => format!(" as {l}"),
                            _ => String::new(),
                        };
                        (Holds, format!("blob {}{label}, named by the signing node", a.blob_id))
                    }
                },
            },
            Claim::ArtifactBound => match (&b.artifact.evidence, &b.attestation.evidence, &b.proof.evidence) {
                (None, _, _) => (NotPresent, "the artifact box is absent".into()),
                (Some(_), None, None) => (NotPresent, "no attestation or proof binds the blob id".into()),
                (Some(a), Some(att), _) => match self.enclave_run(att) {
                    Ok((key, dev)) => (
                        Holds,
                        format!("the attested enclave key {key} signed blob {} with this run's hashes{}", a.blob_id, if dev { " (dev root)" } else { "" }),
                    ),
                    Err((state, why)) => (state, why),
                },
                (Some(a), None, Some(p)) => match (self.proved(), self.anchors.proof) {
                    (Err(e), _) => e,
                    (Ok(_), None) => (Unchecked, "no ZK verifier was given".into()),
                    (Ok(_), Some(v)) => match v.bound(p, &a.blob_id) {
                        Ok(why) => (Holds, why),
                        Err((state, why)) => (state, why),
                    },
                },
            },
            Claim::RoutePrivate => match &b.route.evidence {
                None => (NotPresent, "the route box is absent".into()),
                Some(r) if r.path == PrivacyPath::Direct => {
                    (NotPresent, format!("the request took the direct path to {}; the route box does not claim privacy", r.provider))
                }
                Some(r) if r.path == PrivacyPath::Ohttp && b.attestation.evidence.is_none() => (
                    Unchecked,
                    format!(
                        "the node signs that the request came sealed (OHTTP){}, so it never learned who asked; the receipt cannot prove what the relay saw",
                        r.relay.as_deref().map(|x| format!(" through relay {x}")).unwrap_or_default()
                    ),
                ),
                Some(_) if b.attestation.evidence.is_none() => (Fails, "a private path is named but no attestation backs it".into()),
                Some(_) => (Unchecked, "private paths are attested by the TEE verifier, not in this build".into()),
            },
            Claim::EnclaveGenuine => match &b.attestation.evidence {
                None => (NotPresent, "the attestation box is absent".into()),
                Some(att) => match self.attested(att) {
                    Ok(k) if k.dev => (Holds, format!("holds (dev root): {} document binding key {}, root {}", att.kind, k.key, k.root)),
                    Ok(k) => (Holds, format!("{} document binding key {}, chained to {}", att.kind, k.key, k.root)),
                    Err(e) => e,
                },
            },
            Claim::ExecutionCorrect => match self.proved() {
                Ok(why) => (Holds, why),
                Err(e) => e,
            },
            Claim::DataAttested => match &b.data.evidence {
                None => (NotPresent, "the data box is absent".into()),
                Some(d) => match signed {
                    Err(e) => (Fails, e),
                    Ok(_) => self.data_attested(d),
                },
            },
            Claim::DataFresh { max_age_s } => match &b.data.evidence {
                None => (NotPresent, "the data box is absent".into()),
                Some(d) => match d.items.iter().find_map(used_after_valid_until) {
                    Some(why) => (Fails, why),
                    None => self.fresh(d.items.iter().map(|i| (i.source.as_str(), i.fetched_at)), max_age_s, "fetched"),
                },
            },
            Claim::MemoryOwned => match &b.memory.evidence {
                None => (NotPresent, "the memory box is absent".into()),
                Some(m) => match signed {
                    Err(e) => (Fails, e),
                    Ok(_) => memory_owned(m, b.payment.evidence.as_ref()),
                },
            },
            Claim::MemoryFresh { max_age_s } => match &b.memory.evidence {
                None => (NotPresent, "the memory box is absent".into()),
                Some(m) => self.fresh(m.rows.iter().map(|r| (r.id.as_str(), r.last_validated_at)), max_age_s, "validated"),
            },
            Claim::PaymentAuthorized => match &b.payment.evidence {
                None => (NotPresent, "the payment box is absent".into()),
                Some(p) => self.payment_authorized(p),
            },
            Claim::PaymentSettled => match &b.payment.evidence {
                None => (NotPresent, "the payment box is absent".into()),
                Some(p) => self.payment_settled(p),
            },
            Claim::RunSettled => self.run_settled(),
        }
    }

    /// `run.settled`: the settlement box proves the receipt's digest in a round certified by
    /// the trusted validators.
    fn run_settled(&self) -> (ClaimState, String) {
        use ClaimState::*;
        match (
            &self.parsed.receipt.boxes.settlement.evidence,
            &self.anchors.validators,
        ) {
            (None, _) => (
                NotPresent,
                "the settlement box is absent: no round has committed this run".into(),
            ),
            (Some(_), None) => (
                Unchecked,
                "no validator set given (pass --validators FILE)".into(),
            ),
            (Some(ev), Some(history)) => {
                match ev.verify(&self.parsed.receipt.run_id, &self.parsed.digest(), history) {
                    Ok(detail) => (Holds, detail),
                    Err(e) => (Fails, e),
                }
            }
        }
    }

    /// `payment.settled`: an `exact` payment settles with its run. Validators settle a record
    /// only after checking its payment's signature and that its authorization never settled
    /// before (the chain's rule), and the round commits to the receipt digest, which covers
    /// the payment box; so the run's settlement proves the payment's. A `private` record
    /// shows validators only the digest, and an API-key charge has no authorization: both
    /// rest on the node's ledger alone.
    fn payment_settled(&self, p: &PaymentEvidence) -> (ClaimState, String) {
        use ClaimState::*;
        let Some(s) = &p.settlement else {
            return (
                Fails,
                "the payment had not settled when the node signed the receipt".into(),
            );
        };
        let node_word = |why: &str| {
            (
                Unchecked,
                format!(
                    "the node reports transaction {} settled at {} ms on its own ledger; {why}",
                    s.transaction, s.settled_at
                ),
            )
        };
        if p.scheme != "exact" || p.authorization.is_none() {
            return node_word("there is no payer authorization for validators to check");
        }
        if self.parsed.receipt.settlement_mode == Some(crate::settlement::SettlementMode::Private) {
            return node_word("the run settled privately, so validators saw only its digest");
        }
        match self.run_settled() {
            (Holds, detail) => (Holds, format!("settled with its run ({detail}); validators checked the authorization and spent its nonce")),
            (NotPresent, _) => (NotPresent, format!("the node's ledger settled it as transaction {}; the round that settles it on chain has not landed", s.transaction)),
            other => other,
        }
    }

    /// `payment.authorized`: the box covers this run (its request and artifact), was
    /// verified inside the authorization's window, and the payer's signature recovers.
    fn payment_authorized(&self, p: &PaymentEvidence) -> (ClaimState, String) {
        use ClaimState::*;
        if let Err(e) = &self.signature {
            return (Fails, format!("not signed by the node: {e}"));
        }
        if let Err(e) = payment_covers(&self.parsed.receipt, p) {
            return (Fails, e);
        }
        if p.scheme == "apikey" {
            return (Unchecked, format!("an API-key charge to account {}: the node's ledger debited it; there is no payer signature to check", p.payer));
        }
        if p.authorization.is_none() {
            return (Unchecked, "the box carries no payer signature".into());
        }
        match self.anchors.payment {
            None => (Unchecked, "no x402 verifier in this check".into()),
            Some(v) => match v.verify(p) {
                Ok(detail) => (Holds, detail),
                Err(e) => (Fails, e),
            },
        }
    }

    /// `data.attested`: every item's id and data-node signature verify, and its signer is a
    /// trusted data node.
    fn data_attested(&self, d: &crate::receipt::DataEvidence) -> (ClaimState, String) {
        use ClaimState::*;
        if d.items.is_empty() {
            return (NotPresent, "the box lists no items".into());
        }
        for item in &d.items {
            if let Err(e) = item.verify() {
                return (Fails, format!("{}: {e}", item.label()));
            }
        }
        let signers: BTreeSet<NodeId> = d.items.iter().map(|i| i.signer).collect();
        let names = signers
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        match &self.anchors.data_nodes {
            None => (
                Unchecked,
                format!(
                    "{} item(s) signed by data node(s) {names}; no trusted data nodes given (pass --data-node NODE_ID)",
                    d.items.len()
                ),
            ),
            Some(trusted) => match d.items.iter().find(|i| !trusted.contains(&i.signer)) {
                Some(i) => (
                    Fails,
                    format!("{} is signed by {}, which is not a trusted data node", i.label(), i.signer),
                ),
                None => (
                    Holds,
                    format!("{} item(s) signed by trusted data node(s) {names}", d.items.len()),
                ),
            },
        }
    }

    fn fresh<'i>(
        &self,
        items: impl Iterator<Item = (&'i str, u64)>,
        max_age_s: u64,
        verb: &str,
    ) -> (ClaimState, String) {
        if let Err(e) = &self.signature {
            return (ClaimState::Fails, format!("not signed by the node: {e}"));
        }
        let limit_ms = max_age_s.saturating_mul(1000);
        let mut oldest: Option<(&str, u64)> = None;
        for (name, t) in items {
            let age = self.at_ms.saturating_sub(t);
            if oldest.is_none_or(|(_, a)| age > a) {
                oldest = Some((name, age));
            }
        }
        match oldest {
            None => (ClaimState::NotPresent, "the box lists no items".into()),
            Some((name, age)) if age > limit_ms => (
                ClaimState::Fails,
                format!(
                    "{name} was {verb} {} ago, over the limit {}",
                    format_duration(age / 1000),
                    format_duration(max_age_s)
                ),
            ),
            Some((_, age)) => (
                ClaimState::Holds,
                format!(
                    "oldest {verb} {} before the reference time",
                    format_duration(age / 1000)
                ),
            ),
        }
    }

    /// Inconsistencies between stored box statuses and their evidence, in plain words.
    pub fn problems(&self) -> Vec<String> {
        let raw = &self.parsed.raw;
        let mut out = Vec::new();
        let settled_backed = self.parsed.receipt.boxes.settlement.evidence.is_some();
        for name in crate::receipt::BOX_NAMES {
            let bx = &raw["boxes"][name];
            let status = bx["status"].as_str().unwrap_or("absent");
            let has_evidence = bx.get("evidence").is_some_and(|e| !e.is_null());
            if status == BoxStatus::Absent.as_str() && has_evidence {
                out.push(format!(
                    "boxes.{name}: status says absent but the box carries evidence"
                ));
            }
            if status != BoxStatus::Absent.as_str() && !has_evidence {
                out.push(format!(
                    "boxes.{name}: status says {status} but the box carries no evidence"
                ));
            }
            if (status == BoxStatus::Verified.as_str() || status == BoxStatus::Settled.as_str())
                && !settled_backed
            {
                out.push(format!(
                    "boxes.{name}: status says {status} but no settlement evidence backs it"
                ));
            }
        }
        out
    }
}

/// A named set of required claims (a case class's policy).
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct Policy {
    pub name: String,
    pub required: Vec<Claim>,
}

/// A policy evaluated against one receipt at one reference time.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct PolicyReport {
    pub policy: String,
    pub at_ms: u64,
    pub outcomes: Vec<ClaimOutcome>,
}

impl PolicyReport {
    /// The required claims that do not hold.
    pub fn missing(&self) -> Vec<Claim> {
        self.outcomes
            .iter()
            .filter(|o| o.state != ClaimState::Holds)
            .map(|o| o.claim)
            .collect()
    }
    pub fn satisfied(&self) -> bool {
        self.outcomes.iter().all(|o| o.state == ClaimState::Holds)
    }
}

impl Policy {
    /// Evaluates every required claim.
    ///
    /// ```
    /// use haca_core::{claims::*, receipt::*, ids::*, keys::NodeKey, hash::sha256};
    /// let key = NodeKey::from_seed([7; 32]);
    /// let mut r = Receipt::new(RunId(sha256(b"run")), 1_000);
    /// r.boxes.execution = EvidenceBox::with(ExecutionEvidence {
    ///     mode: ExecMode::Vanilla, runtime: "test".into(), request_hash: sha256(b"q"),
    ///     input_hash: sha256(b"i"), output_hash: sha256(b"o"), signer: key.node_id(),
    ///     started_at: 1_000, finished_at: 1_001, signature: None }, BoxStatus::Claimed, 1_001);
    /// r.sign(&key).unwrap();
    /// let policy = Policy { name: "default".into(), required: vec!["execution.signed".parse().unwrap(), Claim::RunSettled] };
    /// let report = policy.evaluate(&ParsedReceipt::from_receipt(r), &TrustAnchors::default(), 2_000);
    /// assert_eq!(report.missing(), vec![Claim::RunSettled]);
    /// ```
    pub fn evaluate(
        &self,
        parsed: &ParsedReceipt,
        anchors: &TrustAnchors,
        at_ms: u64,
    ) -> PolicyReport {
        let checker = Checker::new(parsed, anchors, at_ms);
        PolicyReport {
            policy: self.name.clone(),
            at_ms,
            outcomes: self.required.iter().map(|c| checker.check(*c)).collect(),
        }
    }
}
