//! `haca attest verify`: check an AWS Nitro attestation document offline.

use super::CliError;
use base64::Engine as _;
use clap::{Args, Subcommand};
use haca_core::format_unix_ms;
use haca_tee::nitro::DEFAULT_MAX_AGE_MS;
use haca_tee::{verify, Check, Policy};
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum AttestCommand {
    /// Verify a Nitro attestation document: COSE signature, certificate chain to the AWS Nitro
    /// root, and time. Exit status 0 when those hold; PCRs, key binding and nonce fail it only
    /// when asked for.
    Verify(VerifyDocArgs),
}

#[derive(Args)]
pub struct VerifyDocArgs {
    /// The document: raw CBOR (COSE_Sign1), or that in base64 text.
    doc: PathBuf,
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
        for c in &checks {
            println!(
                "  {:<12} {:<6} {}",
                c.name,
                if c.passed { "holds" } else { "FAILS" },
                c.detail
            );
        }
        println!("{}", if ok { "ok" } else { "FAILED" });
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
