//! `haca attest verify` on real AWS-signed Nitro documents and on broken copies of them.

use std::path::PathBuf;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_haca");

fn fixture(name: &str) -> (PathBuf, u64, String) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../haca-tee/tests/fixtures/nitro");
    let at = std::fs::read_to_string(dir.join(format!("{name}.at")))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let pcr0 = std::fs::read_to_string(dir.join(format!("{name}.pcr0")))
        .unwrap()
        .trim()
        .to_owned();
    (dir.join(format!("{name}.cbor")), at, pcr0)
}

fn attest(args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN)
        .arg("attest")
        .arg("verify")
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("panicked"), "{text}");
    (out.status.code().unwrap(), text)
}

#[test]
fn real_document_verifies_at_its_time_with_its_pcr0() {
    let (doc, at, pcr0) = fixture("base_nitro_validator");
    let (code, text) = attest(&[
        doc.to_str().unwrap(),
        "--at",
        &at.to_string(),
        "--expect-pcr",
        &format!("0={pcr0}"),
    ]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("module:") && text.contains(&pcr0), "{text}");
    assert!(
        text.contains("641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b"),
        "{text}"
    );
    let (code, text) = attest(&[doc.to_str().unwrap(), "--audit", "--json"]);
    assert_eq!(code, 0, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["audit"], true);
    assert_eq!(v["pcrs"]["0"], pcr0.as_str());
}

#[test]
fn each_failure_is_reported_with_its_reason() {
    let (doc, at, _) = fixture("base_nitro_validator");
    let path = doc.to_str().unwrap();
    // A later day: the leaf certificate (about 3 hours) has expired.
    let (code, text) = attest(&[path, "--at", &(at + 86_400_000).to_string()]);
    assert_eq!(code, 1, "{text}");
    assert!(text.to_lowercase().contains("expired"), "{text}");
    // Asked-for checks fail the exit status only when asked for.
    let (code, text) = attest(&[
        path,
        "--at",
        &at.to_string(),
        "--expect-pcr",
        &format!("0={}", "00".repeat(48)),
    ]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("pcrs") && text.contains("FAILS"), "{text}");
    let (uid2, uid2_at, _) = fixture("uid2_core_debug");
    let (code, _) = attest(&[uid2.to_str().unwrap(), "--at", &uid2_at.to_string()]);
    assert_eq!(code, 0);
    let (code, text) = attest(&[
        uid2.to_str().unwrap(),
        "--at",
        &uid2_at.to_string(),
        "--require-binding",
    ]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("binds no key"), "{text}");
    // A flipped byte near the end (the signature) and a truncated copy.
    let mut bytes = std::fs::read(&doc).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let n = bytes.len();
    bytes[n - 10] ^= 0x40;
    std::fs::write(dir.path().join("tampered.cbor"), &bytes).unwrap();
    let (code, text) = attest(&[
        dir.path().join("tampered.cbor").to_str().unwrap(),
        "--audit",
    ]);
    assert_eq!(code, 1, "{text}");
    assert!(text.to_lowercase().contains("signature"), "{text}");
    std::fs::write(dir.path().join("short.cbor"), &bytes[..n / 2]).unwrap();
    let (code, text) = attest(&[dir.path().join("short.cbor").to_str().unwrap(), "--audit"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.to_lowercase().contains("truncated"), "{text}");
}
