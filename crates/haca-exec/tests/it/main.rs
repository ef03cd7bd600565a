//! haca-exec's integration tests, in one test binary (one link instead of one per file).

mod embed_minilm;
mod local_gemma;
mod onnx_fixture;
mod third_party_onnx;
mod tiny_llama;
