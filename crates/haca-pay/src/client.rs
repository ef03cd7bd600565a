//! The paying side: pick a requirement this wallet can pay from a 402, then sign an `exact`
//! payment for it, as the Python client does (same timing rules, same payload shape).

use crate::facilitator::{exact_terms, ExactTerms};
use crate::types::{
    AnyPaymentPayload, AnyPaymentRequired, Authorization, ExactEvmPayload, PaymentPayload,
    PaymentPayloadV1, ReqView, ResourceInfo, SCHEME_EXACT,
};
use alloy_primitives::{Address, B256, U256};
use alloy_signer_local::PrivateKeySigner;
use serde_json::{Map, Value};

/// v2: `validBefore = now + maxTimeoutSeconds`, or this many seconds when that is 0.
const V2_DEFAULT_VALIDITY_SECS: u64 = 3600;
/// v1: `validBefore = now + maxTimeoutSeconds`, or this many seconds when that is 0.
const V1_DEFAULT_VALIDITY_SECS: u64 = 600;
/// v1: `validAfter = now - 600`, to absorb clock skew.
const V1_BACKDATE_SECS: u64 = 600;

/// What this wallet is willing to pay. Empty lists mean any.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PayPolicy {
    /// Networks as the requirements write them (`eip155:84532`, or `base-sepolia` in v1).
    pub networks: Vec<String>,
    /// Tokens.
    pub assets: Vec<Address>,
    /// The most one payment may cost, in base units.
    pub max_amount: Option<U256>,
    /// Refuse v1 402s.
    pub refuse_v1: bool,
}

/// A requirement chosen from a 402, with what was parsed from it.
#[derive(Clone, Debug)]
pub struct Selected<'a> {
    index: usize,
    req: ReqView<'a>,
    resource: Option<&'a ResourceInfo>,
    extensions: Option<&'a Map<String, Value>>,
    terms: ExactTerms,
}

impl Selected<'_> {
    /// Position in `accepts`.
    pub fn index(&self) -> usize {
        self.index
    }
    pub fn x402_version(&self) -> u32 {
        self.req.version()
    }
    pub fn network(&self) -> &str {
        self.req.network()
    }
    pub fn chain_id(&self) -> u64 {
        self.terms.domain.chain_id
    }
    pub fn asset(&self) -> Address {
        self.terms.asset
    }
    pub fn pay_to(&self) -> Address {
        self.terms.pay_to
    }
    /// Base units.
    pub fn amount(&self) -> U256 {
        self.terms.amount
    }
}

/// Why no payment could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    #[error("no payment option can be paid: {}", .skipped.join("; "))]
    NothingPayable {
        /// One line per option: `accepts[i]: why`.
        skipped: Vec<String>,
    },
}

/// Pick the first requirement (in the server's order of preference) that is `exact` on an EVM
/// network, uses EIP-3009 (not Permit2), is well formed and fits `policy`.
pub fn select_requirement<'a>(
    required: &'a AnyPaymentRequired,
    policy: &PayPolicy,
) -> Result<Selected<'a>, ClientError> {
    let (views, resource, extensions): (Vec<ReqView<'a>>, _, _) = match required {
        AnyPaymentRequired::V1(r) => {
            if policy.refuse_v1 {
                return Err(ClientError::NothingPayable {
                    skipped: vec!["x402 version 1 is refused by policy".into()],
                });
            }
            (r.accepts.iter().map(ReqView::V1).collect(), None, None)
        }
        AnyPaymentRequired::V2(r) => (
            r.accepts.iter().map(ReqView::V2).collect(),
            r.resource.as_ref(),
            r.extensions.as_ref().filter(|m| !m.is_empty()),
        ),
    };
    let mut skipped = Vec::new();
    for (index, req) in views.into_iter().enumerate() {
        match payable(req, policy) {
            Ok(terms) => {
                return Ok(Selected {
                    index,
                    req,
                    resource,
                    extensions,
                    terms,
                })
            }
            Err(why) => skipped.push(format!("accepts[{index}]: {why}")),
        }
    }
    if skipped.is_empty() {
        skipped.push("the 402 lists no payment options".into());
    }
    Err(ClientError::NothingPayable { skipped })
}

fn payable(req: ReqView<'_>, policy: &PayPolicy) -> Result<ExactTerms, String> {
    if req.scheme() != SCHEME_EXACT {
        return Err(format!("scheme {:?} is not supported", req.scheme()));
    }
    if let ReqView::V2(r) = req {
        if let Some(method) = r.extra.get("assetTransferMethod").and_then(Value::as_str) {
            if method != "eip3009" {
                return Err(format!("asset transfer method {method:?} is not supported"));
            }
        }
    }
    let terms = exact_terms(req).map_err(|e| e.to_string())?;
    if !policy.networks.is_empty() && !policy.networks.iter().any(|n| n == req.network()) {
        return Err(format!("network {:?} is not allowed", req.network()));
    }
    if !policy.assets.is_empty() && !policy.assets.contains(&terms.asset) {
        return Err(format!("asset {} is not allowed", terms.asset));
    }
    if let Some(max) = policy.max_amount {
        if terms.amount > max {
            return Err(format!(
                "{} base units is over the limit of {max}",
                terms.amount
            ));
        }
    }
    Ok(terms)
}

/// Sign an `exact` payment for `selected` at `now` (unix seconds) with a fresh 32-byte
/// `nonce`. v2 authorizes from 0 to `now + maxTimeoutSeconds` and echoes the requirements,
/// the resource and any extensions; v1 authorizes from `now - 600`.
pub fn build_payment(
    selected: &Selected<'_>,
    signer: &PrivateKeySigner,
    now: u64,
    nonce: B256,
) -> AnyPaymentPayload {
    let timeout = selected.req.max_timeout_seconds();
    let (valid_after, validity) = match selected.req {
        ReqView::V1(_) => (
            now.saturating_sub(V1_BACKDATE_SECS),
            nonzero_or(timeout, V1_DEFAULT_VALIDITY_SECS),
        ),
        ReqView::V2(_) => (0, nonzero_or(timeout, V2_DEFAULT_VALIDITY_SECS)),
    };
    let authorization = Authorization {
        from: signer.address(),
        to: selected.terms.pay_to,
        value: selected.terms.amount,
        valid_after: U256::from(valid_after),
        valid_before: U256::from(now) + U256::from(validity),
        nonce,
    };
    let signature = selected.terms.domain.sign(&authorization, signer);
    let payload = ExactEvmPayload {
        authorization,
        signature,
    };
    match selected.req {
        ReqView::V1(r) => AnyPaymentPayload::V1(PaymentPayloadV1 {
            x402_version: 1,
            scheme: r.scheme.clone(),
            network: r.network.clone(),
            payload,
        }),
        ReqView::V2(r) => AnyPaymentPayload::V2(PaymentPayload {
            x402_version: 2,
            payload,
            accepted: r.clone(),
            resource: selected.resource.cloned(),
            extensions: selected.extensions.cloned(),
        }),
    }
}

fn nonzero_or(v: u64, default: u64) -> u64 {
    if v == 0 {
        default
    } else {
        v
    }
}
