//! tract on the example model agrees with onnxruntime, and bad inputs name their field.

use haca_core::tensor::{parse_input, TensorData};
use haca_core::BlobId;
use haca_exec::{ExecError, ModelCache, OnnxCheck, OnnxModel};
use serde_json::json;

const MLP: &[u8] = include_bytes!("../../../../fixtures/models/mnist-mlp.onnx");

fn linspace_input() -> serde_json::Value {
    let data: Vec<f32> = (0..784).map(|i| i as f32 / 783.0).collect();
    json!({"input": {"shape": [1, 784], "data": data}})
}

#[test]
fn mlp_output_matches_onnxruntime() {
    // onnxruntime 1.32 on the same file (the trained digits MLP) and input (np.linspace(0, 1, 784, dtype=float32)).
    let ort = [
        -4.347_149,
        1.191_149_8,
        1.654_096_5,
        -14.490_028,
        14.067_853,
        -12.533_673,
        11.908_312,
        -11.152_757,
        -7.327_716_4,
        -26.485_657,
    ];
    let model = OnnxModel::load(MLP).unwrap();
    assert_eq!(model.inputs()[0].name, "input");
    assert_eq!(model.inputs()[0].shape, vec![Some(1), Some(784)]);
    let out = model
        .run(&parse_input(&linspace_input(), "input").unwrap(), "input")
        .unwrap();
    let t = &out["output"];
    assert_eq!(t.shape, vec![1, 10]);
    let TensorData::F32(v) = &t.data else {
        panic!("expected float32 output")
    };
    for (got, want) in v.iter().zip(ort) {
        // Relative: the trained model's logits reach 26, where f32 sums differ in the 6th digit.
        assert!(
            (got - want).abs() < 1e-5 * want.abs().max(1.0),
            "{got} vs {want}"
        );
    }
}

#[test]
fn wrong_name_shape_and_dtype_are_refused_by_field() {
    let model = OnnxModel::load(MLP).unwrap();
    let run = |v: serde_json::Value| {
        model
            .run(&parse_input(&v, "input").unwrap(), "input")
            .unwrap_err()
    };
    let e = run(json!({"pixels": {"shape": [1, 784], "data": vec![0.0; 784]}}));
    assert!(
        matches!(&e, ExecError::Input { field, .. } if field == "input.pixels"),
        "{e}"
    );
    let e = run(json!({"input": {"shape": [1, 10], "data": vec![0.0; 10]}}));
    assert!(
        matches!(&e, ExecError::Input { field, reason } if field == "input.input.shape" && reason.contains("[1, 784]")),
        "{e}"
    );
    let e = run(json!({"input": {"shape": [1, 784], "data": vec![0; 784], "dtype": "int64"}}));
    assert!(
        matches!(&e, ExecError::Input { field, .. } if field == "input.input.dtype"),
        "{e}"
    );
}

#[test]
fn opengradient_fixed_point_input_is_cast_to_the_model_type() {
    let model = OnnxModel::load(MLP).unwrap();
    let values: Vec<_> = (0..784).map(|i| json!([i * 10, 1])).collect();
    let og =
        json!({"numbers": [{"name": "input", "values": values, "shape": [1, 784]}], "strings": []});
    let out = model
        .run(&parse_input(&og, "input").unwrap(), "input")
        .unwrap();
    assert_eq!(out["output"].shape, vec![1, 10]);
}

#[test]
fn corrupt_and_non_onnx_bytes_are_refused() {
    assert!(matches!(OnnxModel::load(b""), Err(ExecError::Load(_))));
    assert!(matches!(
        OnnxModel::load(b"hello, not a model"),
        Err(ExecError::Load(_))
    ));
    assert!(matches!(
        OnnxModel::load(&MLP[..MLP.len() / 2]),
        Err(ExecError::Load(_))
    ));
}

/// The hub checks a staged upload from its file (memory-mapped): the same verdicts as from
/// bytes.
#[test]
fn the_onnx_check_reads_a_file_as_it_reads_bytes() {
    use haca_hub::ArtifactCheck;
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    };
    assert_eq!(
        OnnxCheck.check_file(&write("mlp.onnx", MLP)).unwrap(),
        "onnx"
    );
    // An unknown field (number 1000, 4 bytes) after the model: ONNX readers skip it.
    let mut padded = MLP.to_vec();
    padded.extend([0xc2, 0x3e, 4]);
    padded.extend(b"skip");
    assert_eq!(
        OnnxCheck
            .check_file(&write("padded.onnx", &padded))
            .unwrap(),
        "onnx"
    );
    for (name, bytes) in [
        ("empty", &b""[..]),
        ("junk", &b"hello, not a model"[..]),
        ("half", &MLP[..MLP.len() / 2]),
    ] {
        assert!(OnnxCheck.check(bytes).is_err(), "{name}");
        let e = OnnxCheck.check_file(&write(name, bytes)).unwrap_err();
        assert!(!e.is_empty(), "{name}");
    }
    assert!(OnnxCheck.check_file(&dir.path().join("missing")).is_err());
}

#[test]
fn cache_evicts_least_recently_used_by_bytes() {
    let cache = ModelCache::new(MLP.len() as u64 * 2);
    let ids: Vec<BlobId> = (0..3u8).map(|i| BlobId::of(&[i])).collect();
    for id in &ids[..2] {
        cache.get_or_load(id, || Ok(MLP.to_vec())).unwrap();
    }
    cache.get(&ids[0]); // 0 is now more recent than 1
    cache.get_or_load(&ids[2], || Ok(MLP.to_vec())).unwrap();
    assert!(cache.contains(&ids[0]));
    assert!(!cache.contains(&ids[1]));
    assert!(cache.contains(&ids[2]));
    assert_eq!(cache.used_bytes(), MLP.len() as u64 * 2);
    let e = cache
        .get_or_load(&BlobId::of(b"x"), || Err("blob missing".into()))
        .err()
        .unwrap();
    assert_eq!(e, ExecError::Load("blob missing".into()));
}
