//! `haca blob id FILE [--walrus [--shards N]]`: the last line is the file's SHA-256, or its
//! Walrus blob id as Mysten's own encoder computes it (golden values from
//! tools/walrus_golden.mjs, the same as crates/haca-walrus/tests).

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_haca");

/// Runs `haca blob id ARGS`: (exit status, last line of stdout, stderr).
fn blob_id(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(["blob", "id"])
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    let last = stdout.lines().last().unwrap_or("").to_owned();
    (out.status.code().unwrap(), last, stderr)
}

#[test]
fn blob_id_prints_the_walrus_id_mystens_encoder_computes() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("blob.bin");
    // The golden generator's input: byte i is (i*31 + 7) mod 251, here its first 1000 bytes.
    let data: Vec<u8> = (0..1000usize).map(|i| ((i * 31 + 7) % 251) as u8).collect();
    std::fs::write(&file, &data).unwrap();
    let f = file.to_str().unwrap();

    // Mainnet's 1000 shards by default, and 10 shards named.
    assert_eq!(
        blob_id(&[f, "--walrus"]),
        (
            0,
            "BCQjPD_cwPTsNlcGQwdOM_BI1l7H21tJXFRvH1BL01w".to_owned(),
            String::new()
        )
    );
    let (code, id, _) = blob_id(&[f, "--walrus", "--shards", "10"]);
    assert_eq!(
        (code, id.as_str()),
        (0, "RV5Io9fgU7sWMkNXE7IUo8QbTxJS4Gs9aaJU6xabCsw")
    );

    // Without --walrus: SHA-256 hex.
    let (code, id, _) = blob_id(&[f]);
    assert_eq!((code, id), (0, haca_core::hash::sha256(&data).to_hex()));

    // A shard count Walrus cannot encode with is refused by name; --shards needs --walrus.
    let (code, _, stderr) = blob_id(&[f, "--walrus", "--shards", "3"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("too few"), "{stderr}");
    let (code, _, _) = blob_id(&[f, "--shards", "10"]);
    assert_eq!(code, 2);
    let (code, _, stderr) = blob_id(&[dir.path().join("missing").to_str().unwrap(), "--walrus"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("missing"), "{stderr}");
}
