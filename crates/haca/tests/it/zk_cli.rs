//! `haca zk prove / verify / eval` on the trained digit models: a held-out digit is proved, the
//! proof verifies (bound to its model file with --model), and a tampered output or another
//! model is refused naming the part that fails.

use base64::Engine as _;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_haca");

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures")
        .join(rel)
}

/// Runs `haca zk ARGS`: (exit status, stdout, stderr).
fn zk(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).arg("zk").args(args).output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    (out.status.code().unwrap(), stdout, stderr)
}

fn json_line(stdout: &str) -> Value {
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn a_proved_digit_verifies_against_its_model_and_tampering_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let images = std::fs::read(fixture("digits/heldout-images.u8")).unwrap();
    let labels = std::fs::read(fixture("digits/heldout-labels.u8")).unwrap();
    let data: Vec<f32> = images[..784].iter().map(|&b| b as f32 / 255.0).collect();
    let input = dir.path().join("in.json");
    std::fs::write(
        &input,
        serde_json::json!({"input": {"shape": [1, 784], "data": data}}).to_string(),
    )
    .unwrap();
    let model = fixture("models/digits-mlp-56.onnx");
    let proof = dir.path().join("proof.json");

    let (code, out, err) = zk(&[
        "prove",
        path(&model),
        "--input",
        path(&input),
        "--out",
        path(&proof),
    ]);
    assert_eq!(code, 0, "{err}");
    let proved = json_line(&out);
    assert!(proved["prove_ms"].as_f64().unwrap() > 0.0, "{out}");
    assert!(proved["setup_ms"].as_f64().unwrap() > 0.0, "{out}");
    assert!(proved["proof_bytes"].as_u64().unwrap() > 1000, "{out}");
    let output: Vec<f32> = serde_json::from_value(proved["output"].clone()).unwrap();
    let best = (0..output.len())
        .max_by(|&a, &b| output[a].total_cmp(&output[b]))
        .unwrap();
    assert_eq!(best, labels[0] as usize, "{out}");
    let file: Value = serde_json::from_str(&std::fs::read_to_string(&proof).unwrap()).unwrap();
    assert_eq!(file["system"], haca_zk::SYSTEM);
    assert_eq!(file["input_shape"], serde_json::json!([1, 784]));
    assert_eq!(file["output"], proved["output"]);
    assert_eq!(file["verifying_key_digest"].as_str().unwrap().len(), 64);

    // Bound to its model file.
    let (code, out, err) = zk(&["verify", path(&proof), "--model", path(&model)]);
    assert_eq!(code, 0, "{err}");
    let v = json_line(&out);
    assert_eq!(v["ok"], true);
    assert_eq!(v["model_bound"], true);
    assert!(v["verify_ms"].as_f64().unwrap() > 0.0);
    // Without a model, the key comes from the file and the binding is said to be unchecked.
    let (code, out, err) = zk(&["verify", path(&proof)]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json_line(&out)["model_bound"], false);
    assert!(err.contains("unchecked"), "{err}");

    // Another model's file: the key is not the one it gives.
    let other = fixture("models/mnist-mlp.onnx");
    let (code, out, err) = zk(&["verify", path(&proof), "--model", path(&other)]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("error:") && err.contains("verifying_key"),
        "{err}"
    );
    assert!(out.is_empty(), "{out}");

    // A tampered output in the file is not the proved one.
    let mut bad = file.clone();
    bad["output"][best] = (output[best] + 1.0).into();
    let tampered = dir.path().join("tampered.json");
    std::fs::write(&tampered, bad.to_string()).unwrap();
    let (code, _, err) = zk(&["verify", path(&tampered), "--model", path(&model)]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("error: output:"), "{err}");

    // A proof whose bytes claim another output fails inside the proof.
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut p =
        haca_zk::Proof::from_bytes(&b64.decode(file["proof"].as_str().unwrap()).unwrap()).unwrap();
    p.output[best] += 1;
    let mut bad = file.clone();
    bad["proof"] = b64.encode(p.to_bytes()).into();
    std::fs::write(&tampered, bad.to_string()).unwrap();
    let (code, _, err) = zk(&["verify", path(&tampered)]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("error: layers[0]"), "{err}");
}

#[test]
fn a_wrong_input_length_is_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = zk(&[
        "prove",
        path(&fixture("models/digits-cnn.onnx")),
        "--input",
        r#"{"input": {"shape": [1, 1, 28, 27], "data": [0.5, 0.5]}}"#,
        "--out",
        path(&dir.path().join("p.json")),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("input.data has 2 values, the model takes 784"),
        "{err}"
    );
}

#[test]
fn eval_keeps_the_float_accuracy_after_quantization() {
    let (code, out, err) = zk(&[
        "eval",
        path(&fixture("models/digits-mlp-56.onnx")),
        "--images",
        path(&fixture("digits/heldout-images.u8")),
        "--labels",
        path(&fixture("digits/heldout-labels.u8")),
    ]);
    assert_eq!(code, 0, "{err}");
    let v = json_line(&out);
    assert_eq!(v["n"], 360);
    for k in ["float_accuracy", "quantized_accuracy", "argmax_agreement"] {
        assert!(v[k].as_f64().unwrap() >= 0.97, "{k}: {out}");
    }
}
