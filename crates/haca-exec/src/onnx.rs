//! ONNX through tract.

use crate::ExecError;
use haca_core::tensor::{DType, Tensor, TensorData, TensorMap};
use std::sync::Mutex;
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;

/// Written into receipts: runtimes agree to about 1e-6, not bit for bit.
pub const RUNTIME: &str = "tract-onnx 0.23";

type Plan = Arc<TypedRunnableModel>;

/// What a model input expects; `None` dims are symbolic (any size).
#[derive(Clone, Debug, PartialEq)]
pub struct InputSpec {
    pub name: String,
    pub dtype: Option<DType>,
    pub shape: Vec<Option<usize>>,
}

/// A loaded ONNX model, ready to run from many threads.
pub struct OnnxModel {
    compiled: Compiled,
    inputs: Vec<InputSpec>,
    outputs: Vec<String>,
}

/// How many concrete input shapes a symbolic-shape model keeps compiled plans for.
const MAX_SHAPE_PLANS: usize = 8;

enum Compiled {
    /// Optimized once, ahead of time.
    Fixed(Plan),
    /// Symbolic input dims that tract cannot optimize ahead of time (exporters write shape
    /// expressions it cannot unify): optimized per concrete input shape, most recent first.
    PerShape {
        model: InferenceModel,
        plans: Mutex<Vec<(Vec<Vec<usize>>, Plan)>>,
    },
}

fn dtype_of(dt: DatumType) -> Option<DType> {
    Some(match dt {
        DatumType::F32 => DType::F32,
        DatumType::F64 => DType::F64,
        DatumType::I64 => DType::I64,
        DatumType::I32 => DType::I32,
        DatumType::U8 => DType::U8,
        DatumType::Bool => DType::Bool,
        DatumType::String => DType::Str,
        _ => return None,
    })
}

fn datum_of(dt: DType) -> DatumType {
    match dt {
        DType::F32 => DatumType::F32,
        DType::F64 => DatumType::F64,
        DType::I64 => DatumType::I64,
        DType::I32 => DatumType::I32,
        DType::U8 => DatumType::U8,
        DType::Bool => DatumType::Bool,
        DType::Str => DatumType::String,
    }
}

/// tract's errors carry the failing node and op in their first lines.
fn brief(e: &TractError) -> String {
    format!("{e:#}")
        .lines()
        .take(3)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Where a model's bytes are: in memory, or in a file (which tract memory-maps, so the
/// file is not copied into memory whole; only what the model holds is).
#[derive(Clone, Copy)]
enum Source<'a> {
    Bytes(&'a [u8]),
    File(&'a std::path::Path),
}

fn parse(src: Source<'_>, ignore_value_info: bool) -> TractResult<InferenceModel> {
    let onnx = tract_onnx::onnx().with_ignore_value_info(ignore_value_info);
    match src {
        Source::Bytes(bytes) => onnx.model_for_read(&mut &bytes[..]),
        Source::File(path) => onnx.model_for_path(path),
    }
}

fn specs(model: &InferenceModel) -> TractResult<(Vec<InputSpec>, Vec<String>)> {
    let mut inputs = Vec::new();
    for outlet in model.input_outlets()? {
        let fact = model.outlet_fact(*outlet)?;
        let shape = fact
            .shape
            .dims()
            .map(|d| {
                d.concretize()
                    .and_then(|d| d.to_i64().ok())
                    .map(|v| v as usize)
            })
            .collect();
        inputs.push(InputSpec {
            name: model.node(outlet.node).name.clone(),
            dtype: fact.datum_type.concretize().and_then(dtype_of),
            shape,
        });
    }
    // An output's ONNX tensor name is its outlet label; its node is named after the op.
    let outputs = model
        .output_outlets()?
        .iter()
        .map(|o| {
            model
                .outlet_label(*o)
                .map(str::to_owned)
                .unwrap_or_else(|| model.node(o.node).name.clone())
        })
        .collect();
    Ok((inputs, outputs))
}

impl OnnxModel {
    /// Parses and type-checks ONNX bytes, and optimizes them when the input shapes allow.
    pub fn load(bytes: &[u8]) -> Result<Self, ExecError> {
        if bytes.is_empty() {
            return Err(ExecError::Load("the file is empty".into()));
        }
        Self::load_from(Source::Bytes(bytes))
    }

    /// [`OnnxModel::load`] from the file at `path`, memory-mapped rather than read: a large
    /// file's bytes are not copied into memory, only the tensors the model keeps.
    pub fn load_file(path: &std::path::Path) -> Result<Self, ExecError> {
        let len = std::fs::metadata(path)
            .map_err(|e| ExecError::Load(format!("{}: {e}", path.display())))?
            .len();
        if len == 0 {
            return Err(ExecError::Load("the file is empty".into()));
        }
        Self::load_from(Source::File(path))
    }

    fn load_from(src: Source<'_>) -> Result<Self, ExecError> {
        let model = parse(src, false).map_err(|e| ExecError::Load(brief(&e)))?;
        let (inputs, outputs) = specs(&model).map_err(|e| ExecError::Load(brief(&e)))?;
        let compiled = match model
            .clone()
            .into_optimized()
            .and_then(|m| m.into_runnable())
        {
            Ok(plan) => Compiled::Fixed(plan),
            Err(first) => {
                if !inputs.iter().any(|s| s.shape.iter().any(Option::is_none)) {
                    return Err(ExecError::Load(brief(&first)));
                }
                // Without the exporter's intermediate shape annotations, tract infers its own.
                let model = parse(src, true).map_err(|e| ExecError::Load(brief(&e)))?;
                let compiled = Compiled::PerShape {
                    model,
                    plans: Mutex::new(Vec::new()),
                };
                // Prove that it can run at all: compile once with every symbolic dim at 32.
                let sample: Vec<Vec<usize>> = inputs
                    .iter()
                    .map(|s| s.shape.iter().map(|d| d.unwrap_or(32)).collect())
                    .collect();
                compiled.plan_for(&inputs, &sample).map_err(|e| {
                    ExecError::Load(format!("{} (tried with symbolic dims at 32)", brief(&e)))
                })?;
                compiled
            }
        };
        Ok(OnnxModel {
            compiled,
            inputs,
            outputs,
        })
    }

    pub fn inputs(&self) -> &[InputSpec] {
        &self.inputs
    }

    pub fn outputs(&self) -> &[String] {
        &self.outputs
    }

    /// Runs the model. Inputs are checked against the model's declared names, dtypes and
    /// shapes first; errors name the offending field under `at` (such as `input`).
    pub fn run(&self, inputs: &TensorMap, at: &str) -> Result<TensorMap, ExecError> {
        let expected: Vec<&str> = self.inputs.iter().map(|s| s.name.as_str()).collect();
        if let Some(extra) = inputs.keys().find(|k| !expected.contains(&k.as_str())) {
            return Err(ExecError::Input {
                field: format!("{at}.{extra}"),
                reason: format!(
                    "the model has no input named {extra:?} (it takes {})",
                    expected.join(", ")
                ),
            });
        }
        let mut values: TVec<TValue> = tvec!();
        for spec in &self.inputs {
            let field = format!("{at}.{}", spec.name);
            let t = inputs.get(&spec.name).ok_or_else(|| ExecError::Input {
                field: field.clone(),
                reason: format!("is required by the model ({})", describe(spec)),
            })?;
            if t.shape.len() != spec.shape.len()
                || t.shape
                    .iter()
                    .zip(&spec.shape)
                    .any(|(got, want)| want.is_some_and(|w| w != *got))
            {
                return Err(ExecError::Input {
                    field: format!("{field}.shape"),
                    reason: format!(
                        "is {:?} but the model expects {}",
                        t.shape,
                        shape_text(&spec.shape)
                    ),
                });
            }
            values.push(to_tract(t, spec, &field)?.into());
        }
        let shapes: Vec<Vec<usize>> = self
            .inputs
            .iter()
            .map(|s| inputs[&s.name].shape.clone())
            .collect();
        let plan = self
            .compiled
            .plan_for(&self.inputs, &shapes)
            .map_err(|e| ExecError::Run(brief(&e)))?;
        let outputs = plan.run(values).map_err(|e| ExecError::Run(brief(&e)))?;
        let mut map = TensorMap::new();
        for (name, value) in self.outputs.iter().zip(outputs) {
            map.insert(
                name.clone(),
                from_tract(&value).map_err(|e| ExecError::Run(format!("output {name}: {e}")))?,
            );
        }
        Ok(map)
    }
}

impl Compiled {
    fn plan_for(&self, specs: &[InputSpec], shapes: &[Vec<usize>]) -> TractResult<Plan> {
        match self {
            Compiled::Fixed(plan) => Ok(plan.clone()),
            Compiled::PerShape { model, plans } => {
                {
                    let mut plans = plans.lock().expect("plan lock");
                    if let Some(i) = plans.iter().position(|(s, _)| s.as_slice() == shapes) {
                        let hit = plans.remove(i);
                        let plan = hit.1.clone();
                        plans.insert(0, hit);
                        return Ok(plan);
                    }
                }
                // Compiled outside the lock: other shapes keep running meanwhile.
                let mut m = model.clone();
                for (i, (spec, shape)) in specs.iter().zip(shapes).enumerate() {
                    let dt = spec.dtype.map(datum_of).unwrap_or(DatumType::F32);
                    m.set_input_fact(i, InferenceFact::dt_shape(dt, shape.clone()))?;
                }
                let plan = m.into_optimized()?.into_runnable()?;
                let mut plans = plans.lock().expect("plan lock");
                plans.insert(0, (shapes.to_vec(), plan.clone()));
                plans.truncate(MAX_SHAPE_PLANS);
                Ok(plan)
            }
        }
    }
}

fn shape_text(shape: &[Option<usize>]) -> String {
    let dims: Vec<String> = shape
        .iter()
        .map(|d| d.map(|d| d.to_string()).unwrap_or_else(|| "?".into()))
        .collect();
    format!("[{}]", dims.join(", "))
}

fn describe(spec: &InputSpec) -> String {
    format!(
        "{} {}",
        spec.dtype.map(DType::name).unwrap_or("tensor"),
        shape_text(&spec.shape)
    )
}

fn to_tract(
    t: &Tensor,
    spec: &InputSpec,
    field: &str,
) -> Result<tract_onnx::prelude::Tensor, ExecError> {
    let want = spec.dtype.unwrap_or(t.dtype());
    let data = if t.dtype() != want {
        if !t.dtype_implied {
            return Err(ExecError::Input {
                field: format!("{field}.dtype"),
                reason: format!(
                    "is {} but the model expects {}",
                    t.dtype().name(),
                    want.name()
                ),
            });
        }
        cast(&t.data, want).ok_or_else(|| ExecError::Input {
            field: field.into(),
            reason: format!("numbers cannot be given to a {} input", want.name()),
        })?
    } else {
        t.data.clone()
    };
    let shape = &t.shape;
    let bad = |e: tract_ndarray::ShapeError| ExecError::Input {
        field: field.into(),
        reason: e.to_string(),
    };
    Ok(match data {
        TensorData::F32(v) => tract_ndarray::ArrayD::from_shape_vec(shape.clone(), v)
            .map_err(bad)?
            .into_tensor(),
        TensorData::F64(v) => tract_ndarray::ArrayD::from_shape_vec(shape.clone(), v)
            .map_err(bad)?
            .into_tensor(),
        TensorData::I64(v) => tract_ndarray::ArrayD::from_shape_vec(shape.clone(), v)
            .map_err(bad)?
            .into_tensor(),
        TensorData::I32(v) => tract_ndarray::ArrayD::from_shape_vec(shape.clone(), v)
            .map_err(bad)?
            .into_tensor(),
        TensorData::U8(v) => tract_ndarray::ArrayD::from_shape_vec(shape.clone(), v)
            .map_err(bad)?
            .into_tensor(),
        TensorData::Bool(v) => tract_ndarray::ArrayD::from_shape_vec(shape.clone(), v)
            .map_err(bad)?
            .into_tensor(),
        TensorData::Str(v) => tract_ndarray::ArrayD::from_shape_vec(shape.clone(), v)
            .map_err(bad)?
            .into_tensor(),
    })
}

/// Casts OpenGradient fixed-point numbers (carried as f64) to the model's numeric type.
fn cast(data: &TensorData, to: DType) -> Option<TensorData> {
    let TensorData::F64(v) = data else {
        return None;
    };
    Some(match to {
        DType::F32 => TensorData::F32(v.iter().map(|x| *x as f32).collect()),
        DType::F64 => TensorData::F64(v.clone()),
        DType::I64 => TensorData::I64(v.iter().map(|x| x.round() as i64).collect()),
        DType::I32 => TensorData::I32(v.iter().map(|x| x.round() as i32).collect()),
        DType::U8 => TensorData::U8(
            v.iter()
                .map(|x| x.round().clamp(0.0, 255.0) as u8)
                .collect(),
        ),
        DType::Bool => TensorData::Bool(v.iter().map(|x| *x != 0.0).collect()),
        DType::Str => return None,
    })
}

fn from_tract(t: &tract_onnx::prelude::Tensor) -> TractResult<Tensor> {
    let shape = t.shape().to_vec();
    let data = match t.datum_type() {
        DatumType::F32 => {
            TensorData::F32(t.to_plain_array_view::<f32>()?.iter().cloned().collect())
        }
        DatumType::F64 => {
            TensorData::F64(t.to_plain_array_view::<f64>()?.iter().cloned().collect())
        }
        DatumType::F16 => TensorData::F32(
            t.cast_to::<f32>()?
                .to_plain_array_view::<f32>()?
                .iter()
                .cloned()
                .collect(),
        ),
        DatumType::I64 => {
            TensorData::I64(t.to_plain_array_view::<i64>()?.iter().cloned().collect())
        }
        DatumType::I32 => {
            TensorData::I32(t.to_plain_array_view::<i32>()?.iter().cloned().collect())
        }
        DatumType::I8 | DatumType::I16 | DatumType::U16 | DatumType::U32 => TensorData::I64(
            t.cast_to::<i64>()?
                .to_plain_array_view::<i64>()?
                .iter()
                .cloned()
                .collect(),
        ),
        DatumType::U8 => TensorData::U8(t.to_plain_array_view::<u8>()?.iter().cloned().collect()),
        DatumType::Bool => {
            TensorData::Bool(t.to_plain_array_view::<bool>()?.iter().cloned().collect())
        }
        DatumType::String => {
            TensorData::Str(t.to_plain_array_view::<String>()?.iter().cloned().collect())
        }
        other => {
            return Err(TractError::msg(format!(
                "output type {other:?} is not supported"
            )))
        }
    };
    Ok(Tensor {
        shape,
        data,
        dtype_implied: false,
    })
}

/// The hub's ONNX gate: bytes are accepted only if tract can load and optimize them.
pub struct OnnxCheck;

impl haca_hub::ArtifactCheck for OnnxCheck {
    fn check(&self, bytes: &[u8]) -> Result<String, String> {
        OnnxModel::load(bytes)
            .map(|_| "onnx".to_owned())
            .map_err(|e| e.to_string())
    }

    /// A staged upload is loaded from its file, memory-mapped: checking a large model does
    /// not first copy its whole file into memory.
    fn check_file(&self, path: &std::path::Path) -> Result<String, String> {
        OnnxModel::load_file(path)
            .map(|_| "onnx".to_owned())
            .map_err(|e| e.to_string())
    }
}
