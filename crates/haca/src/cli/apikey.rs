//! `haca apikey create`: an API key for clients that know nothing of x402 (any OpenAI SDK),
//! charged per run against a prepaid balance. An admin action: from loopback on devnet,
//! otherwise with the node's operator --token.

use super::wallet::fmt_units;
use super::{print_json, CliError, NodeArgs};
use clap::{Args, Subcommand};
use haca_pay::U256;
use serde_json::json;
use std::process::ExitCode;

#[derive(Args)]
pub struct ApiKeyArgs {
    #[command(subcommand)]
    cmd: ApiKeyCommand,
    #[command(flatten)]
    node: NodeArgs,
}

#[derive(Subcommand)]
enum ApiKeyCommand {
    /// Create a key; prints its id, account and balance, and the key alone on the last line
    /// (shown once: the node keeps only its hash).
    Create {
        /// Base units to put on the key's balance now (devnet's faucet).
        #[arg(long)]
        fund: Option<u64>,
        /// A note kept with the key.
        #[arg(long)]
        label: Option<String>,
        /// Print the node's answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by its id: its next request is refused (401). Its balance stays.
    Revoke {
        /// The id `create` printed (16 hex digits).
        id: String,
    },
}

pub async fn run(a: ApiKeyArgs) -> Result<ExitCode, CliError> {
    let client = a.node.client();
    match a.cmd {
        ApiKeyCommand::Create { fund, label, json } => {
            let mut body = json!({});
            if let Some(f) = fund {
                body["fund"] = json!(f.to_string());
            }
            if let Some(l) = label {
                body["label"] = json!(l);
            }
            let v = client
                .post_json_with("/v1/apikeys", body, &[])
                .await
                .map_err(|e| {
                    CliError::Msg(format!(
                        "{} refused to create an API key: {e} (an admin action: run it on the \
                         devnet's machine, or pass the node's operator --token)",
                        client.base()
                    ))
                })?;
            if json {
                print_json(&v);
                return Ok(ExitCode::SUCCESS);
            }
            let units = |k: &str| {
                v[k].as_str()
                    .and_then(|s| U256::from_str_radix(s, 10).ok())
                    .unwrap_or_default()
            };
            println!("id:       {}", v["id"].as_str().unwrap_or("?"));
            println!("account:  {}", v["account"].as_str().unwrap_or("?"));
            println!(
                "balance:  {} ({} base units); a run costs {}",
                fmt_units(units("balance")),
                units("balance"),
                fmt_units(units("price"))
            );
            println!("use it:   Authorization: Bearer <key> (shown once, below)");
            println!("{}", v["key"].as_str().unwrap_or_default());
        }
        ApiKeyCommand::Revoke { id } => {
            client
                .send_json(
                    reqwest::Method::DELETE,
                    &format!("/v1/apikeys/{id}"),
                    json!({}),
                )
                .await?;
            println!("revoked API key {id} on {}", client.base());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// An API key holding the price of `runs` runs of `model` and one more, from the node's
/// faucet (devnet: an admin action, allowed from loopback).
pub async fn funded_api_key(
    client: &crate::client::NodeClient,
    model: &str,
    runs: usize,
    label: &str,
) -> Result<String, CliError> {
    let node = client.get_json("/v1/node").await?;
    let payments = &node["payments"];
    let price: u128 = payments["model_prices"]
        .get(model)
        .unwrap_or(&payments["price"])
        .as_str()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| CliError::Msg("the node charges but does not say its price".into()))?;
    let fund = price.saturating_mul(runs as u128 + 1);
    let v = client
        .post_json_with(
            "/v1/apikeys",
            json!({"fund": fund.to_string(), "label": label}),
            &[],
        )
        .await
        .map_err(|e| {
            CliError::Msg(format!(
                "the node charges per run and would not fund an API key: {e} \
                 (create one with `haca apikey create --fund AMOUNT` on the node's machine)"
            ))
        })?;
    v["key"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| CliError::Msg(format!("the node's answer has no key: {v}")))
}
