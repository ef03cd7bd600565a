//! Data nodes: which outside sources may cross into a run (`allow`), how long a fetch stays
//! good (`freshness`), and fetching a source into a signed [`DataItem`] (`fetch`). The item
//! type and its signed bytes are haca-core's (`haca_core::data`), because the offline claims
//! checker verifies them; storing and serving items is the binary's wiring.

pub mod allow;
pub mod fetch;
pub mod freshness;

pub use allow::{AllowError, AllowRule, Allowlist};
pub use fetch::{FetchError, Fetched, Fetcher};
pub use freshness::FreshnessPolicy;
pub use haca_core::data::{DataItem, DataItemError, DATA_DOMAIN};
