//! Payments for runs: x402 authorizations and API keys, verified and settled over the store's
//! durable token ledger (or by a remote [`Facilitator`]). The binary's `server::x402` reads
//! offers off requests and serves the facilitator endpoints over these rules.
//!
//! The rules are `haca-pay`'s ([`verify_exact`]); the money moves in one store transaction
//! ([`Store::transfer_with_authorization`]): the nonce is checked unused and spent, and the
//! balance checked and moved, all or nothing. A payment is verified when the request
//! arrives ([`Payments::check`]) and settled once the request is known to be runnable (model
//! resolved, input parsed, request hash computed) and before the model runs
//! ([`crate::Gateway::take_payment`]). A charge names its run: one whose run is never stored
//! is refunded as its [`crate::Charge`] drops.
//!
//! The ledger is haca's own (no chain is involved): it models one EIP-3009 token per asset,
//! whose money enters only through the faucet. Its settlement ids are the EIP-712 digests the
//! payers signed. With `--evm-rpc` the binary's `evm::EvmFacilitator` is the [`Facilitator`]
//! instead ([`Facilitator::on_chain`]): the token contract is the ledger, and settlement ids
//! are its transaction hashes.

use crate::error::GatewayError;
use crate::now_ms;
use haca_core::receipt::{ExecMode, PaymentAuthorization, PaymentEvidence, PaymentSettlement};
use haca_core::{BlobId, Digest};
use haca_pay::types::{
    PAYMENT_RESPONSE_HEADER, PAYMENT_SIGNATURE_HEADER, SCHEME_EXACT, X_PAYMENT_HEADER,
    X_PAYMENT_RESPONSE_HEADER,
};
use haca_pay::{
    decode_payment_header, encode_header, verify_exact, Address, AnyPaymentPayload,
    AnyRequirements, FacilitatorRequest, Ledger, PaymentError, PaymentRequirements,
    PaymentRequirementsV1, SettleResponse, VerifiedPayment, VerifyContext, VerifyResponse, B256,
    U256,
};
use haca_store::{ApiKeyRow, Store, Transfer, TransferRefusal};
use rand::RngCore;
use serde_json::json;
use std::sync::Arc;

/// devnet's chain: anvil's / hardhat's local chain id.
pub const DEVNET_NETWORK: &str = "eip155:31337";
/// devnet's token: where anvil deploys the first contract of its account 0 (no contract is
/// deployed; the node's ledger plays the token).
pub const DEVNET_ASSET: &str = "0x5FbDB2315678afecb367f032d93F642f64180aa3";
/// devnet's payee: anvil's well-known account 1 (a test key; never use it for real money).
pub const DEVNET_PAY_TO: &str = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";
/// devnet's token EIP-712 domain, as USDC writes it.
pub const DEVNET_TOKEN_NAME: &str = "USD Coin";
pub const DEVNET_TOKEN_VERSION: &str = "2";
/// How long a client's authorization for one request may run.
pub const DEFAULT_MAX_TIMEOUT_SECS: u64 = 60;

/// What this node charges, and in what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentConfig {
    /// CAIP-2, e.g. `eip155:31337`.
    pub network: String,
    /// The token contract.
    pub asset: Address,
    /// The token's EIP-712 domain name and version (USDC: "USD Coin", "2").
    pub token_name: String,
    pub token_version: String,
    pub pay_to: Address,
    /// Base units (6 decimals for USDC) per `POST /v1/infer`, unless `model_prices` names
    /// the model.
    pub price: U256,
    /// Prices of one run by model label.
    pub model_prices: std::collections::BTreeMap<String, U256>,
    /// Per-token prices of chat models (`provider/model`), for x402 `upto`.
    pub token_prices: std::collections::BTreeMap<String, TokenPrice>,
    pub max_timeout_seconds: u64,
    /// A remote x402 facilitator's base URL (its `/verify`, `/settle` and `/supported`);
    /// `None` verifies and settles on this node's own ledger.
    pub facilitator: Option<String>,
}

impl PaymentConfig {
    /// devnet's defaults (see the constants) at `price` base units per request.
    pub fn devnet(price: U256) -> Self {
        PaymentConfig {
            network: DEVNET_NETWORK.into(),
            asset: DEVNET_ASSET.parse().expect("a valid address"),
            token_name: DEVNET_TOKEN_NAME.into(),
            token_version: DEVNET_TOKEN_VERSION.into(),
            pay_to: DEVNET_PAY_TO.parse().expect("a valid address"),
            price,
            model_prices: Default::default(),
            token_prices: Default::default(),
            max_timeout_seconds: DEFAULT_MAX_TIMEOUT_SECS,
            facilitator: None,
        }
    }

    /// The v2 requirements for one request.
    pub fn requirements(&self) -> PaymentRequirements {
        PaymentRequirements::exact_evm(
            self.network.clone(),
            self.asset,
            self.pay_to,
            self.price,
            self.max_timeout_seconds,
            self.token_name.clone(),
            self.token_version.clone(),
        )
    }

    /// The v1 requirements for one request of `resource` (v1 names the network as v2 does:
    /// CAIP-2, which haca-pay reads in v1 too; the legacy names have no local chain).
    pub fn requirements_v1(&self, resource: &str) -> PaymentRequirementsV1 {
        PaymentRequirementsV1 {
            scheme: SCHEME_EXACT.into(),
            network: self.network.clone(),
            max_amount_required: self.price.to_string(),
            resource: resource.into(),
            description: Some("one haca inference run".into()),
            mime_type: Some("application/json".into()),
            pay_to: self.pay_to.to_checksum(None),
            max_timeout_seconds: self.max_timeout_seconds,
            asset: self.asset.to_checksum(None),
            output_schema: None,
            extra: Some(json!({"name": self.token_name, "version": self.token_version})),
        }
    }
}

/// The verification rules' view of the store's ledger. A store that cannot answer reads as
/// "no balance" and "nonce used", so verification fails closed.
pub struct StoreLedger<'a>(pub &'a Store);

impl Ledger for StoreLedger<'_> {
    fn balance(&self, asset: Address, owner: Address) -> U256 {
        match self
            .0
            .balance(&asset.to_checksum(None), &owner.to_checksum(None))
        {
            Ok(s) => U256::from_str_radix(&s, 10).unwrap_or_default(),
            Err(e) => {
                tracing::error!("x402 ledger: balance of {owner}: {e}");
                U256::ZERO
            }
        }
    }

    fn nonce_used(&self, asset: Address, from: Address, nonce: B256) -> bool {
        self.0
            .nonce_used(
                &asset.to_checksum(None),
                &from.to_checksum(None),
                &hex_b256(nonce),
            )
            .unwrap_or_else(|e| {
                tracing::error!("x402 ledger: nonce of {from}: {e}");
                true
            })
    }
}

fn hex_b256(b: B256) -> String {
    format!("0x{}", hex::encode(b.as_slice()))
}

fn now_s() -> u64 {
    now_ms() / 1000
}

/// Settles a verified payment on the store: the validity window again at this moment, then
/// the atomic transfer. Returns the settlement id and when it settled (unix ms).
pub async fn settle_on(
    store: &Store,
    v: &VerifiedPayment,
    resource: &str,
    request_hash: Option<String>,
    run_id: Option<String>,
    verified_at: u64,
) -> Result<(B256, u64), PaymentError> {
    settle_amount_on(
        store,
        v,
        v.amount(),
        resource,
        request_hash,
        run_id,
        verified_at,
    )
    .await
}

/// [`settle_on`] moving `amount` (at most the authorization's value: an `upto` payment's
/// actual cost) instead of the authorization's whole value.
async fn settle_amount_on(
    store: &Store,
    v: &VerifiedPayment,
    amount: U256,
    resource: &str,
    request_hash: Option<String>,
    run_id: Option<String>,
    verified_at: u64,
) -> Result<(B256, u64), PaymentError> {
    if amount > v.amount() {
        return Err(PaymentError::Settlement(format!(
            "{amount} is above the {} authorized",
            v.amount()
        )));
    }
    // Checked again now: time passed since verification (the model may have been loading).
    haca_pay::check_window(v.authorization(), now_s(), 0)?;
    let settled_at = now_ms();
    let transfer = Transfer {
        transaction_id: hex_b256(v.digest()),
        network: v.network().into(),
        asset: v.asset().to_checksum(None),
        from: v.payer().to_checksum(None),
        to: v.pay_to().to_checksum(None),
        amount: amount.to_string(),
        nonce: hex_b256(v.nonce()),
        resource: resource.into(),
        request_hash,
        run_id,
        verified_at,
        settled_at,
    };
    match store.transfer_with_authorization(transfer).await {
        Ok(Ok(())) => Ok((v.digest(), settled_at)),
        Ok(Err(TransferRefusal::NonceUsed { .. })) => Err(PaymentError::NonceUsed {
            from: v.payer(),
            nonce: v.nonce(),
        }),
        Ok(Err(TransferRefusal::InsufficientFunds { balance, .. })) => {
            Err(PaymentError::InsufficientFunds {
                payer: v.payer(),
                balance: U256::from_str_radix(&balance, 10).unwrap_or_default(),
                // What this settlement moves (for upto, the price of the tokens served, not
                // the authorized maximum).
                required: amount,
            })
        }
        Err(e) => Err(PaymentError::Settlement(format!("the ledger failed: {e}"))),
    }
}

/// A payment refused by the rules, with the rule's stable code.
fn refused(e: &PaymentError) -> GatewayError {
    GatewayError::payment(e.code(), format!("payment refused: {e}"))
}

/// The code of a refusal that asks for a payment (none was offered).
pub const PAYMENT_REQUIRED_CODE: &str = "payment_required";

/// Who pays for a request that passed the paywall's first half.
enum Payer {
    /// An x402 authorization, verified, with the token's EIP-712 domain it was signed in.
    X402 {
        verified: VerifiedPayment,
        token_name: String,
        token_version: String,
        /// Set when a remote facilitator settles it: the facilitator and the request to send.
        remote: Option<Box<(Arc<dyn Facilitator>, FacilitatorRequest)>>,
    },
    /// An API key's prepaid balance (the key's ledger account), charged `price`.
    ApiKey {
        key: ApiKeyRow,
        config: PaymentConfig,
    },
}

/// A payment that passed verification and settles before its request runs.
pub struct PendingPayment {
    payer: Payer,
    resource: String,
    verified_at: u64,
    store: Arc<Store>,
}

/// What a payment covered, for the receipt's payment box.
pub struct Covered {
    /// The run it pays for: a charge whose run is never stored is refunded.
    pub run_id: haca_core::RunId,
    pub request_hash: Digest,
    /// The artifact that will run; `None` for an upstream provider (whose bytes nobody here
    /// can name).
    pub model: Option<BlobId>,
    pub mode: ExecMode,
    /// For LLM runs: the completion tokens the amount covers.
    pub max_tokens: Option<u64>,
}

/// A settled payment: the receipt's payment box and, for x402, the `PAYMENT-RESPONSE`
/// header.
pub struct SettledPayment {
    pub evidence: PaymentEvidence,
    /// The settle response and its header name: `PAYMENT-RESPONSE` (v2) or
    /// `X-PAYMENT-RESPONSE` (v1); none for an API-key charge.
    pub response: Option<(SettleResponse, &'static str)>,
}

impl SettledPayment {
    /// The response header, name and value (x402 payments only).
    pub fn header(&self) -> Option<(&'static str, String)> {
        self.response
            .as_ref()
            .map(|(r, name)| (*name, encode_header(r)))
    }
}

impl PendingPayment {
    /// Settles this payment for the request `covered` describes; a refusal is
    /// [`GatewayError::PaymentRequired`] (a replay: the nonce was spent meanwhile; an API
    /// key's balance ran short).
    pub async fn settle(self, covered: Covered) -> Result<SettledPayment, GatewayError> {
        match &self.payer {
            Payer::X402 {
                verified: v,
                token_name,
                token_version,
                remote,
            } => {
                let (transaction, settled_at) = match remote.as_deref() {
                    None => settle_on(
                        &self.store,
                        v,
                        &self.resource,
                        Some(covered.request_hash.to_hex()),
                        Some(covered.run_id.to_string()),
                        self.verified_at,
                    )
                    .await
                    .map_err(|e| refused(&e))?,
                    Some((f, request)) => {
                        haca_pay::check_window(v.authorization(), now_s(), 0)
                            .map_err(|e| refused(&e))?;
                        let answer = f.settle(request).await?;
                        if !answer.success {
                            return Err(facilitator_refused(
                                f.as_ref(),
                                answer.error_reason.as_deref(),
                                answer.error_message.as_deref(),
                            ));
                        }
                        let tx = answer.transaction.parse::<B256>().unwrap_or_else(|_| {
                            // A facilitator on a real chain answers a transaction hash; keep
                            // whatever it said in the box, and use the signed digest here.
                            v.digest()
                        });
                        (tx, now_ms())
                    }
                };
                Ok(SettledPayment {
                    evidence: eip3009_box(
                        v,
                        (token_name, token_version),
                        &self.resource,
                        covered,
                        self.verified_at,
                        (transaction, settled_at),
                    ),
                    response: Some((
                        v.settle_response(transaction),
                        if v.x402_version() == 1 {
                            X_PAYMENT_RESPONSE_HEADER
                        } else {
                            PAYMENT_RESPONSE_HEADER
                        },
                    )),
                })
            }
            Payer::ApiKey { key, config } => {
                let mut nonce = [0u8; 32];
                rand::rngs::OsRng.fill_bytes(&mut nonce);
                let nonce = format!("0x{}", hex::encode(nonce));
                let transaction = format!(
                    "0x{}",
                    haca_core::hash::sha256(
                        format!("haca api key charge {} {nonce}", key.id).as_bytes()
                    )
                    .to_hex()
                );
                let asset = config.asset.to_checksum(None);
                let settled_at = now_ms();
                let transfer = Transfer {
                    transaction_id: transaction.clone(),
                    network: config.network.clone(),
                    asset: asset.clone(),
                    from: key.account.clone(),
                    to: config.pay_to.to_checksum(None),
                    amount: config.price.to_string(),
                    nonce: nonce.clone(),
                    resource: self.resource.clone(),
                    request_hash: Some(covered.request_hash.to_hex()),
                    run_id: Some(covered.run_id.to_string()),
                    verified_at: self.verified_at,
                    settled_at,
                };
                match self.store.transfer_with_authorization(transfer).await? {
                    Ok(()) => {}
                    Err(TransferRefusal::InsufficientFunds { balance, .. }) => {
                        return Err(api_key_short(key, &balance, &config.price.to_string()))
                    }
                    Err(e) => {
                        return Err(GatewayError::internal(format!(
                            "an API key charge was refused: {e}"
                        )))
                    }
                }
                Ok(SettledPayment {
                    evidence: PaymentEvidence {
                        scheme: SCHEME_APIKEY.into(),
                        network: config.network.clone(),
                        asset,
                        amount: config.price.to_string(),
                        payer: key.account.clone(),
                        nonce,
                        resource: self.resource.clone(),
                        request_hash: covered.request_hash,
                        model: covered.model,
                        mode: Some(covered.mode),
                        max_tokens: covered.max_tokens,
                        authorization: None,
                        verified_at: self.verified_at,
                        settlement: Some(PaymentSettlement {
                            transaction,
                            settled_at,
                            round: None,
                        }),
                        upto: None,
                    },
                    response: None,
                })
            }
        }
    }
}

/// The payment box of an EIP-3009 authorization (`exact`, its amount) settled by
/// `transaction` at `settled_at`.
fn eip3009_box(
    v: &VerifiedPayment,
    (token_name, token_version): (&str, &str),
    resource: &str,
    covered: Covered,
    verified_at: u64,
    (transaction, settled_at): (B256, u64),
) -> PaymentEvidence {
    let a = v.authorization();
    PaymentEvidence {
        scheme: SCHEME_EXACT.into(),
        network: v.network().into(),
        asset: v.asset().to_checksum(None),
        amount: v.amount().to_string(),
        payer: v.payer().to_checksum(None),
        nonce: hex_b256(v.nonce()),
        resource: resource.into(),
        request_hash: covered.request_hash,
        model: covered.model,
        mode: Some(covered.mode),
        max_tokens: covered.max_tokens,
        authorization: Some(PaymentAuthorization {
            token_name: token_name.into(),
            token_version: token_version.into(),
            chain_id: v.chain_id(),
            pay_to: v.pay_to().to_checksum(None),
            valid_after: a.valid_after.saturating_to(),
            valid_before: a.valid_before.saturating_to(),
            signature: format!("0x{}", hex::encode(v.signature())),
        }),
        verified_at,
        settlement: Some(PaymentSettlement {
            transaction: hex_b256(transaction),
            settled_at,
            round: None,
        }),
        upto: None,
    }
}

/// The payment box's scheme for a charge to an API key's prepaid balance.
pub const SCHEME_APIKEY: &str = "apikey";

/// The prefix of every API key this node issues.
pub const API_KEY_PREFIX: &str = "hk_";

fn api_key_short(key: &ApiKeyRow, balance: &str, price: &str) -> GatewayError {
    GatewayError::payment(
        "insufficient_funds",
        format!(
            "API key {}: its balance is {balance} base units and a run costs {price}; fund its account {} (haca wallet fund {} AMOUNT)",
            key.id, key.account, key.account
        ),
    )
}

/// The SHA-256 of an API key, hex: how the store knows it.
fn api_key_hash(key: &str) -> String {
    haca_core::hash::sha256(key.as_bytes()).to_hex()
}

/// A new API key, and its row: a random key, its public id (the first 16 hex digits of its
/// hash) and a ledger account derived from the hash, whose private key nobody holds, so only
/// the node moves its money.
pub fn new_api_key(label: Option<String>, created_by: &str) -> (String, ApiKeyRow) {
    let mut secret = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    let key = format!("{API_KEY_PREFIX}{}", hex::encode(secret));
    let key_hash = api_key_hash(&key);
    let account_hash =
        haca_core::hash::sha256(format!("haca api key account {key_hash}").as_bytes());
    let account = Address::from_slice(&account_hash.0[..20]).to_checksum(None);
    let row = ApiKeyRow {
        id: key_hash[..16].to_owned(),
        key_hash,
        account,
        label,
        created_at: now_ms(),
        created_by: created_by.into(),
        revoked_at: None,
    };
    (key, row)
}

/// The API key a request presents as `Authorization: Bearer hk_...`, when it presents one:
/// a bearer of another form (an operator token, another service's key) is not an API key,
/// and pays for nothing. An unknown or revoked key is [`GatewayError::Unauthorized`].
pub fn presented_api_key(
    store: &Store,
    bearer: Option<&str>,
) -> Result<Option<ApiKeyRow>, GatewayError> {
    let Some(key) = bearer.filter(|k| k.starts_with(API_KEY_PREFIX)) else {
        return Ok(None);
    };
    let unknown = || {
        GatewayError::unauthorized(
            "invalid_api_key",
            "header Authorization: this node issued no such API key (create one: haca apikey create)",
        )
    };
    match store.api_key_by_hash(&api_key_hash(key))? {
        None => Err(unknown()),
        Some(k) if k.revoked_at.is_some() => Err(GatewayError::unauthorized(
            "invalid_api_key",
            format!("header Authorization: API key {} was revoked", k.id),
        )),
        Some(k) => Ok(Some(k)),
    }
}

/// The local rules' view of a ledger kept by a remote facilitator: every balance suffices
/// and every nonce is unused here, because the facilitator checks both.
struct RemoteLedger;

impl Ledger for RemoteLedger {
    fn balance(&self, _: Address, _: Address) -> U256 {
        U256::MAX
    }
    fn nonce_used(&self, _: Address, _: Address, _: B256) -> bool {
        false
    }
}

/// A remote x402 facilitator, which holds the ledger a payment settles on: it answers the
/// spec's `verify` and `settle` for `{x402Version, paymentPayload, paymentRequirements}`. The
/// binary's `facilitator::HttpFacilitator` is one over HTTP; its transport failures are
/// [`GatewayError::Unavailable`].
#[async_trait::async_trait]
pub trait Facilitator: Send + Sync {
    /// Who it is, for messages (its base URL).
    fn name(&self) -> &str;
    async fn verify(&self, request: &FacilitatorRequest) -> Result<VerifyResponse, GatewayError>;
    async fn settle(&self, request: &FacilitatorRequest) -> Result<SettleResponse, GatewayError>;
    /// Whether this facilitator settles on a chain itself (`--evm-rpc`): the chain is then the
    /// node's ledger, and its own `/v1/x402/verify` and `/settle` go through it too.
    fn on_chain(&self) -> bool {
        false
    }
    /// `owner`'s balance of the token, when this facilitator reads it from a chain; `None`:
    /// the node's own ledger answers.
    async fn balance(&self, _owner: Address) -> Option<Result<U256, GatewayError>> {
        None
    }
    /// Mints `amount` of the token to `to` on a chain (a devnet faucet): the transaction
    /// hash; `None` when this facilitator mints nothing and the node's ledger does.
    async fn mint(&self, _to: Address, _amount: U256) -> Option<Result<String, GatewayError>> {
        None
    }
}

/// A facilitator's refusal as this node's 402.
fn facilitator_refused(
    f: &dyn Facilitator,
    reason: Option<&str>,
    message: Option<&str>,
) -> GatewayError {
    GatewayError::payment(
        "facilitator_refused",
        format!(
            "payment refused by the x402 facilitator at {}: {}{}",
            f.name(),
            reason.unwrap_or("no reason given"),
            message.map(|m| format!(" ({m})")).unwrap_or_default()
        ),
    )
}

/// The node's payments: its terms and its ledger, or the remote facilitator that keeps it.
pub struct Payments {
    pub config: PaymentConfig,
    pub store: Arc<Store>,
    /// Set when `config.facilitator` names one: verifies balance and nonce, and settles.
    pub facilitator: Option<Arc<dyn Facilitator>>,
}

impl Payments {
    /// The price of a chat model by its public name (`provider/model`): its `--model-price`,
    /// else the node's price per request.
    pub fn price_of_chat_model(&self, name: &str) -> U256 {
        self.config
            .model_prices
            .get(name)
            .copied()
            .unwrap_or(self.config.price)
    }

    /// The price of one run of `reference` (a label, `label@REV` or a blob id): the price set
    /// for its label, or for any priced label that points at the same artifact now (so that
    /// naming the blob costs what naming the label does), else the node's default.
    pub fn price_of(&self, hub: &haca_hub::Hub, reference: &str) -> Result<U256, GatewayError> {
        if self.config.model_prices.is_empty() {
            return Ok(self.config.price);
        }
        let resolved = hub.resolve(reference, None)?;
        if let Some(p) = resolved
            .label
            .as_ref()
            .and_then(|l| self.config.model_prices.get(l))
        {
            return Ok(*p);
        }
        for (label, price) in &self.config.model_prices {
            if hub.resolve(label, None).map(|r| r.blob_id).ok() == Some(resolved.blob_id) {
                return Ok(*price);
            }
        }
        Ok(self.config.price)
    }

    /// The paywall's first half: verify the offered x402 payload (`PAYMENT-SIGNATURE`, v2, or
    /// `X-PAYMENT`, v1) against this node's terms (at `price`) and ledger, or, without one,
    /// find the offered API key and its balance. Each refusal is
    /// [`GatewayError::PaymentRequired`], but for an unknown API key (`Unauthorized`).
    pub async fn check(
        &self,
        offer: &PaymentOffer,
        resource: &str,
        price: U256,
    ) -> Result<PendingPayment, GatewayError> {
        let config = PaymentConfig {
            price,
            ..self.config.clone()
        };
        let api_key = match &offer.x402 {
            None => presented_api_key(&self.store, offer.bearer.as_deref())?,
            Some(_) => None,
        };
        let (name, value) = match &offer.x402 {
            Some((name, value)) => (*name, value),
            None if api_key.is_some() => {
                let key = api_key.expect("a key was presented");
                let balance = self
                    .store
                    .balance(&config.asset.to_checksum(None), &key.account)?;
                if U256::from_str_radix(&balance, 10).unwrap_or_default() < config.price {
                    return Err(api_key_short(&key, &balance, &config.price.to_string()));
                }
                return Ok(PendingPayment {
                    payer: Payer::ApiKey {
                        key,
                        config: config.clone(),
                    },
                    resource: resource.into(),
                    verified_at: now_ms(),
                    store: self.store.clone(),
                });
            }
            None => {
                return Err(GatewayError::payment(
                    PAYMENT_REQUIRED_CODE,
                    format!(
                        "this node charges {} base units of {} on {} per run: pay with x402 (header {PAYMENT_SIGNATURE_HEADER}, or {X_PAYMENT_HEADER} for x402 version 1), or send Authorization: Bearer <API key>",
                        config.price, config.asset, config.network
                    ),
                ))
            }
        };
        let text = value.as_deref().ok_or_else(|| {
            GatewayError::payment(
                "invalid_payload",
                format!("header {name}: not ASCII (expected base64)"),
            )
        })?;
        let payload = decode_payment_header(text)
            .map_err(|e| GatewayError::payment(e.code(), format!("header {name}: {e}")))?;
        let requirements = match &payload {
            AnyPaymentPayload::V1(_) => AnyRequirements::V1(config.requirements_v1(resource)),
            AnyPaymentPayload::V2(_) => AnyRequirements::V2(config.requirements()),
        };
        let remote = self.facilitator.clone().map(|f| {
            Box::new((
                f,
                FacilitatorRequest {
                    x402_version: match &payload {
                        AnyPaymentPayload::V1(_) => 1,
                        AnyPaymentPayload::V2(_) => 2,
                    },
                    payment_payload: payload.clone(),
                    payment_requirements: requirements.clone(),
                },
            ))
        });
        // With a remote facilitator, this node checks the terms and the signature itself and
        // the facilitator, which holds the ledger, checks balance and nonce.
        let verified = self
            .verify(&payload, &requirements, remote.is_none())
            .await
            .map_err(|e| refused(&e))?;
        match remote.as_deref() {
            None => {}
            Some((f, request)) => {
                let answer = f.verify(request).await?;
                if !answer.is_valid {
                    return Err(facilitator_refused(
                        f.as_ref(),
                        answer.invalid_reason.as_deref(),
                        answer.invalid_message.as_deref(),
                    ));
                }
            }
        }
        Ok(PendingPayment {
            payer: Payer::X402 {
                verified,
                token_name: config.token_name.clone(),
                token_version: config.token_version.clone(),
                remote,
            },
            resource: resource.into(),
            verified_at: now_ms(),
            store: self.store.clone(),
        })
    }

    /// haca-pay's `exact` rules, now, against this node's ledger.
    /// Against this node's own ledger, or, with `own_ledger` false, the terms and signature
    /// only (a remote facilitator checks balance and nonce). Runs on the blocking pool:
    /// public-key recovery takes ~0.3 ms, too long to hold an async worker.
    async fn verify(
        &self,
        payload: &AnyPaymentPayload,
        requirements: &AnyRequirements,
        own_ledger: bool,
    ) -> Result<VerifiedPayment, PaymentError> {
        let ledger = own_ledger.then(|| self.store.clone());
        let (payload, requirements) = (payload.clone(), requirements.clone());
        tokio::task::spawn_blocking(move || {
            let ctx = VerifyContext::at(now_s());
            match &ledger {
                Some(store) => verify_exact(&payload, &requirements, &ctx, &StoreLedger(store)),
                None => verify_exact(&payload, &requirements, &ctx, &RemoteLedger),
            }
        })
        .await
        .unwrap_or_else(|e| {
            Err(PaymentError::Settlement(format!(
                "verification stopped: {e}"
            )))
        })
    }

    /// A facilitator request, verified: it must name this node's token on this node's network
    /// (the facilitator settles nothing else), then pass [`Payments::verify`].
    pub async fn verify_for_facilitator(
        &self,
        fr: &FacilitatorRequest,
    ) -> Result<VerifiedPayment, PaymentError> {
        let req = &fr.payment_requirements;
        if req.network() != self.config.network {
            return Err(PaymentError::NetworkMismatch {
                expected: self.config.network.clone(),
                got: req.network().into(),
            });
        }
        if req.asset().parse::<Address>().ok() != Some(self.config.asset) {
            return Err(PaymentError::AssetMismatch {
                expected: self.config.asset.to_checksum(None),
                got: req.asset().into(),
            });
        }
        // The facilitator endpoints always answer for this node's own ledger.
        self.verify(&fr.payment_payload, req, true).await
    }
}

/// What a request offers to pay with, as the HTTP layer read it off the request.
#[derive(Clone, Debug, Default)]
pub struct PaymentOffer {
    /// `PAYMENT-SIGNATURE` (v2), else `X-PAYMENT` (v1): the header's name and its text
    /// (`None` when it is not ASCII).
    pub x402: Option<(&'static str, Option<String>)>,
    /// The token of `Authorization: Bearer`.
    pub bearer: Option<String>,
}

/// Per-token prices of a chat model (`--model-price provider/model=IN_UNITS/OUT_UNITS`).
pub use haca_pay::price::TokenPrice;

/// `upto` authorizations whose calls are running: a second call with the same one is refused
/// before any work, as it could not settle.
static UPTO_IN_FLIGHT: std::sync::Mutex<Vec<B256>> = std::sync::Mutex::new(Vec::new());

/// An x402 `upto` payment, verified before the call and settled after it, at what the call
/// used: an EIP-3009 authorization of the maximum, or a Permit2 `PermitWitnessTransferFrom`
/// as x402's own upto clients sign it. Either way the node's ledger moves only the actual
/// amount, and nothing when every route failed (the authorization is then left unused); no
/// Permit2 contract is involved.
pub struct UptoPending {
    auth: UptoAuth,
    resource: String,
    verified_at: u64,
    store: Arc<Store>,
    price: TokenPrice,
    /// The prompt tokens the worst case was priced at (an upper bound on the prompt's).
    pub prompt_bound: u64,
    /// The completion tokens the worst case was priced at (the call's `max_tokens`).
    pub max_tokens: u64,
}

/// How an `upto` maximum was authorized.
enum UptoAuth {
    Eip3009 {
        verified: VerifiedPayment,
        token_name: String,
        token_version: String,
    },
    Permit2 {
        terms: haca_pay::permit2::Permit2Terms,
        signature: Vec<u8>,
        chain_id: u64,
        network: String,
        digest: B256,
    },
}

impl UptoAuth {
    fn digest(&self) -> B256 {
        match self {
            UptoAuth::Eip3009 { verified, .. } => verified.digest(),
            UptoAuth::Permit2 { digest, .. } => *digest,
        }
    }
}

impl Drop for UptoPending {
    fn drop(&mut self) {
        let digest = self.auth.digest();
        if let Ok(mut f) = UPTO_IN_FLIGHT.lock() {
            f.retain(|d| *d != digest);
        }
    }
}

impl UptoPending {
    /// The most this call may settle: the authorization's value.
    pub fn authorized(&self) -> U256 {
        match &self.auth {
            UptoAuth::Eip3009 { verified, .. } => verified.amount(),
            UptoAuth::Permit2 { terms, .. } => terms.amount,
        }
    }

    /// What settles for the tokens served: their price, capped at the authorization, so a
    /// settled amount above it cannot be produced.
    pub fn amount_for(&self, prompt: u64, completion: u64) -> U256 {
        self.price.cost(prompt, completion).min(self.authorized())
    }

    /// Settles the call's actual cost for `prompt` and `completion` tokens; the payment box
    /// records the authorized maximum, the prices, the tokens and the settled amount.
    pub async fn settle(
        &self,
        covered: Covered,
        prompt: u64,
        completion: u64,
    ) -> Result<SettledPayment, GatewayError> {
        let amount = self.amount_for(prompt, completion);
        let upto = |permit2| haca_core::receipt::UptoTerms {
            authorized: self.authorized().to_string(),
            input_per_1k: self.price.input.to_string(),
            output_per_1k: self.price.output.to_string(),
            prompt_tokens: prompt,
            completion_tokens: completion,
            permit2,
        };
        match &self.auth {
            UptoAuth::Eip3009 {
                verified: v,
                token_name,
                token_version,
            } => {
                let (transaction, settled_at) = settle_amount_on(
                    &self.store,
                    v,
                    amount,
                    &self.resource,
                    Some(covered.request_hash.to_hex()),
                    Some(covered.run_id.to_string()),
                    self.verified_at,
                )
                .await
                .map_err(|e| refused(&e))?;
                let mut response = v.settle_response(transaction);
                response.amount = Some(amount.to_string());
                // The box exact would write for this authorization, but for the amount settled.
                let mut evidence = eip3009_box(
                    v,
                    (token_name, token_version),
                    &self.resource,
                    covered,
                    self.verified_at,
                    (transaction, settled_at),
                );
                evidence.scheme = haca_pay::types::SCHEME_UPTO.into();
                evidence.amount = amount.to_string();
                evidence.upto = Some(upto(None));
                Ok(SettledPayment {
                    evidence,
                    response: Some((response, PAYMENT_RESPONSE_HEADER)),
                })
            }
            UptoAuth::Permit2 {
                terms,
                signature,
                chain_id,
                network,
                digest,
            } => {
                if U256::from(now_s()) >= terms.deadline {
                    return Err(GatewayError::payment(
                        "authorization_expired",
                        format!(
                            "payment refused: the Permit2 authorization's deadline {} has passed",
                            terms.deadline
                        ),
                    ));
                }
                let settled_at = now_ms();
                let (asset, payer) = (terms.token.to_checksum(None), terms.from.to_checksum(None));
                let transfer = Transfer {
                    transaction_id: hex_b256(*digest),
                    network: network.clone(),
                    asset: asset.clone(),
                    from: payer.clone(),
                    to: terms.to.to_checksum(None),
                    amount: amount.to_string(),
                    nonce: terms.nonce_hex(),
                    resource: self.resource.clone(),
                    request_hash: Some(covered.request_hash.to_hex()),
                    run_id: Some(covered.run_id.to_string()),
                    verified_at: self.verified_at,
                    settled_at,
                };
                match self.store.transfer_with_authorization(transfer).await? {
                    Ok(()) => {}
                    Err(TransferRefusal::NonceUsed { .. }) => {
                        return Err(GatewayError::payment(
                            "nonce_used",
                            "payment refused: this Permit2 nonce was already settled",
                        ))
                    }
                    Err(TransferRefusal::InsufficientFunds { balance, .. }) => {
                        return Err(GatewayError::payment(
                            "insufficient_funds",
                            format!("payment refused: {payer} holds {balance} base units, the call costs {amount}"),
                        ))
                    }
                }
                let response = SettleResponse {
                    success: true,
                    error_reason: None,
                    error_message: None,
                    payer: Some(payer.clone()),
                    transaction: digest.to_string(),
                    network: network.clone(),
                    amount: Some(amount.to_string()),
                };
                Ok(SettledPayment {
                    evidence: PaymentEvidence {
                        scheme: haca_pay::types::SCHEME_UPTO.into(),
                        network: network.clone(),
                        asset,
                        amount: amount.to_string(),
                        payer,
                        nonce: terms.nonce_hex(),
                        resource: self.resource.clone(),
                        request_hash: covered.request_hash,
                        model: covered.model,
                        mode: Some(covered.mode),
                        max_tokens: covered.max_tokens,
                        authorization: Some(PaymentAuthorization {
                            token_name: "Permit2".into(),
                            token_version: String::new(),
                            chain_id: *chain_id,
                            pay_to: terms.to.to_checksum(None),
                            valid_after: terms.valid_after.saturating_to(),
                            valid_before: terms.deadline.saturating_to(),
                            signature: format!("0x{}", hex::encode(signature)),
                        }),
                        verified_at: self.verified_at,
                        settlement: Some(PaymentSettlement {
                            transaction: hex_b256(*digest),
                            settled_at,
                            round: None,
                        }),
                        upto: Some(upto(Some(haca_core::receipt::Permit2Fields {
                            spender: terms.spender.to_checksum(None),
                            facilitator: terms.facilitator.to_checksum(None),
                        }))),
                    },
                    response: Some((response, PAYMENT_RESPONSE_HEADER)),
                })
            }
        }
    }
}

impl PaymentOffer {
    /// Whether the offered x402 payment names the `upto` scheme.
    pub fn is_upto(&self) -> bool {
        let Some((_, Some(text))) = &self.x402 else {
            return false;
        };
        haca_pay::types::decode_payment_header_json(text)
            .is_ok_and(|v| v["accepted"]["scheme"] == haca_pay::types::SCHEME_UPTO)
    }
}

impl Payments {
    /// The per-token price of a chat model (`provider/model`), when it has one.
    pub fn token_price(&self, name: &str) -> Option<TokenPrice> {
        self.config.token_prices.get(name).copied()
    }

    /// The paywall's first half for x402 `upto` (version 2): the payer's authorization of a
    /// maximum, either EIP-3009 (checked as `exact` would check it at its own value: terms,
    /// window, signature, nonce, balance) or Permit2 as x402's upto clients sign it (token,
    /// payee, spender, facilitator, window, signature, nonce, balance), which must cover
    /// the call's cost at `prompt_bound` prompt tokens and `max_tokens` completion tokens.
    /// Refused here, before any work, when it does not.
    pub async fn check_upto(
        &self,
        offer: &PaymentOffer,
        resource: &str,
        price: TokenPrice,
        prompt_bound: u64,
        max_tokens: u64,
    ) -> Result<UptoPending, GatewayError> {
        if self.facilitator.is_some() {
            return Err(GatewayError::payment(
                "unsupported_scheme",
                "upto settles on this node's own ledger; this node settles through a remote facilitator: pay exact",
            ));
        }
        let Some((name, Some(text))) = &offer.x402 else {
            return Err(GatewayError::payment(
                "invalid_payload",
                "upto: no x402 payment header (PAYMENT-SIGNATURE)",
            ));
        };
        let worst_case = price.cost(prompt_bound, max_tokens);
        let below = |authorized: U256| {
            GatewayError::payment(
                "upto_below_worst_case",
                format!(
                    "header {name}: the upto authorization is for {authorized} base units, below this call's worst case of {worst_case} ({max_tokens} max_tokens at {} per 1,000 completion tokens, a prompt of at most {prompt_bound} tokens at {} per 1,000): authorize at least {worst_case}; nothing was run or charged",
                    price.output, price.input
                ),
            )
        };
        let undecodable = |e: haca_pay::DecodeError| {
            GatewayError::payment(e.code(), format!("header {name}: {e}"))
        };
        let v = haca_pay::types::decode_payment_header_json(text).map_err(undecodable)?;
        let auth = if v["payload"].get("permit2Authorization").is_some() {
            // Off the async workers, as `verify` runs `exact`'s checks.
            let (config, store, header) = (self.config.clone(), self.store.clone(), *name);
            let (terms, signature, chain_id, digest) = tokio::task::spawn_blocking(move || {
                Self::check_permit2(&config, &store, header, &v)
            })
            .await
            .map_err(|e| {
                GatewayError::internal(format!("checking the Permit2 authorization stopped: {e}"))
            })??;
            if terms.amount < worst_case {
                return Err(below(terms.amount));
            }
            UptoAuth::Permit2 {
                terms,
                signature,
                chain_id,
                network: self.config.network.clone(),
                digest,
            }
        } else {
            let payload = haca_pay::types::payment_payload_from_json(v).map_err(undecodable)?;
            let AnyPaymentPayload::V2(mut p) = payload else {
                return Err(GatewayError::payment(
                    "unsupported_scheme",
                    format!("header {name}: upto is served for x402 version 2 only"),
                ));
            };
            let authorized = p.payload.authorization.value;
            if authorized < worst_case {
                return Err(below(authorized));
            }
            // The signature covers (from, to, value, window, nonce), not the scheme: checked
            // as an `exact` payment of the authorized value.
            p.accepted.scheme = SCHEME_EXACT.into();
            p.accepted.amount = authorized.to_string();
            let config = PaymentConfig {
                price: authorized,
                ..self.config.clone()
            };
            let payload = AnyPaymentPayload::V2(p);
            let requirements = AnyRequirements::V2(config.requirements());
            let verified = self
                .verify(&payload, &requirements, true)
                .await
                .map_err(|e| refused(&e))?;
            UptoAuth::Eip3009 {
                verified,
                token_name: config.token_name.clone(),
                token_version: config.token_version.clone(),
            }
        };
        {
            let mut f = UPTO_IN_FLIGHT.lock().expect("in-flight lock");
            if f.contains(&auth.digest()) {
                return Err(GatewayError::payment(
                    "nonce_in_use",
                    format!("header {name}: this upto authorization pays for a call still running"),
                ));
            }
            f.push(auth.digest());
        }
        Ok(UptoPending {
            auth,
            resource: resource.into(),
            verified_at: now_ms(),
            store: self.store.clone(),
            price,
            prompt_bound,
            max_tokens,
        })
    }

    /// A Permit2 upto payload's own checks: x402 version 2 on this node's network, this
    /// node's token to this node's payee, the x402 upto proxy as spender, this node as the
    /// facilitator (its payee address, which the 402 offers as `facilitatorAddress`), inside
    /// its window, signed by its `from`, its nonce unused and the payer's balance enough.
    /// Blocking (a signature recovery, ledger reads): run on the blocking pool.
    fn check_permit2(
        config: &PaymentConfig,
        store: &Arc<Store>,
        name: &str,
        v: &serde_json::Value,
    ) -> Result<(haca_pay::permit2::Permit2Terms, Vec<u8>, u64, B256), GatewayError> {
        use haca_pay::permit2::{UptoPermit2Payload, UPTO_PROXY_ADDRESS};
        let bad = |code: &'static str, why: String| {
            GatewayError::payment(code, format!("header {name}: payment refused: {why}"))
        };
        if v["x402Version"] != 2 {
            return Err(bad(
                "unsupported_version",
                "upto over Permit2 is x402 version 2".into(),
            ));
        }
        let network = v["accepted"]["network"].as_str().unwrap_or_default();
        if network != config.network {
            return Err(bad(
                "network_mismatch",
                format!("accepted.network {network:?} is not {}", config.network),
            ));
        }
        let chain_id: u64 = network
            .strip_prefix("eip155:")
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| {
                bad(
                    "network_mismatch",
                    format!("{network:?} is not an EVM network"),
                )
            })?;
        let payload: UptoPermit2Payload = serde_json::from_value(v["payload"].clone())
            .map_err(|e| bad("invalid_payload", format!("payload: {e}")))?;
        let terms = payload
            .permit2_authorization
            .terms()
            .map_err(|e| bad("invalid_payload", e))?;
        let c = &config;
        for (ok, code, why) in [
            (
                terms.token == c.asset,
                "asset_mismatch",
                format!("permitted.token {} is not {}", terms.token, c.asset),
            ),
            (
                terms.to == c.pay_to,
                "recipient_mismatch",
                format!("witness.to {} is not {}", terms.to, c.pay_to),
            ),
            (
                terms.facilitator == c.pay_to,
                "facilitator_mismatch",
                format!(
                    "witness.facilitator {} is not this node's {}",
                    terms.facilitator, c.pay_to
                ),
            ),
            (
                terms.spender == UPTO_PROXY_ADDRESS,
                "invalid_payload",
                format!(
                    "spender {} is not the x402 upto proxy {UPTO_PROXY_ADDRESS}",
                    terms.spender
                ),
            ),
        ] {
            if !ok {
                return Err(bad(code, why));
            }
        }
        let now = U256::from(now_s());
        if now < terms.valid_after {
            return Err(bad(
                "authorization_not_yet_valid",
                format!("valid after {}", terms.valid_after),
            ));
        }
        if now >= terms.deadline {
            return Err(bad(
                "authorization_expired",
                format!("its deadline {} has passed", terms.deadline),
            ));
        }
        let signature = payload
            .signature
            .strip_prefix("0x")
            .and_then(|h| hex::decode(h).ok())
            .ok_or_else(|| bad("invalid_signature", "signature: not 0x hex".into()))?;
        let signer = terms
            .recover(chain_id, &signature)
            .map_err(|e| bad("invalid_signature", e))?;
        if signer != terms.from {
            return Err(bad(
                "invalid_signature",
                format!(
                    "the Permit2 authorization recovers to {signer}, not to its from {}",
                    terms.from
                ),
            ));
        }
        let ledger = StoreLedger(store);
        if ledger.nonce_used(
            terms.token,
            terms.from,
            B256::from(terms.nonce.to_be_bytes::<32>()),
        ) {
            return Err(bad(
                "nonce_used",
                "this Permit2 nonce was already settled".into(),
            ));
        }
        let balance = ledger.balance(terms.token, terms.from);
        if balance < terms.amount {
            return Err(bad(
                "insufficient_funds",
                format!(
                    "{} holds {balance} base units, the authorization is for {}",
                    terms.from, terms.amount
                ),
            ));
        }
        let digest = terms.signing_hash(chain_id);
        Ok((terms, signature, chain_id, digest))
    }
}

#[cfg(test)]
mod upto_tests {
    use super::*;

    #[test]
    fn token_prices_round_up_per_part() {
        let p = TokenPrice {
            input: U256::from(300u64),
            output: U256::from(1200u64),
        };
        // 10 prompt tokens: 3 units; 7 completion tokens: 8.4, so 9.
        assert_eq!(p.cost(10, 7), U256::from(12u64));
        assert_eq!(p.cost(0, 0), U256::ZERO);
    }
}
