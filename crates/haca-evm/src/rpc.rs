//! Ethereum JSON-RPC 2.0 over HTTP, the handful of methods haca uses. Each error says which
//! of three things happened: the node could not be reached ([`RpcError::Unreachable`],
//! [`RpcError::Http`]), it answered something that is not JSON-RPC ([`RpcError::Garbage`]),
//! or it answered an error object ([`RpcError::Node`], and [`RpcError::Reverted`] when the
//! EVM reverted, with the revert data).

use alloy_primitives::{Address, Bytes, B256, U256};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Why an RPC call did not answer a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RpcError {
    #[error("EVM RPC {url} is unreachable ({method}): {detail}")]
    Unreachable {
        url: String,
        method: String,
        detail: String,
    },
    #[error("EVM RPC {url} answered HTTP {status} to {method}: {body}")]
    Http {
        url: String,
        method: String,
        status: u16,
        body: String,
    },
    #[error(
        "EVM RPC {url} answered {method} with something that is not a JSON-RPC answer: {detail}"
    )]
    Garbage {
        url: String,
        method: String,
        detail: String,
    },
    #[error("EVM RPC refused {method}: {message} (code {code})")]
    Node {
        method: String,
        code: i64,
        message: String,
    },
    #[error("{method} reverted: {message}")]
    Reverted {
        method: String,
        message: String,
        /// The revert data (an error selector and its arguments), when the node gave it.
        data: Bytes,
    },
}

/// Whether `e` is the node refusing a request as asked (what a too-long `eth_getLogs` range
/// gets: a JSON-RPC error, or a 4xx other than 429), not the node being unavailable.
fn refuses_range(e: &RpcError) -> bool {
    match e {
        RpcError::Node { .. } => true,
        RpcError::Http { status, .. } => (400..500).contains(status) && *status != 429,
        _ => false,
    }
}

impl RpcError {
    /// Whether trying again later may succeed: the node was down or answered garbage (not a
    /// refusal or a revert, which would be refused again).
    pub fn is_transient(&self) -> bool {
        match self {
            RpcError::Unreachable { .. } | RpcError::Garbage { .. } => true,
            RpcError::Http { status, .. } => *status >= 500 || *status == 429,
            RpcError::Node { .. } | RpcError::Reverted { .. } => false,
        }
    }
}

/// A transaction receipt, the fields haca reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxReceipt {
    pub transaction_hash: B256,
    pub block_number: u64,
    pub block_hash: B256,
    /// `true`: executed; `false`: reverted (its gas is spent, nothing else changed).
    pub success: bool,
    pub gas_used: u64,
    pub contract_address: Option<Address>,
}

/// An event log, the fields haca reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Log {
    pub topics: Vec<B256>,
    pub data: Bytes,
    pub transaction_hash: B256,
    pub block_number: u64,
}

/// A JSON-RPC client of one node.
pub struct Rpc {
    url: String,
    http: reqwest::Client,
    id: AtomicU64,
}

impl std::fmt::Debug for Rpc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rpc").field("url", &self.url).finish()
    }
}

/// Parses a JSON-RPC quantity (`0x` + hex, no leading zeros required).
pub fn quantity(v: &Value) -> Option<U256> {
    let s = v.as_str()?.strip_prefix("0x")?;
    if s.is_empty() || s.len() > 64 {
        return None;
    }
    U256::from_str_radix(s, 16).ok()
}

fn data_of(v: &Value) -> Option<Bytes> {
    let s = v.as_str()?.strip_prefix("0x")?;
    hex::decode(s).ok().map(Bytes::from)
}

fn b256_of(v: &Value) -> Option<B256> {
    let b = data_of(v)?;
    (b.len() == 32).then(|| B256::from_slice(&b))
}

fn hex_of(b: &[u8]) -> String {
    format!("0x{}", hex::encode(b))
}

impl Rpc {
    /// A client of the node at `url`, each call bounded by `timeout`.
    pub fn new(url: &str, timeout: Duration) -> Self {
        Rpc {
            url: url.to_owned(),
            http: reqwest::Client::builder()
                .timeout(timeout)
                .build()
                .expect("an HTTP client builds"),
            id: AtomicU64::new(1),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// One call: `method(params)` -> its `result` (which may be JSON null).
    pub async fn call_raw(&self, method: &str, params: Value) -> Result<Value, RpcError> {
        let id = self.id.fetch_add(1, Ordering::Relaxed);
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let resp = self
            .http
            .post(&self.url)
            .json(&body)
            .send()
            .await
            .map_err(|e| RpcError::Unreachable {
                url: self.url.clone(),
                method: method.into(),
                detail: e.to_string(),
            })?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| RpcError::Unreachable {
            url: self.url.clone(),
            method: method.into(),
            detail: e.to_string(),
        })?;
        let snippet = || String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
        let v: Value = match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(e) if status.is_success() => {
                return Err(RpcError::Garbage {
                    url: self.url.clone(),
                    method: method.into(),
                    detail: format!("{e}: {:?}", snippet()),
                })
            }
            Err(_) => {
                return Err(RpcError::Http {
                    url: self.url.clone(),
                    method: method.into(),
                    status: status.as_u16(),
                    body: snippet(),
                })
            }
        };
        if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
            let code = err.get("code").and_then(Value::as_i64).unwrap_or(0);
            let message = err
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("no message")
                .to_owned();
            let data = err.get("data").and_then(data_of);
            return Err(match data {
                Some(data) if code == 3 || message.contains("revert") => RpcError::Reverted {
                    method: method.into(),
                    message,
                    data,
                },
                _ if message.contains("revert") => RpcError::Reverted {
                    method: method.into(),
                    message,
                    data: Bytes::new(),
                },
                _ => RpcError::Node {
                    method: method.into(),
                    code,
                    message,
                },
            });
        }
        if !status.is_success() {
            return Err(RpcError::Http {
                url: self.url.clone(),
                method: method.into(),
                status: status.as_u16(),
                body: snippet(),
            });
        }
        if v.get("jsonrpc").and_then(Value::as_str) != Some("2.0")
            || v.get("id") != Some(&json!(id))
        {
            return Err(RpcError::Garbage {
                url: self.url.clone(),
                method: method.into(),
                detail: format!("not a JSON-RPC 2.0 answer to request {id}: {:?}", snippet()),
            });
        }
        v.get("result").cloned().ok_or_else(|| RpcError::Garbage {
            url: self.url.clone(),
            method: method.into(),
            detail: format!("no result: {:?}", snippet()),
        })
    }

    fn garbage(&self, method: &str, what: &str, v: &Value) -> RpcError {
        let mut text = v.to_string();
        text.truncate(200);
        RpcError::Garbage {
            url: self.url.clone(),
            method: method.into(),
            detail: format!("expected {what}, got {text}"),
        }
    }

    async fn quantity_call(&self, method: &str, params: Value) -> Result<U256, RpcError> {
        let v = self.call_raw(method, params).await?;
        quantity(&v).ok_or_else(|| self.garbage(method, "a quantity", &v))
    }

    async fn u64_call(&self, method: &str, params: Value) -> Result<u64, RpcError> {
        let q = self.quantity_call(method, params).await?;
        u64::try_from(q)
            .map_err(|_| self.garbage(method, "a 64-bit quantity", &json!(q.to_string())))
    }

    pub async fn chain_id(&self) -> Result<u64, RpcError> {
        self.u64_call("eth_chainId", json!([])).await
    }

    pub async fn block_number(&self) -> Result<u64, RpcError> {
        self.u64_call("eth_blockNumber", json!([])).await
    }

    /// The hash of the block at `number` on the node's current chain (`None` past its head).
    pub async fn block_hash(&self, number: u64) -> Result<Option<B256>, RpcError> {
        let m = "eth_getBlockByNumber";
        let v = self
            .call_raw(m, json!([format!("{number:#x}"), false]))
            .await?;
        if v.is_null() {
            return Ok(None);
        }
        b256_of(&v["hash"])
            .map(Some)
            .ok_or_else(|| self.garbage(m, "a block with a hash", &v))
    }

    /// The latest block's base fee (`None` on a chain without EIP-1559).
    pub async fn base_fee(&self) -> Result<Option<u128>, RpcError> {
        let m = "eth_getBlockByNumber";
        let v = self.call_raw(m, json!(["latest", false])).await?;
        if v.is_null() {
            return Err(self.garbage(m, "the latest block", &v));
        }
        match v.get("baseFeePerGas") {
            None | Some(Value::Null) => Ok(None),
            Some(q) => quantity(q)
                .and_then(|q| u128::try_from(q).ok())
                .map(Some)
                .ok_or_else(|| self.garbage(m, "baseFeePerGas", q)),
        }
    }

    pub async fn max_priority_fee(&self) -> Result<u128, RpcError> {
        let q = self
            .quantity_call("eth_maxPriorityFeePerGas", json!([]))
            .await?;
        Ok(u128::try_from(q).unwrap_or(u128::MAX))
    }

    pub async fn code(&self, at: Address) -> Result<Bytes, RpcError> {
        let m = "eth_getCode";
        let v = self.call_raw(m, json!([at, "latest"])).await?;
        data_of(&v).ok_or_else(|| self.garbage(m, "bytecode", &v))
    }

    pub async fn balance(&self, of: Address) -> Result<U256, RpcError> {
        self.quantity_call("eth_getBalance", json!([of, "latest"]))
            .await
    }

    /// The next nonce of `of`, counting its transactions still in the pool.
    pub async fn pending_nonce(&self, of: Address) -> Result<u64, RpcError> {
        self.u64_call("eth_getTransactionCount", json!([of, "pending"]))
            .await
    }

    /// `eth_call` at the latest block: the returned bytes, or [`RpcError::Reverted`].
    pub async fn call(
        &self,
        from: Option<Address>,
        to: Address,
        data: &[u8],
    ) -> Result<Bytes, RpcError> {
        let m = "eth_call";
        let mut tx = json!({"to": to, "data": hex_of(data)});
        if let Some(f) = from {
            tx["from"] = json!(f);
        }
        let v = self.call_raw(m, json!([tx, "latest"])).await?;
        data_of(&v).ok_or_else(|| self.garbage(m, "return data", &v))
    }

    /// Gas for `data` sent from `from` to `to` (a deployment when `to` is `None`); a call
    /// that would revert is [`RpcError::Reverted`].
    pub async fn estimate_gas(
        &self,
        from: Address,
        to: Option<Address>,
        data: &[u8],
    ) -> Result<u64, RpcError> {
        let mut tx = json!({"from": from, "data": hex_of(data)});
        if let Some(t) = to {
            tx["to"] = json!(t);
        }
        self.u64_call("eth_estimateGas", json!([tx])).await
    }

    /// Broadcasts a signed transaction; returns its hash as the node computed it.
    pub async fn send_raw(&self, raw: &[u8]) -> Result<B256, RpcError> {
        let m = "eth_sendRawTransaction";
        let v = self.call_raw(m, json!([hex_of(raw)])).await?;
        b256_of(&v).ok_or_else(|| self.garbage(m, "a transaction hash", &v))
    }

    /// The logs `address` emitted with first topic `topic0` in blocks `from..=to`:
    /// (topics, data, transaction hash, block number) each.
    pub async fn logs(
        &self,
        address: Address,
        topic0: B256,
        from: u64,
        to: u64,
    ) -> Result<Vec<Log>, RpcError> {
        let m = "eth_getLogs";
        let v = self
            .call_raw(
                m,
                json!([{"address": address, "topics": [topic0],
                    "fromBlock": format!("{from:#x}"), "toBlock": format!("{to:#x}")}]),
            )
            .await?;
        let list = v
            .as_array()
            .ok_or_else(|| self.garbage(m, "a list of logs", &v))?;
        list.iter()
            .map(|l| {
                let parse = || -> Option<Log> {
                    Some(Log {
                        topics: l["topics"]
                            .as_array()?
                            .iter()
                            .map(b256_of)
                            .collect::<Option<Vec<_>>>()?,
                        data: data_of(&l["data"])?,
                        transaction_hash: b256_of(&l["transactionHash"])?,
                        block_number: u64::try_from(quantity(&l["blockNumber"])?).ok()?,
                    })
                };
                parse().ok_or_else(|| self.garbage(m, "a log", l))
            })
            .collect()
    }

    /// [`logs`](Self::logs) over `from..=to`, asked for in windows of at most `*window`
    /// blocks. Providers cap an `eth_getLogs` range (from 500 to 10,000 blocks, or a count of
    /// results) and refuse a longer one, so a window the node refuses is halved and asked
    /// again, down to one block; `*window` keeps the size that last worked, for the next call.
    /// A node that is down or overloaded (a transient error) ends the call with that error.
    pub async fn logs_windowed(
        &self,
        address: Address,
        topic0: B256,
        from: u64,
        to: u64,
        window: &mut u64,
    ) -> Result<Vec<Log>, RpcError> {
        let mut out = Vec::new();
        let mut lo = from;
        while lo <= to {
            *window = (*window).max(1);
            let hi = lo.saturating_add(*window - 1).min(to);
            match self.logs(address, topic0, lo, hi).await {
                Ok(mut logs) => {
                    out.append(&mut logs);
                    match hi.checked_add(1) {
                        Some(next) => lo = next,
                        None => break,
                    }
                }
                Err(e) if *window > 1 && refuses_range(&e) => *window /= 2,
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// The receipt of `hash`, `None` while it is not in a block.
    pub async fn receipt(&self, hash: B256) -> Result<Option<TxReceipt>, RpcError> {
        let m = "eth_getTransactionReceipt";
        let v = self.call_raw(m, json!([hash])).await?;
        if v.is_null() {
            return Ok(None);
        }
        let parse = || -> Option<TxReceipt> {
            Some(TxReceipt {
                transaction_hash: b256_of(&v["transactionHash"])?,
                block_number: u64::try_from(quantity(&v["blockNumber"])?).ok()?,
                block_hash: b256_of(&v["blockHash"])?,
                success: quantity(&v["status"])? == U256::from(1),
                gas_used: u64::try_from(quantity(&v["gasUsed"])?).ok()?,
                contract_address: v["contractAddress"].as_str().and_then(|s| s.parse().ok()),
            })
        };
        parse()
            .map(Some)
            .ok_or_else(|| self.garbage(m, "a receipt", &v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A one-shot HTTP server answering every request with `status` and `body`.
    async fn serve(status: &'static str, body: &'static str) -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = vec![0u8; 4096];
                let _ = s.read(&mut buf).await;
                let resp = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            }
        });
        url
    }

    /// A JSON-RPC node that answers `eth_getLogs` with one log at each block of `at`, and
    /// refuses a range longer than `cap` blocks as providers do.
    async fn logs_node(cap: u64, at: Vec<u64>) -> (String, crate::fake_node::Calls) {
        crate::fake_node::serve(move |req| {
            let block = |k: &str| {
                let h = req["params"][0][k].as_str().unwrap();
                u64::from_str_radix(h.trim_start_matches("0x"), 16).unwrap()
            };
            let (from, to) = (block("fromBlock"), block("toBlock"));
            if to - from + 1 > cap {
                return Err(json!({"code": -32005, "message": "block range too large"}));
            }
            Ok(at
                .iter()
                .filter(|b| (from..=to).contains(b))
                .map(|b| {
                    json!({"topics": [format!("0x{:064x}", 7)], "data": "0x",
                        "transactionHash": format!("0x{b:064x}"),
                        "blockNumber": format!("{b:#x}")})
                })
                .collect())
        })
        .await
    }

    #[tokio::test]
    async fn logs_are_read_in_windows_the_node_accepts() {
        let at = vec![0, 999, 1_000, 4_321, 9_999, 10_000, 25_000];
        let (url, calls) = logs_node(700, at.clone()).await;
        let rpc = Rpc::new(&url, Duration::from_secs(5));
        let mut window = 10_000;
        let topic = B256::with_last_byte(7);
        let logs = rpc
            .logs_windowed(Address::ZERO, topic, 0, 20_000, &mut window)
            .await
            .unwrap();
        let blocks: Vec<u64> = logs.iter().map(|l| l.block_number).collect();
        assert_eq!(blocks, &at[..6], "every log in range, once each, in order");
        assert!(
            window <= 700,
            "the window shrank to what the node accepts: {window}"
        );
        let asked = crate::fake_node::count(&calls, "eth_getLogs");
        // 10,000 halved four times (625 blocks) refused 4 times, then 20,001 blocks in
        // windows of 625: 33 more.
        assert_eq!(asked, 4 + 33, "{asked} calls");
        // The next call starts at the size that worked: no refusal.
        let before = crate::fake_node::count(&calls, "eth_getLogs");
        let more = rpc
            .logs_windowed(Address::ZERO, topic, 20_001, 25_000, &mut window)
            .await
            .unwrap();
        assert_eq!(more.len(), 1);
        assert_eq!(
            crate::fake_node::count(&calls, "eth_getLogs") - before,
            8,
            "4,999 blocks in windows of 625"
        );
    }

    #[tokio::test]
    async fn a_node_that_refuses_even_one_block_is_an_error() {
        let (url, _) = logs_node(0, vec![]).await;
        let rpc = Rpc::new(&url, Duration::from_secs(5));
        let mut window = 8;
        let e = rpc
            .logs_windowed(Address::ZERO, B256::ZERO, 5, 9, &mut window)
            .await
            .unwrap_err();
        assert!(matches!(e, RpcError::Node { code: -32005, .. }), "{e}");
        assert_eq!(window, 1);
    }

    #[tokio::test]
    async fn a_node_that_is_down_is_unreachable_and_transient() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        drop(l);
        let e = Rpc::new(&url, Duration::from_secs(2))
            .chain_id()
            .await
            .unwrap_err();
        assert!(matches!(e, RpcError::Unreachable { .. }), "{e}");
        assert!(e.is_transient());
        assert!(e.to_string().contains("unreachable"), "{e}");
    }

    #[tokio::test]
    async fn garbage_answers_are_named_garbage() {
        let url = serve("200 OK", "<html>hello</html>").await;
        let e = Rpc::new(&url, Duration::from_secs(2))
            .chain_id()
            .await
            .unwrap_err();
        assert!(matches!(e, RpcError::Garbage { .. }), "{e}");
        assert!(e.is_transient());
        let url = serve("200 OK", r#"{"jsonrpc":"2.0","id":1,"result":"seven"}"#).await;
        let e = Rpc::new(&url, Duration::from_secs(2))
            .chain_id()
            .await
            .unwrap_err();
        assert!(e.to_string().contains("expected a quantity"), "{e}");
        let url = serve("502 Bad Gateway", "upstream down").await;
        let e = Rpc::new(&url, Duration::from_secs(2))
            .chain_id()
            .await
            .unwrap_err();
        assert!(matches!(e, RpcError::Http { status: 502, .. }), "{e}");
        assert!(e.is_transient());
    }

    #[tokio::test]
    async fn reverts_carry_their_data_and_are_final() {
        let url = serve(
            "200 OK",
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":3,"message":"execution reverted","data":"0x12345678"}}"#,
        )
        .await;
        let e = Rpc::new(&url, Duration::from_secs(2))
            .call(None, Address::ZERO, &[])
            .await
            .unwrap_err();
        match &e {
            RpcError::Reverted { data, .. } => assert_eq!(data.as_ref(), [0x12, 0x34, 0x56, 0x78]),
            other => panic!("{other}"),
        }
        assert!(!e.is_transient());
    }

    #[test]
    fn quantities_parse() {
        assert_eq!(quantity(&json!("0x7a69")), Some(U256::from(31337)));
        assert_eq!(quantity(&json!("0x0")), Some(U256::ZERO));
        assert_eq!(quantity(&json!("7a69")), None);
        assert_eq!(quantity(&json!(31337)), None);
        assert_eq!(quantity(&json!("0x")), None);
    }
}
