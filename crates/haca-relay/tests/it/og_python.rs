//! Interop with OpenGradient's own OHTTP client (PyPI `opengradient` 1.1.4,
//! `opengradient.client.tee_ohttp`): its `encapsulate_request` seals a JSON chat body to a
//! haca key; haca decapsulates and answers single-shot and chunked; its `decrypt_response`
//! and `ChunkedResponseDecrypter` read both answers.
//!
//! The Python: `HACA_OG_PYTHON` if set; else `~/.cache/haca-og-venv/bin/python`, made on first
//! use with `pip install --no-deps opengradient==1.1.4` and `pip install pyhpke==0.6.5
//! cryptography` (its own venv: a newer `x402` in the same venv breaks opengradient's import).
//! Without it the test prints why and passes, except under `CI=true`, where it fails.

use haca_relay::{decapsulate, KeyPair, KeyRing};
use std::path::{Path, PathBuf};
use std::process::Command;

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/it/og_ohttp.py")
}

fn loads(python: &Path) -> bool {
    Command::new(python)
        .arg(script())
        .arg("check")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn make_venv(venv: &Path) -> Result<PathBuf, String> {
    let python = venv.join("bin/python");
    let run = |cmd: &mut Command| -> Result<(), String> {
        let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{cmd:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    };
    if !python.exists() {
        run(Command::new("python3").args(["-m", "venv"]).arg(venv))?;
    }
    let pip = |args: &[&str]| {
        run(Command::new(&python)
            .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
            .args(args))
    };
    pip(&["--no-deps", "opengradient==1.1.4"])?;
    pip(&["pyhpke==0.6.5", "cryptography"])?;
    Ok(python)
}

fn og_python() -> Option<PathBuf> {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let found = match std::env::var_os("HACA_OG_PYTHON") {
        Some(p) => {
            let p = PathBuf::from(p);
            if loads(&p) {
                Ok(p)
            } else {
                Err(format!(
                    "HACA_OG_PYTHON={} cannot load opengradient's tee_ohttp",
                    p.display()
                ))
            }
        }
        None => {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_default();
            let venv = home.join(".cache/haca-og-venv");
            let python = venv.join("bin/python");
            if loads(&python) {
                Ok(python)
            } else {
                make_venv(&venv).and_then(|p| {
                    if loads(&p) {
                        Ok(p)
                    } else {
                        Err(format!(
                            "{} cannot load tee_ohttp after install",
                            p.display()
                        ))
                    }
                })
            }
        }
    };
    match found {
        Ok(p) => Some(p),
        Err(why) if ci => panic!("OpenGradient's OHTTP client is needed in CI: {why}"),
        Err(why) => {
            eprintln!("skipped: {why}");
            None
        }
    }
}

#[test]
fn opengradient_client_request_opens_and_reads_both_answer_forms() {
    let Some(python) = og_python() else { return };
    let dir = tempfile::tempdir().unwrap();
    // Key id 2 with a ring that also holds id 1: the client threads the advertised id.
    let mut ring = KeyRing::new(KeyPair::from_seed(1, &[11; 32]).unwrap());
    ring.rotate(KeyPair::from_seed(2, &[22; 32]).unwrap(), 4_000_000_000)
        .unwrap();
    let d = ring.current().config().descriptor();
    assert_eq!((d.key_id, d.kem_id, d.kdf_id, d.aead_id), (2, 0x20, 1, 3));

    let body = br#"{"model": "local/gemma-3-270m", "messages": [{"role": "user", "content": "Bonjour \u00e9t\u00e9"}], "stream": true}"#;
    let plaintext_file = dir.path().join("plain.json");
    std::fs::write(&plaintext_file, body).unwrap();
    let state = dir.path().join("state.json");
    let out = Command::new(&python)
        .arg(script())
        .arg("seal")
        .arg(&state)
        .args([
            d.key_id.to_string(),
            d.public_key_hex.clone(),
            d.kem_id.to_string(),
            d.kdf_id.to_string(),
            d.aead_id.to_string(),
        ])
        .arg(&plaintext_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "seal: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let wire = std::fs::read(state.with_extension("json.req")).unwrap();
    assert_eq!(wire[0], 2, "the request names key id 2");

    // Decapsulated twice (the same context cannot answer twice): once per answer form.
    let (plaintext, single_ctx) = decapsulate(&ring, &wire).unwrap();
    assert_eq!(plaintext, body);
    let (_, chunked_ctx) = decapsulate(&ring, &wire).unwrap();

    let answer = br#"{"id": "chatcmpl-1", "choices": [{"message": {"role": "assistant", "content": "Salut"}}]}"#;
    let single = single_ctx.encapsulate(answer).unwrap();
    let frames: [&[u8]; 3] = [
        b"data: {\"choices\": [{\"delta\": {\"content\": \"Sa\"}}]}\n\n",
        b"",
        b"data: {\"choices\": [{\"delta\": {\"content\": \"lut\"}}]}\n\n",
    ];
    let last = b"data: {\"tee_signature\": \"c2ln\"}\n\ndata: [DONE]\n\n";
    let mut encoder = chunked_ctx.chunked().unwrap();
    let mut chunked = Vec::new();
    for f in frames {
        chunked.extend(encoder.push(f).unwrap());
    }
    chunked.extend(encoder.finish(last).unwrap());
    let single_file = dir.path().join("single.bin");
    let chunked_file = dir.path().join("chunked.bin");
    std::fs::write(&single_file, &single).unwrap();
    std::fs::write(&chunked_file, &chunked).unwrap();

    // Whole body at once, then in awkward 7-byte pieces (varints and tags split).
    for piece in [chunked.len(), 7, 1] {
        let out = Command::new(&python)
            .arg(script())
            .arg("open")
            .args([&state, &single_file, &chunked_file])
            .arg(piece.to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "open (pieces of {piece}): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(got["single"], hex::encode(answer));
        let expected: Vec<String> = frames
            .iter()
            .chain([&last[..]].iter())
            .map(hex::encode)
            .collect();
        assert_eq!(
            got["chunks"],
            serde_json::json!(expected),
            "pieces of {piece}"
        );
    }
}
