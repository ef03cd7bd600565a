//! Settlement trees checked by OpenZeppelin's own `@openzeppelin/merkle-tree` (tools/oz,
//! installed by `.ci/run`): the same root from the same values, and every proof verifies with
//! `StandardMerkleTree.verify`, while a tampered one does not.

use haca_core::oz::{OzProof, StandardTree};
use haca_core::{sha256, Digest};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn tools_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tools/oz");
    if dir.join("node_modules/@openzeppelin/merkle-tree").is_dir() {
        return Some(dir);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "tools/oz/node_modules is missing; .ci/run installs it with npm ci"
    );
    eprintln!("skipping: run `npm ci --prefix tools/oz` to check against OpenZeppelin");
    None
}

fn openzeppelin(dir: &PathBuf, input: &serde_json::Value) -> serde_json::Value {
    let mut child = Command::new("node")
        .arg("check.mjs")
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("node runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "node check.mjs failed");
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn openzeppelin_agrees_on_roots_and_proofs() {
    let Some(dir) = tools_dir() else { return };
    for n in [1usize, 2, 3, 5, 8, 13] {
        let values: Vec<(Digest, Digest)> = (0..n)
            .map(|i| {
                (
                    sha256(format!("run {i}").as_bytes()),
                    sha256(format!("receipt {i}").as_bytes()),
                )
            })
            .collect();
        let tree = StandardTree::build(&values).unwrap();
        let mut proofs: Vec<OzProof> = values
            .iter()
            .enumerate()
            .map(|(i, (a, b))| OzProof::new(&tree.root(), (a, b), &tree.proof(i)))
            .collect();
        for p in &proofs {
            p.verify().unwrap();
        }
        // One tampered proof: the receipt digest of another run under the first run's id.
        let mut tampered = proofs[0].clone();
        tampered.leaf[1] = format!("0x{}", sha256(b"another receipt"));
        proofs.push(tampered);
        let input = serde_json::json!({
            "values": values.iter().map(|(a, b)| [format!("0x{a}"), format!("0x{b}")]).collect::<Vec<_>>(),
            "proofs": proofs,
            "dump": tree.dump(&values),
        });
        let got = openzeppelin(&dir, &input);
        assert_eq!(got["root"], format!("0x{}", tree.root()), "{n} leaves");
        let verified: Vec<bool> = serde_json::from_value(got["verified"].clone()).unwrap();
        assert_eq!(verified.len(), n + 1);
        assert!(verified[..n].iter().all(|v| *v), "{n} leaves: {verified:?}");
        assert!(!verified[n], "OpenZeppelin accepted a tampered leaf");
        // The round's tree dump is OpenZeppelin's own: it loads, and equals its dump.
        assert_eq!(got["dumpRoot"], format!("0x{}", tree.root()), "{n} leaves");
        assert_eq!(
            got["dumpSame"], true,
            "{n} leaves: the dump differs from OpenZeppelin's"
        );
    }
}
