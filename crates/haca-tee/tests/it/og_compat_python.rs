//! haca's OpenGradient-compatible tee fields checked by Python, as OpenGradient's clients
//! check them: `json.dumps(sort_keys=True)` for the request hash, `cryptography`'s RSA-PSS
//! for the signature. `.ci/run` installs the packages and points HACA_PYTHON at them.

use haca_tee::og_compat::{self, OgSigner};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Command;

fn python() -> Option<PathBuf> {
    match std::env::var_os("HACA_PYTHON") {
        Some(p) => Some(p.into()),
        None if std::env::var_os("CI").is_some() => {
            panic!("HACA_PYTHON must be set in CI (.ci/run sets it)")
        }
        None => {
            eprintln!(
                "skipped: HACA_PYTHON is not set (a Python with cryptography and pycryptodome)"
            );
            None
        }
    }
}

#[test]
fn python_recomputes_the_request_hash_and_verifies_the_signature() {
    let Some(py) = python() else { return };
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tools/og_compat_check.py");
    let signer = OgSigner::generate().unwrap();
    let bodies = [
        json!({"model": "local/gemma-3-270m", "messages": [{"role": "user", "content": "Hi"}]}),
        json!({
            "model": "openai/gpt-4.1", "temperature": 1, "max_tokens": 64, "stop": ["\n\n"],
            "messages": [
                {"role": "system", "content": "Réponds en français, s'il te plaît 🙂"},
                {"role": "user", "content": [{"type": "text", "text": "tab\there \"quoted\" \\ /"},
                                             {"type": "image_url", "image_url": {"url": "data:x"}}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
                    "function": {"name": "lookup", "arguments": "{\"q\": 1.5e-7}"}}]},
                {"role": "tool", "content": "0.1", "tool_call_id": "c1"}
            ],
            "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {"q": {"type": "number", "maximum": 1e21}}}}}],
            "response_format": {"type": "json_object"}, "web_search": true, "tool_choice": "auto"
        }),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (i, body) in bodies.iter().enumerate() {
        let canonical = og_compat::canonical_chat_request(body).unwrap();
        let request_hash = og_compat::chat_request_hash(body).unwrap();
        let output_hash = og_compat::chat_output_hash("Bonjour !", None);
        let fields = signer.sign(request_hash, output_hash, 1_764_000_000 + i as u64);
        let case = dir.path().join(format!("case{i}.json"));
        std::fs::write(
            &case,
            serde_json::to_vec(
                &json!({"canonical": canonical, "pem": signer.public_pem(), "fields": fields}),
            )
            .unwrap(),
        )
        .unwrap();
        let out = Command::new(&py).arg(&script).arg(&case).output().unwrap();
        assert!(
            out.status.success(),
            "python failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            got["request_hash"],
            hex::encode(request_hash),
            "case {i}: json.dumps differs"
        );
        assert_eq!(got["tee_id_ok"], true, "case {i}");
        assert_eq!(got["signature_ok"], true, "case {i}");
    }
}
