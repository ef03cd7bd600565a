//! Who may read what. A run's receipt is public (anyone checks it); its output, its
//! conversation and a payer's balance are readable only by:
//! - the operator (`Authorization: Bearer <operator token>`; on devnet, any loopback client);
//! - the one who paid: its API key (`Bearer hk_...`), or an x402 payer proving its address
//!   with an EIP-191 signature (`X-HACA-Proof` over `haca read {path} at {X-HACA-Proof-Time}`,
//!   see [`haca_pay::proof`]);
//! - reviewers and viewers (`Bearer rt_...`), for runs that belong to a case.

use super::error::ApiError;
use super::AppState;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::{header, request::Parts, StatusCode};
use haca_pay::Address;
use haca_store::ApiKeyRow;
use std::net::SocketAddr;
use std::sync::Arc;

/// The signature header of an x402 payer's read proof.
pub const PROOF_HEADER: &str = "x-haca-proof";
/// The unix seconds the proof was signed at.
pub const PROOF_TIME_HEADER: &str = "x-haca-proof-time";

/// The reader of a request, as its credentials prove it.
pub enum Reader {
    Operator,
    /// A review token's holder (its id).
    Reviewer(String),
    ApiKey(ApiKeyRow),
    /// An x402 payer that signed for this request's path.
    Payer(Address),
    Anonymous,
}

fn unauthorized(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
}

fn forbidden(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
}

impl FromRequestParts<Arc<AppState>> for Reader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &Arc<AppState>) -> Result<Self, ApiError> {
        let text = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
        // A payer's proof is made for this very request: it speaks for the request even
        // when a bearer token for other purposes (an operator token for the faucet) rides along.
        if let Some(sig) = text(PROOF_HEADER) {
            let at: u64 = text(PROOF_TIME_HEADER)
                .and_then(|t| t.parse().ok())
                .ok_or_else(|| {
                    unauthorized(format!(
                        "header {PROOF_TIME_HEADER}: the unix seconds the proof was signed at"
                    ))
                })?;
            let address =
                haca_pay::proof::recover_reader(parts.uri.path(), at, sig, crate::now_ms() / 1000)
                    .map_err(|e| unauthorized(format!("header {PROOF_HEADER}: {e}")))?;
            return Ok(Reader::Payer(address));
        }
        if parts.headers.contains_key(header::AUTHORIZATION) {
            let token = super::extract::bearer(&parts.headers).unwrap_or("");
            if super::extract::is_operator(st, token) {
                return Ok(Reader::Operator);
            }
            // An unknown or revoked key is refused in there; a key is never `None` here.
            if let Some(k) =
                haca_gateway::payment::presented_api_key(&st.gateway.store, Some(token))?
            {
                return Ok(Reader::ApiKey(k));
            }
            if token.starts_with(haca_review::TOKEN_PREFIX) {
                let p = super::review::principal_of_token(token, st)?;
                return Ok(Reader::Reviewer(p.id));
            }
            return Err(unauthorized(
                "header Authorization: the bearer token is not an operator, API or review token of this node",
            ));
        }
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        match peer {
            Some(p) if st.loopback_admin && p.ip().is_loopback() => Ok(Reader::Operator),
            _ => Ok(Reader::Anonymous),
        }
    }
}

/// How to prove the right to read, for refusals.
const HOW: &str = "send its payer's API key (Authorization: Bearer hk_...) or an x402 payer's \
     signature (x-haca-proof, x-haca-proof-time), a review token for a run in a case, or the \
     operator token";

impl Reader {
    /// Whether this reader may read `rec`'s output; refuses with why. The receipt stays
    /// public at `/v1/runs/{id}/receipt`.
    /// Whether this reader may read run `run_id`, whose stored receipt is `receipt`.
    pub fn may_read_run(
        &self,
        st: &AppState,
        run_id: &str,
        receipt: &serde_json::Value,
    ) -> Result<(), ApiError> {
        let payer = || run_payer(receipt);
        match self {
            Reader::Operator => Ok(()),
            Reader::Reviewer(id) => {
                if st.gateway.store.run_in_a_case(run_id)? {
                    Ok(())
                } else {
                    Err(forbidden(format!(
                        "review token {id} reads runs that belong to a case; run {run_id} is in none"
                    )))
                }
            }
            Reader::ApiKey(k) if payer().is_some_and(|p| p.eq_ignore_ascii_case(&k.account)) => {
                Ok(())
            }
            Reader::Payer(a)
                if payer().is_some_and(|p| p.eq_ignore_ascii_case(&a.to_checksum(None))) =>
            {
                Ok(())
            }
            Reader::ApiKey(_) | Reader::Payer(_) => Err(forbidden(format!(
                "run {run_id} was not paid by this payer; its receipt is public at /v1/runs/{run_id}/receipt"
            ))),
            Reader::Anonymous => Err(unauthorized(format!(
                "run {run_id}'s output is readable by who paid for it: {HOW}; its receipt is public at /v1/runs/{run_id}/receipt"
            ))),
        }
    }

    /// Listings of every run are for the operator and reviewers.
    pub fn may_list_runs(&self) -> Result<(), ApiError> {
        match self {
            Reader::Operator | Reader::Reviewer(_) => Ok(()),
            Reader::Anonymous => Err(unauthorized(
                "listing runs needs the operator token or a review token",
            )),
            _ => Err(forbidden(
                "listing runs needs the operator token or a review token",
            )),
        }
    }

    /// Whether this reader may read the balance of `address` (its own, or as the operator).
    pub fn may_read_balance(&self, address: &Address) -> Result<(), ApiError> {
        let own = address.to_checksum(None);
        match self {
            Reader::Operator => Ok(()),
            Reader::ApiKey(k) if k.account.eq_ignore_ascii_case(&own) => Ok(()),
            Reader::Payer(a) if a == address => Ok(()),
            Reader::Anonymous => Err(unauthorized(format!(
                "the balance of {own} is readable by its holder (its API key, or a signature: x-haca-proof) or the operator"
            ))),
            _ => Err(forbidden(format!("the balance of {own} is not this reader's"))),
        }
    }
}

/// The payer named in a stored run's payment box (`None`: the run was free).
fn run_payer(receipt: &serde_json::Value) -> Option<String> {
    receipt["boxes"]["payment"]["evidence"]["payer"]
        .as_str()
        .map(str::to_owned)
}
