//! The OpenAI-compatible surface: `/v1/chat/completions`, `/v1/completions`, `/v1/models`,
//! and haca's `/v1/conversations/{id}`.

use super::error::ApiError;
use super::extract::JsonBody;
use super::AppState;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use haca_core::settlement::SettlementMode;
use haca_exec::llm::Call;
use haca_exec::llm::{ChatRequest, CompletionRequest};
use haca_gateway::chat::{
    conversation_view, new_conversation_id, CallStart, ChatGateway, Failed, Served, Transport,
};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::Arc;
use tokio::sync::mpsc;

type S = State<Arc<AppState>>;

fn chat_of(st: &AppState) -> Result<Arc<ChatGateway>, ApiError> {
    st.chat.clone().ok_or_else(|| {
        ApiError::not_found(
            "model_not_found",
            "this node serves no LLMs (start it with a local model or --provider)",
        )
    })
}

/// The chat models, and the image models (`haca.kind: "image"`) when the node has any.
pub async fn models(State(st): S) -> Result<Json<Value>, ApiError> {
    let mut v = match (&st.chat, &st.images) {
        (Some(c), _) => c.models(),
        (None, Some(_)) => json!({"object": "list", "data": []}),
        (None, None) => chat_of(&st)?.models(),
    };
    if let (Some(images), Some(data)) = (&st.images, v["data"].as_array_mut()) {
        data.extend(images.models());
    }
    Ok(Json(v))
}

/// `transport` is set only by the OHTTP gateway ([`super::ohttp`]), on the request it
/// opened and dispatches in-process; a request from the network never carries it.
pub async fn chat_completions(
    State(st): S,
    transport: Option<Extension<Transport>>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    let call = Call::Chat(ChatRequest::parse(body)?);
    let transport = transport.map(|Extension(t)| t).unwrap_or_default();
    serve(st, headers, call, "/v1/chat/completions", transport).await
}

pub async fn completions(
    State(st): S,
    headers: HeaderMap,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    let call = Call::Completion(CompletionRequest::parse(body)?);
    serve(st, headers, call, "/v1/completions", Transport::Direct).await
}

/// A conversation's turns: readable by whoever may read its runs' outputs
/// ([`super::access`]).
pub async fn conversation(
    State(st): S,
    reader: super::access::Reader,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let turns = st.gateway.store.chat_turns(&id)?;
    if turns.is_empty() {
        return Err(ApiError::not_found(
            "unknown_conversation",
            format!("no conversation {id:?} on this node"),
        ));
    }
    // The operator reads any; anyone else may read each turn's run.
    if !matches!(reader, super::access::Reader::Operator) {
        for t in &turns {
            if let Some(run) = st.gateway.store.get_run(&t.run_id)? {
                let receipt: Value = serde_json::from_str(&run.receipt).map_err(|e| {
                    ApiError::internal(format!(
                        "stored receipt of run {} is damaged: {e}",
                        run.run_id
                    ))
                })?;
                reader.may_read_run(&st, &run.run_id, &receipt)?;
            }
        }
    }
    Ok(Json(conversation_view(&id, &turns)))
}

/// One call: plan its routes (refusing what no route may serve before anything is paid or
/// sent), take its payment, then answer whole or as a stream.
async fn serve(
    st: Arc<AppState>,
    headers: HeaderMap,
    call: Call,
    endpoint: &str,
    transport: Transport,
) -> Result<Response, ApiError> {
    let chat = chat_of(&st)?;
    let settlement = super::routes::settlement_mode(&headers)?;
    if settlement == SettlementMode::Individual {
        return Err(ApiError::bad_request(
            "invalid_settlement_type",
            "header X-SETTLEMENT-TYPE: individual settles ML inputs and outputs; chat settles batch or private",
        ));
    }
    let routes = chat.plan_over(&call, &transport)?;
    chat.precheck(&call, &routes).await?;
    let mut start = CallStart::new(&st.gateway, &call)?;
    start.transport = transport;
    // Memory's own refusals (its field, the user's credentials) come before any payment.
    let memory = match super::memory::memory_of_call(&call)? {
        None => None,
        Some(limit) => {
            super::memory::memsync(&st)?;
            Some((limit, super::memory::user_of(&headers, &st)?))
        }
    };
    // x402 `upto` (a maximum authorized, the actual cost settled after the answer): checked
    // here against the call's worst case, before any work.
    let offer = super::x402::payment_offer(&headers);
    let mut upto = None;
    let pending = match &st.payments {
        None => None,
        Some(p) if offer.is_upto() => {
            let resource = st.public_url.resource(endpoint);
            let flat = p.price_of_chat_model(call.model());
            let Some(price) = p.token_price(call.model()) else {
                let e = haca_gateway::GatewayError::payment(
                    "unsupported_scheme",
                    format!(
                        "upto: model {} has no per-token price on this node (--model-price {}=IN/OUT): pay exact",
                        call.model(),
                        call.model()
                    ),
                );
                return super::x402::refusal(p, &resource, flat, e);
            };
            let Some(max_tokens) = call.sampling().max_tokens else {
                return Err(ApiError::bad_request(
                    "invalid_input",
                    "max_tokens: required when paying with upto (the maximum authorized covers it)",
                )
                .param("max_tokens"));
            };
            let prompt_bound = prompt_bound(&call);
            match p
                .check_upto(&offer, &resource, price, prompt_bound, max_tokens.into())
                .await
            {
                Ok(u) => upto = Some(u),
                Err(e) => {
                    return super::x402::refusal_with(
                        p,
                        &resource,
                        flat,
                        e,
                        upto_requirement(p, &call),
                    )
                }
            }
            None
        }
        Some(p) => {
            let price = p.price_of_chat_model(call.model());
            let resource = st.public_url.resource(endpoint);
            match p.check(&offer, &resource, price).await {
                Ok(pending) => Some((p, pending, resource, price)),
                Err(e) => {
                    return super::x402::refusal_with(
                        p,
                        &resource,
                        price,
                        e,
                        upto_requirement(p, &call),
                    )
                }
            }
        }
    };
    let payment = match pending {
        None => None,
        Some((p, pending, resource, price)) => {
            match chat
                .take_payment(&st.gateway, &call, &routes, &start, Some(pending))
                .await
            {
                Ok(paid) => paid,
                Err(e) => {
                    return super::x402::refusal_with(
                        p,
                        &resource,
                        price,
                        e,
                        upto_requirement(p, &call),
                    )
                }
            }
        }
    };
    // After the payment: a refusal here drops the charge, which refunds it.
    let (call, learning) = match memory {
        None => (call, None),
        Some((limit, user)) => {
            let (call, used, learning) = super::memory::recall_into(&st, user, call, limit).await?;
            start.memory = Some(used);
            (call, Some(learning))
        }
    };
    let conversation = match &call {
        Call::Chat(c) => Some(c.conversation.clone().unwrap_or_else(new_conversation_id)),
        Call::Completion(_) => None,
    };
    let run_id = start.run_id.to_string();
    let mut extra_headers: Vec<(&'static str, HeaderValue)> = vec![
        (
            "x-haca-run-id",
            HeaderValue::from_str(&run_id).expect("hex"),
        ),
        (
            "x-haca-receipt",
            HeaderValue::from_str(&format!("/v1/runs/{run_id}/receipt")).expect("ascii"),
        ),
    ];
    if let Some(c) = &conversation {
        if let Ok(v) = HeaderValue::from_str(c) {
            extra_headers.push(("x-haca-conversation", v));
        }
    }
    let payment_header = payment.as_ref().and_then(|c| c.paid().header());
    let created = crate::now_ms() / 1000;
    let id = match &call {
        Call::Chat(_) => format!("chatcmpl-{run_id}"),
        Call::Completion(_) => format!("cmpl-{run_id}"),
    };
    let public_model = call.model().to_owned();

    let mut upto_header = None;
    let pay = match upto {
        Some(u) => haca_gateway::chat::ChatPayment::Upto(u),
        None => haca_gateway::chat::ChatPayment::Charged(payment),
    };
    let mut resp = if !call.stream() {
        let served = chat
            .serve(
                &st.gateway,
                &call,
                routes,
                start,
                settlement,
                pay,
                conversation,
                None,
            )
            .await
            .map_err(failed_error)?;
        upto_header = served.payment_header.clone();
        if let Some(l) = learning {
            l.learn(served.receipt.run_id);
        }
        super::ops::metrics().tokens(served.prompt_tokens, served.completion_tokens);
        let mut body = whole_answer(&call, &id, created, &public_model, &served);
        add_tee_fields(&mut body, &served);
        Json(body).into_response()
    } else {
        let (delta_tx, mut delta_rx) = mpsc::unbounded_channel::<Value>();
        let (event_tx, event_rx) = mpsc::unbounded_channel::<String>();
        let chunk = chunker(&call, id, created, public_model);
        // Deltas become chunks as they come; the run's end adds the final chunk.
        let events = event_tx.clone();
        let first = match &call {
            Call::Chat(_) => Some(chunk(json!({"role": "assistant", "content": ""}), None)),
            Call::Completion(_) => None,
        };
        if let Some(f) = first {
            let _ = events.send(f.to_string());
        }
        let forward_chunk = chunk.clone();
        let forward = tokio::spawn(async move {
            while let Some(delta) = delta_rx.recv().await {
                if events.send(forward_chunk(delta, None).to_string()).is_err() {
                    break;
                }
            }
        });
        let include_usage = call.include_usage();
        let run_id = start.run_id;
        tokio::spawn(async move {
            let result = chat
                .serve(
                    &st.gateway,
                    &call,
                    routes,
                    start,
                    settlement,
                    pay,
                    conversation,
                    Some(delta_tx),
                )
                .await;
            // Every delta is out before the final chunk.
            let _ = forward.await;
            match result {
                Ok(served) => {
                    super::ops::metrics().tokens(served.prompt_tokens, served.completion_tokens);
                    if let Some(l) = learning {
                        l.learn(served.receipt.run_id);
                    }
                    let mut last = chunk(json!({}), Some(&served.finish_reason));
                    last["haca"] = served.haca_fields();
                    // upto settles after the answer, when the headers are long gone.
                    if let Some((_, v)) = &served.payment_header {
                        last["haca"]["payment_response"] = v.clone().into();
                    }
                    add_tee_fields(&mut last, &served);
                    let _ = event_tx.send(last.to_string());
                    if include_usage {
                        let mut u = chunk(json!({}), None);
                        u["choices"] = json!([]);
                        u["usage"] = served.usage();
                        let _ = event_tx.send(u.to_string());
                    }
                    let _ = event_tx.send("[DONE]".into());
                }
                Err(f) => {
                    let mut body = failed_error(f).body();
                    body["error"]["haca"] = json!({"run_id": run_id.to_string()});
                    let _ = event_tx.send(body.to_string());
                }
            }
        });
        let stream = futures_util::stream::unfold(event_rx, |mut rx| async move {
            rx.recv()
                .await
                .map(|data| (Ok::<_, Infallible>(Event::default().data(data)), rx))
        });
        Sse::new(stream)
            .keep_alive(KeepAlive::default())
            .into_response()
    };
    let h = resp.headers_mut();
    for (k, v) in extra_headers {
        h.insert(k, v);
    }
    if let Some((name, value)) = payment_header.or(upto_header) {
        h.insert(
            name,
            HeaderValue::from_str(&value).expect("base64 is ASCII"),
        );
    }
    Ok(resp)
}

/// The most prompt tokens `call` can take: a token is at least one byte of the prompt's text,
/// so its JSON bounds it, with room for the chat template's own tokens.
fn prompt_bound(call: &Call) -> u64 {
    let raw = call.raw();
    let input = raw.get("messages").unwrap_or(&raw["prompt"]);
    input.to_string().len() as u64
}

/// The `upto` option a 402 offers after `exact` for a call whose model has per-token prices,
/// at the call's worst case (`amount`; `extra` names the prices and `max_tokens`), when the
/// call states `max_tokens` and this node settles on its own ledger.
fn upto_requirement(
    p: &haca_gateway::payment::Payments,
    call: &Call,
) -> Option<haca_pay::types::PaymentRequirements> {
    let (Some(price), Some(max_tokens)) = (p.token_price(call.model()), call.sampling().max_tokens)
    else {
        return None;
    };
    if p.facilitator.is_some() {
        return None;
    }
    let worst = price.cost(prompt_bound(call), max_tokens.into());
    let mut upto = haca_gateway::payment::PaymentConfig {
        price: worst,
        ..p.config.clone()
    }
    .requirements();
    upto.scheme = haca_pay::types::SCHEME_UPTO.into();
    upto.extra
        .insert("inputPer1k".into(), price.input.to_string().into());
    upto.extra
        .insert("outputPer1k".into(), price.output.to_string().into());
    upto.extra.insert("maxTokens".into(), max_tokens.into());
    // x402's upto clients sign Permit2 with this node as the facilitator: its payee address.
    upto.extra.insert(
        "facilitatorAddress".into(),
        p.config.pay_to.to_checksum(None).into(),
    );
    Some(upto)
}

/// OpenGradient-compatible `tee_*` fields beside the answer: only an enclave's answer has them.
fn add_tee_fields(body: &mut Value, served: &Served) {
    if let Some(tee) = &served.tee {
        let fields = serde_json::to_value(tee).expect("tee fields serialize");
        if let (Some(o), Some(f)) = (body.as_object_mut(), fields.as_object()) {
            o.extend(f.clone());
        }
    }
}

/// The error of a failed call, with each attempt named in its message.
pub(super) fn failed_error(f: Failed) -> ApiError {
    let mut e = ApiError::from(f.error);
    if f.attempts.len() > 1 {
        let tried: Vec<String> = f
            .attempts
            .iter()
            .map(|a| {
                format!(
                    "{}: {}",
                    a.provider,
                    a.error.as_deref().unwrap_or(&a.outcome)
                )
            })
            .collect();
        e.message = format!("every route failed ({})", tried.join("; "));
    }
    e
}

/// A function making stream chunks of this call's kind.
fn chunker(
    call: &Call,
    id: String,
    created: u64,
    model: String,
) -> impl Fn(Value, Option<&str>) -> Value + Clone + Send + 'static {
    let chat = matches!(call, Call::Chat(_));
    move |delta: Value, finish: Option<&str>| {
        if chat {
            json!({
                "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
            })
        } else {
            json!({
                "id": id, "object": "text_completion", "created": created, "model": model,
                "choices": [{"index": 0, "text": delta["content"].as_str().unwrap_or_default(),
                             "logprobs": null, "finish_reason": finish}],
            })
        }
    }
}

fn whole_answer(call: &Call, id: &str, created: u64, model: &str, s: &Served) -> Value {
    match call {
        Call::Chat(_) => {
            let mut message = json!({"role": "assistant", "content": s.content});
            if !s.tool_calls.is_empty() {
                message["content"] = Value::Null;
                message["tool_calls"] = s.tool_calls.clone().into();
            }
            json!({
                "id": id, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": message, "logprobs": null,
                             "finish_reason": s.finish_reason}],
                "usage": s.usage(),
                "haca": s.haca_fields(),
            })
        }
        Call::Completion(_) => json!({
            "id": id, "object": "text_completion", "created": created, "model": model,
            "choices": [{"index": 0, "text": s.content, "logprobs": null,
                         "finish_reason": s.finish_reason}],
            "usage": s.usage(),
            "haca": s.haca_fields(),
        }),
    }
}
