//! haca-core's integration tests, in one test binary (one link instead of one per file).
//! proptest keeps failing cases of `tests/it/NAME.rs` in `tests/proptest-regressions/NAME.txt`.

mod oz_interop;
mod parser_robustness;
mod receipt_tamper;
