use crate::{heldout, model};
use haca_zk::field::{E, F};
use haca_zk::{verify, Proof, ProvingKey, ZkError};
use prost::Message;
use std::sync::OnceLock;

fn mlp() -> &'static (ProvingKey, Proof) {
    static P: OnceLock<(ProvingKey, Proof)> = OnceLock::new();
    P.get_or_init(|| {
        let pk = haca_zk::setup(&model("digits-mlp-56.onnx"), 1.0).unwrap();
        let (_, proof) = pk.prove(&heldout()[7].0).unwrap();
        (pk, proof)
    })
}

fn refused(p: &Proof) -> String {
    let (pk, _) = mlp();
    verify(&pk.vk, p)
        .expect_err("a tampered proof must fail")
        .to_string()
}

#[test]
fn a_tampered_output_fails() {
    let mut p = mlp().1.clone();
    p.output[3] += 1;
    let e = refused(&p);
    assert!(e.contains("layers[0]"), "{e}");
}

#[test]
fn a_tampered_input_fails() {
    let mut p = mlp().1.clone();
    p.input[400] += 1;
    let e = refused(&p);
    // The transcript absorbs the input, so every challenge moves: the first sumcheck fails.
    assert!(e.starts_with("layers[0]"), "{e}");
    let mut p = mlp().1.clone();
    p.input[0] = i64::MAX;
    assert!(refused(&p).contains("outside the model's input range"));
}

#[test]
fn tampered_proof_parts_fail_with_their_reason() {
    let base = &mlp().1;
    let mut p = base.clone();
    p.layers[0].rounds[2][1] += E::ONE;
    assert!(refused(&p).contains("does not add up"), "{}", refused(&p));
    let mut p = base.clone();
    p.layers[1].rescale.as_mut().unwrap().planes[4] += E::ONE;
    assert!(refused(&p).contains("rounding"), "{}", refused(&p));
    let mut p = base.clone();
    p.layers[0].weight_eval += E::ONE;
    assert!(refused(&p).contains("matrix product"), "{}", refused(&p));
    let mut p = base.clone();
    p.witness_opening.as_mut().unwrap().columns[5].values[2] += F::ONE;
    assert!(refused(&p).contains("witness_opening"), "{}", refused(&p));
    let mut p = base.clone();
    p.weight_opening.columns[0].values[0] += F::ONE;
    assert!(refused(&p).contains("weight_opening"), "{}", refused(&p));
    let bytes = base.to_bytes();
    let e = Proof::from_bytes(&bytes[..bytes.len() / 2]).unwrap_err();
    assert!(matches!(e, ZkError::Malformed(_)), "{e}");
}

#[test]
fn a_tampered_weight_commitment_or_another_models_key_fails() {
    let (pk, p) = mlp();
    let mut vk = pk.vk.clone();
    vk.weights.root[0] ^= 1;
    let e = verify(&vk, p).unwrap_err().to_string();
    assert!(e.contains("vk_digest"), "{e}");
    // Re-made for the tampered key, the proof still fails on the weights.
    let mut p2 = p.clone();
    p2.vk_digest = vk.digest();
    let e = verify(&vk, &p2).unwrap_err().to_string();
    assert!(e.contains("weight_opening") || e.contains("layers"), "{e}");
    let other = haca_zk::setup(&model("mnist-mlp.onnx"), 1.0).unwrap();
    let e = verify(&other.vk, p).unwrap_err().to_string();
    assert!(e.contains("another verifying key"), "{e}");
}

#[test]
fn an_unsupported_operator_is_refused_by_name() {
    let mut m = tract_onnx::pb::ModelProto::decode(&model("digits-mlp-56.onnx")[..]).unwrap();
    let g = m.graph.as_mut().unwrap();
    let relu = g.node.iter_mut().find(|n| n.op_type == "Relu").unwrap();
    relu.op_type = "Sigmoid".into();
    let name = relu.name.clone();
    let e = haca_zk::setup(&m.encode_to_vec(), 1.0).err().unwrap();
    assert_eq!(
        e,
        ZkError::UnsupportedOperator {
            op: "Sigmoid".into(),
            node: name
        }
    );
    assert!(e.to_string().contains("Sigmoid"));
}

#[test]
fn an_input_outside_the_calibrated_range_is_refused_naming_it() {
    let (pk, _) = mlp();
    let mut x = heldout()[0].0.clone();
    x[17] = 40.0;
    let e = pk.prove(&x).unwrap_err().to_string();
    assert!(e.contains("input[17]"), "{e}");
}

/// A deterministic stream of numbers for the byte mutations (splitmix64).
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn flipped_or_truncated_proof_bytes_are_refused_without_panicking() {
    let (pk, proof) = mlp();
    let bytes = proof.to_bytes();
    let mut mix = Mix(0x5eed);
    let (mut refused, mut same_proof) = (0, 0);
    for round in 0..500 {
        let mut b = bytes.clone();
        match round % 3 {
            0 => b.truncate(mix.below(bytes.len())),
            _ => {
                for _ in 0..1 + mix.below(4) {
                    let i = mix.below(b.len());
                    b[i] ^= 1 + mix.below(255) as u8;
                }
            }
        }
        match Proof::from_bytes(&b).and_then(|p| verify(&pk.vk, &p).map(|()| p)) {
            Err(_) => refused += 1,
            // What still verifies must be the same proof written differently (such as a hex
            // digest in capitals): it decodes to exactly the original.
            Ok(p) => {
                assert_eq!(
                    p.to_bytes(),
                    bytes,
                    "round {round}: a changed proof verified"
                );
                same_proof += 1;
            }
        }
    }
    println!("500 mutations: {refused} refused, {same_proof} decoded to the same proof");
    assert!(refused >= 490, "{refused}");
}

#[test]
fn a_proof_has_one_encoding() {
    let bytes = mlp().1.to_bytes();
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(matches!(
        Proof::from_bytes(&longer),
        Err(ZkError::Malformed(_))
    ));
    // The same digest written in upper case is the same proof in another encoding: refused.
    let text = hex::encode(mlp().1.vk_digest);
    let at = bytes
        .windows(64)
        .position(|w| w == text.as_bytes())
        .expect("the digest's hex");
    let mut upper = bytes.clone();
    upper[at..at + 64].make_ascii_uppercase();
    if upper != bytes {
        assert!(matches!(
            Proof::from_bytes(&upper),
            Err(ZkError::Malformed(_))
        ));
    }
}
