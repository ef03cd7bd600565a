//! A remote x402 facilitator over HTTP, per the spec: `POST {base}/verify` and
//! `{base}/settle` with `{x402Version, paymentPayload, paymentRequirements}`,
//! `GET {base}/supported`. The paywall's rules are `haca_gateway::payment`'s; this is only
//! the transport.

use haca_gateway::payment::Facilitator;
use haca_gateway::GatewayError;
use haca_pay::types::SCHEME_EXACT;
use haca_pay::{FacilitatorRequest, SettleResponse, SupportedResponse, VerifyResponse};
use std::time::Duration;

/// How long the paywall waits for the facilitator's answer.
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct HttpFacilitator {
    base: String,
    http: reqwest::Client,
}

impl HttpFacilitator {
    pub fn new(base: &str) -> Self {
        HttpFacilitator {
            base: base.trim_end_matches('/').to_owned(),
            http: reqwest::Client::builder()
                .timeout(TIMEOUT)
                .build()
                .expect("an HTTP client builds"),
        }
    }

    fn unavailable(&self, why: String) -> GatewayError {
        GatewayError::unavailable(
            "facilitator_unavailable",
            format!("the x402 facilitator at {}: {why}", self.base),
        )
    }

    /// POSTs `request` to `{base}/{what}`. The spec's facilitators answer 200 with the
    /// verdict, haca's answers 400 for a body it cannot decode; both are read as an answer.
    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        request: &FacilitatorRequest,
    ) -> Result<T, GatewayError> {
        let url = format!("{}/{what}", self.base);
        let resp = self
            .http
            .post(&url)
            .json(request)
            .send()
            .await
            .map_err(|e| self.unavailable(format!("{what}: {e}")))?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| self.unavailable(format!("{what}: {e}")))?;
        serde_json::from_slice(&bytes).map_err(|e| {
            self.unavailable(format!(
                "{what} answered HTTP {status} with a body that is not an x402 {what} response ({e}): {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
            ))
        })
    }

    /// Checks that the facilitator settles `exact` payments on `network` (`GET /supported`).
    pub async fn check_supports(&self, network: &str) -> Result<(), String> {
        let url = format!("{}/supported", self.base);
        let v: SupportedResponse = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?
            .json()
            .await
            .map_err(|e| format!("{url}: not an x402 /supported answer: {e}"))?;
        if v.kinds
            .iter()
            .any(|k| k.scheme == SCHEME_EXACT && k.network == network)
        {
            Ok(())
        } else {
            Err(format!(
                "{url}: the facilitator does not settle scheme exact on {network}"
            ))
        }
    }
}

#[async_trait::async_trait]
impl Facilitator for HttpFacilitator {
    fn name(&self) -> &str {
        &self.base
    }
    async fn verify(&self, request: &FacilitatorRequest) -> Result<VerifyResponse, GatewayError> {
        self.call("verify", request).await
    }
    async fn settle(&self, request: &FacilitatorRequest) -> Result<SettleResponse, GatewayError> {
        self.call("settle", request).await
    }
}
