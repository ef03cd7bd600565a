//! One gas key's transactions: simulated first (a call the chain would refuse is refused
//! here, with its reason, before any gas is spent), signed in nonce order, broadcast, then
//! waited for until the receipt's block has the confirmations asked. A receipt whose block
//! leaves the chain while waiting (a reorg) is noticed: the transaction is broadcast again
//! and waited for anew, never reported final from a block that is gone.

use crate::contracts::{decode_revert, Revert};
use crate::rpc::{Rpc, RpcError, TxReceipt};
use crate::tx::{sign_eip1559, SignedTx, TxRequest};
use alloy_primitives::{Address, Bytes, B256, U256};
use alloy_signer_local::PrivateKeySigner;
use alloy_sol_types::SolCall;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// A transaction in a block with enough confirmations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Confirmed {
    pub hash: B256,
    pub block_number: u64,
    pub block_hash: B256,
    pub gas_used: u64,
    /// The deployed contract, for a deployment.
    pub contract_address: Option<Address>,
}

impl From<&TxReceipt> for Confirmed {
    fn from(r: &TxReceipt) -> Confirmed {
        Confirmed {
            hash: r.transaction_hash,
            block_number: r.block_number,
            block_hash: r.block_hash,
            gas_used: r.gas_used,
            contract_address: r.contract_address,
        }
    }
}

/// Why a transaction did not get confirmed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SendError {
    /// The simulation reverted: nothing was broadcast.
    #[error("refused by the contract before sending: {} ({})", .0.message, .0.code)]
    Refused(Revert),
    /// Mined and reverted: gas spent, nothing else changed.
    #[error("transaction {hash} reverted in block {block}")]
    RevertedOnChain { hash: B256, block: u64 },
    /// The RPC failed; `sent` says whether the transaction may have been broadcast.
    #[error("{error}{}", .sent.map(|h| format!(" (transaction {h} was broadcast; its outcome is unknown)")).unwrap_or_default())]
    Rpc { error: RpcError, sent: Option<B256> },
    /// Broadcast, and not confirmed in time.
    #[error("transaction {hash} was not confirmed within {waited:?}")]
    Timeout { hash: B256, waited: Duration },
}

impl SendError {
    /// Whether the same transaction may succeed if tried later.
    pub fn is_transient(&self) -> bool {
        match self {
            SendError::Rpc { error, .. } => error.is_transient(),
            SendError::Timeout { .. } => true,
            SendError::Refused(_) | SendError::RevertedOnChain { .. } => false,
        }
    }
}

/// Sends transactions from one key on one chain.
pub struct Sender {
    pub rpc: Arc<Rpc>,
    key: PrivateKeySigner,
    chain_id: u64,
    /// Blocks on top of the receipt's (1: the receipt's block itself suffices).
    pub confirmations: u64,
    pub poll: Duration,
    pub timeout: Duration,
    /// How long fees asked of the chain are reused (see [`FEES_FOR`]).
    pub fees_for: Duration,
    next_nonce: Mutex<Option<u64>>,
    /// The last fees asked, and when.
    fees: std::sync::Mutex<Option<(std::time::Instant, (u128, u128))>>,
}

/// How long a sender reuses the fees it asked for: about a block on the chains haca settles on
/// (Base: 2 s), where the max fee's headroom (twice the base fee) covers several blocks of
/// EIP-1559's rise (12.5% at most a block). Saves two RPC round trips per transaction when
/// settlements come faster than blocks.
pub const FEES_FOR: Duration = Duration::from_secs(2);

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("rpc", &self.rpc)
            .field("address", &self.key.address())
            .field("chain_id", &self.chain_id)
            .finish()
    }
}

impl Sender {
    /// A sender for `key` on the chain `rpc` serves (its chain id is asked once here).
    pub async fn connect(rpc: Arc<Rpc>, key: PrivateKeySigner) -> Result<Self, RpcError> {
        let chain_id = rpc.chain_id().await?;
        Ok(Sender {
            rpc,
            key,
            chain_id,
            confirmations: 1,
            poll: Duration::from_millis(100),
            timeout: Duration::from_secs(120),
            fees_for: FEES_FOR,
            next_nonce: Mutex::new(None),
            fees: std::sync::Mutex::new(None),
        })
    }

    pub fn address(&self) -> Address {
        self.key.address()
    }

    pub fn chain_id(&self) -> u64 {
        self.chain_id
    }

    /// Forgets the nonce this sender counted, so that the next transaction asks the chain (after
    /// a reorg, the chain's count may be lower than ours).
    pub async fn forget_nonce(&self) {
        *self.next_nonce.lock().await = None;
    }

    /// A view call, decoded.
    pub async fn view<C: SolCall>(&self, to: Address, call: &C) -> Result<C::Return, RpcError> {
        let out = self.rpc.call(None, to, &call.abi_encode()).await?;
        C::abi_decode_returns(&out).map_err(|e| RpcError::Garbage {
            url: self.rpc.url().to_owned(),
            method: "eth_call".into(),
            detail: format!("the return of {} does not decode: {e}", C::SIGNATURE),
        })
    }

    /// Simulates `call` from this key: the contract's refusal, decoded, or the gas it needs.
    pub async fn simulate(&self, to: Option<Address>, data: &[u8]) -> Result<u64, SendError> {
        match self.rpc.estimate_gas(self.address(), to, data).await {
            Ok(g) => Ok(g),
            Err(RpcError::Reverted { data, message, .. }) => {
                Err(SendError::Refused(if data.is_empty() {
                    Revert {
                        code: "reverted",
                        message,
                    }
                } else {
                    decode_revert(&data)
                }))
            }
            Err(error) => Err(SendError::Rpc { error, sent: None }),
        }
    }

    /// Simulates, signs, broadcasts and waits for `data` sent to `to` (a deployment when
    /// `None`) to be confirmed.
    pub async fn send(&self, to: Option<Address>, data: Bytes) -> Result<Confirmed, SendError> {
        let gas = self.simulate(to, &data).await?;
        let signed = self.sign_and_broadcast(to, data, gas).await?;
        self.wait(&signed).await
    }

    /// (max fee, tip) per gas: the chain's, asked at most once per `fees_for`.
    async fn fees(&self) -> Result<(u128, u128), RpcError> {
        let fresh = |at: &std::time::Instant| at.elapsed() < self.fees_for;
        if let Some((at, fees)) = *self.fees.lock().expect("never poisoned") {
            if fresh(&at) {
                return Ok(fees);
            }
        }
        let fees = self.ask_fees().await?;
        *self.fees.lock().expect("never poisoned") = Some((std::time::Instant::now(), fees));
        Ok(fees)
    }

    async fn ask_fees(&self) -> Result<(u128, u128), RpcError> {
        let tip = match self.rpc.max_priority_fee().await {
            Ok(t) => t,
            Err(e) if e.is_transient() => return Err(e),
            Err(_) => 1_000_000_000,
        };
        let base = self.rpc.base_fee().await?.unwrap_or(0);
        Ok((base.saturating_mul(2).saturating_add(tip), tip))
    }

    async fn sign_and_broadcast(
        &self,
        to: Option<Address>,
        data: Bytes,
        gas: u64,
    ) -> Result<SignedTx, SendError> {
        let rpc_err = |error| SendError::Rpc { error, sent: None };
        let (max_fee, tip) = self.fees().await.map_err(rpc_err)?;
        let mut next = self.next_nonce.lock().await;
        for attempt in 0..2 {
            let nonce = match *next {
                Some(n) => n,
                None => self
                    .rpc
                    .pending_nonce(self.address())
                    .await
                    .map_err(rpc_err)?,
            };
            let signed = sign_eip1559(
                &TxRequest {
                    chain_id: self.chain_id,
                    nonce,
                    to,
                    value: U256::ZERO,
                    data: data.clone(),
                    // Headroom over the estimate: storage costs can move between the two.
                    gas_limit: gas.saturating_mul(6) / 5 + 10_000,
                    max_fee_per_gas: max_fee,
                    max_priority_fee_per_gas: tip,
                },
                &self.key,
            );
            match self.rpc.send_raw(&signed.raw).await {
                Ok(_) => {
                    *next = Some(nonce + 1);
                    return Ok(signed);
                }
                // Our count went stale (another sender used this key, or a transaction
                // dropped): ask the chain once more.
                Err(RpcError::Node { message, .. })
                    if attempt == 0 && message.to_lowercase().contains("nonce") =>
                {
                    tracing::warn!("EVM nonce {nonce} refused ({message}); asking the chain");
                    *next = None;
                }
                Err(error) => {
                    // Whether it arrived is unknown: start again from the chain's count.
                    *next = None;
                    let sent = error.is_transient().then_some(signed.hash);
                    return Err(SendError::Rpc { error, sent });
                }
            }
        }
        unreachable!("the second attempt returns")
    }

    /// Waits for `signed` to be in a block with `confirmations`, broadcasting it again if its
    /// block is reorganized away.
    pub async fn wait(&self, signed: &SignedTx) -> Result<Confirmed, SendError> {
        let start = Instant::now();
        let hash = signed.hash;
        let rpc_err = |error| SendError::Rpc {
            error,
            sent: Some(hash),
        };
        // Polls quickly first (an instantly mining chain answers within milliseconds), then
        // backs off to `poll`.
        let mut pause = Duration::from_millis(5).min(self.poll);
        // The block the transaction was last seen in: a receipt gone since means a reorg took
        // it out, and it is broadcast again.
        let mut seen_in: Option<u64> = None;
        loop {
            if start.elapsed() > self.timeout {
                return Err(SendError::Timeout {
                    hash,
                    waited: start.elapsed(),
                });
            }
            let receipt = match self.rpc.receipt(hash).await {
                Ok(r) => r,
                Err(e) if e.is_transient() => {
                    tracing::warn!("waiting for {hash}: {e}");
                    tokio::time::sleep(self.poll * 5).await;
                    continue;
                }
                Err(e) => return Err(rpc_err(e)),
            };
            let Some(r) = receipt else {
                if let Some(block) = seen_in.take() {
                    tracing::warn!(
                        "transaction {hash} left block {block} (reorg): broadcasting it again"
                    );
                    // Already known or already mined again: either is fine.
                    let _ = self.rpc.send_raw(&signed.raw).await;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(self.poll);
                continue;
            };
            if !r.success {
                return Err(SendError::RevertedOnChain {
                    hash,
                    block: r.block_number,
                });
            }
            if let Some(c) = self.confirmed(&r).await.map_err(rpc_err)? {
                return Ok(c);
            }
            seen_in = Some(r.block_number);
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(self.poll);
        }
    }

    /// `Some` once `r`'s block is still on the chain with enough blocks on top.
    pub async fn confirmed(&self, r: &TxReceipt) -> Result<Option<Confirmed>, RpcError> {
        // With one confirmation the receipt's own block is enough: no need to ask the head.
        if self.confirmations > 1 {
            let head = self.rpc.block_number().await?;
            if head + 1 < r.block_number + self.confirmations {
                return Ok(None);
            }
        }
        if self.rpc.block_hash(r.block_number).await? != Some(r.block_hash) {
            return Ok(None);
        }
        Ok(Some(Confirmed::from(r)))
    }

    /// Whether a confirmed transaction's block is still on the chain (`false` after a reorg
    /// deeper than the confirmations).
    pub async fn still_on_chain(&self, c: &Confirmed) -> Result<bool, RpcError> {
        Ok(
            self.rpc.block_hash(c.block_number).await? == Some(c.block_hash)
                && self
                    .rpc
                    .receipt(c.hash)
                    .await?
                    .is_some_and(|r| r.block_hash == c.block_hash),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_node::{count, serve};
    use serde_json::{json, Value};

    #[tokio::test]
    async fn fees_are_asked_once_per_block_time() {
        let (url, calls) = serve(|req: &Value| match req["method"].as_str().unwrap() {
            "eth_chainId" => Ok(json!("0x2105")),
            "eth_maxPriorityFeePerGas" => Ok(json!("0x3b9aca00")),
            "eth_getBlockByNumber" => Ok(json!({"number": "0x10", "baseFeePerGas": "0x64"})),
            m => Err(json!({"code": -32601, "message": format!("no {m}")})),
        })
        .await;
        let rpc = Arc::new(Rpc::new(&url, Duration::from_secs(5)));
        let key = crate::parse_private_key(&format!("0x{}", "11".repeat(32))).unwrap();
        let mut sender = Sender::connect(rpc, key).await.unwrap();
        sender.fees_for = Duration::from_millis(300);
        let expect = (2 * 100 + 1_000_000_000, 1_000_000_000);
        assert_eq!(sender.fees().await.unwrap(), expect);
        assert_eq!(sender.fees().await.unwrap(), expect);
        assert_eq!(
            count(&calls, "eth_maxPriorityFeePerGas"),
            1,
            "the second is reused"
        );
        assert_eq!(count(&calls, "eth_getBlockByNumber"), 1);
        tokio::time::sleep(Duration::from_millis(350)).await;
        sender.fees().await.unwrap();
        assert_eq!(
            count(&calls, "eth_maxPriorityFeePerGas"),
            2,
            "asked again once stale"
        );
        assert_eq!(count(&calls, "eth_getBlockByNumber"), 2);
    }
}
