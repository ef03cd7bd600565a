//! Upstream providers: any OpenAI-compatible `/chat/completions` endpoint (OpenAI, Google's
//! OpenAI-compatible endpoint, ByteDance ModelArk, a llama.cpp server, another haca node).
//!
//! haca always asks upstream for a stream, whether or not its own client streams: one code
//! path, and a stream that breaks is told apart from one that ended (`[DONE]` or a
//! `finish_reason`), which is what failover needs.

use futures_util::StreamExt;
use serde_json::{json, Value};
use std::time::Duration;

/// One upstream endpoint.
#[derive(Clone, Debug)]
pub struct Upstream {
    /// The provider name (the `provider` of `provider/model`).
    pub name: String,
    /// Base URL ending before `/chat/completions`, such as `https://api.openai.com/v1`.
    pub base_url: String,
    pub api_key: Option<String>,
    /// Longest wait for the first byte and between two chunks.
    pub timeout: Duration,
    pub http: reqwest::Client,
}

/// What one upstream call produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UpstreamAnswer {
    pub content: String,
    /// Tool calls, assembled from their streamed pieces.
    pub tool_calls: Vec<Value>,
    pub finish_reason: String,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    /// Upstream's own model name, as it reported it.
    pub model: Option<String>,
    /// Chunks received.
    pub chunks: usize,
}

/// Why an upstream call failed. `retryable` failures may fall back to another route.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    #[error("{provider} could not be reached: {reason}")]
    Unreachable { provider: String, reason: String },
    #[error("{provider} sent nothing for {seconds} s")]
    Timeout { provider: String, seconds: u64 },
    #[error("{provider} answered HTTP {status}: {message}")]
    Status {
        provider: String,
        status: u16,
        message: String,
    },
    #[error("{provider}'s stream broke after {chunks} chunks: {reason}")]
    Broken {
        provider: String,
        chunks: usize,
        reason: String,
    },
    #[error("the client went away")]
    Cancelled,
}

impl UpstreamError {
    /// A failure of the provider, not of the request: another route may serve it.
    pub fn retryable(&self) -> bool {
        match self {
            UpstreamError::Status { status, .. } => {
                *status >= 500 || matches!(*status, 401 | 403 | 404 | 408 | 429)
            }
            UpstreamError::Cancelled => false,
            _ => true,
        }
    }

    /// The provider refused the request itself (a client error that no other route would
    /// answer differently): the client's to fix, not the provider's.
    pub fn refused_request(&self) -> bool {
        matches!(self, UpstreamError::Status { status, .. } if (400..500).contains(status))
            && !self.retryable()
    }

    /// Whether the client already saw part of an answer.
    pub fn partial_chunks(&self) -> usize {
        match self {
            UpstreamError::Broken { chunks, .. } => *chunks,
            _ => 0,
        }
    }
}

/// The body sent upstream: the client's own fields, haca's fields removed, the model named
/// as upstream knows it, and always streamed with usage.
pub fn upstream_body(client_body: &Value, upstream_model: &str) -> Value {
    let mut body = client_body.clone();
    if let Some(o) = body.as_object_mut() {
        for haca_field in ["privacy", "conversation", "data", "memory"] {
            o.remove(haca_field);
        }
        o.insert("model".into(), upstream_model.into());
        o.insert("stream".into(), true.into());
        o.insert("stream_options".into(), json!({"include_usage": true}));
    }
    body
}

/// The HTTP connections every upstream provider shares: a pool with a connect timeout and
/// no overall deadline (a stream may run for minutes; each call has its own first-byte and
/// between-chunk timeout).
#[derive(Clone)]
pub struct UpstreamPool(reqwest::Client);

impl UpstreamPool {
    pub fn new() -> Self {
        UpstreamPool(
            reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .build()
                .expect("an HTTP client builds"),
        )
    }
}

impl Default for UpstreamPool {
    fn default() -> Self {
        Self::new()
    }
}

impl Upstream {
    /// The upstream of provider `p` on `pool`, its API key read from its `key_env` (an unset
    /// variable is an error naming it); `None` for a provider that is not OpenAI-compatible
    /// (the local model).
    pub fn for_provider(
        p: &super::router::Provider,
        timeout: Duration,
        pool: &UpstreamPool,
    ) -> Result<Option<Upstream>, String> {
        let super::router::ProviderKind::OpenAi { base_url, key_env } = &p.kind else {
            return Ok(None);
        };
        let api_key = match key_env {
            None => None,
            Some(var) => Some(
                std::env::var(var)
                    .map_err(|_| format!("--provider {}: key_env={var} is not set", p.name))?,
            ),
        };
        Ok(Some(Upstream {
            name: p.name.clone(),
            base_url: base_url.clone(),
            api_key,
            timeout,
            http: pool.0.clone(),
        }))
    }

    /// Calls `path` (`/chat/completions` or `/completions`) and streams each delta to
    /// `on_delta` (for chat, `choices[0].delta`; for completions, `{"content": text}`);
    /// `on_delta` returns false when the client went away.
    pub async fn call(
        &self,
        path: &str,
        body: &Value,
        on_delta: &mut (dyn FnMut(&Value) -> bool + Send),
    ) -> Result<UpstreamAnswer, UpstreamError> {
        let provider = || self.name.clone();
        let url = format!("{}{path}", self.base_url.trim_end_matches('/'));
        let mut req = self.http.post(&url).json(body);
        if let Some(key) = &self.api_key {
            req = req.bearer_auth(key);
        }
        let resp = tokio::time::timeout(self.timeout, req.send())
            .await
            .map_err(|_| UpstreamError::Timeout {
                provider: provider(),
                seconds: self.timeout.as_secs(),
            })?
            .map_err(|e| UpstreamError::Unreachable {
                provider: provider(),
                reason: e.without_url().to_string(),
            })?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            let message = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
                .unwrap_or_else(|| text.chars().take(300).collect());
            return Err(UpstreamError::Status {
                provider: provider(),
                status: status.as_u16(),
                message,
            });
        }
        let mut answer = UpstreamAnswer::default();
        let mut stream = resp.bytes_stream();
        let mut buf: Vec<u8> = Vec::new();
        let mut done = false;
        let chat = path.ends_with("chat/completions");
        while !done {
            let next = tokio::time::timeout(self.timeout, stream.next())
                .await
                .map_err(|_| UpstreamError::Timeout {
                    provider: provider(),
                    seconds: self.timeout.as_secs(),
                })?;
            let bytes = match next {
                None => break,
                Some(Ok(b)) => b,
                Some(Err(e)) => {
                    return Err(UpstreamError::Broken {
                        provider: provider(),
                        chunks: answer.chunks,
                        reason: e.without_url().to_string(),
                    })
                }
            };
            buf.extend_from_slice(&bytes);
            while let Some((event, rest)) = split_event(&buf) {
                let data = event_data(event);
                buf = rest.to_vec();
                let Some(data) = data else { continue };
                if data.trim() == "[DONE]" {
                    done = true;
                    break;
                }
                let v: Value = serde_json::from_str(&data).map_err(|e| UpstreamError::Broken {
                    provider: provider(),
                    chunks: answer.chunks,
                    reason: format!("an event is not JSON: {e}"),
                })?;
                if let Some(msg) = v["error"]["message"].as_str() {
                    return Err(UpstreamError::Broken {
                        provider: provider(),
                        chunks: answer.chunks,
                        reason: format!("it sent an error: {msg}"),
                    });
                }
                answer.chunks += 1;
                if let Some(m) = v["model"].as_str() {
                    answer.model.get_or_insert_with(|| m.to_owned());
                }
                if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
                    answer.prompt_tokens = u["prompt_tokens"].as_u64();
                    answer.completion_tokens = u["completion_tokens"].as_u64();
                }
                let Some(choice) = v["choices"].get(0) else {
                    continue;
                };
                let delta = if chat {
                    choice["delta"].clone()
                } else {
                    json!({"content": choice["text"].as_str().unwrap_or_default()})
                };
                if let Some(text) = delta["content"].as_str() {
                    answer.content.push_str(text);
                }
                if let Some(calls) = delta["tool_calls"].as_array() {
                    merge_tool_calls(&mut answer.tool_calls, calls);
                }
                let has_payload = delta["content"].as_str().is_some_and(|s| !s.is_empty())
                    || delta.get("tool_calls").is_some();
                if has_payload && !on_delta(&delta) {
                    return Err(UpstreamError::Cancelled);
                }
                if let Some(r) = choice["finish_reason"].as_str() {
                    answer.finish_reason = r.to_owned();
                }
            }
        }
        if !done && answer.finish_reason.is_empty() {
            return Err(UpstreamError::Broken {
                provider: provider(),
                chunks: answer.chunks,
                reason: "the connection closed before the answer finished".into(),
            });
        }
        if answer.finish_reason.is_empty() {
            answer.finish_reason = "stop".into();
        }
        Ok(answer)
    }
}

/// The first complete SSE event of `buf` and what follows it.
fn split_event(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|p| (p, 2));
    let crlf = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| (p, 4));
    let (at, len) = match (lf, crlf) {
        (Some(a), Some(b)) => {
            if a.0 < b.0 {
                a
            } else {
                b
            }
        }
        (Some(a), None) => a,
        (None, Some(b)) => b,
        (None, None) => return None,
    };
    Some((&buf[..at], &buf[at + len..]))
}

/// The joined `data:` lines of one event, if it has any.
fn event_data(event: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(event);
    let lines: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|l| l.strip_prefix(' ').unwrap_or(l))
        .collect();
    (!lines.is_empty()).then(|| lines.join("\n"))
}

/// Streamed tool calls arrive in pieces keyed by `index`; the arguments string is split.
pub fn merge_tool_calls(into: &mut Vec<Value>, pieces: &[Value]) {
    for p in pieces {
        let index = p["index"].as_u64().unwrap_or(into.len() as u64) as usize;
        while into.len() <= index {
            into.push(
                json!({"id": "", "type": "function", "function": {"name": "", "arguments": ""}}),
            );
        }
        let call = &mut into[index];
        if let Some(id) = p["id"].as_str() {
            call["id"] = id.into();
        }
        for key in ["name", "arguments"] {
            if let Some(s) = p["function"][key].as_str() {
                let joined = format!("{}{s}", call["function"][key].as_str().unwrap_or_default());
                call["function"][key] = joined.into();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_on_blank_lines() {
        let buf = b"data: {\"a\":1}\n\ndata: [DONE]\r\n\r\nrest";
        let (e, rest) = split_event(buf).unwrap();
        assert_eq!(event_data(e).unwrap(), "{\"a\":1}");
        let (e, rest) = split_event(rest).unwrap();
        assert_eq!(event_data(e).unwrap(), "[DONE]");
        assert_eq!(rest, b"rest");
        assert_eq!(event_data(b": keep-alive"), None);
    }

    #[test]
    fn tool_call_pieces_join() {
        let mut calls = Vec::new();
        merge_tool_calls(
            &mut calls,
            &[json!({"index": 0, "id": "c1", "function": {"name": "add", "arguments": "{\"a\":"}})],
        );
        merge_tool_calls(
            &mut calls,
            &[json!({"index": 0, "function": {"arguments": " 1}"}})],
        );
        assert_eq!(calls[0]["function"]["arguments"], "{\"a\": 1}");
        assert_eq!(calls[0]["id"], "c1");
    }

    #[test]
    fn haca_fields_stay_home() {
        let b = upstream_body(
            &json!({"model": "up/m", "privacy": "any", "conversation": "c", "messages": []}),
            "m",
        );
        assert_eq!(
            b,
            json!({"model": "m", "messages": [], "stream": true, "stream_options": {"include_usage": true}})
        );
    }
}
