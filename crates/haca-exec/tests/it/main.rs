//! haca-exec's integration tests, in one test binary (one link instead of one per file).

mod embed_minilm;
mod local_gemma;
mod onnx_fixture;
mod third_party_onnx;
mod tiny_llama;

use std::path::PathBuf;

/// A model file the tests need, as `found` (a `model_home` lookup) says: required in CI (`CI`
/// set, not `false` or `0`), where .ci/run installs it; elsewhere `None` after saying why on
/// stderr (past the harness's capture, so that the skip shows), for the caller to skip.
pub fn installed(
    test: &str,
    found: Result<Option<PathBuf>, String>,
    hint: &str,
) -> Option<PathBuf> {
    use std::io::Write;
    let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false" && v != "0");
    match found.unwrap_or_else(|e| panic!("{e}")) {
        Some(p) => Some(p),
        None if ci => panic!("CI must have it (.ci/run installs it): {hint}"),
        None => {
            let _ = writeln!(std::io::stderr(), "{test}: skipped, not installed: {hint}");
            None
        }
    }
}
