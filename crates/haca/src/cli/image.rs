//! `haca image PROMPT [--out FILE]`: generates images through a node's image providers and
//! writes them to files, each checked against the hash the run's receipt covers.

use super::CliError;
use base64::Engine as _;
use clap::Args;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct ImageArgs {
    /// What to draw.
    prompt: String,
    /// The image model, as provider/model (see /v1/models).
    #[arg(long)]
    model: String,
    /// Where to write the image; with --n above 1, FILE's stem gets -1, -2, ... Default:
    /// `<run id>-<i>.<png|jpg|webp>` in the current directory.
    #[arg(long)]
    out: Option<PathBuf>,
    /// How many images (1 to 4).
    #[arg(long, default_value_t = 1)]
    n: u32,
    /// WIDTHxHEIGHT, or auto.
    #[arg(long, default_value = "auto")]
    size: String,
    /// The privacy the request requires: any, private or tee.
    #[arg(long, default_value = "any", value_parser = ["any", "private", "tee"])]
    privacy: String,
    /// An API key (`haca apikey create`) to pay with.
    #[arg(long, env = "HACA_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// The node's URL.
    #[arg(long, env = "HACA_NODE", default_value = "http://127.0.0.1:7070")]
    node: String,
}

pub async fn run(a: ImageArgs) -> Result<ExitCode, CliError> {
    let body = json!({
        "model": a.model, "prompt": a.prompt, "n": a.n, "size": a.size,
        "response_format": "b64_json", "privacy": a.privacy,
    });
    let url = format!("{}/v1/images/generations", a.node.trim_end_matches('/'));
    let mut req = reqwest::Client::new().post(&url).json(&body);
    if let Some(k) = &a.api_key {
        req = req.bearer_auth(k);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| CliError::Msg(format!("{url}: {e}")))?;
    let status = resp.status();
    let v: Value = resp
        .json()
        .await
        .map_err(|e| CliError::Msg(format!("{url}: the answer is not JSON: {e}")))?;
    if !status.is_success() {
        return Err(CliError::Msg(format!(
            "{url}: HTTP {}: {}",
            status.as_u16(),
            v["error"]["message"].as_str().unwrap_or("(no message)")
        )));
    }
    let run_id = v["haca"]["run_id"].as_str().unwrap_or("run").to_owned();
    let data = v["data"].as_array().cloned().unwrap_or_default();
    let receipt_path = v["haca"]["receipt"].as_str().unwrap_or("");
    println!("run {run_id}");
    println!("receipt {receipt_path}");
    if let Some(p) = v["haca"]["route"]["provider"].as_str() {
        println!("route {p}");
    }
    let mut images = Vec::new();
    for (i, item) in data.iter().enumerate() {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(item["b64_json"].as_str().unwrap_or_default())
            .map_err(|e| CliError::Msg(format!("image {i}: b64_json: {e}")))?;
        let facts = haca_exec::image::check_image(&bytes, usize::MAX)
            .map_err(|e| CliError::Msg(format!("image {i} {e}")))?;
        images.push((bytes, facts));
    }
    // Before any file is written: the images are the ones the run's signed receipt covers.
    let receipt_url = format!("{}{receipt_path}", a.node.trim_end_matches('/'));
    let receipt: Value = reqwest::get(&receipt_url)
        .await
        .map_err(|e| CliError::Msg(format!("{receipt_url}: {e}")))?
        .json()
        .await
        .map_err(|e| CliError::Msg(format!("{receipt_url}: the receipt is not JSON: {e}")))?;
    let signed = receipt["boxes"]["execution"]["evidence"]["output_hash"]
        .as_str()
        .and_then(|h| h.parse::<haca_core::Digest>().ok())
        .ok_or_else(|| CliError::Msg(format!("{receipt_url}: no execution output hash")))?;
    let facts: Vec<_> = images.iter().map(|(_, f)| f.clone()).collect();
    let got = haca_exec::image::output_hash(&facts);
    if got != signed {
        return Err(CliError::Msg(format!(
            "the {} image(s) give output hash {got}, the run's receipt signed {signed}: not the images the run served; nothing written",
            facts.len()
        )));
    }
    let mut written = Vec::new();
    for (i, (bytes, facts)) in images.iter().enumerate() {
        let path = match &a.out {
            Some(p) if data.len() == 1 => p.clone(),
            Some(p) => {
                let stem = p.file_stem().map(|s| s.to_string_lossy().into_owned());
                let ext = p.extension().map(|s| s.to_string_lossy().into_owned());
                p.with_file_name(format!(
                    "{}-{}.{}",
                    stem.unwrap_or_default(),
                    i + 1,
                    ext.unwrap_or_else(|| facts.kind.extension().into())
                ))
            }
            None => PathBuf::from(format!("{run_id}-{i}.{}", facts.kind.extension())),
        };
        std::fs::write(&path, bytes)
            .map_err(|e| CliError::Msg(format!("{}: {e}", path.display())))?;
        println!(
            "image {i}: {} ({}, {}x{}, {} bytes, sha256 {})",
            path.display(),
            facts.kind.media_type(),
            facts.width,
            facts.height,
            facts.size,
            facts.sha256
        );
        written.push(path);
    }
    if let Some(last) = written.last() {
        // The last line: the file alone (with several, the last one).
        println!("{}", last.display());
    }
    Ok(ExitCode::SUCCESS)
}
