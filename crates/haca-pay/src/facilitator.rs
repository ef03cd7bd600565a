//! The `exact` scheme's verification rules (EIP-3009 on EVM), as pure functions of the payment,
//! the requirements, the time and a [`Ledger`] view.
//!
//! [`verify_exact`] checks, in this order, and stops at the first failure: protocol version,
//! scheme, network, the requirements themselves (known network, addresses, amount, EIP-712
//! domain), asset (v2's `accepted.asset`; a v1 payment names no asset, and its signature only
//! recovers under the required token's domain), recipient, amount (exactly the required one),
//! validity window, signature, nonce, balance. [`settle_exact`] verifies again and moves the
//! money on a [`MemLedger`].

use crate::eip3009::TokenDomain;
use crate::ledger::{Ledger, LedgerError, MemLedger};
use crate::types::{
    evm_chain_id, parse_address, parse_decimal, AnyPaymentPayload, AnyRequirements, Authorization,
    DecodeError, ReqView, SettleResponse, VerifyResponse, SCHEME_EXACT,
};
use alloy_primitives::{Address, Bytes, B256, U256};

/// Seconds an authorization must still have to run when it is verified, so that settling it
/// a moment later still lands inside its window (the Python facilitator uses 6).
pub const EXPIRY_MARGIN_SECS: u64 = 6;

/// The circumstances of one verification.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerifyContext {
    /// Unix seconds.
    pub now: u64,
    /// `validBefore` must exceed `now + expiry_margin_secs`.
    pub expiry_margin_secs: u64,
    /// Whether x402 version 1 payments are accepted (version 2 always is).
    pub accept_v1: bool,
}

impl VerifyContext {
    /// Verify at `now` with the default margin, accepting versions 1 and 2.
    pub fn at(now: u64) -> Self {
        VerifyContext {
            now,
            expiry_margin_secs: EXPIRY_MARGIN_SECS,
            accept_v1: true,
        }
    }
}

/// Why a payment was refused. [`code`](Self::code) is the x402 `invalidReason` /
/// `errorReason` string; `Display` says the same in plain words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    #[error("the payment could not be read: {0}")]
    Decode(DecodeError),
    #[error("x402 version {version} is not accepted here")]
    UnsupportedVersion { version: u32 },
    #[error(
        "the payment speaks x402 version {payment} but the requirements are version {requirements}"
    )]
    VersionMismatch { payment: u32, requirements: u32 },
    #[error("scheme {scheme:?} is not supported; only \"exact\" is")]
    UnsupportedScheme { scheme: String },
    #[error("the payment is for network {got:?} but {expected:?} is required")]
    NetworkMismatch { expected: String, got: String },
    #[error("network {network:?} is not an EVM network this side knows")]
    UnknownNetwork { network: String },
    #[error("the payment is in asset {got} but {expected} is required")]
    AssetMismatch { expected: String, got: String },
    #[error("the requirements are invalid: field `{field}`: {reason}")]
    InvalidRequirements { field: &'static str, reason: String },
    #[error("the requirements lack the token's EIP-712 domain (extra.name and extra.version)")]
    MissingEip712Domain,
    #[error("the authorization pays {got} but the requirements name {expected} as the recipient")]
    RecipientMismatch { expected: Address, got: Address },
    #[error(
        "the authorization is for {authorized} base units but exactly {required} are required"
    )]
    AmountMismatch { required: U256, authorized: U256 },
    #[error("the authorization is not valid yet: validAfter {valid_after}, now {now}")]
    NotYetValid { valid_after: U256, now: u64 },
    #[error("the authorization has expired or expires too soon: validBefore {valid_before}, now {now}, margin {margin_secs}s")]
    Expired {
        valid_before: U256,
        now: u64,
        margin_secs: u64,
    },
    #[error("the signature does not prove that {from} authorized this transfer: {reason}")]
    InvalidSignature { from: Address, reason: String },
    #[error("authorization nonce {nonce} of {from} was already used")]
    NonceUsed { from: Address, nonce: B256 },
    #[error("the payer {payer} holds {balance} base units but {required} are needed")]
    InsufficientFunds {
        payer: Address,
        balance: U256,
        required: U256,
    },
    #[error("settlement failed: {0}")]
    Settlement(String),
}

impl PaymentError {
    /// The stable machine code. Where the x402 spec (v2, section 9) names the failure, its
    /// string; otherwise the Python `x402` package's (`x402.mechanisms.evm.constants`:
    /// `network_mismatch`, `missing_eip712_domain`, `invalid_exact_evm_nonce_already_used`);
    /// `invalid_exact_evm_payload_asset_mismatch` is haca's own (neither names one).
    pub fn code(&self) -> &'static str {
        match self {
            PaymentError::Decode(e) => e.code(),
            PaymentError::UnsupportedVersion { .. } | PaymentError::VersionMismatch { .. } => {
                "invalid_x402_version"
            }
            PaymentError::UnsupportedScheme { .. } => "unsupported_scheme",
            PaymentError::NetworkMismatch { .. } => "network_mismatch",
            PaymentError::UnknownNetwork { .. } => "invalid_network",
            PaymentError::AssetMismatch { .. } => "invalid_exact_evm_payload_asset_mismatch",
            PaymentError::InvalidRequirements { .. } => "invalid_payment_requirements",
            PaymentError::MissingEip712Domain => "missing_eip712_domain",
            PaymentError::RecipientMismatch { .. } => {
                "invalid_exact_evm_payload_recipient_mismatch"
            }
            PaymentError::AmountMismatch { .. } => "invalid_exact_evm_payload_authorization_value",
            PaymentError::NotYetValid { .. } => {
                "invalid_exact_evm_payload_authorization_valid_after"
            }
            PaymentError::Expired { .. } => "invalid_exact_evm_payload_authorization_valid_before",
            PaymentError::InvalidSignature { .. } => "invalid_exact_evm_payload_signature",
            PaymentError::NonceUsed { .. } => "invalid_exact_evm_nonce_already_used",
            PaymentError::InsufficientFunds { .. } => "insufficient_funds",
            PaymentError::Settlement(_) => "unexpected_settle_error",
        }
    }

    /// The `/verify` answer for this refusal.
    pub fn verify_response(&self, payer: Option<Address>) -> VerifyResponse {
        VerifyResponse {
            is_valid: false,
            invalid_reason: Some(self.code().into()),
            invalid_message: Some(self.to_string()),
            payer: payer.map(|a| a.to_checksum(None)),
        }
    }

    /// The `/settle` answer (and `PAYMENT-RESPONSE`) for this refusal.
    pub fn settle_response(&self, payer: Option<Address>, network: &str) -> SettleResponse {
        SettleResponse {
            success: false,
            error_reason: Some(self.code().into()),
            error_message: Some(self.to_string()),
            payer: payer.map(|a| a.to_checksum(None)),
            transaction: String::new(),
            network: network.into(),
            amount: None,
        }
    }
}

impl From<DecodeError> for PaymentError {
    fn from(e: DecodeError) -> Self {
        PaymentError::Decode(e)
    }
}

impl From<LedgerError> for PaymentError {
    fn from(e: LedgerError) -> Self {
        match e {
            LedgerError::NonceUsed { from, nonce } => PaymentError::NonceUsed { from, nonce },
            LedgerError::InsufficientFunds {
                owner,
                balance,
                required,
            } => PaymentError::InsufficientFunds {
                payer: owner,
                balance,
                required,
            },
            LedgerError::NotYetValid { valid_after, now } => {
                PaymentError::NotYetValid { valid_after, now }
            }
            LedgerError::Expired { valid_before, now } => PaymentError::Expired {
                valid_before,
                now,
                margin_secs: 0,
            },
            e @ LedgerError::SupplyOverflow { .. } => PaymentError::Settlement(e.to_string()),
        }
    }
}

/// A payment that passed [`verify_exact`]: what it pays, to whom, from whom, under which
/// authorization. Only this crate makes one, so holding one means the checks ran.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedPayment {
    version: u32,
    network: String,
    chain_id: u64,
    asset: Address,
    authorization: Authorization,
    signature: Bytes,
    digest: B256,
}

impl VerifiedPayment {
    pub fn x402_version(&self) -> u32 {
        self.version
    }
    pub fn scheme(&self) -> &'static str {
        SCHEME_EXACT
    }
    /// The network as the requirements wrote it.
    pub fn network(&self) -> &str {
        &self.network
    }
    pub fn chain_id(&self) -> u64 {
        self.chain_id
    }
    /// The token.
    pub fn asset(&self) -> Address {
        self.asset
    }
    pub fn payer(&self) -> Address {
        self.authorization.from
    }
    pub fn pay_to(&self) -> Address {
        self.authorization.to
    }
    /// Base units.
    pub fn amount(&self) -> U256 {
        self.authorization.value
    }
    pub fn nonce(&self) -> B256 {
        self.authorization.nonce
    }
    pub fn authorization(&self) -> &Authorization {
        &self.authorization
    }
    pub fn signature(&self) -> &Bytes {
        &self.signature
    }
    /// The EIP-712 digest the payer signed. The in-memory ledger uses it as the settlement's
    /// transaction id.
    pub fn digest(&self) -> B256 {
        self.digest
    }

    /// The `/verify` answer for this payment.
    pub fn verify_response(&self) -> VerifyResponse {
        VerifyResponse {
            is_valid: true,
            invalid_reason: None,
            invalid_message: None,
            payer: Some(self.payer().to_checksum(None)),
        }
    }

    /// The `/settle` answer (and `PAYMENT-RESPONSE`) once this payment settled in `transaction`.
    pub fn settle_response(&self, transaction: B256) -> SettleResponse {
        SettleResponse {
            success: true,
            error_reason: None,
            error_message: None,
            payer: Some(self.payer().to_checksum(None)),
            transaction: transaction.to_string(),
            network: self.network.clone(),
            amount: Some(self.amount().to_string()),
        }
    }
}

/// What `exact` requirements ask for, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ExactTerms {
    pub(crate) asset: Address,
    pub(crate) pay_to: Address,
    pub(crate) amount: U256,
    pub(crate) domain: TokenDomain,
}

/// Parse `exact` EVM requirements; the scheme is checked by the caller.
pub(crate) fn exact_terms(req: ReqView<'_>) -> Result<ExactTerms, PaymentError> {
    let network = req.network();
    let chain_id =
        evm_chain_id(req.version(), network).ok_or_else(|| PaymentError::UnknownNetwork {
            network: network.into(),
        })?;
    let asset = parse_address(req.asset()).map_err(|reason| PaymentError::InvalidRequirements {
        field: "asset",
        reason,
    })?;
    let pay_to =
        parse_address(req.pay_to()).map_err(|reason| PaymentError::InvalidRequirements {
            field: "payTo",
            reason,
        })?;
    let (field, amount) = req.amount();
    let amount = parse_decimal(amount)
        .map_err(|reason| PaymentError::InvalidRequirements { field, reason })?;
    let (name, version) = req
        .domain_fields()
        .ok_or(PaymentError::MissingEip712Domain)?;
    Ok(ExactTerms {
        asset,
        pay_to,
        amount,
        domain: TokenDomain {
            name,
            version,
            chain_id,
            verifying_contract: asset,
        },
    })
}

/// Verify an `exact` EVM payment against the requirements it claims to meet, at `ctx.now`,
/// reading nonce state and balance from `ledger`. Changes nothing.
pub fn verify_exact<L: Ledger + ?Sized>(
    payment: &AnyPaymentPayload,
    requirements: &AnyRequirements,
    ctx: &VerifyContext,
    ledger: &L,
) -> Result<VerifiedPayment, PaymentError> {
    let version = payment.version();
    if !(version == 2 || (version == 1 && ctx.accept_v1)) {
        return Err(PaymentError::UnsupportedVersion { version });
    }
    if requirements.version() != version {
        return Err(PaymentError::VersionMismatch {
            payment: version,
            requirements: requirements.version(),
        });
    }
    let req = requirements.view();
    for scheme in [payment.scheme(), req.scheme()] {
        if scheme != SCHEME_EXACT {
            return Err(PaymentError::UnsupportedScheme {
                scheme: scheme.into(),
            });
        }
    }
    if payment.network() != req.network() {
        return Err(PaymentError::NetworkMismatch {
            expected: req.network().into(),
            got: payment.network().into(),
        });
    }
    let terms = exact_terms(req)?;
    if let AnyPaymentPayload::V2(p) = payment {
        if parse_address(&p.accepted.asset).ok() != Some(terms.asset) {
            return Err(PaymentError::AssetMismatch {
                expected: req.asset().into(),
                got: p.accepted.asset.clone(),
            });
        }
    }

    let exact = payment.exact();
    let auth = &exact.authorization;
    if auth.to != terms.pay_to {
        return Err(PaymentError::RecipientMismatch {
            expected: terms.pay_to,
            got: auth.to,
        });
    }
    if auth.value != terms.amount {
        return Err(PaymentError::AmountMismatch {
            required: terms.amount,
            authorized: auth.value,
        });
    }
    check_window(auth, ctx.now, ctx.expiry_margin_secs)?;
    match terms.domain.recover(auth, &exact.signature) {
        Ok(signer) if signer == auth.from => {}
        Ok(signer) => {
            return Err(PaymentError::InvalidSignature {
                from: auth.from,
                reason: format!("it recovers to {signer}"),
            })
        }
        Err(e) => {
            return Err(PaymentError::InvalidSignature {
                from: auth.from,
                reason: e.to_string(),
            })
        }
    }
    if ledger.nonce_used(terms.asset, auth.from, auth.nonce) {
        return Err(PaymentError::NonceUsed {
            from: auth.from,
            nonce: auth.nonce,
        });
    }
    let balance = ledger.balance(terms.asset, auth.from);
    if balance < auth.value {
        return Err(PaymentError::InsufficientFunds {
            payer: auth.from,
            balance,
            required: auth.value,
        });
    }
    Ok(VerifiedPayment {
        version,
        network: req.network().into(),
        chain_id: terms.domain.chain_id,
        asset: terms.asset,
        authorization: auth.clone(),
        signature: exact.signature.clone(),
        digest: terms.domain.signing_hash(auth),
    })
}

/// The authorization's validity window at `now` (unix seconds): `validAfter < now` and
/// `validBefore > now + margin_secs`. A settler checks it again, with no margin, at the moment
/// it moves the money.
pub fn check_window(auth: &Authorization, now: u64, margin_secs: u64) -> Result<(), PaymentError> {
    let at = U256::from(now);
    if auth.valid_after >= at {
        return Err(PaymentError::NotYetValid {
            valid_after: auth.valid_after,
            now,
        });
    }
    if auth.valid_before <= at + U256::from(margin_secs) {
        return Err(PaymentError::Expired {
            valid_before: auth.valid_before,
            now,
            margin_secs,
        });
    }
    Ok(())
}

/// Verify, then settle on `ledger`: the payer's balance moves to the recipient and the nonce is
/// spent, or nothing changes. The settlement's transaction id is the payment's
/// [`digest`](VerifiedPayment::digest).
pub fn settle_exact(
    ledger: &mut MemLedger,
    payment: &AnyPaymentPayload,
    requirements: &AnyRequirements,
    ctx: &VerifyContext,
) -> Result<VerifiedPayment, PaymentError> {
    let verified = verify_exact(payment, requirements, ctx, ledger)?;
    ledger.transfer_with_authorization(&verified, ctx.now)?;
    Ok(verified)
}
