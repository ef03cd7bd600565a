//! `haca blob id FILE`: a file's content address, offline. SHA-256 (hex) by default, the
//! address haca's stores and Model Hub use; with `--walrus`, the Walrus blob id the file would
//! get on Walrus (haca-walrus: RedStuff RS2 over `--shards`, mainnet's 1000 by default).
//! The id is the last line printed. `put` and `get` speak Walrus's HTTP API (a publisher's
//! `PUT /v1/blobs`, an aggregator's `GET /v1/blobs/{id}`), which a haca node serves too;
//! every id is checked against the bytes (`crate::walrus`).

use super::CliError;
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum BlobCommand {
    /// Print FILE's content address: SHA-256 hex, or with --walrus its Walrus blob id
    /// (URL-safe base64), as the last line.
    Id(IdArgs),
    /// Store FILE with a Walrus publisher (default: the node, HACA_NODE; an admin action
    /// there); prints the blob id, checked against the file's own, as the last line.
    Put(PutArgs),
    /// Read blob ID from a Walrus aggregator (default: the node) into --out; the bytes must
    /// give that id.
    Get(GetArgs),
}

#[derive(Args)]
pub struct PutArgs {
    file: PathBuf,
    /// The publisher's base URL [default: the node's].
    #[arg(long, env = "HACA_WALRUS_PUBLISHER")]
    publisher: Option<String>,
    /// Storage epochs to pay for (Walrus's `?epochs=`).
    #[arg(long)]
    epochs: Option<u32>,
    #[command(flatten)]
    node: super::NodeArgs,
}

#[derive(Args)]
pub struct GetArgs {
    /// The Walrus blob id. URL-safe base64 may begin with `-`, so it is never taken for a flag.
    #[arg(allow_hyphen_values = true)]
    blob_id: String,
    /// Where to write the bytes.
    #[arg(long)]
    out: PathBuf,
    /// The aggregator's base URL [default: the node's].
    #[arg(long, env = "HACA_WALRUS_AGGREGATOR")]
    aggregator: Option<String>,
    #[command(flatten)]
    node: super::NodeArgs,
}

#[derive(Args)]
pub struct IdArgs {
    file: PathBuf,
    /// The Walrus blob id instead of SHA-256.
    #[arg(long)]
    walrus: bool,
    /// The Walrus committee's number of shards: the id depends on it (with --walrus).
    #[arg(long, default_value_t = haca_walrus::MAINNET_SHARDS, requires = "walrus")]
    shards: u16,
}

pub async fn run(cmd: &BlobCommand) -> Result<ExitCode, CliError> {
    match cmd {
        BlobCommand::Put(a) => {
            let bytes = std::fs::read(&a.file)
                .map_err(|e| CliError::Msg(format!("reading {}: {e}", a.file.display())))?;
            let publisher = a.publisher.clone().unwrap_or_else(|| a.node.node.clone());
            let client = crate::walrus::WalrusClient::new(Some(publisher), None);
            // The node's operator token goes to the node only, never to another publisher.
            let auth = (a.publisher.is_none())
                .then_some(a.node.token.as_ref())
                .flatten()
                .map(|t| format!("Bearer {t}"));
            let headers: Vec<(&str, &str)> = auth
                .as_deref()
                .map(|v| ("authorization", v))
                .into_iter()
                .collect();
            let stored = client
                .store(bytes, a.epochs, &headers)
                .await
                .map_err(CliError::Msg)?;
            println!(
                "{} ({})",
                a.file.display(),
                if stored.newly_created {
                    "newly stored"
                } else {
                    "already stored"
                }
            );
            println!("{}", stored.blob_id);
            Ok(ExitCode::SUCCESS)
        }
        BlobCommand::Get(a) => {
            let aggregator = a.aggregator.clone().unwrap_or_else(|| a.node.node.clone());
            let client = crate::walrus::WalrusClient::new(None, Some(aggregator));
            let bytes = client.read(&a.blob_id).await.map_err(CliError::Msg)?;
            std::fs::write(&a.out, &bytes)
                .map_err(|e| CliError::Msg(format!("{}: {e}", a.out.display())))?;
            println!("{} bytes, blob id checked", bytes.len());
            println!("{}", a.out.display());
            Ok(ExitCode::SUCCESS)
        }
        BlobCommand::Id(a) => {
            let bytes = std::fs::read(&a.file)
                .map_err(|e| CliError::Msg(format!("reading {}: {e}", a.file.display())))?;
            let id = if a.walrus {
                haca_walrus::blob_id(&bytes, a.shards)
                    .map_err(|e| CliError::Msg(format!("{}: {e}", a.file.display())))?
                    .to_string()
            } else {
                haca_core::hash::sha256(&bytes).to_hex()
            };
            println!("{id}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::BlobCommand;
    use clap::Parser;

    #[derive(Parser)]
    struct Blob {
        #[command(subcommand)]
        command: BlobCommand,
    }

    #[test]
    fn a_walrus_id_that_begins_with_a_dash_is_an_id_not_a_flag() {
        let id = "-bO37zpsH1fJ_xx-DcAbOpxzbPhOhSCNKaq_QMaalmE";
        let parsed = Blob::try_parse_from(["blob", "get", id, "--out", "tree.json"])
            .unwrap_or_else(|e| panic!("{e}"));
        let BlobCommand::Get(args) = parsed.command else {
            panic!("not get")
        };
        assert_eq!(args.blob_id, id);
    }
}
