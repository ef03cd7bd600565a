//! haca's x402 payments, pure logic: wire types and header codecs, EIP-3009 typed data and
//! signatures, the `exact` scheme's verification rules, an in-memory token ledger, the client
//! side (pick a requirement, sign a payment) and prices. This crate does no I/O: the HTTP
//! server layer, the facilitator endpoints and the persistent ledger are wired elsewhere.
//!
//! # The x402 wire format, as implemented here
//!
//! Confirmed against the Python `x402` package 2.25.0 (`x402/schemas/{base,payments,v1,
//! responses}.py`, `x402/http/{constants,utils}.py`, `x402/mechanisms/evm/{types,eip712,
//! constants,utils}.py`, `x402/mechanisms/evm/exact/{client,facilitator}.py` and their `v1/`
//! twins) and the public spec (coinbase/x402 `specs/x402-specification-v2.md`,
//! `specs/schemes/exact/scheme_exact_evm.md`). `tests/it/interop.rs` checks it byte for byte
//! against headers that the Python package produced.
//!
//! - **Encoding.** Every x402 header value is standard base64 (with padding) of UTF-8 JSON.
//!   Python writes it compact with `None` fields left out; field names are camelCase.
//! - **Headers.** Version 2: the server sends `PAYMENT-REQUIRED` (a [`PaymentRequired`]) with
//!   its 402, the client answers with `PAYMENT-SIGNATURE` (a [`PaymentPayload`]) and the server
//!   returns `PAYMENT-RESPONSE` (a [`SettleResponse`]). Version 1: the 402 carries a
//!   [`PaymentRequiredV1`] as its JSON body, the client sends `X-PAYMENT` (a
//!   [`PaymentPayloadV1`]) and the server returns `X-PAYMENT-RESPONSE`. A decoder picks the
//!   version from the JSON's `x402Version` (Python treats a missing one in a header as 2).
//! - **Requirements.** v2: `scheme, network, asset, amount, payTo, maxTimeoutSeconds, extra`;
//!   `network` is CAIP-2 (`eip155:84532`). v1: `scheme, network, maxAmountRequired, resource,
//!   description, mimeType, payTo, maxTimeoutSeconds, asset, outputSchema, extra`; `network` is
//!   a name (`base-sepolia`, `base`, ...). Amounts are decimal strings of base units.
//! - **Payloads.** v2: `{x402Version: 2, payload, accepted, resource?, extensions?}`, where
//!   `accepted` echoes the chosen requirements. v1: `{x402Version: 1, scheme, network,
//!   payload}`. For `exact` on EVM, `payload` is `{authorization: {from, to, value, validAfter,
//!   validBefore, nonce}, signature}`: addresses as 0x hex, numbers as decimal strings, nonce
//!   as 0x + 32 bytes of hex, signature as 0x + 65 bytes `r || s || v` with v = 27 or 28.
//! - **Signature.** EIP-712 over EIP-3009 `TransferWithAuthorization(address from,address
//!   to,uint256 value,uint256 validAfter,uint256 validBefore,bytes32 nonce)`, domain `{name,
//!   version, chainId, verifyingContract}`: `name` and `version` come from the requirements'
//!   `extra`, `chainId` from the network, `verifyingContract` is the asset (the token).
//! - **Client timing.** v2 signs `validAfter = 0` and `validBefore = now + maxTimeoutSeconds`
//!   (3600 when 0); v1 signs `validAfter = now - 600` and `validBefore = now + maxTimeoutSeconds`
//!   (600 when 0).
//! - **Facilitator.** `/verify` and `/settle` take `{x402Version, paymentPayload,
//!   paymentRequirements}` and answer [`VerifyResponse`] `{isValid, invalidReason?,
//!   invalidMessage?, payer?}` and [`SettleResponse`] `{success, errorReason?, errorMessage?,
//!   payer?, transaction, network, amount?}`; `/supported` answers [`SupportedResponse`]
//!   `{kinds: [{x402Version, scheme, network, extra?}], extensions, signers}`.
//!
//! Reason codes: see [`PaymentError::code`].

pub mod client;
pub mod eip3009;
pub mod facilitator;
pub mod ledger;
pub mod networks;
pub mod permit2;
pub mod price;
pub mod proof;
pub mod receipt_check;
pub mod testing;
pub mod types;

pub use alloy_primitives::{Address, Bytes, B256, U256};
pub use alloy_signer_local::PrivateKeySigner;
pub use client::{build_payment, select_requirement, ClientError, PayPolicy, Selected};
pub use eip3009::{SignatureError, TokenDomain};
pub use facilitator::{
    check_window, settle_exact, verify_exact, PaymentError, VerifiedPayment, VerifyContext,
};
pub use ledger::{Ledger, LedgerError, MemLedger};
pub use price::{Price, PriceError};
pub use types::{
    decode_facilitator_request, decode_payment_header, decode_payment_required_body,
    decode_payment_required_header, decode_payment_response_header, encode_header,
    AnyPaymentPayload, AnyPaymentRequired, AnyRequirements, Authorization, DecodeError,
    ExactEvmPayload, FacilitatorRequest, PaymentPayload, PaymentPayloadV1, PaymentRequired,
    PaymentRequiredV1, PaymentRequirements, PaymentRequirementsV1, ResourceInfo, SettleResponse,
    SupportedKind, SupportedResponse, VerifyResponse,
};
