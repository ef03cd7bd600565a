//! x402 and API keys over HTTP: the paywall's 402 answers, the facilitator
//! (`/v1/x402/verify`, `/settle`, `/supported`) over the node's ledger, the devnet faucet,
//! balances and `/v1/apikeys`. The rules and the ledger moves are
//! [`haca_gateway::payment`]'s; this module reads headers and bodies and writes answers.

use super::error::ApiError;
use super::extract::{body_bytes, Admin, JsonBody};
use super::AppState;
use crate::now_ms;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use haca_gateway::payment::{
    new_api_key, presented_api_key, settle_on, PaymentConfig, PaymentOffer, Payments,
    PAYMENT_REQUIRED_CODE,
};
use haca_pay::types::{
    PAYMENT_REQUIRED_HEADER, PAYMENT_SIGNATURE_HEADER, SCHEME_EXACT, X_PAYMENT_HEADER,
};
use haca_pay::{
    decode_facilitator_request, encode_header, Address, AnyPaymentPayload, AnyRequirements,
    PaymentError, PaymentRequired, PaymentRequiredV1, ResourceInfo, SupportedKind,
    SupportedResponse, U256,
};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

/// What a request offers to pay with: its x402 header or its API key.
pub fn payment_offer(headers: &HeaderMap) -> PaymentOffer {
    let text = |name: &str| {
        headers
            .get(name)
            .map(|v| v.to_str().ok().map(str::to_owned))
    };
    let x402 = [PAYMENT_SIGNATURE_HEADER, X_PAYMENT_HEADER]
        .into_iter()
        .find_map(|name| text(name).map(|v| (name, v)));
    let bearer = super::extract::bearer(headers).map(str::to_owned);
    PaymentOffer { x402, bearer }
}

/// The node's public base URL (`--public-url`): `http` or `https`, a host and an optional
/// port, nothing else. A payment's resource is built from it, never from the request's
/// `Host` header, which the client writes (and a payer would sign whatever it said).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicUrl(String);

impl PublicUrl {
    /// Reads and normalizes an operator's URL (lowercase host, no default port, no
    /// trailing slash); each refusal says what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        if !(text.starts_with("http://") || text.starts_with("https://")) {
            return Err(format!(
                "{text:?} must start with http or https (http://HOST[:PORT])"
            ));
        }
        let url = reqwest::Url::parse(text)
            .map_err(|e| format!("{text:?} is not a URL: {e} (check the host and port)"))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!("{text:?} must not carry a user or password"));
        }
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("{text:?} names no host"))?;
        if url.path() != "/" {
            return Err(format!(
                "{text:?} must not have a path ({}): the node's routes are at the root",
                url.path()
            ));
        }
        if url.query().is_some() {
            return Err(format!("{text:?} must not have a query"));
        }
        if url.fragment().is_some() {
            return Err(format!("{text:?} must not have a fragment"));
        }
        let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
        Ok(PublicUrl(format!("{}://{host}{port}", url.scheme())))
    }

    /// `http://` and the address a listener bound (its port chosen when it asked for 0).
    pub fn of_listener(addr: std::net::SocketAddr) -> Self {
        PublicUrl(format!("http://{addr}"))
    }

    /// The URL of `path` (which starts with `/`) on this node, as payments name it.
    pub fn resource(&self, path: &str) -> String {
        format!("{}{path}", self.0)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A gateway error as the paywall answers it: a payment refusal becomes a 402 carrying the
/// requirements of `resource` at `price`; any other error keeps its own status.
pub fn refusal(
    p: &Payments,
    resource: &str,
    price: U256,
    e: haca_gateway::GatewayError,
) -> Result<Response, ApiError> {
    refusal_with(p, resource, price, e, None)
}

/// [`refusal`] whose 402 also offers `also` after `exact` (an `upto` option).
pub fn refusal_with(
    p: &Payments,
    resource: &str,
    price: U256,
    e: haca_gateway::GatewayError,
    also: Option<haca_pay::types::PaymentRequirements>,
) -> Result<Response, ApiError> {
    if e.is_payment_required() {
        Ok(payment_required_with(p, resource, e.into(), price, also))
    } else {
        Err(e.into())
    }
}

/// A 402 answer: always the v2 `PAYMENT-REQUIRED` header; the body is the v1
/// `{x402Version: 1, error, accepts}` when no payment was sent, else `{error: {code,
/// message}}` saying which check failed.
pub fn payment_required(p: &Payments, resource: &str, err: ApiError, price: U256) -> Response {
    payment_required_with(p, resource, err, price, None)
}

fn payment_required_with(
    p: &Payments,
    resource: &str,
    err: ApiError,
    price: U256,
    also: Option<haca_pay::types::PaymentRequirements>,
) -> Response {
    let config = PaymentConfig {
        price,
        ..p.config.clone()
    };
    let required = PaymentRequired {
        x402_version: 2,
        error: Some(err.message.clone()),
        resource: Some(ResourceInfo {
            url: resource.into(),
            description: Some("one haca inference run".into()),
            mime_type: Some("application/json".into()),
        }),
        accepts: std::iter::once(config.requirements()).chain(also).collect(),
        extensions: None,
    };
    let body = if err.code == PAYMENT_REQUIRED_CODE {
        serde_json::to_value(PaymentRequiredV1 {
            x402_version: 1,
            error: Some(err.message.clone()),
            accepts: vec![config.requirements_v1(resource)],
        })
        .expect("x402 messages serialize")
    } else {
        err.body()
    };
    let mut resp = (StatusCode::PAYMENT_REQUIRED, Json(body)).into_response();
    resp.headers_mut().insert(
        PAYMENT_REQUIRED_HEADER,
        HeaderValue::from_str(&encode_header(&required)).expect("base64 is ASCII"),
    );
    resp
}

fn payments_of(st: &AppState) -> Result<&Payments, ApiError> {
    st.payments.as_deref().ok_or_else(|| {
        ApiError::not_found(
            "payments_off",
            "this node takes no payments (it was started with --price-per-request 0)",
        )
    })
}

type S = State<Arc<AppState>>;

/// `POST /v1/x402/verify`: `{x402Version, paymentPayload, paymentRequirements}` ->
/// `VerifyResponse` (400 when the body does not decode, else 200 with the verdict).
pub async fn verify(State(st): S, req: Request) -> Result<Response, ApiError> {
    let p = payments_of(&st)?;
    let bytes = body_bytes(req, st.limits.max_body).await?;
    let fr = match decode_facilitator_request(&bytes) {
        Ok(fr) => fr,
        Err(e) => {
            let e = PaymentError::Decode(e);
            return Ok((StatusCode::BAD_REQUEST, Json(e.verify_response(None))).into_response());
        }
    };
    let payer = fr.payment_payload.exact().authorization.from;
    if let Some(f) = p.facilitator.as_ref().filter(|f| f.on_chain()) {
        let body = match chain_terms(p, &fr).await {
            Ok(()) => f.verify(&fr).await?,
            Err(e) => e.verify_response(Some(payer)),
        };
        return Ok(Json(body).into_response());
    }
    let body = match p.verify_for_facilitator(&fr).await {
        Ok(v) => v.verify_response(),
        Err(e) => e.verify_response(Some(payer)),
    };
    Ok(Json(body).into_response())
}

/// `POST /v1/x402/settle`: verifies, then moves the money on the ledger -> `SettleResponse`
/// (400 when the body does not decode, else 200 with `success`).
pub async fn settle(State(st): S, req: Request) -> Result<Response, ApiError> {
    let p = payments_of(&st)?;
    let bytes = body_bytes(req, st.limits.max_body).await?;
    let fr = match decode_facilitator_request(&bytes) {
        Ok(fr) => fr,
        Err(e) => {
            let e = PaymentError::Decode(e);
            let body = e.settle_response(None, &p.config.network);
            return Ok((StatusCode::BAD_REQUEST, Json(body)).into_response());
        }
    };
    let network = fr.payment_requirements.network().to_owned();
    let payer = fr.payment_payload.exact().authorization.from;
    let resource = match (&fr.payment_requirements, &fr.payment_payload) {
        (AnyRequirements::V1(r), _) => r.resource.clone(),
        (_, AnyPaymentPayload::V2(pp)) => pp
            .resource
            .as_ref()
            .map(|r| r.url.clone())
            .unwrap_or_default(),
        _ => String::new(),
    };
    if let Some(f) = p.facilitator.as_ref().filter(|f| f.on_chain()) {
        let body = match chain_terms(p, &fr).await {
            Ok(()) => f.settle(&fr).await?,
            Err(e) => e.settle_response(Some(payer), &network),
        };
        return Ok(Json(body).into_response());
    }
    let verified_at = now_ms();
    let outcome = match p.verify_for_facilitator(&fr).await {
        Ok(v) => settle_on(&p.store, &v, &resource, None, None, verified_at)
            .await
            .map(|(tx, _)| v.settle_response(tx)),
        Err(e) => Err(e),
    };
    let body = outcome.unwrap_or_else(|e| e.settle_response(Some(payer), &network));
    Ok(Json(body).into_response())
}

/// The x402 rules a chain does not check (scheme, network, asset, recipient, amount, window,
/// signature form), for a facilitator request when the chain holds the ledger: balance and
/// nonce are the chain's to check (the facilitator simulates the transfer there).
async fn chain_terms(p: &Payments, fr: &haca_pay::FacilitatorRequest) -> Result<(), PaymentError> {
    struct OnChain;
    impl haca_pay::Ledger for OnChain {
        fn balance(&self, _: Address, _: Address) -> U256 {
            U256::MAX
        }
        fn nonce_used(&self, _: Address, _: Address, _: haca_pay::B256) -> bool {
            false
        }
    }
    let req = &fr.payment_requirements;
    if req.network() != p.config.network {
        return Err(PaymentError::NetworkMismatch {
            expected: p.config.network.clone(),
            got: req.network().into(),
        });
    }
    if req.asset().parse::<Address>().ok() != Some(p.config.asset) {
        return Err(PaymentError::AssetMismatch {
            expected: p.config.asset.to_checksum(None),
            got: req.asset().into(),
        });
    }
    let (payload, req) = (fr.payment_payload.clone(), req.clone());
    tokio::task::spawn_blocking(move || {
        let ctx = haca_pay::VerifyContext::at(now_ms() / 1000);
        haca_pay::verify_exact(&payload, &req, &ctx, &OnChain).map(|_| ())
    })
    .await
    .unwrap_or_else(|e| {
        Err(PaymentError::Settlement(format!(
            "verification stopped: {e}"
        )))
    })
}

/// `GET /v1/x402/supported`.
pub async fn supported(State(st): S) -> Result<Json<SupportedResponse>, ApiError> {
    let p = payments_of(&st)?;
    let kind = |v: u32| SupportedKind {
        x402_version: v,
        scheme: SCHEME_EXACT.into(),
        network: p.config.network.clone(),
        extra: None,
    };
    Ok(Json(SupportedResponse {
        kinds: vec![kind(2), kind(1)],
        extensions: vec![],
        signers: Default::default(),
    }))
}

/// The body of `POST /v1/x402/faucet`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaucetRequest {
    pub address: String,
    /// Base units, as a decimal string or a number.
    pub amount: Value,
}

fn parse_address(s: &str, field: &str) -> Result<Address, ApiError> {
    let ok = s.len() == 42
        && (s.starts_with("0x") || s.starts_with("0X"))
        && s[2..].bytes().all(|b| b.is_ascii_hexdigit());
    ok.then(|| s[2..].parse::<Address>().ok())
        .flatten()
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_address",
                format!("{field}: {s:?} is not an address (0x + 40 hex digits)"),
            )
        })
}

/// `POST /v1/x402/faucet {address, amount}` (admin): mints the node's token.
pub async fn faucet(
    State(st): S,
    Admin(who): Admin,
    JsonBody(req): JsonBody<FaucetRequest>,
) -> Result<Json<Value>, ApiError> {
    let p = payments_of(&st)?;
    let address = parse_address(&req.address, "address")?;
    let amount = amount_field(&req.amount, "amount")?;
    let asset = p.config.asset.to_checksum(None);
    // Settling on a chain (--evm-rpc): the token mints there, and the balance is the chain's.
    if let Some(f) = &p.facilitator {
        let units = U256::from_str_radix(&amount, 10)
            .map_err(|e| ApiError::bad_request("invalid_field", format!("amount: {e}")))?;
        if let Some(minted) = f.mint(address, units).await {
            let transaction = minted?;
            let balance = match f.balance(address).await {
                Some(b) => b?.to_string(),
                None => "?".into(),
            };
            tracing::info!("x402 faucet: {who} minted {amount} of {asset} to {address} on chain in {transaction}");
            return Ok(Json(json!({
                "address": address.to_checksum(None),
                "asset": asset,
                "network": p.config.network,
                "minted": amount,
                "balance": balance,
                "transaction": transaction,
            })));
        }
    }
    let balance = p
        .store
        .mint(&asset, &address.to_checksum(None), &amount)
        .await
        .map_err(|e| match e {
            haca_store::StoreError::Invalid(m) => ApiError::bad_request("invalid_field", m),
            e => e.into(),
        })?;
    tracing::info!("x402 faucet: {who} minted {amount} of {asset} to {address}");
    Ok(Json(json!({
        "address": address.to_checksum(None),
        "asset": asset,
        "network": p.config.network,
        "minted": amount,
        "balance": balance,
    })))
}

/// `GET /v1/x402/balance/{address}`.
pub async fn balance(
    State(st): S,
    reader: super::access::Reader,
    Path(address): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let p = payments_of(&st)?;
    let address = parse_address(&address, "address")?;
    reader.may_read_balance(&address)?;
    let asset = p.config.asset.to_checksum(None);
    let on_chain = match &p.facilitator {
        Some(f) => f.balance(address).await,
        None => None,
    };
    let balance = match on_chain {
        Some(b) => b?.to_string(),
        None => p.store.balance(&asset, &address.to_checksum(None))?,
    };
    Ok(Json(json!({
        "address": address.to_checksum(None),
        "asset": asset,
        "network": p.config.network,
        "balance": balance,
    })))
}

/// The body of `POST /v1/apikeys`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyRequest {
    /// Base units to mint into the key's account (devnet faucet), as a decimal string or a
    /// number.
    #[serde(default)]
    pub fund: Option<Value>,
    #[serde(default)]
    pub label: Option<String>,
}

/// Reads a faucet amount: base units as a decimal string or an unsigned integer.
fn amount_field(v: &Value, field: &str) -> Result<String, ApiError> {
    let amount = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) if n.is_u64() => n.to_string(),
        _ => {
            return Err(ApiError::bad_request(
                "invalid_field",
                format!("{field}: expected base units as a decimal string or an unsigned integer"),
            ))
        }
    };
    haca_store::parse_amount(&amount)
        .map_err(|e| ApiError::bad_request("invalid_field", format!("{field}: {e}")))?;
    Ok(amount)
}

/// `POST /v1/apikeys {fund?, label?}` (admin): a new API key for clients that know nothing of
/// x402 (`Authorization: Bearer KEY`), charged per run against its prepaid balance. The key
/// is shown once; the node keeps only its hash.
pub async fn create_api_key(
    State(st): S,
    Admin(who): Admin,
    JsonBody(req): JsonBody<ApiKeyRequest>,
) -> Result<Json<Value>, ApiError> {
    let p = payments_of(&st)?;
    let fund = req
        .fund
        .as_ref()
        .map(|v| amount_field(v, "fund"))
        .transpose()?;
    if let Some(l) = &req.label {
        if l.len() > 200 {
            return Err(ApiError::bad_request(
                "invalid_field",
                "label: longer than 200 bytes",
            ));
        }
    }
    let (key, row) = new_api_key(req.label, &who);
    st.gateway.store.create_api_key(row.clone()).await?;
    let asset = p.config.asset.to_checksum(None);
    let balance = match &fund {
        Some(amount) => p.store.mint(&asset, &row.account, amount).await?,
        None => "0".into(),
    };
    tracing::info!("api key {} created by {who} (funded {:?})", row.id, fund);
    Ok(Json(json!({
        "id": row.id,
        "key": key,
        "account": row.account,
        "label": row.label,
        "asset": asset,
        "network": p.config.network,
        "balance": balance,
        "price": p.config.price.to_string(),
    })))
}

/// `GET /v1/apikeys/self` with `Authorization: Bearer KEY`: the key's id, account and balance.
pub async fn api_key_self(State(st): S, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    let p = payments_of(&st)?;
    let key = presented_api_key(&p.store, payment_offer(&headers).bearer.as_deref())?.ok_or_else(
        || {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_api_key",
                "header Authorization: send Bearer <API key> (hk_...)",
            )
        },
    )?;
    let asset = p.config.asset.to_checksum(None);
    let balance = p.store.balance(&asset, &key.account)?;
    Ok(Json(json!({
        "id": key.id,
        "account": key.account,
        "label": key.label,
        "created_at": key.created_at,
        "asset": asset,
        "network": p.config.network,
        "balance": balance,
        "price": p.config.price.to_string(),
    })))
}

/// `DELETE /v1/apikeys/{id}` (admin): revokes a key; its next request is 401.
pub async fn revoke_api_key(
    State(st): S,
    Admin(who): Admin,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    payments_of(&st)?;
    if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::bad_request(
            "invalid_field",
            format!(
                "id: {id:?} is not an API key id (16 hex digits, as `haca apikey create` prints)"
            ),
        ));
    }
    if !st.gateway.store.revoke_api_key(&id, now_ms()).await? {
        return Err(ApiError::not_found(
            "unknown_api_key",
            format!("no API key {id} on this node"),
        ));
    }
    tracing::info!("api key {id} revoked by {who}");
    Ok(Json(json!({"id": id, "revoked": true})))
}

#[cfg(test)]
mod tests {
    use super::PublicUrl;

    #[test]
    fn a_public_url_is_a_scheme_host_and_port_only() {
        for (given, want) in [
            ("http://127.0.0.1:7070", "http://127.0.0.1:7070"),
            (
                "https://API.Example.com:8443/",
                "https://api.example.com:8443",
            ),
            ("https://api.example.com:443", "https://api.example.com"),
            ("http://[::1]:7070/", "http://[::1]:7070"),
        ] {
            let url = PublicUrl::parse(given).unwrap();
            assert_eq!(url.as_str(), want, "{given}");
            assert_eq!(url.resource("/v1/infer"), format!("{want}/v1/infer"));
        }
        for (given, why) in [
            ("example.com", "http or https"),
            ("ftp://example.com", "http or https"),
            ("http://", "not a URL"),
            ("http://example.com:99999", "port"),
            ("http://user:pw@example.com", "user"),
            ("http://example.com/base", "path"),
            ("http://example.com/../x", "path"),
            ("http://example.com/?a=1", "query"),
            ("http://example.com/#top", "fragment"),
        ] {
            let e = PublicUrl::parse(given).unwrap_err();
            assert!(e.contains(why), "{given}: {e}");
        }
        assert_eq!(
            PublicUrl::of_listener("0.0.0.0:7070".parse().unwrap()).resource("/v1/infer"),
            "http://0.0.0.0:7070/v1/infer"
        );
    }
}
