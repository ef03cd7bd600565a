//! `haca blob id FILE`: a file's content address, offline. SHA-256 (hex) by default, the
//! address haca's stores and Model Hub use; with `--walrus`, the Walrus blob id the file would
//! get on Walrus (haca-walrus: RedStuff RS2 over `--shards`, mainnet's 1000 by default).
//! The id is the last line printed.

use super::CliError;
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum BlobCommand {
    /// Print FILE's content address: SHA-256 hex, or with --walrus its Walrus blob id
    /// (URL-safe base64), as the last line.
    Id(IdArgs),
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

pub fn run(cmd: &BlobCommand) -> Result<ExitCode, CliError> {
    match cmd {
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
