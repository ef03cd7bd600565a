//! AWS Nitro Enclaves attestation documents: parsing ([`parse`]) and verification
//! ([`verify`]) against a [`Policy`], at a reference time the caller gives (no clock here).
//!
//! Hard failures (the document is not genuine, or not valid at the reference time) are
//! errors: malformed input, untrusted root, broken chain, bad COSE signature, a certificate
//! outside its validity, a stale or future-dated document. What the caller expects of a
//! genuine document (PCR values, a key binding, a nonce) is reported as [`Check`]s in the
//! [`VerifiedDocument`], which the caller can require with
//! [`VerifiedDocument::require_checks`] (or use [`verify_strict`]).

mod binding;
mod chain;
mod parse;
mod roots;

use std::collections::BTreeMap;

use haca_core::Digest;
use serde::Serialize;

pub use binding::{KeyBinding, NitridingUserData, MULTIHASH_SHA2_256, NITRIDING_USER_DATA_LEN};
pub use parse::{
    parse, sig_structure, AttestationDocument, COSE_ALG_ES384, COSE_SIGN1_TAG, ES384_SIGNATURE_LEN,
    MAX_DOCUMENT_LEN,
};
pub use roots::{TrustedRoot, AWS_NITRO_ROOT_G1_DER, AWS_NITRO_ROOT_G1_SHA256};

use crate::NitroError;
use chain::format_ms;

/// How far a document's timestamp may lie after the reference time (clock skew between the
/// Nitro hypervisor and the verifier).
pub const DEFAULT_MAX_FUTURE_SKEW_MS: u64 = 60_000;
/// A sensible maximum age for a live check: five minutes.
pub const DEFAULT_MAX_AGE_MS: u64 = 5 * 60_000;

/// The instant at which certificates and freshness are evaluated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReferenceTime {
    /// Unix milliseconds (now, a decision time, or `--at`).
    At(u64),
    /// Audit an old document: evaluate certificates at the document's own timestamp (leaf
    /// certificates live about three hours). Freshness is not evaluated and is reported so.
    AuditAtOwnTime,
}

/// What a verification requires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub at: ReferenceTime,
    /// Maximum age of the document at the reference time (ignored in audit mode).
    pub max_age_ms: u64,
    /// How far the timestamp may lie after the reference time.
    pub max_future_skew_ms: u64,
    /// Roots the chain may end in; by default only the AWS Nitro Enclaves Root G1.
    pub trusted_roots: Vec<TrustedRoot>,
    /// PCR index -> expected value; reported as the `pcrs` check.
    pub expected_pcrs: Vec<(u8, Vec<u8>)>,
    /// How the enclave's key must be bound; reported as the `key_binding` check.
    pub require_binding: Option<KeyBinding>,
    /// The nonce the verifier sent; reported as the `nonce` check.
    pub expected_nonce: Option<Vec<u8>>,
}

impl Policy {
    /// A live check at `at_ms` (unix ms) with the given maximum age, trusting the AWS root.
    pub fn at(at_ms: u64, max_age_ms: u64) -> Self {
        Policy {
            at: ReferenceTime::At(at_ms),
            max_age_ms,
            max_future_skew_ms: DEFAULT_MAX_FUTURE_SKEW_MS,
            trusted_roots: vec![TrustedRoot::aws_nitro_g1()],
            expected_pcrs: Vec::new(),
            require_binding: None,
            expected_nonce: None,
        }
    }

    /// An audit of an old document at its own timestamp, trusting the AWS root.
    pub fn audit() -> Self {
        Policy {
            at: ReferenceTime::AuditAtOwnTime,
            ..Policy::at(0, DEFAULT_MAX_AGE_MS)
        }
    }

    /// Trusts only these roots (for example a dev CA, instead of AWS).
    pub fn with_roots(mut self, roots: Vec<TrustedRoot>) -> Self {
        self.trusted_roots = roots;
        self
    }

    pub fn expect_pcr(mut self, index: u8, value: impl Into<Vec<u8>>) -> Self {
        self.expected_pcrs.push((index, value.into()));
        self
    }

    pub fn require_binding(mut self, binding: KeyBinding) -> Self {
        self.require_binding = Some(binding);
        self
    }

    pub fn expect_nonce(mut self, nonce: impl Into<Vec<u8>>) -> Self {
        self.expected_nonce = Some(nonce.into());
        self
    }
}

/// One check and its outcome. Names: `structure`, `root`, `certificate_chain`, `validity`,
/// `signature`, `freshness` (always present and passed in a returned document: their failure
/// is an error), and `pcrs`, `key_binding`, `nonce` (present only when the policy asks; they
/// may fail).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

/// A genuine attestation document: signed by a certificate that chains to a trusted root and
/// was valid at the reference time, and fresh enough. The caller-expected checks are in
/// `checks`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VerifiedDocument {
    pub module_id: String,
    /// Unix milliseconds.
    pub timestamp_ms: u64,
    /// PCR index -> lowercase hex.
    pub pcrs: BTreeMap<u8, String>,
    #[serde(with = "hex_opt")]
    pub public_key: Option<Vec<u8>>,
    #[serde(with = "hex_opt")]
    pub user_data: Option<Vec<u8>>,
    #[serde(with = "hex_opt")]
    pub nonce: Option<Vec<u8>>,
    /// The digests of nitriding-style `user_data`, when it has that form.
    pub nitriding: Option<NitridingUserData>,
    /// The trusted root the chain ended in (label, SHA-256, dev or not).
    pub root: TrustedRoot,
    /// SHA-256 of the root certificate's DER, lowercase hex.
    pub root_fingerprint: String,
    /// SHA-256 of the document bytes as given.
    pub document_digest: Digest,
    /// Unix milliseconds at which certificates (and freshness) were evaluated.
    pub evaluated_at_ms: u64,
    /// True when verified at the document's own timestamp ([`ReferenceTime::AuditAtOwnTime`]).
    pub audit: bool,
    pub checks: Vec<Check>,
}

impl Check {
    /// The check named `name` in `checks`.
    pub fn named<'a>(checks: &'a [Check], name: &str) -> Option<&'a Check> {
        checks.iter().find(|c| c.name == name)
    }

    /// The first check in `checks` that did not pass.
    pub fn first_failed(checks: &[Check]) -> Option<&Check> {
        checks.iter().find(|c| !c.passed)
    }
}

impl VerifiedDocument {
    pub fn check(&self, name: &str) -> Option<&Check> {
        Check::named(&self.checks, name)
    }

    pub fn all_checks_passed(&self) -> bool {
        Check::first_failed(&self.checks).is_none()
    }

    /// `Err(CheckFailed)` for the first check that did not pass.
    pub fn require_checks(&self) -> Result<(), NitroError> {
        match Check::first_failed(&self.checks) {
            None => Ok(()),
            Some(c) => Err(NitroError::CheckFailed {
                check: c.name.clone(),
                detail: c.detail.clone(),
            }),
        }
    }
}

/// Verifies an attestation document against a policy. Errors are hard failures; the checks
/// the caller asked for (PCRs, key binding, nonce) are in the result, passed or not.
///
/// Order: structure, root pin, chain, certificate validity at the reference time, COSE
/// signature, the document timestamp within the leaf's validity, freshness, then the
/// caller's checks.
pub fn verify(doc_bytes: &[u8], policy: &Policy) -> Result<VerifiedDocument, NitroError> {
    let doc = parse(doc_bytes)?;
    let mut checks = vec![pass(
        "structure",
        format!(
            "COSE_Sign1 ES384; payload fields well-formed; {} PCRs ({}); cabundle of {}",
            doc.pcrs.len(),
            doc.digest,
            doc.cabundle.len()
        ),
    )];

    let (at_ms, audit) = match policy.at {
        ReferenceTime::At(ms) => (ms, false),
        ReferenceTime::AuditAtOwnTime => (doc.timestamp_ms, true),
    };

    let chain = chain::verify_chain(&doc, &policy.trusted_roots, at_ms)?;
    checks.push(pass(
        "root",
        format!(
            "cabundle[0] is the trusted root {}{} (SHA-256 {})",
            chain.root.label,
            if chain.root.dev { ", a dev root" } else { "" },
            chain.root.fingerprint_hex()
        ),
    ));
    checks.push(pass(
        "certificate_chain",
        format!(
            "{} certificates, leaf to root; every link's issuer and ecdsa-with-SHA384 signature verified",
            chain.length
        ),
    ));
    checks.push(pass(
        "validity",
        format!(
            "every certificate is valid at {}{}",
            format_ms(i128::from(at_ms)),
            if audit {
                " (the document's own time: audit mode)"
            } else {
                ""
            }
        ),
    ));

    verify_cose_signature(&doc, &chain.leaf_point)?;
    checks.push(pass(
        "signature",
        "the COSE ES384 signature verifies with the leaf certificate's P-384 key",
    ));

    let ts = i128::from(doc.timestamp_ms);
    if ts < chain.leaf_not_before_ms || ts > chain.leaf_not_after_ms {
        return Err(NitroError::TimestampOutsideCertificate {
            timestamp: format_ms(ts),
            not_before: format_ms(chain.leaf_not_before_ms),
            not_after: format_ms(chain.leaf_not_after_ms),
        });
    }

    checks.push(check_freshness(doc.timestamp_ms, at_ms, audit, policy)?);

    if !policy.expected_pcrs.is_empty() {
        checks.push(check_pcrs(&doc, &policy.expected_pcrs));
    }
    if let Some(binding) = &policy.require_binding {
        let (passed, detail) =
            match binding.evaluate(doc.public_key.as_deref(), doc.user_data.as_deref()) {
                Ok(d) => (true, d),
                Err(d) => (false, d),
            };
        checks.push(Check {
            name: "key_binding".into(),
            passed,
            detail,
        });
    }
    if let Some(expected) = &policy.expected_nonce {
        checks.push(match &doc.nonce {
            Some(n) if n == expected => pass("nonce", format!("nonce {} matches", hex::encode(n))),
            Some(n) => fail(
                "nonce",
                format!(
                    "nonce {} differs from the expected {}",
                    hex::encode(n),
                    hex::encode(expected)
                ),
            ),
            None => fail("nonce", "the document carries no nonce"),
        });
    }

    let nitriding = doc
        .user_data
        .as_deref()
        .and_then(|u| NitridingUserData::parse(u).ok());
    let root_fingerprint = chain.root.fingerprint_hex();
    Ok(VerifiedDocument {
        pcrs: doc.pcrs_hex(),
        module_id: doc.module_id,
        timestamp_ms: doc.timestamp_ms,
        public_key: doc.public_key,
        user_data: doc.user_data,
        nonce: doc.nonce,
        nitriding,
        root: chain.root,
        root_fingerprint,
        document_digest: haca_core::sha256(doc_bytes),
        evaluated_at_ms: at_ms,
        audit,
        checks,
    })
}

/// [`verify`], then every check required: a failed PCR, binding or nonce check is an error.
pub fn verify_strict(doc_bytes: &[u8], policy: &Policy) -> Result<VerifiedDocument, NitroError> {
    let verified = verify(doc_bytes, policy)?;
    verified.require_checks()?;
    Ok(verified)
}

fn verify_cose_signature(doc: &AttestationDocument, leaf_point: &[u8]) -> Result<(), NitroError> {
    use ring::signature::{UnparsedPublicKey, ECDSA_P384_SHA384_FIXED};
    UnparsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, leaf_point)
        .verify(&doc.signed_bytes(), &doc.signature)
        .map_err(|_| NitroError::BadSignature)
}

fn check_freshness(
    timestamp_ms: u64,
    at_ms: u64,
    audit: bool,
    policy: &Policy,
) -> Result<Check, NitroError> {
    if audit {
        return Ok(pass(
            "freshness",
            format!(
                "audit mode: verified at the document's own time {}; its age today is not evaluated",
                format_ms(i128::from(timestamp_ms))
            ),
        ));
    }
    if timestamp_ms > at_ms {
        let ahead_ms = timestamp_ms - at_ms;
        if ahead_ms > policy.max_future_skew_ms {
            return Err(NitroError::FromTheFuture {
                ahead_ms,
                max_skew_ms: policy.max_future_skew_ms,
                at: format_ms(i128::from(at_ms)),
            });
        }
        return Ok(pass(
            "freshness",
            format!(
                "dated {ahead_ms} ms after the reference time, within the allowed skew of {} ms",
                policy.max_future_skew_ms
            ),
        ));
    }
    let age_ms = at_ms - timestamp_ms;
    if age_ms > policy.max_age_ms {
        return Err(NitroError::Stale {
            age_ms,
            max_age_ms: policy.max_age_ms,
            at: format_ms(i128::from(at_ms)),
        });
    }
    Ok(pass(
        "freshness",
        format!(
            "{age_ms} ms old at {}; the maximum age is {} ms",
            format_ms(i128::from(at_ms)),
            policy.max_age_ms
        ),
    ))
}

fn check_pcrs(doc: &AttestationDocument, expected: &[(u8, Vec<u8>)]) -> Check {
    let mut problems = Vec::new();
    for (index, want) in expected {
        match doc.pcrs.get(index) {
            None => problems.push(format!("PCR{index} is absent")),
            Some(got) if got == want => {}
            Some(got) => problems.push(format!(
                "PCR{index} is {}, expected {}",
                hex::encode(got),
                hex::encode(want)
            )),
        }
    }
    let indexes: Vec<String> = expected.iter().map(|(i, _)| format!("PCR{i}")).collect();
    if problems.is_empty() {
        pass("pcrs", format!("{} match", indexes.join(", ")))
    } else {
        fail("pcrs", problems.join("; "))
    }
}

fn pass(name: &str, detail: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        passed: true,
        detail: detail.into(),
    }
}

fn fail(name: &str, detail: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        passed: false,
        detail: detail.into(),
    }
}

mod hex_opt {
    pub fn serialize<S: serde::Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_some(&hex::encode(b)),
            None => s.serialize_none(),
        }
    }
}
