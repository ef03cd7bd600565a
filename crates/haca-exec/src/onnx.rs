//! ONNX through tract.

use crate::ExecError;
use haca_core::tensor::{DType, Tensor, TensorData, TensorMap};
use tract_onnx::prelude::*;

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

/// A loaded, optimized ONNX model, ready to run from many threads.
pub struct OnnxModel {
    plan: Plan,
    inputs: Vec<InputSpec>,
    outputs: Vec<String>,
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

impl OnnxModel {
    /// Parses, type-checks and optimizes ONNX bytes.
    pub fn load(bytes: &[u8]) -> Result<Self, ExecError> {
        if bytes.is_empty() {
            return Err(ExecError::Load("the file is empty".into()));
        }
        let load = || -> TractResult<(Plan, Vec<InputSpec>, Vec<String>)> {
            let model = tract_onnx::onnx().model_for_read(&mut &bytes[..])?;
            let typed = model.into_typed()?;
            let mut inputs = Vec::new();
            for outlet in typed.input_outlets()? {
                let fact = typed.outlet_fact(*outlet)?;
                let name = typed.node(outlet.node).name.clone();
                let shape = fact
                    .shape
                    .iter()
                    .map(|d| d.to_i64().ok().map(|v| v as usize))
                    .collect();
                inputs.push(InputSpec {
                    name,
                    dtype: dtype_of(fact.datum_type),
                    shape,
                });
            }
            // An output's ONNX tensor name is its outlet label; its node is named after the op.
            let outputs = typed
                .output_outlets()?
                .iter()
                .map(|o| {
                    typed
                        .outlet_label(*o)
                        .map(str::to_owned)
                        .unwrap_or_else(|| typed.node(o.node).name.clone())
                })
                .collect::<Vec<_>>();
            let plan = typed.into_optimized()?.into_runnable()?;
            Ok((plan, inputs, outputs))
        };
        // tract reports the failing node and op; keep its first lines, they say what broke.
        let (plan, inputs, outputs) = load().map_err(|e| {
            ExecError::Load(
                format!("{e:#}")
                    .lines()
                    .take(3)
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })?;
        Ok(OnnxModel {
            plan,
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
        let outputs = self
            .plan
            .run(values)
            .map_err(|e| ExecError::Run(format!("{e:#}")))?;
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
}
