//! `haca attest verify`: check an AWS Nitro attestation document, or an Intel SGX/TDX (DCAP)
//! quote with its collateral, offline.

use super::CliError;
use base64::Engine as _;
use clap::{Args, Subcommand};
use haca_core::format_unix_ms;
use haca_tee::dcap::{self, DcapPolicy, Measurement, TcbStatus};
use haca_tee::nitro::DEFAULT_MAX_AGE_MS;
use haca_tee::{verify, Check, Policy};
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum AttestCommand {
    /// Verify a Nitro attestation document: COSE signature, certificate chain to the AWS Nitro
    /// root, and time. Exit status 0 when those hold; PCRs, key binding and nonce fail it only
    /// when asked for. An Intel SGX/TDX quote (with --collateral) is verified against Intel's
    /// root, its collateral at the reference time, and its TCB status (UpToDate unless
    /// --allow-tcb says otherwise).
    Verify(VerifyDocArgs),
}

#[derive(Args)]
pub struct VerifyDocArgs {
    /// The document: raw CBOR (COSE_Sign1), or that in base64 text. Or an Intel SGX/TDX
    /// quote: raw, hex or base64.
    doc: PathBuf,
    /// The quote's collateral (TCB info, QE identity, CRLs), as dcap-qvl's JSON: for an
    /// Intel SGX/TDX quote.
    #[arg(long, value_name = "FILE")]
    collateral: Option<PathBuf>,
    /// SGX/TDX: also accept these TCB statuses (comma-separated: out_of_date,
    /// sw_hardening_needed, configuration_needed, configuration_and_sw_hardening_needed,
    /// out_of_date_configuration_needed, td_relaunch_advised, ...). Default: up_to_date only.
    #[arg(long = "allow-tcb", value_name = "STATUS,...", value_delimiter = ',')]
    allow_tcb: Vec<String>,
    /// Reference time, unix milliseconds (default: now).
    #[arg(long, conflicts_with = "audit")]
    at: Option<u64>,
    /// Audit an old document at its own timestamp (leaf certificates live about 3 hours).
    #[arg(long)]
    audit: bool,
    /// Maximum age of the document at the reference time, in seconds.
    #[arg(long, default_value_t = DEFAULT_MAX_AGE_MS / 1000)]
    max_age_s: u64,
    /// Require PCR N to equal HEX (repeatable), as N=HEX.
    #[arg(long = "expect-pcr", value_name = "N=HEX")]
    expect_pcr: Vec<String>,
    /// Require the nonce the document carries to equal HEX.
    #[arg(long, value_name = "HEX")]
    nonce: Option<String>,
    /// Require the document to bind a key (through public_key or nitriding user_data).
    #[arg(long)]
    require_binding: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

fn read_doc(path: &PathBuf) -> Result<Vec<u8>, CliError> {
    let bytes =
        std::fs::read(path).map_err(|e| CliError::Msg(format!("{}: {e}", path.display())))?;
    let text = String::from_utf8_lossy(&bytes);
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let looks_base64 = !compact.is_empty()
        && compact
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '='));
    if looks_base64 {
        if let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(&compact) {
            return Ok(decoded);
        }
    }
    Ok(bytes)
}

pub fn run(cmd: &AttestCommand) -> Result<ExitCode, CliError> {
    let AttestCommand::Verify(a) = cmd;
    if let Some(quote) = read_dcap_quote(a)? {
        return run_dcap(a, &quote);
    }
    let doc = read_doc(&a.doc)?;
    let mut policy = match (a.audit, a.at) {
        (true, _) => Policy::audit(),
        (false, at) => Policy::at(
            at.unwrap_or_else(crate::now_ms),
            a.max_age_s.saturating_mul(1000),
        ),
    };
    for spec in &a.expect_pcr {
        let (index, value) = spec
            .split_once('=')
            .and_then(|(i, v)| {
                Some((
                    i.parse::<u8>().ok()?,
                    hex::decode(v.trim_start_matches("0x")).ok()?,
                ))
            })
            .ok_or_else(|| {
                CliError::Msg(format!(
                    "--expect-pcr {spec:?}: expected N=HEX, such as 0=a1b2..."
                ))
            })?;
        policy = policy.expect_pcr(index, value);
    }
    if let Some(n) = &a.nonce {
        policy = policy.expect_nonce(
            hex::decode(n).map_err(|e| CliError::Msg(format!("--nonce: not hex: {e}")))?,
        );
    }
    let verified = match verify(&doc, &policy) {
        Ok(v) => v,
        Err(e) => {
            if a.json {
                println!("{}", json!({"ok": false, "error": e.to_string()}));
            } else {
                println!("attestation document {}: FAILED", a.doc.display());
                println!("  {e}");
            }
            return Ok(ExitCode::FAILURE);
        }
    };
    let mut checks = verified.checks.clone();
    if a.require_binding {
        let bound = verified.public_key.is_some() || verified.nitriding.is_some();
        checks.push(Check {
            name: "key_binding".into(),
            passed: bound,
            detail: if bound {
                "the document binds a key (public_key or nitriding user_data)".into()
            } else {
                "the document binds no key: no public_key and no nitriding user_data".into()
            },
        });
    }
    let ok = checks.iter().all(|c| c.passed);
    if a.json {
        let mut v = serde_json::to_value(&verified).expect("serializes");
        v["checks"] = serde_json::to_value(&checks).expect("serializes");
        v["ok"] = json!(ok);
        println!("{}", serde_json::to_string_pretty(&v).expect("prints"));
    } else {
        println!("attestation document {}", a.doc.display());
        println!("  module:     {}", verified.module_id);
        println!(
            "  timestamp:  {} ({})",
            format_unix_ms(verified.timestamp_ms),
            verified.timestamp_ms
        );
        let mode = if verified.audit {
            " (audit: at the document's own time)"
        } else {
            ""
        };
        println!(
            "  checked at: {}{mode}",
            format_unix_ms(verified.evaluated_at_ms)
        );
        println!(
            "  root:       {} {}{}",
            verified.root.label,
            verified.root_fingerprint,
            if verified.root.dev { " (dev root)" } else { "" }
        );
        for (i, v) in &verified.pcrs {
            if v.bytes().any(|b| b != b'0') || *i == 0 {
                println!("  PCR{i:<2}      {v}");
            }
        }
        match (&verified.public_key, &verified.nitriding) {
            (_, Some(n)) => println!(
                "  bound key:  nitriding user_data: TLS cert sha256 {}, signing key sha256 {}",
                hex::encode(n.tls_cert_sha256),
                hex::encode(n.signing_key_sha256)
            ),
            (Some(k), None) => println!("  bound key:  public_key {}", hex::encode(k)),
            (None, None) => println!("  bound key:  none"),
        }
        print_checks(&checks, 12, ok);
    }
    Ok(exit_code(ok))
}

/// The file as an Intel SGX/TDX quote (raw, hex or base64), when it is one or `--collateral`
/// is given; `None` for a Nitro document.
fn read_dcap_quote(a: &VerifyDocArgs) -> Result<Option<Vec<u8>>, CliError> {
    let raw =
        std::fs::read(&a.doc).map_err(|e| CliError::Msg(format!("{}: {e}", a.doc.display())))?;
    let text = String::from_utf8_lossy(&raw);
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let mut candidates = vec![raw.clone()];
    if let Ok(bytes) = hex::decode(compact.trim_start_matches("0x")) {
        candidates.push(bytes);
    }
    if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(&compact) {
        candidates.push(bytes);
    }
    if let Some(q) = candidates.iter().find(|q| dcap::peek_tee_type(q).is_ok()) {
        return Ok(Some(q.clone()));
    }
    if a.collateral.is_some() {
        // Not decodable as a quote: let verification say why.
        return Ok(Some(raw));
    }
    if !a.allow_tcb.is_empty() {
        return Err(CliError::Msg(
            "--allow-tcb applies to Intel SGX/TDX quotes (with --collateral)".into(),
        ));
    }
    Ok(None)
}

fn run_dcap(a: &VerifyDocArgs, quote: &[u8]) -> Result<ExitCode, CliError> {
    let Some(collateral_path) = &a.collateral else {
        return Err(CliError::Msg(format!(
            "{} is an Intel SGX/TDX quote: give its collateral with --collateral FILE (the PCCS collateral as dcap-qvl's JSON)",
            a.doc.display()
        )));
    };
    if a.audit || !a.expect_pcr.is_empty() || a.nonce.is_some() || a.require_binding {
        return Err(CliError::Msg(
            "--audit, --expect-pcr, --nonce and --require-binding apply to Nitro documents, not to SGX/TDX quotes".into(),
        ));
    }
    let mut policy = DcapPolicy::default();
    for name in &a.allow_tcb {
        let status: TcbStatus = name
            .parse()
            .map_err(|e| CliError::Msg(format!("--allow-tcb: {e}")))?;
        policy = policy.allow_tcb(status);
    }
    let json = std::fs::read(collateral_path)
        .map_err(|e| CliError::Msg(format!("{}: {e}", collateral_path.display())))?;
    let at_secs = a.at.unwrap_or_else(crate::now_ms) / 1000;
    let result =
        dcap::parse_collateral(&json).and_then(|c| dcap::verify(quote, &c, at_secs, &policy));
    let label = match dcap::peek_tee_type(quote) {
        Ok(t) => format!("Intel {t} quote"),
        Err(_) => "quote".to_string(),
    };
    let v = match result {
        Ok(v) => v,
        Err(e) => {
            if a.json {
                println!("{}", json!({"ok": false, "error": e.to_string()}));
            } else {
                println!("{label} {}: FAILED", a.doc.display());
                println!("  {e}");
            }
            return Ok(ExitCode::FAILURE);
        }
    };
    let ok = v.all_checks_passed();
    if a.json {
        let mut out = serde_json::to_value(&v).expect("serializes");
        out["ok"] = json!(ok);
        println!("{}", serde_json::to_string_pretty(&out).expect("prints"));
    } else {
        println!("{label} {}", a.doc.display());
        println!("  TCB status:  {}", v.tcb_status);
        println!(
            "  advisories:  {}",
            if v.advisory_ids.is_empty() {
                "none".to_string()
            } else {
                v.advisory_ids.join(", ")
            }
        );
        match &v.measurement {
            Measurement::Sgx {
                mrenclave,
                mrsigner,
                isv_prod_id,
                isv_svn,
                ..
            } => {
                println!("  MRENCLAVE:   {}", hex::encode(mrenclave));
                println!("  MRSIGNER:    {}", hex::encode(mrsigner));
                println!("  ISV:         product {isv_prod_id}, SVN {isv_svn}");
            }
            Measurement::Tdx { mrtd, rtmr, .. } => {
                println!("  MRTD:        {}", hex::encode(mrtd));
                for (i, r) in rtmr.iter().enumerate() {
                    println!("  RTMR{i}:       {}", hex::encode(r));
                }
            }
        }
        println!("  report data: {}", hex::encode(v.report_data));
        println!("  FMSPC:       {}", v.fmspc);
        println!(
            "  collateral:  valid {} .. {}",
            format_unix_ms(v.collateral_valid_from.saturating_mul(1000)),
            format_unix_ms(v.collateral_valid_until.saturating_mul(1000))
        );
        println!(
            "  checked at:  {}",
            format_unix_ms(v.evaluated_at.saturating_mul(1000))
        );
        print_checks(&v.checks, 20, ok);
    }
    Ok(exit_code(ok))
}

/// Each check as `name  holds|FAILS  detail`, then the verdict.
fn print_checks(checks: &[haca_tee::Check], name_width: usize, ok: bool) {
    for c in checks {
        println!(
            "  {:<name_width$} {:<6} {}",
            c.name,
            if c.passed { "holds" } else { "FAILS" },
            c.detail
        );
    }
    println!("{}", if ok { "ok" } else { "FAILED" });
}

fn exit_code(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
