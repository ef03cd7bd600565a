//! The LLM gateway: OpenAI-compatible chat and completions over the node's local model and
//! the configured upstream providers.
//!
//! A call is planned by `haca_exec::llm::router` (the request's `privacy` is a floor no route
//! below it is ever planned for), tried route by route, and answered with a signed receipt
//! whose route box lists every attempt. A stream that breaks mid-answer falls back only to a
//! route that meets the same floor and can continue the partial answer (the local model);
//! otherwise the call fails closed.

use crate::gateway::{Gateway, RunToCommit};
use crate::now_ms;
use crate::server::error::ApiError;
use axum::http::StatusCode;
use haca_core::canonical;
use haca_core::receipt::*;
use haca_core::{sha256, Digest, RunId};
use haca_exec::llm::router::{self, PathClass, Provider, ProviderKind, Route, RouteError};
use haca_exec::llm::upstream::{upstream_body, Upstream, UpstreamError};
use haca_exec::llm::{
    ChatRequest, CompletionRequest, FinishReason, GenerateParams, LlmError, LocalLlm, Privacy,
    ResponseFormat, ToolChoice, CONTEXT_LIMIT, LLM_RUNTIME,
};
use rand::RngCore;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// The local model's public name.
pub const LOCAL_MODEL: &str = "local/gemma-3-270m";
const LOCAL_PROVIDER: &str = "local";
const LOCAL_MODEL_ID: &str = "gemma-3-270m";

/// How long a request waits for the local model to finish loading before a 503.
const LOAD_WAIT: Duration = Duration::from_secs(30);
/// Answer length when the request sets none: a base model rambles.
const DEFAULT_MAX_TOKENS: usize = 256;
/// Sampling when the request sets none: calmer than OpenAI's 1.0 for a 270M base model.
const DEFAULT_TEMPERATURE: f64 = 0.7;
const DEFAULT_TOP_P: f64 = 0.95;

/// Where the local model stands.
#[derive(Clone)]
pub enum LocalState {
    Loading { read: u64, total: u64 },
    Ready(Arc<LocalLlm>),
    Failed(String),
}

/// The local model, loaded once in the background and shared by every request.
pub struct LocalModel {
    pub path: PathBuf,
    state: watch::Receiver<LocalState>,
}

impl LocalModel {
    /// Starts loading `path` on its own thread, logging progress.
    pub fn start(path: PathBuf) -> Arc<LocalModel> {
        let (tx, rx) = watch::channel(LocalState::Loading { read: 0, total: 0 });
        let p = path.clone();
        std::thread::Builder::new()
            .name("local-llm-loader".into())
            .spawn(move || {
                let started = Instant::now();
                tracing::info!("local model: loading {} as {LOCAL_MODEL}", p.display());
                let mut read = 0u64;
                let mut next_report = 0u64;
                let loaded = LocalLlm::load(&p, &mut |n, total| {
                    read += n;
                    // Hashing, then loading: two passes over the file, reported as one.
                    if read * 10 >= next_report * total && total > 0 {
                        tracing::info!(
                            "local model: {}% ({} of {} MB read)",
                            read * 100 / total,
                            read >> 20,
                            total >> 20
                        );
                        next_report = read * 10 / total + 1;
                    }
                    tx.send_replace(LocalState::Loading { read, total });
                });
                match loaded {
                    Ok(m) => {
                        tracing::info!(
                            "local model ready: {LOCAL_MODEL} (artifact {}, {} MB) in {:.1} s",
                            m.blob_id,
                            m.size >> 20,
                            started.elapsed().as_secs_f64()
                        );
                        tx.send_replace(LocalState::Ready(Arc::new(m)));
                    }
                    Err(e) => {
                        tracing::error!("local model: {e}");
                        tx.send_replace(LocalState::Failed(e.to_string()));
                    }
                }
            })
            .expect("threads start");
        Arc::new(LocalModel { path, state: rx })
    }

    pub fn state(&self) -> LocalState {
        self.state.borrow().clone()
    }

    /// The loaded model; waits while it loads, then a 503 with `Retry-After`.
    pub async fn ready(&self) -> Result<Arc<LocalLlm>, ApiError> {
        let mut rx = self.state.clone();
        let deadline = tokio::time::Instant::now() + LOAD_WAIT;
        loop {
            let progress = match &*rx.borrow_and_update() {
                LocalState::Ready(m) => return Ok(m.clone()),
                LocalState::Failed(e) => {
                    return Err(ApiError::unavailable(
                        "model_unavailable",
                        format!("{LOCAL_MODEL} failed to load: {e}"),
                    ))
                }
                LocalState::Loading { read, total } => (*read, *total),
            };
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                let pct = (progress.0 * 100).checked_div(progress.1).unwrap_or(0);
                return Err(ApiError::unavailable(
                    "model_loading",
                    format!("{LOCAL_MODEL} is still loading ({pct}%); retry shortly"),
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
    pub local: Option<Arc<LocalModel>>,
    /// The dev enclave, when it serves the local model (the `tee` path).
    enclave: Option<Arc<crate::enclave::EnclaveSupervisor>>,
    http: reqwest::Client,
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

impl ChatGateway {
    /// The node's providers: the local model when it has one, and `upstream` ones.
    pub fn new(
        local: Option<Arc<LocalModel>>,
        enclave: Option<Arc<crate::enclave::EnclaveSupervisor>>,
        upstream: Vec<(Provider, Duration)>,
        http: reqwest::Client,
    ) -> Result<ChatGateway, String> {
        let mut providers = Vec::new();
        if local.is_some() {
            let mut paths = vec![PathClass::Standard];
            if enclave.is_some() {
                paths.push(PathClass::Tee);
            }
            providers.push(Provider {
                name: LOCAL_PROVIDER.into(),
                kind: ProviderKind::Local,
                models: vec![LOCAL_MODEL_ID.into()],
                paths,
                fallback: None,
            });
        }
        let mut upstreams = HashMap::new();
        for (p, timeout) in upstream {
            if providers.iter().any(|q: &Provider| q.name == p.name) {
                return Err(format!("--provider: {} is configured twice", p.name));
            }
            if let ProviderKind::OpenAi { base_url, key_env } = &p.kind {
                let api_key =
                    match key_env {
                        None => None,
                        Some(var) => Some(std::env::var(var).map_err(|_| {
                            format!("--provider {}: key_env={var} is not set", p.name)
                        })?),
                    };
                upstreams.insert(
                    p.name.clone(),
                    Upstream {
                        name: p.name.clone(),
                        base_url: base_url.clone(),
                        api_key,
                        timeout,
                        http: http.clone(),
                    },
                );
            }
            providers.push(p);
        }
        for p in &providers {
            if let Some(f) = &p.fallback {
                if !providers.iter().any(|q| &q.name == f) {
                    return Err(format!(
                        "--provider {}: fallback={f} is not configured",
                        p.name
                    ));
                }
            }
        }
        Ok(ChatGateway {
            providers,
            upstreams,
            local,
            enclave,
            http,
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
                    if let Some(local) = &self.local {
                        let h = &mut entry["haca"];
                        h["context_length"] = CONTEXT_LIMIT.into();
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
    pub async fn precheck(&self, call: &Call, routes: &[Route]) -> Result<(), ApiError> {
        let (Some(first), Some(local)) = (routes.first(), &self.local) else {
            return Ok(());
        };
        if first.provider != LOCAL_PROVIDER {
            return Ok(());
        }
        let llm = local.ready().await?;
        let prompt = match call {
            Call::Chat(c) => llm.chat_prompt(&c.messages, c.tools.as_ref(), &c.tool_choice),
            Call::Completion(c) => llm.text_prompt(&c.prompt),
        }
        .map_err(llm_error)?;
        if prompt.len() >= CONTEXT_LIMIT {
            return Err(llm_error(LlmError::ContextTooLong {
                tokens: prompt.len(),
                limit: CONTEXT_LIMIT,
            }));
        }
        Ok(())
    }

    pub fn plan(&self, call: &Call) -> Result<Vec<Route>, ApiError> {
        router::plan(&self.providers, call.model(), call.privacy()).map_err(|e| {
            let msg = e.to_string();
            match e {
                RouteError::PrivacyUnmet { .. } => {
                    ApiError::bad_request("privacy_unmet", msg).param("privacy")
                }
                _ => ApiError::not_found("model_not_found", format!("model: {msg}")).param("model"),
            }
        })
    }
}

/// A chat or completion call.
#[derive(Clone)]
// One per request, moved not stored: boxing the larger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Call {
    Chat(ChatRequest),
    Completion(CompletionRequest),
}

impl Call {
    pub fn model(&self) -> &str {
        match self {
            Call::Chat(c) => &c.model,
            Call::Completion(c) => &c.model,
        }
    }
    pub fn privacy(&self) -> Privacy {
        match self {
            Call::Chat(c) => c.privacy,
            Call::Completion(c) => c.privacy,
        }
    }
    pub fn stream(&self) -> bool {
        match self {
            Call::Chat(c) => c.stream,
            Call::Completion(c) => c.stream,
        }
    }
    pub fn include_usage(&self) -> bool {
        match self {
            Call::Chat(c) => c.include_usage,
            Call::Completion(c) => c.include_usage,
        }
    }
    fn raw(&self) -> &Value {
        match self {
            Call::Chat(c) => &c.raw,
            Call::Completion(c) => &c.raw,
        }
    }
    fn sampling(&self) -> &haca_exec::llm::chat::Sampling {
        match self {
            Call::Chat(c) => &c.sampling,
            Call::Completion(c) => &c.sampling,
        }
    }
    pub fn conversation(&self) -> Option<&str> {
        match self {
            Call::Chat(c) => c.conversation.as_deref(),
            Call::Completion(_) => None,
        }
    }
    fn upstream_path(&self) -> &'static str {
        match self {
            Call::Chat(_) => "/chat/completions",
            Call::Completion(_) => "/completions",
        }
    }
    /// Whether the local model answers with tool calls rather than text.
    fn local_tools(&self) -> bool {
        match self {
            Call::Chat(c) => c.tools.is_some() && c.tool_choice != ToolChoice::None,
            Call::Completion(_) => false,
        }
    }
}

/// What haca signs about the request, fixed before any route is tried: its hash, the input's
/// hash and the run id derived from them.
#[derive(Clone, Copy)]
pub struct CallStart {
    pub run_id: RunId,
    pub request_hash: Digest,
    pub input_hash: Digest,
    pub started_at: u64,
}

/// The request haca signs: the client's body without the transport fields (`stream`,
/// `stream_options`) and with `privacy` always present, so the requirement is part of it.
pub fn signed_request(call: &Call) -> Value {
    let mut body = call.raw().clone();
    if let Some(o) = body.as_object_mut() {
        o.remove("stream");
        o.remove("stream_options");
        o.insert("privacy".into(), call.privacy().as_str().into());
        o.insert(
            "kind".into(),
            match call {
                Call::Chat(_) => "chat",
                Call::Completion(_) => "completion",
            }
            .into(),
        );
    }
    body
}

/// SHA-256 of a value's canonical JSON (RFC 8785).
pub fn hash_json(v: &Value) -> Result<Digest, ApiError> {
    canonical::to_vec(v)
        .map(|b| sha256(&b))
        .map_err(|e| ApiError::bad_request("invalid_input", format!("body: {e}")))
}

/// What a chat run outputs, as its output hash covers it.
pub fn output_json(content: &str, tool_calls: &[Value], finish_reason: &str) -> Value {
    json!({"content": content, "tool_calls": tool_calls, "finish_reason": finish_reason})
}

impl CallStart {
    /// The request hash (of [`signed_request`]) and the input hash (of the messages, or the
    /// prompt).
    pub fn hashes(call: &Call) -> Result<(Digest, Digest), ApiError> {
        let request_hash = hash_json(&signed_request(call))?;
        let input = match call {
            Call::Chat(c) => c.raw["messages"].clone(),
            Call::Completion(c) => c.prompt.clone().into(),
        };
        Ok((request_hash, hash_json(&input)?))
    }

    pub fn new(gw: &Gateway, call: &Call) -> Result<CallStart, ApiError> {
        let (request_hash, input_hash) = Self::hashes(call)?;
        let mut nonce = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        Ok(CallStart {
            run_id: RunId::derive(&request_hash, &gw.key.node_id(), &nonce),
            request_hash,
            input_hash,
            started_at: now_ms(),
        })
    }
}

/// Where a streamed answer's pieces go: OpenAI delta objects (`{"content": ...}` or
/// `{"tool_calls": [...]}`). A failed send means the client went away.
pub type Sink = mpsc::UnboundedSender<Value>;

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

/// What an enclave's answer carries beyond the text.
pub struct EnclaveEvidence {
    pub attestation: AttestationEvidence,
    pub tee: haca_tee::og_compat::TeeFields,
    pub finished_at: u64,
    pub output_hash: Digest,
}

/// A route's failure: what to tell the client and whether the next route may take over.
struct AttemptFailure {
    error: ApiError,
    retryable: bool,
    /// Text of the answer the client already received from this attempt.
    partial: String,
}

impl AttemptFailure {
    /// A failure before any text reached the client.
    fn before_output(error: ApiError, retryable: bool) -> Self {
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
    pub error: ApiError,
    pub attempts: Vec<RouteAttempt>,
}

impl ChatGateway {
    /// Tries `routes` in order and commits the served answer's receipt.
    #[allow(clippy::too_many_arguments)]
    pub async fn serve(
        &self,
        gw: &Gateway,
        call: &Call,
        routes: Vec<Route>,
        start: CallStart,
        settlement: haca_core::settlement::SettlementMode,
        payment: Option<PaymentEvidence>,
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
                        f.error.message
                    );
                    attempts.push(RouteAttempt {
                        provider: route.provider.clone(),
                        path,
                        outcome: "failed".into(),
                        error: Some(f.error.message.clone()),
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
            let mut error = last_error.unwrap_or_else(|| ApiError::internal("no route was tried"));
            if call.privacy() != Privacy::Any {
                error.message = format!(
                    "{} (privacy: {}: no other route that meets it could take over, so none did)",
                    error.message,
                    call.privacy().as_str()
                );
            }
            return Err(Failed { error, attempts });
        };
        produced.content = format!("{partial}{}", produced.content);
        let output = output_json(
            &produced.content,
            &produced.tool_calls,
            &produced.finish_reason,
        );
        let fail = |error: ApiError, attempts: &Vec<RouteAttempt>| Failed {
            error,
            attempts: attempts.clone(),
        };
        let output_hash = hash_json(&output).map_err(|e| fail(e, &attempts))?;
        let mut finished_at = now_ms();
        let mut tee = None;
        let mut attestation = None;
        if let Some(ev) = produced.enclave.take() {
            if ev.output_hash != output_hash {
                let e = ApiError::internal(
                    "the enclave's output does not hash to the output hash it signed",
                );
                return Err(fail(e, &attempts));
            }
            // The enclave signed its own finishing time; the execution box must say the same.
            finished_at = ev.finished_at;
            tee = Some(ev.tee);
            attestation = Some(ev.attestation);
        }
        let node = gw.key.node_id();
        let mut receipt = Receipt::new(start.run_id, finished_at);
        receipt.settlement_mode = Some(settlement);
        let blob_id = produced
            .artifact
            .as_ref()
            .map(|a| a.blob_id.to_string())
            .unwrap_or_default();
        if let Some(a) = produced.artifact.take() {
            receipt.boxes.artifact = EvidenceBox::with(a, BoxStatus::Claimed, start.started_at);
        }
        if let Some(att) = attestation {
            let at = att.timestamp;
            receipt.boxes.attestation = EvidenceBox::with(att, BoxStatus::Claimed, at);
        }
        receipt.boxes.route = EvidenceBox::with(
            RouteEvidence {
                provider: format!("{}/{}", route.provider, route.model),
                node,
                path: route.path.receipt_path(),
                policy: call.privacy().as_str().into(),
                attempts: attempts.clone(),
            },
            BoxStatus::Claimed,
            start.started_at,
        );
        let mode = if route.path == PathClass::Tee {
            ExecMode::Tee
        } else {
            ExecMode::Vanilla
        };
        receipt.boxes.execution = EvidenceBox::with(
            ExecutionEvidence {
                mode,
                runtime: produced.runtime.clone(),
                request_hash: start.request_hash,
                input_hash: start.input_hash,
                output_hash,
                signer: node,
                started_at: start.started_at,
                finished_at,
                signature: None,
            },
            BoxStatus::Claimed,
            finished_at,
        );
        if let Some(p) = payment {
            let at = p.verified_at;
            receipt.boxes.payment = EvidenceBox::with(p, BoxStatus::Claimed, at);
        }
        let turn = conversation.as_ref().map(|c| haca_store::ChatTurn {
            conversation: c.clone(),
            model: call.model().to_owned(),
            provider: format!("{}/{}", route.provider, route.model),
            path: path_name(route.path.receipt_path()).into(),
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
                },
            )
            .await
            .map_err(|e| fail(e, &attempts))?;
        Ok(Served {
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
                self.attempt_enclave(call, start, partial, sink).await
            }
            ProviderKind::Local => self.attempt_local(call, partial, sink).await,
            ProviderKind::OpenAi { .. } => {
                let up = &self.upstreams[&route.provider];
                attempt_upstream(up, route, call, sink).await
            }
        }
    }

    /// The local model inside the dev enclave: an attested answer, sent whole.
    async fn attempt_enclave(
        &self,
        call: &Call,
        start: &CallStart,
        partial: &str,
        sink: Option<&Sink>,
    ) -> Result<Produced, AttemptFailure> {
        let failure = AttemptFailure::before_output;
        let Call::Chat(c) = call else {
            return Err(failure(
                ApiError::bad_request(
                    "privacy_unmet",
                    "the enclave serves chat completions, not /v1/completions",
                )
                .param("privacy"),
                false,
            ));
        };
        if !partial.is_empty() {
            return Err(failure(
                ApiError::internal("the enclave cannot continue another route's answer"),
                false,
            ));
        }
        let url = self.enclave.as_ref().and_then(|e| e.url()).ok_or_else(|| {
            failure(
                ApiError::unavailable("enclave_down", "the enclave is restarting; try again"),
                true,
            )
        })?;
        let resp = self
            .http
            .post(format!("{url}/chat"))
            .json(&json!({"body": c.raw}))
            .send()
            .await
            .map_err(|e| {
                failure(
                    ApiError::unavailable(
                        "enclave_down",
                        format!("the enclave did not answer: {e}"),
                    ),
                    true,
                )
            })?;
        let status = resp.status();
        let v: Value = resp.json().await.map_err(|e| {
            failure(
                ApiError::internal(format!("the enclave's answer is not JSON: {e}")),
                true,
            )
        })?;
        if !status.is_success() {
            let msg = v["error"]["message"]
                .as_str()
                .unwrap_or("no reason given")
                .to_owned();
            return Err(failure(
                if status.is_client_error() {
                    ApiError::bad_request("enclave_refused", msg)
                } else {
                    ApiError::internal(format!("the enclave failed: {msg}"))
                },
                status.is_server_error(),
            ));
        }
        let bad = |what: &str| {
            failure(
                ApiError::internal(format!("the enclave's answer lacks a valid {what}")),
                false,
            )
        };
        let digest =
            |field: &str| -> Option<Digest> { v[field].as_str().and_then(|s| s.parse().ok()) };
        if digest("request_hash") != Some(start.request_hash)
            || digest("input_hash") != Some(start.input_hash)
        {
            return Err(failure(
                ApiError::internal("the enclave hashed another request than the gateway sent"),
                false,
            ));
        }
        let (attestation, tee) =
            crate::gateway::enclave_evidence(&v).map_err(|e| failure(e, false))?;
        let blob_id: haca_core::BlobId = v["blob_id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("blob_id"))?;
        let out = &v["output"];
        let content = out["content"]
            .as_str()
            .ok_or_else(|| bad("output.content"))?
            .to_owned();
        let tool_calls = out["tool_calls"].as_array().cloned().unwrap_or_default();
        let finish_reason = out["finish_reason"].as_str().unwrap_or("stop").to_owned();
        if let Some(s) = sink {
            send_whole(s, &content, &tool_calls);
        }
        Ok(Produced {
            content,
            tool_calls,
            finish_reason,
            prompt_tokens: v["usage"]["prompt_tokens"].as_u64().unwrap_or(0),
            completion_tokens: v["usage"]["completion_tokens"].as_u64().unwrap_or(0),
            runtime: format!("dev-enclave/{LLM_RUNTIME}"),
            artifact: Some(local_artifact(blob_id)),
            enclave: Some(EnclaveEvidence {
                attestation,
                tee,
                finished_at: v["finished_at"]
                    .as_u64()
                    .ok_or_else(|| bad("finished_at"))?,
                output_hash: digest("output_hash").ok_or_else(|| bad("output_hash"))?,
            }),
        })
    }

    async fn attempt_local(
        &self,
        call: &Call,
        partial: &str,
        sink: Option<&Sink>,
    ) -> Result<Produced, AttemptFailure> {
        let failure = AttemptFailure::before_output;
        let local = self.local.as_ref().ok_or_else(|| {
            failure(
                ApiError::unavailable("model_unavailable", "this node has no local model"),
                true,
            )
        })?;
        let llm = local.ready().await.map_err(|e| failure(e, true))?;
        let call2 = call.clone();
        let partial = partial.to_owned();
        let sink = sink.cloned();
        let llm2 = llm.clone();
        let a = tokio::task::spawn_blocking(move || generate_local(&llm2, &call2, &partial, sink))
            .await
            .map_err(|e| failure(ApiError::internal(format!("generator stopped: {e}")), true))?
            .map_err(|e| failure(e, false))?;
        Ok(Produced {
            content: a.content,
            tool_calls: a.tool_calls,
            finish_reason: a.finish_reason,
            prompt_tokens: a.prompt_tokens,
            completion_tokens: a.completion_tokens,
            runtime: LLM_RUNTIME.into(),
            artifact: Some(local_artifact(llm.blob_id)),
            enclave: None,
        })
    }
}

/// A local model's answer.
pub struct LocalAnswer {
    pub content: String,
    pub tool_calls: Vec<Value>,
    pub finish_reason: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// The local model's artifact box.
pub fn local_artifact(blob_id: haca_core::BlobId) -> ArtifactEvidence {
    ArtifactEvidence {
        label: Some(LOCAL_MODEL.into()),
        revision: None,
        blob_id,
        format: "gguf".into(),
    }
}

/// Answers `call` on the local model, continuing `partial` (another route's words), sending
/// text to `sink` as it is generated. Blocking: the gateway runs it on the blocking pool, the
/// dev enclave too.
pub fn generate_local(
    llm: &LocalLlm,
    call: &Call,
    partial: &str,
    sink: Option<Sink>,
) -> Result<LocalAnswer, ApiError> {
    let sampling = call.sampling();
    let (mut prompt, json) = match call {
        Call::Chat(c) => (
            llm.chat_prompt(&c.messages, c.tools.as_ref(), &c.tool_choice)
                .map_err(llm_error)?,
            LocalLlm::json_prefix(&c.response_format, &c.tool_choice)
                .filter(|_| call.local_tools() || c.response_format != ResponseFormat::Text),
        ),
        Call::Completion(c) => (llm.text_prompt(&c.prompt).map_err(llm_error)?, None),
    };
    // Another route's partial answer, then any forced JSON start, are the model's own
    // words so far.
    for text in [partial, json.as_deref().unwrap_or_default()] {
        if !text.is_empty() {
            prompt.extend(llm.encode(text).map_err(llm_error)?);
        }
    }
    let params = GenerateParams {
        max_tokens: sampling
            .max_tokens
            .map(|m| m as usize)
            .unwrap_or(DEFAULT_MAX_TOKENS),
        min_tokens: sampling.min_tokens.unwrap_or(0) as usize,
        temperature: sampling.temperature.unwrap_or(DEFAULT_TEMPERATURE),
        top_p: sampling.top_p.unwrap_or(DEFAULT_TOP_P),
        seed: sampling.seed.unwrap_or_else(rand::random),
        stop: sampling.stop.clone(),
        json,
    };
    // With tools the answer may turn out to be a call: it is sent whole at the end.
    let buffered = call.local_tools();
    let generated = llm
        .generate(&prompt, &params, &mut |piece| match &sink {
            Some(s) if !buffered => s.send(json!({"content": piece})).is_ok(),
            _ => true,
        })
        .map_err(llm_error)?;
    tracing::info!(
        "{LOCAL_MODEL}: {} prompt tokens in {} ms, {} tokens at {:.1} tokens/s ({})",
        generated.prompt_tokens,
        generated.prefill.as_millis(),
        generated.completion_tokens,
        generated.tokens_per_second(),
        generated.finish_reason.as_str()
    );
    let mut content = generated.text;
    let mut tool_calls = Vec::new();
    let mut finish_reason = match generated.finish_reason {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::Cancelled => "cancelled",
    }
    .to_owned();
    if let Call::Chat(c) = call {
        if call.local_tools() {
            if let Some(tc) = as_tool_call(&content, c.tools.as_ref()) {
                tool_calls.push(tc);
                content.clear();
                finish_reason = "tool_calls".into();
            }
            if let Some(s) = &sink {
                send_whole(s, &content, &tool_calls);
            }
        }
    }
    Ok(LocalAnswer {
        content,
        tool_calls,
        finish_reason,
        prompt_tokens: generated.prompt_tokens as u64,
        completion_tokens: generated.completion_tokens as u64,
    })
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
            let retryable = e.retryable();
            let error = match &e {
                UpstreamError::Timeout { .. } => ApiError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "upstream_timeout",
                    e.to_string(),
                ),
                UpstreamError::Status { status, .. }
                    if (400..500).contains(status) && !retryable =>
                {
                    ApiError::bad_request("upstream_refused", e.to_string())
                }
                UpstreamError::Cancelled => ApiError::bad_request("client_gone", e.to_string()),
                _ => ApiError::new(StatusCode::BAD_GATEWAY, "upstream_failed", e.to_string()),
            };
            Err(AttemptFailure {
                error,
                retryable,
                // Only what the client actually received counts as said.
                partial: if sink.is_some() { sent } else { String::new() },
            })
        }
    }
}

/// Sends an answer made whole (in the enclave, or held back because it may be a tool call) as
/// one delta: its text, or its tool calls.
fn send_whole(sink: &Sink, content: &str, tool_calls: &[Value]) {
    let delta = if tool_calls.is_empty() {
        json!({"content": content})
    } else {
        let mut calls = tool_calls.to_vec();
        calls[0]["index"] = 0.into();
        json!({"tool_calls": calls})
    };
    // A closed sink means the client went away; the run is recorded all the same.
    let _ = sink.send(delta);
}

/// The answer as a tool call, when it is one JSON object naming one of the tools.
fn as_tool_call(text: &str, tools: Option<&Value>) -> Option<Value> {
    let v: Value = serde_json::from_str(text.trim()).ok()?;
    let name = v["name"].as_str()?;
    let known = tools?
        .as_array()?
        .iter()
        .any(|t| t["function"]["name"] == name);
    if !known {
        return None;
    }
    let args = v.get("arguments").cloned().unwrap_or(json!({}));
    Some(json!({
        "id": format!("call_{}", crate::random_hex(12)),
        "type": "function",
        "function": {"name": name, "arguments": args.to_string()},
    }))
}

fn llm_error(e: LlmError) -> ApiError {
    match e {
        LlmError::ContextTooLong { .. } => {
            ApiError::bad_request("context_length_exceeded", e.to_string()).param("messages")
        }
        LlmError::Load(m) => ApiError::unavailable("model_unavailable", m),
        LlmError::Run(m) => ApiError::internal(m),
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
