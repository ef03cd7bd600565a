//! haca on an EVM chain: x402 payments settled on the token contract, certified round roots
//! anchored in the settlement registry, and `haca evm deploy`.
//!
//! - [`EvmFacilitator`] is a [`Facilitator`]: the paywall checks terms and signature as
//!   always, then this simulates `transferWithAuthorization` on the chain (a spent nonce, an
//!   expired authorization, a short balance or a wrong EIP-712 domain is refused before
//!   serving, with the token's own reason), and settles by submitting it and waiting for the
//!   receipt with the confirmations asked. The payment box's transaction is the chain's
//!   transaction hash. A reverted or unconfirmed settlement is never reported settled: the
//!   request is refused (402, or 503 while the RPC is down) and nothing is served.
//! - [`anchor_rounds`] posts each committed round's roots to the registry, batched, retried
//!   while the RPC is down, idempotent (the registry ignores roots it already holds).
//! - `haca evm deploy` deploys the token and the registry from `contracts/build/`.
//!
//! Invariant: without `--evm-rpc` nothing here runs and the node's own ledger settles.

use alloy_sol_types::SolCall;
use haca_evm::contracts::{decode_revert, IHacaToken, ISettlementRegistry};
use haca_evm::{Rpc, SendError, Sender};
use haca_gateway::payment::{Facilitator, PaymentConfig};
use haca_gateway::GatewayError;
use haca_pay::{Address, FacilitatorRequest, SettleResponse, VerifyResponse, B256, U256};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The EVM flags of `haca devnet` and `haca node`.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct EvmArgs {
    /// Settle x402 payments on this EVM chain's JSON-RPC (http://HOST:PORT) instead of the
    /// node's own ledger: the facilitator submits each transferWithAuthorization.
    #[arg(long, env = "HACA_EVM_RPC", value_name = "URL")]
    pub evm_rpc: Option<String>,
    /// The facilitator's gas key: a file holding 0x + 64 hex digits (with --evm-rpc). On a
    /// devnet chain it is also the token's minter (the faucet mints on chain).
    #[arg(long, env = "HACA_EVM_KEY", value_name = "FILE")]
    pub evm_key: Option<PathBuf>,
    /// The token contract [default: the payment asset; devnet's is where `haca evm deploy`
    /// from anvil's account 0 puts it].
    #[arg(long, env = "HACA_EVM_TOKEN", value_name = "ADDRESS")]
    pub evm_token: Option<String>,
    /// A SettlementRegistry to anchor each certified round's roots in (`haca evm deploy`
    /// prints it); the gas key must be a registered poster.
    #[arg(long, env = "HACA_EVM_REGISTRY", value_name = "ADDRESS")]
    pub evm_registry: Option<String>,
    /// Blocks a settlement waits for (1: its own block).
    #[arg(long, env = "HACA_EVM_CONFIRMATIONS", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub evm_confirmations: u64,
}

/// Checked EVM settings.
#[derive(Clone, Debug)]
pub struct EvmSettings {
    pub rpc: String,
    pub key_file: PathBuf,
    pub token: Option<Address>,
    pub registry: Option<Address>,
    pub confirmations: u64,
}

impl EvmArgs {
    /// The settings, `None` without `--evm-rpc`; each refusal names its flag.
    pub fn settings(&self) -> Result<Option<EvmSettings>, String> {
        let addr = |v: &Option<String>, flag: &str| {
            v.as_deref()
                .map(|s| haca_evm::parse_address(s).map_err(|e| format!("{flag}: {e}")))
                .transpose()
        };
        let token = addr(&self.evm_token, "--evm-token")?;
        let registry = addr(&self.evm_registry, "--evm-registry")?;
        let Some(rpc) = &self.evm_rpc else {
            if self.evm_key.is_some() || token.is_some() || registry.is_some() {
                return Err(
                    "--evm-key, --evm-token and --evm-registry need --evm-rpc (the chain)".into(),
                );
            }
            return Ok(None);
        };
        if !(rpc.starts_with("http://") || rpc.starts_with("https://")) {
            return Err(format!("--evm-rpc: {rpc:?} is not an http(s) URL"));
        }
        let key_file = self
            .evm_key
            .clone()
            .ok_or("--evm-key: required with --evm-rpc (a file with the facilitator's gas key)")?;
        Ok(Some(EvmSettings {
            rpc: rpc.clone(),
            key_file,
            token,
            registry,
            confirmations: self.evm_confirmations,
        }))
    }
}

/// Reads a key file (0x + 64 hex digits), naming the file in each refusal.
pub fn read_key_file(path: &std::path::Path) -> Result<haca_evm::PrivateKeySigner, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("key file {}: {e}", path.display()))?;
    haca_evm::parse_private_key(&text).map_err(|e| format!("key file {}: {e}", path.display()))
}

/// An x402 facilitator that settles on the token contract.
pub struct EvmFacilitator {
    pub sender: Arc<Sender>,
    pub token: Address,
    network: String,
    name: String,
    /// Settlements still young enough to be reorganized away, watched by [`watch_reorgs`].
    recent: std::sync::Mutex<Vec<Watched>>,
}

/// A settlement [`watch_reorgs`] keeps an eye on.
struct Watched {
    call: Vec<u8>,
    confirmed: haca_evm::Confirmed,
    payer: Address,
}

/// Blocks after which a settlement is taken as final and no longer watched.
const REORG_WINDOW: u64 = 64;

/// The node's EVM connection, made at start.
pub struct EvmConnection {
    pub facilitator: Arc<EvmFacilitator>,
    pub registry: Option<Address>,
}

/// Connects to the chain and checks it against the payment terms: the chain id is the
/// network's, the token is a contract, and its EIP-712 domain separator is the one payers
/// sign in (a wrong domain would make every payment revert). Sets `config.asset` to the token.
pub async fn connect(s: &EvmSettings, config: &mut PaymentConfig) -> Result<EvmConnection, String> {
    let key = read_key_file(&s.key_file).map_err(|e| format!("--evm-key: {e}"))?;
    let rpc = Arc::new(Rpc::new(&s.rpc, Duration::from_secs(10)));
    let mut sender = Sender::connect(rpc.clone(), key)
        .await
        .map_err(|e| format!("--evm-rpc: {e}"))?;
    sender.confirmations = s.confirmations;
    let chain_id = sender.chain_id();
    let network = format!("eip155:{chain_id}");
    if config.network != network {
        return Err(format!(
            "--evm-rpc serves chain {chain_id} ({network}), the payments are on {} (set the network to {network})",
            config.network
        ));
    }
    let gas = rpc
        .balance(sender.address())
        .await
        .map_err(|e| format!("--evm-rpc: {e}"))?;
    if gas.is_zero() {
        return Err(format!(
            "--evm-key: the gas key {} holds no native currency on chain {chain_id}: it pays for every settlement, fund it first",
            sender.address()
        ));
    }
    let token = s.token.unwrap_or(config.asset);
    config.asset = token;
    let code = rpc.code(token).await.map_err(|e| e.to_string())?;
    if code.is_empty() {
        return Err(format!(
            "--evm-token: no contract at {token} on chain {chain_id} (deploy one: haca evm deploy --rpc {} --key FILE)",
            s.rpc
        ));
    }
    let want = haca_evm::contracts::domain_separator(
        &config.token_name,
        &config.token_version,
        chain_id,
        token,
    );
    match sender
        .view(token, &IHacaToken::DOMAIN_SEPARATORCall {})
        .await
    {
        Ok(got) if got == want => {}
        Ok(got) => {
            return Err(format!(
                "--evm-token: the token at {token} has EIP-712 domain separator {got}, not {want} (name {:?}, version {:?}): payers would sign in a domain it refuses",
                config.token_name, config.token_version
            ))
        }
        Err(e) => tracing::warn!("the token at {token} answers no DOMAIN_SEPARATOR(): {e}"),
    }
    if let Some(r) = s.registry {
        if rpc.code(r).await.map_err(|e| e.to_string())?.is_empty() {
            return Err(format!(
                "--evm-registry: no contract at {r} on chain {chain_id}"
            ));
        }
        let poster = ISettlementRegistry::isPosterCall {
            poster: sender.address(),
        };
        if !sender.view(r, &poster).await.map_err(|e| e.to_string())? {
            return Err(format!(
                "--evm-registry: {} is not a registered poster of {r} (its owner calls setPoster)",
                sender.address()
            ));
        }
    }
    tracing::info!(
        "x402 settles on {network} through {} (token {token}, gas key {}, {} confirmations)",
        s.rpc,
        sender.address(),
        s.confirmations
    );
    let facilitator = Arc::new(EvmFacilitator {
        sender: Arc::new(sender),
        token,
        network,
        name: format!("the EVM chain at {}", s.rpc),
        recent: Default::default(),
    });
    tokio::spawn(watch_reorgs(Arc::downgrade(&facilitator)));
    Ok(EvmConnection {
        facilitator,
        registry: s.registry,
    })
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> GatewayError {
    GatewayError::unavailable(
        "evm_unavailable",
        format!("{what}: {e}; nothing was charged, try again"),
    )
}

impl EvmFacilitator {
    /// The `transferWithAuthorization(from, to, value, validAfter, validBefore, nonce, v, r,
    /// s)` call of a payment, or why its signature has no such form.
    fn call_data(&self, request: &FacilitatorRequest) -> Result<Vec<u8>, (String, String)> {
        let p = request.payment_payload.exact();
        let (a, sig) = (&p.authorization, p.signature.as_ref());
        haca_evm::contracts::transfer_with_authorization(
            (a.from, a.to, a.value),
            (a.valid_after, a.valid_before),
            a.nonce,
            sig,
        )
        .ok_or_else(|| {
            (
                "invalid_exact_evm_payload_signature".into(),
                format!("signature: 65 bytes expected, got {}", sig.len()),
            )
        })
    }

    fn failed(
        &self,
        request: &FacilitatorRequest,
        reason: &str,
        message: String,
    ) -> SettleResponse {
        SettleResponse {
            success: false,
            error_reason: Some(reason.to_owned()),
            error_message: Some(message),
            payer: Some(
                request
                    .payment_payload
                    .exact()
                    .authorization
                    .from
                    .to_checksum(None),
            ),
            transaction: String::new(),
            network: self.network.clone(),
            amount: None,
        }
    }

    /// A transaction broadcast earlier whose outcome was unknown: confirmed now (with the
    /// confirmations asked, as a settlement sent this try would be)?
    async fn earlier(&self, hash: B256) -> Option<haca_evm::Confirmed> {
        match self.sender.rpc.receipt(hash).await {
            Ok(Some(r)) if r.success => self.sender.confirmed(&r).await.ok().flatten(),
            _ => None,
        }
    }

    /// A confirmed settlement: logged, watched for reorgs, answered.
    fn record(
        &self,
        a: &haca_pay::Authorization,
        call: &[u8],
        c: haca_evm::Confirmed,
    ) -> SettleResponse {
        tracing::info!(
            "x402 settled on chain: {} paid {} to {} in {} (block {})",
            a.from,
            a.value,
            a.to,
            c.hash,
            c.block_number
        );
        let hash = c.hash;
        self.recent
            .lock()
            .expect("the watch list is never poisoned")
            .push(Watched {
                call: call.to_vec(),
                confirmed: c,
                payer: a.from,
            });
        settled(self, a.from, a.value, hash)
    }
}

/// How many times a settlement is tried while the RPC fails, and the pause after each.
const SETTLE_TRIES: u32 = 3;

#[async_trait::async_trait]
impl Facilitator for EvmFacilitator {
    fn name(&self) -> &str {
        &self.name
    }

    fn on_chain(&self) -> bool {
        true
    }

    async fn verify(&self, request: &FacilitatorRequest) -> Result<VerifyResponse, GatewayError> {
        let payer = Some(
            request
                .payment_payload
                .exact()
                .authorization
                .from
                .to_checksum(None),
        );
        let refuse = |reason: String, message: String| VerifyResponse {
            is_valid: false,
            invalid_reason: Some(reason),
            invalid_message: Some(message),
            payer: payer.clone(),
        };
        let data = match self.call_data(request) {
            Ok(d) => d,
            Err((r, m)) => return Ok(refuse(r, m)),
        };
        match self.sender.simulate(Some(self.token), &data).await {
            Ok(_) => Ok(VerifyResponse {
                is_valid: true,
                invalid_reason: None,
                invalid_message: None,
                payer,
            }),
            Err(SendError::Refused(r)) => Ok(refuse(r.code.into(), r.message)),
            Err(e) => Err(unavailable("checking the payment on chain", e)),
        }
    }

    async fn settle(&self, request: &FacilitatorRequest) -> Result<SettleResponse, GatewayError> {
        let data = match self.call_data(request) {
            Ok(d) => d,
            Err((r, m)) => return Ok(self.failed(request, &r, m)),
        };
        let a = &request.payment_payload.exact().authorization;
        let mut sent: Option<B256> = None;
        let mut last = String::new();
        for attempt in 0..SETTLE_TRIES {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_secs(attempt as u64)).await;
                // A transaction broadcast by an earlier try may have landed: then it is the
                // settlement (the authorization's nonce is spent, a new try would revert).
                if let Some(h) = sent {
                    if let Some(c) = self.earlier(h).await {
                        return Ok(self.record(a, &data, c));
                    }
                }
            }
            match self
                .sender
                .send(Some(self.token), data.clone().into())
                .await
            {
                Ok(c) => return Ok(self.record(a, &data, c)),
                Err(SendError::Refused(r)) => {
                    return Ok(self.failed(request, r.code, r.message));
                }
                Err(SendError::RevertedOnChain { hash, block }) => {
                    let reason = match self.sender.simulate(Some(self.token), &data).await {
                        Err(SendError::Refused(r)) => r.message,
                        _ => "no reason given".into(),
                    };
                    return Ok(self.failed(
                        request,
                        "transaction_reverted",
                        format!("transaction {hash} reverted in block {block}: {reason}"),
                    ));
                }
                Err(e) => {
                    if let SendError::Rpc { sent: Some(h), .. }
                    | SendError::Timeout { hash: h, .. } = &e
                    {
                        sent = Some(*h);
                    }
                    tracing::warn!("x402 settlement on chain, try {}: {e}", attempt + 1);
                    last = e.to_string();
                    if !e.is_transient() {
                        break;
                    }
                }
            }
        }
        if let Some(h) = sent {
            if let Some(c) = self.earlier(h).await {
                return Ok(self.record(a, &data, c));
            }
        }
        Err(unavailable("settling the payment on chain", last))
    }

    async fn balance(&self, owner: Address) -> Option<Result<U256, GatewayError>> {
        Some(
            self.sender
                .view(self.token, &IHacaToken::balanceOfCall { owner })
                .await
                .map_err(|e| unavailable("reading the balance on chain", e)),
        )
    }

    async fn mint(&self, to: Address, amount: U256) -> Option<Result<String, GatewayError>> {
        let call = IHacaToken::mintCall { to, amount };
        Some(
            match self
                .sender
                .send(Some(self.token), call.abi_encode().into())
                .await
            {
                Ok(c) => Ok(format!("{}", c.hash)),
                Err(SendError::Refused(r)) => Err(GatewayError::internal(format!(
                    "the faucet cannot mint on chain: {}",
                    r.message
                ))),
                Err(e) => Err(unavailable("minting on chain", e)),
            },
        )
    }
}

/// Watches recent settlements: one whose block left the chain (a reorg deeper than the
/// confirmations) is settled again from its signed authorization, whose nonce the new chain
/// has not seen spent; one [`REORG_WINDOW`] blocks deep is final and dropped. Ends when the
/// facilitator is dropped.
pub async fn watch_reorgs(f: std::sync::Weak<EvmFacilitator>) {
    // The chain's head at the last full pass: with the same head block (whose hash commits to
    // every block below it) nothing watched can have moved, and the pass is skipped.
    let mut last_head: Option<(u64, B256)> = None;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let Some(f) = f.upgrade() else { return };
        let watched: Vec<(usize, haca_evm::Confirmed)> = f
            .recent
            .lock()
            .expect("the watch list is never poisoned")
            .iter()
            .enumerate()
            .map(|(i, w)| (i, w.confirmed.clone()))
            .collect();
        if watched.is_empty() {
            continue;
        }
        let Ok(head) = f.sender.rpc.block_number().await else {
            continue;
        };
        let tip = f.sender.rpc.block_hash(head).await.ok().flatten();
        if tip.is_some() && last_head == tip.map(|t| (head, t)) {
            continue;
        }
        let mut complete = true;
        let mut done = Vec::new();
        let mut replaced = Vec::new();
        // One block hash read per block (many settlements share one); a settlement is looked
        // at on its own only when its block's hash moved.
        let mut blocks: std::collections::BTreeMap<u64, Option<B256>> = Default::default();
        for (i, c) in watched {
            if head >= c.block_number + REORG_WINDOW {
                done.push(i);
                continue;
            }
            let hash = match blocks.get(&c.block_number) {
                Some(h) => *h,
                None => match f.sender.rpc.block_hash(c.block_number).await {
                    Ok(h) => *blocks.entry(c.block_number).or_insert(h),
                    Err(_) => {
                        complete = false;
                        continue;
                    }
                },
            };
            if hash == Some(c.block_hash) {
                continue;
            }
            // Its block is gone. Mined again in another block of the new chain: watched there.
            // Not on the chain at all: settled again.
            match f.sender.rpc.receipt(c.hash).await {
                Err(_) => complete = false,
                Ok(Some(r)) if r.success => replaced.push((i, haca_evm::Confirmed::from(&r))),
                Ok(_) => {
                    let (call, payer) = {
                        let list = f.recent.lock().expect("the watch list is never poisoned");
                        (list[i].call.clone(), list[i].payer)
                    };
                    tracing::warn!(
                        "x402 settlement {} of {payer} left the chain (block {} reorganized away, deeper than the confirmations): settling it again",
                        c.hash,
                        c.block_number
                    );
                    f.sender.forget_nonce().await;
                    match f.sender.send(Some(f.token), call.into()).await {
                        Ok(again) => {
                            tracing::warn!(
                                "x402 settlement of {payer} settled again in {} (block {}); the receipt names {}",
                                again.hash,
                                again.block_number,
                                c.hash
                            );
                            replaced.push((i, again));
                        }
                        // The original transaction was mined again on the new chain (its
                        // authorization is spent there): nothing to do.
                        Err(SendError::Refused(r))
                            if r.code == "invalid_exact_evm_nonce_already_used" =>
                        {
                            tracing::info!("x402 settlement {}: {}", c.hash, r.message);
                            done.push(i);
                        }
                        Err(SendError::Refused(r)) => {
                            tracing::error!(
                                "x402 settlement {} of {payer} cannot be settled again ({}): the run it paid for went unpaid",
                                c.hash,
                                r.message
                            );
                            done.push(i);
                        }
                        Err(e) => {
                            complete = false;
                            tracing::warn!("x402 settlement {} not settled again yet: {e}", c.hash)
                        }
                    }
                }
            }
        }
        if complete && replaced.is_empty() {
            last_head = tip.map(|t| (head, t));
        }
        let mut list = f.recent.lock().expect("the watch list is never poisoned");
        for (i, c) in replaced {
            list[i].confirmed = c;
        }
        let mut i = 0;
        list.retain(|_| {
            i += 1;
            !done.contains(&(i - 1))
        });
    }
}

fn settled(f: &EvmFacilitator, payer: Address, amount: U256, hash: B256) -> SettleResponse {
    SettleResponse {
        success: true,
        error_reason: None,
        error_message: None,
        payer: Some(payer.to_checksum(None)),
        transaction: format!("{hash}"),
        network: f.network.clone(),
        amount: Some(amount.to_string()),
    }
}

/// The anchors this node knows, by haca block height: read from the registry's `RootPosted`
/// events at start and after each post, so a restart keeps naming them.
pub struct EvmAnchors {
    sender: Arc<Sender>,
    network: String,
    registry: Address,
    known: std::sync::Mutex<std::collections::BTreeMap<u64, (B256, u64)>>,
    /// The `eth_getLogs` range, in blocks, the RPC last accepted.
    window: std::sync::atomic::AtomicU64,
}

/// The first `eth_getLogs` range asked for: the cap of the common providers.
const LOG_WINDOW: u64 = 10_000;

impl EvmAnchors {
    pub fn new(f: &EvmFacilitator, registry: Address) -> Arc<Self> {
        Arc::new(EvmAnchors {
            sender: f.sender.clone(),
            network: f.network.clone(),
            registry,
            known: Default::default(),
            window: LOG_WINDOW.into(),
        })
    }

    /// The registry's latest height, and the block to read its posts from at start: the one
    /// that holds height 1's post (the first a registry gets: posting starts after its latest
    /// height), or the current head when nothing is posted yet. Not block 0: on a long chain
    /// that is millions of blocks of windowed `eth_getLogs` before anything is found.
    async fn latest_and_first_block(&self) -> Result<(u64, u64), haca_evm::RpcError> {
        let latest = self
            .sender
            .view(self.registry, &ISettlementRegistry::latestHeightCall {})
            .await?;
        if latest == 0 {
            return Ok((0, self.sender.rpc.block_number().await?));
        }
        let first = self
            .sender
            .view(
                self.registry,
                &ISettlementRegistry::rootAtCall { height: 1 },
            )
            .await?;
        // A registry whose height 1 someone else skipped: read it all.
        Ok((latest, first.postedAtBlock))
    }

    /// Reads the registry's `RootPosted` events from block `from` on, in windows the RPC
    /// accepts.
    async fn scan(&self, from: u64) -> Result<(), haca_evm::RpcError> {
        use alloy_sol_types::SolEvent;
        use std::sync::atomic::Ordering;
        let head = self.sender.rpc.block_number().await?;
        let mut window = self.window.load(Ordering::Relaxed);
        let logs = self
            .sender
            .rpc
            .logs_windowed(
                self.registry,
                ISettlementRegistry::RootPosted::SIGNATURE_HASH,
                from,
                head,
                &mut window,
            )
            .await;
        self.window.store(window, Ordering::Relaxed);
        let logs = logs?;
        let mut known = self.known.lock().expect("the anchor map is never poisoned");
        for l in logs {
            if let Some(t) = l.topics.get(1) {
                let height = u64::from_be_bytes(t[24..].try_into().expect("8 bytes"));
                known.insert(height, (l.transaction_hash, l.block_number));
            }
        }
        Ok(())
    }
}

impl haca_gateway::AnchorBook for EvmAnchors {
    fn anchor(&self, height: u64) -> Option<haca_core::settlement::EvmAnchor> {
        let known = self.known.lock().expect("the anchor map is never poisoned");
        known
            .get(&height)
            .map(|(tx, block)| haca_core::settlement::EvmAnchor {
                network: self.network.clone(),
                registry: self.registry.to_checksum(None),
                transaction: format!("{tx}"),
                block: *block,
            })
    }
}

/// The most rounds one anchoring transaction posts.
const ANCHOR_BATCH: usize = 32;

/// One round to anchor: (height, round, RFC 6962 root, OpenZeppelin root).
type RoundRoots = (u64, u64, B256, B256);

fn roots_of(store: &haca_store::Store, height: u64) -> Result<Option<RoundRoots>, String> {
    let Some(b) = store.block(height).map_err(|e| e.to_string())? else {
        return Err(format!("block {height} is not in the store"));
    };
    let block = haca_chain::Block::decode(&b.block).map_err(|e| e.to_string())?;
    Ok(block.header.settlement.map(|s| {
        (
            height,
            s.round,
            B256::from(s.rfc6962_root.0),
            B256::from(s.oz_root.0),
        )
    }))
}

/// Posts each committed round's roots to `registry`, in height order, up to
/// [`ANCHOR_BATCH`] rounds a transaction; a failed post is retried (with a growing pause)
/// until it lands. Starts after the registry's latest height, so a restart posts only what
/// is missing; a post of roots the registry already holds is a no-op there.
pub async fn anchor_rounds(
    validator: Arc<haca_chain::validator::Validator>,
    store: Arc<haca_store::Store>,
    book: Arc<EvmAnchors>,
) {
    let (sender, registry) = (&book.sender, book.registry);
    let mut heights = validator.heights();
    let mut pause = Duration::from_millis(500);
    let latest = loop {
        let scanned = match book.latest_and_first_block().await {
            Ok((latest, from)) => book.scan(from).await.map(|()| latest),
            Err(e) => Err(e),
        };
        match scanned {
            Ok(latest) => break latest,
            Err(e) => tracing::warn!("anchoring: reading the registry's posts: {e}"),
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(30));
    };
    let mut next = latest + 1;
    // The highest height this task posted: the registry holding less means a reorg took
    // posts back out, and they are posted again (posting is idempotent). Just read: no
    // need to read it again on the first pass.
    let mut posted = latest;
    let mut first_pass = true;
    loop {
        if posted > 0 && !std::mem::take(&mut first_pass) {
            if let Ok(latest) = sender
                .view(registry, &ISettlementRegistry::latestHeightCall {})
                .await
            {
                if latest < posted {
                    tracing::warn!(
                        "anchoring: the registry's latest height is {latest}, {posted} was posted (a reorg took posts back out): posting again from {}",
                        latest + 1
                    );
                    sender.forget_nonce().await;
                    next = latest + 1;
                    posted = latest;
                }
            }
        }
        let committed = *heights.borrow_and_update();
        while next <= committed {
            let mut batch = Vec::new();
            let mut h = next;
            while h <= committed && batch.len() < ANCHOR_BATCH {
                match roots_of(&store, h) {
                    Ok(Some(r)) => batch.push(r),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::error!("anchoring: {e}");
                        break;
                    }
                }
                h += 1;
            }
            if batch.is_empty() {
                next = h;
                if h <= committed {
                    // An unreadable block: try again later.
                    tokio::time::sleep(pause).await;
                }
                continue;
            }
            let call = ISettlementRegistry::postBatchCall {
                heights: batch.iter().map(|r| r.0).collect(),
                rounds: batch.iter().map(|r| r.1).collect(),
                rfc6962Roots: batch.iter().map(|r| r.2).collect(),
                ozRoots: batch.iter().map(|r| r.3).collect(),
            };
            match sender.send(Some(registry), call.abi_encode().into()).await {
                Ok(c) => {
                    tracing::info!(
                        "anchored rounds at heights {}..={} in {} (block {})",
                        batch[0].0,
                        batch[batch.len() - 1].0,
                        c.hash,
                        c.block_number
                    );
                    next = h;
                    posted = posted.max(batch[batch.len() - 1].0);
                    pause = Duration::from_millis(500);
                    if let Err(e) = book.scan(c.block_number).await {
                        tracing::warn!("anchoring: reading the registry's posts: {e}");
                    }
                }
                Err(SendError::Refused(r)) => {
                    // Another poster's different roots, or this key no longer a poster:
                    // nothing a retry changes. Said loudly, and skipped.
                    tracing::error!(
                        "anchoring heights {}..={} refused by the registry: {}",
                        batch[0].0,
                        batch[batch.len() - 1].0,
                        r.message
                    );
                    next = h;
                }
                Err(e) => {
                    tracing::warn!("anchoring: {e}; trying again in {pause:?}");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(30));
                }
            }
        }
        // A new height, or a look at the registry every 2 s.
        tokio::select! {
            changed = heights.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

/// What the registry holds for `height`: (round, RFC 6962 root, OpenZeppelin root, the block
/// it was posted in); `None` when nothing was posted.
pub async fn anchored_root(
    rpc_url: &str,
    registry: Address,
    height: u64,
) -> Result<Option<(u64, B256, B256, u64)>, String> {
    let rpc = Rpc::new(rpc_url, Duration::from_secs(10));
    let call = ISettlementRegistry::rootAtCall { height };
    let out = rpc
        .call(None, registry, &call.abi_encode())
        .await
        .map_err(|e| match e {
            haca_evm::RpcError::Reverted { data, .. } => decode_revert(&data).message,
            e => e.to_string(),
        })?;
    let r = ISettlementRegistry::rootAtCall::abi_decode_returns(&out)
        .map_err(|e| format!("{rpc_url}: rootAt({height}) answered something else: {e}"))?;
    Ok(
        (r.rfc6962Root != B256::ZERO).then_some((
            r.round,
            r.rfc6962Root,
            r.ozRoot,
            r.postedAtBlock,
        )),
    )
}

/// `haca evm`.
#[derive(clap::Subcommand)]
pub enum EvmCommand {
    /// Deploy the HacaToken (EIP-3009; the key its minter) and the SettlementRegistry (the key
    /// its owner and first poster); the last line is {"token", "registry", "chain_id"}.
    Deploy {
        /// The chain's JSON-RPC URL.
        #[arg(long, value_name = "URL")]
        rpc: String,
        /// The deployer's key: a file holding 0x + 64 hex digits, or the key itself (a test
        /// key such as anvil's; never a real one on a command line).
        #[arg(long, value_name = "KEY")]
        key: String,
        /// The token's EIP-712 domain name (USDC's by default).
        #[arg(long, default_value = "USD Coin")]
        token_name: String,
        /// The token's EIP-712 domain version.
        #[arg(long, default_value = "2")]
        token_version: String,
        /// The token's ERC-20 symbol.
        #[arg(long, default_value = "USDC")]
        token_symbol: String,
        /// Deploy the registry alone (a chain whose token exists, such as Base Sepolia's
        /// USDC); `token` is then null.
        #[arg(long)]
        registry_only: bool,
    },
}

/// Runs `haca evm ...`.
pub async fn run(cmd: EvmCommand) -> Result<(), String> {
    match cmd {
        EvmCommand::Deploy {
            rpc,
            key,
            token_name,
            token_version,
            token_symbol,
            registry_only,
        } => {
            let signer = match haca_evm::parse_private_key(&key) {
                Ok(k) => k,
                Err(_) => {
                    read_key_file(std::path::Path::new(&key)).map_err(|e| format!("--key: {e}"))?
                }
            };
            let sender = Sender::connect(Arc::new(Rpc::new(&rpc, Duration::from_secs(10))), signer)
                .await
                .map_err(|e| format!("--rpc: {e}"))?;
            let (_, compiler) =
                haca_evm::contracts::artifact_bytecode(haca_evm::contracts::TOKEN_ARTIFACT);
            println!(
                "deploying from {} on chain {} (contracts compiled by {compiler})",
                sender.address(),
                sender.chain_id()
            );
            if registry_only {
                let r = sender
                    .send(None, haca_evm::contracts::registry_init_code())
                    .await
                    .map_err(|e| format!("deploy: {e}"))?;
                let registry = r
                    .contract_address
                    .ok_or("deploy: the receipt names no contract address")?;
                println!("registry: {registry}");
                println!(
                    "{}",
                    serde_json::json!({
                        "token": null,
                        "registry": registry.to_checksum(None),
                        "chain_id": sender.chain_id(),
                    })
                );
                return Ok(());
            }
            let d = haca_evm::deploy(
                &sender,
                &haca_evm::TokenParams {
                    name: token_name,
                    version: token_version,
                    symbol: token_symbol,
                },
            )
            .await
            .map_err(|e| format!("deploy: {e}"))?;
            println!("token:    {}", d.token);
            println!("registry: {}", d.registry);
            println!(
                "{}",
                serde_json::json!({
                    "token": d.token.to_checksum(None),
                    "registry": d.registry.to_checksum(None),
                    "chain_id": d.chain_id,
                })
            );
            Ok(())
        }
    }
}
