//! A JSON-RPC node for unit tests: each request's JSON goes to a handler, whose `result` (or
//! `Err` error object) is answered; the calls are counted by method.

use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Calls counted by method name.
pub(crate) type Calls = Arc<Mutex<HashMap<String, u64>>>;

/// Serves `handler` on a loopback port; returns its URL and its call counts.
pub(crate) async fn serve(
    handler: impl Fn(&Value) -> Result<Value, Value> + Send + Sync + 'static,
) -> (String, Calls) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let calls: Calls = Default::default();
    let (counted, handler) = (calls.clone(), Arc::new(handler));
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let (counted, handler) = (counted.clone(), handler.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                // One request per connection: read until its body is whole.
                let req: Value = loop {
                    let mut chunk = [0u8; 4096];
                    let n = s.read(&mut chunk).await.unwrap();
                    assert!(n > 0, "the request ended early");
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf);
                    if let Some((_, body)) = text.split_once("\r\n\r\n") {
                        if let Ok(v) = serde_json::from_str(body) {
                            break v;
                        }
                    }
                };
                let method = req["method"].as_str().unwrap_or_default().to_owned();
                *counted.lock().unwrap().entry(method).or_default() += 1;
                let answer = match handler(&req) {
                    Ok(result) => json!({"jsonrpc": "2.0", "id": req["id"], "result": result}),
                    Err(error) => json!({"jsonrpc": "2.0", "id": req["id"], "error": error}),
                };
                let body = answer.to_string();
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    (url, calls)
}

/// How many times `method` was called.
pub(crate) fn count(calls: &Calls, method: &str) -> u64 {
    calls.lock().unwrap().get(method).copied().unwrap_or(0)
}
