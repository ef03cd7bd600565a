//! `haca zk`: proofs of ONNX runs (zkml mode's proof system), offline on a model file (haca-zk's prover and
//! verifier, no node). `prove` writes a proof file, `verify` checks one, `eval` measures what
//! quantization costs in accuracy on a labelled digit set. Each prints one JSON line on stdout
//! (bench/zk_compare.py reads it); progress goes to stderr on a terminal only.

use super::{json_arg, CliError};
use base64::Engine as _;
use clap::{Args, Subcommand};
use haca_zk::model::FloatNet;
use haca_zk::{Proof, VerifyingKey, ZkError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

#[derive(Subcommand)]
pub enum ZkCommand {
    /// Run MODEL on an input and prove the run; writes the proof file and prints
    /// {"prove_ms", "setup_ms", "proof_bytes", "output"}.
    Prove(ProveArgs),
    /// Check a proof file; prints {"ok", "verify_ms", "model_bound"}, or `error: REASON` and
    /// exit status 1.
    Verify(VerifyArgs),
    /// Float and quantized accuracy of MODEL on labelled images (N×784 bytes, pixel/255), and
    /// how often their argmax agree.
    Eval(EvalArgs),
}

#[derive(Args)]
pub struct ProveArgs {
    /// The ONNX model file.
    model: PathBuf,
    /// {"input": {"shape": [...], "data": [...]}} or the bare {"shape", "data"} object:
    /// inline JSON, or a path to a file holding it.
    #[arg(long)]
    input: String,
    /// Where the proof file goes.
    #[arg(long, value_name = "PROOF.json")]
    out: PathBuf,
    /// Inputs are proved for |x| ≤ this bound (the model's quantization is calibrated on it).
    #[arg(long, default_value_t = haca_zk::DEFAULT_INPUT_BOUND)]
    input_bound: f32,
}

#[derive(Args)]
pub struct VerifyArgs {
    /// The proof file, as `haca zk prove` writes it.
    proof: PathBuf,
    /// The model file the proof must be for: its verifying key is recomputed from these bytes.
    /// Without it the key is taken from the proof file, and what model it belongs to is
    /// unchecked.
    #[arg(long)]
    model: Option<PathBuf>,
}

#[derive(Args)]
pub struct EvalArgs {
    /// The ONNX model file (784 inputs).
    model: PathBuf,
    /// N×784 bytes, one image after the other; each input is byte/255.
    #[arg(long)]
    images: PathBuf,
    /// N bytes, the label of each image.
    #[arg(long)]
    labels: PathBuf,
    #[arg(long, default_value_t = haca_zk::DEFAULT_INPUT_BOUND)]
    input_bound: f32,
}

/// The proof file: the key and the proof, with the float output for people and tools.
#[derive(Serialize, Deserialize)]
struct ProofFile {
    system: String,
    verifying_key: VerifyingKey,
    verifying_key_digest: String,
    input_shape: Vec<usize>,
    output: Vec<f32>,
    /// base64 of the proof's CBOR bytes
    proof: String,
}

/// What `prove` prints: through serde, so the output's f32 values print as the proof file
/// holds them (a `json!` value would widen them to f64 digits).
#[derive(Serialize)]
struct ProveLine<'a> {
    prove_ms: f64,
    setup_ms: f64,
    proof_bytes: usize,
    output: &'a [f32],
}

pub fn run(cmd: &ZkCommand) -> Result<ExitCode, CliError> {
    match cmd {
        ZkCommand::Prove(a) => prove(a),
        ZkCommand::Verify(a) => verify(a),
        ZkCommand::Eval(a) => eval(a),
    }
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

/// Progress for a person at a terminal; nothing when stderr is a pipe or a file.
fn progress(line: &str) {
    if std::io::stderr().is_terminal() {
        eprintln!("{line}");
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, CliError> {
    std::fs::read(path).map_err(|e| CliError::Msg(format!("{what} {}: {e}", path.display())))
}

fn zk_err(what: &str, e: ZkError) -> CliError {
    CliError::Msg(format!("{what}: {e}"))
}

/// A failed check of the proof: the error names the failing part of it.
fn refused(e: ZkError) -> CliError {
    CliError::Msg(e.to_string())
}

/// The model's input shape with leading batch dimensions of 1 left out.
fn unbatched(shape: &[usize]) -> &[usize] {
    let ones = shape.iter().take_while(|&&d| d == 1).count();
    &shape[ones.min(shape.len().saturating_sub(1))..]
}

/// The dense input from `{"input": {"shape", "data"}}` or `{"shape", "data"}`, checked against
/// the model's input shape.
fn parse_input(v: &Value, model_shape: &[usize]) -> Result<(Vec<usize>, Vec<f32>), CliError> {
    let (obj, at) = match v.get("input") {
        Some(inner) => (inner, "--input: input."),
        None => (v, "--input: "),
    };
    let err = |field: &str, msg: String| CliError::Msg(format!("{at}{field} {msg}"));
    let shape: Vec<usize> = match obj.get("shape") {
        None => return Err(err("shape", "is missing".into())),
        Some(s) => serde_json::from_value(s.clone())
            .map_err(|_| err("shape", "must be an array of whole numbers".into()))?,
    };
    let data = match obj.get("data") {
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, x)| {
                x.as_f64()
                    .map(|f| f as f32)
                    .ok_or_else(|| err(&format!("data[{i}]"), "is not a number".into()))
            })
            .collect::<Result<Vec<f32>, _>>()?,
        Some(_) => return Err(err("data", "must be an array of numbers".into())),
        None => return Err(err("data", "is missing".into())),
    };
    let want: usize = model_shape.iter().product();
    if data.len() != want {
        return Err(err(
            "data",
            format!(
                "has {} values, the model takes {want} (shape {model_shape:?})",
                data.len()
            ),
        ));
    }
    if unbatched(&shape) != unbatched(model_shape) {
        return Err(err(
            "shape",
            format!("is {shape:?}, the model takes {model_shape:?}"),
        ));
    }
    Ok((shape, data))
}

fn prove(a: &ProveArgs) -> Result<ExitCode, CliError> {
    let onnx = read(&a.model, "model")?;
    let input = json_arg(&a.input, "--input")?;
    let t = Instant::now();
    let pk = haca_zk::setup(&onnx, a.input_bound).map_err(|e| zk_err("setup", e))?;
    let setup_ms = ms(t);
    let (shape, data) = parse_input(&input, &pk.vk.net.input_shape)?;
    progress(&format!(
        "setup done in {setup_ms:.0} ms ({}, {} layers)",
        a.model.display(),
        pk.vk.net.layers.len()
    ));
    progress("proving");
    let t = Instant::now();
    let (output, proof) = pk.prove(&data).map_err(|e| zk_err("prove", e))?;
    let prove_ms = ms(t);
    let bytes = proof.to_bytes();
    let file = ProofFile {
        system: haca_zk::SYSTEM.into(),
        verifying_key_digest: hex::encode(pk.vk.digest()),
        verifying_key: pk.vk.clone(),
        input_shape: shape,
        output: output.clone(),
        proof: base64::engine::general_purpose::STANDARD.encode(&bytes),
    };
    let text = serde_json::to_string(&file).expect("a proof file serializes");
    std::fs::write(&a.out, text)
        .map_err(|e| CliError::Msg(format!("--out {}: {e}", a.out.display())))?;
    progress(&format!(
        "proved in {prove_ms:.0} ms, {} proof bytes, written to {}",
        bytes.len(),
        a.out.display()
    ));
    let line = ProveLine {
        prove_ms,
        setup_ms,
        proof_bytes: bytes.len(),
        output: &output,
    };
    println!("{}", serde_json::to_string(&line).expect("JSON prints"));
    Ok(ExitCode::SUCCESS)
}

/// Reads and checks the proof file; the proof is then checked against its key, and with a model
/// the key against the model. `verify_ms` covers decoding the proof bytes and checking them.
fn verify(a: &VerifyArgs) -> Result<ExitCode, CliError> {
    let name = a.proof.display();
    let text = read(&a.proof, "proof file")?;
    let file: ProofFile = serde_json::from_slice(&text)
        .map_err(|e| CliError::Msg(format!("{name}: not a haca zk proof file: {e}")))?;
    if file.system != haca_zk::SYSTEM {
        return Err(CliError::Msg(format!(
            "system: the proof file is for {:?}, this verifier checks {:?}",
            file.system,
            haca_zk::SYSTEM
        )));
    }
    if file.verifying_key_digest != hex::encode(file.verifying_key.digest()) {
        return Err(CliError::Msg(
            "verifying_key_digest: is not the digest of the file's verifying_key".into(),
        ));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(file.proof.trim())
        .map_err(|e| CliError::Msg(format!("proof: not base64: {e}")))?;
    let model_bound = match &a.model {
        Some(path) => {
            let onnx = read(path, "--model")?;
            file.verifying_key
                .check_model(&onnx)
                .map_err(|e| zk_err(&format!("--model {}", path.display()), e))?;
            true
        }
        None => {
            eprintln!(
                "note: the verifying key is taken from {name}; which model it belongs to is \
                 unchecked (give --model MODEL.onnx to bind the proof to a model file)"
            );
            false
        }
    };
    let t = Instant::now();
    let proof = Proof::from_bytes(&bytes).map_err(refused)?;
    haca_zk::verify(&file.verifying_key, &proof).map_err(refused)?;
    let verify_ms = ms(t);
    let proved = file.verifying_key.net.dequantize_output(&proof.output);
    if proved != file.output {
        return Err(CliError::Msg(format!(
            "output: the file's output {:?} is not the proved output {proved:?}",
            file.output
        )));
    }
    println!(
        "{}",
        json!({"ok": true, "verify_ms": verify_ms, "model_bound": model_bound})
    );
    Ok(ExitCode::SUCCESS)
}

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i)
}

fn eval(a: &EvalArgs) -> Result<ExitCode, CliError> {
    let onnx = read(&a.model, "model")?;
    let images = read(&a.images, "--images")?;
    let labels = read(&a.labels, "--labels")?;
    let net = FloatNet::from_onnx(&onnx).map_err(|e| zk_err("model", e))?;
    let q = haca_zk::quant::quantize(&net, a.input_bound).map_err(|e| zk_err("model", e))?;
    let len = net.input_len();
    if labels.is_empty() || images.len() != labels.len() * len {
        return Err(CliError::Msg(format!(
            "--images: {} bytes is not {} labels × {len} inputs the model takes",
            images.len(),
            labels.len()
        )));
    }
    let (mut float_ok, mut quant_ok, mut agree) = (0usize, 0usize, 0usize);
    for (i, (px, &label)) in images.chunks(len).zip(&labels).enumerate() {
        let x: Vec<f32> = px.iter().map(|&p| p as f32 / 255.0).collect();
        let f = argmax(&net.forward(&x));
        let qv = argmax(
            &q.forward(&x)
                .map_err(|e| zk_err(&format!("image {i}"), e))?,
        );
        float_ok += (f == label as usize) as usize;
        quant_ok += (qv == label as usize) as usize;
        agree += (f == qv) as usize;
    }
    let n = labels.len();
    println!(
        "{}",
        json!({
            "n": n,
            "float_accuracy": float_ok as f64 / n as f64,
            "quantized_accuracy": quant_ok as f64 / n as f64,
            "argmax_agreement": agree as f64 / n as f64,
        })
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_input_of_the_wrong_length_or_shape_is_refused_naming_the_field() {
        let shape = [1, 784];
        let v = json!({"input": {"shape": [1, 3], "data": [0.0, 0.5, 1.0]}});
        let e = parse_input(&v, &shape).unwrap_err().to_string();
        assert!(
            e.contains("input.data has 3 values, the model takes 784"),
            "{e}"
        );
        let v = json!({"shape": [28, 28], "data": vec![0.0; 784]});
        let e = parse_input(&v, &shape).unwrap_err().to_string();
        assert!(e.starts_with("--input: shape is [28, 28]"), "{e}");
        let v = json!({"shape": [784], "data": vec![0.0; 784]});
        assert_eq!(parse_input(&v, &shape).unwrap().1.len(), 784);
        let v = json!({"input": {"shape": [1, 784], "data": ["a"]}});
        let e = parse_input(&v, &shape).unwrap_err().to_string();
        assert!(e.contains("input.data[0] is not a number"), "{e}");
    }
}
