//! A local anvil (Foundry's dev chain, npm `@foundry-rs/anvil`) for tests and benchmarks:
//! started on a free port, killed when dropped. `.ci/run` installs it and names the binary
//! in `HACA_ANVIL`.

use crate::rpc::Rpc;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The environment variable naming the anvil binary.
pub const ANVIL_ENV: &str = "HACA_ANVIL";

/// The anvil binary: `$HACA_ANVIL`, else the npm install `.ci/run` makes under
/// `~/.cache/haca-anvil`; `None` when neither exists.
pub fn find_anvil() -> Option<std::path::PathBuf> {
    if let Some(p) = std::env::var_os(ANVIL_ENV) {
        let p = std::path::PathBuf::from(p);
        return p.exists().then_some(p);
    }
    let home = std::env::var_os("HOME")?;
    // The platform package npm picked: anvil-linux-amd64, anvil-darwin-arm64, ...
    let dir = std::path::Path::new(&home).join(".cache/haca-anvil/node_modules/@foundry-rs");
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("anvil-"))
        .map(|e| e.path().join("bin/anvil"))
        .find(|p| p.exists())
}

/// A running anvil.
pub struct Anvil {
    child: Child,
    pub url: String,
    pub port: u16,
}

impl Anvil {
    /// Starts `bin` on a free loopback port with chain id 31337 and anvil's ten dev accounts;
    /// `block_time`: `None` mines each transaction at once, `Some(s)` a block every `s`
    /// seconds. Waits until it answers `eth_chainId`.
    pub async fn start(bin: &std::path::Path, block_time: Option<u64>) -> Result<Anvil, String> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let mut cmd = Command::new(bin);
        cmd.args([
            "--port",
            &port.to_string(),
            "--host",
            "127.0.0.1",
            "--silent",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        if let Some(s) = block_time {
            cmd.args(["--block-time", &s.to_string()]);
        }
        let child = cmd.spawn().map_err(|e| format!("{}: {e}", bin.display()))?;
        let anvil = Anvil {
            child,
            url: format!("http://127.0.0.1:{port}"),
            port,
        };
        let rpc = Rpc::new(&anvil.url, Duration::from_secs(2));
        let start = Instant::now();
        loop {
            match rpc.chain_id().await {
                Ok(_) => return Ok(anvil),
                Err(e) if start.elapsed() > Duration::from_secs(20) => {
                    return Err(format!("anvil did not answer in 20 s: {e}"))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
}

impl Drop for Anvil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// anvil's well-known dev account keys 0..9 (test keys; never for real money).
pub const DEV_KEYS: [&str; 3] = [
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
];
