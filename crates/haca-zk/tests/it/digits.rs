use crate::{argmax, heldout, model};
use haca_zk::model::FloatNet;
use haca_zk::quant::quantize;
use haca_zk::{verify, Proof};

/// Float and quantized accuracy on the held-out digits, in correct answers.
fn accuracy(name: &str) -> (usize, usize, usize, usize) {
    let net = FloatNet::from_onnx(&model(name)).unwrap();
    let q = quantize(&net, 1.0).unwrap();
    let data = heldout();
    let (mut float_ok, mut quant_ok, mut agree) = (0, 0, 0);
    for (x, label) in &data {
        let f = argmax(&net.forward(x));
        let qv = argmax(&q.forward(x).unwrap());
        float_ok += (f == *label as usize) as usize;
        quant_ok += (qv == *label as usize) as usize;
        agree += (f == qv) as usize;
    }
    (data.len(), float_ok, quant_ok, agree)
}

#[test]
fn quantized_models_keep_their_float_accuracy_on_held_out_digits() {
    // Float accuracies as onnxruntime measured them on the same files (tools/train_digits.py):
    // the float path here reads the ONNX the same way.
    for (name, ort_correct) in [
        ("digits-mlp-56.onnx", 354),
        ("digits-cnn.onnx", 355),
        ("mnist-mlp.onnx", 357),
    ] {
        let (n, float_ok, quant_ok, agree) = accuracy(name);
        println!("{name}: n {n}, float {float_ok}, quantized {quant_ok}, argmax agreement {agree}");
        assert_eq!(n, 360);
        assert_eq!(
            float_ok, ort_correct,
            "{name}: the float path disagrees with onnxruntime"
        );
        assert!(
            quant_ok + 1 >= float_ok,
            "{name}: quantization lost more than one digit"
        );
        assert!(
            agree >= n - 1,
            "{name}: quantized and float answers differ on {} digits",
            n - agree
        );
    }
}

#[test]
fn proofs_of_real_models_verify_and_match_the_float_output() {
    let data = heldout();
    for name in ["digits-mlp-56.onnx", "digits-cnn.onnx"] {
        let pk = haca_zk::setup(&model(name), 1.0).unwrap();
        let net = FloatNet::from_onnx(&model(name)).unwrap();
        for (x, label) in data.iter().take(3) {
            let (out, proof) = pk.prove(x).unwrap();
            let float = net.forward(x);
            for (a, b) in out.iter().zip(&float) {
                assert!((a - b).abs() < 0.05, "{name}: quantized {a} vs float {b}");
            }
            assert_eq!(argmax(&out), *label as usize, "{name}");
            let bytes = proof.to_bytes();
            let back = Proof::from_bytes(&bytes).unwrap();
            verify(&pk.vk, &back).unwrap_or_else(|e| panic!("{name}: {e}"));
            println!("{name}: proof {} bytes", bytes.len());
        }
    }
}

#[test]
fn the_weight_commitment_is_recomputed_from_the_model_bytes() {
    // Setup is deterministic (a verifier recomputes it from the file) and tells models apart.
    let a = haca_zk::setup(&model("digits-mlp-56.onnx"), 1.0).unwrap();
    let again = haca_zk::setup(&model("digits-mlp-56.onnx"), 1.0).unwrap();
    assert_eq!(a.vk.digest(), again.vk.digest());
    let c = haca_zk::setup(&model("mnist-mlp.onnx"), 1.0).unwrap();
    assert_ne!(a.vk.weights.root, c.vk.weights.root);
}

#[test]
fn a_key_is_checked_against_its_model_file() {
    let pk = haca_zk::setup(&model("digits-mlp-56.onnx"), haca_zk::DEFAULT_INPUT_BOUND).unwrap();
    pk.vk.check_model(&model("digits-mlp-56.onnx")).unwrap();
    let e = pk
        .vk
        .check_model(&model("mnist-mlp.onnx"))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("verifying_key:"), "{e}");
}

#[test]
fn a_proof_box_for_another_blob_fails_its_binding() {
    use haca_core::claims::{ClaimState, ProofVerifier};
    use haca_core::BlobId;
    use haca_zk::receipt_check::{proved_evidence, ZkVerifier};
    let a = model("digits-mlp-56.onnx");
    let b = model("mnist-mlp.onnx");
    let pk = haca_zk::setup(&a, haca_zk::DEFAULT_INPUT_BOUND).unwrap();
    let (_, proof) = pk.prove(&crate::heldout()[3].0).unwrap();
    let ev = proved_evidence(&pk.vk, &proof, 1);
    let mut v = ZkVerifier::default();
    v.models.insert(BlobId::of(&a), a.clone());
    v.models.insert(BlobId::of(&b), b.clone());
    assert!(v.bound(&ev, &BlobId::of(&a)).is_ok());
    let (state, why) = v.bound(&ev, &BlobId::of(&b)).unwrap_err();
    assert_eq!(state, ClaimState::Fails, "{why}");
    assert!(why.contains("verifying_key"), "{why}");
    let (state, _) = ZkVerifier::default()
        .bound(&ev, &BlobId::of(&a))
        .unwrap_err();
    assert_eq!(state, ClaimState::Unchecked);
}
