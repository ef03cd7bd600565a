//! Intel SGX and TDX quotes (DCAP, ECDSA attestation), verified offline with the
//! [`dcap_qvl`] crate against collateral the caller supplies (TCB info, QE identity, CRLs and
//! their signing chains, as a PCCS serves them). Pure: no I/O, no clock; the reference time
//! is an argument, in unix seconds.
//!
//! [`verify`] refuses a quote that is not genuine or not appraisable at the reference time:
//! malformed or truncated input, a quote signature or QE report that does not verify, a PCK
//! chain that does not end in Intel's SGX Root CA (dcap-qvl pins it) or is revoked,
//! collateral not signed by Intel, collateral for another platform, collateral outside its
//! validity at the reference time, a debug enclave or TD, a revoked TCB, and a TCB status the
//! [`DcapPolicy`] does not allow. By default only `UpToDate` is allowed: dcap-qvl's own
//! one-shot `verify` accepts any non-revoked status (OutOfDate included), so this module
//! applies the status policy itself. What the caller expects of a genuine quote (MRENCLAVE,
//! MRSIGNER, MRTD, report data) is reported as [`Check`]s, which
//! [`VerifiedQuote::require_checks`] (or [`verify_strict`]) turns into errors.
//!
//! Trust anchor: the Intel SGX Root CA certificate compiled into dcap-qvl 0.7 (its
//! `TrustedRootCA.der`); [`VerifiedQuote::root_key_id`] reports the SHA-384 of its public key.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use dcap_qvl::quote::{Quote, Report};
use dcap_qvl::verify::QuoteVerifier;
use haca_core::Digest;
use serde::{Serialize, Serializer};

pub use crate::nitro::Check;
/// The collateral of one quote, as dcap-qvl (and a PCCS, through dcap-qvl's client) gives it;
/// read its JSON with [`parse_collateral`].
pub use dcap_qvl::QuoteCollateralV3 as QuoteCollateral;

/// No DCAP quote comes near this (they are about 5 KiB with the PCK chain embedded).
pub const MAX_QUOTE_LEN: usize = 1 << 20;
/// The limit on a collateral JSON file (real ones are 15 to 25 KiB).
pub const MAX_COLLATERAL_LEN: usize = 4 << 20;

/// A quote's TCB status, as Intel's TCB info and QE identity grade the platform. `Revoked`
/// is not here: a revoked TCB is always an error ([`DcapError::TcbRevoked`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TcbStatus {
    UpToDate,
    SwHardeningNeeded,
    ConfigurationNeeded,
    ConfigurationAndSwHardeningNeeded,
    OutOfDate,
    OutOfDateConfigurationNeeded,
    /// TDX 1.5: launched on an out-of-date TCB, running on a current one.
    TdRelaunchAdvised,
    TdRelaunchAdvisedConfigurationNeeded,
}

impl TcbStatus {
    pub const ALL: [TcbStatus; 8] = [
        TcbStatus::UpToDate,
        TcbStatus::SwHardeningNeeded,
        TcbStatus::ConfigurationNeeded,
        TcbStatus::ConfigurationAndSwHardeningNeeded,
        TcbStatus::OutOfDate,
        TcbStatus::OutOfDateConfigurationNeeded,
        TcbStatus::TdRelaunchAdvised,
        TcbStatus::TdRelaunchAdvisedConfigurationNeeded,
    ];

    /// Intel's name, as in TCB info JSON (`SWHardeningNeeded`, ...).
    pub fn intel_name(self) -> &'static str {
        match self {
            TcbStatus::UpToDate => "UpToDate",
            TcbStatus::SwHardeningNeeded => "SWHardeningNeeded",
            TcbStatus::ConfigurationNeeded => "ConfigurationNeeded",
            TcbStatus::ConfigurationAndSwHardeningNeeded => "ConfigurationAndSWHardeningNeeded",
            TcbStatus::OutOfDate => "OutOfDate",
            TcbStatus::OutOfDateConfigurationNeeded => "OutOfDateConfigurationNeeded",
            TcbStatus::TdRelaunchAdvised => "TDRelaunchAdvised",
            TcbStatus::TdRelaunchAdvisedConfigurationNeeded => {
                "TDRelaunchAdvisedConfigurationNeeded"
            }
        }
    }

    /// The snake_case name (`sw_hardening_needed`, ...), as the CLI takes it.
    pub fn snake_name(self) -> &'static str {
        match self {
            TcbStatus::UpToDate => "up_to_date",
            TcbStatus::SwHardeningNeeded => "sw_hardening_needed",
            TcbStatus::ConfigurationNeeded => "configuration_needed",
            TcbStatus::ConfigurationAndSwHardeningNeeded => "configuration_and_sw_hardening_needed",
            TcbStatus::OutOfDate => "out_of_date",
            TcbStatus::OutOfDateConfigurationNeeded => "out_of_date_configuration_needed",
            TcbStatus::TdRelaunchAdvised => "td_relaunch_advised",
            TcbStatus::TdRelaunchAdvisedConfigurationNeeded => {
                "td_relaunch_advised_configuration_needed"
            }
        }
    }

    fn from_qvl(s: dcap_qvl::TcbStatus) -> Option<Self> {
        use dcap_qvl::TcbStatus as Q;
        Some(match s {
            Q::UpToDate => TcbStatus::UpToDate,
            Q::SWHardeningNeeded => TcbStatus::SwHardeningNeeded,
            Q::ConfigurationNeeded => TcbStatus::ConfigurationNeeded,
            Q::ConfigurationAndSWHardeningNeeded => TcbStatus::ConfigurationAndSwHardeningNeeded,
            Q::OutOfDate => TcbStatus::OutOfDate,
            Q::OutOfDateConfigurationNeeded => TcbStatus::OutOfDateConfigurationNeeded,
            Q::TDRelaunchAdvised => TcbStatus::TdRelaunchAdvised,
            Q::TDRelaunchAdvisedConfigurationNeeded => {
                TcbStatus::TdRelaunchAdvisedConfigurationNeeded
            }
            Q::Revoked => return None,
        })
    }
}

impl fmt::Display for TcbStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.intel_name())
    }
}

impl FromStr for TcbStatus {
    type Err = String;

    /// Takes Intel's name or the snake_case one, case-insensitively (`OutOfDate`,
    /// `out_of_date`, `out-of-date`).
    fn from_str(s: &str) -> Result<Self, String> {
        let norm = |x: &str| -> String {
            x.chars()
                .filter(|c| !matches!(c, '_' | '-'))
                .flat_map(char::to_lowercase)
                .collect()
        };
        let want = norm(s.trim());
        TcbStatus::ALL
            .into_iter()
            .find(|t| norm(t.intel_name()) == want)
            .ok_or_else(|| {
                let names: Vec<&str> = TcbStatus::ALL.iter().map(|t| t.snake_name()).collect();
                format!("unknown TCB status {s:?}; one of {}", names.join(", "))
            })
    }
}

impl Serialize for TcbStatus {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.intel_name())
    }
}

/// SGX enclave or TDX trust domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum TeeType {
    #[serde(rename = "SGX")]
    Sgx,
    #[serde(rename = "TDX")]
    Tdx,
}

impl fmt::Display for TeeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TeeType::Sgx => "SGX",
            TeeType::Tdx => "TDX",
        })
    }
}

/// What a verification requires beyond a genuine quote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DcapPolicy {
    /// TCB statuses accepted; any other is an error. Default: only `UpToDate`.
    pub allowed_tcb: BTreeSet<TcbStatus>,
    /// SGX MRENCLAVE; reported as the `mrenclave` check.
    pub expect_mrenclave: Option<[u8; 32]>,
    /// SGX MRSIGNER; reported as the `mrsigner` check.
    pub expect_mrsigner: Option<[u8; 32]>,
    /// TDX MRTD; reported as the `mrtd` check.
    pub expect_mrtd: Option<[u8; 48]>,
    /// The quote's 64-byte report data must equal these bytes followed by zeros (so a 32-byte
    /// key hash matches report data `hash || 0^32`); at most 64 bytes. The `report_data`
    /// check.
    pub expect_report_data: Option<Vec<u8>>,
}

impl Default for DcapPolicy {
    fn default() -> Self {
        DcapPolicy {
            allowed_tcb: BTreeSet::from([TcbStatus::UpToDate]),
            expect_mrenclave: None,
            expect_mrsigner: None,
            expect_mrtd: None,
            expect_report_data: None,
        }
    }
}

impl DcapPolicy {
    /// Also accepts this TCB status (for example `OutOfDate` during a patch window).
    pub fn allow_tcb(mut self, status: TcbStatus) -> Self {
        self.allowed_tcb.insert(status);
        self
    }

    pub fn expect_mrenclave(mut self, v: [u8; 32]) -> Self {
        self.expect_mrenclave = Some(v);
        self
    }

    pub fn expect_mrsigner(mut self, v: [u8; 32]) -> Self {
        self.expect_mrsigner = Some(v);
        self
    }

    pub fn expect_mrtd(mut self, v: [u8; 48]) -> Self {
        self.expect_mrtd = Some(v);
        self
    }

    pub fn expect_report_data(mut self, v: impl Into<Vec<u8>>) -> Self {
        self.expect_report_data = Some(v.into());
        self
    }
}

/// The quoted enclave's or TD's measurements.
// One per verified quote; boxing the TDX registers would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "tee")]
pub enum Measurement {
    #[serde(rename = "SGX")]
    Sgx {
        #[serde(serialize_with = "ser_hex")]
        mrenclave: [u8; 32],
        #[serde(serialize_with = "ser_hex")]
        mrsigner: [u8; 32],
        isv_prod_id: u16,
        isv_svn: u16,
        #[serde(serialize_with = "ser_hex")]
        attributes: [u8; 16],
    },
    #[serde(rename = "TDX")]
    Tdx {
        #[serde(serialize_with = "ser_hex")]
        mrtd: [u8; 48],
        /// RTMR0..RTMR3.
        #[serde(serialize_with = "ser_hex_4")]
        rtmr: [[u8; 48]; 4],
        #[serde(serialize_with = "ser_hex")]
        mr_config_id: [u8; 48],
        #[serde(serialize_with = "ser_hex")]
        mr_owner: [u8; 48],
        #[serde(serialize_with = "ser_hex")]
        mr_seam: [u8; 48],
        #[serde(serialize_with = "ser_hex")]
        td_attributes: [u8; 8],
    },
}

/// A genuine quote, appraised at the reference time: its signature chain ends in Intel's
/// root, its collateral is Intel-signed, for its platform and valid at that time, and its TCB
/// status is one the policy allows. The caller-expected checks are in `checks`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VerifiedQuote {
    pub tee: TeeType,
    /// Quote format version (3 for SGX, 4 or 5 for TDX).
    pub quote_version: u16,
    pub tcb_status: TcbStatus,
    /// Intel security advisories (`INTEL-SA-...`) that apply to this TCB level.
    pub advisory_ids: Vec<String>,
    pub measurement: Measurement,
    /// The 64 bytes the enclave or TD chose to sign, which bind a key or a nonce.
    #[serde(serialize_with = "ser_hex")]
    pub report_data: [u8; 64],
    /// The platform's FMSPC (family-model-stepping-platform), lowercase hex.
    pub fmspc: String,
    /// SHA-384 of the Intel root CA's public key, lowercase hex.
    pub root_key_id: String,
    /// Unix seconds: the collateral (TCB info, QE identity, CRLs, signing chains) is valid
    /// from the latest issue date to the earliest expiry.
    pub collateral_valid_from: u64,
    pub collateral_valid_until: u64,
    /// Unix seconds at which the quote was appraised.
    pub evaluated_at: u64,
    /// SHA-256 of the quote bytes as given. Not unique to the attestation: bytes outside the
    /// signature (the PEM framing of the embedded certificates, zero padding) can change
    /// without changing what is attested; bind `signed_digest` instead.
    pub quote_digest: Digest,
    /// SHA-256 of the signed part (header and report body), which the attestation key signs.
    pub signed_digest: Digest,
    pub checks: Vec<Check>,
}

impl VerifiedQuote {
    pub fn check(&self, name: &str) -> Option<&Check> {
        Check::named(&self.checks, name)
    }

    pub fn all_checks_passed(&self) -> bool {
        Check::first_failed(&self.checks).is_none()
    }

    /// `Err(CheckFailed)` for the first check that did not pass.
    pub fn require_checks(&self) -> Result<(), DcapError> {
        match Check::first_failed(&self.checks) {
            None => Ok(()),
            Some(c) => Err(DcapError::CheckFailed {
                check: c.name.clone(),
                detail: c.detail.clone(),
            }),
        }
    }
}

/// Why a quote was refused. Every variant says what is wrong; `reason` texts carry dcap-qvl's
/// own message where it made the decision.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DcapError {
    #[error("quote is {len} bytes; the limit is {max}")]
    TooLarge { len: usize, max: usize },

    /// Truncated, undecodable, or followed by bytes that are not zero padding.
    #[error("quote: malformed: {reason}")]
    MalformedQuote { reason: String },

    /// Well-formed, but a version, TEE type, QE vendor, key type or certification data type
    /// this verifier does not accept.
    #[error("quote: unsupported: {reason}")]
    UnsupportedQuote { reason: String },

    /// The collateral is not well-formed (JSON, dates, CRLs, certificates).
    #[error("collateral: malformed: {reason}")]
    MalformedCollateral { reason: String },

    /// A collateral item was issued after the reference time.
    #[error("collateral: {item} is not valid before {not_before} (reference time {at})")]
    CollateralNotYetValid {
        item: String,
        not_before: String,
        at: String,
    },

    /// A collateral item's next update lies before the reference time.
    #[error("collateral: {item} expired at {not_after} (reference time {at})")]
    CollateralExpired {
        item: String,
        not_after: String,
        at: String,
    },

    /// A certificate (PCK chain or a collateral signing chain) is not valid at the reference
    /// time.
    #[error("certificate not valid at the reference time {at}: {reason}")]
    CertificateTime { reason: String, at: String },

    /// The TCB info or QE identity signature, or their signer, does not verify to the Intel
    /// root (or the root CA CRL is not signed by it).
    #[error("collateral: not signed by Intel: {reason}")]
    CollateralSignature { reason: String },

    /// Genuine collateral, but for another platform or TEE type (FMSPC, TCB info id, QE
    /// identity id).
    #[error("collateral does not belong to this quote: {reason}")]
    CollateralMismatch { reason: String },

    /// The PCK certificate chain does not verify to the Intel root, or is revoked.
    #[error("PCK certificate chain: {reason}")]
    CertificateChain { reason: String },

    /// The quoting enclave's report: its PCK signature, its binding of the attestation key,
    /// or its identity and SVN against the QE identity.
    #[error("QE report: {reason}")]
    QeReport { reason: String },

    /// The quote's ECDSA P-256 signature over header and body does not verify with the
    /// attestation key.
    #[error("signature: the quote's ECDSA signature does not verify with its attestation key")]
    BadSignature,

    /// The platform's TCB (CPUSVN, PCESVN, TEE_TCB_SVN) meets no level that the TCB info
    /// lists (Intel drops old levels): Intel's QVL calls this TCB_NOT_SUPPORTED.
    #[error("TCB: the platform meets no TCB level of the collateral: {reason}")]
    TcbUnmatched { reason: String },

    #[error("TCB status is Revoked: the platform's keys are compromised")]
    TcbRevoked,

    /// The TCB status is genuine but not one the policy allows.
    #[error(
        "TCB status {status} is not allowed (advisories: {}; allowed: {})",
        list_or_none(advisory_ids),
        allowed_list(allowed)
    )]
    TcbNotAllowed {
        status: TcbStatus,
        advisory_ids: Vec<String>,
        allowed: Vec<TcbStatus>,
    },

    /// Debug mode, TD profiling or migration, and other attributes a production enclave or TD
    /// does not have.
    #[error("attributes: {reason}")]
    Attributes { reason: String },

    /// dcap-qvl refused the quote for a reason not classified above.
    #[error("refused: {reason}")]
    Refused { reason: String },

    /// A check that the caller required (measurement, report data) did not pass.
    #[error("check {check} failed: {detail}")]
    CheckFailed { check: String, detail: String },
}

fn list_or_none(ids: &[String]) -> String {
    if ids.is_empty() {
        "none".into()
    } else {
        ids.join(", ")
    }
}

fn allowed_list(allowed: &[TcbStatus]) -> String {
    if allowed.is_empty() {
        return "none".into();
    }
    allowed
        .iter()
        .map(|s| s.intel_name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Reads collateral JSON, as dcap-qvl serializes [`QuoteCollateral`] (binary fields in hex).
pub fn parse_collateral(json: &[u8]) -> Result<QuoteCollateral, DcapError> {
    if json.len() > MAX_COLLATERAL_LEN {
        return Err(DcapError::MalformedCollateral {
            reason: format!("{} bytes; the limit is {MAX_COLLATERAL_LEN}", json.len()),
        });
    }
    serde_json::from_slice(json).map_err(|e| DcapError::MalformedCollateral {
        reason: format!("not dcap-qvl collateral JSON: {e}"),
    })
}

/// The quote's TEE type, or an error, without verifying anything: for telling a DCAP quote
/// from other evidence.
pub fn peek_tee_type(quote: &[u8]) -> Result<TeeType, DcapError> {
    Ok(decode(quote)?.0)
}

/// Verifies a quote against its collateral at `now_secs` (unix seconds) and a policy. Errors
/// are refusals; the measurement and report-data checks the policy asks for are in the
/// result, passed or not.
pub fn verify(
    quote: &[u8],
    collateral: &QuoteCollateral,
    now_secs: u64,
    policy: &DcapPolicy,
) -> Result<VerifiedQuote, DcapError> {
    let (tee, parsed, padding) = decode(quote)?;
    let quote_version = parsed.header.version;
    let signed_len = parsed.signed_length();
    let mut checks = vec![pass(
        "structure",
        format!(
            "{tee} quote v{quote_version}, {} body, ECDSA P-256 attestation key, {} bytes{}",
            body_name(&parsed.report),
            quote.len(),
            if padding > 0 {
                format!(" ({padding} of them trailing zero padding, outside the signature)")
            } else {
                String::new()
            }
        ),
    )];

    let window = collateral_window(collateral, now_secs)?;

    let claims = QuoteVerifier::new_prod()
        .with_config::<dcap_qvl::configs::RingConfig>()
        .verify_with_policy(
            quote,
            collateral,
            now_secs,
            &dcap_qvl::QuotePolicy::claims_only(now_secs),
        )
        .map_err(|e| classify(&e, now_secs))?;

    let root_key_id = hex::encode(&claims.platform.root_key_id);
    checks.push(pass(
        "collateral_validity",
        format!(
            "TCB info, QE identity and both CRLs are valid at {} (window {} .. {})",
            fmt_secs(now_secs),
            fmt_secs(window.0),
            fmt_secs(window.1)
        ),
    ));
    checks.push(pass(
        "collateral_signature",
        format!(
            "TCB info (evaluation data number {}) and QE identity are signed by Intel's TCB signing certificate, issued by the Intel SGX root CA (public key SHA-384 {root_key_id}); CRLs checked",
            claims.tcb.eval_data_number
        ),
    ));
    checks.push(pass(
        "pck_chain",
        format!(
            "the PCK certificate (FMSPC {}) chains to the Intel SGX root CA and is not revoked",
            hex::encode(claims.platform.pck.fmspc)
        ),
    ));
    checks.push(pass(
        "qe_report",
        format!(
            "the quoting enclave's report is signed by the PCK key, binds the attestation key, and matches the QE identity (QE TCB {})",
            claims.qe.tcb_level.tcb_status
        ),
    ));
    checks.push(pass(
        "signature",
        "the quote's ECDSA P-256 signature over header and body verifies with the attestation key",
    ));
    checks.push(pass(
        "attributes",
        match tee {
            TeeType::Sgx => "not a debug enclave",
            TeeType::Tdx => "not a debug TD; no profiling or migration; SEPT_VE_DISABLE set",
        },
    ));

    let Some(status) = TcbStatus::from_qvl(claims.tcb.status) else {
        return Err(DcapError::TcbRevoked);
    };
    let advisory_ids = claims.tcb.advisory_ids.clone();
    if !policy.allowed_tcb.contains(&status) {
        return Err(DcapError::TcbNotAllowed {
            status,
            advisory_ids,
            allowed: policy.allowed_tcb.iter().copied().collect(),
        });
    }
    checks.push(pass(
        "tcb",
        format!(
            "TCB status {status} (advisories: {}); the policy allows {}",
            list_or_none(&advisory_ids),
            allowed_list(&policy.allowed_tcb.iter().copied().collect::<Vec<_>>())
        ),
    ));

    let (measurement, report_data) = measurement(&claims.report);
    checks.extend(policy_checks(&measurement, &report_data, policy));

    Ok(VerifiedQuote {
        tee,
        quote_version,
        tcb_status: status,
        advisory_ids,
        measurement,
        report_data,
        fmspc: hex::encode(claims.platform.pck.fmspc),
        root_key_id,
        collateral_valid_from: claims.latest_issue_date,
        collateral_valid_until: claims.earliest_expiration_date,
        evaluated_at: now_secs,
        quote_digest: haca_core::sha256(quote),
        signed_digest: haca_core::sha256(quote.get(..signed_len).unwrap_or(quote)),
        checks,
    })
}

/// [`verify`], then every check required: a failed measurement or report-data check is an
/// error.
pub fn verify_strict(
    quote: &[u8],
    collateral: &QuoteCollateral,
    now_secs: u64,
    policy: &DcapPolicy,
) -> Result<VerifiedQuote, DcapError> {
    let v = verify(quote, collateral, now_secs, policy)?;
    v.require_checks()?;
    Ok(v)
}

const HEADER_LEN: usize = 48;

/// Decodes the quote and returns its TEE type and how many trailing zero bytes follow it.
fn decode(quote: &[u8]) -> Result<(TeeType, Quote, usize), DcapError> {
    if quote.len() > MAX_QUOTE_LEN {
        return Err(DcapError::TooLarge {
            len: quote.len(),
            max: MAX_QUOTE_LEN,
        });
    }
    if quote.len() < HEADER_LEN {
        return Err(DcapError::MalformedQuote {
            reason: format!(
                "truncated: {} bytes, shorter than the {HEADER_LEN}-byte header",
                quote.len()
            ),
        });
    }
    let parsed = Quote::parse(quote).map_err(|e| DcapError::MalformedQuote {
        reason: format!("truncated or undecodable ({} bytes): {e:#}", quote.len()),
    })?;
    let tee = match parsed.header.tee_type {
        0x0000_0000 => TeeType::Sgx,
        0x0000_0081 => TeeType::Tdx,
        other => {
            return Err(DcapError::UnsupportedQuote {
                reason: format!("TEE type {other:#x} (SGX is 0x0, TDX is 0x81)"),
            })
        }
    };
    // signed part, then a u32 (LE) length and that many bytes of signature data.
    let signed = parsed.signed_length();
    let total = quote
        .get(signed..signed.saturating_add(4))
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_le_bytes)
        .and_then(|n| usize::try_from(n).ok())
        .and_then(|n| n.checked_add(signed + 4));
    let padding = match total {
        Some(t) if t <= quote.len() => {
            let rest = &quote[t..];
            if rest.iter().any(|&b| b != 0) {
                return Err(DcapError::MalformedQuote {
                    reason: format!(
                        "{} bytes follow the {t}-byte quote, and they are not zero padding",
                        rest.len()
                    ),
                });
            }
            rest.len()
        }
        _ => {
            return Err(DcapError::MalformedQuote {
                reason: "the signature data length runs past the end".into(),
            })
        }
    };
    Ok((tee, parsed, padding))
}

fn body_name(report: &Report) -> &'static str {
    match report {
        Report::SgxEnclave(_) => "SGX enclave report",
        Report::TD10(_) => "TDX 1.0 TD report",
        Report::TD15(_) => "TDX 1.5 TD report",
        Report::TD15Ex(_) => "TDX 1.5ex TD report",
    }
}

fn measurement(report: &Report) -> (Measurement, [u8; 64]) {
    if let Some(r) = report.as_sgx() {
        return (
            Measurement::Sgx {
                mrenclave: r.mr_enclave,
                mrsigner: r.mr_signer,
                isv_prod_id: r.isv_prod_id,
                isv_svn: r.isv_svn,
                attributes: r.attributes,
            },
            r.report_data,
        );
    }
    // Every non-SGX body is at least a TD 1.0 report.
    let td = report.as_td10().copied().unwrap_or_else(|| match report {
        Report::SgxEnclave(_) | Report::TD10(_) => unreachable_td10(),
        Report::TD15(r) => r.base,
        Report::TD15Ex(r) => r.base.base,
    });
    (
        Measurement::Tdx {
            mrtd: td.mr_td,
            rtmr: [td.rt_mr0, td.rt_mr1, td.rt_mr2, td.rt_mr3],
            mr_config_id: td.mr_config_id,
            mr_owner: td.mr_owner,
            mr_seam: td.mr_seam,
            td_attributes: td.td_attributes,
        },
        td.report_data,
    )
}

#[cold]
fn unreachable_td10() -> dcap_qvl::quote::TDReport10 {
    // as_td10 returns Some for every TD body; keep a total function rather than panic.
    dcap_qvl::quote::TDReport10 {
        tee_tcb_svn: [0; 16],
        mr_seam: [0; 48],
        mr_signer_seam: [0; 48],
        seam_attributes: [0; 8],
        td_attributes: [0; 8],
        xfam: [0; 8],
        mr_td: [0; 48],
        mr_config_id: [0; 48],
        mr_owner: [0; 48],
        mr_owner_config: [0; 48],
        rt_mr0: [0; 48],
        rt_mr1: [0; 48],
        rt_mr2: [0; 48],
        rt_mr3: [0; 48],
        report_data: [0; 64],
    }
}

fn policy_checks(m: &Measurement, report_data: &[u8; 64], policy: &DcapPolicy) -> Vec<Check> {
    let mut checks = Vec::new();
    let mut compare = |name: &str, field: &str, got: Option<&[u8]>, want: &[u8]| {
        checks.push(match got {
            None => fail(name, format!("the quote is not of a TEE that has {field}")),
            Some(g) if g == want => pass(name, format!("{field} {} matches", hex::encode(g))),
            Some(g) => fail(
                name,
                format!(
                    "{field} is {}, expected {}",
                    hex::encode(g),
                    hex::encode(want)
                ),
            ),
        });
    };
    let (mrenclave, mrsigner, mrtd) = match m {
        Measurement::Sgx {
            mrenclave,
            mrsigner,
            ..
        } => (Some(&mrenclave[..]), Some(&mrsigner[..]), None),
        Measurement::Tdx { mrtd, .. } => (None, None, Some(&mrtd[..])),
    };
    if let Some(want) = &policy.expect_mrenclave {
        compare("mrenclave", "MRENCLAVE", mrenclave, want);
    }
    if let Some(want) = &policy.expect_mrsigner {
        compare("mrsigner", "MRSIGNER", mrsigner, want);
    }
    if let Some(want) = &policy.expect_mrtd {
        compare("mrtd", "MRTD", mrtd, want);
    }
    if let Some(want) = &policy.expect_report_data {
        checks.push(if want.len() > 64 {
            fail(
                "report_data",
                format!(
                    "the expected report data is {} bytes; report data holds 64",
                    want.len()
                ),
            )
        } else {
            let mut padded = [0u8; 64];
            padded[..want.len()].copy_from_slice(want);
            if &padded == report_data {
                pass(
                    "report_data",
                    format!("report data {} matches", hex::encode(report_data)),
                )
            } else {
                fail(
                    "report_data",
                    format!(
                        "report data is {}, expected {}",
                        hex::encode(report_data),
                        hex::encode(padded)
                    ),
                )
            }
        });
    }
    checks
}

/// Checks every dated collateral item at `now`; returns the common window (latest issue,
/// earliest next update), in unix seconds. dcap-qvl checks the same (TCB info and QE identity
/// up to and including nextUpdate, CRLs strictly before it), and also the certificates.
fn collateral_window(c: &QuoteCollateral, now: u64) -> Result<(u64, u64), DcapError> {
    #[derive(serde::Deserialize)]
    struct Dated {
        #[serde(rename = "issueDate")]
        issue_date: String,
        #[serde(rename = "nextUpdate")]
        next_update: String,
    }
    let mut items: Vec<(&str, u64, u64, bool)> = Vec::new();
    for (name, json) in [("tcb_info", &c.tcb_info), ("qe_identity", &c.qe_identity)] {
        let d: Dated = serde_json::from_str(json).map_err(|e| DcapError::MalformedCollateral {
            reason: format!("{name}: {e}"),
        })?;
        let parse = |field: &str, v: &str| {
            parse_rfc3339(v).ok_or_else(|| DcapError::MalformedCollateral {
                reason: format!("{name}.{field}: not an RFC 3339 UTC time: {v:?}"),
            })
        };
        items.push((
            name,
            parse("issueDate", &d.issue_date)?,
            parse("nextUpdate", &d.next_update)?,
            true,
        ));
    }
    for (name, der) in [("root_ca_crl", &c.root_ca_crl), ("pck_crl", &c.pck_crl)] {
        let (_, crl) =
            x509_parser::parse_x509_crl(der).map_err(|e| DcapError::MalformedCollateral {
                reason: format!("{name}: not a DER CRL: {e}"),
            })?;
        let this = u64::try_from(crl.last_update().timestamp()).unwrap_or(0);
        let next = crl
            .next_update()
            .map(|t| u64::try_from(t.timestamp()).unwrap_or(0))
            .ok_or_else(|| DcapError::MalformedCollateral {
                reason: format!("{name}: has no nextUpdate"),
            })?;
        items.push((name, this, next, false));
    }
    let mut window = (0u64, u64::MAX);
    for (name, from, until, inclusive) in items {
        if now < from {
            return Err(DcapError::CollateralNotYetValid {
                item: name.into(),
                not_before: fmt_secs(from),
                at: fmt_secs(now),
            });
        }
        if now > until || (!inclusive && now == until) {
            return Err(DcapError::CollateralExpired {
                item: name.into(),
                not_after: fmt_secs(until),
                at: fmt_secs(now),
            });
        }
        window = (window.0.max(from), window.1.min(until));
    }
    Ok(window)
}

/// Maps dcap-qvl's refusal (an error chain of text) to a reason.
fn classify(e: &impl fmt::Display, now: u64) -> DcapError {
    // dcap-qvl returns anyhow errors; `{:#}` prints the whole context chain.
    let msg = format!("{e:#}");
    let has = |needles: &[&str]| needles.iter().any(|n| msg.contains(n));
    let reason = msg.clone();
    if has(&["ISV enclave report signature is invalid"]) {
        DcapError::BadSignature
    } else if has(&["TCB status is invalid: Revoked"]) {
        DcapError::TcbRevoked
    } else if has(&["Failed to decode quote", "Failed to get signed quote scope"]) {
        DcapError::MalformedQuote { reason }
    } else if has(&[
        "Unsupported DCAP quote version",
        "Unknown QE vendor ID",
        "must have version",
        "Unsupported TEE type",
        "Unsupported DCAP attestation key type",
        "Unsupported DCAP PCK cert format",
        "Unsupported cert type",
    ]) {
        DcapError::UnsupportedQuote { reason }
    } else if has(&[
        "CertExpired",
        "CertNotValidYet",
        "CrlExpired",
        "expired",
        "in the future",
    ]) {
        DcapError::CertificateTime {
            reason,
            at: fmt_secs(now),
        }
    } else if has(&[
        "Fmspc mismatch",
        "non-TDX TCB info",
        "non-SGX TCB info",
        "Unsupported QE Identity id/version",
    ]) {
        DcapError::CollateralMismatch { reason }
    } else if has(&[
        "Signature is invalid for tcb_info",
        "Signature is invalid for qe_identity",
        "must be issued directly by the root CA",
        "Failed to parse root CA CRL",
        "TCB Info leaf certificate",
        "QE Identity leaf certificate",
        "too short for TCB Info",
        "too short for QE Identity",
    ]) {
        DcapError::CollateralSignature { reason }
    } else if has(&[
        "Signature is invalid for qe_report",
        "QE report",
        "QE auth data",
        "QE ISVSVN",
        "TCB levels found in QE Identity",
    ]) {
        DcapError::QeReport { reason }
    } else if has(&[
        "Debug mode is enabled",
        "TD profiling",
        "Reserved bits in TD attributes",
        "TD migration",
        "SERVTD_EXT",
        "SEPT_VE_DISABLE",
        "Invalid MR service TD",
    ]) {
        DcapError::Attributes { reason }
    } else if has(&[
        "No matching TCB level",
        "TDX module",
        "TCB level",
        "Unrecognized TCB status",
    ]) {
        DcapError::TcbUnmatched { reason }
    } else if has(&[
        "PCK certificate",
        "Failed to verify certificate chain",
        "Certificate chain is too short in quote",
        "Too many intermediate certificates",
        "Intel extension",
    ]) {
        DcapError::CertificateChain { reason }
    } else if has(&[
        "Failed to decode TcbInfo",
        "Failed to decode QeIdentity",
        "CRL",
        "Failed to parse certs",
        "issue date",
        "next update",
    ]) {
        DcapError::MalformedCollateral { reason }
    } else {
        DcapError::Refused { reason }
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

fn fmt_secs(secs: u64) -> String {
    match secs.checked_mul(1000) {
        Some(ms) if ms < 253_402_300_800_000 => haca_core::format_unix_ms(ms),
        _ => format!("unix {secs}"),
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.frac](Z|+00:00)` to unix seconds (Intel's collateral uses `Z`).
fn parse_rfc3339(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u64> {
        let t = s.get(r)?;
        if t.bytes().all(|c| c.is_ascii_digit()) {
            t.parse().ok()
        } else {
            None
        }
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = &frac[digits..];
    }
    if !matches!(rest, "Z" | "z" | "+00:00") {
        return None;
    }
    if !(1..=12).contains(&mo) || d == 0 || d > 31 || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant), for years >= 1970.
    let (y, m) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = y / 400;
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = (era * 146_097 + doe).checked_sub(719_468)?;
    Some(days * 86_400 + h * 3600 + mi * 60 + se)
}

fn ser_hex<S: Serializer, const N: usize>(v: &[u8; N], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(v))
}

fn ser_hex_4<S: Serializer>(v: &[[u8; 48]; 4], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = s.serialize_seq(Some(4))?;
    for r in v {
        seq.serialize_element(&hex::encode(r))?;
    }
    seq.end()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2025-07-01T00:00:00Z"), Some(1_751_328_000));
        assert_eq!(
            parse_rfc3339("2024-02-29T12:34:56.789Z"),
            Some(1_709_210_096)
        );
        assert_eq!(
            parse_rfc3339("2025-07-01T00:00:00+00:00"),
            Some(1_751_328_000)
        );
        for bad in [
            "",
            "2025-07-01",
            "2025-13-01T00:00:00Z",
            "2025-07-01T00:00:00+01:00",
            "1969-12-31T23:59:59Z",
            "2025-07-01T00:00:00.Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn tcb_status_names() {
        for s in TcbStatus::ALL {
            assert_eq!(s.intel_name().parse::<TcbStatus>(), Ok(s));
            assert_eq!(s.snake_name().parse::<TcbStatus>(), Ok(s));
        }
        assert_eq!("out-of-date".parse::<TcbStatus>(), Ok(TcbStatus::OutOfDate));
        assert!("revoked".parse::<TcbStatus>().is_err());
    }
}
