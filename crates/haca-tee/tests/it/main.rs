//! haca-tee's integration tests, in one test binary (one link instead of one per file).
//! Shared helpers live in `common`.
//! proptest keeps failing cases of `tests/it/NAME.rs` in `tests/proptest-regressions/NAME.txt`.

mod common;

mod dcap_never_panics;
mod dcap_quotes;
mod dev_enclave;
mod nitro_dev_root;
mod nitro_never_panics;
mod nitro_real_documents;
mod nitro_rejections;
mod og_compat_python;
mod tee_registry;
