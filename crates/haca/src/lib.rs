//! The `haca` binary's library: the command line (`cli`, which also wires the node's roles
//! together: `cli::devnet`, `cli::validator_node`) and the HTTP surface on top (`server`, the
//! only place where an error becomes a status code). Roles' logic lives in the workspace
//! crates; the run pipeline is `haca-gateway`'s.

pub mod cli;
pub mod client;
pub mod enclave;
pub mod evm;
pub mod facilitator;
pub mod forward;
pub mod metrics;
pub mod registry;
pub mod remote;
pub mod review;
pub mod server;
pub mod tee_registrar;
pub mod walrus;

pub use haca_gateway::{now_ms, random_hex};
// The node's wiring, under the command line that runs it; kept at these paths for benches and tests.
pub use cli::{devnet, validator_node};
