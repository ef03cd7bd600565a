//! haca's integration tests, in one test binary (one link instead of one per file).
//! Shared helpers live in `common`.

mod common;

mod attest_cli;
mod blob_cli;
mod crash_durability;
mod data_e2e;
mod devnet_e2e;
mod evm_e2e;
mod hardening_http;
mod hardening_inputs;
mod hardening_payments;
mod hardening_reads;
mod hardening_watchers;
mod images_e2e;
mod llm_gateway;
mod memory_e2e;
mod ohttp_e2e;
mod ops_e2e;
mod panel_browser;
mod review_e2e;
mod settlement_e2e;
mod tee_e2e;
mod testnet_byzantine;
mod testnet_faults;
mod upto_e2e;
mod walrus_e2e;
mod x402_e2e;
mod zk_cli;
mod zkml_e2e;
