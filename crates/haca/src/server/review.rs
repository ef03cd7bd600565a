//! The review API (`/v1/cases`, `/v1/review/*`) and its token extractors. Every case and
//! decision needs a review token (`Authorization: Bearer rt_...`) or the operator token; a
//! viewer token reads, a reviewer token also opens cases and decides.

use super::error::ApiError;
use super::extract::{Admin, JsonBody};
use super::AppState;
use crate::review::{parse_action, Principal, ReviewError};
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::{request::Parts, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use haca_review::{CaseState, DecisionInput, Refusal, Role};
use serde::Deserialize;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::Arc;

type S = State<Arc<AppState>>;

/// Any review token (viewer or reviewer), or the operator token.
pub struct Viewer(pub Principal);
/// A reviewer token, or the operator token: 403 for a viewer.
pub struct Reviewer(pub Principal);

fn principal(parts: &Parts, st: &AppState) -> Result<Principal, ApiError> {
    let Some(token) = super::extract::bearer(&parts.headers) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "cases and decisions need a review token: send Authorization: Bearer <token> \
             (an operator creates one with `haca token create --role reviewer|viewer`)",
        ));
    };
    principal_of_token(token, st)
}

/// The principal of bearer `token`: the operator, or a review token's holder; 401 otherwise.
pub(super) fn principal_of_token(token: &str, st: &AppState) -> Result<Principal, ApiError> {
    if super::extract::is_operator(st, token) {
        return Ok(Principal {
            id: "operator".into(),
            role: Role::Reviewer,
        });
    }
    let row = st
        .gateway
        .store
        .review_token_by_hash(&haca_review::token_hash(token))?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the bearer token is not a review token of this node",
            )
        })?;
    if row.revoked_at.is_some() {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "token_revoked",
            format!("review token {} was revoked", row.id),
        ));
    }
    let role = row
        .role
        .parse()
        .map_err(|e: String| ApiError::internal(format!("stored review token {}: {e}", row.id)))?;
    Ok(Principal { id: row.id, role })
}

impl FromRequestParts<Arc<AppState>> for Viewer {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, st: &Arc<AppState>) -> Result<Self, ApiError> {
        principal(parts, st).map(Viewer)
    }
}

impl FromRequestParts<Arc<AppState>> for Reviewer {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, st: &Arc<AppState>) -> Result<Self, ApiError> {
        let p = principal(parts, st)?;
        if !p.role.can_decide() {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "review token {} is a viewer token: it reads cases but cannot open or decide them",
                    p.id
                ),
            ));
        }
        Ok(Reviewer(p))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    role: String,
    label: Option<String>,
}

/// `POST /v1/review/tokens` (admin): a new token, shown once.
pub async fn create_token(
    State(st): S,
    admin: Admin,
    JsonBody(body): JsonBody<NewToken>,
) -> Result<Response, ApiError> {
    let role: Role = body.role.parse().map_err(|e: String| {
        ApiError::bad_request("invalid_field", format!("role: {e}")).param("role")
    })?;
    let (token, row) = crate::review::new_token(role, body.label, &admin.0);
    let id = row.id.clone();
    st.gateway.store.create_review_token(row).await?;
    tracing::info!(
        "review token {id} ({}) created by {}",
        role.as_str(),
        admin.0
    );
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": id, "role": role, "token": token})),
    )
        .into_response())
}

/// `DELETE /v1/review/tokens/{id}` (admin).
pub async fn revoke_token(
    State(st): S,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if !st
        .gateway
        .store
        .revoke_review_token(&id, crate::now_ms())
        .await?
    {
        return Err(ApiError::not_found(
            "unknown_token",
            format!("no review token {id:?}"),
        ));
    }
    Ok(Json(json!({"id": id, "revoked": true})))
}

/// `GET /v1/review/me`: who the token is, and the node's case classes.
pub async fn me(State(st): S, Viewer(p): Viewer) -> Json<Value> {
    let classes: Vec<Value> = st
        .review
        .classes
        .iter()
        .map(|c| json!({"name": c.policy.name, "required": c.policy.required, "webhook": c.webhook.is_some()}))
        .collect();
    Json(json!({
        "id": p.id,
        "role": p.role,
        "node": st.gateway.key.node_id().to_string(),
        "classes": classes,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewCase {
    runs: Vec<String>,
    policy: Option<String>,
}

/// `POST /v1/cases`.
pub async fn create_case(
    State(st): S,
    Reviewer(p): Reviewer,
    JsonBody(body): JsonBody<NewCase>,
) -> Result<Response, ApiError> {
    let (id, state) = st
        .review
        .create_case(&st.gateway, body.runs, body.policy, &p)
        .await?;
    Ok((StatusCode::CREATED, Json(json!({"id": id, "state": state}))).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueQuery {
    state: Option<String>,
    policy: Option<String>,
    model: Option<String>,
    artifact: Option<String>,
    limit: Option<usize>,
}

/// `GET /v1/cases`: the queue, newest first, filtered by state, policy, model label and
/// artifact (blob id).
pub async fn list_cases(
    State(st): S,
    Viewer(_): Viewer,
    Query(q): Query<QueueQuery>,
) -> Result<Json<Value>, ApiError> {
    let state: Option<CaseState> = match q.state.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(
            s.parse()
                .map_err(|e: String| ApiError::bad_request("invalid_query", e).param("state"))?,
        ),
    };
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    let filter = haca_store::CaseFilter {
        policy: q.policy.filter(|s| !s.is_empty()),
        model: q.model.filter(|s| !s.is_empty()),
        artifact: q.artifact.filter(|s| !s.is_empty()),
        decided: state.map(|s| s.is_decided()),
        // Open cases' states come from their evidence: read more than asked, then filter.
        limit: if state.is_some_and(|s| !s.is_decided()) {
            limit * 4
        } else {
            limit
        },
    };
    let at = crate::now_ms();
    // Each open case's state is read off its evidence: blocking work, off the async workers.
    tokio::task::spawn_blocking(move || {
        let gw = &st.gateway;
        let mut rows = Vec::new();
        for c in gw.store.list_cases(&filter)? {
            if rows.len() >= limit {
                break;
            }
            let loaded = st.review.load(gw, &c.id)?;
            let row = st.review.queue_row(gw, &loaded, at);
            if state.is_none_or(|s| row["state"] == json!(s)) {
                rows.push(row);
            }
        }
        Ok(Json(json!({"cases": rows, "at": at})))
    })
    .await
    .map_err(|e| ApiError::internal(format!("reading the queue failed: {e}")))?
}

/// `GET /v1/cases/{id}`.
pub async fn get_case(
    State(st): S,
    Viewer(_): Viewer,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let st2 = st.clone();
    // Reading a case of thousands of receipts checks thousands of signatures: off the
    // async workers.
    tokio::task::spawn_blocking(move || {
        let case = st2.review.load(&st2.gateway, &id)?;
        st2.review
            .view(&st2.gateway, &case, crate::now_ms())
            .map(Json)
            .map_err(ApiError::from)
    })
    .await
    .map_err(|e| ApiError::internal(format!("reading the case failed: {e}")))?
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    action: String,
    reason: Option<String>,
    seen: Option<String>,
}

/// `POST /v1/cases/{id}/decision`.
pub async fn decide(
    State(st): S,
    Reviewer(p): Reviewer,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<DecisionBody>,
) -> Result<Json<Value>, ApiError> {
    let input = DecisionInput {
        action: parse_action(&body.action)?,
        reason: body.reason.filter(|r| !r.trim().is_empty()),
        seen: body.seen,
    };
    Ok(Json(st.review.decide(&st.gateway, &id, input, &p).await?))
}

/// `GET /v1/cases/{id}/events`: server-sent `case` events with the case's state, snapshot id,
/// missing claims and number of decisions, read again on new blocks, on decisions and every
/// 10 s (at most every 2 s), and sent when they differ from the last sent. The case is read
/// once per change for all its watchers ([`crate::review::Review::watch`]); a token holds at
/// most `MAX_WATCHERS_PER_TOKEN` views open (429 beyond).
pub async fn case_events(
    State(st): S,
    Viewer(who): Viewer,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    st.review.load(&st.gateway, &id)?;
    let heights = st.gateway.chain.as_ref().map(|c| c.heights());
    let (st2, id2) = (st.clone(), id.clone());
    let read: crate::review::ReadSummary = Arc::new(move || {
        let case = st2.review.load(&st2.gateway, &id2)?;
        let (state, eval) = st2.review.state(&st2.gateway, &case, crate::now_ms());
        let decisions = st2.gateway.store.decisions(&id2)?.len();
        Ok(json!({
            "id": id2, "state": state, "snapshot": eval.snapshot(&id2).id,
            "missing_claims": eval.missing_claims(), "decisions": decisions,
        })
        .to_string())
    });
    let watch = st.review.watch(&id, &who.id, heights, read)?;
    // Every watcher of the case gets the one summary read per change; when the node stops,
    // a last `shutdown` event, and the stream ends (the panel reconnects to another node or
    // once this one is back).
    let stream = futures_util::stream::unfold(Some(watch), |watch| async move {
        let mut watch = watch?;
        loop {
            tokio::select! {
                changed = watch.updates.changed() => changed.ok()?,
                _ = watch.stopping.wait_for(|s| *s) => {
                    let event = Event::default()
                        .event("shutdown")
                        .data(r#"{"reason":"the node is stopping"}"#);
                    return Some((Ok::<_, Infallible>(event), None));
                }
            }
            let text = watch.updates.borrow_and_update().clone();
            if let Some(data) = text {
                let event = Event::default().event("case").data(data);
                return Some((Ok::<_, Infallible>(event), Some(watch)));
            }
        }
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// `GET /v1/runs/{id}/claims`: one run's boxes and every claim checked now, as `haca
/// verify` would with this node's chain as the trust anchor (public, as receipts are).
pub async fn run_claims(State(st): S, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let rec = super::routes::load_run(&st, &id)?;
    let parsed = st.gateway.current_receipt(&rec)?;
    let anchors = st.review.anchors(&st.gateway);
    let at = crate::now_ms();
    let checker = haca_core::claims::Checker::new(&parsed, &anchors, at);
    let claims: Vec<_> = haca_core::claims::Claim::all(
        haca_review::case::DEFAULT_DATA_MAX_AGE_S,
        haca_review::case::DEFAULT_MEMORY_MAX_AGE_S,
    )
    .into_iter()
    .map(|c| checker.check(c))
    .collect();
    Ok(Json(json!({
        "run_id": rec.run_id,
        "model": rec.model,
        "at": at,
        "boxes": parsed.raw["boxes"],
        "claims": claims,
        "problems": checker.problems(),
    })))
}

/// A review error as an HTTP answer; a refused decision carries what it is missing.
impl From<ReviewError> for ApiError {
    fn from(e: ReviewError) -> Self {
        match e {
            ReviewError::Invalid {
                code,
                message,
                param,
            } => ApiError {
                param,
                ..ApiError::bad_request(code, message)
            },
            ReviewError::NotFound {
                code,
                message,
                param,
            } => ApiError {
                param,
                ..ApiError::not_found(code, message)
            },
            ReviewError::AlreadyDecided(m) => ApiError::conflict("already_decided", m),
            ReviewError::TooManyWatchers(m) => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_watchers", m)
            }
            ReviewError::Gateway(e) => e.into(),
            ReviewError::Internal(m) => ApiError::internal(m),
            ReviewError::Refused { refusal, missing } => {
                let msg = refusal.to_string();
                match refusal {
                    Refusal::NotReady {
                        missing: claims,
                        state,
                    } => ApiError::conflict("not_ready", msg)
                        .with("missing_claims", json!(claims))
                        .with("state", json!(state))
                        .with("missing", json!(missing)),
                    Refusal::Stale { current, .. } => ApiError::conflict("stale_decision", msg)
                        .param("seen")
                        .with("current_snapshot", json!(current)),
                    Refusal::AlreadyDecided(s) => {
                        ApiError::conflict("already_decided", msg).with("state", json!(s))
                    }
                    Refusal::ReasonRequired => {
                        ApiError::bad_request("reason_required", msg).param("reason")
                    }
                }
            }
        }
    }
}
