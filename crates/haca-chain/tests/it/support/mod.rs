//! Helpers shared by the test modules.

pub mod certify;
pub mod consensus_host;
