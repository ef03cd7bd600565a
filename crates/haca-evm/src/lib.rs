//! haca on an EVM chain: what the x402 facilitator and the settlement anchor need, and no
//! more.
//!
//! - [`rpc`]: a JSON-RPC client over HTTP (`eth_chainId`, `eth_call`, `eth_estimateGas`,
//!   `eth_sendRawTransaction`, receipts, ...) whose errors say which of "down", "answered
//!   garbage" and "refused" happened.
//! - [`tx`]: EIP-1559 transactions, signed with a local secp256k1 key and encoded as EIP-2718
//!   bytes (alloy-consensus's types, already built for alloy-signer-local).
//! - [`contracts`]: the ABI of `HacaToken` (ERC-20 + EIP-3009) and `SettlementRegistry`, their
//!   compiled bytecode from `contracts/build/` (committed: no compiler at build time), and the
//!   names of their revert errors.
//! - [`sender`]: one gas key's transactions in nonce order, each simulated first, then waited
//!   for until it has the confirmations asked (a receipt whose block leaves the chain is
//!   reported, never taken as final).
//!
//! Invariant: nothing here knows x402 or receipts; callers map contract calls to their own
//! meaning.

pub mod anvil;
pub mod contracts;
#[cfg(test)]
mod fake_node;
pub mod rpc;
pub mod sender;
pub mod tx;

pub use alloy_primitives::{Address, Bytes, B256, U256};
pub use alloy_signer_local::PrivateKeySigner;
pub use rpc::{Rpc, RpcError, TxReceipt};
pub use sender::{Confirmed, SendError, Sender};

/// Reads a private key: 0x + 64 hex digits (or the bare 64), surrounding whitespace allowed,
/// as a key file holds it.
pub fn parse_private_key(text: &str) -> Result<PrivateKeySigner, String> {
    let t = text.trim();
    let h = t.strip_prefix("0x").unwrap_or(t);
    if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("a private key is 0x + 64 hex digits".into());
    }
    let bytes = hex::decode(h).map_err(|e| e.to_string())?;
    PrivateKeySigner::from_slice(&bytes).map_err(|e| format!("not a secp256k1 private key: {e}"))
}

/// Reads an address: 0x + 40 hex digits (any case; a mixed-case one must match its EIP-55
/// checksum).
pub fn parse_address(text: &str) -> Result<Address, String> {
    let t = text.trim();
    let ok = t.len() == 42 && t.starts_with("0x") && t[2..].bytes().all(|b| b.is_ascii_hexdigit());
    if !ok {
        return Err(format!("{t:?} is not an address (0x + 40 hex digits)"));
    }
    let lower = t[2..].bytes().all(|b| !b.is_ascii_uppercase());
    let upper = t[2..].bytes().all(|b| !b.is_ascii_lowercase());
    if lower || upper {
        return t.parse().map_err(|e| format!("{t:?}: {e}"));
    }
    Address::parse_checksummed(t, None)
        .map_err(|_| format!("{t:?}: the EIP-55 checksum does not match"))
}

/// The chain id of a CAIP-2 `eip155:N` network name.
pub fn caip2_chain_id(network: &str) -> Option<u64> {
    network.strip_prefix("eip155:")?.parse().ok()
}

/// Where `deploy` put the contracts.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Deployed {
    pub token: Address,
    pub registry: Address,
    pub chain_id: u64,
}

/// The token's EIP-712 domain and ERC-20 symbol, as deployed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenParams {
    pub name: String,
    pub version: String,
    pub symbol: String,
}

impl Default for TokenParams {
    /// USDC's domain: "USD Coin", "2"; symbol USDC.
    fn default() -> Self {
        TokenParams {
            name: "USD Coin".into(),
            version: "2".into(),
            symbol: "USDC".into(),
        }
    }
}

/// Deploys a HacaToken (the sender its minter) and a SettlementRegistry (the sender its owner
/// and first poster). From anvil's account 0 on a fresh chain, the token lands at
/// `0x5FbDB2315678afecb367f032d93F642f64180aa3`, devnet's asset.
pub async fn deploy(sender: &Sender, token: &TokenParams) -> Result<Deployed, SendError> {
    let t = sender
        .send(
            None,
            contracts::token_init_code(&token.name, &token.version, &token.symbol),
        )
        .await?;
    let r = sender.send(None, contracts::registry_init_code()).await?;
    let missing = |what: &str, hash| SendError::Rpc {
        error: RpcError::Garbage {
            url: sender.rpc.url().to_owned(),
            method: "eth_getTransactionReceipt".into(),
            detail: format!("the {what} deployment's receipt names no contract address"),
        },
        sent: Some(hash),
    };
    Ok(Deployed {
        token: t.contract_address.ok_or_else(|| missing("token", t.hash))?,
        registry: r
            .contract_address
            .ok_or_else(|| missing("registry", r.hash))?,
        chain_id: sender.chain_id(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anvil_account_0_key_is_its_address() {
        let k = parse_private_key(anvil::DEV_KEYS[0]).unwrap();
        assert_eq!(
            k.address(),
            "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
                .parse::<Address>()
                .unwrap()
        );
        assert!(parse_private_key("0x12").is_err());
        assert!(
            parse_private_key(&"0".repeat(64)).is_err(),
            "zero is no key"
        );
    }

    #[test]
    fn addresses_are_checked() {
        let a = "0x5FbDB2315678afecb367f032d93F642f64180aa3";
        assert_eq!(
            parse_address(a).unwrap(),
            parse_address(&a.to_lowercase()).unwrap()
        );
        assert!(parse_address("0x5FbDB2315678afecb367f032d93F642f64180aA3")
            .unwrap_err()
            .contains("checksum"));
        assert!(parse_address("5FbDB2315678afecb367f032d93F642f64180aa3").is_err());
        assert_eq!(caip2_chain_id("eip155:31337"), Some(31337));
        assert_eq!(caip2_chain_id("solana:abc"), None);
    }
}
