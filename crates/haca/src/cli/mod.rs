//! Every subcommand's flags and help, defined once, next to the code that runs it.

mod apikey;
mod attest;
mod blob;
mod chat;
pub mod config;
pub mod devnet;
mod govern;
mod image;
mod loadgen;
mod memory;
pub mod relay;
mod show;
mod testnet;
mod token;
pub mod validator_node;
mod verify;
mod wallet;
mod zk;

use crate::client::{ClientError, NodeClient};
use crate::server::Limits;
use clap::{Args, Parser, Subcommand};
use devnet::NodeConfig;
use reqwest::Method;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "haca",
    version,
    about = "haca: verifiable AI inference. Every run carries a receipt whose evidence sits in separate boxes."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where client commands find their node.
#[derive(Args, Clone)]
struct NodeArgs {
    /// The node's URL.
    #[arg(
        long,
        env = "HACA_NODE",
        default_value = "http://127.0.0.1:7070",
        global = true
    )]
    node: String,
    /// Operator token for admin actions on a node that is not on loopback.
    #[arg(long, env = "HACA_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
}

impl NodeArgs {
    fn client(&self) -> NodeClient {
        NodeClient::new(&self.node, self.token.clone())
    }
}

#[derive(Args, Clone)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "HACA_LISTEN", default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    /// The URL clients reach this node at: http(s)://HOST[:PORT], no path or query. x402
    /// payments name it as their resource (never the request's Host header). Default:
    /// http:// and the address bound (on 0.0.0.0, that address as is): a node behind a proxy
    /// or load balancer must set it.
    #[arg(long, env = "HACA_PUBLIC_URL", value_name = "URL", value_parser = parse_public_url)]
    public_url: Option<crate::server::x402::PublicUrl>,
    /// Where the store, keys and blobs live [default: ./.haca; with --chain DIR: DIR/gateway].
    #[arg(long, env = "HACA_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Largest JSON request body, in bytes (413 beyond).
    #[arg(long, env = "HACA_MAX_BODY_BYTES", default_value_t = 16 << 20)]
    max_body_bytes: usize,
    /// Largest model upload, in bytes.
    #[arg(long, env = "HACA_MAX_UPLOAD_BYTES", default_value_t = 512 << 20)]
    max_upload_bytes: usize,
    /// Bytes of model files the in-memory model cache may hold.
    #[arg(long, env = "HACA_CACHE_BYTES", default_value_t = 1 << 30)]
    cache_bytes: u64,
    /// Seconds a client has to send a request's line and headers before its connection is
    /// closed (an idle keep-alive connection waits as long for its next request).
    #[arg(long, env = "HACA_HEADER_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    header_timeout_secs: u64,
    /// Seconds a client has to send a request's body (408 beyond); every 64 KiB received
    /// adds a second, so a large upload at a real speed is not cut.
    #[arg(long, env = "HACA_BODY_TIMEOUT_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    body_timeout_secs: u64,
    /// Connections served at once; more wait to be accepted until one closes.
    #[arg(long, env = "HACA_MAX_CONNECTIONS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    /// A local LLM to serve: any GGUF llama.cpp runs (Llama, Qwen, Gemma, Phi, Mistral, ...),
    /// served as local/<its general.name, slugified, else its file name>. Repeatable: each
    /// is served at once, the first also in the enclave. Default: the first *.gguf under
    /// $HACA_HOME/models (scripts/devnet and .ci/run put Gemma 3 270M there), else the PyPI
    /// package's cache; none found, the node serves no local model.
    #[arg(long, env = "HACA_LLM_MODEL")]
    llm_model: Vec<PathBuf>,
    /// Serve no local LLM even when a GGUF is found.
    #[arg(long, env = "HACA_NO_LLM")]
    no_llm: bool,
    /// The embedding model for MemSync (all-MiniLM-L6-v2's directory). Default:
    /// $HACA_HOME/models/all-MiniLM-L6-v2 (scripts/devnet and .ci/run put it there); none
    /// found, the node serves no memory.
    #[arg(long, env = "HACA_EMBED_MODEL")]
    embed_model: Option<PathBuf>,
    /// The chat model (provider/model) that extracts memories from conversations posted to
    /// /v1/memories; each extraction is a run with its receipt. Default: rules.
    #[arg(long, env = "HACA_MEMORY_EXTRACTOR", value_name = "MODEL")]
    memory_extractor: Option<String>,
    /// A Walrus publisher (its base URL; Walrus's `PUT /v1/blobs`) the node stores uploaded
    /// artifacts and settled rounds' tree dumps with, each id checked against the bytes.
    /// Without one they stay on the node, which serves them at `GET /v1/blobs/{id}`.
    #[arg(long, env = "HACA_WALRUS_PUBLISHER", value_name = "URL")]
    walrus_publisher: Option<String>,
    /// The largest image accepted from an image provider, in bytes; a larger one fails that
    /// route and the next is tried.
    #[arg(long, env = "HACA_MAX_IMAGE_BYTES", default_value_t = haca_exec::image::DEFAULT_MAX_IMAGE_BYTES)]
    max_image_bytes: usize,
    /// An upstream OpenAI-compatible provider (repeatable):
    /// name=NAME,url=BASE_URL,models=A;B[,key_env=VAR][,privacy=standard|tee]
    /// [,fallback=PROVIDER][,timeout=SECONDS][,kind=chat|image]. Its models are served as
    /// NAME/MODEL; kind=image serves them at /v1/images/generations.
    #[arg(long, env = "HACA_PROVIDER", value_delimiter = '|', value_name = "SPEC", value_parser = parse_provider_arg)]
    provider: Vec<ProviderArg>,
    /// A review case class (repeatable): name=NAME,claims=CLAIM;CLAIM[,webhook=URL]. Its
    /// cases clear only when every claim holds; a clearance is posted, signed, to the
    /// webhook. `default` (execution.signed;run.settled) is always there unless redefined.
    #[arg(long, env = "HACA_CASE_CLASS", value_delimiter = '|', value_name = "SPEC", value_parser = parse_case_class)]
    case_class: Vec<haca_review::CaseClass>,
    /// Requests per second per API key (bearer token or X-API-Key), a token bucket: beyond
    /// it, 429 with Retry-After. Absent: no per-key limit.
    #[arg(long, env = "HACA_RATE_PER_KEY", value_name = "PER_SECOND")]
    rate_per_key: Option<f64>,
    /// The per-key bucket's size [default: twice the rate, at least 1].
    #[arg(long, env = "HACA_BURST_PER_KEY")]
    burst_per_key: Option<u32>,
    /// Requests per second per client IP, a token bucket (429 beyond). Absent: no limit.
    #[arg(long, env = "HACA_RATE_PER_IP", value_name = "PER_SECOND")]
    rate_per_ip: Option<f64>,
    /// The per-IP bucket's size [default: twice the rate, at least 1].
    #[arg(long, env = "HACA_BURST_PER_IP")]
    burst_per_ip: Option<u32>,
    /// Requests a route serves at once (repeatable, ROUTE=N: `/v1/infer=64`); more wait a
    /// second for a slot, then 503 with Retry-After.
    #[arg(long, env = "HACA_MAX_CONCURRENT", value_delimiter = ',', value_name = "ROUTE=N", value_parser = parse_route_limit)]
    max_concurrent: Vec<(String, u32)>,
    /// An origin allowed to call the API from a browser (repeatable; `*`: any). None: same
    /// origin only (the panel served by the node itself).
    #[arg(
        long,
        env = "HACA_CORS_ORIGIN",
        value_delimiter = ',',
        value_name = "ORIGIN"
    )]
    cors_origin: Vec<String>,
    /// Run `tee` work in the enclave process at this URL (`haca enclave`, such as `haca
    /// enclave --nsm` in an AWS Nitro enclave behind a proxy) instead of a dev enclave
    /// supervised here. Its documents are checked against the chain's roots like any other.
    #[arg(long, env = "HACA_ENCLAVE", value_name = "URL")]
    enclave: Option<String>,
    /// zkml runs that may wait for their proofs at once; a zkml run beyond is refused before
    /// payment with 503 `prover_busy` and Retry-After.
    #[arg(long, env = "HACA_MAX_PROOF_QUEUE", default_value_t = haca_gateway::zk::DEFAULT_MAX_QUEUED as u64, value_parser = clap::value_parser!(u64).range(1..))]
    max_proof_queue: u64,
}

/// `ROUTE=N` of `--max-concurrent`.
fn parse_route_limit(s: &str) -> Result<(String, u32), String> {
    let (route, n) = s
        .rsplit_once('=')
        .ok_or_else(|| format!("{s:?}: expected ROUTE=N, such as /v1/infer=64"))?;
    if !route.starts_with('/') {
        return Err(format!("{s:?}: a route starts with /"));
    }
    let n: u32 = n
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{s:?}: {n:?} is not a whole number of at least 1"))?;
    Ok((route.to_owned(), n))
}

/// The node's limits from its flags, checked.
fn ops_config(a: &ServeArgs) -> Result<crate::server::ops::OpsConfig, CliError> {
    let bucket = |rate: Option<f64>, burst: Option<u32>| {
        rate.map(|r| (r, burst.unwrap_or_else(|| ((r * 2.0).ceil() as u32).max(1))))
    };
    let cfg = crate::server::ops::OpsConfig {
        per_key: bucket(a.rate_per_key, a.burst_per_key),
        per_ip: bucket(a.rate_per_ip, a.burst_per_ip),
        max_concurrent: a.max_concurrent.iter().cloned().collect(),
        cors_origins: a.cors_origin.clone(),
        off: false,
    };
    crate::server::ops::check(&cfg).map_err(|e| CliError::Msg(format!("limits: {e}")))?;
    Ok(cfg)
}

/// What a node charges in, on which network: flags, `HACA_*` variables, or the config
/// file's `[payments]` section. A known network (Base `eip155:8453`, Base Sepolia
/// `eip155:84532`) brings its USDC address and EIP-712 domain; any other needs all three.
#[derive(Args, Clone, Debug, Default)]
struct PayArgs {
    /// The x402 network, CAIP-2 (`eip155:8453` Base, `eip155:84532` Base Sepolia; their v1
    /// names `base`, `base-sepolia` too) [devnet default: eip155:31337, a local token].
    #[arg(long, env = "HACA_NETWORK", value_name = "CAIP2")]
    network: Option<String>,
    /// The token's contract address [default: USDC on a known network].
    #[arg(long, env = "HACA_ASSET", value_name = "ADDRESS")]
    asset: Option<String>,
    /// The token's EIP-712 domain name [default: USDC's on a known network: "USD Coin" on
    /// Base, "USDC" on Base Sepolia].
    #[arg(long, env = "HACA_TOKEN_NAME")]
    token_name: Option<String>,
    /// The token's EIP-712 domain version [default: "2" on a known network].
    #[arg(long, env = "HACA_TOKEN_VERSION")]
    token_version: Option<String>,
    /// The address payments go to (required to charge on `haca node`).
    #[arg(long, env = "HACA_PAY_TO", value_name = "ADDRESS")]
    pay_to: Option<String>,
    /// How long a payer's authorization for one request may run, in seconds.
    #[arg(long, env = "HACA_MAX_TIMEOUT_SECS", default_value_t = haca_gateway::payment::DEFAULT_MAX_TIMEOUT_SECS)]
    max_timeout_secs: u64,
}

/// The node's payment config from its flags: `None` at price 0 (free, no `/v1/x402`).
/// `devnet` fills in devnet's network, token and payee where none is given.
fn payment_config(
    p: &PayArgs,
    price: u64,
    model_price: Vec<(String, ModelPrice)>,
    facilitator: Option<String>,
    devnet: bool,
) -> Result<Option<haca_gateway::payment::PaymentConfig>, CliError> {
    use haca_gateway::payment::{PaymentConfig, DEVNET_NETWORK};
    if price == 0 {
        return Ok(None);
    }
    let mut cfg = PaymentConfig::devnet(haca_pay::U256::from(price));
    let network = match (&p.network, devnet) {
        (Some(n), _) => n.clone(),
        (None, true) => DEVNET_NETWORK.to_owned(),
        (None, false) => {
            return Err(CliError::Msg(
                "--network (HACA_NETWORK, [payments] network): required to charge, such as \
                 eip155:8453 (Base) or eip155:84532 (Base Sepolia)"
                    .into(),
            ))
        }
    };
    if network != DEVNET_NETWORK || p.asset.is_some() {
        let r = haca_pay::networks::resolve(
            &network,
            p.asset.as_deref(),
            p.token_name.as_deref(),
            p.token_version.as_deref(),
        )
        .map_err(|e| CliError::Msg(format!("payments: {e}")))?;
        cfg.network = r.network;
        cfg.asset = r.asset;
        cfg.token_name = r.token_name;
        cfg.token_version = r.token_version;
    } else {
        if let Some(n) = &p.token_name {
            cfg.token_name = n.clone();
        }
        if let Some(v) = &p.token_version {
            cfg.token_version = v.clone();
        }
    }
    match (&p.pay_to, devnet) {
        (Some(a), _) => {
            cfg.pay_to = haca_pay::networks::parse_address(a).ok_or_else(|| {
                CliError::Msg(format!(
                    "--pay-to (HACA_PAY_TO, [payments] pay_to): {a:?} is not an address (0x + 40 hex digits)"
                ))
            })?
        }
        (None, true) => {}
        (None, false) => {
            return Err(CliError::Msg(
                "--pay-to (HACA_PAY_TO, [payments] pay_to): required to charge: the address payments go to"
                    .into(),
            ))
        }
    }
    if let Some(f) = &facilitator {
        let ok = reqwest::Url::parse(f)
            .map(|u| matches!(u.scheme(), "http" | "https"))
            .unwrap_or(false);
        if !ok {
            return Err(CliError::Msg(format!(
                "--facilitator (HACA_FACILITATOR, [payments] facilitator): {f:?} is not an http(s) URL"
            )));
        }
    }
    cfg.max_timeout_seconds = p.max_timeout_secs;
    cfg.facilitator = facilitator;
    for (m, p) in model_price {
        match p {
            ModelPrice::Run(units) => {
                cfg.model_prices.insert(m, haca_pay::U256::from(units));
            }
            ModelPrice::Tokens { input, output } => {
                cfg.token_prices.insert(
                    m,
                    haca_gateway::payment::TokenPrice {
                        input: haca_pay::U256::from(input),
                        output: haca_pay::U256::from(output),
                    },
                );
            }
        }
    }
    Ok(Some(cfg))
}

fn parse_public_url(s: &str) -> Result<crate::server::x402::PublicUrl, String> {
    crate::server::x402::PublicUrl::parse(s)
}

fn parse_case_class(s: &str) -> Result<haca_review::CaseClass, String> {
    haca_review::CaseClass::parse(s).map_err(|e| e.to_string())
}

/// A parsed `--provider`.
#[derive(Clone, Debug)]
pub struct ProviderArg(
    haca_exec::llm::router::Provider,
    std::time::Duration,
    /// `kind=image`: an image provider.
    bool,
);

fn parse_provider_arg(s: &str) -> Result<ProviderArg, String> {
    let mut image = false;
    let mut rest = Vec::new();
    for part in s.split(',') {
        match part.strip_prefix("kind=") {
            Some("image") => image = true,
            Some("chat") => {}
            Some(k) => return Err(format!("--provider: kind={k} is not chat or image")),
            None => rest.push(part),
        }
    }
    haca_gateway::chat::parse_provider(&rest.join(",")).map(|(p, t)| ProviderArg(p, t, image))
}

/// The GGUF the node serves, by the one rule of [`haca_exec::llm::model_home`]:
/// `--llm-model`/HACA_LLM_MODEL (which must exist), else the first `*.gguf` under
/// $HACA_HOME/models, else the PyPI package's cache; none found, no local model (and a note
/// saying how to install one).
fn find_llm_model(a: &ServeArgs) -> Result<Vec<PathBuf>, CliError> {
    if a.no_llm {
        return Ok(Vec::new());
    }
    let find = |p: Option<&std::path::Path>| {
        haca_exec::llm::model_home::find_local_model(p)
            .map_err(|e| CliError::Msg(format!("--llm-model: {e}")))
    };
    if !a.llm_model.is_empty() {
        return a
            .llm_model
            .iter()
            .map(|p| find(Some(p)).map(|f| f.unwrap_or_else(|| p.clone())))
            .collect();
    }
    let found = find(None)?;
    if found.is_none() {
        tracing::info!(
            "no local LLM found, so none is served: {}",
            haca_exec::llm::model_home::INSTALL_HINT
        );
    }
    Ok(found.into_iter().collect())
}

#[derive(Subcommand)]
enum Command {
    /// Run every role in one process on an embedded store, with the example model.
    Devnet {
        #[command(flatten)]
        serve: ServeArgs,
        /// Settle on the validator network in this `haca testnet` directory instead of a
        /// validator in this process.
        #[arg(long)]
        chain: Option<PathBuf>,
        /// Base units (6 decimals: 1000 = 0.001 USDC) charged per `/v1/infer` run, with x402
        /// or an API key, on a local token (chain eip155:31337; `haca wallet fund` is its
        /// faucet). 0 serves for free and takes no payments.
        #[arg(long, env = "HACA_PRICE_PER_REQUEST", default_value_t = 1000)]
        price_per_request: u64,
        /// The price of one run of a model, by label, overriding --price-per-request for it
        /// (repeatable): `--model-price example/mnist-mlp=2500`; or a chat model's prices per
        /// 1,000 prompt and completion tokens, which x402 `upto` payments settle from:
        /// `--model-price openai/gpt-4o-mini=150/600`.
        #[arg(long, value_name = "LABEL=UNITS|MODEL=IN/OUT", value_parser = parse_model_price)]
        model_price: Vec<(String, ModelPrice)>,
        /// Verify and settle x402 payments with this remote facilitator (its base URL, such
        /// as another node's http://HOST:PORT/v1/x402) instead of this node's own ledger.
        #[arg(long, env = "HACA_FACILITATOR")]
        facilitator: Option<String>,
        #[command(flatten)]
        pay: PayArgs,
        /// Settlement rounds close when their oldest record is this many milliseconds old
        /// (written into a new devnet's genesis; an existing genesis keeps its own).
        #[arg(long, default_value_t = devnet::DEFAULT_ROUND_INTERVAL_MS)]
        round_interval_ms: u64,
        /// Start no dev enclave (no `mode: "tee"` runs, no tee chat path).
        #[arg(long)]
        no_enclave: bool,
        /// Give loopback clients no operator rights (admin actions and reading every run
        /// then need the operator token, as on `haca node`).
        #[arg(long)]
        no_loopback_admin: bool,
        /// A source the data role may fetch (repeatable): a URL prefix, matched on scheme,
        /// host, port and whole path segments (`https://api.example.com/v1`). None: every
        /// fetch is refused.
        #[arg(long, value_name = "PREFIX", value_parser = parse_allow_rule)]
        data_allow: Vec<haca_data::AllowRule>,
        #[command(flatten)]
        evm: crate::evm::EvmArgs,
    },
    /// Run a node with the given roles (gateway, and validator to settle its runs in-process).
    /// Admin actions need the operator token.
    Node {
        #[command(flatten)]
        serve: ServeArgs,
        /// Comma-separated roles: `gateway`, `gateway,validator` (a one-validator chain in
        /// this process), `validator` alone with --config (one validator of a network), and
        /// `data` (fetch allowed sources into signed data items), alone or beside a gateway.
        #[arg(
            long,
            env = "HACA_ROLES",
            default_value = "gateway",
            value_delimiter = ','
        )]
        roles: Vec<String>,
        /// A source the data role may fetch (repeatable), as on `haca devnet`.
        #[arg(long, value_name = "PREFIX", value_parser = parse_allow_rule)]
        data_allow: Vec<haca_data::AllowRule>,
        /// The node's config file: TOML (`haca config example` prints one, every flag a key),
        /// whose `[validator]` section is a validator's config; or a validator's JSON config,
        /// as `haca testnet up` writes them. Flags and `HACA_*` variables override the file.
        #[arg(long, env = "HACA_CONFIG")]
        config: Option<PathBuf>,
        /// Base units (6 decimals: 1000 = 0.001 USDC) charged per run, with x402 or an API
        /// key; 0 (the default) serves for free. Charging needs --network and --pay-to.
        #[arg(long, env = "HACA_PRICE_PER_REQUEST", default_value_t = 0)]
        price_per_request: u64,
        /// The price of one run of a model, by label (repeatable), as on `haca devnet`.
        #[arg(long, value_name = "LABEL=UNITS|MODEL=IN/OUT", value_parser = parse_model_price)]
        model_price: Vec<(String, ModelPrice)>,
        /// Verify and settle x402 payments with this remote facilitator (its base URL, such
        /// as https://x402.org/facilitator, or another haca node's http://HOST:PORT/v1/x402)
        /// instead of this node's own ledger.
        #[arg(long, env = "HACA_FACILITATOR", value_name = "URL")]
        facilitator: Option<String>,
        #[command(flatten)]
        pay: PayArgs,
        #[command(flatten)]
        evm: crate::evm::EvmArgs,
        /// The relay role (`--roles relay`): the gateway it forwards OHTTP requests to.
        #[arg(long, env = "HACA_GATEWAY", value_name = "URL")]
        gateway: Option<String>,
        /// The relay role: a gateway API key the relay pays with on its users' behalf.
        #[arg(
            long,
            value_name = "KEY",
            env = "HACA_RELAY_API_KEY",
            hide_env_values = true
        )]
        api_key: Option<String>,
    },
    /// The enclave process: holds a run key that no other process sees and proves it with
    /// attestation documents: the dev CA's (devnet starts and supervises it), or with --nsm
    /// the Nitro Secure Module's, as the process of an AWS Nitro enclave (feature `nsm`).
    Enclave {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// The dev CA's seed (created on first use; the dev root stays the same across restarts).
        #[arg(long, required_unless_present = "nsm")]
        ca_seed_file: Option<PathBuf>,
        /// Attest with the Nitro Secure Module (/dev/nsm) instead of a dev CA: documents
        /// signed by AWS. Needs a build with `--features nsm`, inside a Nitro enclave.
        #[arg(long, conflicts_with = "ca_seed_file")]
        nsm: bool,
        /// A GGUF the enclave serves chat with (`POST /chat`), loaded on first use.
        #[arg(long)]
        llm_model: Option<PathBuf>,
    },
    /// A network of validator processes on loopback: up, status, stop.
    #[command(subcommand)]
    Testnet(testnet::TestnetCommand),
    /// Run an ML model on a node and print its output and run id. When the node charges
    /// (x402), pays from the wallet in $HACA_HOME (funding it from a devnet's faucet first
    /// when it is short).
    Infer {
        /// A label (example/mnist-mlp), label@REVISION, or a blob id (sha256:...).
        model: String,
        /// The `input` object: inline JSON, or a path to a file holding it.
        #[arg(long)]
        input: String,
        /// Print the whole answer object (run_id, output, receipt).
        #[arg(long)]
        json: bool,
        /// How the run settles (sent as X-SETTLEMENT-TYPE): private, batch or individual.
        #[arg(long, default_value = "batch")]
        settlement: String,
        /// Where it executes: vanilla, tee (inside the node's enclave, with an attestation), or
        /// zkml (the model quantized, with a proof of the run that follows in the background:
        /// `haca receipt RUN --wait proved`).
        #[arg(long, default_value = "vanilla", value_parser = ["vanilla", "tee", "zkml"])]
        mode: String,
        /// The most this run may cost, in base units (6 decimals: 1000000 = 1.000000); a node
        /// asking more is not paid.
        #[arg(long, env = "HACA_MAX_PAYMENT", default_value_t = 1_000_000)]
        max_payment: u64,
        /// Admit a data item into the run, by id (repeatable; `haca data fetch` prints ids).
        /// A stale item refuses the run.
        #[arg(long = "data", value_name = "ITEM_ID")]
        data: Vec<String>,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Data nodes: fetch an allowed source into a signed, hashed item with its age.
    #[command(subcommand)]
    Data(DataCommand),
    /// List recent runs.
    Runs {
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Show a run's receipt, box by box (or, with --json, the receipt file itself).
    Receipt {
        run: String,
        #[arg(long)]
        json: bool,
        /// Wait until the run reaches this state first (`settled`: its round has committed;
        /// `proved`: a zkml run's proof is attached and verified, with progress on a terminal).
        #[arg(long, value_parser = ["settled", "proved"])]
        wait: Option<String>,
        /// How long --wait waits, such as 30s or 2m.
        #[arg(long, default_value = "60s")]
        timeout: String,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// The chain a node's validator keeps.
    #[command(subcommand)]
    Chain(ChainCommand),
    /// The Model Hub: upload, list, history, tag.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Check a receipt file offline; prints each claim as holds / fails / not present / unchecked.
    Verify(verify::VerifyArgs),
    /// TEE attestation documents.
    #[command(subcommand)]
    Attest(attest::AttestCommand),
    /// Send a burst of runs to a node and report runs/s and latency percentiles.
    Loadgen(loadgen::LoadgenArgs),
    /// Chat with the node's LLM gateway in the terminal, streaming; each answer shows the
    /// route that served it and its receipt.
    Chat(chat::ChatArgs),
    /// Generate images through the node's image providers (`--provider ...,kind=image`);
    /// each is written to a file, its hash checked against the run's.
    Image(image::ImageArgs),
    /// The x402 wallet `haca infer` pays with ($HACA_HOME/wallet.key, default ~/.haca):
    /// its address and balance; `fund` is devnet's faucet for any address.
    Wallet(wallet::WalletArgs),
    /// API keys for clients without x402: `create [--fund AMOUNT]` prints the key alone on
    /// its last line.
    Apikey(apikey::ApiKeyArgs),
    /// Review tokens for the web panel and the cases API: `create --role reviewer|viewer`
    /// prints the token alone on its last line (an admin action).
    Token(token::TokenArgs),
    /// A user's MemSync memory on a node: add, search, list, delete, export, import. The
    /// user is an API key (--api-key) or the CLI's wallet.
    Memory(memory::MemoryArgs),
    /// Proofs of ONNX runs (zkml mode's proof system), offline on a model file. They prove
    /// correct execution; they hide nothing (input, output and model are public).
    #[command(subcommand)]
    Zk(zk::ZkCommand),
    /// Content addresses of files, offline: `id FILE` prints SHA-256, or with `--walrus
    /// [--shards N]` the Walrus blob id, as its last line.
    #[command(subcommand)]
    Blob(blob::BlobCommand),
    /// An EVM chain for x402 settlement and round anchoring: `deploy` puts the token and the
    /// settlement registry on one and prints {"token", "registry", "chain_id"} last.
    #[command(subcommand)]
    Evm(crate::evm::EvmCommand),
    /// The node's TOML config file: `example` prints a complete commented one; `check FILE`
    /// checks one (unknown keys, bad values) without starting anything.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print a complete, commented example config (every key of `haca node`).
    Example,
    /// Check a config file: exit 0 when `haca node --config FILE` would accept it, else an
    /// error naming the key.
    Check { file: PathBuf },
}

/// The parsed command line, kept to tell a flag given from its default (config file merge).
static MATCHES: std::sync::OnceLock<clap::ArgMatches> = std::sync::OnceLock::new();

/// Whether a node config file is TOML (anything but `.json`, the validator configs `haca
/// testnet up` writes).
fn is_toml_config(p: &std::path::Path) -> bool {
    p.extension().and_then(|e| e.to_str()) != Some("json")
}

#[derive(Subcommand)]
enum ChainCommand {
    /// Propose a governance change (validators, gateways) with validators' approvals.
    #[command(subcommand)]
    Govern(govern::GovCommand),
    /// Height, state hash, pending records and recent blocks.
    Status {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// The validator-set history (with registered gateways), the file `haca verify
    /// --validators` takes.
    Validators {
        /// Print the history as JSON (the export format).
        #[arg(long)]
        export: bool,
        #[command(flatten)]
        node: NodeArgs,
    },
}

#[derive(Subcommand)]
enum DataCommand {
    /// Ask the node's data role to fetch URL; prints the signed item (id, sha256,
    /// signature, valid_until).
    Fetch {
        url: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        node: NodeArgs,
    },
}

#[derive(Subcommand)]
enum ModelCommand {
    /// Store FILE as a new revision of NAME (an admin action).
    Upload {
        name: String,
        file: PathBuf,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Every label at its latest revision.
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Every revision of NAME.
    History {
        name: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Point NAME at an artifact already in the hub, as a new revision (an admin action).
    Tag {
        name: String,
        blob_id: String,
        #[command(flatten)]
        node: NodeArgs,
    },
}

/// A CLI failure: printed as `error: ...`, exit status 1 (2 for usage, from clap).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Start(#[from] devnet::StartError),
    #[error("{0}")]
    Msg(String),
}

pub fn main() -> ExitCode {
    // Die quietly on a closed pipe (`haca receipt RUN | head`), as command-line tools do.
    #[cfg(unix)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let matches = <Cli as clap::CommandFactory>::command().get_matches();
    let cli =
        <Cli as clap::FromArgMatches>::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let _ = MATCHES.set(matches);
    // A node's config file may set the log format and filter; the variables beat it.
    let file_log = match &cli.command {
        Command::Node {
            config: Some(path), ..
        } if is_toml_config(path) => config::FileConfig::load(path).ok().map(|c| c.log),
        _ => None,
    }
    .unwrap_or_default();
    let filter = tracing_subscriber::EnvFilter::try_from_env("HACA_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(
            file_log
                .filter
                .as_deref()
                .unwrap_or("info,tower_http=warn,informalsystems_malachitebft=warn,libp2p=warn"),
        )
    });
    let format = match std::env::var("HACA_LOG_FORMAT").ok().as_deref() {
        Some("json") => config::LogFormat::Json,
        Some("text") => config::LogFormat::Text,
        Some(other) => {
            eprintln!("error: HACA_LOG_FORMAT: {other:?} is neither text nor json");
            return ExitCode::from(2);
        }
        None => file_log.format.unwrap_or(config::LogFormat::Text),
    };
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        config::LogFormat::Text => fmt.with_ansi(ansi).init(),
        config::LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init(),
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = rt.block_on(run(cli.command));
    // A server that stopped has cancelled what its requests ran; whatever blocking work is
    // left does not hold the process past this.
    rt.shutdown_timeout(Duration::from_secs(5));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn limits(a: &ServeArgs) -> Limits {
    Limits {
        max_body: a.max_body_bytes,
        max_upload: a.max_upload_bytes,
        header_timeout: Duration::from_secs(a.header_timeout_secs),
        body_timeout: Duration::from_secs(a.body_timeout_secs),
        max_connections: a.max_connections as usize,
    }
}

fn serve_config(a: &ServeArgs, devnet: bool) -> Result<NodeConfig, CliError> {
    Ok(NodeConfig {
        listen: a.listen,
        data_dir: a
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("./.haca")),
        loopback_admin: devnet,
        seed_example: devnet,
        limits: limits(a),
        cache_bytes: a.cache_bytes,
        validator: devnet,
        chain_dir: None,
        dev_enclave: devnet,
        payments: None,
        llm_model: find_llm_model(a)?,
        providers: a
            .provider
            .iter()
            .filter(|p| !p.2)
            .map(|p| (p.0.clone(), p.1))
            .collect(),
        image_providers: a
            .provider
            .iter()
            .filter(|p| p.2)
            .map(|p| (p.0.clone(), p.1))
            .collect(),
        case_classes: a.case_class.clone(),
        round_interval_ms: devnet::DEFAULT_ROUND_INTERVAL_MS,
        public_url: a.public_url.clone(),
        data_allow: None,
        embed_model: a.embed_model.clone(),
        memory_extractor: a.memory_extractor.clone(),
        walrus_publisher: a.walrus_publisher.clone(),
        max_image_bytes: a.max_image_bytes,
        evm: None,
        ops: ops_config(a)?,
        max_proof_queue: a.max_proof_queue as usize,
        enclave_url: match &a.enclave {
            None => None,
            Some(u) => Some(
                reqwest::Url::parse(u)
                    .ok()
                    .filter(|p| matches!(p.scheme(), "http" | "https"))
                    .map(|_| u.clone())
                    .ok_or_else(|| {
                        CliError::Msg(format!(
                            "--enclave (HACA_ENCLAVE): {u:?} is not an http(s) URL"
                        ))
                    })?,
            ),
        },
    })
}

fn parse_allow_rule(s: &str) -> Result<haca_data::AllowRule, String> {
    haca_data::AllowRule::parse(s).map_err(|e| e.to_string())
}

/// `haca node --roles data`: the data role alone, until ctrl-c.
async fn serve_data_only(cfg: NodeConfig) -> Result<ExitCode, CliError> {
    let rules = cfg.data_allow.clone().unwrap_or_default();
    let mut node = devnet::start_data_only(cfg).await?;
    println!("haca data node is up");
    println!("  url:       {}", node.url);
    println!("  data node: {}", node.node_id);
    println!("  data dir:  {}", node.data_dir.display());
    for r in &rules {
        println!("  allow:     {r}");
    }
    stop_on_signal(node.shutdown_handle(), None);
    node.wait()
        .await
        .map_err(|e| CliError::Msg(format!("server stopped: {e}")))?;
    Ok(ExitCode::SUCCESS)
}

async fn serve_until_ctrl_c(
    cfg: NodeConfig,
    title: &str,
    with_relay: bool,
) -> Result<ExitCode, CliError> {
    let cfg_chain = cfg.chain_dir.clone();
    let relay_addr = SocketAddr::new(cfg.listen.ip(), 0);
    let mut node = devnet::start(cfg).await?;
    println!("{title} is up");
    println!("  url:       {}", node.url);
    println!("  node id:   {}", node.node_id);
    println!("  data dir:  {}", node.data_dir.display());
    if with_relay {
        // The private path's relay, in this process (`haca node --roles relay` alone).
        let listener = tokio::net::TcpListener::bind(relay_addr)
            .await
            .map_err(|e| CliError::Msg(format!("relay: cannot listen on {relay_addr}: {e}")))?;
        let url = format!(
            "http://{}",
            listener
                .local_addr()
                .map_err(|e| CliError::Msg(e.to_string()))?
        );
        // The relay pays for its users with a key from the node's faucet (devnet charges).
        let api_key = match &node.payments {
            None => None,
            Some(_) => {
                let client = crate::client::NodeClient::new(&node.url, None);
                match apikey::funded_api_key(
                    &client,
                    haca_exec::llm::LOCAL_MODEL,
                    100_000,
                    "devnet relay",
                )
                .await
                {
                    Ok(k) => Some(k),
                    Err(e) => {
                        eprintln!(
                            "relay: no API key to pay with ({e}); private requests go unpaid"
                        );
                        None
                    }
                }
            }
        };
        let cfg = relay::RelayConfig {
            gateway: node.url.clone(),
            name: url.clone(),
            api_key,
        };
        tokio::spawn(relay::serve(listener, cfg, std::future::pending()));
        println!("  relay:     {url} (OHTTP: POST {url}/v1/ohttp)");
    }
    match (&node.chain_id, &cfg_chain) {
        (Some(chain_id), Some(dir)) => println!(
            "  chain:     {chain_id}, the validators of {}; trust file {}",
            dir.display(),
            dir.join("genesis.json").display()
        ),
        (Some(chain_id), None) => println!(
            "  chain:     {chain_id}, one validator in this process; trust file {}",
            node.data_dir.join("genesis.json").display()
        ),
        _ => {}
    }
    if let Some(id) = &node.data_node {
        println!("  data node: {id} (trust it with `haca verify --data-node {id}`)");
    }
    if let Some(p) = &node.payments {
        println!(
            "  payments:  x402 exact, {} base units per run on {}",
            p.price, p.network
        );
        println!(
            "  asset:     {} ({} v{}; fund wallets: POST {}/v1/x402/faucet)",
            p.asset, p.token_name, p.token_version, node.url
        );
        println!("  payee:     {}", p.pay_to);
        for (model, price) in &p.model_prices {
            println!("  price:     {model}: {price} base units per run");
        }
        for (model, t) in &p.token_prices {
            println!(
                "  price:     {model}: {} / {} base units per 1,000 prompt / completion tokens (x402 upto)",
                t.input, t.output
            );
        }
        if let Some(f) = &p.facilitator {
            println!("  settles:   with the x402 facilitator at {f}");
        }
    }
    println!(
        "  panel:     {}/ (review queue and chat; sign in with a token from `haca token create --role reviewer`)",
        node.url
    );
    if let Some((label, blob)) = &node.example {
        println!("  example:   {label} -> {blob}");
        let example_input = node.data_dir.join("example-input.json");
        println!(
            "try:       haca infer {label} --input {} --node {}",
            example_input.display(),
            node.url
        );
    }
    println!("press ctrl-c to stop");
    stop_on_signal(
        node.shutdown_handle(),
        Some(format!(
            "stopping: finishing requests in flight (at most {}s)",
            crate::server::SHUTDOWN_GRACE.as_secs()
        )),
    );
    node.wait()
        .await
        .map_err(|e| CliError::Msg(format!("server stopped: {e}")))?;
    Ok(ExitCode::SUCCESS)
}

/// `haca node --roles relay`: the OHTTP relay alone, until ctrl-c.
async fn serve_relay(
    listen: SocketAddr,
    gateway: String,
    api_key: Option<String>,
) -> Result<ExitCode, CliError> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| CliError::Msg(format!("cannot listen on {listen}: {e}")))?;
    let url = format!(
        "http://{}",
        listener
            .local_addr()
            .map_err(|e| CliError::Msg(e.to_string()))?
    );
    println!("haca relay is up");
    println!("  url:       {url}");
    println!("  gateway:   {gateway}");
    println!(
        "  pays:      {}",
        if api_key.is_some() {
            "with its API key"
        } else {
            "no (clients' requests go unpaid)"
        }
    );
    let cfg = relay::RelayConfig {
        gateway,
        name: url,
        api_key,
    };
    relay::serve(listener, cfg, stop_signal())
        .await
        .map_err(|e| CliError::Msg(format!("relay stopped: {e}")))?;
    Ok(ExitCode::SUCCESS)
}

/// Resolves on ctrl-c or SIGTERM (how `haca testnet stop` asks a validator to stop).
async fn stop_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Sends `stop` once ctrl-c or SIGTERM arrives, printing `saying` first when given.
fn stop_on_signal(stop: Option<tokio::sync::oneshot::Sender<()>>, saying: Option<String>) {
    tokio::spawn(async move {
        stop_signal().await;
        if let Some(s) = saying {
            eprintln!("{s}");
        }
        if let Some(tx) = stop {
            let _ = tx.send(());
        }
    });
}

async fn serve_validator(
    cfg: validator_node::ValidatorConfig,
    limits: Limits,
) -> Result<ExitCode, CliError> {
    let mut v = validator_node::start(cfg, limits)
        .await
        .map_err(|e| CliError::Msg(e.to_string()))?;
    println!("haca validator is up");
    println!("  url:       {}", v.url);
    println!("  validator: {}", v.validator_id);
    println!("  chain:     {}", v.chain_id);
    stop_on_signal(
        v.shutdown_handle(),
        Some("stopping: the engine ends after the requests in flight".into()),
    );
    v.wait()
        .await
        .map_err(|e| CliError::Msg(format!("server stopped: {e}")))?;
    Ok(ExitCode::SUCCESS)
}

/// Inline JSON, or the path of a file that holds it.
fn json_arg(arg: &str, what: &str) -> Result<Value, CliError> {
    let text = if arg.trim_start().starts_with(['{', '[']) {
        arg.to_owned()
    } else {
        std::fs::read_to_string(arg)
            .map_err(|e| CliError::Msg(format!("{what}: cannot read {arg}: {e}")))?
    };
    serde_json::from_str(&text).map_err(|e| CliError::Msg(format!("{what}: not valid JSON: {e}")))
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).expect("JSON prints"));
}

/// `--json` prints the answer as the node sent it; otherwise `show` puts it in plain words.
fn print_or(json: bool, v: &Value, show: impl FnOnce(&Value)) {
    if json {
        print_json(v);
    } else {
        show(v);
    }
}

/// Polls the run's settlement until its round commits; a rejection or the time limit is an
/// error that says which.
async fn wait_settled(client: &NodeClient, run: &str, limit: Duration) -> Result<(), CliError> {
    let start = std::time::Instant::now();
    loop {
        let v = client
            .get_json(&format!("/v1/runs/{run}/settlement"))
            .await?;
        match v["status"].as_str() {
            Some("settled") => return Ok(()),
            Some("rejected") => {
                return Err(CliError::Msg(format!(
                    "run {run} was rejected by the validators at height {}: {}",
                    v["height"],
                    v["reason"].as_str().unwrap_or("no reason given")
                )))
            }
            _ if start.elapsed() >= limit => {
                return Err(CliError::Msg(format!(
                    "run {run} is still pending settlement after {}s",
                    limit.as_secs()
                )))
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Polls a zkml run's proof until it is attached; on a terminal, each change of its state
/// (queued behind N runs, proving for T) is printed to stderr. A failed proof is an error.
async fn wait_proved(client: &NodeClient, run: &str, limit: Duration) -> Result<(), CliError> {
    let start = std::time::Instant::now();
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut last = String::new();
    loop {
        let v = client.get_json(&format!("/v1/runs/{run}/proof")).await?;
        let p = &v["proof"];
        let status = p["status"].as_str().unwrap_or("unknown");
        let line = match status {
            "queued" => format!("proof queued, {} runs ahead", p["ahead"]),
            "proving" => "proving".to_string(),
            other => other.to_string(),
        };
        if tty && line != last {
            eprintln!("{run}: {line} ({:.1} s)", start.elapsed().as_secs_f64());
            last = line;
        }
        match status {
            "proved" => return Ok(()),
            "failed" => {
                return Err(CliError::Msg(format!(
                    "run {run}: its proof failed: {}",
                    p["error"].as_str().unwrap_or("no reason given")
                )))
            }
            _ if start.elapsed() >= limit => {
                return Err(CliError::Msg(format!(
                    "run {run}: its proof is still {status} after {}s",
                    limit.as_secs()
                )))
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn chain(c: ChainCommand) -> Result<ExitCode, CliError> {
    match c {
        ChainCommand::Status { json, node } => {
            let v = node.client().get_json("/v1/chain/status").await?;
            print_or(json, &v, show::chain_status);
        }
        ChainCommand::Govern(g) => return govern::run(g).await,
        ChainCommand::Validators { export, node } => {
            let v = node.client().get_json("/v1/chain/validators").await?;
            print_or(export, &v, show::validators);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `LABEL=UNITS` of `--model-price`.
/// A `--model-price`: base units per run, or per 1,000 prompt / completion tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelPrice {
    Run(u64),
    /// A chat model's per-token prices (x402 `upto` settles from them).
    Tokens {
        input: u64,
        output: u64,
    },
}

fn parse_model_price(s: &str) -> Result<(String, ModelPrice), String> {
    let (label, units) = s.rsplit_once('=').ok_or_else(|| {
        format!("{s:?}: expected LABEL=UNITS (example/mnist-mlp=2500) or provider/model=IN_UNITS/OUT_UNITS per 1,000 tokens (openai/gpt-4o-mini=150/600)")
    })?;
    if label.is_empty() {
        return Err(format!("{s:?}: the label is empty"));
    }
    let whole = |u: &str| {
        u.parse::<u64>()
            .map_err(|_| format!("{s:?}: {u:?} is not a whole number of base units"))
    };
    let price = match units.split_once('/') {
        None => ModelPrice::Run(whole(units)?),
        Some((i, o)) => ModelPrice::Tokens {
            input: whole(i)?,
            output: whole(o)?,
        },
    };
    Ok((label.to_owned(), price))
}

async fn run(cmd: Command) -> Result<ExitCode, CliError> {
    match cmd {
        Command::Devnet {
            serve,
            chain,
            price_per_request,
            model_price,
            facilitator,
            pay,
            round_interval_ms,
            no_enclave,
            no_loopback_admin,
            data_allow,
            evm,
        } => {
            let mut cfg = serve_config(&serve, true)?;
            cfg.evm = evm.settings().map_err(CliError::Msg)?;
            cfg.data_allow = Some(data_allow);
            cfg.round_interval_ms = round_interval_ms;
            cfg.dev_enclave = !no_enclave;
            cfg.loopback_admin = !no_loopback_admin;
            cfg.payments = payment_config(&pay, price_per_request, model_price, facilitator, true)?;
            if let Some(dir) = chain {
                if serve.data_dir.is_none() {
                    cfg.data_dir = dir.join("gateway");
                }
                cfg.validator = false;
                cfg.chain_dir = Some(dir);
            }
            serve_until_ctrl_c(cfg, "haca devnet", true).await
        }
        Command::Testnet(t) => testnet::run(t).await,
        Command::Enclave {
            listen,
            ca_seed_file,
            nsm,
            llm_model,
        } => {
            use crate::server::enclave::AttesterChoice;
            let choice = match (&ca_seed_file, nsm) {
                (_, true) => AttesterChoice::Nsm,
                (Some(f), false) => AttesterChoice::Dev { ca_seed_file: f },
                (None, false) => {
                    return Err(CliError::Msg("give --ca-seed-file FILE or --nsm".into()))
                }
            };
            crate::server::enclave::serve(listen, choice, llm_model)
                .await
                .map_err(CliError::Msg)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Node {
            serve,
            mut evm,
            roles,
            config,
            data_allow,
            gateway,
            api_key,
            price_per_request,
            model_price,
            facilitator,
            mut pay,
        } => {
            let (mut serve, mut roles, mut data_allow, mut gateway, mut api_key) =
                (serve, roles, data_allow, gateway, api_key);
            let (mut price_per_request, mut model_price, mut facilitator) =
                (price_per_request, model_price, facilitator);
            let mut validator_section = None;
            let config = match config {
                Some(path) if is_toml_config(&path) => {
                    let file = config::FileConfig::load(&path)?;
                    let m = MATCHES
                        .get()
                        .and_then(|m| m.subcommand_matches("node"))
                        .ok_or_else(|| CliError::Msg("no command line to merge into".into()))?;
                    config::apply_node(
                        &file,
                        &path,
                        m,
                        config::NodeFlags {
                            serve: &mut serve,
                            roles: &mut roles,
                            data_allow: &mut data_allow,
                            gateway: &mut gateway,
                            api_key: &mut api_key,
                            price_per_request: &mut price_per_request,
                            model_price: &mut model_price,
                            facilitator: &mut facilitator,
                            pay: &mut pay,
                            evm: &mut evm,
                        },
                    )?;
                    validator_section = file.validator;
                    None
                }
                other => other,
            };
            if let Some(r) = roles
                .iter()
                .find(|r| !matches!(r.as_str(), "gateway" | "validator" | "data" | "relay"))
            {
                return Err(CliError::Msg(format!(
                    "--roles: {r:?} is not available in this build (available: gateway, validator, data, relay)"
                )));
            }
            let is_relay = roles.iter().any(|r| r == "relay");
            if is_relay && roles.len() > 1 {
                return Err(CliError::Msg(
                    "--roles relay runs alone (a relay beside its own gateway would see both sides)"
                        .into(),
                ));
            }
            if is_relay {
                let gateway = gateway.ok_or_else(|| {
                    CliError::Msg("--roles relay: give the gateway's --gateway URL".into())
                })?;
                return serve_relay(serve.listen, gateway, api_key).await;
            }
            if gateway.is_some() || api_key.is_some() {
                return Err(CliError::Msg(
                    "--gateway/--api-key: only a relay (--roles relay) takes them".into(),
                ));
            }
            let data = roles.iter().any(|r| r == "data");
            if !data && !data_allow.is_empty() {
                return Err(CliError::Msg(
                    "--data-allow: only a node with the data role (--roles data) fetches sources"
                        .into(),
                ));
            }
            if data && roles.iter().all(|r| r == "data") {
                let mut cfg = serve_config(&serve, false)?;
                cfg.data_allow = Some(data_allow);
                return serve_data_only(cfg).await;
            }
            if !roles.iter().any(|r| r == "gateway") {
                let cfg = match (config, validator_section) {
                    (Some(path), _) => validator_node::ValidatorConfig::load(&path)
                        .map_err(|e| CliError::Msg(e.to_string()))?,
                    (None, Some(section)) => section,
                    (None, None) => return Err(CliError::Msg("--roles validator: give the validator's --config FILE (a TOML file with a [validator] section, or the JSON config `haca testnet up` writes)".into())),
                };
                return serve_validator(cfg, limits(&serve)).await;
            }
            if config.is_some() {
                return Err(CliError::Msg(
                    "--config: a validator's JSON config serves only a validator-only node (--roles validator); a gateway takes a TOML config"
                        .into(),
                ));
            }
            let mut cfg = serve_config(&serve, false)?;
            cfg.validator = roles.iter().any(|r| r == "validator");
            cfg.data_allow = data.then_some(data_allow);
            cfg.evm = evm.settings().map_err(CliError::Msg)?;
            cfg.payments =
                payment_config(&pay, price_per_request, model_price, facilitator, false)?;
            serve_until_ctrl_c(cfg, "haca node", false).await
        }
        Command::Infer {
            model,
            input,
            json,
            settlement,
            mode,
            max_payment,
            data,
            node,
        } => {
            let input = json_arg(&input, "--input")?;
            let settle = haca_core::settlement::SettlementMode::parse(&settlement)
                .map_err(|e| CliError::Msg(format!("--settlement: {e}")))?;
            let client = node.client();
            let mut body = json!({"model": model, "input": input, "mode": mode});
            if !data.is_empty() {
                body["data"] = json!(data);
            }
            let headers = [("x-settlement-type", settle.as_str())];
            let ans = match client
                .post_json_x402("/v1/infer", body.clone(), &headers)
                .await?
            {
                Ok((ans, _)) => ans,
                Err(demand) => {
                    let cap = haca_pay::U256::from(max_payment);
                    wallet::pay_and_retry(&client, "/v1/infer", body, &headers, demand, cap).await?
                }
            };
            print_or(json, &ans, |v| show::answer(v, client.base()));
            Ok(ExitCode::SUCCESS)
        }
        Command::Runs { limit, json, node } => {
            let v = node
                .client()
                .get_json(&format!("/v1/runs?limit={limit}"))
                .await?;
            print_or(json, &v, show::runs);
            Ok(ExitCode::SUCCESS)
        }
        Command::Receipt {
            run,
            json,
            wait,
            timeout,
            node,
        } => {
            if let Some(state) = &wait {
                let limit = haca_core::claims::parse_duration(&timeout)
                    .map_err(|e| CliError::Msg(format!("--timeout: {e}")))?;
                let limit = Duration::from_secs(limit);
                if state == "proved" {
                    wait_proved(&node.client(), &run, limit).await?;
                } else {
                    wait_settled(&node.client(), &run, limit).await?;
                }
            }
            let text = node
                .client()
                .get_text(&format!("/v1/runs/{run}/receipt"))
                .await?;
            let receipt: Value = serde_json::from_str(&text).map_err(|e| {
                CliError::Msg(format!("the node sent a receipt that is not JSON: {e}"))
            })?;
            print_or(json, &receipt, show::receipt);
            Ok(ExitCode::SUCCESS)
        }
        Command::Data(DataCommand::Fetch { url, json, node }) => {
            let v = node
                .client()
                .send_json(Method::POST, "/v1/data/fetch", json!({"url": url}))
                .await?;
            print_or(json, &v, show::data_item);
            Ok(ExitCode::SUCCESS)
        }
        Command::Model(m) => model(m).await,
        Command::Chain(c) => chain(c).await,
        Command::Verify(a) => verify::run(&a),
        Command::Attest(a) => attest::run(&a),
        Command::Loadgen(a) => loadgen::run(a).await,
        Command::Chat(a) => chat::run(a).await,
        Command::Image(a) => image::run(a).await,
        Command::Wallet(a) => wallet::run(a).await,
        Command::Apikey(a) => apikey::run(a).await,
        Command::Memory(a) => memory::run(a).await,
        Command::Token(a) => token::run(a).await,
        Command::Zk(z) => zk::run(&z),
        Command::Blob(b) => blob::run(&b).await,
        Command::Evm(e) => crate::evm::run(e)
            .await
            .map(|()| ExitCode::SUCCESS)
            .map_err(CliError::Msg),
        Command::Config(ConfigCommand::Example) => {
            print!("{}", config::EXAMPLE);
            Ok(ExitCode::SUCCESS)
        }
        Command::Config(ConfigCommand::Check { file }) => {
            config::FileConfig::load(&file)?;
            println!("{}: ok", file.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn model(cmd: ModelCommand) -> Result<ExitCode, CliError> {
    match cmd {
        ModelCommand::Upload {
            name,
            file,
            json,
            node,
        } => {
            let bytes = std::fs::read(&file)
                .map_err(|e| CliError::Msg(format!("{}: {e}", file.display())))?;
            eprintln!(
                "uploading {} ({} bytes) as {name}",
                file.display(),
                bytes.len()
            );
            let v = node
                .client()
                .post_bytes(&format!("/v1/hub/models/{name}"), bytes)
                .await?;
            if json {
                print_json(&v);
            } else {
                println!(
                    "{name} revision {} -> {}",
                    v["revision"],
                    v["blob_id"].as_str().unwrap_or("?")
                );
            }
        }
        ModelCommand::List { json, node } => {
            let v = node.client().get_json("/v1/hub/models").await?;
            print_or(json, &v, show::models);
        }
        ModelCommand::History { name, json, node } => {
            let v = node
                .client()
                .get_json(&format!("/v1/hub/history/{name}"))
                .await?;
            print_or(json, &v, show::history);
        }
        ModelCommand::Tag {
            name,
            blob_id,
            node,
        } => {
            let v = node
                .client()
                .send_json(
                    Method::PUT,
                    &format!("/v1/hub/labels/{name}"),
                    json!({"blob_id": blob_id}),
                )
                .await?;
            println!(
                "{name} revision {} -> {}",
                v["revision"],
                v["blob_id"].as_str().unwrap_or("?")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
