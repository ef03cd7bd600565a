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

/// `bytes` random bytes from the OS, hex: the body of every random id the node hands out
/// (case, conversation, tool-call, token and webhook ids).
pub fn random_hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut b = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}
