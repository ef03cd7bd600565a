//! The client's x402 wallet: one secp256k1 key in `$HACA_HOME/wallet.key` (default
//! `~/.haca`), created on first use. `haca infer` pays a node's 402 with it, funding it from
//! the devnet faucet the first time it is short; `haca wallet` shows it and `haca wallet fund`
//! is the devnet faucet for any address.
//!
//! Amounts are in the asset's base units (6 decimals, as USDC: 1000 = 0.001000).

use super::{print_json, CliError, NodeArgs};
use crate::client::{NodeClient, PaymentDemand};
use clap::{Args, Subcommand};
use haca_pay::types::PAYMENT_SIGNATURE_HEADER;
use haca_pay::{
    build_payment, decode_payment_required_header, encode_header, select_requirement, PayPolicy,
    PrivateKeySigner, B256, U256,
};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The key file's name under HACA_HOME.
const KEY_FILE: &str = "wallet.key";
/// Decimals of devnet's token (USDC's).
const DECIMALS: usize = 6;
/// The least the automatic top-up mints: 1.000000.
const MIN_TOP_UP: u64 = 1_000_000;
/// The automatic top-up covers this many runs at the asked price.
const TOP_UP_RUNS: u64 = 100;

#[derive(Args)]
pub struct WalletArgs {
    #[command(subcommand)]
    cmd: Option<WalletCommand>,
    /// Print `{address, key_file, balance}` (or the faucet's answer) as JSON.
    #[arg(long, global = true)]
    json: bool,
    #[command(flatten)]
    node: NodeArgs,
}

#[derive(Subcommand)]
enum WalletCommand {
    /// Mint AMOUNT base units of the node's token to ADDRESS (devnet's faucet: an admin
    /// action, allowed from loopback on devnet).
    Fund {
        /// 0x + 40 hex digits.
        address: String,
        /// Base units (6 decimals: 1000000 = 1.000000).
        amount: u64,
    },
}

/// HACA_HOME, or `~/.haca`.
pub fn haca_home() -> Result<PathBuf, CliError> {
    if let Some(h) = std::env::var_os("HACA_HOME").filter(|h| !h.is_empty()) {
        return Ok(PathBuf::from(h));
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".haca")),
        None => Err(CliError::Msg(
            "no home directory for the wallet: set HACA_HOME".into(),
        )),
    }
}

/// The wallet key in `home`, created (mode 0600) when there is none.
pub fn load_or_create_wallet(home: &Path) -> Result<PrivateKeySigner, CliError> {
    let path = home.join(KEY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => parse_key(&text)
            .map_err(|e| CliError::Msg(format!("wallet key {}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            create_dir_private(home)?;
            let signer = PrivateKeySigner::random();
            let text = format!("0x{}\n", hex::encode(signer.to_bytes().as_slice()));
            haca_store::write_atomic(&path, text.as_bytes(), true)
                .map_err(|e| CliError::Msg(format!("wallet key: {e}")))?;
            eprintln!(
                "created wallet {} in {}",
                signer.address().to_checksum(None),
                path.display()
            );
            Ok(signer)
        }
        Err(e) => Err(CliError::Msg(format!("wallet key {}: {e}", path.display()))),
    }
}

fn create_dir_private(dir: &Path) -> Result<(), CliError> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)
        .map_err(|e| CliError::Msg(format!("wallet directory {}: {e}", dir.display())))
}

fn parse_key(text: &str) -> Result<PrivateKeySigner, String> {
    let t = text.trim();
    let t = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    let bytes = hex::decode(t).map_err(|_| "not hex".to_owned())?;
    if bytes.len() != 32 {
        return Err(format!("{} bytes, expected 32", bytes.len()));
    }
    PrivateKeySigner::from_bytes(&B256::from_slice(&bytes))
        .map_err(|_| "not a valid secp256k1 key".to_owned())
}

/// Base units as a decimal with 6 places: 1000000 -> 1.000000.
pub fn fmt_units(v: U256) -> String {
    let s = v.to_string();
    let s = format!("{s:0>width$}", width = DECIMALS + 1);
    let (int, frac) = s.split_at(s.len() - DECIMALS);
    format!("{int}.{frac}")
}

fn units_field(v: &Value) -> Option<U256> {
    match v {
        Value::String(s) => U256::from_str_radix(s, 10).ok(),
        Value::Number(n) => n.as_u64().map(U256::from),
        _ => None,
    }
}

/// The wallet's balance on the node's ledger, read with a proof that this wallet holds the
/// address (a balance is its holder's to read; see `haca_pay::proof`).
async fn balance(client: &NodeClient, signer: &PrivateKeySigner) -> Result<U256, CliError> {
    let path = format!("/v1/x402/balance/{}", signer.address().to_checksum(None));
    let at = crate::now_ms() / 1000;
    let proof = haca_pay::proof::sign_read(signer, &path, at);
    let v = client
        .get_json_with(
            &path,
            &[
                ("x-haca-proof", &proof),
                ("x-haca-proof-time", &at.to_string()),
            ],
        )
        .await?;
    units_field(&v["balance"])
        .ok_or_else(|| CliError::Msg(format!("the node sent a balance that is not a number: {v}")))
}

/// `POST /v1/x402/faucet`: mints `amount` to `who`; returns the node's answer.
async fn faucet(client: &NodeClient, who: &str, amount: U256) -> Result<Value, CliError> {
    Ok(client
        .post_json_with(
            "/v1/x402/faucet",
            json!({"address": who, "amount": amount.to_string()}),
            &[],
        )
        .await?)
}

pub async fn run(a: WalletArgs) -> Result<ExitCode, CliError> {
    let client = a.node.client();
    match a.cmd {
        None => {
            let home = haca_home()?;
            let signer = load_or_create_wallet(&home)?;
            let address = signer.address().to_checksum(None);
            let key_file = home.join(KEY_FILE);
            let bal = balance(&client, &signer).await;
            if a.json {
                let mut v = json!({
                    "address": address,
                    "key_file": key_file.display().to_string(),
                });
                match &bal {
                    Ok(b) => v["balance"] = json!(b.to_string()),
                    Err(e) => v["balance_error"] = json!(e.to_string()),
                }
                print_json(&v);
            } else {
                println!("address:  {address}");
                println!("key file: {}", key_file.display());
                match &bal {
                    Ok(b) => println!(
                        "balance:  {} ({b} base units) on {}",
                        fmt_units(*b),
                        client.base()
                    ),
                    Err(e) => println!("balance:  unknown: {e}"),
                }
            }
        }
        Some(WalletCommand::Fund { address, amount }) => {
            let v = faucet(&client, &address, U256::from(amount))
                .await
                .map_err(|e| faucet_refused(e, client.base()))?;
            if a.json {
                print_json(&v);
            } else {
                let bal = units_field(&v["balance"]).unwrap_or_default();
                println!(
                    "funded {} with {} ({amount} base units); balance {} on {}",
                    v["address"].as_str().unwrap_or(&address),
                    fmt_units(U256::from(amount)),
                    fmt_units(bal),
                    client.base()
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A faucet failure in plain words: a refusal (not devnet, not loopback, no payments) says
/// what the faucet needs; an unreachable node stays as it is.
fn faucet_refused(e: CliError, node: &str) -> CliError {
    match e {
        CliError::Client(crate::client::ClientError::Unreachable { .. }) => e,
        e => CliError::Msg(format!(
            "the faucet at {node} refused: {e} (the faucet is devnet's: a `haca devnet` that charges \
             (--price-per-request above 0), reached from loopback or with its operator --token)"
        )),
    }
}

/// Pays the node's 402 from the wallet and sends the request again, once, unless the price
/// is over `max_amount`: funds the wallet from the devnet faucet first when its balance is
/// short of the price. Returns the node's
/// answer (its receipt's payment box says what was paid).
pub async fn pay_and_retry(
    client: &NodeClient,
    path: &str,
    body: Value,
    headers: &[(&str, &str)],
    demand: PaymentDemand,
    max_amount: U256,
) -> Result<Value, CliError> {
    let required = decode_payment_required_header(&demand.required).map_err(|e| {
        CliError::Msg(format!(
            "the node asks for payment ({}) with a PAYMENT-REQUIRED header that does not decode: {e}",
            demand.reason
        ))
    })?;
    let policy = PayPolicy {
        max_amount: Some(max_amount),
        ..PayPolicy::default()
    };
    let selected = select_requirement(&required, &policy).map_err(|e| {
        CliError::Msg(format!(
            "the node asks for payment ({}), but this wallet will not pay it: {e} (the cap is \
             --max-payment {max_amount} base units)",
            demand.reason
        ))
    })?;
    let price = selected.amount();
    let signer = load_or_create_wallet(&haca_home()?)?;
    let me = signer.address();
    let have = balance(client, &signer).await.map_err(|e| {
        CliError::Msg(format!(
            "the node asks {} ({price} base units) per run ({}); cannot read wallet {me}'s balance: {e}",
            fmt_units(price),
            demand.reason
        ))
    })?;
    if have < price {
        let top_up = (price.saturating_mul(U256::from(TOP_UP_RUNS))).max(U256::from(MIN_TOP_UP));
        faucet(client, &me.to_checksum(None), top_up)
            .await
            .map_err(|e| {
                CliError::Msg(format!(
                    "wallet {me} holds {}, short of the {} ({price} base units) this node asks \
                     per run, and funding it failed: {}. The node's 402: {}",
                    fmt_units(have),
                    fmt_units(price),
                    faucet_refused(e, client.base()),
                    demand.reason
                ))
            })?;
        eprintln!(
            "funded wallet {me} with {} from the devnet faucet",
            fmt_units(top_up)
        );
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let payment = build_payment(
        &selected,
        &signer,
        now,
        B256::from(rand::random::<[u8; 32]>()),
    );
    let header = encode_header(&payment);
    let mut with_pay: Vec<(&str, &str)> = headers.to_vec();
    with_pay.push((PAYMENT_SIGNATURE_HEADER, &header));
    match client.post_json_x402(path, body, &with_pay).await? {
        Ok((answer, _)) => Ok(answer),
        Err(again) => Err(CliError::Msg(format!(
            "the node refused the payment of {} ({price} base units) from wallet {me}: {}",
            fmt_units(price),
            again.reason
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_print_with_six_decimals() {
        assert_eq!(fmt_units(U256::from(0u64)), "0.000000");
        assert_eq!(fmt_units(U256::from(1000u64)), "0.001000");
        assert_eq!(fmt_units(U256::from(1_000_000u64)), "1.000000");
        assert_eq!(fmt_units(U256::from(123_456_789u64)), "123.456789");
    }

    #[test]
    fn the_key_file_is_created_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let a = load_or_create_wallet(&home).unwrap();
        let b = load_or_create_wallet(&home).unwrap();
        assert_eq!(a.address(), b.address());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(home.join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(parse_key("0x1234").is_err());
        assert!(parse_key("zz").is_err());
    }
}
