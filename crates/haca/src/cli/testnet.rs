//! `haca testnet`: a validator network of separate processes on loopback, for trying the
//! chain and for fault tests. `up` writes a genesis and one config per validator (once) and
//! starts every validator that is not running; `status` asks each for its recent blocks;
//! `stop` ends them.

use super::{print_json, CliError};
use crate::cli::validator_node::{
    Peer, TestnetFile, TestnetValidator, TimeoutsMs, ValidatorConfig,
};
use clap::{Args, Subcommand};
use haca_chain::consensus::Fault;
use haca_core::settlement::{Genesis, SettlementParams, Validator, ValidatorSet};
use haca_core::NodeId;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Subcommand)]
pub enum TestnetCommand {
    /// Create the testnet in DIR (first time) and start every validator that is not running.
    Up(UpArgs),
    /// Each validator's height and the block ids it committed at its recent heights.
    Status {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Start one more validator and add it to the validator set by governance, approved
    /// with the keys of the validators in DIR.
    Add {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Remove a validator from the set by governance, then stop its process.
    Remove {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        validator: usize,
    },
    /// Stop every validator, or one.
    Stop {
        #[arg(long)]
        dir: PathBuf,
        /// The index of the validator to stop (all when absent).
        #[arg(long)]
        validator: Option<usize>,
        /// Kill at once (SIGKILL) instead of asking the process to stop.
        #[arg(long)]
        kill: bool,
    },
}

#[derive(Args)]
pub struct UpArgs {
    #[arg(long)]
    dir: PathBuf,
    /// How many validators (when creating the testnet).
    #[arg(long, default_value_t = 4)]
    validators: usize,
    /// A gateway key (node id) to register in the genesis; repeat for several.
    #[arg(long)]
    gateway: Vec<NodeId>,
    /// A round closes when its oldest record has waited this long...
    #[arg(long, default_value_t = 100)]
    round_interval_ms: u64,
    /// ...or when this many records wait.
    #[arg(long, default_value_t = 10_000)]
    max_round_records: u64,
    #[arg(long, default_value_t = 1_000)]
    timeout_propose_ms: u64,
    #[arg(long, default_value_t = 500)]
    timeout_vote_ms: u64,
    /// Make validator I misbehave on purpose, for fault tests: `I=settle-forged` (its
    /// proposals settle a forged record) or `I=equivocate` (its proposals come as two
    /// different blocks for one round). Repeatable; used only when creating the testnet.
    #[arg(long, value_name = "I=KIND", value_parser = parse_fault)]
    fault: Vec<(usize, Fault)>,
    /// Validator I listens and is reached at the I-th of these addresses, on ports 7100
    /// (HTTP) and 7200 (consensus), instead of free loopback ports: for validators on other
    /// hosts or containers (deploy/compose.yaml). One per validator; used only when
    /// creating the testnet.
    #[arg(long, value_name = "IP")]
    ip: Vec<std::net::IpAddr>,
    /// Write the testnet's files and start nothing (each validator then runs as `haca node
    /// --config DIR/vI/haca.toml` wherever it lives).
    #[arg(long)]
    no_start: bool,
}

/// The ports a validator at an `--ip` address listens on.
pub const DEPLOY_HTTP_PORT: u16 = 7100;
pub const DEPLOY_P2P_PORT: u16 = 7200;

/// Writes a validator's config twice: `config.json` (what `haca testnet` reads back) and
/// `haca.toml`, the node config file format with the same fields as its `[validator]`
/// section (what `haca node --config` takes anywhere).
fn write_validator_config(vdir: &Path, cfg: &ValidatorConfig) -> Result<(), CliError> {
    write(
        &vdir.join("config.json"),
        &serde_json::to_string_pretty(cfg).expect("configs serialize"),
    )?;
    let file = crate::cli::config::FileConfig {
        node: crate::cli::config::NodeSection {
            roles: Some(vec!["validator".into()]),
            ..Default::default()
        },
        validator: Some(cfg.clone()),
        ..Default::default()
    };
    write(
        &vdir.join("haca.toml"),
        &format!(
            "# A validator of this testnet: `haca node --config haca.toml` (paths are relative to this file).\n{}",
            file.to_toml()
        ),
    )
}

fn parse_fault(s: &str) -> Result<(usize, Fault), String> {
    let (i, kind) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected I=KIND, e.g. 0=settle-forged"))?;
    let i = i
        .trim()
        .parse()
        .map_err(|e| format!("{s:?}: validator index {i:?}: {e}"))?;
    Ok((i, kind.trim().parse()?))
}

/// A loopback port that is free now, for a validator to listen on later. Picked below
/// Linux's ephemeral range (32768 and up): a port the kernel handed out for `bind(0)` and
/// released goes back to that range, where any outgoing connection (the validators dial each
/// other) may take it before its validator starts.
fn free_port() -> Result<u16, CliError> {
    for _ in 0..200 {
        let port = rand::Rng::gen_range(&mut rand::thread_rng(), 20_000..32_000u16);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| CliError::Msg(format!("no free loopback port: {e}")))?;
    Ok(l.local_addr()
        .map_err(|e| CliError::Msg(e.to_string()))?
        .port())
}

fn write(path: &Path, text: &str) -> Result<(), CliError> {
    haca_store::write_atomic(path, text.as_bytes(), false)
        .map_err(|e| CliError::Msg(format!("{}: {e}", path.display())))
}

/// Writes keys, genesis, configs and `testnet.json` for a new testnet.
fn create(a: &UpArgs) -> Result<TestnetFile, CliError> {
    if a.validators == 0 {
        return Err(CliError::Msg("--validators: at least one".into()));
    }
    if let Some((i, _)) = a.fault.iter().find(|(i, _)| *i >= a.validators) {
        return Err(CliError::Msg(format!(
            "--fault: {i} is not a validator of this testnet (0..{})",
            a.validators
        )));
    }
    if !a.ip.is_empty() && a.ip.len() != a.validators {
        return Err(CliError::Msg(format!(
            "--ip: give one address per validator ({} for --validators {})",
            a.ip.len(),
            a.validators
        )));
    }
    std::fs::create_dir_all(&a.dir)
        .map_err(|e| CliError::Msg(format!("{}: {e}", a.dir.display())))?;
    let mut members = Vec::new();
    for i in 0..a.validators {
        let dir = PathBuf::from(format!("v{i}"));
        std::fs::create_dir_all(a.dir.join(&dir))
            .map_err(|e| CliError::Msg(format!("{}: {e}", a.dir.join(&dir).display())))?;
        let key = haca_store::load_or_create_key(&a.dir.join(&dir).join("validator.key"))
            .map_err(|e| CliError::Msg(e.to_string()))?;
        let (http, p2p) = match a.ip.get(i) {
            Some(ip) => (
                format!("http://{}", SocketAddr::new(*ip, DEPLOY_HTTP_PORT)),
                SocketAddr::new(*ip, DEPLOY_P2P_PORT),
            ),
            None => (
                format!("http://127.0.0.1:{}", free_port()?),
                format!("127.0.0.1:{}", free_port()?)
                    .parse()
                    .expect("loopback address"),
            ),
        };
        members.push(TestnetValidator {
            index: i,
            validator_id: key.node_id(),
            http,
            p2p,
            dir,
        });
    }
    let set = ValidatorSet::new(
        members
            .iter()
            .map(|m| Validator {
                public_key: m.validator_id,
                power: 1,
            })
            .collect(),
    )
    .map_err(CliError::Msg)?;
    let chain_id = format!("haca-testnet-{}", &set.hash().to_hex()[..8]);
    // The testnet's dev enclave CA: a gateway started with `devnet --chain DIR` runs its dev
    // enclave under it, and the genesis trusts its root (documents under it stay marked dev).
    let dev_root = crate::enclave::dev_ca_root(&a.dir.join(crate::enclave::DEV_CA_SEED_FILE))
        .map_err(CliError::Msg)?;
    let genesis = Genesis {
        tee: Some(crate::cli::devnet::devnet_tee_config(&dev_root)),
        chain_id: chain_id.clone(),
        genesis_time_ms: crate::now_ms(),
        validators: set,
        gateways: a.gateway.clone(),
        settlement: SettlementParams {
            max_round_records: a.max_round_records,
            round_interval_ms: a.round_interval_ms,
        },
    };
    write(
        &a.dir.join("genesis.json"),
        &serde_json::to_string_pretty(&genesis).expect("genesis serializes"),
    )?;
    for m in &members {
        let cfg = ValidatorConfig {
            data_dir: PathBuf::from("."),
            genesis: PathBuf::from("../genesis.json"),
            http_listen: m
                .http
                .trim_start_matches("http://")
                .parse()
                .expect("loopback address"),
            p2p_listen: m.p2p,
            peers: members
                .iter()
                .filter(|o| o.index != m.index)
                .map(|o| Peer {
                    p2p: o.p2p,
                    http: o.http.clone(),
                })
                .collect(),
            timeouts_ms: TimeoutsMs {
                propose: a.timeout_propose_ms,
                prevote: a.timeout_vote_ms,
                precommit: a.timeout_vote_ms,
            },
            fault: a
                .fault
                .iter()
                .rev()
                .find(|(i, _)| *i == m.index)
                .map(|(_, f)| *f),
        };
        if let Some(f) = cfg.fault {
            eprintln!(
                "validator {}: fault {f} (it misbehaves on purpose, for fault tests)",
                m.index
            );
        }
        write_validator_config(&a.dir.join(&m.dir), &cfg)?;
    }
    let file = TestnetFile {
        chain_id,
        validators: members,
    };
    write(
        &a.dir.join("testnet.json"),
        &serde_json::to_string_pretty(&file).expect("testnet file serializes"),
    )?;
    Ok(file)
}

/// Whether `pid` is a live process (a zombie is not).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesized command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X']))
            .unwrap_or(false),
        Err(_) => false,
    }
}

fn pid_of(dir: &Path) -> Option<i32> {
    std::fs::read_to_string(dir.join("pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|&p| alive(p))
}

fn spawn(dir: &Path, m: &TestnetValidator) -> Result<i32, CliError> {
    use std::os::unix::process::CommandExt;
    let vdir = dir.join(&m.dir);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(vdir.join("node.log"))
        .map_err(|e| CliError::Msg(format!("{}: {e}", vdir.join("node.log").display())))?;
    let exe = std::env::current_exe()
        .map_err(|e| CliError::Msg(format!("cannot find the haca binary: {e}")))?;
    let child = std::process::Command::new(exe)
        .args(["node", "--roles", "validator", "--config"])
        .arg(vdir.join("config.json"))
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().map_err(|e| CliError::Msg(e.to_string()))?)
        .stderr(log)
        // Its own process group: the validator outlives this command and a ctrl-c on it.
        .process_group(0)
        .spawn()
        .map_err(|e| CliError::Msg(format!("cannot start validator {}: {e}", m.index)))?;
    let pid = child.id() as i32;
    write(&vdir.join("pid"), &pid.to_string())?;
    Ok(pid)
}

async fn wait_healthy(m: &TestnetValidator, pid: i32, vdir: &Path) -> Result<(), CliError> {
    let client = reqwest::Client::new();
    let give_up = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = client
            .get(format!("{}/healthz", m.http))
            .timeout(Duration::from_secs(2))
            .send()
            .await
        {
            if r.status().is_success() {
                return Ok(());
            }
        }
        if !alive(pid) || Instant::now() >= give_up {
            let log = std::fs::read_to_string(vdir.join("node.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            return Err(CliError::Msg(format!(
                "validator {} did not come up; the end of {}:\n{}",
                m.index,
                vdir.join("node.log").display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn up(a: UpArgs) -> Result<ExitCode, CliError> {
    let file = if a.dir.join("testnet.json").exists() {
        if !a.fault.is_empty() {
            eprintln!("--fault is used only when creating a testnet; ignored");
        }
        TestnetFile::load(&a.dir).map_err(CliError::Msg)?
    } else {
        let f = create(&a)?;
        eprintln!(
            "created testnet {} with {} validators in {}",
            f.chain_id,
            f.validators.len(),
            a.dir.display()
        );
        f
    };
    if a.no_start {
        println!(
            "testnet {} written to {}; nothing started",
            file.chain_id,
            a.dir.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mut started = Vec::new();
    for m in &file.validators {
        let vdir = a.dir.join(&m.dir);
        if let Some(pid) = pid_of(&vdir) {
            eprintln!("validator {} is already running (pid {pid})", m.index);
            continue;
        }
        let pid = spawn(&a.dir, m)?;
        eprintln!("validator {}: started, pid {pid}, {}", m.index, m.http);
        started.push((m, pid, vdir));
    }
    for (m, pid, vdir) in &started {
        wait_healthy(m, *pid, vdir).await?;
    }
    println!("testnet {} is up", file.chain_id);
    for m in &file.validators {
        println!(
            "  validator {}: {} (p2p {}) id {}",
            m.index, m.http, m.p2p, m.validator_id
        );
    }
    println!("  genesis:  {}", a.dir.join("genesis.json").display());
    println!(
        "try:       haca testnet status --dir {}   |   haca devnet --chain {}",
        a.dir.display(),
        a.dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// One validator's view, as `status --json` prints it.
async fn validator_status(client: &reqwest::Client, dir: &Path, m: &TestnetValidator) -> Value {
    let running = pid_of(&dir.join(&m.dir)).is_some();
    let status: Option<Value> = async {
        let r = client
            .get(format!("{}/v1/chain/status", m.http))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?;
        r.json().await.ok()
    }
    .await;
    let mut v = json!({"index": m.index, "validator_id": m.validator_id, "url": m.http,
        "up": running && status.is_some(), "height": Value::Null, "hashes": {}});
    if let Some(s) = status {
        v["height"] = s["height"].clone();
        v["pending"] = s["pending"].clone();
        let mut hashes = serde_json::Map::new();
        for b in s["recent_blocks"].as_array().into_iter().flatten() {
            if let (Some(h), Some(id)) = (b["height"].as_u64(), b["block_id"].as_str()) {
                hashes.insert(h.to_string(), json!(id));
            }
        }
        v["hashes"] = Value::Object(hashes);
    }
    v
}

async fn status(dir: &Path, as_json: bool) -> Result<ExitCode, CliError> {
    let file = TestnetFile::load(dir).map_err(CliError::Msg)?;
    let client = reqwest::Client::new();
    let mut out = Vec::new();
    for m in &file.validators {
        out.push(validator_status(&client, dir, m).await);
    }
    let v = json!({"chain_id": file.chain_id, "validators": out});
    if as_json {
        print_json(&v);
        return Ok(ExitCode::SUCCESS);
    }
    println!("testnet {}", file.chain_id);
    for s in &out {
        let last = s["hashes"]
            .as_object()
            .and_then(|m| m.iter().max_by_key(|(h, _)| h.parse::<u64>().unwrap_or(0)))
            .map(|(h, id)| {
                format!(
                    "block {h} {}",
                    &id.as_str().unwrap_or("")[..12.min(id.as_str().unwrap_or("").len())]
                )
            })
            .unwrap_or_default();
        if s["up"].as_bool() == Some(true) {
            println!(
                "  validator {}: up    height {:>6}  pending {:>6}  {last}",
                s["index"], s["height"], s["pending"]
            );
        } else {
            println!("  validator {}: down", s["index"]);
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn stop(dir: &Path, only: Option<usize>, kill: bool) -> Result<ExitCode, CliError> {
    let file = TestnetFile::load(dir).map_err(CliError::Msg)?;
    if let Some(i) = only {
        if i >= file.validators.len() {
            return Err(CliError::Msg(format!(
                "--validator: {i} is not a validator of this testnet (0..{})",
                file.validators.len()
            )));
        }
    }
    let mut stopping = Vec::new();
    for m in file
        .validators
        .iter()
        .filter(|m| only.is_none_or(|i| i == m.index))
    {
        let vdir = dir.join(&m.dir);
        match pid_of(&vdir) {
            Some(pid) => {
                let sig = if kill { libc::SIGKILL } else { libc::SIGTERM };
                // SAFETY: signalling a pid this testnet started; no memory is involved.
                unsafe { libc::kill(pid, sig) };
                stopping.push((m.index, pid, vdir));
            }
            None => eprintln!("validator {} is not running", m.index),
        }
    }
    for (index, pid, vdir) in stopping {
        let give_up = Instant::now() + Duration::from_secs(20);
        while alive(pid) && Instant::now() < give_up {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if alive(pid) {
            eprintln!("validator {index} did not stop within 20 s; killing it");
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let _ = std::fs::remove_file(vdir.join("pid"));
        println!("validator {index} stopped");
    }
    Ok(ExitCode::SUCCESS)
}

/// A client for the first validator that is running.
fn running_client(dir: &Path, file: &TestnetFile) -> Result<crate::client::NodeClient, CliError> {
    file.validators
        .iter()
        .find(|v| pid_of(&dir.join(&v.dir)).is_some())
        .map(|v| crate::client::NodeClient::new(&v.http, None))
        .ok_or_else(|| CliError::Msg("no validator of this testnet is running".into()))
}

fn read_config(path: &Path) -> Result<ValidatorConfig, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::Msg(format!("{}: {e}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| CliError::Msg(format!("{}: {e}", path.display())))
}

async fn add(dir: &Path) -> Result<ExitCode, CliError> {
    let mut file = TestnetFile::load(dir).map_err(CliError::Msg)?;
    let keys = file.validator_keys(dir).map_err(CliError::Msg)?;
    let client = running_client(dir, &file)?;
    let index = file.validators.len();
    let vdir = PathBuf::from(format!("v{index}"));
    std::fs::create_dir_all(dir.join(&vdir))
        .map_err(|e| CliError::Msg(format!("{}: {e}", dir.join(&vdir).display())))?;
    let key = haca_store::load_or_create_key(&dir.join(&vdir).join("validator.key"))
        .map_err(|e| CliError::Msg(e.to_string()))?;
    let member = TestnetValidator {
        index,
        validator_id: key.node_id(),
        http: format!("http://127.0.0.1:{}", free_port()?),
        p2p: format!("127.0.0.1:{}", free_port()?)
            .parse()
            .expect("loopback address"),
        dir: vdir.clone(),
    };
    let template = read_config(&dir.join(&file.validators[0].dir).join("config.json"))?;
    let cfg = ValidatorConfig {
        data_dir: PathBuf::from("."),
        genesis: PathBuf::from("../genesis.json"),
        http_listen: member
            .http
            .trim_start_matches("http://")
            .parse()
            .expect("loopback address"),
        p2p_listen: member.p2p,
        peers: file
            .validators
            .iter()
            .map(|o| Peer {
                p2p: o.p2p,
                http: o.http.clone(),
            })
            .collect(),
        timeouts_ms: template.timeouts_ms,
        fault: None,
    };
    write_validator_config(&dir.join(&vdir), &cfg)?;
    // The others dial it too after their next restart.
    for o in &file.validators {
        let path = dir.join(&o.dir).join("config.json");
        let mut c = read_config(&path)?;
        c.peers.push(Peer {
            p2p: member.p2p,
            http: member.http.clone(),
        });
        write_validator_config(&dir.join(&o.dir), &c)?;
    }
    file.validators.push(member.clone());
    write(
        &dir.join("testnet.json"),
        &serde_json::to_string_pretty(&file).expect("testnet file serializes"),
    )?;
    let pid = spawn(dir, &member)?;
    wait_healthy(&member, pid, &dir.join(&vdir)).await?;
    eprintln!(
        "validator {index}: started as a follower, pid {pid}, {}; proposing it as a validator",
        member.http
    );
    let action = haca_chain::state::GovAction::AddValidator {
        public_key: member.validator_id,
        power: 1,
    };
    super::govern::propose(&client, action, &keys, Vec::new(), true).await?;
    println!(
        "validator {index} ({}) joined the validator set",
        member.validator_id
    );
    Ok(ExitCode::SUCCESS)
}

async fn remove(dir: &Path, index: usize) -> Result<ExitCode, CliError> {
    let file = TestnetFile::load(dir).map_err(CliError::Msg)?;
    let member = file.validators.get(index).ok_or_else(|| {
        CliError::Msg(format!(
            "--validator: {index} is not a validator of this testnet (0..{})",
            file.validators.len()
        ))
    })?;
    let keys = file.validator_keys(dir).map_err(CliError::Msg)?;
    let client = running_client(dir, &file)?;
    let action = haca_chain::state::GovAction::RemoveValidator {
        public_key: member.validator_id,
    };
    super::govern::propose(&client, action, &keys, Vec::new(), true).await?;
    println!(
        "validator {index} ({}) left the validator set",
        member.validator_id
    );
    stop(dir, Some(index), false).await
}

pub async fn run(cmd: TestnetCommand) -> Result<ExitCode, CliError> {
    match cmd {
        TestnetCommand::Up(a) => up(a).await,
        TestnetCommand::Add { dir } => add(&dir).await,
        TestnetCommand::Remove { dir, validator } => remove(&dir, validator).await,
        TestnetCommand::Status { dir, json } => status(&dir, json).await,
        TestnetCommand::Stop {
            dir,
            validator,
            kill,
        } => stop(&dir, validator, kill).await,
    }
}
