//! haca-relay's integration tests, in one test binary (one link instead of one per file).
//! proptest keeps failing cases of `tests/it/NAME.rs` in `tests/proptest-regressions/NAME.txt`.

mod key_rotation;
mod never_panics;
mod og_python;
mod rejections;
mod rfc9458_vector;
mod round_trips;
