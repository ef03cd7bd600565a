//! x402 wire types (versions 1 and 2) and the codecs for their headers and bodies.
//!
//! Field names and field order follow the Python `x402` package (`x402/schemas/`), so that
//! [`encode_header`] writes the same bytes that Python's `model_dump_json(by_alias=True,
//! exclude_none=True)` does for the same values. Fields that other schemes use freely
//! (`asset`, `payTo`, `amount`, `network` in requirements) stay strings here, so a 402 that
//! also lists Solana or fiat options still decodes; they are parsed where a rule needs them.
//! The `exact` EVM payload, which this crate verifies and signs, is typed.

use alloy_primitives::{Address, Bytes, B256, U256};
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::{alphabet, Engine};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// The protocol versions this crate reads and writes.
pub const X402_VERSIONS: [u32; 2] = [1, 2];
/// The `exact` scheme: pay exactly the required amount (EIP-3009 on EVM).
pub const SCHEME_EXACT: &str = "exact";
/// x402's `upto` scheme: the payer authorizes a maximum, the amount settled after the answer
/// is what it used (haca: an EIP-3009 authorization of the maximum, the actual amount moved
/// on the node's ledger; OpenGradient's `upto` uses Permit2).
pub const SCHEME_UPTO: &str = "upto";

/// v2: the server's 402 carries a [`PaymentRequired`] in this header.
pub const PAYMENT_REQUIRED_HEADER: &str = "PAYMENT-REQUIRED";
/// v2: the client's [`PaymentPayload`].
pub const PAYMENT_SIGNATURE_HEADER: &str = "PAYMENT-SIGNATURE";
/// v2: the server's [`SettleResponse`].
pub const PAYMENT_RESPONSE_HEADER: &str = "PAYMENT-RESPONSE";
/// v1: the client's [`PaymentPayloadV1`].
pub const X_PAYMENT_HEADER: &str = "X-PAYMENT";
/// v1: the server's [`SettleResponse`].
pub const X_PAYMENT_RESPONSE_HEADER: &str = "X-PAYMENT-RESPONSE";

/// Longest header value the decoders accept (base64 characters).
pub const MAX_HEADER_LEN: usize = 16 * 1024;
/// Longest JSON body the decoders accept (bytes).
pub const MAX_BODY_LEN: usize = 64 * 1024;

/// The resource a payment is for (v2).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ResourceInfo {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
}

/// One way to pay (v2), an entry of [`PaymentRequired::accepts`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequirements {
    pub scheme: String,
    /// CAIP-2, e.g. `eip155:84532`.
    pub network: String,
    /// The token contract (EVM) or other asset identifier.
    pub asset: String,
    /// Decimal string of base units.
    pub amount: String,
    pub pay_to: String,
    pub max_timeout_seconds: u64,
    /// For `exact` on EVM: `{name, version}` of the token's EIP-712 domain.
    #[serde(default)]
    pub extra: Map<String, Value>,
}

impl PaymentRequirements {
    /// Requirements for an `exact` EVM payment of `amount` base units of `asset` to `pay_to`.
    /// `domain_name` and `domain_version` are the token's EIP-712 domain (USDC: "USDC"/"USD
    /// Coin" and "2", depending on the deployment).
    pub fn exact_evm(
        network: impl Into<String>,
        asset: Address,
        pay_to: Address,
        amount: U256,
        max_timeout_seconds: u64,
        domain_name: impl Into<String>,
        domain_version: impl Into<String>,
    ) -> Self {
        let mut extra = Map::new();
        extra.insert("name".into(), Value::String(domain_name.into()));
        extra.insert("version".into(), Value::String(domain_version.into()));
        PaymentRequirements {
            scheme: SCHEME_EXACT.into(),
            network: network.into(),
            asset: asset.to_checksum(None),
            amount: amount.to_string(),
            pay_to: pay_to.to_checksum(None),
            max_timeout_seconds,
            extra,
        }
    }
}

/// The 402 answer (v2), sent base64-encoded in `PAYMENT-REQUIRED`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequired {
    pub x402_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<ResourceInfo>,
    pub accepts: Vec<PaymentRequirements>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<Map<String, Value>>,
}

/// EIP-3009 `TransferWithAuthorization` parameters as they travel in an `exact` EVM payload.
/// Numbers travel as decimal strings; `0x` hex is also read, as the scheme spec allows.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Authorization {
    #[serde(with = "checksum_address")]
    pub from: Address,
    #[serde(with = "checksum_address")]
    pub to: Address,
    #[serde(with = "dec_u256")]
    pub value: U256,
    #[serde(with = "dec_u256")]
    pub valid_after: U256,
    #[serde(with = "dec_u256")]
    pub valid_before: U256,
    pub nonce: B256,
}

/// The `payload` of an `exact` EVM payment: the authorization and its EIP-712 signature
/// (65 bytes `r || s || v`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ExactEvmPayload {
    pub authorization: Authorization,
    pub signature: Bytes,
}

/// The client's payment (v2), sent base64-encoded in `PAYMENT-SIGNATURE`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PaymentPayload {
    pub x402_version: u32,
    pub payload: ExactEvmPayload,
    /// The requirements the client chose, echoed.
    pub accepted: PaymentRequirements,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<ResourceInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<Map<String, Value>>,
}

/// One way to pay (v1), an entry of [`PaymentRequiredV1::accepts`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequirementsV1 {
    pub scheme: String,
    /// A network name, e.g. `base-sepolia`.
    pub network: String,
    /// Decimal string of base units (`exact` pays exactly this).
    pub max_amount_required: String,
    /// The resource URL.
    pub resource: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    pub pay_to: String,
    pub max_timeout_seconds: u64,
    pub asset: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<Value>,
    /// `{name, version}`; some v1 servers send it as a JSON-encoded string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<Value>,
}

/// The 402 answer (v1), sent as the JSON body.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequiredV1 {
    pub x402_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub accepts: Vec<PaymentRequirementsV1>,
}

/// The client's payment (v1), sent base64-encoded in `X-PAYMENT`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PaymentPayloadV1 {
    pub x402_version: u32,
    pub scheme: String,
    pub network: String,
    pub payload: ExactEvmPayload,
}

/// A facilitator's `/verify` answer.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct VerifyResponse {
    pub is_valid: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid_message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<String>,
}

/// A facilitator's `/settle` answer; also the `PAYMENT-RESPONSE` / `X-PAYMENT-RESPONSE` header.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SettleResponse {
    pub success: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<String>,
    /// Transaction hash; empty when settlement failed.
    pub transaction: String,
    pub network: String,
    /// Settled amount in base units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<String>,
}

/// One (version, scheme, network) a facilitator handles.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SupportedKind {
    pub x402_version: u32,
    pub scheme: String,
    pub network: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<Map<String, Value>>,
}

/// A facilitator's `/supported` answer.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SupportedResponse {
    pub kinds: Vec<SupportedKind>,
    #[serde(default)]
    pub extensions: Vec<String>,
    /// CAIP family pattern (e.g. `eip155:*`) to signer addresses.
    #[serde(default)]
    pub signers: BTreeMap<String, Vec<String>>,
}

/// A 402 answer of either version.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(untagged)]
pub enum AnyPaymentRequired {
    V1(PaymentRequiredV1),
    V2(PaymentRequired),
}

/// A client payment of either version.
// One value per request, built once and read in place: boxing v2 would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(untagged)]
pub enum AnyPaymentPayload {
    V1(PaymentPayloadV1),
    V2(PaymentPayload),
}

impl AnyPaymentPayload {
    /// The protocol version this payload was written for.
    pub fn version(&self) -> u32 {
        match self {
            AnyPaymentPayload::V1(p) => p.x402_version,
            AnyPaymentPayload::V2(p) => p.x402_version,
        }
    }
    pub fn scheme(&self) -> &str {
        match self {
            AnyPaymentPayload::V1(p) => &p.scheme,
            AnyPaymentPayload::V2(p) => &p.accepted.scheme,
        }
    }
    pub fn network(&self) -> &str {
        match self {
            AnyPaymentPayload::V1(p) => &p.network,
            AnyPaymentPayload::V2(p) => &p.accepted.network,
        }
    }
    /// The `exact` EVM authorization and signature.
    pub fn exact(&self) -> &ExactEvmPayload {
        match self {
            AnyPaymentPayload::V1(p) => &p.payload,
            AnyPaymentPayload::V2(p) => &p.payload,
        }
    }
}

/// Requirements of either version, as a facilitator receives them.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(untagged)]
pub enum AnyRequirements {
    V1(PaymentRequirementsV1),
    V2(PaymentRequirements),
}

impl AnyRequirements {
    pub fn version(&self) -> u32 {
        match self {
            AnyRequirements::V1(_) => 1,
            AnyRequirements::V2(_) => 2,
        }
    }
    /// The network, CAIP-2 (v2) or as the v1 requirements name it.
    pub fn network(&self) -> &str {
        self.view().network()
    }
    /// The asset (token contract) as written in the requirements.
    pub fn asset(&self) -> &str {
        self.view().asset()
    }
    pub(crate) fn view(&self) -> ReqView<'_> {
        match self {
            AnyRequirements::V1(r) => ReqView::V1(r),
            AnyRequirements::V2(r) => ReqView::V2(r),
        }
    }
}

/// Borrowed requirements of either version; the fields the `exact` rules read.
#[derive(Clone, Copy, Debug)]
pub(crate) enum ReqView<'a> {
    V1(&'a PaymentRequirementsV1),
    V2(&'a PaymentRequirements),
}

impl<'a> ReqView<'a> {
    pub(crate) fn version(self) -> u32 {
        match self {
            ReqView::V1(_) => 1,
            ReqView::V2(_) => 2,
        }
    }
    pub(crate) fn scheme(self) -> &'a str {
        match self {
            ReqView::V1(r) => &r.scheme,
            ReqView::V2(r) => &r.scheme,
        }
    }
    pub(crate) fn network(self) -> &'a str {
        match self {
            ReqView::V1(r) => &r.network,
            ReqView::V2(r) => &r.network,
        }
    }
    pub(crate) fn asset(self) -> &'a str {
        match self {
            ReqView::V1(r) => &r.asset,
            ReqView::V2(r) => &r.asset,
        }
    }
    pub(crate) fn pay_to(self) -> &'a str {
        match self {
            ReqView::V1(r) => &r.pay_to,
            ReqView::V2(r) => &r.pay_to,
        }
    }
    /// The amount field and its wire name.
    pub(crate) fn amount(self) -> (&'static str, &'a str) {
        match self {
            ReqView::V1(r) => ("maxAmountRequired", &r.max_amount_required),
            ReqView::V2(r) => ("amount", &r.amount),
        }
    }
    pub(crate) fn max_timeout_seconds(self) -> u64 {
        match self {
            ReqView::V1(r) => r.max_timeout_seconds,
            ReqView::V2(r) => r.max_timeout_seconds,
        }
    }
    /// `extra.name` and `extra.version` (the EIP-712 domain), when both are strings. A v1
    /// `extra` may arrive as a JSON-encoded string; it is read through.
    pub(crate) fn domain_fields(self) -> Option<(String, String)> {
        fn pick(m: &Map<String, Value>) -> Option<(String, String)> {
            match (m.get("name")?, m.get("version")?) {
                (Value::String(n), Value::String(v)) => Some((n.clone(), v.clone())),
                _ => None,
            }
        }
        match self {
            ReqView::V2(r) => pick(&r.extra),
            ReqView::V1(r) => match r.extra.as_ref()? {
                Value::Object(m) => pick(m),
                Value::String(s) if s.len() <= MAX_BODY_LEN => {
                    match serde_json::from_str::<Value>(s).ok()? {
                        Value::Object(m) => pick(&m),
                        _ => None,
                    }
                }
                _ => None,
            },
        }
    }
}

/// A facilitator `/verify` or `/settle` request body.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FacilitatorRequest {
    pub x402_version: u32,
    pub payment_payload: AnyPaymentPayload,
    pub payment_requirements: AnyRequirements,
}

/// Why a header or body did not decode. Every case names what was being read; a field error
/// names the field by its JSON path (`payload.authorization.value`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("{what}: {len} bytes is over the limit of {max}")]
    TooLarge {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{what}: not base64: {reason}")]
    Base64 { what: &'static str, reason: String },
    #[error("{what}: not JSON: {reason}")]
    Json { what: &'static str, reason: String },
    #[error("{what}: x402Version {found} is not supported (this side speaks 1 and 2)")]
    Version { what: &'static str, found: String },
    #[error("{what}: {}{reason}", field_prefix(.field))]
    Field {
        what: &'static str,
        /// JSON path of the offending field; `.` is the document itself.
        field: String,
        reason: String,
    },
}

fn field_prefix(field: &str) -> String {
    if field == "." || field.is_empty() {
        String::new()
    } else {
        format!("field `{field}`: ")
    }
}

impl DecodeError {
    /// The x402 reason code a facilitator or server answers with for this error.
    pub fn code(&self) -> &'static str {
        match self {
            DecodeError::Version { .. } => "invalid_x402_version",
            _ => "invalid_payload",
        }
    }
}

const B64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Encode any x402 message as a header value: standard base64 (padded) of compact JSON.
pub fn encode_header<T: Serialize>(message: &T) -> String {
    let json = serde_json::to_vec(message).expect("x402 messages always serialize");
    B64.encode(json)
}

/// Decode a `PAYMENT-SIGNATURE` (v2) or `X-PAYMENT` (v1) header. The version comes from the
/// JSON's `x402Version`; a header without one is read as v2, as the Python package does.
pub fn decode_payment_header(header: &str) -> Result<AnyPaymentPayload, DecodeError> {
    payment_payload_from_json(decode_payment_header_json(header)?)
}

/// A payment header's JSON, read as [`decode_payment_header`] reads it (its size bound,
/// base64 with or without padding): for a caller that looks at the JSON before choosing how
/// to read it (an `upto` authorization over Permit2 is not an EIP-3009 payload).
pub fn decode_payment_header_json(header: &str) -> Result<Value, DecodeError> {
    header_json("payment header", header)
}

/// The payment a header's JSON (from [`decode_payment_header_json`]) holds.
pub fn payment_payload_from_json(value: Value) -> Result<AnyPaymentPayload, DecodeError> {
    payment_payload_from("payment header", "", value, Some(2))
}

/// Decode a `PAYMENT-REQUIRED` header (v2; a v1 message is also read).
pub fn decode_payment_required_header(header: &str) -> Result<AnyPaymentRequired, DecodeError> {
    const WHAT: &str = "PAYMENT-REQUIRED header";
    let value = header_json(WHAT, header)?;
    payment_required_from(WHAT, value, Some(2))
}

/// Decode a 402 JSON body (v1, or a v2 server that also puts it in the body). The body must
/// say its `x402Version`.
pub fn decode_payment_required_body(body: &[u8]) -> Result<AnyPaymentRequired, DecodeError> {
    const WHAT: &str = "402 body";
    let value = body_json(WHAT, body)?;
    payment_required_from(WHAT, value, None)
}

/// Decode a `PAYMENT-RESPONSE` / `X-PAYMENT-RESPONSE` header.
pub fn decode_payment_response_header(header: &str) -> Result<SettleResponse, DecodeError> {
    const WHAT: &str = "PAYMENT-RESPONSE header";
    let value = header_json(WHAT, header)?;
    typed(WHAT, "", value)
}

/// Decode a facilitator `/verify` or `/settle` body. The version is the top-level
/// `x402Version`, or the payment's own when the top level has none (the v2 spec's examples
/// leave it out).
pub fn decode_facilitator_request(body: &[u8]) -> Result<FacilitatorRequest, DecodeError> {
    const WHAT: &str = "facilitator request";
    let value = body_json(WHAT, body)?;
    let Value::Object(mut map) = value else {
        return Err(field_err(WHAT, ".", "expected a JSON object"));
    };
    let payload = map
        .remove("paymentPayload")
        .ok_or_else(|| field_err(WHAT, ".", "missing field `paymentPayload`"))?;
    let requirements = map
        .remove("paymentRequirements")
        .ok_or_else(|| field_err(WHAT, ".", "missing field `paymentRequirements`"))?;
    let version = match map.get("x402Version") {
        Some(v) => version_value(WHAT, v)?,
        None => version_of(WHAT, &payload, None)?,
    };
    let payment_payload = payment_payload_from(WHAT, "paymentPayload.", payload, Some(version))?;
    let payment_requirements = match version {
        1 => AnyRequirements::V1(typed(WHAT, "paymentRequirements.", requirements)?),
        _ => AnyRequirements::V2(typed(WHAT, "paymentRequirements.", requirements)?),
    };
    Ok(FacilitatorRequest {
        x402_version: version,
        payment_payload,
        payment_requirements,
    })
}

fn header_json(what: &'static str, header: &str) -> Result<Value, DecodeError> {
    let header = header.trim_matches(|c: char| c.is_ascii_whitespace());
    if header.len() > MAX_HEADER_LEN {
        return Err(DecodeError::TooLarge {
            what,
            len: header.len(),
            max: MAX_HEADER_LEN,
        });
    }
    let bytes = B64.decode(header).map_err(|e| DecodeError::Base64 {
        what,
        reason: e.to_string(),
    })?;
    parse_json(what, &bytes)
}

fn body_json(what: &'static str, body: &[u8]) -> Result<Value, DecodeError> {
    if body.len() > MAX_BODY_LEN {
        return Err(DecodeError::TooLarge {
            what,
            len: body.len(),
            max: MAX_BODY_LEN,
        });
    }
    parse_json(what, body)
}

fn parse_json(what: &'static str, bytes: &[u8]) -> Result<Value, DecodeError> {
    serde_json::from_slice(bytes).map_err(|e| DecodeError::Json {
        what,
        reason: e.to_string(),
    })
}

fn field_err(what: &'static str, field: &str, reason: &str) -> DecodeError {
    DecodeError::Field {
        what,
        field: field.into(),
        reason: reason.into(),
    }
}

fn version_value(what: &'static str, v: &Value) -> Result<u32, DecodeError> {
    match v.as_u64() {
        Some(n @ 1..=2) => Ok(n as u32),
        _ => Err(DecodeError::Version {
            what,
            found: v.to_string(),
        }),
    }
}

fn version_of(what: &'static str, v: &Value, default: Option<u32>) -> Result<u32, DecodeError> {
    match (v.get("x402Version"), default) {
        (Some(found), _) => version_value(what, found),
        (None, Some(d)) => Ok(d),
        (None, None) => Err(field_err(what, ".", "missing field `x402Version`")),
    }
}

fn payment_payload_from(
    what: &'static str,
    prefix: &str,
    value: Value,
    default: Option<u32>,
) -> Result<AnyPaymentPayload, DecodeError> {
    let version = version_of(what, &value, default)?;
    let value = with_version(value, version);
    Ok(match version {
        1 => AnyPaymentPayload::V1(typed(what, prefix, value)?),
        _ => AnyPaymentPayload::V2(typed(what, prefix, value)?),
    })
}

fn payment_required_from(
    what: &'static str,
    value: Value,
    default: Option<u32>,
) -> Result<AnyPaymentRequired, DecodeError> {
    let version = version_of(what, &value, default)?;
    let value = with_version(value, version);
    Ok(match version {
        1 => AnyPaymentRequired::V1(typed(what, "", value)?),
        _ => AnyPaymentRequired::V2(typed(what, "", value)?),
    })
}

/// Fill in a defaulted `x402Version` so the typed structs always carry it.
fn with_version(mut value: Value, version: u32) -> Value {
    if let Value::Object(m) = &mut value {
        m.entry("x402Version").or_insert(Value::from(version));
    }
    value
}

fn typed<T: DeserializeOwned>(
    what: &'static str,
    prefix: &str,
    value: Value,
) -> Result<T, DecodeError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = match (prefix.is_empty(), path.as_str()) {
            (true, _) => path.clone(),
            (false, ".") => prefix.trim_end_matches('.').to_string(),
            (false, p) => format!("{prefix}{p}"),
        };
        DecodeError::Field {
            what,
            field,
            reason: e.into_inner().to_string(),
        }
    })
}

/// v1 network names and their EVM chain ids (Python `x402.mechanisms.evm.v1.constants`).
const V1_EVM_NETWORKS: [(&str, u64); 23] = [
    ("base", 8453),
    ("base-sepolia", 84532),
    ("ethereum", 1),
    ("polygon", 137),
    ("polygon-amoy", 80002),
    ("avalanche", 43114),
    ("avalanche-fuji", 43113),
    ("abstract", 2741),
    ("abstract-testnet", 11124),
    ("iotex", 4689),
    ("sei", 1329),
    ("sei-testnet", 1328),
    ("peaq", 3338),
    ("story", 1513),
    ("educhain", 656476),
    ("skale-base-sepolia", 1444673419),
    ("megaeth", 4326),
    ("monad", 143),
    ("monad-testnet", 10143),
    ("stable", 988),
    ("stable-testnet", 2201),
    ("celo", 42220),
    ("flare", 14),
];

/// The EVM chain id a network names. v2 writes CAIP-2 (`eip155:<chain id>`); v1 writes a
/// name from the legacy table (`base-sepolia`), and CAIP-2 is read there too.
pub fn evm_chain_id(x402_version: u32, network: &str) -> Option<u64> {
    if let Some(id) = network.strip_prefix("eip155:") {
        if id.is_empty() || id.len() > 19 || !id.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        return id.parse().ok();
    }
    if x402_version != 1 {
        return None;
    }
    V1_EVM_NETWORKS
        .iter()
        .find(|(name, _)| *name == network)
        .map(|(_, id)| *id)
}

/// The CAIP-2 name of an EVM chain, as v2 writes it: `eip155:<chain id>`.
pub fn caip2(chain_id: u64) -> String {
    format!("eip155:{chain_id}")
}

/// Parse an unsigned integer written in decimal, or in hex after `0x`/`0X`.
pub(crate) fn parse_uint(s: &str) -> Result<U256, String> {
    let (digits, radix) = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => (h, 16),
        None => (s, 10),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return Err(format!(
            "{s:?} is not an unsigned integer (decimal, or hex after 0x)"
        ));
    }
    U256::from_str_radix(digits, radix as u64)
        .map_err(|_| format!("{s:?} does not fit in 256 bits"))
}

/// Parse a decimal amount of base units, as requirements write them.
pub(crate) fn parse_decimal(s: &str) -> Result<U256, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{s:?} is not a decimal string of base units"));
    }
    U256::from_str_radix(s, 10).map_err(|_| format!("{s:?} does not fit in 256 bits"))
}

/// Serde for an address that travels EIP-55 checksummed, as Python writes it; any letter
/// case is read (the checksum is not enforced, as in the Python package).
pub(crate) mod checksum_address {
    use alloy_primitives::Address;
    use serde::{de, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(a: &Address, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&a.to_checksum(None))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Address, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_address(&s).map_err(de::Error::custom)
    }
}

/// Parse `0x` + 40 hex digits, any letter case.
pub(crate) fn parse_address(s: &str) -> Result<Address, String> {
    let hex = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .ok_or_else(|| format!("{s:?} is not an address (0x + 40 hex digits)"))?;
    if hex.len() != 40 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("{s:?} is not an address (0x + 40 hex digits)"));
    }
    hex.parse::<Address>()
        .map_err(|e| format!("{s:?} is not an address: {e}"))
}

/// Serde for a `uint256` that travels as a decimal string (hex after `0x` is also read).
pub(crate) mod dec_u256 {
    use alloy_primitives::U256;
    use serde::{de, Deserializer, Serializer};
    use std::fmt;

    pub fn serialize<S: Serializer>(v: &U256, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<U256, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = U256;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an unsigned integer as a decimal string")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<U256, E> {
                super::parse_uint(s).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<U256, E> {
                Ok(U256::from(n))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_v2() -> PaymentPayload {
        PaymentPayload {
            x402_version: 2,
            payload: ExactEvmPayload {
                authorization: Authorization {
                    from: Address::repeat_byte(0x11),
                    to: Address::repeat_byte(0x22),
                    value: U256::from(10_000u64),
                    valid_after: U256::ZERO,
                    valid_before: U256::from(1_740_672_154u64),
                    nonce: B256::repeat_byte(0x33),
                },
                signature: Bytes::from(vec![0x44; 65]),
            },
            accepted: PaymentRequirements::exact_evm(
                "eip155:84532",
                Address::repeat_byte(0x55),
                Address::repeat_byte(0x22),
                U256::from(10_000u64),
                60,
                "USDC",
                "2",
            ),
            resource: None,
            extensions: None,
        }
    }

    #[test]
    fn payload_round_trips_through_a_header() {
        let p = AnyPaymentPayload::V2(sample_v2());
        let header = encode_header(&p);
        assert_eq!(decode_payment_header(&header).unwrap(), p);
    }

    #[test]
    fn numbers_travel_as_decimal_strings_and_hex_is_read() {
        let json = serde_json::to_value(sample_v2()).unwrap();
        let auth = &json["payload"]["authorization"];
        assert_eq!(auth["value"], "10000");
        assert_eq!(auth["validAfter"], "0");
        let mut json = json;
        json["payload"]["authorization"]["value"] = "0x2710".into();
        let p: PaymentPayload = serde_json::from_value(json).unwrap();
        assert_eq!(p.payload.authorization.value, U256::from(10_000u64));
    }

    #[test]
    fn a_bad_field_is_named_with_its_path() {
        let mut json = serde_json::to_value(sample_v2()).unwrap();
        json["payload"]["authorization"]["value"] = "ten".into();
        let header = B64.encode(serde_json::to_vec(&json).unwrap());
        let err = decode_payment_header(&header).unwrap_err();
        match &err {
            DecodeError::Field { field, reason, .. } => {
                assert_eq!(field, "payload.authorization.value");
                assert!(reason.contains("not an unsigned integer"), "{reason}");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(err.code(), "invalid_payload");
        assert!(err
            .to_string()
            .contains("field `payload.authorization.value`"));
    }

    #[test]
    fn missing_fields_and_bad_versions_are_reported() {
        let header = B64.encode(br#"{"x402Version":2,"accepts":[{"scheme":"exact"}]}"#);
        let err = decode_payment_required_header(&header).unwrap_err();
        assert!(
            matches!(&err, DecodeError::Field { field, reason, .. }
                if field == "accepts[0]" && reason.contains("network")),
            "{err}"
        );
        let header = B64.encode(br#"{"x402Version":3,"accepts":[]}"#);
        let err = decode_payment_required_header(&header).unwrap_err();
        assert_eq!(err.code(), "invalid_x402_version");
        assert!(decode_payment_required_body(br#"{"accepts":[]}"#)
            .unwrap_err()
            .to_string()
            .contains("x402Version"));
    }

    #[test]
    fn oversized_and_garbled_headers_are_refused() {
        let big = "A".repeat(MAX_HEADER_LEN + 4);
        assert!(matches!(
            decode_payment_header(&big),
            Err(DecodeError::TooLarge { .. })
        ));
        assert!(matches!(
            decode_payment_header("not*base64"),
            Err(DecodeError::Base64 { .. })
        ));
        assert!(matches!(
            decode_payment_header(&B64.encode(b"{oops")),
            Err(DecodeError::Json { .. })
        ));
    }

    #[test]
    fn facilitator_request_reads_the_version_from_the_payload_when_absent() {
        let p = sample_v2();
        let body = serde_json::json!({
            "paymentPayload": p,
            "paymentRequirements": p.accepted,
        });
        let req = decode_facilitator_request(&serde_json::to_vec(&body).unwrap()).unwrap();
        assert_eq!(req.x402_version, 2);
        assert!(matches!(req.payment_requirements, AnyRequirements::V2(_)));
        let mut bad = body.clone();
        bad["paymentRequirements"]["maxTimeoutSeconds"] = "soon".into();
        let err = decode_facilitator_request(&serde_json::to_vec(&bad).unwrap()).unwrap_err();
        assert!(
            matches!(&err, DecodeError::Field { field, .. } if field == "paymentRequirements.maxTimeoutSeconds"),
            "{err}"
        );
    }

    #[test]
    fn v1_extra_may_be_a_json_string() {
        let r = PaymentRequirementsV1 {
            scheme: "exact".into(),
            network: "base-sepolia".into(),
            max_amount_required: "1".into(),
            resource: "https://x".into(),
            description: None,
            mime_type: None,
            pay_to: "0x".into(),
            max_timeout_seconds: 60,
            asset: "0x".into(),
            output_schema: None,
            extra: Some(Value::String(r#"{"name":"USDC","version":"2"}"#.into())),
        };
        assert_eq!(
            ReqView::V1(&r).domain_fields(),
            Some(("USDC".into(), "2".into()))
        );
    }
}
