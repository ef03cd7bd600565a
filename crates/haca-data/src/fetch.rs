//! Fetching one source into a signed [`DataItem`]: the allowlist is checked before the
//! request and again on every redirect (a redirect never leaves it), the body is read up to a
//! size cap, the whole exchange has a deadline, and the item records the final URL, the
//! status, the body's SHA-256, the server's leaf TLS certificate's SHA-256 (https only) and
//! `valid_until` from the [`FreshnessPolicy`] and the source's cache headers.

use crate::allow::{AllowError, Allowlist};
use crate::freshness::FreshnessPolicy;
use haca_core::data::DataItem;
use haca_core::{sha256, NodeId, NodeKey};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The largest body fetched by default: 4 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 4 << 20;
/// How long one fetch may take by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Redirects followed at most (each one inside the allowlist).
pub const MAX_REDIRECTS: usize = 5;

/// Why a fetch gave no item.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    NotAllowed(#[from] AllowError),
    #[error("url {url}: the body is over the {limit}-byte limit")]
    TooLarge { url: String, limit: u64 },
    #[error("url {url}: no answer within {secs} s")]
    Timeout { url: String, secs: u64 },
    #[error("url {url}: {why}")]
    Unreachable { url: String, why: String },
}

impl FetchError {
    /// A stable code for the HTTP layer.
    pub fn code(&self) -> &'static str {
        match self {
            FetchError::NotAllowed(e) => e.code(),
            FetchError::TooLarge { .. } => "source_too_large",
            FetchError::Timeout { .. } => "source_timeout",
            FetchError::Unreachable { .. } => "source_unreachable",
        }
    }
}

/// A fetched, signed item and the body it hashes.
#[derive(Clone, Debug)]
pub struct Fetched {
    pub item: DataItem,
    pub content: Vec<u8>,
}

/// Fetches allowed sources and signs what it fetched.
pub struct Fetcher {
    client: reqwest::Client,
    allow: Arc<Allowlist>,
    policy: FreshnessPolicy,
    max_bytes: u64,
    timeout: Duration,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Fetcher {
    pub fn new(
        allow: Allowlist,
        policy: FreshnessPolicy,
        max_bytes: u64,
        timeout: Duration,
    ) -> Result<Self, FetchError> {
        let allow = Arc::new(allow);
        let guard = allow.clone();
        let redirects = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= MAX_REDIRECTS {
                return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
            }
            match guard.check(attempt.url()) {
                Ok(_) => attempt.follow(),
                Err(e) => attempt.error(format!("redirected outside the allowlist: {e}")),
            }
        });
        let client = reqwest::Client::builder()
            .redirect(redirects)
            .tls_info(true)
            .timeout(timeout)
            .user_agent(concat!("haca-data/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| FetchError::Unreachable {
                url: String::new(),
                why: format!("HTTP client: {e}"),
            })?;
        Ok(Fetcher {
            client,
            allow,
            policy,
            max_bytes,
            timeout,
        })
    }

    pub fn allowlist(&self) -> &Allowlist {
        &self.allow
    }

    /// Fetches `url` (if the allowlist admits it) and signs the item with `key`.
    pub async fn fetch(&self, url: &str, key: &NodeKey) -> Result<Fetched, FetchError> {
        let u = self.allow.admit(url)?;
        let shown = u.to_string();
        let failed = |e: reqwest::Error| {
            if e.is_timeout() {
                FetchError::Timeout {
                    url: shown.clone(),
                    secs: self.timeout.as_secs(),
                }
            } else {
                // The whole chain: a redirect refusal sits in the error's source.
                let mut why = e.to_string();
                let mut src = std::error::Error::source(&e);
                while let Some(s) = src {
                    why = format!("{why}: {s}");
                    src = s.source();
                }
                FetchError::Unreachable {
                    url: shown.clone(),
                    why,
                }
            }
        };
        let mut resp = self.client.get(u).send().await.map_err(failed)?;
        let fetched_at = now_ms();
        let header = |name: reqwest::header::HeaderName| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        use reqwest::header::{CACHE_CONTROL, CONTENT_TYPE, DATE, EXPIRES};
        let (cc, expires, date, content_type) = (
            header(CACHE_CONTROL),
            header(EXPIRES),
            header(DATE),
            header(CONTENT_TYPE),
        );
        let tls_cert_sha256 = resp
            .extensions()
            .get::<reqwest::tls::TlsInfo>()
            .and_then(|t| t.peer_certificate())
            .map(sha256);
        let source = resp.url().to_string();
        let status = resp.status().as_u16();
        let too_large = || FetchError::TooLarge {
            url: source.clone(),
            limit: self.max_bytes,
        };
        if resp.content_length().is_some_and(|n| n > self.max_bytes) {
            return Err(too_large());
        }
        let mut content = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(failed)? {
            if (content.len() + chunk.len()) as u64 > self.max_bytes {
                return Err(too_large());
            }
            content.extend_from_slice(&chunk);
        }
        let valid_until = self.policy.valid_until(
            fetched_at,
            cc.as_deref(),
            expires.as_deref(),
            date.as_deref(),
        );
        let item = DataItem {
            id: None,
            source,
            fetched_at,
            valid_until: Some(valid_until),
            http_status: Some(status),
            sha256: sha256(&content),
            tls_cert_sha256,
            content_type,
            size: Some(content.len() as u64),
            signer: NodeId([0; 32]),
            signature: String::new(),
            age_ms: None,
        }
        .sign(key);
        Ok(Fetched { item, content })
    }
}
