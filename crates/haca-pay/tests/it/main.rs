//! haca-pay's integration tests, in one test binary (one link instead of one per file).
//! Shared helpers live in `common`.
//! proptest keeps failing cases of `tests/it/NAME.rs` in `tests/proptest-regressions/NAME.txt`.

mod common;

mod interop;
mod props;
mod rules;
