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

#[test]
fn intel_quotes_verify_with_their_collateral() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../haca-tee/tests/fixtures/dcap");
    let file = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    let at_ms = |name: &str| {
        let s: u64 = std::fs::read_to_string(dir.join(format!("{name}.at")))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        (s * 1000).to_string()
    };
    // TDX, UpToDate: every check holds, the measurements are printed.
    let (code, text) = attest(&[
        &file("tdx_quote"),
        "--collateral",
        &file("tdx_quote_collateral.json"),
        "--at",
        &at_ms("tdx_quote"),
    ]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("Intel TDX quote"), "{text}");
    assert!(text.contains("TCB status:  UpToDate"), "{text}");
    assert!(text.contains("MRTD:") && text.contains("RTMR3:"), "{text}");
    assert!(
        text.contains("signature") && text.contains("holds"),
        "{text}"
    );
    assert!(!text.contains("FAILS"), "{text}");
    assert!(text.trim_end().ends_with("ok"), "{text}");
    // The same quote as hex text, and as JSON.
    let tmp = tempfile::tempdir().unwrap();
    let hex_path = tmp.path().join("tdx_quote.hex");
    std::fs::write(
        &hex_path,
        hex::encode(std::fs::read(dir.join("tdx_quote")).unwrap()),
    )
    .unwrap();
    let (code, text) = attest(&[
        hex_path.to_str().unwrap(),
        "--collateral",
        &file("tdx_quote_collateral.json"),
        "--at",
        &at_ms("tdx_quote"),
        "--json",
    ]);
    assert_eq!(code, 0, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["tee"], "TDX");
    assert_eq!(v["tcb_status"], "UpToDate");
    assert_eq!(v["measurement"]["mrtd"].as_str().unwrap().len(), 96);
    // dcap-qvl's "outdated" sample matches no TCB level: refused even when statuses are allowed.
    let (code, text) = attest(&[
        &file("tdx_quote_outdated"),
        "--collateral",
        &file("tdx_quote_outdated_collateral.json"),
        "--at",
        &at_ms("tdx_quote_outdated"),
        "--allow-tcb",
        "out_of_date",
    ]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("FAILED") && text.contains("No matching TCB level"),
        "{text}"
    );
    // SGX: ConfigurationAndSWHardeningNeeded, with its advisories: refused by default,
    // naming the status; accepted when allowed.
    let sgx = [
        file("sgx_quote"),
        "--collateral".into(),
        file("sgx_quote_collateral.json"),
        "--at".into(),
        at_ms("sgx_quote"),
    ];
    let args: Vec<&str> = sgx.iter().map(String::as_str).collect();
    let (code, text) = attest(&args);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("ConfigurationAndSWHardeningNeeded") && text.contains("INTEL-SA-00615"),
        "{text}"
    );
    let mut allowed = args.clone();
    allowed.extend([
        "--allow-tcb",
        "configuration_and_sw_hardening_needed,out_of_date",
    ]);
    let (code, text) = attest(&allowed);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("Intel SGX quote") && text.contains("MRENCLAVE:"),
        "{text}"
    );
    // Wrong time, wrong collateral, no collateral, a flipped signature byte.
    let (code, text) = attest(&[
        &file("tdx_quote"),
        "--collateral",
        &file("tdx_quote_collateral.json"),
        "--at",
        &at_ms("tdx_quote_outdated"),
    ]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("expired"), "{text}");
    let (code, text) = attest(&[
        &file("tdx_quote"),
        "--collateral",
        &file("sgx_quote_collateral.json"),
        "--at",
        &at_ms("tdx_quote"),
    ]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("does not belong to this quote"), "{text}");
    let (code, text) = attest(&[&file("tdx_quote"), "--at", &at_ms("tdx_quote")]);
    assert_ne!(code, 0, "{text}");
    assert!(text.contains("--collateral"), "{text}");
    let mut bytes = std::fs::read(dir.join("tdx_quote")).unwrap();
    bytes[48 + 584 + 4 + 10] ^= 0x01;
    let bad = tmp.path().join("bad_quote");
    std::fs::write(&bad, &bytes).unwrap();
    let (code, text) = attest(&[
        bad.to_str().unwrap(),
        "--collateral",
        &file("tdx_quote_collateral.json"),
        "--at",
        &at_ms("tdx_quote"),
    ]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("signature"), "{text}");
}
