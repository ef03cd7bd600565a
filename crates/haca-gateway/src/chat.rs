//! The LLM gateway: OpenAI-compatible chat and completions over the node's local model and
//! the configured upstream providers.
//!
//! A call is planned by `haca_exec::llm::router` (the request's `privacy` is a floor no route
//! below it is ever planned for), tried route by route, and answered with a signed receipt
//! whose route box lists every attempt. A stream that breaks mid-answer falls back only to a
//! route that meets the same floor and can continue the partial answer (the local model);
//! otherwise the call fails closed.

use crate::builder::{Execution, ReceiptBuilder};
use crate::enclave::{enclave_evidence, EnclaveClient, EnclaveEvidence};

use crate::error::GatewayError;
use crate::payment::{Covered, PendingPayment, UptoPending};
use crate::{now_ms, Charge, Gateway, RunToCommit};
use haca_core::receipt::*;
use haca_core::{Digest, RunId};
use haca_exec::llm::call::{
    hash_json, output_json, prompt_tokens, schema_grammar, send_whole, Cancel,
};
use haca_exec::llm::router::{self, PathClass, Provider, ProviderKind, Route, RouteError};
use haca_exec::llm::upstream::{upstream_body, Upstream, UpstreamError, UpstreamPool};
use haca_exec::llm::{
    call_hashes, generate_local, Call, LlmError, LocalLlm, ModelInfo, Privacy, Sink, LLM_RUNTIME,
    QUEUE, SLOTS,
};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

const LOCAL_PROVIDER: &str = "local";

/// How long a request waits for the local model to finish loading before it is told to retry.
const LOAD_WAIT: Duration = Duration::from_secs(30);

/// Where a local model stands.
#[derive(Clone)]
pub enum LocalState {
    Loading { done: u64, total: u64 },
    Ready(Arc<LocalLlm>),
    Failed(String),
}

/// A local model, loaded once in the background and shared by every request.
pub struct LocalModel {
    pub path: PathBuf,
    /// What its GGUF header says (read before loading: a bad file is refused at start).
    pub info: ModelInfo,
    state: watch::Receiver<LocalState>,
}

impl LocalModel {
    /// Checks `path`'s header, then loads it on its own thread, logging progress. A file that
    /// is not a servable GGUF is refused here, with its reason.
    pub fn start(path: PathBuf) -> Result<Arc<LocalModel>, String> {
        let (info, _) = LocalLlm::inspect(&path).map_err(|e| e.to_string())?;
        let (tx, rx) = watch::channel(LocalState::Loading { done: 0, total: 0 });
        let p = path.clone();
        let name = format!("{LOCAL_PROVIDER}/{}", info.name);
        std::thread::Builder::new()
            .name("local-llm-loader".into())
            .spawn(move || {
                let started = Instant::now();
                tracing::info!("local model: loading {} as {name}", p.display());
                let mut next_report = 0u64;
                let loaded = LocalLlm::load(&p, &mut |done, total| {
                    // Hashing and mapping the weights run side by side: `done` counts both.
                    if total > 0 && done * 10 >= next_report * total {
                        tracing::info!(
                            "local model {name}: {}% (hashed and mapped {} of {} MB)",
                            done * 100 / total,
                            done >> 21,
                            total >> 21
                        );
                        next_report = done * 10 / total + 1;
                    }
                    tx.send_replace(LocalState::Loading { done, total });
                });
                match loaded {
                    Ok(m) => {
                        tracing::info!(
                            "local model ready: {name} ({}{}, artifact {}, {} MB) in {:.1} s",
                            m.info.architecture,
                            if m.info.base { ", a base model" } else { "" },
                            m.blob_id,
                            m.size >> 20,
                            started.elapsed().as_secs_f64()
                        );
                        tx.send_replace(LocalState::Ready(Arc::new(m)));
                    }
                    Err(e) => {
                        tracing::error!("local model {name}: {e}");
                        tx.send_replace(LocalState::Failed(e.to_string()));
                    }
                }
            })
            .expect("threads start");
        Ok(Arc::new(LocalModel {
            path,
            info,
            state: rx,
        }))
    }

    /// The served name, `local/<name>`.
    pub fn served_name(&self) -> String {
        format!("{LOCAL_PROVIDER}/{}", self.info.name)
    }

    pub fn state(&self) -> LocalState {
        self.state.borrow().clone()
    }

    /// The loaded model; waits while it loads, then `Unavailable` with a retry hint.
    pub async fn ready(&self) -> Result<Arc<LocalLlm>, GatewayError> {
        let mut rx = self.state.clone();
        let deadline = tokio::time::Instant::now() + LOAD_WAIT;
        let name = self.served_name();
        loop {
            let progress = match &*rx.borrow_and_update() {
                LocalState::Ready(m) => return Ok(m.clone()),
                LocalState::Failed(e) => {
                    return Err(GatewayError::unavailable(
                        "model_unavailable",
                        format!("{name} failed to load: {e}"),
                    ))
                }
                LocalState::Loading { done, total } => (*done, *total),
            };
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                let pct = (progress.0 * 100).checked_div(progress.1).unwrap_or(0);
                return Err(GatewayError::unavailable(
                    "model_loading",
                    format!("{name} is still loading ({pct}%); retry shortly"),
                )
                .retry_after(5));
            }
        }
    }
}

/// The chat side of a node: its providers and how to reach them.
pub struct ChatGateway {
    pub providers: Vec<Provider>,
    upstreams: HashMap<String, Upstream>,
    /// The local models, by served name (`local/<name>`); the first is the default.
    pub local: Vec<Arc<LocalModel>>,
    /// The enclave, when it serves the first local model (the `tee` path).
    enclave: Option<EnclaveClient>,
}

/// A provider from the command line: `name=NAME,url=BASE_URL[,models=A;B][,key_env=VAR]
/// [,privacy=standard|tee][,fallback=PROVIDER][,timeout=SECONDS]`.
pub fn parse_provider(spec: &str) -> Result<(Provider, Duration), String> {
    let mut fields: HashMap<&str, &str> = HashMap::new();
    for part in spec.split(',') {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("--provider: {part:?} is not key=value"))?;
        if ![
            "name", "url", "models", "key_env", "privacy", "fallback", "timeout",
        ]
        .contains(&k)
        {
            return Err(format!(
                "--provider: unknown key {k:?} (name, url, models, key_env, privacy, fallback, timeout)"
            ));
        }
        fields.insert(k, v);
    }
    let name = fields.get("name").ok_or("--provider: name= is missing")?;
    if name.is_empty() || name.contains('/') || *name == LOCAL_PROVIDER {
        return Err(format!(
            "--provider: name {name:?} must be non-empty, without '/', and not {LOCAL_PROVIDER:?}"
        ));
    }
    let url = fields.get("url").ok_or("--provider: url= is missing")?;
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(format!("--provider {name}: url {url:?} is not http(s)"));
    }
    let models: Vec<String> = fields
        .get("models")
        .map(|m| {
            m.split(';')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    if models.is_empty() {
        return Err(format!(
            "--provider {name}: models= lists none (models=a;b)"
        ));
    }
    let path = match fields.get("privacy") {
        None => PathClass::Standard,
        Some(p) => PathClass::parse(p)
            .ok_or_else(|| format!("--provider {name}: privacy={p} is not standard or tee"))?,
    };
    let timeout = match fields.get("timeout") {
        None => Duration::from_secs(60),
        Some(t) => Duration::from_secs(
            t.parse()
                .map_err(|_| format!("--provider {name}: timeout={t} is not whole seconds"))?,
        ),
    };
    Ok((
        Provider {
            name: name.to_string(),
            kind: ProviderKind::OpenAi {
                base_url: url.to_string(),
                key_env: fields.get("key_env").map(|s| s.to_string()),
            },
            models,
            paths: vec![path],
            fallback: fields.get("fallback").map(|s| s.to_string()),
        },
        timeout,
    ))
}

/// How a failed upstream call answers the client, and whether another route may take over
/// (chat and images alike): a timeout or a provider's failure is the provider's; a request
/// the provider refused as such is the client's to fix.
pub(crate) fn upstream_failure(e: &UpstreamError) -> (GatewayError, bool) {
    let error = match e {
        UpstreamError::Timeout { .. } => GatewayError::Upstream {
            code: "upstream_timeout",
            message: e.to_string(),
            timed_out: true,
        },
        _ if e.refused_request() => GatewayError::invalid("upstream_refused", e.to_string()),
        UpstreamError::Cancelled => GatewayError::invalid("client_gone", e.to_string()),
        _ => GatewayError::Upstream {
            code: "upstream_failed",
            message: e.to_string(),
            timed_out: false,
        },
    };
    (error, e.retryable())
}

/// A paid request's charge once its routes were tried: kept when one served, refunded (the
/// reason naming `what` was asked for) when none did.
pub(crate) async fn keep_or_refund<T>(
    charge: Option<Charge>,
    served: &Result<T, Failed>,
    what: &str,
) {
    match (served, charge) {
        (Ok(_), Some(c)) => drop(c.stored()),
        (Err(f), Some(c)) => {
            c.refund(format!("no route served {what}: {}", f.error.message()))
                .await
        }
        (_, None) => {}
    }
}

/// Adds the `upstream` providers to `providers`, each name once, with a client for each that
/// calls out, and checks that every provider's fallback is one of them (else `--provider
/// NAME: fallback=F ` + `unknown_fallback`). Chat and images configure their providers so.
pub(crate) fn add_upstreams(
    providers: &mut Vec<Provider>,
    upstream: Vec<(Provider, Duration)>,
    pool: &UpstreamPool,
    unknown_fallback: &str,
) -> Result<HashMap<String, Upstream>, String> {
    let mut upstreams = HashMap::new();
    for (p, timeout) in upstream {
        if providers.iter().any(|q| q.name == p.name) {
            return Err(format!("--provider: {} is configured twice", p.name));
        }
        if let Some(up) = Upstream::for_provider(&p, timeout, pool)? {
            upstreams.insert(p.name.clone(), up);
        }
        providers.push(p);
    }
    for p in providers.iter() {
        if let Some(f) = &p.fallback {
            if !providers.iter().any(|q| &q.name == f) {
                return Err(format!(
                    "--provider {}: fallback={f} {unknown_fallback}",
                    p.name
                ));
            }
        }
    }
    Ok(upstreams)
}

impl ChatGateway {
    /// The node's providers: the local model when it has one, and `upstream` ones.
    pub fn new(
        local: Vec<Arc<LocalModel>>,
        enclave: Option<EnclaveClient>,
        upstream: Vec<(Provider, Duration)>,
        pool: &UpstreamPool,
    ) -> Result<ChatGateway, String> {
        let mut providers = Vec::new();
        for (i, m) in local.iter().enumerate() {
            if local[..i].iter().any(|o| o.info.name == m.info.name) {
                return Err(format!(
                    "--llm-model: two models are named {} ({} and {}): rename one file or its general.name",
                    m.served_name(),
                    local[..i].iter().find(|o| o.info.name == m.info.name).map_or_else(String::new, |o| o.path.display().to_string()),
                    m.path.display()
                ));
            }
        }
        if !local.is_empty() {
            let mut paths = vec![PathClass::Standard];
            if enclave.is_some() {
                paths.push(PathClass::Tee);
            }
            providers.push(Provider {
                name: LOCAL_PROVIDER.into(),
                kind: ProviderKind::Local,
                models: local.iter().map(|m| m.info.name.clone()).collect(),
                paths,
                fallback: None,
            });
        }
        let upstreams = add_upstreams(&mut providers, upstream, pool, "is not configured")?;
        Ok(ChatGateway {
            providers,
            upstreams,
            local,
            enclave,
        })
    }

    /// `/v1/models`.
    pub fn models(&self) -> Value {
        let mut data = Vec::new();
        for p in &self.providers {
            for m in &p.models {
                let mut entry = json!({
                    "id": format!("{}/{m}", p.name),
                    "object": "model",
                    "created": 0,
                    "owned_by": p.name,
                    "haca": {"paths": p.paths.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
                             "fallback": p.fallback},
                });
                if p.kind == ProviderKind::Local {
                    if let Some(local) = self.local_model(m) {
                        let h = &mut entry["haca"];
                        h["context_length"] = local.info.context.into();
                        h["architecture"] = local.info.architecture.clone().into();
                        // A base model continues text; it was not tuned to follow instructions.
                        h["instruction_tuned"] = (!local.info.base).into();
                        if local.info.base {
                            h["note"] = "a base (pretrained) model: it continues text rather than following instructions; serve an instruction-tuned GGUF for chat".into();
                        }
                        match local.state() {
                            LocalState::Ready(m) => {
                                h["state"] = "ready".into();
                                h["blob_id"] = m.blob_id.to_string().into();
                            }
                            LocalState::Loading { .. } => h["state"] = "loading".into(),
                            LocalState::Failed(e) => {
                                h["state"] = "failed".into();
                                h["error"] = e.into();
                            }
                        }
                    }
                }
                data.push(entry);
            }
        }
        json!({"object": "list", "data": data})
    }

    /// Refuses, before anything is paid, a call the first route is sure to refuse: a prompt
    /// over the local model's context.
    pub async fn precheck(&self, call: &Call, routes: &[Route]) -> Result<(), GatewayError> {
        let Some(first) = routes.first() else {
            return Ok(());
        };
        if first.provider != LOCAL_PROVIDER {
            return Ok(());
        }
        let Some(local) = self.local_model(&first.model) else {
            return Ok(());
        };
        // A strict schema the grammar converter cannot express is refused before payment.
        schema_grammar(call)?;
        let llm = local.ready().await?;
        let prompt = prompt_tokens(&llm, call)?;
        if prompt.len() >= llm.context() {
            return Err(LlmError::ContextTooLong {
                tokens: prompt.len(),
                limit: llm.context(),
            }
            .into());
        }
        // Full now is refused before payment; a slot taken meanwhile fails the run (refunded).
        if first.path == PathClass::Standard && llm.is_full() {
            return Err(LlmError::Busy {
                held: QUEUE + SLOTS,
            }
            .into());
        }
        Ok(())
    }

    /// The local model served as `local/<name>`.
    pub fn local_model(&self, name: &str) -> Option<&Arc<LocalModel>> {
        self.local.iter().find(|m| m.info.name == name)
    }

    pub fn plan(&self, call: &Call) -> Result<Vec<Route>, GatewayError> {
        self.plan_at(call, call.privacy())
    }

    /// [`plan`](Self::plan) for a call that reached the gateway over `transport`: a
    /// `private` call that came sealed through an OHTTP relay is met by that path (the node
    /// never learns who asked), so any route may serve it; `tee` still needs an enclave. The
    /// receipt keeps the policy the call stated.
    pub fn plan_over(
        &self,
        call: &Call,
        transport: &Transport,
    ) -> Result<Vec<Route>, GatewayError> {
        match (call.privacy(), transport) {
            (Privacy::Private, Transport::Ohttp { .. }) => self.plan_at(call, Privacy::Any),
            (p, _) => self.plan_at(call, p),
        }
    }

    fn plan_at(&self, call: &Call, privacy: Privacy) -> Result<Vec<Route>, GatewayError> {
        router::plan(&self.providers, call.model(), privacy).map_err(|e| {
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
}

/// What haca signs about the request, fixed before any route is tried: its hash, the input's
/// hash and the run id derived from them, and how the request reached the gateway.
#[derive(Clone)]
pub struct CallStart {
    pub run_id: RunId,
    pub request_hash: Digest,
    pub input_hash: Digest,
    pub started_at: u64,
    pub transport: Transport,
    /// The data items the call admits, checked and fresh when the call started (before it
    /// is charged).
    pub data: Vec<haca_core::data::DataItem>,
    /// The memory rows let into the call (`memory: true`), as the memory box lists them.
    pub memory: Option<haca_core::receipt::MemoryEvidence>,
}

/// How a call reached the gateway: the route box's path says `ohttp` for a call that came
/// sealed through an OHTTP relay (whatever route then served it), and names the relay.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Transport {
    #[default]
    Direct,
    Ohttp {
        relay: Option<String>,
    },
}

impl CallStart {
    pub fn new(gw: &Gateway, call: &Call) -> Result<CallStart, GatewayError> {
        let (request_hash, input_hash) = call_hashes(call)?;
        let started_at = now_ms();
        // The ids are in the signed request already (it is the client's own body).
        let data = gw.admit_data(call.data(), started_at)?;
        Ok(CallStart {
            run_id: gw.new_run_id(&request_hash),
            request_hash,
            input_hash,
            started_at,
            transport: Transport::Direct,
            data,
            memory: None,
        })
    }
}

/// What a route produced.
struct Produced {
    content: String,
    tool_calls: Vec<Value>,
    finish_reason: String,
    prompt_tokens: u64,
    completion_tokens: u64,
    runtime: String,
    artifact: Option<ArtifactEvidence>,
    /// For an answer made in the enclave: its attestation, OpenGradient-compatible fields
    /// and the time it signed.
    enclave: Option<EnclaveEvidence>,
}

/// A route's failure: what to tell the client and whether the next route may take over.
struct AttemptFailure {
    error: GatewayError,
    retryable: bool,
    /// Text of the answer the client already received from this attempt.
    partial: String,
}

impl AttemptFailure {
    /// A failure before any text reached the client.
    fn before_output(error: GatewayError, retryable: bool) -> Self {
        AttemptFailure {
            error,
            retryable,
            partial: String::new(),
        }
    }
}

/// A served call.
pub struct Served {
    pub receipt: Receipt,
    pub content: String,
    pub tool_calls: Vec<Value>,
    pub finish_reason: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub conversation: Option<(String, u64)>,
    /// OpenGradient-compatible `tee_*` fields: answers made in the enclave only.
    pub tee: Option<haca_tee::og_compat::TeeFields>,
    /// An `upto` call's `PAYMENT-RESPONSE` header (name, value): settled after the answer.
    pub payment_header: Option<(&'static str, String)>,
}

/// How a call is paid: settled before it ran (or free), or x402 `upto`, settled after.
enum CallPayment {
    Paid(Option<PaymentEvidence>),
    Upto(UptoPending),
}

/// How a chat call is paid: charged before the answer (or free: `None`), or with an x402
/// `upto` authorization settled after it. One per call, moved once: its size does not matter.
#[allow(clippy::large_enum_variant)]
pub enum ChatPayment {
    Charged(Option<Charge>),
    Upto(UptoPending),
}

impl Served {
    /// The `haca` object of an answer: run, receipt, route and conversation.
    pub fn haca_fields(&self) -> Value {
        let id = self.receipt.run_id.to_string();
        let mut v = json!({
            "run_id": id,
            "receipt": format!("/v1/runs/{id}/receipt"),
            "route": self.receipt.boxes.route.evidence,
        });
        if let Some((c, turn)) = &self.conversation {
            v["conversation"] = c.clone().into();
            v["turn"] = (*turn).into();
        }
        v
    }

    pub fn usage(&self) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        })
    }
}

/// A call that failed after routes were tried: the error and each attempt.
pub struct Failed {
    pub error: GatewayError,
    pub attempts: Vec<RouteAttempt>,
}

impl ChatGateway {
    /// Takes the payment of a call whose routes are planned (through the pipeline's one
    /// [`Gateway::take_payment`]): what it covers is the call's request, the local artifact
    /// when the local model is the first route, the mode of that route and `max_tokens`.
    pub async fn take_payment(
        &self,
        gw: &Gateway,
        call: &Call,
        routes: &[Route],
        start: &CallStart,
        pending: Option<PendingPayment>,
    ) -> Result<Option<Charge>, GatewayError> {
        let covered = self.covered(call, routes, start)?;
        gw.take_payment(pending, covered).await
    }

    /// What a payment for `call` covers: its request, the local artifact when the local
    /// model is the first route, the mode of that route and `max_tokens`.
    fn covered(
        &self,
        call: &Call,
        routes: &[Route],
        start: &CallStart,
    ) -> Result<Covered, GatewayError> {
        let first = routes
            .first()
            .ok_or_else(|| GatewayError::internal("a call with no planned route"))?;
        let model = match self.local_model(&first.model) {
            Some(l) if first.provider == LOCAL_PROVIDER => match l.state() {
                LocalState::Ready(m) => Some(m.blob_id),
                _ => None,
            },
            _ => None,
        };
        let covered = Covered {
            run_id: start.run_id,
            request_hash: start.request_hash,
            model,
            mode: if first.path == PathClass::Tee {
                ExecMode::Tee
            } else {
                ExecMode::Vanilla
            },
            max_tokens: call.sampling().max_tokens.map(u64::from),
        };
        Ok(covered)
    }

    /// Tries `routes` in order and commits the served answer's receipt. A call charged up
    /// front that fails, or is dropped because its client went away, is refunded as its
    /// [`Charge`] drops (its run is never stored). A call paid with x402 `upto` is charged
    /// nothing before the answer: once a route served, the tokens it served are priced and
    /// settled (never above the authorization) before the receipt is signed; when every
    /// route failed, nothing settles.
    #[allow(clippy::too_many_arguments)]
    pub async fn serve(
        &self,
        gw: &Gateway,
        call: &Call,
        routes: Vec<Route>,
        start: CallStart,
        settlement: haca_core::settlement::SettlementMode,
        payment: ChatPayment,
        conversation: Option<String>,
        sink: Option<Sink>,
    ) -> Result<Served, Failed> {
        let (charge, payment) = match payment {
            ChatPayment::Charged(charge) => {
                let evidence = charge.as_ref().map(|c| c.paid().evidence.clone());
                (charge, CallPayment::Paid(evidence))
            }
            ChatPayment::Upto(u) => (None, CallPayment::Upto(u)),
        };
        let served = self
            .serve_routes(
                gw,
                call,
                routes,
                start,
                settlement,
                payment,
                conversation,
                sink,
            )
            .await;
        keep_or_refund(charge, &served, "the call").await;
        served
    }

    #[allow(clippy::too_many_arguments)]
    async fn serve_routes(
        &self,
        gw: &Gateway,
        call: &Call,
        routes: Vec<Route>,
        start: CallStart,
        settlement: haca_core::settlement::SettlementMode,
        payment: CallPayment,
        conversation: Option<String>,
        sink: Option<Sink>,
    ) -> Result<Served, Failed> {
        let mut attempts: Vec<RouteAttempt> = Vec::new();
        let mut partial = String::new();
        let mut served = None;
        let mut last_error = None;
        for (i, route) in routes.iter().enumerate() {
            let path = route.path.receipt_path();
            match self
                .attempt(route, call, &start, &partial, sink.as_ref())
                .await
            {
                Ok(p) => {
                    attempts.push(RouteAttempt {
                        provider: route.provider.clone(),
                        path,
                        outcome: "served".into(),
                        error: None,
                    });
                    served = Some((route, p));
                    break;
                }
                Err(f) => {
                    tracing::warn!(
                        "run {}: route {} ({}) failed: {}",
                        start.run_id,
                        route.provider,
                        route.path.as_str(),
                        f.error.message()
                    );
                    attempts.push(RouteAttempt {
                        provider: route.provider.clone(),
                        path,
                        outcome: "failed".into(),
                        error: Some(f.error.message().to_owned()),
                    });
                    partial.push_str(&f.partial);
                    let next_can_continue = routes
                        .get(i + 1)
                        .is_some_and(|n| partial.is_empty() || self.can_continue(n));
                    last_error = Some(f.error);
                    if !f.retryable || !next_can_continue {
                        break;
                    }
                }
            }
        }
        let Some((route, mut produced)) = served else {
            let mut error =
                last_error.unwrap_or_else(|| GatewayError::internal("no route was tried"));
            if call.privacy() != Privacy::Any {
                let text = format!(
                    "{} (privacy: {}: no other route that meets it could take over, so none did)",
                    error.message(),
                    call.privacy().as_str()
                );
                error = error.with_message(text);
            }
            return Err(Failed { error, attempts });
        };
        produced.content = format!("{partial}{}", produced.content);
        let output = output_json(
            &produced.content,
            &produced.tool_calls,
            &produced.finish_reason,
        );
        let fail = |error: GatewayError, attempts: &Vec<RouteAttempt>| Failed {
            error,
            attempts: attempts.clone(),
        };
        let output_hash = hash_json(&output).map_err(|e| fail(e.into(), &attempts))?;
        // `upto`: the answer is here, so its tokens are priced and settled now. A charge
        // whose run is then not stored is refunded as it drops.
        let mut upto_charge = None;
        let payment = match payment {
            CallPayment::Paid(p) => p,
            CallPayment::Upto(u) => {
                // A route that reported no usage is priced at the worst case authorized.
                let (prompt, completion) =
                    if produced.prompt_tokens == 0 && produced.completion_tokens == 0 {
                        (u.prompt_bound, u.max_tokens)
                    } else {
                        (produced.prompt_tokens, produced.completion_tokens)
                    };
                let covered = self
                    .covered(call, &routes, &start)
                    .map_err(|e| fail(e, &attempts))?;
                let settled = u
                    .settle(covered, prompt, completion)
                    .await
                    .map_err(|e| fail(e, &attempts))?;
                let charge = gw.charge(start.run_id, settled);
                let evidence = charge.paid().evidence.clone();
                upto_charge = Some(charge);
                Some(evidence)
            }
        };
        let tee = produced.enclave.as_ref().map(|e| e.tee.clone());
        let node = gw.key.node_id();
        let blob_id = produced
            .artifact
            .as_ref()
            .map(|a| a.blob_id.to_string())
            .unwrap_or_default();
        let mode = if route.path == PathClass::Tee {
            ExecMode::Tee
        } else {
            ExecMode::Vanilla
        };
        let mut builder = ReceiptBuilder::new(start.run_id, settlement, start.started_at);
        if let Some(a) = produced.artifact.take() {
            builder.artifact(a);
        }
        let (path, relay) = match &start.transport {
            Transport::Direct => (route.path.receipt_path(), None),
            Transport::Ohttp { relay } => (PrivacyPath::Ohttp, relay.clone()),
        };
        builder
            .route(RouteEvidence {
                provider: format!("{}/{}", route.provider, route.model),
                node,
                path,
                policy: call.privacy().as_str().into(),
                attempts: attempts.clone(),
                relay,
            })
            .payment(payment)
            .data(start.data.clone())
            .memory(start.memory.clone());
        builder
            .executed(Execution {
                mode,
                runtime: produced.runtime.clone(),
                request_hash: start.request_hash,
                input_hash: start.input_hash,
                output_hash,
                signer: node,
                started_at: start.started_at,
                finished_at: now_ms(),
                enclave: produced.enclave.take(),
            })
            .map_err(|e| fail(e, &attempts))?;
        let mut receipt = builder
            .build(&gw.evidence)
            .map_err(|e| fail(e, &attempts))?;
        let turn = conversation.as_ref().map(|c| haca_store::ChatTurn {
            conversation: c.clone(),
            model: call.model().to_owned(),
            provider: format!("{}/{}", route.provider, route.model),
            path: path_name(path).into(),
            privacy: call.privacy().as_str().into(),
            attempts: attempts.len() as u64,
        });
        let turn = gw
            .commit(
                &mut receipt,
                RunToCommit {
                    model: call.model().to_owned(),
                    blob_id,
                    mode,
                    output,
                    content: None,
                    turn,
                    zk_job: None,
                },
            )
            .await
            .map_err(|e| fail(e, &attempts))?;
        let payment_header = upto_charge.map(|c| c.stored()).and_then(|p| p.header());
        Ok(Served {
            payment_header,
            receipt,
            content: produced.content,
            tool_calls: produced.tool_calls,
            finish_reason: produced.finish_reason,
            prompt_tokens: produced.prompt_tokens,
            completion_tokens: produced.completion_tokens,
            conversation: conversation.zip(turn),
            tee,
        })
    }

    /// Whether `route` can carry on from a partial answer another route left behind: the
    /// local model in this process can (the enclave generates whole answers).
    fn can_continue(&self, route: &Route) -> bool {
        route.path == PathClass::Standard
            && self
                .providers
                .iter()
                .any(|p| p.name == route.provider && p.kind == ProviderKind::Local)
    }

    async fn attempt(
        &self,
        route: &Route,
        call: &Call,
        start: &CallStart,
        partial: &str,
        sink: Option<&Sink>,
    ) -> Result<Produced, AttemptFailure> {
        let provider = self
            .providers
            .iter()
            .find(|p| p.name == route.provider)
            .expect("routes name configured providers");
        match provider.kind {
            ProviderKind::Local if route.path == PathClass::Tee => {
                self.attempt_enclave(route, call, start, partial, sink)
                    .await
            }
            ProviderKind::Local => self.attempt_local(route, call, partial, sink).await,
            ProviderKind::OpenAi { .. } => {
                let up = &self.upstreams[&route.provider];
                attempt_upstream(up, route, call, sink).await
            }
        }
    }

    /// The local model inside the enclave: an attested answer, sent whole.
    async fn attempt_enclave(
        &self,
        route: &Route,
        call: &Call,
        start: &CallStart,
        partial: &str,
        sink: Option<&Sink>,
    ) -> Result<Produced, AttemptFailure> {
        let failure = AttemptFailure::before_output;
        let Call::Chat(c) = call else {
            return Err(failure(
                GatewayError::invalid(
                    "privacy_unmet",
                    "the enclave serves chat completions, not /v1/completions",
                )
                .param("privacy"),
                false,
            ));
        };
        if !partial.is_empty() {
            return Err(failure(
                GatewayError::internal("the enclave cannot continue another route's answer"),
                false,
            ));
        }
        let client = self.enclave.as_ref().ok_or_else(|| {
            failure(
                GatewayError::unavailable("enclave_down", "this node runs no enclave"),
                true,
            )
        })?;
        // The enclave holds the first local model only.
        if self.local.first().map(|m| &m.info.name) != Some(&route.model) {
            return Err(failure(
                GatewayError::invalid(
                    "privacy_unmet",
                    format!(
                        "the enclave serves {} only, not {LOCAL_PROVIDER}/{}",
                        self.local
                            .first()
                            .map_or_else(String::new, |m| m.served_name()),
                        route.model
                    ),
                )
                .param("privacy"),
                false,
            ));
        }
        let label = format!("{LOCAL_PROVIDER}/{}", route.model);
        let answer = client
            .chat(&c.raw)
            .await
            .map_err(|e| failure(e.error, e.retryable))?;
        if answer.request_hash != start.request_hash {
            return Err(failure(
                GatewayError::internal("the enclave hashed another request than the gateway sent"),
                false,
            ));
        }
        let evidence = enclave_evidence(&answer.signed).map_err(|e| failure(e, false))?;
        let out = answer.output;
        if let Some(s) = sink {
            send_whole(s, &out.content, &out.tool_calls);
        }
        Ok(Produced {
            content: out.content,
            tool_calls: out.tool_calls,
            finish_reason: out.finish_reason,
            prompt_tokens: answer.usage.prompt_tokens,
            completion_tokens: answer.usage.completion_tokens,
            runtime: format!("dev-enclave/{LLM_RUNTIME}"),
            artifact: Some(local_artifact(&label, answer.blob_id)),
            enclave: Some(evidence),
        })
    }

    async fn attempt_local(
        &self,
        route: &Route,
        call: &Call,
        partial: &str,
        sink: Option<&Sink>,
    ) -> Result<Produced, AttemptFailure> {
        let failure = AttemptFailure::before_output;
        let local = self.local_model(&route.model).ok_or_else(|| {
            failure(
                GatewayError::unavailable(
                    "model_unavailable",
                    format!("this node has no local model {}", route.model),
                ),
                true,
            )
        })?;
        let llm = local.ready().await.map_err(|e| failure(e, true))?;
        let call2 = call.clone();
        let partial = partial.to_owned();
        let sink = sink.cloned();
        let llm2 = llm.clone();
        // This future is dropped when the client goes away (a whole answer's request) or the
        // server stops: the guard then stops the generation at its next token.
        let cancel = Cancel::new();
        let _stop_when_dropped = cancel.on_drop();
        let a = tokio::task::spawn_blocking(move || {
            generate_local(&llm2, &call2, &partial, sink, &cancel)
        })
        .await
        .map_err(|e| {
            failure(
                GatewayError::internal(format!("generator stopped: {e}")),
                true,
            )
        })?
        .map_err(|e| {
            // Busy: no token was generated, so another route may still take the call.
            let retryable = matches!(e, LlmError::Busy { .. });
            failure(e.into(), retryable)
        })?;
        Ok(Produced {
            content: a.content,
            tool_calls: a.tool_calls,
            finish_reason: a.finish_reason,
            prompt_tokens: a.prompt_tokens,
            completion_tokens: a.completion_tokens,
            runtime: LLM_RUNTIME.into(),
            artifact: Some(local_artifact(&local.served_name(), llm.blob_id)),
            enclave: None,
        })
    }
}

/// A local model's artifact box.
pub fn local_artifact(label: &str, blob_id: haca_core::BlobId) -> ArtifactEvidence {
    ArtifactEvidence {
        label: Some(label.into()),
        revision: None,
        blob_id,
        format: "gguf".into(),
        walrus_blob_id: None,
    }
}

async fn attempt_upstream(
    up: &Upstream,
    route: &Route,
    call: &Call,
    sink: Option<&Sink>,
) -> Result<Produced, AttemptFailure> {
    let body = upstream_body(call.raw(), &route.model);
    let mut sent = String::new();
    let sink = sink.cloned();
    let result = up
        .call(call.upstream_path(), &body, &mut |delta: &Value| {
            if let Some(t) = delta["content"].as_str() {
                sent.push_str(t);
            }
            match &sink {
                Some(s) => {
                    let mut d = delta.clone();
                    if let Some(o) = d.as_object_mut() {
                        o.remove("role");
                    }
                    s.send(d).is_ok()
                }
                None => true,
            }
        })
        .await;
    match result {
        Ok(a) => Ok(Produced {
            content: a.content,
            tool_calls: a.tool_calls,
            finish_reason: a.finish_reason,
            prompt_tokens: a.prompt_tokens.unwrap_or(0),
            completion_tokens: a.completion_tokens.unwrap_or(0),
            runtime: format!(
                "upstream {} ({})",
                up.name,
                a.model.unwrap_or_else(|| route.model.clone())
            ),
            artifact: None,
            enclave: None,
        }),
        Err(e) => {
            let (error, retryable) = upstream_failure(&e);
            Err(AttemptFailure {
                error,
                retryable,
                // Only what the client actually received counts as said.
                partial: if sink.is_some() { sent } else { String::new() },
            })
        }
    }
}

/// A new conversation id.
pub fn new_conversation_id() -> String {
    format!("conv_{}", crate::random_hex(12))
}

/// The paths a chat's turns took, with what changed from one turn to the next.
pub fn conversation_view(id: &str, turns: &[haca_store::ChatTurnRow]) -> Value {
    let mut out = Vec::new();
    for (i, t) in turns.iter().enumerate() {
        let mut changed = Vec::new();
        if let Some(prev) = i.checked_sub(1).map(|j| &turns[j]) {
            for (what, a, b) in [
                ("model", &prev.model, &t.model),
                ("provider", &prev.provider, &t.provider),
                ("path", &prev.path, &t.path),
                ("privacy", &prev.privacy, &t.privacy),
            ] {
                if a != b {
                    changed.push(what);
                }
            }
        }
        out.push(json!({
            "turn": t.turn,
            "run_id": t.run_id,
            "receipt": format!("/v1/runs/{}/receipt", t.run_id),
            "created_at": t.created_at,
            "model": t.model,
            "provider": t.provider,
            "path": t.path,
            "privacy": t.privacy,
            "attempts": t.attempts,
            "fell_back": t.attempts > 1,
            "changed": changed,
        }));
    }
    json!({"id": id, "turns": out})
}

/// The receipt's name for a path (`direct`, `ohttp`, `tee`).
fn path_name(p: PrivacyPath) -> &'static str {
    match p {
        PrivacyPath::Direct => "direct",
        PrivacyPath::Ohttp => "ohttp",
        PrivacyPath::Tee => "tee",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn openai(name: &str, fallback: Option<&str>) -> (Provider, Duration) {
        let p = Provider {
            name: name.into(),
            kind: ProviderKind::OpenAi {
                base_url: "http://127.0.0.1:9/v1".into(),
                key_env: None,
            },
            models: vec!["m".into()],
            paths: vec![PathClass::Standard],
            fallback: fallback.map(Into::into),
        };
        (p, Duration::from_secs(5))
    }

    #[test]
    fn providers_are_named_once_and_fall_back_only_to_configured_ones() {
        let pool = UpstreamPool::new();
        let add = |list: Vec<(Provider, Duration)>| {
            add_upstreams(&mut Vec::new(), list, &pool, "is not configured")
        };
        let both = add(vec![openai("a", Some("b")), openai("b", None)]).unwrap();
        assert_eq!(both.len(), 2, "a client for each upstream");
        let twice = add(vec![openai("a", None), openai("a", None)]).unwrap_err();
        assert_eq!(twice, "--provider: a is configured twice");
        let lost = add(vec![openai("a", Some("c"))]).unwrap_err();
        assert_eq!(lost, "--provider a: fallback=c is not configured");
    }
}
