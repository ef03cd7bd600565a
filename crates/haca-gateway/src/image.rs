//! Image generation (`POST /v1/images/generations`) over the configured image providers
//! (`--provider ...,kind=image`), through the same pipeline as chat: planned by
//! `haca_exec::llm::router` (the request's `privacy` is a floor; fallbacks that meet it are
//! tried in turn), paid in the one place, executed route by route, one receipt, commit.
//!
//! An image travels inside the signed output: each image a provider returns is checked
//! ([`haca_exec::image::check_image`]: PNG, JPEG or WebP whose header decodes, under the size
//! limit; anything else fails that route and the next is tried), hashed, stored by its
//! SHA-256 under the node's image directory, and the run's output hash covers every image's
//! hash ([`haca_exec::image::output_json`]). `haca verify --image FILE` proves which bytes
//! came back.

use crate::builder::{Execution, ReceiptBuilder};
use crate::chat::{add_upstreams, keep_or_refund, upstream_failure, Failed};
use crate::error::GatewayError;
use crate::payment::{Covered, PendingPayment};
use crate::{now_ms, Charge, Gateway, RunToCommit};
use base64::Engine as _;
use haca_core::receipt::*;
use haca_core::settlement::SettlementMode;
use haca_core::{Digest, RunId};
use haca_exec::image::{check_image, output_hash, output_json, ImageFacts, ImageRequest};
use haca_exec::llm::router::{self, Provider, Route, RouteError};
use haca_exec::llm::upstream::{Upstream, UpstreamError, UpstreamPool};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

/// The image side of a node: its image providers and where served images are kept.
pub struct ImageGateway {
    pub providers: Vec<Provider>,
    upstreams: HashMap<String, Upstream>,
    /// Served images, each in a file named by its SHA-256 (hex).
    dir: PathBuf,
    /// The largest image accepted from a provider, in bytes.
    pub max_image_bytes: usize,
}

/// What haca signs about an image request before any route is tried.
#[derive(Clone)]
pub struct ImageStart {
    pub run_id: RunId,
    pub request_hash: Digest,
    pub input_hash: Digest,
    pub started_at: u64,
}

impl ImageStart {
    pub fn new(gw: &Gateway, req: &ImageRequest) -> Result<ImageStart, GatewayError> {
        let (request_hash, input_hash) = req.hashes()?;
        Ok(ImageStart {
            run_id: gw.new_run_id(&request_hash),
            request_hash,
            input_hash,
            started_at: now_ms(),
        })
    }
}

/// One served image: what the receipt covers of it, and its bytes.
pub struct ServedImage {
    pub facts: ImageFacts,
    pub bytes: Vec<u8>,
}

/// A served image request.
pub struct ImagesServed {
    pub receipt: Receipt,
    pub images: Vec<ServedImage>,
    /// The provider's own `revised_prompt`s, when it sent them (outside the output hash).
    pub revised_prompts: Vec<Option<String>>,
}

impl ImageGateway {
    /// The node's image providers (upstream OpenAI-compatible `/images/generations`
    /// endpoints); served images go under `dir`.
    pub fn new(
        upstream: Vec<(Provider, Duration)>,
        pool: &UpstreamPool,
        dir: PathBuf,
    ) -> Result<ImageGateway, String> {
        let mut providers: Vec<Provider> = Vec::new();
        let upstreams = add_upstreams(
            &mut providers,
            upstream,
            pool,
            "is not an image provider on this node",
        )?;
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("image directory {}: {e}", dir.display()))?;
        Ok(ImageGateway {
            providers,
            upstreams,
            dir,
            max_image_bytes: haca_exec::image::DEFAULT_MAX_IMAGE_BYTES,
        })
    }

    /// The image models, as `/v1/models` lists them.
    pub fn models(&self) -> Vec<Value> {
        let mut data = Vec::new();
        for p in &self.providers {
            for m in &p.models {
                data.push(json!({
                    "id": format!("{}/{m}", p.name),
                    "object": "model",
                    "created": 0,
                    "owned_by": p.name,
                    "haca": {"kind": "image",
                             "paths": p.paths.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
                             "fallback": p.fallback},
                }));
            }
        }
        data
    }

    /// The routes for `req`, at its privacy floor (nothing below it is ever planned).
    pub fn plan(&self, req: &ImageRequest) -> Result<Vec<Route>, GatewayError> {
        router::plan(&self.providers, &req.model, req.privacy).map_err(|e| {
            let msg = e.to_string();
            match e {
                RouteError::PrivacyUnmet { .. } => {
                    GatewayError::invalid("privacy_unmet", msg).param("privacy")
                }
                _ => GatewayError::not_found("model_not_found", format!("model: {msg}"))
                    .param("model"),
            }
        })
    }

    /// Takes the payment of a planned request through [`Gateway::take_payment`].
    pub async fn take_payment(
        &self,
        gw: &Gateway,
        start: &ImageStart,
        pending: Option<PendingPayment>,
    ) -> Result<Option<Charge>, GatewayError> {
        let covered = Covered {
            run_id: start.run_id,
            request_hash: start.request_hash,
            model: None,
            mode: ExecMode::Vanilla,
            max_tokens: None,
        };
        gw.take_payment(pending, covered).await
    }

    /// The file a served image with this SHA-256 is kept in.
    pub fn image_path(&self, sha256: &Digest) -> PathBuf {
        self.dir.join(sha256.to_hex())
    }

    /// A stored image's bytes, checked against the hash that names them.
    pub fn read_image(&self, sha256: &Digest) -> Result<Vec<u8>, GatewayError> {
        let bytes = std::fs::read(self.image_path(sha256)).map_err(|e| {
            GatewayError::not_found(
                "image_not_found",
                format!("image {sha256} is not stored on this node: {e}"),
            )
        })?;
        if haca_core::hash::sha256(&bytes) != *sha256 {
            return Err(GatewayError::internal(format!(
                "stored image {sha256} is damaged (its bytes hash otherwise)"
            )));
        }
        Ok(bytes)
    }

    /// Tries `routes` in order and commits the served images' receipt; a paid request that
    /// fails everywhere is refunded before the failure is answered.
    pub async fn serve(
        &self,
        gw: &Gateway,
        req: &ImageRequest,
        routes: Vec<Route>,
        start: ImageStart,
        settlement: SettlementMode,
        charge: Option<Charge>,
    ) -> Result<ImagesServed, Failed> {
        let payment = charge.as_ref().map(|c| c.paid().evidence.clone());
        let served = self
            .serve_routes(gw, req, routes, start, settlement, payment)
            .await;
        keep_or_refund(charge, &served, "the images").await;
        served
    }

    async fn serve_routes(
        &self,
        gw: &Gateway,
        req: &ImageRequest,
        routes: Vec<Route>,
        start: ImageStart,
        settlement: SettlementMode,
        payment: Option<PaymentEvidence>,
    ) -> Result<ImagesServed, Failed> {
        let mut attempts = Vec::new();
        let mut last_error = None;
        let mut served = None;
        for route in &routes {
            let path = route.path.receipt_path();
            match self.attempt(route, req).await {
                Ok(answer) => {
                    attempts.push(RouteAttempt {
                        provider: route.provider.clone(),
                        path,
                        outcome: "served".into(),
                        error: None,
                    });
                    served = Some((route, answer));
                    break;
                }
                Err((error, retryable)) => {
                    tracing::warn!(
                        "run {}: image route {} failed: {}",
                        start.run_id,
                        route.provider,
                        error.message()
                    );
                    attempts.push(RouteAttempt {
                        provider: route.provider.clone(),
                        path,
                        outcome: "failed".into(),
                        error: Some(error.message().to_owned()),
                    });
                    last_error = Some(error);
                    if !retryable {
                        break;
                    }
                }
            }
        }
        let fail = |error: GatewayError, attempts: &Vec<RouteAttempt>| Failed {
            error,
            attempts: attempts.clone(),
        };
        let Some((route, answer)) = served else {
            let error = last_error.unwrap_or_else(|| GatewayError::internal("no route was tried"));
            return Err(fail(error, &attempts));
        };
        let facts: Vec<ImageFacts> = answer.images.iter().map(|i| i.facts.clone()).collect();
        // A private run's images are not kept after the response, as its output is not.
        if settlement != SettlementMode::Private {
            for image in &answer.images {
                let path = self.image_path(&image.facts.sha256);
                if !path.exists() {
                    haca_store::write_atomic(&path, &image.bytes, false).map_err(|e| {
                        fail(
                            GatewayError::internal(format!("storing an image: {e}")),
                            &attempts,
                        )
                    })?;
                }
            }
        }
        let node = gw.key.node_id();
        let mut builder = ReceiptBuilder::new(start.run_id, settlement, start.started_at);
        builder
            .route(RouteEvidence {
                provider: format!("{}/{}", route.provider, route.model),
                node,
                path: route.path.receipt_path(),
                policy: req.privacy.as_str().into(),
                attempts: attempts.clone(),
                relay: None,
            })
            .payment(payment);
        builder
            .executed(Execution {
                mode: ExecMode::Vanilla,
                runtime: format!(
                    "upstream {} ({}) images",
                    route.provider,
                    answer.model.unwrap_or_else(|| route.model.clone())
                ),
                request_hash: start.request_hash,
                input_hash: start.input_hash,
                output_hash: output_hash(&facts),
                signer: node,
                started_at: start.started_at,
                finished_at: now_ms(),
                enclave: None,
            })
            .map_err(|e| fail(e, &attempts))?;
        let mut receipt = builder
            .build(&gw.evidence)
            .map_err(|e| fail(e, &attempts))?;
        gw.commit(
            &mut receipt,
            RunToCommit {
                model: req.model.clone(),
                blob_id: String::new(),
                mode: ExecMode::Vanilla,
                output: output_json(&facts),
                content: None,
                turn: None,
                zk_job: None,
            },
        )
        .await
        .map_err(|e| fail(e, &attempts))?;
        Ok(ImagesServed {
            receipt,
            images: answer.images,
            revised_prompts: answer.revised_prompts,
        })
    }

    /// One upstream call: the images it returned, each checked. The error says whether the
    /// next route may take over.
    async fn attempt(
        &self,
        route: &Route,
        req: &ImageRequest,
    ) -> Result<UpstreamImages, (GatewayError, bool)> {
        let up = self.upstreams.get(&route.provider).ok_or_else(|| {
            (
                GatewayError::internal(format!("{} is no upstream", route.provider)),
                true,
            )
        })?;
        // What the answer carried was not images: the provider's failure, another may serve.
        let failed = |message: String, timed_out: bool| {
            (
                GatewayError::Upstream {
                    code: if timed_out {
                        "upstream_timeout"
                    } else {
                        "upstream_failed"
                    },
                    message,
                    timed_out,
                },
                true,
            )
        };
        let name = &up.name;
        // The call itself failed: classified as chat's upstream calls are.
        let upstream = |e: UpstreamError| upstream_failure(&e);
        let url = format!("{}/images/generations", up.base_url.trim_end_matches('/'));
        let mut call = up.http.post(&url).json(&req.upstream_body(&route.model));
        if let Some(key) = &up.api_key {
            call = call.bearer_auth(key);
        }
        let resp = tokio::time::timeout(up.timeout, call.send())
            .await
            .map_err(|_| {
                upstream(UpstreamError::Timeout {
                    provider: name.clone(),
                    seconds: up.timeout.as_secs(),
                })
            })?
            .map_err(|e| {
                upstream(UpstreamError::Unreachable {
                    provider: name.clone(),
                    reason: e.to_string(),
                })
            })?;
        let status = resp.status().as_u16();
        // The images' base64 is a third larger than the images; a little room for JSON.
        let limit = self.max_image_bytes * 4 / 3 * req.n as usize + (64 << 10);
        let body = read_limited(resp, limit, up.timeout)
            .await
            .map_err(|e| failed(format!("{name}: {e}"), false))?;
        if status != 200 {
            return Err(upstream(UpstreamError::Status {
                provider: name.clone(),
                status,
                message: String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned(),
            }));
        }
        let v: Value = serde_json::from_slice(&body)
            .map_err(|e| failed(format!("{name}'s answer is not JSON: {e}"), false))?;
        let data = v["data"]
            .as_array()
            .filter(|d| !d.is_empty())
            .ok_or_else(|| failed(format!("{name}'s answer has no data[] images"), false))?;
        if data.len() > req.n as usize {
            return Err(failed(
                format!("{name} returned {} images for n={}", data.len(), req.n),
                false,
            ));
        }
        let mut images = Vec::new();
        let mut revised_prompts = Vec::new();
        for (i, item) in data.iter().enumerate() {
            let bytes = match (item["b64_json"].as_str(), item["url"].as_str()) {
                (Some(b64), _) => base64::engine::general_purpose::STANDARD
                    .decode(b64.trim())
                    .map_err(|e| {
                        failed(
                            format!("{name}'s image {i}: b64_json is not base64: {e}"),
                            false,
                        )
                    })?,
                (None, Some(u)) => {
                    let resp = tokio::time::timeout(up.timeout, up.http.get(u).send())
                        .await
                        .map_err(|_| failed(format!("{name}'s image {i} URL timed out"), true))?
                        .map_err(|e| failed(format!("{name}'s image {i} URL: {e}"), false))?;
                    read_limited(resp, self.max_image_bytes + 1, up.timeout)
                        .await
                        .map_err(|e| failed(format!("{name}'s image {i}: {e}"), false))?
                }
                _ => {
                    return Err(failed(
                        format!("{name}'s image {i} has neither b64_json nor url"),
                        false,
                    ))
                }
            };
            let facts = check_image(&bytes, self.max_image_bytes).map_err(|e| {
                (
                    GatewayError::Upstream {
                        code: "upstream_not_image",
                        message: format!("{name}'s image {i} {e}"),
                        timed_out: false,
                    },
                    true,
                )
            })?;
            images.push(ServedImage { facts, bytes });
            revised_prompts.push(item["revised_prompt"].as_str().map(str::to_owned));
        }
        Ok(UpstreamImages {
            images,
            revised_prompts,
            model: v["model"].as_str().map(str::to_owned),
        })
    }
}

struct UpstreamImages {
    images: Vec<ServedImage>,
    revised_prompts: Vec<Option<String>>,
    model: Option<String>,
}

/// A response body, refused once it passes `limit` bytes or stalls longer than `timeout`.
async fn read_limited(
    mut resp: haca_exec::image::HttpResponse,
    limit: usize,
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        match tokio::time::timeout(timeout, resp.chunk()).await {
            Err(_) => return Err(format!("its answer stalled for {} s", timeout.as_secs())),
            Ok(Err(e)) => return Err(format!("its answer broke: {e}")),
            Ok(Ok(None)) => return Ok(body),
            Ok(Ok(Some(c))) => {
                if body.len() + c.len() > limit {
                    return Err(format!("its answer is over {limit} bytes"));
                }
                body.extend_from_slice(&c);
            }
        }
    }
}
