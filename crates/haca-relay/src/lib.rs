//! haca's private path, the Oblivious HTTP (RFC 9458) foundation: the relay sees who asks
//! but not what; the gateway sees what is asked but not by whom. Pure logic: no I/O, no
//! clock (times are arguments); OS randomness only for keys and nonces.
//!
//! - [`config`]: key configurations and `application/ohttp-keys` lists.
//! - [`keys`]: [`KeyPair`] and [`KeyRing`] (several key ids at once, rotation, persistence).
//! - [`server`]: [`decapsulate`] a request, answer through its [`ResponseContext`], single-shot
//!   or chunked ([`ChunkedResponseEncoder`]).
//! - [`client`]: [`encapsulate`] a request, open its response ([`ClientContext`],
//!   [`ChunkedResponseDecoder`]).
//! - [`ReplayGuard`]: refuses a request opened before (OHTTP alone does not).
//! - [`bhttp`]: the inner message, BHTTP (RFC 9292) or OpenGradient's JSON.
//!
//! Interoperability target: OpenGradient's `opengradient.client.tee_ohttp` (PyPI
//! `opengradient` 1.1.4): DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305; a
//! standard request; a single-shot response, or a chunked one as in
//! draft-ietf-ohai-chunked-ohttp-08 ([`response`] module docs). AES-128-GCM is also
//! implemented, for standard clients and RFC 9458's own example.
//!
//! Why not the `ohttp` crate (0.8): its chunked mode seals the request under a different
//! info ("message/bhttp chunked request"), so it cannot answer OpenGradient's standard
//! request with a chunked response; its `Server` holds one key configuration and keeps the
//! HPKE exporter private; and it brings a second generation of the RustCrypto crates
//! (hpke 0.14, aead 0.6, hkdf 0.13, sha2 0.11). The HPKE here is the `hpke` crate (0.13);
//! this crate adds the OHTTP framing and the response keys around it.
//!
//! Architecture invariant: this crate knows nothing of HTTP servers, receipts or payments;
//! the gateway and the relay role wire it to routes, and the server alone maps
//! [`OhttpError`] to a status.

pub mod bhttp;
pub mod client;
pub mod config;
mod error;
mod hpke_ops;
pub mod keys;
mod replay;
pub mod response;
pub mod server;

pub use client::{encapsulate, encapsulate_with, ClientContext};
pub use config::{Aead, KeyConfig, OhttpDescriptor, SymmetricSuite};
pub use error::OhttpError;
pub use keys::{KeyPair, KeyRing};
pub use replay::ReplayGuard;
pub use response::{ChunkedResponseDecoder, ChunkedResponseEncoder};
pub use server::{decapsulate, RequestHeader, ResponseContext};

/// Media type of an encapsulated request.
pub const MEDIA_TYPE_REQUEST: &str = "message/ohttp-req";
/// Media type of a single-shot encapsulated response.
pub const MEDIA_TYPE_RESPONSE: &str = "message/ohttp-res";
/// Media type of a chunked encapsulated response.
pub const MEDIA_TYPE_CHUNKED_RESPONSE: &str = "message/ohttp-chunked-res";
/// Media type of a key configuration list (`GET /v1/ohttp/config`).
pub const MEDIA_TYPE_KEYS: &str = "application/ohttp-keys";
/// OpenGradient's header naming the enclave a request is sealed to.
pub const HEADER_TEE_ID: &str = "X-TEE-ID";
/// OpenGradient's header asking for a chunked (streamed) response: `true`.
pub const HEADER_STREAM: &str = "X-OHTTP-Stream";
/// RFC 9458 section 5.3 / 8: the problem body answered (status 400,
/// `application/problem+json`) when the key id or suite cannot be used.
pub const KEY_PROBLEM_JSON: &str = r#"{"type":"https://iana.org/assignments/http-problem-types#ohttp-key","title":"key identifier unknown"}"#;
