//! The `haca` binary's library: CLI, node wiring, HTTP routers. Roles' logic lives in the
//! workspace crates; this crate connects them.

pub mod chat;
pub mod cli;
pub mod client;
pub mod devnet;
pub mod enclave;
pub mod forward;
pub mod gateway;
pub mod payments;
pub mod registry;
pub mod remote;
pub mod review;
pub mod server;
pub mod tee_registrar;
pub mod validator_node;

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
