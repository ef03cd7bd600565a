//! haca-evm's integration tests: the contracts on a real anvil.

mod contracts_on_anvil;
