//! `haca verify`: check a receipt file offline.

use super::CliError;
use clap::Args;
use haca_core::claims::{parse_duration, Checker, Claim, ClaimState, TrustAnchors};
use haca_core::settlement::ValidatorHistory;
use haca_core::{format_unix_ms, ParsedReceipt};
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct VerifyArgs {
    /// The receipt file (as `haca receipt RUN --json` writes it).
    receipt: PathBuf,
    /// Reference time for freshness claims, unix milliseconds (default: now).
    #[arg(long)]
    at: Option<u64>,
    /// Maximum age for data.fresh.
    #[arg(long, default_value = "300s")]
    data_max_age: String,
    /// Maximum age for memory.fresh.
    #[arg(long, default_value = "30d")]
    memory_max_age: String,
    /// Trust a dev-enclave root (reported as `holds (dev root)`).
    #[arg(long)]
    allow_dev_root: bool,
    /// A genesis or validator-set history (`haca chain validators --export`): the trust
    /// anchor for `run.settled` and `node.registered`. Without it they print `unchecked`.
    #[arg(long)]
    validators: Option<PathBuf>,
    /// A model file (ONNX) the receipt's proof may be about (repeatable): with it,
    /// `artifact.bound` checks that the proof's key is the one this file gives and that the
    /// file is the artifact's blob. Without it a proof-based binding prints `unchecked`.
    #[arg(long)]
    model: Vec<PathBuf>,
    /// A data node whose signed items are trusted (repeatable; its id, 64 hex characters):
    /// the trust anchor for `data.attested`. Without it, a data box whose signatures all
    /// verify prints `unchecked`.
    #[arg(long, value_name = "NODE_ID")]
    data_node: Vec<haca_core::NodeId>,
    /// An image file the run served (repeatable, in the run's order): the receipt's output
    /// hash must be the one these files give (each image's SHA-256, size and media type), so
    /// a swapped or changed image fails.
    #[arg(long)]
    image: Vec<PathBuf>,
    /// The settled round's tree dump (`haca blob get ID --out FILE`, ID the settlement box's
    /// `walrus_blob_id`): its Walrus id must be the box's, its root the box's OpenZeppelin
    /// root (which `run.settled` ties to the certified header), and this run's leaf in it.
    #[arg(long, value_name = "FILE")]
    tree_dump: Option<PathBuf>,
    /// Also check, online, that the receipt's settlement round is anchored in the
    /// SettlementRegistry (--evm-registry) of the EVM chain at this JSON-RPC URL, with the
    /// receipt's roots. Without it nothing goes online.
    #[arg(long, value_name = "URL", requires = "evm_registry")]
    evm_rpc: Option<String>,
    /// The SettlementRegistry the node anchors its rounds in (with --evm-rpc).
    #[arg(long, value_name = "ADDRESS", requires = "evm_rpc")]
    evm_registry: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// The exit status of `haca verify`: 0 when every claim that is present holds (no claim
/// fails, no problem found), 1 when a claim fails, 2 when an input (the receipt, the
/// validator history, a model file, a flag's value) could not be read or parsed; the error
/// is printed to stderr then.
pub const EXIT_CLAIM_FAILS: u8 = 1;
pub const EXIT_BAD_INPUT: u8 = 2;

pub fn run(a: &VerifyArgs) -> Result<ExitCode, CliError> {
    match check(a) {
        Ok(code) => Ok(code),
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(EXIT_BAD_INPUT))
        }
    }
}

fn check(a: &VerifyArgs) -> Result<ExitCode, CliError> {
    let text = std::fs::read_to_string(&a.receipt)
        .map_err(|e| CliError::Msg(format!("{}: {e}", a.receipt.display())))?;
    let parsed = ParsedReceipt::from_json_str(&text)
        .map_err(|e| CliError::Msg(format!("{}: {e}", a.receipt.display())))?;
    let at = a.at.unwrap_or_else(crate::now_ms);
    let data_age = parse_duration(&a.data_max_age)
        .map_err(|e| CliError::Msg(format!("--data-max-age: {e}")))?;
    let mem_age = parse_duration(&a.memory_max_age)
        .map_err(|e| CliError::Msg(format!("--memory-max-age: {e}")))?;
    let mut anchors = match &a.validators {
        None => TrustAnchors {
            allow_dev_root: a.allow_dev_root,
            ..TrustAnchors::default()
        },
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| CliError::Msg(format!("--validators {}: {e}", path.display())))?;
            let history = ValidatorHistory::from_json_str(&text)
                .map_err(|e| CliError::Msg(format!("--validators {}: {e}", path.display())))?;
            TrustAnchors::from_history(history, a.allow_dev_root)
        }
    };
    if !a.data_node.is_empty() {
        anchors.data_nodes = Some(a.data_node.iter().copied().collect());
    }
    anchors.attestation = Some(&haca_tee::receipt_check::TEE_VERIFIER);
    anchors.payment = Some(&haca_pay::receipt_check::PAYMENT_VERIFIER);
    let mut zk = haca_zk::receipt_check::ZkVerifier::default();
    for path in &a.model {
        let bytes = std::fs::read(path)
            .map_err(|e| CliError::Msg(format!("--model {}: {e}", path.display())))?;
        zk.models.insert(haca_core::BlobId::of(&bytes), bytes);
    }
    // The checker wants a verifier that lives as long as the process: this one does.
    anchors.proof = Some(Box::leak(Box::new(zk)));
    let checker = Checker::new(&parsed, &anchors, at);
    let outcomes: Vec<_> = Claim::all(data_age, mem_age)
        .into_iter()
        .map(|c| checker.check(c))
        .collect();
    let mut problems = checker.problems();
    let anchor = check_anchor(a, &parsed)?;
    if let Some(Err(p)) = &anchor {
        problems.push(p.clone());
    }
    let images = check_images(&a.image, &parsed)?;
    if let Some(Err(p)) = &images {
        problems.push(p.clone());
    }
    let tree = check_tree_dump(a.tree_dump.as_deref(), &parsed)?;
    if let Some(Err(p)) = &tree {
        problems.push(p.clone());
    }
    let failed = outcomes
        .iter()
        .filter(|o| o.state == ClaimState::Fails)
        .count();
    let ok = failed == 0 && problems.is_empty();
    if a.json {
        let v = json!({
            "run_id": parsed.receipt.run_id.to_string(),
            "receipt_digest": parsed.digest().to_hex(),
            "at": at,
            "claims": outcomes,
            "problems": problems,
            "images": images.as_ref().map(|r| r.is_ok()),
            "tree_dump": tree.as_ref().map(|r| r.is_ok()),
            "anchored": anchor.as_ref().map(|r| r.is_ok()),
            "ok": ok,
        });
        println!("{}", serde_json::to_string_pretty(&v).expect("JSON prints"));
    } else {
        println!(
            "receipt for run {} (schema version {})",
            parsed.receipt.run_id, parsed.receipt.version
        );
        println!(
            "digest {}; claims evaluated at {}",
            parsed.digest(),
            format_unix_ms(at)
        );
        for o in &outcomes {
            println!(
                "  {:<22} {:<12} {}",
                o.claim.to_string(),
                o.state.as_str(),
                o.detail
            );
        }
        if let Some(Ok(line)) = &images {
            println!("  images: {line}");
        }
        if let Some(Ok(line)) = &tree {
            println!("  tree dump: {line}");
        }
        if let Some(Ok(line)) = &anchor {
            println!("  anchored: {line}");
        }
        for p in &problems {
            println!("  problem: {p}");
        }
        let count = |s: ClaimState| outcomes.iter().filter(|o| o.state == s).count();
        println!(
            "{}: {} hold, {} fail, {} not present, {} unchecked{}",
            if ok { "ok" } else { "FAILED" },
            count(ClaimState::Holds),
            failed,
            count(ClaimState::NotPresent),
            count(ClaimState::Unchecked),
            if problems.is_empty() {
                String::new()
            } else {
                format!(", {} problem(s)", problems.len())
            }
        );
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_CLAIM_FAILS)
    })
}

/// `--evm-rpc`: the receipt's round roots against the registry's, online. `None` without the
/// flag; else what held, or the problem (a round not anchored, or anchored with other roots).
fn check_anchor(
    a: &VerifyArgs,
    parsed: &ParsedReceipt,
) -> Result<Option<Result<String, String>>, CliError> {
    let (Some(rpc), Some(registry)) = (&a.evm_rpc, &a.evm_registry) else {
        return Ok(None);
    };
    let registry = haca_evm::parse_address(registry)
        .map_err(|e| CliError::Msg(format!("--evm-registry: {e}")))?;
    let Some(ev) = parsed.receipt.boxes.settlement.evidence.as_ref() else {
        return Ok(Some(Err(
            "--evm-rpc: the receipt has no settlement box yet (haca receipt RUN --wait settled)"
                .into(),
        )));
    };
    let Some(round) = ev.header.settlement.as_ref() else {
        return Ok(Some(Err(
            "--evm-rpc: the settlement header closes no round".into(),
        )));
    };
    let height = ev.header.height;
    let (url, h) = (rpc.clone(), height);
    // `haca verify` runs inside the CLI's runtime: the RPC call gets a runtime of its own.
    let answer = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?
            .block_on(crate::evm::anchored_root(&url, registry, h))
    })
    .join()
    .map_err(|_| CliError::Msg("--evm-rpc: the RPC check stopped".into()))?
    .map_err(|e| CliError::Msg(format!("--evm-rpc: {e}")))?;
    let Some((posted_round, rfc, oz, block)) = answer else {
        return Ok(Some(Err(format!(
            "anchored: nothing is anchored for height {height} in registry {registry}"
        ))));
    };
    if rfc.0 != round.rfc6962_root.0 || oz.0 != round.oz_root.0 || posted_round != round.round {
        return Ok(Some(Err(format!(
            "anchored: registry {registry} holds round {posted_round} with roots {rfc} / {oz} for height {height}, the receipt round {} with {} / {}",
            round.round, round.rfc6962_root, round.oz_root
        ))));
    }
    Ok(Some(Ok(format!(
        "round {} (height {height}) anchored in registry {registry}, block {block}, roots equal",
        round.round
    ))))
}

/// `--image` files against the receipt's output hash: `None` without files; else what held,
/// or the problem.
fn check_images(
    files: &[PathBuf],
    parsed: &ParsedReceipt,
) -> Result<Option<Result<String, String>>, CliError> {
    if files.is_empty() {
        return Ok(None);
    }
    let mut facts = Vec::new();
    for path in files {
        let bytes = std::fs::read(path)
            .map_err(|e| CliError::Msg(format!("--image {}: {e}", path.display())))?;
        match haca_exec::image::check_image(&bytes, usize::MAX) {
            Ok(f) => facts.push(f),
            Err(e) => return Ok(Some(Err(format!("--image {}: {e}", path.display())))),
        }
    }
    let Some(exec) = parsed.receipt.boxes.execution.evidence.as_ref() else {
        return Ok(Some(
            Err("--image: the receipt has no execution box".into()),
        ));
    };
    let got = haca_exec::image::output_hash(&facts);
    Ok(Some(if got == exec.output_hash {
        Ok(format!(
            "{} file(s) are the images the run served (output hash {got})",
            facts.len()
        ))
    } else {
        Err(format!(
            "--image: these {} file(s) give output hash {got}, the receipt's execution box signed {}: not the images the run served",
            facts.len(),
            exec.output_hash
        ))
    }))
}

/// `--tree-dump FILE` against the receipt's settlement box: `None` without a file; else what
/// held, or the problem.
fn check_tree_dump(
    file: Option<&std::path::Path>,
    parsed: &ParsedReceipt,
) -> Result<Option<Result<String, String>>, CliError> {
    let Some(path) = file else {
        return Ok(None);
    };
    let bytes = std::fs::read(path)
        .map_err(|e| CliError::Msg(format!("--tree-dump {}: {e}", path.display())))?;
    let Some(ev) = parsed.receipt.boxes.settlement.evidence.as_ref() else {
        return Ok(Some(Err(
            "--tree-dump: the receipt has no settlement evidence yet".into(),
        )));
    };
    let Some(named) = ev.walrus_blob_id.as_deref() else {
        return Ok(Some(Err(
            "--tree-dump: the settlement box names no tree dump".into(),
        )));
    };
    let id = crate::walrus::walrus_id(&bytes).map_err(CliError::Msg)?;
    if id != named {
        return Ok(Some(Err(format!(
            "--tree-dump: the file's Walrus id is {id}, the settlement box names {named}"
        ))));
    }
    let dump: serde_json::Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => return Ok(Some(Err(format!("--tree-dump: not JSON: {e}")))),
    };
    // The tree is recomputed from its values: the file must be exactly the dump of that tree
    // (so every node, the root included, follows from the values), not merely name the root.
    let values = dump["values"].as_array().cloned().unwrap_or_default();
    let pairs: Result<Vec<(haca_core::Digest, haca_core::Digest)>, String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let part = |k: usize| {
                v["value"][k]
                    .as_str()
                    .and_then(|h| h.parse().ok())
                    .ok_or_else(|| format!("values[{i}].value[{k}]: not a 32-byte hex digest"))
            };
            Ok((part(0)?, part(1)?))
        })
        .collect();
    let pairs = match pairs {
        Ok(p) => p,
        Err(e) => return Ok(Some(Err(format!("--tree-dump: {e}")))),
    };
    let rebuilt = haca_core::oz::StandardTree::build(&pairs)
        .and_then(|t| haca_core::canonical::to_vec(&t.dump(&pairs)).ok());
    if rebuilt.as_deref() != Some(&bytes[..]) {
        return Ok(Some(Err(
            "--tree-dump: it is not the tree its values make (a node, the root or the layout differs)"
                .into(),
        )));
    }
    if dump["tree"][0].as_str() != Some(ev.oz.root.as_str()) {
        return Ok(Some(Err(format!(
            "--tree-dump: its root {} is not the round's {}",
            dump["tree"][0], ev.oz.root
        ))));
    }
    let leaf = serde_json::to_value(&ev.oz.leaf).unwrap_or_default();
    if !values.iter().any(|v| v["value"] == leaf) {
        return Ok(Some(Err(
            "--tree-dump: this run's leaf is not among its values".into(),
        )));
    }
    Ok(Some(Ok(format!(
        "Walrus blob {id}: the round's tree ({} leaves, root {}) holds this run",
        values.len(),
        ev.oz.root
    ))))
}
