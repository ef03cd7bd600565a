//! `haca memory add TEXT | search QUERY | list | delete ID | export FILE | import FILE`: a
//! user's MemSync memory on a node. The user is an API key (`--api-key`, HACA_API_KEY) or,
//! without one, the CLI's x402 wallet, which signs the memory key message (the same wallet
//! opens the same memory on every node).

use super::{print_json, CliError, NodeArgs};
use clap::{Args, Subcommand};
use haca_gateway::memory::memory_key_message;
use reqwest::Method;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Args)]
pub struct MemoryArgs {
    #[command(subcommand)]
    cmd: MemoryCommand,
    /// The user's API key (hk_...); without it, the CLI's wallet signs as the user.
    #[arg(long, env = "HACA_API_KEY", global = true, hide_env_values = true)]
    api_key: Option<String>,
    /// Print the node's answers as JSON.
    #[arg(long, global = true)]
    json: bool,
    #[command(flatten)]
    node: NodeArgs,
}

#[derive(Subcommand)]
enum MemoryCommand {
    /// Remember TEXT as it is; prints the new row's id as the last line.
    Add {
        text: String,
        /// A category (repeatable): identity, career, interests, relationships, health,
        /// finance, learning, travel, productivity, private.
        #[arg(long = "category")]
        categories: Vec<String>,
        /// What the fact is about (home_city, employer, ...): a later fact with the same
        /// subject supersedes this one.
        #[arg(long)]
        subject: Option<String>,
        /// An event (episodic) rather than a standing fact (semantic).
        #[arg(long)]
        episodic: bool,
    },
    /// The live memories nearest QUERY, best first.
    Search {
        query: String,
        #[arg(long, default_value_t = 5)]
        limit: u32,
    },
    /// Every memory with its state (live, superseded, deleted) and provenance.
    List,
    /// Delete a memory: its text and embedding are gone; a tombstone and a log entry stay.
    Delete { id: String },
    /// Write the memory to FILE as a bundle signed by the node, sealed under a new key that is
    /// written to FILE.key (keep it: the bundle opens with nothing else).
    Export { file: PathBuf },
    /// Import a bundle (and FILE.key beside it, or --key) into this user's memory.
    Import {
        file: PathBuf,
        /// The bundle key (64 hex digits); default: the contents of FILE.key.
        #[arg(long)]
        key: Option<String>,
    },
}

/// The headers that prove the user: the API key, or the wallet's memory signature.
fn credentials(a: &MemoryArgs) -> Result<Vec<(String, String)>, CliError> {
    if let Some(k) = &a.api_key {
        return Ok(vec![("x-api-key".into(), k.clone())]);
    }
    let home = super::wallet::haca_home()?;
    let wallet = super::wallet::load_or_create_wallet(&home)?;
    let address = format!("{:#x}", wallet.address());
    let sig = haca_pay::proof::sign_message(&wallet, &memory_key_message(&address));
    Ok(vec![
        ("x-haca-memory-address".into(), address),
        ("x-haca-memory-signature".into(), sig),
    ])
}

fn key_file(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".key");
    PathBuf::from(name)
}

pub async fn run(a: MemoryArgs) -> Result<ExitCode, CliError> {
    let client = a.node.client();
    let creds = credentials(&a)?;
    let headers: Vec<(&str, &str)> = creds
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let call = |method: Method, path: &'static str, body: Option<Value>| {
        let client = &client;
        let headers = &headers;
        async move {
            client
                .request_json(method, path, body, headers)
                .await
                .map_err(|e| CliError::Msg(format!("{}{path}: {e}", client.base())))
        }
    };
    match &a.cmd {
        MemoryCommand::Add {
            text,
            categories,
            subject,
            episodic,
        } => {
            let item = json!({
                "memory": text,
                "type": if *episodic { "episodic" } else { "semantic" },
                "categories": categories,
                "subject": subject,
            });
            let v = call(
                Method::POST,
                "/v1/memories",
                Some(json!({"memories": [item]})),
            )
            .await?;
            if a.json {
                print_json(&v);
            } else {
                for s in v["superseded"].as_array().into_iter().flatten() {
                    println!("supersedes {}", s["id"].as_str().unwrap_or("?"));
                }
                for id in v["revalidated"].as_array().into_iter().flatten() {
                    println!("re-validated {}", id.as_str().unwrap_or("?"));
                }
                if let Some(id) = v["created"][0].as_str() {
                    println!("{id}");
                }
            }
        }
        MemoryCommand::Search { query, limit } => {
            let v = call(
                Method::POST,
                "/v1/memories/search",
                Some(json!({"query": query, "limit": limit})),
            )
            .await?;
            if a.json {
                print_json(&v);
            } else {
                for m in v["memories"].as_array().into_iter().flatten() {
                    println!(
                        "{:.3}  {}  {}{}",
                        1.0 - m["vector_distance"].as_f64().unwrap_or(1.0),
                        m["id"].as_str().unwrap_or("?"),
                        m["memory"].as_str().unwrap_or(""),
                        if m["stale"] == json!(true) {
                            "  (stale)"
                        } else {
                            ""
                        }
                    );
                }
            }
        }
        MemoryCommand::List => {
            let v = call(Method::GET, "/v1/memories", None).await?;
            if a.json {
                print_json(&v);
            } else {
                for m in v["memories"].as_array().into_iter().flatten() {
                    let state = match m["superseded_by"].as_str() {
                        Some(by) => format!("superseded by {by}"),
                        None => m["state"].as_str().unwrap_or("?").to_owned(),
                    };
                    println!(
                        "{}  {:<24}  {}",
                        m["id"].as_str().unwrap_or("?"),
                        state,
                        m["memory"].as_str().unwrap_or("")
                    );
                }
            }
        }
        MemoryCommand::Delete { id } => {
            let v = client
                .request_json(
                    Method::DELETE,
                    &format!("/v1/memories/{id}"),
                    None,
                    &headers,
                )
                .await
                .map_err(|e| CliError::Msg(format!("deleting memory {id}: {e}")))?;
            if a.json {
                print_json(&v);
            } else {
                println!("deleted {id}");
            }
        }
        MemoryCommand::Export { file } => {
            let v = call(Method::POST, "/v1/memories/export", None).await?;
            let bundle = serde_json::to_vec_pretty(&v["bundle"]).expect("JSON");
            let key = v["key"].as_str().unwrap_or_default();
            haca_store::write_atomic(file, &bundle, false)
                .map_err(|e| CliError::Msg(format!("{}: {e}", file.display())))?;
            haca_store::write_atomic(&key_file(file), key.as_bytes(), true)
                .map_err(|e| CliError::Msg(format!("{}: {e}", key_file(file).display())))?;
            let rows = v["bundle"]["rows"].as_array().map_or(0, Vec::len);
            eprintln!(
                "{rows} rows exported, signed by node {}; the bundle's key is in {} (keep it private)",
                v["bundle"]["signer"].as_str().unwrap_or("?"),
                key_file(file).display()
            );
            println!("{}", file.display());
        }
        MemoryCommand::Import { file, key } => {
            let read = |p: &Path| {
                std::fs::read_to_string(p)
                    .map_err(|e| CliError::Msg(format!("{}: {e}", p.display())))
            };
            let bundle: Value = serde_json::from_str(&read(file)?).map_err(|e| {
                CliError::Msg(format!(
                    "{}: not a memory bundle (JSON): {e}",
                    file.display()
                ))
            })?;
            let key = match key {
                Some(k) => k.clone(),
                None => read(&key_file(file))?.trim().to_owned(),
            };
            let v = call(
                Method::POST,
                "/v1/memories/import",
                Some(json!({"bundle": bundle, "key": key})),
            )
            .await?;
            if a.json {
                print_json(&v);
            } else {
                println!("imported {}", v["imported"]);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
