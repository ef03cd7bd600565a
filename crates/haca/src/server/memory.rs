//! MemSync's REST shape over the gateway's [`MemSync`]: `POST /v1/memories` (extract from a
//! conversation, or add memories as given), `POST /v1/memories/search`, `GET /v1/memories`,
//! `PATCH`/`DELETE /v1/memories/{id}`, `GET /v1/profile`, `GET`/`PATCH /v1/profile/bio`, and
//! `POST /v1/memories/export` / `import`, which MemSync lacks.
//!
//! A user is an API key (`X-API-Key: hk_...`, as MemSync's clients send it, or
//! `Authorization: Bearer hk_...`) or an x402 payer that signed [`memory_key_message`]
//! (`X-HACA-Memory-Address` and `X-HACA-Memory-Signature`). The credential both proves the
//! user and derives the key the rows are sealed under; the node never stores it.

use super::error::ApiError;
use super::extract::JsonBody;
use super::AppState;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::{request::Parts, StatusCode};
use axum::Json;
use haca_gateway::memory::{
    memory_key_message, AddReport, MemSync, MemUser, NewMemory, Scope, SearchQuery,
};
use haca_mem::extract::{extract_rules, Message};
use haca_mem::{Bundle, Category, MemoryRow, RowState};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Instant;

type S = State<Arc<AppState>>;

/// MemSync's API key header.
pub const API_KEY_HEADER: &str = "x-api-key";
/// An x402 payer's address, and its EIP-191 signature of [`memory_key_message`].
pub const MEMORY_ADDRESS_HEADER: &str = "x-haca-memory-address";
pub const MEMORY_SIGNATURE_HEADER: &str = "x-haca-memory-signature";

fn unauthorized(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
}

pub(super) fn memsync(st: &AppState) -> Result<&Arc<MemSync>, ApiError> {
    st.memory.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "memory_unavailable",
            format!(
                "this node serves no memory: its embedding model is not installed ({})",
                haca_exec::llm::model_home::EMBED_INSTALL_HINT
            ),
        )
    })
}

/// The MemSync user a request's headers prove.
pub struct MemoryUser(pub MemUser);

impl FromRequestParts<Arc<AppState>> for MemoryUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &Arc<AppState>) -> Result<Self, ApiError> {
        user_of(&parts.headers, st).map(MemoryUser)
    }
}

/// The user `headers` prove: an API key (X-API-Key or a bearer hk_ token), or a payer's memory
/// signature.
pub fn user_of(headers: &axum::http::HeaderMap, st: &AppState) -> Result<MemUser, ApiError> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let api_key = text(API_KEY_HEADER)
        .map(str::trim)
        .or_else(|| super::extract::bearer(headers).filter(|t| t.starts_with("hk_")));
    if let Some(key) = api_key {
        let row = haca_gateway::payment::presented_api_key(&st.gateway.store, Some(key))?
            .ok_or_else(|| {
                unauthorized(format!(
                    "header {API_KEY_HEADER}: not an API key of this node (hk_...; create one: haca apikey create)"
                ))
            })?;
        return Ok(MemUser::new(&row.account, key.as_bytes()));
    }
    match (text(MEMORY_ADDRESS_HEADER), text(MEMORY_SIGNATURE_HEADER)) {
        (Some(address), Some(sig)) => {
            let claimed: haca_pay::Address = address.trim().parse().map_err(|e| {
                unauthorized(format!(
                    "header {MEMORY_ADDRESS_HEADER}: not an address: {e}"
                ))
            })?;
            let owner = format!("{claimed:#x}");
            let signer =
                haca_pay::proof::recover_message_signer(&memory_key_message(&owner), sig.trim())
                    .map_err(|e| unauthorized(format!("header {MEMORY_SIGNATURE_HEADER}: {e}")))?;
            if signer != claimed {
                return Err(unauthorized(format!(
                    "header {MEMORY_SIGNATURE_HEADER}: signed by {signer:#x}, not by {owner}"
                )));
            }
            // The credential is the signature itself: deterministic, so the same on every node.
            let raw = sig.trim().to_ascii_lowercase();
            Ok(MemUser::new(&owner, raw.as_bytes()))
        }
        _ => Err(unauthorized(format!(
            "send an API key ({API_KEY_HEADER}: hk_...) or an x402 payer's memory signature \
             ({MEMORY_ADDRESS_HEADER} and {MEMORY_SIGNATURE_HEADER}: its EIP-191 signature of \
             \"{}\")",
            memory_key_message("<address>")
        ))),
    }
}

/// `POST /v1/memories`: MemSync's `{messages, agent_id, thread_id, source, metadata}`, or haca's
/// `memories: [{memory, type, categories, subject}]` added as they are.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddRequest {
    #[serde(default)]
    messages: Vec<Message>,
    #[serde(default)]
    memories: Vec<NewMemory>,
    #[serde(default)]
    agent_id: Option<String>,
    #[serde(default)]
    thread_id: Option<String>,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    metadata: Option<Value>,
}

fn add_answer(report: &AddReport, started: Instant) -> Value {
    json!({
        "success": true,
        "memories_created": report.created.len(),
        "processing_time": started.elapsed().as_secs_f64(),
        "categories_detected": report.categories,
        "created": report.created,
        "revalidated": report.revalidated,
        "superseded": report.superseded.iter().map(|(old, new)| json!({"id": old, "by": new})).collect::<Vec<_>>(),
    })
}

pub async fn add(
    State(st): S,
    MemoryUser(user): MemoryUser,
    JsonBody(req): JsonBody<AddRequest>,
) -> Result<Json<Value>, ApiError> {
    let started = Instant::now();
    let mem = memsync(&st)?;
    if req.messages.is_empty() && req.memories.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_field",
            "messages: give the conversation to remember (or memories to add as they are)",
        )
        .param("messages"));
    }
    // MemSync's `source` and `metadata` describe the call; haca keeps neither.
    let _ = (&req.source, &req.metadata);
    let scope = Scope {
        agent_id: req.agent_id,
        thread_id: req.thread_id,
    };
    let mut items = req.memories;
    let extraction = extract(&st, mem, &req.messages).await;
    items.extend(extraction.items);
    let report = mem
        .add(&user, items, extraction.run.as_deref(), &scope)
        .await?;
    let mut answer = add_answer(&report, started);
    answer["extractor"] = json!(extraction.extractor);
    answer["extraction_run"] = json!(extraction.run);
    Ok(Json(answer))
}

/// What extraction found, who found it, and the run that did when a model did.
pub struct Extraction {
    pub items: Vec<NewMemory>,
    pub extractor: String,
    pub run: Option<String>,
}

/// Memories in `messages`: by the node's extraction model when it has one (the call is a run
/// with its own receipt), else by rules. A model that fails or answers what does not parse
/// leaves the rules to do it, and the answer says so.
pub async fn extract(st: &AppState, mem: &MemSync, messages: &[Message]) -> Extraction {
    let rules = |why: Option<String>| Extraction {
        items: extract_rules(messages),
        extractor: match why {
            None => "rules".into(),
            Some(w) => format!("rules ({w})"),
        },
        run: None,
    };
    if messages.is_empty() {
        return rules(None);
    }
    let (Some(model), Some(chat)) = (mem.config.extractor.clone(), st.chat.clone()) else {
        return rules(None);
    };
    match extract_with_model(st, &chat, &model, messages).await {
        Ok((items, run)) => Extraction {
            items,
            extractor: model,
            run: Some(run),
        },
        Err(e) => {
            tracing::warn!("memory extraction by {model} failed, rules instead: {e}");
            rules(Some(format!("{model} failed: {e}")))
        }
    }
}

async fn extract_with_model(
    st: &AppState,
    chat: &haca_gateway::chat::ChatGateway,
    model: &str,
    messages: &[Message],
) -> Result<(Vec<NewMemory>, String), String> {
    use haca_exec::llm::{Call, ChatRequest};
    let prompt = haca_mem::extract::llm_extraction_prompt(messages);
    // A list of a conversation's memories fits in 256 tokens; a model that rambles past it
    // gives an answer that does not parse, and the rules take over.
    let body = json!({"model": model, "messages": prompt, "max_tokens": 256, "temperature": 0});
    let call = Call::Chat(ChatRequest::parse(body).map_err(|e| e.to_string())?);
    let routes = chat.plan(&call).map_err(|e| e.message().to_owned())?;
    let start = haca_gateway::chat::CallStart::new(&st.gateway, &call)
        .map_err(|e| e.message().to_owned())?;
    let run = start.run_id.to_string();
    let served = chat
        .serve(
            &st.gateway,
            &call,
            routes,
            start,
            // The answer is the user's memories in plaintext: a private run keeps only hashes.
            haca_core::settlement::SettlementMode::Private,
            haca_gateway::chat::ChatPayment::Charged(None),
            None,
            None,
        )
        .await
        .map_err(|f| f.error.message().to_owned())?;
    let items =
        haca_mem::extract::parse_llm_extraction(&served.content).map_err(|e| e.to_string())?;
    Ok((items, run))
}

/// `POST /v1/memories/search`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    query: String,
    #[serde(default = "default_limit")]
    limit: i64,
    #[serde(default)]
    categories: Vec<Category>,
    #[serde(default)]
    rerank: bool,
    #[serde(default)]
    include_bio: bool,
    #[serde(default)]
    agent_id: Option<String>,
    #[serde(default)]
    thread_id: Option<String>,
}

fn default_limit() -> i64 {
    10
}

fn row_json(r: &MemoryRow) -> Value {
    let (state, by) = match &r.state {
        RowState::Live => ("live", None),
        RowState::Superseded { by, .. } => ("superseded", Some(by.clone())),
        RowState::Deleted { .. } => ("deleted", None),
    };
    json!({
        "id": r.id,
        "memory": r.memory,
        "categories": r.categories,
        "type": r.memory_type,
        "subject": r.subject,
        "state": state,
        "superseded_by": by,
        "supersedes": r.supersedes,
        "created_at": r.created_at,
        "source_run": r.source_run,
        "valid_from": r.valid_from,
        "valid_until": r.valid_until,
        "last_validated_at": r.last_validated_at,
        "last_validated_run": r.last_validated_run,
        "agent_id": r.agent_id,
        "thread_id": r.thread_id,
    })
}

/// Query words that appear in the memory, as a share of the query's words: the reranker's
/// lexical half.
fn overlap(query: &str, text: &str) -> f64 {
    let words = |s: &str| -> Vec<String> {
        s.split(|c: char| !c.is_alphanumeric())
            .filter(|w| w.len() > 2)
            .map(str::to_lowercase)
            .collect()
    };
    let q = words(query);
    if q.is_empty() {
        return 0.0;
    }
    let t = words(text);
    q.iter().filter(|w| t.contains(w)).count() as f64 / q.len() as f64
}

pub async fn search(
    State(st): S,
    MemoryUser(user): MemoryUser,
    JsonBody(req): JsonBody<SearchRequest>,
) -> Result<Json<Value>, ApiError> {
    let mem = memsync(&st)?;
    if !(1..=100).contains(&req.limit) {
        return Err(
            ApiError::bad_request("invalid_field", "limit: must be from 1 to 100").param("limit"),
        );
    }
    if req.query.trim().is_empty() {
        return Err(ApiError::bad_request("invalid_field", "query: is empty").param("query"));
    }
    let hits = mem
        .search(
            &user,
            &SearchQuery {
                query: req.query.clone(),
                limit: req.limit as usize,
                categories: req.categories,
                scope: Scope {
                    agent_id: req.agent_id,
                    thread_id: req.thread_id,
                },
            },
        )
        .await?;
    let mut memories: Vec<(f64, Value)> = hits
        .iter()
        .map(|h| {
            let rerank = req
                .rerank
                .then(|| 0.8 * h.similarity as f64 + 0.2 * overlap(&req.query, &h.row.memory));
            let mut v = row_json(&h.row);
            v["vector_distance"] = json!(1.0 - h.similarity as f64);
            v["rerank_score"] = json!(rerank);
            v["stale"] = json!(h.stale);
            (rerank.unwrap_or(h.similarity as f64), v)
        })
        .collect();
    if req.rerank {
        memories.sort_by(|a, b| b.0.total_cmp(&a.0));
    }
    let user_bio = if req.include_bio {
        mem.bio(&user).await?
    } else {
        None
    };
    Ok(Json(json!({
        "user_bio": user_bio,
        "memories": memories.into_iter().map(|(_, v)| v).collect::<Vec<_>>(),
    })))
}

/// `GET /v1/memories`: every row, live, superseded and deleted, with provenance.
pub async fn list(State(st): S, MemoryUser(user): MemoryUser) -> Result<Json<Value>, ApiError> {
    let rows = memsync(&st)?.list(&user).await?;
    Ok(Json(json!({
        "owner": user.owner,
        "memories": rows.iter().map(row_json).collect::<Vec<_>>(),
    })))
}

/// `PATCH /v1/memories/{id}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateRequest {
    #[serde(default)]
    memory: Option<String>,
    #[serde(default)]
    categories: Option<Vec<Category>>,
}

pub async fn update(
    State(st): S,
    MemoryUser(user): MemoryUser,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<UpdateRequest>,
) -> Result<Json<Value>, ApiError> {
    if req.memory.is_none() && req.categories.is_none() {
        return Err(ApiError::bad_request(
            "invalid_field",
            "memory: give the new text (or categories)",
        )
        .param("memory"));
    }
    let new_id = memsync(&st)?
        .update(&user, &id, req.memory, req.categories)
        .await?;
    Ok(Json(
        json!({"success": true, "id": new_id, "supersedes": id}),
    ))
}

/// `DELETE /v1/memories/{id}`.
pub async fn delete(
    State(st): S,
    MemoryUser(user): MemoryUser,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    memsync(&st)?.delete(&user, &id).await?;
    Ok(Json(json!({"success": true, "deleted": id})))
}

/// `GET /v1/profile`: the bio, and the live memories by category and type.
pub async fn profile(State(st): S, MemoryUser(user): MemoryUser) -> Result<Json<Value>, ApiError> {
    let mem = memsync(&st)?;
    let rows = mem.list(&user).await?;
    let live: Vec<&MemoryRow> = rows.iter().filter(|r| r.state.is_live()).collect();
    let mut by_category = serde_json::Map::new();
    for c in Category::ALL {
        let n = live.iter().filter(|r| r.categories.contains(&c)).count();
        if n > 0 {
            by_category.insert(
                serde_json::to_value(c)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                n.into(),
            );
        }
    }
    let episodic = live
        .iter()
        .filter(|r| r.memory_type == haca_mem::MemoryType::Episodic)
        .count();
    Ok(Json(json!({
        "owner": user.owner,
        "user_bio": mem.bio(&user).await?,
        "memories": live.len(),
        "semantic": live.len() - episodic,
        "episodic": episodic,
        "superseded": rows.iter().filter(|r| matches!(r.state, RowState::Superseded { .. })).count(),
        "deleted": rows.iter().filter(|r| matches!(r.state, RowState::Deleted { .. })).count(),
        "categories": by_category,
    })))
}

pub async fn get_bio(State(st): S, MemoryUser(user): MemoryUser) -> Result<Json<Value>, ApiError> {
    let bio = memsync(&st)?.bio(&user).await?;
    Ok(Json(json!({"user_bio": bio})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BioRequest {
    bio: String,
}

pub async fn set_bio(
    State(st): S,
    MemoryUser(user): MemoryUser,
    JsonBody(req): JsonBody<BioRequest>,
) -> Result<Json<Value>, ApiError> {
    memsync(&st)?.set_bio(&user, &req.bio).await?;
    Ok(Json(json!({"success": true, "user_bio": req.bio})))
}

/// `POST /v1/memories/export`: the rows as a bundle this node signs, sealed under a new key
/// that is in this answer only.
pub async fn export(State(st): S, MemoryUser(user): MemoryUser) -> Result<Json<Value>, ApiError> {
    let (bundle, key) = memsync(&st)?.export(&user).await?;
    Ok(Json(json!({"bundle": bundle, "key": key})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportRequest {
    bundle: Bundle,
    key: String,
}

/// `POST /v1/memories/import {bundle, key}`.
pub async fn import(
    State(st): S,
    MemoryUser(user): MemoryUser,
    JsonBody(req): JsonBody<ImportRequest>,
) -> Result<Json<Value>, ApiError> {
    let n = memsync(&st)?.import(&user, &req.bundle, &req.key).await?;
    Ok(Json(json!({
        "success": true,
        "imported": n,
        "signer": req.bundle.signer.to_string(),
        "from_owner": req.bundle.owner,
    })))
}

/// MemSync for a node: on when the embedding model is found (`explicit`, else
/// HACA_EMBED_MODEL, else `$HACA_HOME/models/all-MiniLM-L6-v2`); the model loads on first use.
pub fn start(
    explicit: Option<&std::path::Path>,
    extractor: Option<String>,
    gateway: &haca_gateway::Gateway,
) -> Result<Option<Arc<MemSync>>, String> {
    let Some(dir) = haca_exec::llm::model_home::find_embed_model(explicit)? else {
        tracing::info!(
            "memory: off (no embedding model: {})",
            haca_exec::llm::model_home::EMBED_INSTALL_HINT
        );
        return Ok(None);
    };
    tracing::info!("memory: on, embedding with {}", dir.display());
    Ok(Some(Arc::new(MemSync::new(
        gateway.store.clone(),
        gateway.log.clone(),
        gateway.key.clone(),
        Arc::new(haca_gateway::memory::LazyEmbedder::new(dir)),
        haca_gateway::memory::MemoryConfig {
            extractor,
            ..Default::default()
        },
    ))))
}

/// Most rows a chat call's `memory` may let in.
pub const MAX_RECALL: u64 = 20;

/// Whether `call` may use memory, and how many rows: refused before any payment when its
/// `memory` field is malformed, when it is a completion, or when it must run in an enclave
/// (the enclave signs the request the client sent, and retrieval happens outside it).
pub fn memory_of_call(call: &haca_exec::llm::Call) -> Result<Option<usize>, ApiError> {
    let Some(limit) = memory_request(call.raw())? else {
        return Ok(None);
    };
    let refuse = |why: &str| {
        Err(ApiError::bad_request("invalid_field", format!("memory: {why}")).param("memory"))
    };
    match call {
        haca_exec::llm::Call::Completion(_) => refuse("only chat calls use memory"),
        _ if call.privacy() == haca_exec::llm::Privacy::Tee => {
            refuse("not yet with privacy tee: retrieval runs in the gateway, outside the enclave")
        }
        _ => Ok(Some(limit)),
    }
}

/// A chat body's `memory` (haca's field): `true` (5 rows), `{limit: N}`, or absent / `false`.
pub fn memory_request(body: &Value) -> Result<Option<usize>, ApiError> {
    let bad = |reason: &str| {
        ApiError::bad_request("invalid_field", format!("memory: {reason}")).param("memory")
    };
    match body.get("memory") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => Ok(None),
        Some(Value::Bool(true)) => Ok(Some(5)),
        Some(Value::Object(o)) => {
            if let Some(k) = o.keys().find(|k| *k != "limit") {
                return Err(bad(&format!("unknown field {k:?} (known: limit)")));
            }
            match o.get("limit").map(Value::as_u64) {
                None => Ok(Some(5)),
                Some(Some(n)) if (1..=MAX_RECALL).contains(&n) => Ok(Some(n as usize)),
                Some(_) => Err(bad(&format!("limit must be from 1 to {MAX_RECALL}"))),
            }
        }
        Some(_) => Err(bad("true, false or {\"limit\": N}")),
    }
}

/// Lets the user's memory into a chat call: the rows nearest its last user message go in as a
/// system message ahead of the conversation; the call the client signed (its hashes) is
/// unchanged, and the memory box lists the rows.
pub async fn recall_into(
    st: &AppState,
    user: MemUser,
    call: haca_exec::llm::Call,
    limit: usize,
) -> Result<
    (
        haca_exec::llm::Call,
        haca_core::receipt::MemoryEvidence,
        Learning,
    ),
    ApiError,
> {
    use haca_exec::llm::{Call, ChatRequest};
    let mem = memsync(st)?;
    let Call::Chat(chat) = &call else {
        return Err(
            ApiError::bad_request("invalid_field", "memory: only chat calls use memory")
                .param("memory"),
        );
    };
    let query = chat
        .raw
        .get("messages")
        .and_then(Value::as_array)
        .and_then(|m| {
            m.iter()
                .rev()
                .find(|m| m["role"] == "user")
                .and_then(|m| m["content"].as_str())
        })
        .unwrap_or_default()
        .to_owned();
    let (hits, used) = mem.recall(&user, &query, limit).await?;
    let mut raw = chat.raw.clone();
    if let Some(o) = raw.as_object_mut() {
        o.remove("memory");
    }
    if !hits.is_empty() {
        let facts: Vec<String> = hits
            .iter()
            .map(|h| {
                format!(
                    "- {}{}",
                    h.row.memory,
                    if h.stale {
                        " (not confirmed lately)"
                    } else {
                        ""
                    }
                )
            })
            .collect();
        let note = json!({
            "role": "system",
            "content": format!("What you know about the user (their own memory):\n{}", facts.join("\n")),
        });
        if let Some(m) = raw.get_mut("messages").and_then(Value::as_array_mut) {
            m.insert(0, note);
        }
    }
    let with_memory = ChatRequest::parse(raw)?;
    Ok((
        Call::Chat(with_memory),
        used,
        Learning {
            mem: mem.clone(),
            user,
            said: query,
        },
    ))
}

/// What a chat call with memory learns once its run is served: the facts in its last user
/// turn (earlier turns were learned, or deliberately forgotten, when they were said).
pub struct Learning {
    mem: Arc<MemSync>,
    user: MemUser,
    said: String,
}

impl Learning {
    /// Adds the turn's facts off the answer's path: a repeated fact re-validates its row, a
    /// contradicting one supersedes it, both naming `run`.
    pub fn learn(self, run: haca_core::RunId) {
        let learned = extract_rules(&[Message::user(self.said)]);
        if learned.is_empty() {
            return;
        }
        let run = run.to_string();
        tokio::spawn(async move {
            let (mem, user) = (self.mem, self.user);
            match mem.add(&user, learned, Some(&run), &Scope::default()).await {
                Ok(r) => tracing::info!(
                    "memory of {}: run {run} added {}, re-validated {}, superseded {}",
                    user.owner,
                    r.created.len(),
                    r.revalidated.len(),
                    r.superseded.len()
                ),
                Err(e) => {
                    tracing::warn!("memory of {}: run {run} learned nothing: {e}", user.owner)
                }
            }
        });
    }
}
