//! haca-chain's integration tests, as one test binary (one link instead of one per file).

mod support;

mod consensus_four;
mod consensus_single;
mod governance;
mod payments_chain;
mod state_machine;
mod tee_evidence;
mod tee_registry_chain;
mod transparency_log;
mod validator_replay;
