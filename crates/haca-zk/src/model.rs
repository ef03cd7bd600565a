//! ONNX models as chains of linear layers (Gemm, MatMul + Add, Conv) with optional ReLU, their
//! float evaluation, and their fixed-point quantization with power-of-two scales.
//!
//! Activations live in a padded layout: channel `c`, position `p` (row-major within a channel)
//! sits at `c · 2^vars(positions) + p`, so that channels and positions are separate variables of
//! the multilinear extension. Flattening for a Gemm is a re-indexing of its weight columns, never
//! a data move.

use crate::poly::vars;
use crate::ZkError;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use tract_onnx::pb;
use tract_onnx::prelude::Framework;

/// Channels × positions, each padded to a power of two in the index space.
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
pub struct Layout {
    pub ch: usize,
    pub pos: usize,
}

impl Layout {
    pub fn pos_vars(&self) -> usize {
        vars(self.pos)
    }
    pub fn ch_vars(&self) -> usize {
        vars(self.ch)
    }
    pub fn vars(&self) -> usize {
        self.pos_vars() + self.ch_vars()
    }
    pub fn size(&self) -> usize {
        1 << self.vars()
    }
    pub fn dense_len(&self) -> usize {
        self.ch * self.pos
    }
    pub fn index(&self, c: usize, p: usize) -> usize {
        (c << self.pos_vars()) + p
    }
    /// The padded index of dense (NCHW-flattened) element `i`.
    pub fn index_of_dense(&self, i: usize) -> usize {
        self.index(i / self.pos, i % self.pos)
    }
}

/// How a linear layer reads its input.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub enum LinearOp {
    /// y[o] = Σ_i W[o][i]·x[i] over the input's dense flattening.
    Gemm,
    /// A 2-D convolution (group 1, no dilation) over an input of `h × w` positions.
    Conv {
        h: usize,
        w: usize,
        kh: usize,
        kw: usize,
        stride: [usize; 2],
        /// top, left
        pads: [usize; 2],
        oh: usize,
        ow: usize,
    },
}

impl LinearOp {
    /// The dense input element that weight column `j` reads at output position `p`, if any: a
    /// convolution reads nothing in its zero padding or past its last output position.
    pub fn source_dense(&self, j: usize, p: usize) -> Option<usize> {
        match *self {
            LinearOp::Gemm => Some(j),
            LinearOp::Conv {
                h,
                w,
                kh,
                kw,
                stride,
                pads,
                oh,
                ow,
            } => {
                if p >= oh * ow {
                    return None;
                }
                let (c, k) = (j / (kh * kw), j % (kh * kw));
                let (ky, kx) = (k / kw, k % kw);
                let (oy, ox) = (p / ow, p % ow);
                let iy = (oy * stride[0] + ky).checked_sub(pads[0])?;
                let ix = (ox * stride[1] + kx).checked_sub(pads[1])?;
                (iy < h && ix < w).then_some(c * h * w + iy * w + ix)
            }
        }
    }
}

/// A linear layer in float, as read from the model file.
#[derive(Clone, Debug)]
pub struct FloatLayer {
    pub op: LinearOp,
    pub input: Layout,
    pub output: Layout,
    /// out × inner, row-major; inner is the dense input length (Gemm) or c_in·kh·kw (Conv)
    pub weights: Vec<f32>,
    pub bias: Vec<f32>,
    pub relu: bool,
}

impl FloatLayer {
    /// A fully connected layer: `weights` is out × in, row-major.
    pub fn gemm(
        inputs: usize,
        outputs: usize,
        weights: Vec<f32>,
        bias: Vec<f32>,
        relu: bool,
    ) -> FloatLayer {
        FloatLayer {
            op: LinearOp::Gemm,
            input: Layout { ch: 1, pos: inputs },
            output: Layout {
                ch: outputs,
                pos: 1,
            },
            weights,
            bias,
            relu,
        }
    }

    pub fn inner(&self) -> usize {
        match self.op {
            LinearOp::Gemm => self.input.dense_len(),
            LinearOp::Conv { kh, kw, .. } => self.input.ch * kh * kw,
        }
    }

    /// The dense input element that weight column `j` reads at output position `p`.
    pub fn source(&self, j: usize, p: usize) -> Option<usize> {
        self.op.source_dense(j, p)
    }

    fn forward(&self, x: &[f32]) -> Vec<f32> {
        let (inner, positions) = (self.inner(), self.output.pos);
        let mut y = vec![0f32; self.output.dense_len()];
        for o in 0..self.output.ch {
            let row = &self.weights[o * inner..(o + 1) * inner];
            for p in 0..positions {
                let mut acc = self.bias[o];
                for (j, wv) in row.iter().enumerate() {
                    if let Some(s) = self.source(j, p) {
                        acc += wv * x[s];
                    }
                }
                y[o * positions + p] = if self.relu { acc.max(0.0) } else { acc };
            }
        }
        y
    }
}

/// A model file read as a chain of linear layers.
#[derive(Clone, Debug)]
pub struct FloatNet {
    pub input_name: String,
    pub input_shape: Vec<usize>,
    pub output_name: String,
    pub output_shape: Vec<usize>,
    pub layers: Vec<FloatLayer>,
}

impl FloatNet {
    /// Reads an ONNX model; an operator outside the supported set is refused by name.
    pub fn from_onnx(bytes: &[u8]) -> Result<FloatNet, ZkError> {
        let proto = tract_onnx::onnx()
            .proto_model_for_read(&mut &bytes[..])
            .map_err(|e| ZkError::Model(format!("not a readable ONNX file: {e}")))?;
        let graph = proto
            .graph
            .ok_or_else(|| ZkError::Model("the ONNX file has no graph".into()))?;
        let inits: HashMap<&str, &pb::TensorProto> = graph
            .initializer
            .iter()
            .map(|t| (t.name.as_str(), t))
            .collect();
        let inputs: Vec<&pb::ValueInfoProto> = graph
            .input
            .iter()
            .filter(|i| !inits.contains_key(i.name.as_str()))
            .collect();
        let [input] = inputs[..] else {
            return Err(ZkError::Model(format!(
                "zkml needs exactly one input tensor, the model has {}",
                inputs.len()
            )));
        };
        let input_shape = shape_of(input)?;
        if input_shape.first() != Some(&1) {
            return Err(ZkError::Model(format!(
                "input {:?}: zkml proves batch size 1, shape {input_shape:?}",
                input.name
            )));
        }
        let mut shape: Vec<usize> = input_shape[1..].to_vec();
        let mut current = input.name.clone();
        // Where the data sits; only a linear layer moves it (Flatten and Reshape re-label).
        let mut layout = layout_of(&shape);
        let mut layers: Vec<FloatLayer> = Vec::new();
        let mut pending_matmul: Option<usize> = None;
        for node in &graph.node {
            let name = if node.name.is_empty() {
                node.op_type.clone()
            } else {
                node.name.clone()
            };
            let data_in: Vec<&String> = node
                .input
                .iter()
                .filter(|i| !inits.contains_key(i.as_str()) && !i.is_empty())
                .collect();
            if data_in.len() != 1 || data_in[0] != &current {
                return Err(ZkError::Model(format!(
                    "node {name} ({}): zkml proves a chain of layers, each reading the previous one's output",
                    node.op_type
                )));
            }
            let init = |k: usize| -> Result<(Vec<usize>, Vec<f32>), ZkError> {
                let n = node
                    .input
                    .get(k)
                    .ok_or_else(|| ZkError::Model(format!("node {name}: input {k} is missing")))?;
                let t = inits.get(n.as_str()).ok_or_else(|| {
                    ZkError::Model(format!(
                        "node {name}: input {n:?} must be a constant (an initializer)"
                    ))
                })?;
                tensor_f32(t)
                    .map_err(|e| ZkError::Model(format!("node {name}: initializer {n:?}: {e}")))
            };
            let flat = shape.iter().product::<usize>();
            let layout_now = layout;
            match node.op_type.as_str() {
                "Gemm" | "MatMul" => {
                    let trans_b = attr_i(node, "transB").unwrap_or(0) == 1;
                    if attr_i(node, "transA").unwrap_or(0) != 0
                        || attr_f(node, "alpha").is_some_and(|a| a != 1.0)
                        || attr_f(node, "beta").is_some_and(|b| b != 1.0)
                    {
                        return Err(ZkError::Model(format!(
                            "node {name} (Gemm): only transA=0, alpha=1, beta=1 are supported"
                        )));
                    }
                    let (wd, w) = init(1)?;
                    let (n_in, n_out) = match (wd.as_slice(), trans_b) {
                        ([o, i], true) => (*i, *o),
                        ([i, o], false) => (*i, *o),
                        _ => {
                            return Err(ZkError::Model(format!(
                                "node {name}: weight shape {wd:?} is not 2-D"
                            )))
                        }
                    };
                    if n_in != flat {
                        return Err(ZkError::Model(format!("node {name}: weights expect {n_in} inputs, the previous layer gives {flat}")));
                    }
                    // Stored as out × in.
                    let weights = if trans_b {
                        w
                    } else {
                        transpose(&w, n_in, n_out)
                    };
                    let bias = if node.op_type == "Gemm" && node.input.len() > 2 {
                        let (_, b) = init(2)?;
                        broadcast_bias(&b, n_out)
                            .map_err(|e| ZkError::Model(format!("node {name}: {e}")))?
                    } else {
                        vec![0.0; n_out]
                    };
                    if node.op_type == "MatMul" {
                        pending_matmul = Some(layers.len());
                    }
                    layers.push(FloatLayer {
                        op: LinearOp::Gemm,
                        input: layout_now,
                        output: Layout { ch: n_out, pos: 1 },
                        weights,
                        bias,
                        relu: false,
                    });
                    shape = vec![n_out];
                    layout = Layout { ch: n_out, pos: 1 };
                }
                "Add" if pending_matmul == Some(layers.len().wrapping_sub(1)) => {
                    let (_, b) = init(if inits.contains_key(node.input[0].as_str()) {
                        0
                    } else {
                        1
                    })?;
                    let l = layers.last_mut().expect("a MatMul before");
                    l.bias = broadcast_bias(&b, l.output.ch)
                        .map_err(|e| ZkError::Model(format!("node {name}: {e}")))?;
                    pending_matmul = None;
                }
                "Conv" => {
                    let [c, h, w] = shape[..] else {
                        return Err(ZkError::Model(format!(
                            "node {name} (Conv): input shape {shape:?} is not C×H×W"
                        )));
                    };
                    if attr_i(node, "group").unwrap_or(1) != 1 {
                        return Err(ZkError::Model(format!(
                            "node {name} (Conv): only group=1 is supported"
                        )));
                    }
                    if attr_ints(node, "dilations").is_some_and(|d| d.iter().any(|&x| x != 1)) {
                        return Err(ZkError::Model(format!(
                            "node {name} (Conv): dilations are not supported"
                        )));
                    }
                    if attr_s(node, "auto_pad").is_some_and(|s| s != "NOTSET") {
                        return Err(ZkError::Model(format!(
                            "node {name} (Conv): auto_pad is not supported; give pads"
                        )));
                    }
                    let (kd, k) = init(1)?;
                    let [co, ci, kh, kw] = kd[..] else {
                        return Err(ZkError::Model(format!(
                            "node {name}: kernel shape {kd:?} is not 4-D"
                        )));
                    };
                    if layout_now != (Layout { ch: c, pos: h * w }) {
                        return Err(ZkError::Model(format!("node {name} (Conv): its input is a flat vector; reshape to channels is not supported")));
                    }
                    if ci != c {
                        return Err(ZkError::Model(format!(
                            "node {name}: kernel reads {ci} channels, the input has {c}"
                        )));
                    }
                    let strides = attr_ints(node, "strides").unwrap_or_else(|| vec![1, 1]);
                    let pads = attr_ints(node, "pads").unwrap_or_else(|| vec![0, 0, 0, 0]);
                    let (sy, sx) = (strides[0] as usize, strides[1] as usize);
                    let (pt, pl, pb_, pr) = (
                        pads[0] as usize,
                        pads[1] as usize,
                        pads[2] as usize,
                        pads[3] as usize,
                    );
                    if sy == 0 || sx == 0 || h + pt + pb_ < kh || w + pl + pr < kw {
                        return Err(ZkError::Model(format!(
                            "node {name}: the kernel does not fit the input"
                        )));
                    }
                    let (oh, ow) = ((h + pt + pb_ - kh) / sy + 1, (w + pl + pr - kw) / sx + 1);
                    let bias = if node.input.len() > 2 {
                        let (_, b) = init(2)?;
                        broadcast_bias(&b, co)
                            .map_err(|e| ZkError::Model(format!("node {name}: {e}")))?
                    } else {
                        vec![0.0; co]
                    };
                    layers.push(FloatLayer {
                        op: LinearOp::Conv {
                            h,
                            w,
                            kh,
                            kw,
                            stride: [sy, sx],
                            pads: [pt, pl],
                            oh,
                            ow,
                        },
                        input: layout_now,
                        output: Layout {
                            ch: co,
                            pos: oh * ow,
                        },
                        weights: k,
                        bias,
                        relu: false,
                    });
                    shape = vec![co, oh, ow];
                    layout = Layout {
                        ch: co,
                        pos: oh * ow,
                    };
                }
                "Relu" => match layers.last_mut() {
                    Some(l) if !l.relu => l.relu = true,
                    _ => {
                        return Err(ZkError::Model(format!(
                        "node {name} (Relu): zkml proves a Relu only right after a linear layer"
                    )))
                    }
                },
                "Flatten" => shape = vec![flat],
                "Reshape" => {
                    let target = node
                        .input
                        .get(1)
                        .and_then(|n| inits.get(n.as_str()))
                        .map(|t| tensor_i64(t))
                        .ok_or_else(|| {
                            ZkError::Model(format!(
                                "node {name} (Reshape): its shape must be an initializer"
                            ))
                        })?;
                    let dims: Vec<usize> = resolve_reshape(&target, flat).ok_or_else(|| {
                        ZkError::Model(format!(
                            "node {name} (Reshape): cannot reshape {shape:?} to {target:?}"
                        ))
                    })?;
                    let new = dims[1..].to_vec();
                    // Only re-labellings that keep the padded layout are free.
                    if new.len() > 1 && layout_of(&new) != layout_now {
                        return Err(ZkError::Model(format!(
                            "node {name} (Reshape): re-arranging {shape:?} as {new:?} moves data, which zkml does not prove"
                        )));
                    }
                    shape = new;
                }
                "Identity" | "Dropout" => {}
                other => {
                    return Err(ZkError::UnsupportedOperator {
                        op: other.to_string(),
                        node: name,
                    });
                }
            }
            current = node.output[0].clone();
        }
        let outputs: Vec<&String> = graph.output.iter().map(|o| &o.name).collect();
        if outputs != [&current] {
            return Err(ZkError::Model(format!(
                "zkml needs one output, the last node's; the model names {outputs:?}"
            )));
        }
        if layers.is_empty() {
            return Err(ZkError::Model(
                "the model has no linear layer to prove".into(),
            ));
        }
        Ok(FloatNet {
            input_name: input.name.clone(),
            input_shape,
            output_name: current,
            output_shape: [vec![1], shape].concat(),
            layers,
        })
    }

    /// A network from layers built in code (each reading the previous one's output).
    pub fn from_layers(
        input_shape: Vec<usize>,
        mut layers: Vec<FloatLayer>,
    ) -> Result<FloatNet, ZkError> {
        for i in 1..layers.len() {
            let prev = layers[i - 1].output;
            if layers[i].input.dense_len() != prev.dense_len() {
                return Err(ZkError::Model(format!(
                    "layer {i} reads {} values, layer {} gives {}",
                    layers[i].input.dense_len(),
                    i - 1,
                    prev.dense_len()
                )));
            }
            layers[i].input = prev;
        }
        for (i, l) in layers.iter().enumerate() {
            if l.weights.len() != l.output.ch * l.inner() || l.bias.len() != l.output.ch {
                return Err(ZkError::Model(format!(
                    "layer {i}: weights or bias do not fit its shape"
                )));
            }
        }
        if layers.is_empty() {
            return Err(ZkError::Model("a network needs a layer".into()));
        }
        let out = layers.last().expect("a layer").output;
        Ok(FloatNet {
            input_name: "input".into(),
            input_shape: [vec![1], input_shape].concat(),
            output_name: "output".into(),
            output_shape: vec![1, out.dense_len()],
            layers,
        })
    }

    pub fn input_len(&self) -> usize {
        self.layers[0].input.dense_len()
    }

    /// The float output for a dense input.
    pub fn forward(&self, x: &[f32]) -> Vec<f32> {
        let mut a = x.to_vec();
        for l in &self.layers {
            a = l.forward(&a);
        }
        a
    }

    /// The largest |activation| at each layer's output over the samples, ReLU applied.
    pub fn activation_ranges(&self, samples: &[Vec<f32>]) -> Vec<f32> {
        let mut ranges = vec![0f32; self.layers.len()];
        for x in samples {
            let mut a = x.clone();
            for (l, r) in self.layers.iter().zip(ranges.iter_mut()) {
                a = l.forward(&a);
                *r = a.iter().fold(*r, |m, v| m.max(v.abs()));
            }
        }
        ranges
    }
}

fn layout_of(shape: &[usize]) -> Layout {
    match shape {
        [c, h, w] => Layout { ch: *c, pos: h * w },
        [c, n] => Layout { ch: *c, pos: *n },
        _ => Layout {
            ch: 1,
            pos: shape.iter().product(),
        },
    }
}

fn resolve_reshape(target: &[i64], total: usize) -> Option<Vec<usize>> {
    let known: usize = target
        .iter()
        .filter(|&&d| d > 0)
        .map(|&d| d as usize)
        .product();
    let mut dims = Vec::with_capacity(target.len());
    for &d in target {
        dims.push(match d {
            -1 => total.checked_div(known)?,
            0 => return None,
            d if d > 0 => d as usize,
            _ => return None,
        });
    }
    (dims.iter().product::<usize>() == total && dims.first() == Some(&1)).then_some(dims)
}

fn shape_of(v: &pb::ValueInfoProto) -> Result<Vec<usize>, ZkError> {
    let bad = || ZkError::Model(format!("input {:?}: its shape must be fully known", v.name));
    let Some(pb::type_proto::Value::TensorType(t)) =
        v.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return Err(bad());
    };
    if t.elem_type != 1 {
        return Err(ZkError::Model(format!(
            "input {:?}: zkml takes float32 inputs",
            v.name
        )));
    }
    let shape = t.shape.as_ref().ok_or_else(bad)?;
    shape
        .dim
        .iter()
        .enumerate()
        .map(|(i, d)| match d.value {
            Some(pb::tensor_shape_proto::dimension::Value::DimValue(n)) if n > 0 => Ok(n as usize),
            // A symbolic batch dimension is proved as 1.
            _ if i == 0 => Ok(1),
            _ => Err(bad()),
        })
        .collect()
}

fn tensor_f32(t: &pb::TensorProto) -> Result<(Vec<usize>, Vec<f32>), String> {
    if t.data_type != 1 {
        return Err(format!("data type {} is not float32", t.data_type));
    }
    let dims: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
    let n: usize = dims.iter().product();
    let data: Vec<f32> = if !t.raw_data.is_empty() {
        t.raw_data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect()
    } else {
        t.float_data.clone()
    };
    if data.len() != n {
        return Err(format!("holds {} values for shape {dims:?}", data.len()));
    }
    if let Some(i) = data.iter().position(|v| !v.is_finite()) {
        return Err(format!("value {i} is not finite"));
    }
    Ok((dims, data))
}

fn tensor_i64(t: &pb::TensorProto) -> Vec<i64> {
    if !t.raw_data.is_empty() {
        t.raw_data
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect()
    } else {
        t.int64_data.clone()
    }
}

fn broadcast_bias(b: &[f32], n: usize) -> Result<Vec<f32>, String> {
    match b.len() {
        1 => Ok(vec![b[0]; n]),
        l if l == n => Ok(b.to_vec()),
        l => Err(format!("bias has {l} values for {n} outputs")),
    }
}

fn transpose(w: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0f32; w.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = w[r * cols + c];
        }
    }
    t
}

fn attr<'a>(n: &'a pb::NodeProto, key: &str) -> Option<&'a pb::AttributeProto> {
    n.attribute.iter().find(|a| a.name == key)
}
fn attr_i(n: &pb::NodeProto, key: &str) -> Option<i64> {
    attr(n, key).map(|a| a.i)
}
fn attr_f(n: &pb::NodeProto, key: &str) -> Option<f32> {
    attr(n, key).map(|a| a.f)
}
fn attr_ints(n: &pb::NodeProto, key: &str) -> Option<Vec<i64>> {
    attr(n, key).map(|a| a.ints.clone())
}
fn attr_s(n: &pb::NodeProto, key: &str) -> Option<String> {
    attr(n, key).map(|a| String::from_utf8_lossy(&a.s).into_owned())
}
