//! `haca chain govern`: change the validator set or the gateway registry by a governance
//! transaction, which needs approvals from more than 2/3 of the current validators' power.
//!
//! Approvals are Ed25519 signatures over `haca.gov.v1:` + JCS({chain_id, seq, action}); each
//! operator can sign with `--print-approval` and hand the JSON to whoever submits.

use super::{print_json, CliError, NodeArgs};
use crate::client::NodeClient;
use clap::{Args, Subcommand};
use haca_chain::state::{Approval, GovAction, Tx};
use haca_core::{NodeId, NodeKey};
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Subcommand, Clone)]
pub enum GovCommand {
    /// Add a validator (it signs from the height after the one that commits this).
    AddValidator {
        public_key: NodeId,
        #[arg(long, default_value_t = 1)]
        power: u64,
        #[command(flatten)]
        sign: SignArgs,
    },
    /// Remove a validator.
    RemoveValidator {
        public_key: NodeId,
        #[command(flatten)]
        sign: SignArgs,
    },
    /// Register a gateway key: its run records settle from the next height.
    RegisterGateway {
        node: NodeId,
        #[command(flatten)]
        sign: SignArgs,
    },
    /// Remove a gateway key: its later records are rejected; settled ones stay settled.
    RemoveGateway {
        node: NodeId,
        #[command(flatten)]
        sign: SignArgs,
    },
}

#[derive(Args, Clone)]
pub struct SignArgs {
    /// A validator key file to approve with (repeat for several).
    #[arg(long = "key")]
    keys: Vec<PathBuf>,
    /// A file with approvals others signed (a JSON array, or one approval); repeatable.
    #[arg(long = "approvals")]
    approvals: Vec<PathBuf>,
    /// Print this key's approval as JSON instead of submitting.
    #[arg(long)]
    print_approval: bool,
    /// Do not wait for the change to commit.
    #[arg(long)]
    no_wait: bool,
    #[command(flatten)]
    node: NodeArgs,
}

fn read_approvals(path: &PathBuf) -> Result<Vec<Approval>, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::Msg(format!("--approvals {}: {e}", path.display())))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| CliError::Msg(format!("--approvals {}: not JSON: {e}", path.display())))?;
    let list = if v.is_array() { v } else { json!([v]) };
    serde_json::from_value(list)
        .map_err(|e| CliError::Msg(format!("--approvals {}: {e}", path.display())))
}

pub async fn run(cmd: GovCommand) -> Result<ExitCode, CliError> {
    let (action, sign) = match cmd {
        GovCommand::AddValidator {
            public_key,
            power,
            sign,
        } => (GovAction::AddValidator { public_key, power }, sign),
        GovCommand::RemoveValidator { public_key, sign } => {
            (GovAction::RemoveValidator { public_key }, sign)
        }
        GovCommand::RegisterGateway { node, sign } => (GovAction::RegisterGateway { node }, sign),
        GovCommand::RemoveGateway { node, sign } => (GovAction::RemoveGateway { node }, sign),
    };
    let client = sign.node.client();
    let mut keys = Vec::new();
    for path in &sign.keys {
        let text = std::fs::read_to_string(path)
            .map_err(|e| CliError::Msg(format!("--key {}: {e}", path.display())))?;
        keys.push(
            NodeKey::from_file_string(&text)
                .map_err(|e| CliError::Msg(format!("--key {}: {e}", path.display())))?,
        );
    }
    let mut others = Vec::new();
    for path in &sign.approvals {
        others.extend(read_approvals(path)?);
    }
    if sign.print_approval {
        let (chain_id, seq) = next_seq(&client).await?;
        let mine: Vec<Approval> = keys
            .iter()
            .map(|k| Approval::sign(k, &chain_id, seq, &action))
            .collect();
        print_json(&json!(mine));
        return Ok(ExitCode::SUCCESS);
    }
    propose(&client, action, &keys, others, !sign.no_wait).await?;
    Ok(ExitCode::SUCCESS)
}

/// The chain's id and the seq the next governance change must carry.
async fn next_seq(client: &NodeClient) -> Result<(String, u64), CliError> {
    let status = client.get_json("/v1/chain/status").await?;
    let chain_id = status["chain_id"]
        .as_str()
        .ok_or_else(|| CliError::Msg("the node's /v1/chain/status names no chain".into()))?
        .to_owned();
    Ok((chain_id, status["governance_seq"].as_u64().unwrap_or(0) + 1))
}

/// Signs `action` with `keys`, adds `others`' approvals, submits it, and (with `wait`) waits
/// until it has committed. Returns its seq.
pub async fn propose(
    client: &NodeClient,
    action: GovAction,
    keys: &[NodeKey],
    others: Vec<Approval>,
    wait: bool,
) -> Result<u64, CliError> {
    let (chain_id, seq) = next_seq(client).await?;
    let mut approvals: Vec<Approval> = keys
        .iter()
        .map(|k| Approval::sign(k, &chain_id, seq, &action))
        .collect();
    approvals.extend(others);
    if approvals.is_empty() {
        return Err(CliError::Msg(
            "give approvals: --key FILE (a validator key) or --approvals FILE".into(),
        ));
    }
    let tx = Tx::Governance {
        seq,
        action,
        approvals,
    };
    client
        .send_json(reqwest::Method::POST, "/v1/chain/txs", json!(tx))
        .await?;
    eprintln!("governance change {seq} submitted to chain {chain_id}");
    if !wait {
        return Ok(seq);
    }
    let t = Instant::now();
    loop {
        let s = client.get_json("/v1/chain/status").await?;
        if s["governance_seq"].as_u64().unwrap_or(0) >= seq {
            println!(
                "governance change {seq} committed by height {}",
                s["height"]
            );
            return Ok(seq);
        }
        if t.elapsed() > Duration::from_secs(60) {
            return Err(CliError::Msg(format!(
                "governance change {seq} did not commit within 60 s"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
