//! `haca loadgen`: a bounded burst of runs against a node, with runs/s and latency percentiles.

use super::CliError;
use crate::client::{ClientError, NodeClient};
use clap::Args;
use reqwest::Method;
use serde_json::json;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

#[derive(Args)]
pub struct LoadgenArgs {
    #[arg(long, default_value = "example/mnist-mlp")]
    model: String,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Requests in all.
    #[arg(long, default_value_t = 5000)]
    requests: usize,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    #[arg(long, env = "HACA_NODE", default_value = "http://127.0.0.1:7070")]
    node: String,
}

pub async fn run(a: LoadgenArgs) -> Result<ExitCode, CliError> {
    let mut client = NodeClient::new(&a.node, None);
    let data: Vec<f32> = (0..784).map(|i| (i % 255) as f32 / 255.0).collect();
    let body = json!({"model": a.model, "input": {"input": {"shape": [1, 784], "data": data}}});
    // One warm-up run, which also checks the model and input before the burst. A node that
    // charges gets every run paid from one API key, funded for the burst (devnet's faucet).
    match client
        .send_json(Method::POST, "/v1/infer", body.clone())
        .await
    {
        Err(ClientError::Api { status: 402, .. }) => {
            let key = super::apikey::funded_api_key(&client, &a.model, a.requests, "haca loadgen")
                .await?;
            client = NodeClient::new(&a.node, Some(key));
            client
                .send_json(Method::POST, "/v1/infer", body.clone())
                .await?;
        }
        r => {
            r?;
        }
    }
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..a.concurrency.max(1) {
        let (client, body, next, total) = (client.clone(), body.clone(), next.clone(), a.requests);
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0usize;
            while next.fetch_add(1, Ordering::Relaxed) < total {
                let t = Instant::now();
                match client
                    .send_json(Method::POST, "/v1/infer", body.clone())
                    .await
                {
                    Ok(_) => lat.push(t.elapsed().as_secs_f64() * 1e3),
                    Err(_) => errors += 1,
                }
            }
            (lat, errors)
        }));
    }
    let mut lat = Vec::new();
    let mut errors = 0;
    for w in workers {
        let (l, e) = w
            .await
            .map_err(|e| CliError::Msg(format!("worker stopped: {e}")))?;
        lat.extend(l);
        errors += e;
    }
    let secs = started.elapsed().as_secs_f64();
    lat.sort_by(|x, y| x.total_cmp(y));
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(f64::NAN)
    };
    let rps = lat.len() as f64 / secs;
    if a.json {
        println!(
            "{}",
            json!({"ok": lat.len(), "errors": errors, "seconds": secs, "runs_per_s": rps, "p50_ms": pct(0.5), "p99_ms": pct(0.99), "concurrency": a.concurrency})
        );
    } else {
        println!("{} runs ok, {errors} errors in {secs:.2}s: {rps:.0} runs/s; latency p50 {:.3} ms, p99 {:.3} ms (concurrency {})", lat.len(), pct(0.5), pct(0.99), a.concurrency);
    }
    Ok(if errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
