//! `haca chat`: an interactive, streaming chat with a node's LLM gateway. Each answer is
//! followed by the route that served it and its receipt; a turn whose provider or path
//! changed from the one before says so.

use super::CliError;
use crate::client::NodeClient;
use clap::Args;
use serde_json::{json, Value};
use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

#[derive(Args)]
pub struct ChatArgs {
    /// The model, as provider/model (`haca chat` lists none: see /v1/models).
    #[arg(long, default_value = haca_exec::llm::LOCAL_MODEL)]
    model: String,
    /// The privacy every turn requires: any, private or tee. Refused, not downgraded, when
    /// no route meets it.
    #[arg(long, default_value = "any", value_parser = ["any", "private", "tee"])]
    privacy: String,
    /// A system prompt.
    #[arg(long)]
    system: Option<String>,
    /// Longest answer, in tokens.
    #[arg(long, default_value_t = 256)]
    max_tokens: u32,
    #[arg(long)]
    temperature: Option<f64>,
    /// Send this one message, print the answer and exit (no prompt).
    #[arg(long)]
    once: Option<String>,
    /// Admit a data item (its id from `haca data fetch`) into every turn (repeatable): the
    /// node checks it and lists it, with its age, in the receipt's data box.
    #[arg(long = "data", value_name = "ITEM_ID")]
    data: Vec<String>,
    /// An API key (`haca apikey create`) to pay with; without one, a node that charges
    /// gets a key funded from its faucet for this session (devnet, from loopback).
    #[arg(long, env = "HACA_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// The node's URL.
    #[arg(long, env = "HACA_NODE", default_value = "http://127.0.0.1:7070")]
    node: String,
    /// Send every turn sealed (OHTTP) through the relay at --relay: the relay sees who asks
    /// but not what, the node what is asked but not by whom. The node's keys come from its
    /// `/v1/ohttp/config`; the relay pays, so no API key goes with the turn.
    #[arg(long, requires = "relay")]
    private: bool,
    /// The OHTTP relay for --private (`haca devnet` prints its `relay:` URL).
    #[arg(long, env = "HACA_RELAY")]
    relay: Option<String>,
    /// Let the user's memory (MemSync, the --api-key's) into every turn: the rows nearest the
    /// turn go into the prompt and are listed in the receipt's memory box; what the turn says
    /// is remembered.
    #[arg(long, requires = "api_key", conflicts_with = "private")]
    memory: bool,
}

/// What one turn's stream said besides its text.
struct TurnEnd {
    run_id: String,
    provider: String,
    path: String,
    attempts: usize,
    conversation: Option<String>,
}

pub async fn run(a: ChatArgs) -> Result<ExitCode, CliError> {
    let http = reqwest::Client::new();
    let mut key = a.api_key.clone();
    if a.private && key.is_some() {
        return Err(CliError::Msg(
            "--private: the relay pays the node; an API key would tell the node who asks (leave --api-key and HACA_API_KEY out)".into(),
        ));
    }
    let mut sealing = match (a.private, &a.relay) {
        (true, Some(relay)) => Some(Sealing::new(&http, &a.node, relay).await?),
        _ => None,
    };
    let mut messages: Vec<Value> = Vec::new();
    if let Some(s) = &a.system {
        messages.push(json!({"role": "system", "content": s}));
    }
    let interactive = a.once.is_none() && std::io::stdin().is_terminal();
    if interactive {
        eprintln!(
            "haca chat with {} (privacy: {}) at {}. Empty line or Ctrl-D to leave.",
            a.model, a.privacy, a.node
        );
    }
    let mut conversation: Option<String> = None;
    let mut last_route: Option<(String, String)> = None;
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        let text = match &a.once {
            Some(t) if messages.iter().all(|m| m["role"] != "user") => t.clone(),
            Some(_) => break,
            None => {
                if interactive {
                    eprint!("you> ");
                    let _ = std::io::stderr().flush();
                }
                match lines.next() {
                    Some(Ok(l)) if !l.trim().is_empty() => l,
                    Some(Err(e)) => return Err(CliError::Msg(format!("stdin: {e}"))),
                    _ => break,
                }
            }
        };
        messages.push(json!({"role": "user", "content": text}));
        let mut body = json!({
            "model": a.model, "messages": messages, "stream": true,
            "max_tokens": a.max_tokens, "privacy": a.privacy,
        });
        if let Some(t) = a.temperature {
            body["temperature"] = t.into();
        }
        if !a.data.is_empty() {
            body["data"] = a.data.clone().into();
        }
        if a.memory {
            body["memory"] = true.into();
        }
        if let Some(c) = &conversation {
            body["conversation"] = c.clone().into();
        }
        let (answer, end) = loop {
            let done = match sealing.as_mut() {
                Some(s) => s.turn(&http, &body).await,
                None => turn(&http, &a.node, key.as_deref(), &body).await,
            };
            match done {
                Err(TurnError::PaymentRequired(why)) if sealing.is_some() => {
                    return Err(CliError::Msg(format!(
                        "payment required: {why} (over --private the relay pays: start it with --api-key)"
                    )))
                }
                Err(TurnError::PaymentRequired(why)) if key.is_none() => {
                    let client = NodeClient::new(&a.node, None);
                    eprintln!("({why}; funding an API key from the node's faucet for this chat)");
                    key = Some(
                        super::apikey::funded_api_key(&client, &a.model, 50, "haca chat").await?,
                    );
                }
                Err(e) => return Err(CliError::Msg(e.to_string())),
                Ok(done) => break done,
            }
        };
        println!();
        if let Some((p, path)) = &last_route {
            if *p != end.provider || *path != end.path {
                eprintln!(
                    "  ! this turn changed route: {p} over {path} -> {} over {}",
                    end.provider, end.path
                );
            }
        }
        eprintln!(
            "  [run {} · {} over {}{} · receipt {}/v1/runs/{}/receipt]",
            &end.run_id[..12.min(end.run_id.len())],
            end.provider,
            end.path,
            if end.attempts > 1 {
                format!(" after {} attempts", end.attempts)
            } else {
                String::new()
            },
            a.node.trim_end_matches('/'),
            end.run_id
        );
        last_route = Some((end.provider.clone(), end.path.clone()));
        conversation = end.conversation.or(conversation);
        messages.push(json!({"role": "assistant", "content": answer}));
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, thiserror::Error)]
enum TurnError {
    #[error("payment required: {0}")]
    PaymentRequired(String),
    #[error(
        "cannot reach the node at {0}: {1} (is `haca devnet` running? set --node or HACA_NODE)"
    )]
    Unreachable(String, String),
    #[error("{0}")]
    Refused(String),
    #[error("the answer broke off: {0}")]
    Broken(String),
}

/// Sends one turn and prints its text as it streams.
async fn turn(
    http: &reqwest::Client,
    node: &str,
    key: Option<&str>,
    body: &Value,
) -> Result<(String, TurnEnd), TurnError> {
    use futures_util::StreamExt;
    let url = format!("{}/v1/chat/completions", node.trim_end_matches('/'));
    let mut req = http.post(&url).json(body);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| TurnError::Unreachable(url.clone(), e.without_url().to_string()))?;
    let status = resp.status();
    if !status.is_success() {
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        let msg = v["error"]["message"]
            .as_str()
            .unwrap_or("no reason given")
            .to_owned();
        return Err(if status.as_u16() == 402 {
            TurnError::PaymentRequired(msg)
        } else {
            TurnError::Refused(format!("{msg} (HTTP {status})"))
        });
    }
    let mut text = String::new();
    let mut buf = String::new();
    let mut stream = resp.bytes_stream();
    let mut end = None;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| TurnError::Broken(e.without_url().to_string()))?;
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(at) = buf.find("\n\n") {
            let event: String = buf.drain(..at + 2).collect();
            on_event(&event, &mut text, &mut end)?;
        }
    }
    let end = end
        .ok_or_else(|| TurnError::Broken("the stream ended before the answer's receipt".into()))?;
    Ok((text, end))
}

/// One SSE event of a turn: its text printed and kept, the answer's receipt noted.
fn on_event(event: &str, text: &mut String, end: &mut Option<TurnEnd>) -> Result<(), TurnError> {
    let mut out = std::io::stdout();
    for data in event.lines().filter_map(|l| l.strip_prefix("data: ")) {
        if data == "[DONE]" {
            continue;
        }
        let v: Value = serde_json::from_str(data)
            .map_err(|e| TurnError::Broken(format!("an event is not JSON: {e}")))?;
        if let Some(m) = v["error"]["message"].as_str().or(v["error"].as_str()) {
            return Err(if v["status"] == 402 {
                TurnError::PaymentRequired(m.to_owned())
            } else {
                TurnError::Broken(m.to_owned())
            });
        }
        if let Some(t) = v["choices"][0]["delta"]["content"].as_str() {
            text.push_str(t);
            let _ = write!(out, "{t}");
            let _ = out.flush();
        }
        if let Some(calls) = v["choices"][0]["delta"]["tool_calls"].as_array() {
            let _ = write!(out, "[tool calls: {}]", Value::from(calls.clone()));
        }
        let h = &v["haca"];
        if h.is_object() {
            let route = &h["route"];
            let mut path = route["path"].as_str().unwrap_or("?").to_owned();
            if let Some(relay) = route["relay"].as_str() {
                path = format!("{path} via {relay}");
            }
            *end = Some(TurnEnd {
                run_id: h["run_id"].as_str().unwrap_or_default().to_owned(),
                provider: route["provider"].as_str().unwrap_or("?").to_owned(),
                path,
                attempts: route["attempts"].as_array().map_or(1, Vec::len),
                conversation: h["conversation"].as_str().map(str::to_owned),
            });
        }
    }
    Ok(())
}

/// `--private`: each turn sealed to the node's OHTTP key and sent through the relay; the
/// answer comes back as sealed chunks, one SSE event each.
struct Sealing {
    node: String,
    relay: String,
    key: haca_relay::KeyConfig,
}

impl Sealing {
    async fn new(http: &reqwest::Client, node: &str, relay: &str) -> Result<Sealing, CliError> {
        Ok(Sealing {
            node: node.trim_end_matches('/').to_owned(),
            relay: relay.trim_end_matches('/').to_owned(),
            key: Self::fetch_key(http, node).await?,
        })
    }

    /// The node's current key, asked of the node itself (a relay could hand out its own).
    async fn fetch_key(
        http: &reqwest::Client,
        node: &str,
    ) -> Result<haca_relay::KeyConfig, CliError> {
        let url = format!("{}/v1/ohttp/config", node.trim_end_matches('/'));
        let bytes = async {
            http.get(&url)
                .send()
                .await?
                .error_for_status()?
                .bytes()
                .await
        }
        .await
        .map_err(|e| CliError::Msg(format!("--private: the node's OHTTP keys ({url}): {e}")))?;
        haca_relay::KeyConfig::decode_list(&bytes)
            .map_err(|e| CliError::Msg(format!("--private: {url}: {e}")))?
            .into_iter()
            .next()
            .ok_or_else(|| CliError::Msg(format!("--private: {url} lists no key")))
    }

    async fn turn(
        &mut self,
        http: &reqwest::Client,
        body: &Value,
    ) -> Result<(String, TurnEnd), TurnError> {
        use futures_util::StreamExt;
        let url = format!("{}/v1/ohttp", self.relay);
        let mut refreshed = false;
        let (resp, ctx) = loop {
            let (sealed, ctx) = haca_relay::encapsulate(&self.key, body.to_string().as_bytes())
                .map_err(|e| TurnError::Refused(format!("sealing the turn: {e}")))?;
            let resp = http
                .post(&url)
                .header("content-type", haca_relay::MEDIA_TYPE_REQUEST)
                .header("accept", haca_relay::MEDIA_TYPE_CHUNKED_RESPONSE)
                .header(haca_relay::HEADER_STREAM, "true")
                .body(sealed)
                .send()
                .await
                .map_err(|e| TurnError::Unreachable(url.clone(), e.without_url().to_string()))?;
            let problem = resp
                .headers()
                .get("content-type")
                .is_some_and(|v| v == "application/problem+json");
            if problem && !refreshed {
                // The node rotated its keys: fetch them again, once.
                refreshed = true;
                self.key = Self::fetch_key(http, &self.node)
                    .await
                    .map_err(|e| TurnError::Refused(e.to_string()))?;
                continue;
            }
            break (resp, ctx);
        };
        let status = resp.status();
        if !status.is_success() {
            let msg = resp.text().await.unwrap_or_default();
            return Err(TurnError::Refused(format!(
                "the relay answered HTTP {status}: {msg}"
            )));
        }
        let mut decoder = ctx.chunked();
        let mut text = String::new();
        let mut end = None;
        let mut stream = resp.bytes_stream();
        let broken =
            |e: haca_relay::OhttpError| TurnError::Broken(format!("the sealed answer: {e}"));
        while let Some(piece) = stream.next().await {
            let piece = piece.map_err(|e| TurnError::Broken(e.without_url().to_string()))?;
            for chunk in decoder.push(&piece, false).map_err(broken)? {
                on_event(&String::from_utf8_lossy(&chunk), &mut text, &mut end)?;
            }
        }
        for chunk in decoder.push(&[], true).map_err(broken)? {
            on_event(&String::from_utf8_lossy(&chunk), &mut text, &mut end)?;
        }
        let end = end.ok_or_else(|| {
            TurnError::Broken("the stream ended before the answer's receipt".into())
        })?;
        Ok((text, end))
    }
}
