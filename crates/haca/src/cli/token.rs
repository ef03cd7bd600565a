//! `haca token create|revoke`: review tokens for the web panel and the cases API. An admin
//! action: from loopback on devnet, otherwise with the node's operator --token.

use super::{print_json, CliError, NodeArgs};
use clap::{Args, Subcommand};
use serde_json::json;
use std::process::ExitCode;

#[derive(Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    cmd: TokenCommand,
    #[command(flatten)]
    node: NodeArgs,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token; prints its id and role, and the token alone on the last line (shown
    /// once: the node keeps only its hash).
    Create {
        /// `reviewer` (reads, opens cases, decides) or `viewer` (reads only).
        #[arg(long, value_parser = ["reviewer", "viewer"])]
        role: String,
        /// A note kept with the token (whose it is).
        #[arg(long)]
        label: Option<String>,
        /// Print the node's answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by its id: its next request is refused (401).
    Revoke { id: String },
}

pub async fn run(a: TokenArgs) -> Result<ExitCode, CliError> {
    let client = a.node.client();
    match a.cmd {
        TokenCommand::Create { role, label, json } => {
            let v = client
                .post_json_with(
                    "/v1/review/tokens",
                    json!({"role": role, "label": label}),
                    &[],
                )
                .await
                .map_err(|e| {
                    CliError::Msg(format!(
                        "{} refused to create a review token: {e} (an admin action: run it on \
                         the devnet's machine, or pass the node's operator --token)",
                        client.base()
                    ))
                })?;
            if json {
                print_json(&v);
                return Ok(ExitCode::SUCCESS);
            }
            println!("id:       {}", v["id"].as_str().unwrap_or("?"));
            println!("role:     {}", v["role"].as_str().unwrap_or("?"));
            println!(
                "use it:   sign in at {}/ or send Authorization: Bearer <token> (shown once, below)",
                client.base()
            );
            println!("{}", v["token"].as_str().unwrap_or_default());
        }
        TokenCommand::Revoke { id } => {
            client
                .send_json(
                    reqwest::Method::DELETE,
                    &format!("/v1/review/tokens/{id}"),
                    json!({}),
                )
                .await?;
            println!("revoked review token {id} on {}", client.base());
        }
    }
    Ok(ExitCode::SUCCESS)
}
