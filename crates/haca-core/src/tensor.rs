//! Tensors as they cross the API: the request's `input`, the answer's `output`, and the
//! fixed binary layout whose SHA-256 is a run's input or output hash.
//!
//! Two input shapes are accepted:
//! - haca's: `{"NAME": {"shape": [1, 784], "data": [...], "dtype": "float32"}}` (`dtype`
//!   defaults to float32; `data` may be flat or nested, `shape` may be left out when nested);
//! - OpenGradient's ModelInput: `{"numbers": [{"name", "values": [[value, decimals], ...],
//!   "shape"}], "strings": [{"name", "values": [...]}]}`, where a number is value × 10^-decimals.

use crate::hash::{sha256, Digest};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// Element types haca carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F32,
    F64,
    I64,
    I32,
    U8,
    Bool,
    Str,
}

impl DType {
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "float32",
            DType::F64 => "float64",
            DType::I64 => "int64",
            DType::I32 => "int32",
            DType::U8 => "uint8",
            DType::Bool => "bool",
            DType::Str => "string",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "float32" | "f32" | "float" => DType::F32,
            "float64" | "f64" | "double" => DType::F64,
            "int64" | "i64" => DType::I64,
            "int32" | "i32" => DType::I32,
            "uint8" | "u8" => DType::U8,
            "bool" => DType::Bool,
            "string" | "str" => DType::Str,
            _ => return None,
        })
    }
    /// The code used in the hashed binary layout.
    fn code(self) -> u8 {
        match self {
            DType::F32 => 1,
            DType::F64 => 2,
            DType::I64 => 3,
            DType::I32 => 4,
            DType::U8 => 5,
            DType::Bool => 6,
            DType::Str => 7,
        }
    }
}

/// Element storage.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I64(Vec<i64>),
    I32(Vec<i32>),
    U8(Vec<u8>),
    Bool(Vec<bool>),
    Str(Vec<String>),
}

impl TensorData {
    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len(),
            TensorData::F64(v) => v.len(),
            TensorData::I64(v) => v.len(),
            TensorData::I32(v) => v.len(),
            TensorData::U8(v) => v.len(),
            TensorData::Bool(v) => v.len(),
            TensorData::Str(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn dtype(&self) -> DType {
        match self {
            TensorData::F32(_) => DType::F32,
            TensorData::F64(_) => DType::F64,
            TensorData::I64(_) => DType::I64,
            TensorData::I32(_) => DType::I32,
            TensorData::U8(_) => DType::U8,
            TensorData::Bool(_) => DType::Bool,
            TensorData::Str(_) => DType::Str,
        }
    }
}

/// One named tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: TensorData,
    /// True when the client did not name a dtype (OpenGradient's ModelInput): the executor
    /// may then cast the numbers to the type the model declares.
    pub dtype_implied: bool,
}

impl Tensor {
    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }

    /// The JSON form used in answers: `{"dtype", "shape", "data": [flat]}`, which
    /// [`parse_input`] reads back to the same tensor (and so the same hash). JSON has no NaN
    /// or infinity: a tensor holding one is refused, naming the element (`at` names the
    /// tensor), rather than written as something that no longer hashes to its bits.
    pub fn to_json(&self, at: &str) -> Result<Value, TensorError> {
        let data = match &self.data {
            TensorData::F32(v) => Value::Array(
                v.iter()
                    .enumerate()
                    .map(|(i, x)| finite(*x as f64, at, i))
                    .collect::<Result<_, _>>()?,
            ),
            TensorData::F64(v) => Value::Array(
                v.iter()
                    .enumerate()
                    .map(|(i, x)| finite(*x, at, i))
                    .collect::<Result<_, _>>()?,
            ),
            TensorData::I64(v) => json!(v),
            TensorData::I32(v) => json!(v),
            TensorData::U8(v) => json!(v),
            TensorData::Bool(v) => json!(v),
            TensorData::Str(v) => json!(v),
        };
        Ok(json!({"dtype": self.dtype().name(), "shape": self.shape, "data": data}))
    }
}

fn finite(x: f64, at: &str, i: usize) -> Result<Value, TensorError> {
    serde_json::Number::from_f64(x)
        .map(Value::Number)
        .ok_or_else(|| {
            err(
                format!("{at}.data[{i}]"),
                format!("{x} is not finite (JSON has no NaN or infinity)"),
            )
        })
}

/// Named tensors, ordered by name.
pub type TensorMap = BTreeMap<String, Tensor>;

/// A tensor input that could not be read; `field` is the JSON path that was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct TensorError {
    pub field: String,
    pub reason: String,
}

fn err(field: impl Into<String>, reason: impl Into<String>) -> TensorError {
    TensorError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Reads a request's `input` object in either accepted shape. `at` names the field in errors.
pub fn parse_input(input: &Value, at: &str) -> Result<TensorMap, TensorError> {
    let obj = input
        .as_object()
        .ok_or_else(|| err(at, "must be an object mapping tensor names to tensors"))?;
    if obj.is_empty() {
        return Err(err(at, "names no tensor"));
    }
    let is_og = obj
        .iter()
        .all(|(k, v)| (k == "numbers" || k == "strings") && v.is_array());
    if is_og {
        parse_og_input(obj, at)
    } else {
        obj.iter()
            .map(|(name, v)| parse_tensor(v, &format!("{at}.{name}")).map(|t| (name.clone(), t)))
            .collect()
    }
}

fn parse_tensor(v: &Value, at: &str) -> Result<Tensor, TensorError> {
    let obj = v
        .as_object()
        .ok_or_else(|| err(at, "must be an object {shape, data, dtype}"))?;
    for key in obj.keys() {
        if !matches!(key.as_str(), "shape" | "data" | "dtype") {
            return Err(err(
                format!("{at}.{key}"),
                "unknown field (expected shape, data, dtype)",
            ));
        }
    }
    let dtype = match obj.get("dtype") {
        None | Some(Value::Null) => DType::F32,
        Some(Value::String(s)) => DType::parse(s).ok_or_else(|| {
            err(
                format!("{at}.dtype"),
                format!(
                    "unknown dtype {s:?} (float32, float64, int64, int32, uint8, bool, string)"
                ),
            )
        })?,
        Some(_) => return Err(err(format!("{at}.dtype"), "must be a string")),
    };
    let data = obj
        .get("data")
        .ok_or_else(|| err(format!("{at}.data"), "is required"))?;
    let mut flat = Vec::new();
    let nested_shape = flatten(data, &format!("{at}.data"), &mut flat, 0)?;
    let shape = match obj.get("shape") {
        None | Some(Value::Null) => nested_shape,
        Some(s) => parse_shape(s, &format!("{at}.shape"))?,
    };
    check_count(&shape, flat.len(), &format!("{at}.data"))?;
    let data = typed(&flat, dtype, &format!("{at}.data"))?;
    Ok(Tensor {
        shape,
        data,
        dtype_implied: false,
    })
}

/// Checks that `shape` holds exactly `len` elements (without overflowing on huge dims).
fn check_count(shape: &[usize], len: usize, at: &str) -> Result<(), TensorError> {
    match shape.iter().try_fold(1usize, |acc, d| acc.checked_mul(*d)) {
        Some(want) if want == len => Ok(()),
        Some(want) => Err(err(
            at,
            format!("has {len} elements but shape {shape:?} needs {want}"),
        )),
        None => Err(err(
            at,
            format!("has {len} elements but shape {shape:?} is too large to hold"),
        )),
    }
}

fn parse_shape(v: &Value, at: &str) -> Result<Vec<usize>, TensorError> {
    let arr = v
        .as_array()
        .ok_or_else(|| err(at, "must be an array of non-negative integers"))?;
    arr.iter()
        .enumerate()
        .map(|(i, d)| {
            d.as_u64()
                .filter(|d| *d <= u32::MAX as u64)
                .map(|d| d as usize)
                .ok_or_else(|| err(format!("{at}[{i}]"), "must be a non-negative integer"))
        })
        .collect()
}

/// Flattens nested arrays, returning the nested shape; rejects ragged arrays.
fn flatten<'a>(
    v: &'a Value,
    at: &str,
    out: &mut Vec<&'a Value>,
    depth: usize,
) -> Result<Vec<usize>, TensorError> {
    if depth > 32 {
        return Err(err(at, "nested more than 32 levels"));
    }
    match v {
        Value::Array(items) => {
            let mut inner: Option<Vec<usize>> = None;
            for (i, item) in items.iter().enumerate() {
                if item.is_array() {
                    let s = flatten(item, &format!("{at}[{i}]"), out, depth + 1)?;
                    if let Some(prev) = &inner {
                        if *prev != s {
                            return Err(err(format!("{at}[{i}]"), "ragged: rows differ in length"));
                        }
                    }
                    inner = Some(s);
                } else {
                    if inner.is_some() {
                        return Err(err(format!("{at}[{i}]"), "mixes arrays and scalars"));
                    }
                    out.push(item);
                }
            }
            let mut shape = vec![items.len()];
            shape.extend(inner.unwrap_or_default());
            Ok(shape)
        }
        _ => Err(err(at, "must be an array")),
    }
}

/// A JSON number as a person would write it back: integers as they are, floats in the
/// shortest form that reads back to the same double, in exponent form when large or tiny
/// (`1e39`, `-4e38`, `0.5`).
fn number_text(v: &Value) -> String {
    match v.as_f64() {
        Some(x) if !(v.is_i64() || v.is_u64()) => {
            if x != 0.0 && !(1e-6..1e16).contains(&x.abs()) {
                format!("{x:e}")
            } else {
                format!("{x}")
            }
        }
        _ => v.to_string(),
    }
}

/// Reads each element as `dtype`. A number that the dtype cannot hold is refused, naming
/// the element and the number: a float past the type's finite range (it would become an
/// infinity, which JSON cannot carry back), an integer outside the type's range.
fn typed(flat: &[&Value], dtype: DType, at: &str) -> Result<TensorData, TensorError> {
    let num = |i: usize, v: &Value| {
        let x = v.as_f64().ok_or_else(|| {
            err(
                format!("{at}[{i}]"),
                format!("is not a number (dtype {})", dtype.name()),
            )
        })?;
        if x.is_finite() {
            Ok(x)
        } else {
            Err(err(
                format!("{at}[{i}]"),
                format!("{} is not finite", number_text(v)),
            ))
        }
    };
    let int = |i: usize, v: &Value| {
        v.as_i64().ok_or_else(|| {
            // An integer past i64 (as JSON text, or written as a float such as 1e20).
            let too_big = v.is_u64()
                || v.as_f64()
                    .is_some_and(|x| x.fract() == 0.0 && x.abs() >= 9.2e18);
            let reason = if too_big {
                format!("{} overflows {}", number_text(v), dtype.name())
            } else {
                format!("is not an integer (dtype {})", dtype.name())
            };
            err(format!("{at}[{i}]"), reason)
        })
    };
    let out_of_range = |i: usize, v: &Value, range: &str| {
        err(
            format!("{at}[{i}]"),
            format!("{} overflows {} ({range})", number_text(v), dtype.name()),
        )
    };
    let e = flat.iter().enumerate();
    Ok(match dtype {
        DType::F32 => TensorData::F32(
            e.map(|(i, v)| {
                let x = num(i, v)? as f32;
                if x.is_finite() {
                    Ok(x)
                } else {
                    Err(out_of_range(i, v, "its largest magnitude is 3.4028235e38"))
                }
            })
            .collect::<Result<_, _>>()?,
        ),
        DType::F64 => TensorData::F64(e.map(|(i, v)| num(i, v)).collect::<Result<_, _>>()?),
        DType::I64 => TensorData::I64(e.map(|(i, v)| int(i, v)).collect::<Result<_, _>>()?),
        DType::I32 => TensorData::I32(
            e.map(|(i, v)| {
                int(i, v).and_then(|x| {
                    i32::try_from(x).map_err(|_| out_of_range(i, v, "-2147483648..=2147483647"))
                })
            })
            .collect::<Result<_, _>>()?,
        ),
        DType::U8 => TensorData::U8(
            e.map(|(i, v)| {
                int(i, v).and_then(|x| u8::try_from(x).map_err(|_| out_of_range(i, v, "0..=255")))
            })
            .collect::<Result<_, _>>()?,
        ),
        DType::Bool => TensorData::Bool(
            e.map(|(i, v)| {
                v.as_bool()
                    .ok_or_else(|| err(format!("{at}[{i}]"), "is not a boolean"))
            })
            .collect::<Result<_, _>>()?,
        ),
        DType::Str => TensorData::Str(
            e.map(|(i, v)| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| err(format!("{at}[{i}]"), "is not a string"))
            })
            .collect::<Result<_, _>>()?,
        ),
    })
}

fn parse_og_input(obj: &Map<String, Value>, at: &str) -> Result<TensorMap, TensorError> {
    let mut out = TensorMap::new();
    for (kind, list) in obj {
        let list = list.as_array().expect("checked by caller");
        for (i, item) in list.iter().enumerate() {
            let here = format!("{at}.{kind}[{i}]");
            let o = item
                .as_object()
                .ok_or_else(|| err(&here, "must be an object {name, values, shape}"))?;
            let name = o
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| err(format!("{here}.name"), "is required and must be a string"))?;
            let values = o
                .get("values")
                .and_then(Value::as_array)
                .ok_or_else(|| err(format!("{here}.values"), "is required and must be an array"))?;
            let tensor = if kind == "numbers" {
                let nums = values
                    .iter()
                    .enumerate()
                    .map(|(j, pair)| {
                        fixed_point(pair).ok_or_else(|| {
                            err(
                                format!("{here}.values[{j}]"),
                                "must be [value, decimals] with integer decimals 0..=38",
                            )
                        })
                    })
                    .collect::<Result<Vec<f64>, _>>()?;
                let shape = match o.get("shape") {
                    None | Some(Value::Null) => vec![nums.len()],
                    Some(s) => parse_shape(s, &format!("{here}.shape"))?,
                };
                check_count(&shape, nums.len(), &format!("{here}.values"))?;
                Tensor {
                    shape,
                    data: TensorData::F64(nums),
                    dtype_implied: true,
                }
            } else {
                let strs = values
                    .iter()
                    .enumerate()
                    .map(|(j, v)| {
                        v.as_str()
                            .map(str::to_owned)
                            .ok_or_else(|| err(format!("{here}.values[{j}]"), "is not a string"))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Tensor {
                    shape: vec![strs.len()],
                    data: TensorData::Str(strs),
                    dtype_implied: false,
                }
            };
            if out.insert(name.to_owned(), tensor).is_some() {
                return Err(err(
                    format!("{here}.name"),
                    format!("tensor {name:?} is given twice"),
                ));
            }
        }
    }
    if out.is_empty() {
        return Err(err(at, "names no tensor"));
    }
    Ok(out)
}

fn fixed_point(pair: &Value) -> Option<f64> {
    let arr = pair.as_array()?;
    if arr.len() != 2 {
        return None;
    }
    let value = arr[0].as_f64()?;
    let decimals = arr[1].as_u64().filter(|d| *d <= 38)?;
    Some(value / 10f64.powi(decimals as i32))
}

/// The map as JSON: `{NAME: {dtype, shape, data}}`, which [`parse_input`] reads back to the
/// same map and hash. A NaN or an infinity is refused (see [`Tensor::to_json`]); `at` names
/// the map in the error (`output` makes `output.NAME.data[3]`).
pub fn to_json(map: &TensorMap, at: &str) -> Result<Value, TensorError> {
    map.iter()
        .map(|(k, t)| Ok((k.clone(), t.to_json(&format!("{at}.{k}"))?)))
        .collect::<Result<_, _>>()
        .map(Value::Object)
}

/// SHA-256 of the fixed binary layout of a tensor map:
///
/// `"haca.tensors.v1"` ‖ u32be(count) ‖ for each tensor in name order: u32be(name length) ‖
/// name (UTF-8) ‖ u8(dtype code: f32 1, f64 2, i64 3, i32 4, u8 5, bool 6, string 7) ‖
/// u32be(rank) ‖ u64be(each dim) ‖ u64be(element count) ‖ elements little-endian (bool as one
/// byte 0/1; each string as u32be(length) ‖ UTF-8).
pub fn hash_tensors(map: &TensorMap) -> Digest {
    let mut buf = Vec::with_capacity(64 + map.values().map(|t| t.data.len() * 8).sum::<usize>());
    buf.extend_from_slice(b"haca.tensors.v1");
    buf.extend_from_slice(&(map.len() as u32).to_be_bytes());
    for (name, t) in map {
        buf.extend_from_slice(&(name.len() as u32).to_be_bytes());
        buf.extend_from_slice(name.as_bytes());
        buf.push(t.dtype().code());
        buf.extend_from_slice(&(t.shape.len() as u32).to_be_bytes());
        for d in &t.shape {
            buf.extend_from_slice(&(*d as u64).to_be_bytes());
        }
        buf.extend_from_slice(&(t.data.len() as u64).to_be_bytes());
        match &t.data {
            TensorData::F32(v) => v
                .iter()
                .for_each(|x| buf.extend_from_slice(&x.to_le_bytes())),
            TensorData::F64(v) => v
                .iter()
                .for_each(|x| buf.extend_from_slice(&x.to_le_bytes())),
            TensorData::I64(v) => v
                .iter()
                .for_each(|x| buf.extend_from_slice(&x.to_le_bytes())),
            TensorData::I32(v) => v
                .iter()
                .for_each(|x| buf.extend_from_slice(&x.to_le_bytes())),
            TensorData::U8(v) => buf.extend_from_slice(v),
            TensorData::Bool(v) => v.iter().for_each(|x| buf.push(*x as u8)),
            TensorData::Str(v) => v.iter().for_each(|s| {
                buf.extend_from_slice(&(s.len() as u32).to_be_bytes());
                buf.extend_from_slice(s.as_bytes());
            }),
        }
    }
    sha256(&buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn haca_form_defaults_to_float32_and_checks_shape() {
        let m = parse_input(
            &json!({"x": {"shape": [1, 3], "data": [1, 2.5, 3]}}),
            "input",
        )
        .unwrap();
        assert_eq!(m["x"].data, TensorData::F32(vec![1.0, 2.5, 3.0]));
        let e =
            parse_input(&json!({"x": {"shape": [1, 4], "data": [1, 2, 3]}}), "input").unwrap_err();
        assert_eq!(e.field, "input.x.data");
        assert!(e.reason.contains("3 elements"), "{e}");
    }

    #[test]
    fn nested_data_gives_its_shape_and_ragged_is_refused() {
        let m = parse_input(
            &json!({"x": {"data": [[1, 2], [3, 4]], "dtype": "int64"}}),
            "input",
        )
        .unwrap();
        assert_eq!(m["x"].shape, vec![2, 2]);
        assert_eq!(m["x"].data, TensorData::I64(vec![1, 2, 3, 4]));
        let e = parse_input(&json!({"x": {"data": [[1, 2], [3]]}}), "input").unwrap_err();
        assert!(e.reason.contains("ragged"), "{e}");
    }

    #[test]
    fn bad_dtype_and_values_name_their_field() {
        let e = parse_input(&json!({"x": {"data": [1], "dtype": "float7"}}), "input").unwrap_err();
        assert_eq!(e.field, "input.x.dtype");
        let e = parse_input(&json!({"x": {"data": [1, "a"]}}), "input").unwrap_err();
        assert_eq!(e.field, "input.x.data[1]");
        let e = parse_input(&json!([1]), "input").unwrap_err();
        assert_eq!(e.field, "input");
    }

    #[test]
    fn opengradient_model_input_is_fixed_point() {
        let m = parse_input(
            &json!({"numbers": [{"name": "x", "values": [[15, 1], [2, 0]], "shape": [1, 2]}], "strings": []}),
            "input",
        )
        .unwrap();
        assert_eq!(m["x"].data, TensorData::F64(vec![1.5, 2.0]));
        assert!(m["x"].dtype_implied);
        let e = parse_input(
            &json!({"numbers": [{"name": "x", "values": [[1]]}]}),
            "input",
        )
        .unwrap_err();
        assert_eq!(e.field, "input.numbers[0].values[0]");
    }

    #[test]
    fn numbers_a_dtype_cannot_hold_are_refused_naming_element_and_value() {
        let cases = [
            (
                json!([0.5, 1, 2, 1e39]),
                "float32",
                "input.x.data[3]",
                "1e39 overflows float32",
            ),
            (
                json!([-4e38]),
                "float32",
                "input.x.data[0]",
                "-4e38 overflows float32",
            ),
            (
                json!([1, 2147483648i64]),
                "int32",
                "input.x.data[1]",
                "2147483648 overflows int32",
            ),
            (
                json!([-2147483649i64]),
                "int32",
                "input.x.data[0]",
                "overflows int32",
            ),
            (
                json!([256]),
                "uint8",
                "input.x.data[0]",
                "256 overflows uint8",
            ),
            (
                json!([-1]),
                "uint8",
                "input.x.data[0]",
                "-1 overflows uint8",
            ),
            (
                json!([9223372036854775808u64]),
                "int64",
                "input.x.data[0]",
                "overflows int64",
            ),
            (json!([1e20]), "int64", "input.x.data[0]", "overflows int64"),
            (
                json!(["NaN"]),
                "float32",
                "input.x.data[0]",
                "is not a number",
            ),
            (
                json!(["inf"]),
                "float64",
                "input.x.data[0]",
                "is not a number",
            ),
            (
                json!([1.5]),
                "int64",
                "input.x.data[0]",
                "is not an integer",
            ),
        ];
        for (data, dtype, field, reason) in cases {
            let e = parse_input(&json!({"x": {"data": data, "dtype": dtype}}), "input")
                .expect_err(dtype);
            assert_eq!(e.field, field, "{e}");
            assert!(e.reason.contains(reason), "{e}");
        }
        // The edges themselves are accepted.
        let m = parse_input(
            &json!({"x": {"data": [3.4028234e38, -3.4028234e38, 1e-46], "dtype": "float32"}}),
            "input",
        )
        .unwrap();
        assert_eq!(
            m["x"].data,
            TensorData::F32(vec![f32::MAX, f32::MIN, 0.0]),
            "rounds to the nearest float32"
        );
        let m = parse_input(
            &json!({"x": {"data": [-2147483648i64, 2147483647], "dtype": "int32"}}),
            "input",
        )
        .unwrap();
        assert_eq!(m["x"].data, TensorData::I32(vec![i32::MIN, i32::MAX]));
        // JSON itself has no NaN or infinity: 1e400 is not even JSON serde reads.
        assert!(serde_json::from_str::<Value>("[1e400]").is_err());
    }

    #[test]
    fn a_tensor_holding_nan_or_infinity_has_no_json_form() {
        for (data, bad) in [
            (TensorData::F32(vec![1.0, f32::NAN]), "NaN"),
            (TensorData::F64(vec![f64::NEG_INFINITY]), "-inf"),
        ] {
            let n = data.len();
            let mut m = TensorMap::new();
            m.insert(
                "y".into(),
                Tensor {
                    shape: vec![n],
                    data,
                    dtype_implied: false,
                },
            );
            let e = to_json(&m, "output").unwrap_err();
            assert_eq!(e.field, format!("output.y.data[{}]", n - 1));
            assert!(
                e.reason.starts_with(bad) && e.reason.contains("not finite"),
                "{e}"
            );
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Numbers as JSON can carry them: any finite double (most past float32's range),
        /// float32's edges, every integer width, and texts that name non-numbers.
        fn number() -> impl Strategy<Value = Value> {
            prop_oneof![
                any::<f64>()
                    .prop_filter("JSON numbers are finite", |x| x.is_finite())
                    .prop_map(|x| json!(x)),
                any::<f32>()
                    .prop_filter("finite", |x| x.is_finite())
                    .prop_map(|x| json!(x as f64)),
                prop_oneof![
                    Just(3.4028235e38f64),
                    Just(3.4028236e38),
                    Just(-3.40282357e38),
                    Just(1e-46),
                    Just(-0.0),
                ]
                .prop_map(|x| json!(x)),
                any::<i64>().prop_map(|x| json!(x)),
                any::<u64>().prop_map(|x| json!(x)),
                any::<i32>().prop_map(|x| json!(x)),
                any::<u8>().prop_map(|x| json!(x)),
                any::<bool>().prop_map(|x| json!(x)),
                prop_oneof![Just("NaN"), Just("inf"), Just("-Infinity"), Just("1e39")]
                    .prop_map(|x| json!(x)),
                ".{0,8}".prop_map(Value::String),
            ]
        }

        fn dtype() -> impl Strategy<Value = Option<&'static str>> {
            prop_oneof![
                Just(None),
                prop_oneof![
                    Just("float32"),
                    Just("float64"),
                    Just("int64"),
                    Just("int32"),
                    Just("uint8"),
                    Just("bool"),
                    Just("string"),
                ]
                .prop_map(Some),
            ]
        }

        /// Elements of one kind, as a client of that dtype would send them (most accepted),
        /// or of every kind mixed (most refused).
        fn elements() -> impl Strategy<Value = (Option<&'static str>, Vec<Value>)> {
            fn of<T: std::fmt::Debug + Clone + 'static>(
                dtype: &'static str,
                s: impl Strategy<Value = T> + 'static,
                to: fn(T) -> Value,
            ) -> BoxedStrategy<(Option<&'static str>, Vec<Value>)> {
                prop::collection::vec(s.prop_map(to), 0..24)
                    .prop_map(move |v| (Some(dtype), v))
                    .boxed()
            }
            let finite32 = any::<f32>().prop_filter("finite", |x| x.is_finite());
            let finite64 = any::<f64>().prop_filter("finite", |x| x.is_finite());
            prop_oneof![
                (dtype(), prop::collection::vec(number(), 0..24)),
                of("float32", finite32, |x| json!(x as f64)),
                of("float64", finite64, |x| json!(x)),
                of("int64", any::<i64>(), |x| json!(x)),
                of("int32", any::<i32>(), |x| json!(x)),
                of("uint8", any::<u8>(), |x| json!(x)),
                of("bool", any::<bool>(), |x| json!(x)),
                of("string", ".{0,8}", Value::String),
            ]
        }

        fn tensor_input() -> impl Strategy<Value = Value> {
            (elements(), 0usize..3, any::<bool>()).prop_map(|((dtype, data), rows, with_shape)| {
                // Flat, or in `rows` equal rows when they divide the data.
                let nested = rows > 1 && data.len() % rows == 0 && !data.is_empty();
                let data_json = if nested {
                    Value::Array(
                        data.chunks(data.len() / rows)
                            .map(|c| Value::Array(c.to_vec()))
                            .collect(),
                    )
                } else {
                    Value::Array(data.clone())
                };
                let mut t = json!({"data": data_json});
                if let Some(d) = dtype {
                    t["dtype"] = json!(d);
                }
                if with_shape {
                    t["shape"] = json!([data.len()]);
                }
                json!({"x": t})
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1024))]

            /// No input panics the parser; whatever it accepts writes out as JSON, and that
            /// JSON, as text, reads back to a map with the same hash (so every accepted
            /// input, and every output the node answers with, can be re-hashed by a client).
            #[test]
            fn every_accepted_tensor_rehashes_after_a_json_round_trip(input in tensor_input()) {
                if let Ok(m) = parse_input(&input, "input") {
                    let out = to_json(&m, "input").expect("an accepted tensor has a JSON form");
                    let text = serde_json::to_string(&out).unwrap();
                    let back = parse_input(&serde_json::from_str(&text).unwrap(), "input")
                        .expect("its JSON form reads back");
                    prop_assert_eq!(hash_tensors(&back), hash_tensors(&m));
                    prop_assert_eq!(back, m);
                }
            }

            /// Floats the node computed: finite ones round-trip bit for bit, and the others
            /// are refused by name, never written as something else.
            #[test]
            fn computed_floats_round_trip_or_are_refused(v in prop::collection::vec(any::<f32>(), 1..16)) {
                let mut m = TensorMap::new();
                m.insert("y".into(), Tensor { shape: vec![v.len()], data: TensorData::F32(v.clone()), dtype_implied: false });
                match to_json(&m, "output") {
                    Ok(out) => {
                        prop_assert!(v.iter().all(|x| x.is_finite()));
                        let text = serde_json::to_string(&out).unwrap();
                        let back = parse_input(&serde_json::from_str(&text).unwrap(), "output").unwrap();
                        prop_assert_eq!(hash_tensors(&back), hash_tensors(&m));
                    }
                    Err(e) => {
                        let i = v.iter().position(|x| !x.is_finite()).expect("a non-finite element");
                        prop_assert_eq!(e.field, format!("output.y.data[{i}]"));
                    }
                }
            }
        }
    }

    /// Computed independently with Python's hashlib and struct over the same layout.
    const TENSOR_VECTOR_HEX: &str =
        "d152d7fcab33156e3dba0aad1c42b23f2747aa1371fdf0453a3958cab71d0a8d";

    #[test]
    fn tensor_hash_has_a_fixed_test_vector() {
        let mut m = TensorMap::new();
        m.insert(
            "x".into(),
            Tensor {
                shape: vec![2],
                data: TensorData::F32(vec![1.0, -2.0]),
                dtype_implied: false,
            },
        );
        // Layout bytes, written out by hand from the doc comment above.
        let mut want = b"haca.tensors.v1".to_vec();
        want.extend([
            0, 0, 0, 1, 0, 0, 0, 1, b'x', 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0,
            0, 2,
        ]);
        want.extend(1.0f32.to_le_bytes());
        want.extend((-2.0f32).to_le_bytes());
        assert_eq!(hash_tensors(&m), sha256(&want));
        assert_eq!(hash_tensors(&m).to_hex(), TENSOR_VECTOR_HEX);
    }
}
