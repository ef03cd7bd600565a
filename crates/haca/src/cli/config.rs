//! The node's config file: one TOML file (`haca node --config FILE`) with a section per
//! concern, every key named as its flag is (`--max-body-bytes` is `[node] max_body_bytes`).
//! Precedence: a flag, then its `HACA_*` variable, then the file, then the flag's default.
//! The file is checked whole at start: an unknown key, a value of the wrong type or a value
//! its flag would refuse stops the node with an error naming the key.
//!
//! `haca config example` prints [`EXAMPLE`], a complete commented file; `haca config check
//! FILE` checks one without starting anything.

use super::{CliError, PayArgs, ServeArgs};
use crate::validator_node::ValidatorConfig;
use clap::parser::ValueSource;
use clap::ArgMatches;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The whole file.
#[derive(Serialize, Deserialize, Default, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub node: NodeSection,
    #[serde(default)]
    pub payments: PaymentsSection,
    #[serde(default)]
    pub limits: LimitsSection,
    #[serde(default)]
    pub log: LogSection,
    /// A validator of a network (`--roles validator`): the same fields as the JSON config
    /// `haca testnet up` writes; relative paths are relative to this file's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validator: Option<ValidatorConfig>,
}

/// `[node]`: `haca node`'s serving flags.
#[derive(Serialize, Deserialize, Default, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    pub roles: Option<Vec<String>>,
    pub listen: Option<SocketAddr>,
    pub public_url: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub max_body_bytes: Option<usize>,
    pub max_upload_bytes: Option<usize>,
    pub cache_bytes: Option<u64>,
    pub header_timeout_secs: Option<u64>,
    pub body_timeout_secs: Option<u64>,
    pub max_connections: Option<u32>,
    pub llm_model: Option<Vec<PathBuf>>,
    pub no_llm: Option<bool>,
    pub embed_model: Option<PathBuf>,
    pub memory_extractor: Option<String>,
    pub provider: Option<Vec<String>>,
    pub case_class: Option<Vec<String>>,
    pub data_allow: Option<Vec<String>>,
    pub gateway: Option<String>,
    pub api_key: Option<String>,
    pub enclave: Option<String>,
}

/// `[payments]`: x402.
#[derive(Serialize, Deserialize, Default, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PaymentsSection {
    pub price_per_request: Option<u64>,
    pub model_price: Option<BTreeMap<String, u64>>,
    pub facilitator: Option<String>,
    pub network: Option<String>,
    pub asset: Option<String>,
    pub token_name: Option<String>,
    pub token_version: Option<String>,
    pub pay_to: Option<String>,
    pub max_timeout_secs: Option<u64>,
    pub evm_rpc: Option<String>,
    pub evm_key: Option<PathBuf>,
    pub evm_token: Option<String>,
    pub evm_registry: Option<String>,
    pub evm_confirmations: Option<u64>,
}

/// `[limits]`: rate limits, concurrency and CORS (see `server::guard`).
#[derive(Serialize, Deserialize, Default, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    pub rate_per_key: Option<f64>,
    pub burst_per_key: Option<u32>,
    pub rate_per_ip: Option<f64>,
    pub burst_per_ip: Option<u32>,
    pub max_concurrent: Option<BTreeMap<String, u32>>,
    pub cors_origin: Option<Vec<String>>,
    pub max_proof_queue: Option<u64>,
}

/// `[log]`.
#[derive(Serialize, Deserialize, Default, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    /// `text` or `json` (one JSON object a line).
    pub format: Option<LogFormat>,
    /// A tracing filter, as HACA_LOG takes it.
    pub filter: Option<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// A config error: the file, the key and what is wrong with it.
fn bad(path: &Path, key: &str, why: impl std::fmt::Display) -> CliError {
    CliError::Msg(format!("config {}: {key}: {why}", path.display()))
}

impl FileConfig {
    /// Reads and checks `path`: unknown keys and wrongly typed values are refused here,
    /// naming the key.
    pub fn load(path: &Path) -> Result<Self, CliError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| CliError::Msg(format!("config {}: {e}", path.display())))?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, CliError> {
        let de = toml::Deserializer::new(text);
        let mut cfg: FileConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            // toml's own message carries the line and a caret; keep its first line.
            let inner = e.inner().to_string();
            let msg = inner
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect::<Vec<_>>()
                .join(" ");
            if key == "." {
                CliError::Msg(format!("config {}: {msg}", path.display()))
            } else {
                bad(path, &key, msg)
            }
        })?;
        if let Some(v) = cfg.validator.as_mut() {
            let base = path.parent().unwrap_or(Path::new("."));
            v.resolve_paths(base)
                .map_err(|e| bad(path, "validator", e))?;
        }
        cfg.check(path)?;
        Ok(cfg)
    }

    /// The checks a flag's parser would make, per key.
    fn check(&self, path: &Path) -> Result<(), CliError> {
        let n = &self.node;
        if let Some(u) = &n.public_url {
            super::parse_public_url(u).map_err(|e| bad(path, "node.public_url", e))?;
        }
        let none = Vec::new();
        parse_each(
            path,
            "node.provider",
            n.provider.as_ref().unwrap_or(&none),
            super::parse_provider_arg,
        )?;
        parse_each(
            path,
            "node.case_class",
            n.case_class.as_ref().unwrap_or(&none),
            super::parse_case_class,
        )?;
        parse_each(
            path,
            "node.data_allow",
            n.data_allow.as_ref().unwrap_or(&none),
            super::parse_allow_rule,
        )?;
        for (k, v) in [
            ("header_timeout_secs", n.header_timeout_secs),
            ("body_timeout_secs", n.body_timeout_secs),
        ] {
            if v == Some(0) {
                return Err(bad(path, &format!("node.{k}"), "must be at least 1"));
            }
        }
        if n.max_connections == Some(0) {
            return Err(bad(path, "node.max_connections", "must be at least 1"));
        }
        let p = &self.payments;
        for (k, a) in [("pay_to", &p.pay_to), ("asset", &p.asset)] {
            if let Some(a) = a
                .as_ref()
                .filter(|a| haca_pay::networks::parse_address(a).is_none())
            {
                return Err(bad(
                    path,
                    &format!("payments.{k}"),
                    format!("{a:?} is not an address (0x + 40 hex digits)"),
                ));
            }
        }
        if let Some(net) = &p.network {
            if net != haca_gateway::payment::DEVNET_NETWORK {
                haca_pay::networks::resolve(
                    net,
                    p.asset.as_deref(),
                    p.token_name.as_deref(),
                    p.token_version.as_deref(),
                )
                .map_err(|e| bad(path, "payments", e))?;
            }
        }
        if let Some(c) = p.evm_confirmations {
            if !(1..=64).contains(&c) {
                return Err(bad(path, "payments.evm_confirmations", "must be 1 to 64"));
            }
        }
        let l = &self.limits;
        if l.max_proof_queue == Some(0) {
            return Err(bad(path, "limits.max_proof_queue", "must be at least 1"));
        }
        for (k, v) in [
            ("rate_per_key", l.rate_per_key),
            ("rate_per_ip", l.rate_per_ip),
        ] {
            if v.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
                return Err(bad(
                    path,
                    &format!("limits.{k}"),
                    "must be a positive number of requests per second",
                ));
            }
        }
        // As --max-concurrent ROUTE=N reads it.
        for (route, n) in l.max_concurrent.iter().flatten() {
            super::parse_route_limit(&format!("{route}={n}"))
                .map_err(|e| bad(path, &format!("limits.max_concurrent.{route:?}"), e))?;
        }
        Ok(())
    }

    /// The file again, as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a config serializes")
    }
}

/// Whether `id` was set on the command line or by its variable (then it beats the file).
fn given(m: &ArgMatches, id: &str) -> bool {
    matches!(
        m.value_source(id),
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    )
}

/// `haca node`'s flags, to fill in from the file.
pub(super) struct NodeFlags<'a> {
    pub serve: &'a mut ServeArgs,
    pub roles: &'a mut Vec<String>,
    pub data_allow: &'a mut Vec<haca_data::AllowRule>,
    pub gateway: &'a mut Option<String>,
    pub api_key: &'a mut Option<String>,
    pub price_per_request: &'a mut u64,
    pub model_price: &'a mut Vec<(String, super::ModelPrice)>,
    pub facilitator: &'a mut Option<String>,
    pub pay: &'a mut PayArgs,
    pub evm: &'a mut crate::evm::EvmArgs,
}

/// Each entry of the list at `key`, parsed as its flag parses it; an error names the entry
/// (`key[i]`).
fn parse_each<T, E: std::fmt::Display>(
    path: &Path,
    key: &str,
    items: &[String],
    parse: impl Fn(&str) -> Result<T, E>,
) -> Result<Vec<T>, CliError> {
    items
        .iter()
        .enumerate()
        .map(|(i, item)| parse(item).map_err(|e| bad(path, &format!("{key}[{i}]"), e)))
        .collect()
}

/// Fills in every flag of `f` that neither the command line nor its variable set, from the
/// file (already checked by [`FileConfig::load`]).
pub(super) fn apply_node(
    file: &FileConfig,
    path: &Path,
    m: &ArgMatches,
    f: NodeFlags<'_>,
) -> Result<(), CliError> {
    macro_rules! take {
        ($dst:expr, $src:expr, $id:literal) => {
            if let Some(v) = $src.clone() {
                if !given(m, $id) {
                    $dst = v;
                }
            }
        };
        ($dst:expr, $src:expr, $id:literal, some) => {
            if let Some(v) = $src.clone() {
                if !given(m, $id) {
                    $dst = Some(v);
                }
            }
        };
    }
    let n = &file.node;
    let s = f.serve;
    take!(*f.roles, n.roles, "roles");
    take!(s.listen, n.listen, "listen");
    if let Some(u) = &n.public_url {
        if !given(m, "public_url") {
            s.public_url =
                Some(super::parse_public_url(u).map_err(|e| bad(path, "node.public_url", e))?);
        }
    }
    take!(s.data_dir, n.data_dir, "data_dir", some);
    take!(s.max_body_bytes, n.max_body_bytes, "max_body_bytes");
    take!(s.max_upload_bytes, n.max_upload_bytes, "max_upload_bytes");
    take!(s.cache_bytes, n.cache_bytes, "cache_bytes");
    take!(
        s.header_timeout_secs,
        n.header_timeout_secs,
        "header_timeout_secs"
    );
    take!(
        s.body_timeout_secs,
        n.body_timeout_secs,
        "body_timeout_secs"
    );
    take!(s.max_connections, n.max_connections, "max_connections");
    take!(s.llm_model, n.llm_model, "llm_model");
    take!(s.no_llm, n.no_llm, "no_llm");
    take!(s.embed_model, n.embed_model, "embed_model", some);
    take!(
        s.memory_extractor,
        n.memory_extractor,
        "memory_extractor",
        some
    );
    if let Some(specs) = &n.provider {
        if !given(m, "provider") {
            s.provider = parse_each(path, "node.provider", specs, super::parse_provider_arg)?;
        }
    }
    if let Some(specs) = &n.case_class {
        if !given(m, "case_class") {
            s.case_class = parse_each(path, "node.case_class", specs, super::parse_case_class)?;
        }
    }
    if let Some(rules) = &n.data_allow {
        if !given(m, "data_allow") {
            *f.data_allow = parse_each(path, "node.data_allow", rules, super::parse_allow_rule)?;
        }
    }
    take!(*f.gateway, n.gateway, "gateway", some);
    take!(s.enclave, n.enclave, "enclave", some);
    take!(*f.api_key, n.api_key, "api_key", some);

    let l = &file.limits;
    take!(s.rate_per_key, l.rate_per_key, "rate_per_key", some);
    take!(s.burst_per_key, l.burst_per_key, "burst_per_key", some);
    take!(s.rate_per_ip, l.rate_per_ip, "rate_per_ip", some);
    take!(s.burst_per_ip, l.burst_per_ip, "burst_per_ip", some);
    if let Some(limits) = &l.max_concurrent {
        if !given(m, "max_concurrent") {
            s.max_concurrent = limits.iter().map(|(k, v)| (k.clone(), *v)).collect();
        }
    }
    take!(s.cors_origin, l.cors_origin, "cors_origin");
    take!(s.max_proof_queue, l.max_proof_queue, "max_proof_queue");

    let p = &file.payments;
    take!(
        *f.price_per_request,
        p.price_per_request,
        "price_per_request"
    );
    if let Some(prices) = &p.model_price {
        if !given(m, "model_price") {
            *f.model_price = prices
                .iter()
                .map(|(k, v)| (k.clone(), super::ModelPrice::Run(*v)))
                .collect();
        }
    }
    take!(*f.facilitator, p.facilitator, "facilitator", some);
    let pay = f.pay;
    take!(pay.network, p.network, "network", some);
    take!(pay.asset, p.asset, "asset", some);
    take!(pay.token_name, p.token_name, "token_name", some);
    take!(pay.token_version, p.token_version, "token_version", some);
    take!(pay.pay_to, p.pay_to, "pay_to", some);
    take!(pay.max_timeout_secs, p.max_timeout_secs, "max_timeout_secs");
    let evm = f.evm;
    take!(evm.evm_rpc, p.evm_rpc, "evm_rpc", some);
    take!(evm.evm_key, p.evm_key, "evm_key", some);
    take!(evm.evm_token, p.evm_token, "evm_token", some);
    take!(evm.evm_registry, p.evm_registry, "evm_registry", some);
    take!(
        evm.evm_confirmations,
        p.evm_confirmations,
        "evm_confirmations"
    );
    Ok(())
}

/// `haca config example`: every key, commented, at its default where it has one.
pub const EXAMPLE: &str = r#"# haca node config: `haca node --config haca.toml`.
# Every key is a flag of `haca node` (`max_body_bytes` is --max-body-bytes) and has a
# variable (HACA_MAX_BODY_BYTES); a flag beats its variable, which beats this file. An
# unknown key or a bad value stops the node with an error naming the key.

[node]
# gateway | gateway,validator | validator (with [validator]) | data | relay
roles = ["gateway"]
listen = "0.0.0.0:7070"
# The URL clients reach this node at; x402 payments name it as their resource.
public_url = "https://haca.example.com"
data_dir = "/var/lib/haca"
max_body_bytes = 16777216
max_upload_bytes = 536870912
cache_bytes = 1073741824
header_timeout_secs = 10
body_timeout_secs = 30
max_connections = 1024
# GGUF files served as local/<name>; none given: the first under $HACA_HOME/models.
llm_model = ["/models/gemma-3-270m-q4_k_m.gguf"]
no_llm = false
embed_model = "/models/all-MiniLM-L6-v2"
# memory_extractor = "local/gemma-3-270m"
# Upstream OpenAI-compatible providers (their keys come from the named variables).
provider = ["name=openai,url=https://api.openai.com/v1,models=gpt-4o-mini,key_env=OPENAI_API_KEY"]
case_class = ["name=finance,claims=execution.signed;run.settled;payment.settled"]
# The data role's allowed sources (--roles data).
data_allow = ["https://api.example.com/v1"]
# An enclave process elsewhere for tee work (`haca enclave --nsm` in an AWS Nitro enclave,
# reached through a vsock proxy); absent: none (devnet supervises a dev enclave).
# enclave = "http://127.0.0.1:7300"
# The relay role (--roles relay): its gateway, and the API key it pays with.
# gateway = "https://haca.example.com"
# api_key = "hk_..."

[payments]
# Base units of the asset per run (USDC: 6 decimals, 1000 = 0.001 USDC); 0 serves for free.
price_per_request = 1000
# Verify and settle with this x402 facilitator; absent: this node's own ledger.
facilitator = "https://x402.org/facilitator"
# CAIP-2. Built in: eip155:8453 (Base) and eip155:84532 (Base Sepolia), whose USDC address
# and EIP-712 domain are filled in; any other network needs asset, token_name, token_version.
network = "eip155:84532"
# asset = "0x036CbD53842c5426634e7929541eC2318f3dCF7e"
# token_name = "USDC"
# token_version = "2"
pay_to = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
max_timeout_secs = 60
# Settle x402 on an EVM chain instead of this node's ledger (the facilitator's gas key file,
# the token [default: the asset], a SettlementRegistry for round roots, confirmations).
# evm_rpc = "https://sepolia.base.org"
# evm_key = "/etc/haca/evm.key"
# evm_token = "0x036CbD53842c5426634e7929541eC2318f3dCF7e"
# evm_registry = "0x..."
# evm_confirmations = 1

[payments.model_price]
"example/mnist-mlp" = 2500

[limits]
# Token buckets: requests per second and burst, per API key (or x402 payer) and per client IP.
# Over it: 429 with Retry-After. Absent: no limit.
rate_per_key = 20.0
burst_per_key = 40
rate_per_ip = 50.0
burst_per_ip = 100
# Origins the panel's API answers cross-origin requests from (absent: same origin only).
cors_origin = ["https://panel.example.com"]

# zkml runs waiting for their proofs at most; beyond, 503 prover_busy with Retry-After.
max_proof_queue = 64

# Requests served at once per route; more wait for a slot up to a second, then 503.
[limits.max_concurrent]
"/v1/infer" = 64
"/v1/chat/completions" = 32

[log]
# text or json (one object a line, with the request id); HACA_LOG_FORMAT overrides it.
format = "text"
filter = "info"

# A validator of a network (`roles = ["validator"]`), as `haca testnet up` writes it.
# [validator]
# data_dir = "validator-0"
# genesis = "genesis.json"
# http_listen = "0.0.0.0:7100"
# p2p_listen = "0.0.0.0:7200"
# peers = [{ p2p = "10.0.0.2:7200", http = "http://10.0.0.2:7100" }]
# [validator.timeouts_ms]
# propose = 1000
# prevote = 500
# precommit = 500
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_parses_and_round_trips() {
        let path = Path::new("haca.toml");
        let cfg = FileConfig::parse(EXAMPLE, path).unwrap();
        assert_eq!(cfg.payments.network.as_deref(), Some("eip155:84532"));
        assert_eq!(cfg.limits.max_concurrent.as_ref().unwrap()["/v1/infer"], 64);
        let again = FileConfig::parse(&cfg.to_toml(), path).unwrap();
        assert_eq!(cfg, again);
    }

    #[test]
    fn a_validator_section_round_trips_with_its_paths_resolved() {
        let text = "[node]\nroles = [\"validator\"]\n[validator]\ndata_dir = \"v0\"\ngenesis = \"genesis.json\"\nhttp_listen = \"127.0.0.1:7100\"\np2p_listen = \"127.0.0.1:7200\"\n";
        let cfg = FileConfig::parse(text, Path::new("/etc/haca/haca.toml")).unwrap();
        let v = cfg.validator.as_ref().unwrap();
        assert_eq!(v.data_dir, Path::new("/etc/haca/v0"));
        let again = FileConfig::parse(&cfg.to_toml(), Path::new("/elsewhere/x.toml")).unwrap();
        assert_eq!(
            again.validator.unwrap().genesis,
            Path::new("/etc/haca/genesis.json")
        );
    }

    #[test]
    fn an_unknown_or_bad_key_is_refused_by_name() {
        let path = Path::new("haca.toml");
        let e = FileConfig::parse("[node]\nlistn = \"0.0.0.0:1\"\n", path)
            .unwrap_err()
            .to_string();
        assert!(e.contains("node") && e.contains("listn"), "{e}");
        let e = FileConfig::parse("[nodes]\n", path)
            .unwrap_err()
            .to_string();
        assert!(e.contains("nodes"), "{e}");
        let e = FileConfig::parse("[node]\nmax_body_bytes = \"big\"\n", path)
            .unwrap_err()
            .to_string();
        assert!(e.contains("node.max_body_bytes"), "{e}");
        let e = FileConfig::parse("[payments]\npay_to = \"0x12\"\n", path)
            .unwrap_err()
            .to_string();
        assert!(e.contains("payments.pay_to"), "{e}");
        let e = FileConfig::parse("[payments]\nasset = \"usdc\"\n", path)
            .unwrap_err()
            .to_string();
        assert!(e.contains("payments.asset"), "{e}");
        let e = FileConfig::parse("[limits.max_concurrent]\n\"v1/infer\" = 8\n", path)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("limits.max_concurrent") && e.contains("starts with /"),
            "{e}"
        );
        let e = FileConfig::parse("[limits.max_concurrent]\n\"/v1/infer\" = 0\n", path)
            .unwrap_err()
            .to_string();
        assert!(e.contains("at least 1"), "{e}");
        let e = FileConfig::parse("[node]\nprovider = [\"nope\"]\n", path)
            .unwrap_err()
            .to_string();
        assert!(e.contains("node.provider[0]"), "{e}");
        let e = FileConfig::parse("[payments]\nnetwork = \"eip155:10\"\n", path)
            .unwrap_err()
            .to_string();
        assert!(e.contains("payments") && e.contains("asset"), "{e}");
    }
}
