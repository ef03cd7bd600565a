//! Fixed-point quantization with power-of-two scales, chosen by calibration, and the integer
//! forward pass whose values the prover commits to.
//!
//! A layer reads activations at scale 2^sx, multiplies by weights at 2^sw and adds the bias at
//! 2^(sx+sw). A hidden layer then rounds half up to the activation scale 2^sa (a right shift by
//! sx + sw - sa) and applies ReLU. Every bound is static: from the weights and the input bound,
//! each accumulator is shown to stay below 2^60, so the field (p ≈ 2^64) never wraps and a valid
//! input can never fail to prove.

use crate::model::{FloatNet, Layout, LinearOp};
use crate::poly::vars;
use crate::ZkError;
use serde::{Deserialize, Serialize};

/// Weights are quantized to at most this many bits of magnitude.
const WEIGHT_BITS: u32 = 14;
/// Accumulators must stay below 2^ACC_BITS.
const ACC_BITS: u32 = 60;
/// Highest activation scale tried by calibration.
pub const MAX_SCALE: u32 = 16;

/// The shift and range of a hidden layer's rounding.
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
pub struct Rescale {
    /// bits shifted out (≥ 1): the rounding remainder's width
    pub shift: u32,
    /// the rounded value lies in [-2^bits, 2^bits)
    pub bits: u32,
}

impl Rescale {
    /// Bit planes committed per neuron: remainder, magnitude, sign.
    pub fn planes(&self) -> usize {
        (self.shift + self.bits + 1) as usize
    }
}

/// One quantized linear layer as the verifier sees it (weights are behind the commitment).
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct LayerSpec {
    pub op: LinearOp,
    pub input: Layout,
    pub output: Layout,
    pub input_scale: u32,
    pub weight_scale: u32,
    pub relu: bool,
    /// None for a last layer without ReLU: its accumulator is the output.
    pub rescale: Option<Rescale>,
}

impl LayerSpec {
    /// Data columns of the weight matrix (the bias column comes right after).
    pub fn cols(&self) -> usize {
        match self.op {
            LinearOp::Gemm => self.input.size(),
            LinearOp::Conv { kh, kw, .. } => self.input.ch * kh * kw,
        }
    }
    pub fn ones(&self) -> usize {
        self.cols()
    }
    pub fn col_vars(&self) -> usize {
        vars(self.cols() + 1)
    }
    pub fn row_vars(&self) -> usize {
        self.output.ch_vars()
    }
    /// The weight block's size in the committed vector.
    pub fn block_size(&self) -> usize {
        1 << (self.row_vars() + self.col_vars())
    }
    /// The padded input index that weight column `j` reads at output position `p`.
    pub fn source(&self, j: usize, p: usize) -> Option<usize> {
        match self.op {
            LinearOp::Gemm => {
                let pv = self.input.pos_vars();
                ((j >> pv) < self.input.ch && (j & ((1 << pv) - 1)) < self.input.pos && p == 0)
                    .then_some(j)
            }
            LinearOp::Conv { .. } => self
                .op
                .source_dense(j, p)
                .map(|d| self.input.index_of_dense(d)),
        }
    }
    /// The scale of this layer's output.
    pub fn output_scale(&self, act_scale: u32) -> u32 {
        match self.rescale {
            Some(_) => act_scale,
            None => self.input_scale + self.weight_scale,
        }
    }
}

/// What the verifier knows of a quantized network.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct NetSpec {
    pub input_name: String,
    pub input_shape: Vec<usize>,
    pub output_name: String,
    pub output_shape: Vec<usize>,
    pub act_scale: u32,
    /// largest |quantized input| accepted
    pub input_bound: i64,
    pub layers: Vec<LayerSpec>,
}

impl NetSpec {
    pub fn input_layout(&self) -> Layout {
        self.layers[0].input
    }
    pub fn output_layout(&self) -> Layout {
        self.layers.last().expect("a layer").output
    }
    pub fn output_scale(&self) -> u32 {
        self.layers
            .last()
            .expect("a layer")
            .output_scale(self.act_scale)
    }

    /// Each layer's weight block offset in the committed vector, and that vector's log size.
    /// Blocks are placed largest first, so each offset is a multiple of its block's size.
    pub fn weight_blocks(&self) -> (Vec<usize>, usize) {
        let mut order: Vec<usize> = (0..self.layers.len()).collect();
        order.sort_by_key(|&l| std::cmp::Reverse(self.layers[l].block_size()));
        let mut offsets = vec![0; self.layers.len()];
        let mut at = 0;
        for l in order {
            offsets[l] = at;
            at += self.layers[l].block_size();
        }
        (offsets, vars(at))
    }

    /// Quantizes a dense float input, refusing what is not finite or out of the calibrated range.
    pub fn quantize_input(&self, x: &[f32]) -> Result<Vec<i64>, ZkError> {
        let want = self.input_layout().dense_len();
        if x.len() != want {
            return Err(ZkError::Input(format!(
                "input has {} values, the model takes {want}",
                x.len()
            )));
        }
        let scale = (1u64 << self.layers[0].input_scale) as f64;
        x.iter()
            .enumerate()
            .map(|(i, &v)| {
                let q = (v as f64 * scale).round();
                if !q.is_finite() || q.abs() > self.input_bound as f64 {
                    Err(ZkError::Input(format!(
                        "input[{i}] = {v} is outside the range the model was calibrated for (|x| ≤ {})",
                        self.input_bound as f64 / scale
                    )))
                } else {
                    Ok(q as i64)
                }
            })
            .collect()
    }

    /// A quantized input as the float values the model computes on (exact: scales are powers
    /// of two and inputs are small).
    pub fn dequantize_input(&self, x: &[i64]) -> Vec<f32> {
        let scale = (1u64 << self.layers[0].input_scale) as f64;
        x.iter().map(|&v| (v as f64 / scale) as f32).collect()
    }

    pub fn dequantize_output(&self, y: &[i64]) -> Vec<f32> {
        let scale = (1u64 << self.output_scale()) as f64;
        y.iter().map(|&v| (v as f64 / scale) as f32).collect()
    }
}

/// A quantized network: its spec and its integer weight matrices.
#[derive(Clone, Debug)]
pub struct QuantNet {
    pub spec: NetSpec,
    /// per layer: output.ch rows × 2^col_vars columns, row-major; the bias sits in column `ones`
    pub weights: Vec<Vec<i64>>,
}

/// The integer values of one run.
#[derive(Clone, Debug)]
pub struct Trace {
    /// per layer: its input in the padded layout
    pub inputs: Vec<Vec<i64>>,
    /// per layer: its accumulator in the padded output layout
    pub accs: Vec<Vec<i64>>,
    /// per layer with a rescale: the rounded values (before ReLU)
    pub rounded: Vec<Option<Vec<i64>>>,
    /// the network's output in dense order
    pub output: Vec<i64>,
}

fn bits_for(max: i128) -> u32 {
    // smallest b ≥ 1 with max < 2^b
    (128 - (max.max(1) as u128).leading_zeros()).max(1)
}

/// Quantizes `net` for inputs with |x| ≤ `input_bound`, choosing the largest activation scale
/// (≤ 2^16) whose static bounds fit the field.
pub fn quantize(net: &FloatNet, input_bound: f32) -> Result<QuantNet, ZkError> {
    if !(input_bound.is_finite() && input_bound > 0.0) {
        return Err(ZkError::Model(format!(
            "the input bound {input_bound} must be a positive number"
        )));
    }
    let mut last = None;
    for scale in (4..=MAX_SCALE).rev() {
        match quantize_at(net, input_bound, scale) {
            Ok(q) => return Ok(q),
            Err(e) => last = Some(e),
        }
    }
    Err(last.expect("tried at least one scale"))
}

fn quantize_at(net: &FloatNet, input_bound: f32, act_scale: u32) -> Result<QuantNet, ZkError> {
    let mut layers = Vec::new();
    let mut weights = Vec::new();
    let mut x_scale = act_scale;
    let mut x_max: i128 = ((input_bound as f64) * (1u64 << act_scale) as f64).ceil() as i128;
    let input_bound_q = x_max as i64;
    let n = net.layers.len();
    for (li, fl) in net.layers.iter().enumerate() {
        let w_max = fl
            .weights
            .iter()
            .fold(0f32, |m, v| m.max(v.abs()))
            .max(f32::MIN_POSITIVE);
        // Largest weight scale that keeps |w| below 2^WEIGHT_BITS.
        let weight_scale = ((((1u64 << WEIGHT_BITS) - 1) as f64 / w_max as f64)
            .log2()
            .floor())
        .clamp(0.0, 24.0) as u32;
        let mut spec = LayerSpec {
            op: fl.op.clone(),
            input: fl.input,
            output: fl.output,
            input_scale: x_scale,
            weight_scale,
            relu: fl.relu,
            rescale: None,
        };
        let (cols, ones, cw) = (spec.cols(), spec.ones(), 1usize << spec.col_vars());
        let mut k = vec![0i64; fl.output.ch * cw];
        let inner = fl.inner();
        let ws = (1u64 << weight_scale) as f64;
        let bs = (1u64 << (x_scale + weight_scale)) as f64;
        for o in 0..fl.output.ch {
            for i in 0..inner {
                let col = match fl.op {
                    LinearOp::Gemm => fl.input.index_of_dense(i),
                    LinearOp::Conv { .. } => i,
                };
                debug_assert!(col < cols);
                k[o * cw + col] = (fl.weights[o * inner + i] as f64 * ws).round() as i64;
            }
            k[o * cw + ones] = (fl.bias[o] as f64 * bs).round() as i64;
        }
        // Static bound on |accumulator|.
        let acc_max = (0..fl.output.ch)
            .map(|o| {
                let row = &k[o * cw..(o + 1) * cw];
                let data: i128 = row[..ones].iter().map(|&v| v.unsigned_abs() as i128).sum();
                data * x_max + row[ones].unsigned_abs() as i128
            })
            .max()
            .unwrap_or(0);
        if acc_max >= 1i128 << ACC_BITS {
            return Err(ZkError::Model(format!(
                "layer {li}: its accumulator could reach 2^{} at activation scale 2^{act_scale}; the field allows 2^{ACC_BITS}",
                bits_for(acc_max)
            )));
        }
        let needs_rescale = li + 1 < n || fl.relu;
        if needs_rescale {
            let total = x_scale + weight_scale;
            if total <= act_scale {
                return Err(ZkError::Model(format!(
                    "layer {li}: weights at scale 2^{weight_scale} leave nothing to round at activation scale 2^{act_scale}"
                )));
            }
            let shift = total - act_scale;
            let q_max = (acc_max + (1i128 << (shift - 1))) >> shift;
            let bits = bits_for(q_max + 1);
            spec.rescale = Some(Rescale { shift, bits });
            x_max = q_max + 1;
            x_scale = act_scale;
        }
        layers.push(spec);
        weights.push(k);
    }
    Ok(QuantNet {
        spec: NetSpec {
            input_name: net.input_name.clone(),
            input_shape: net.input_shape.clone(),
            output_name: net.output_name.clone(),
            output_shape: net.output_shape.clone(),
            act_scale,
            input_bound: input_bound_q,
            layers,
        },
        weights,
    })
}

impl QuantNet {
    /// The integer forward pass from a quantized dense input.
    pub fn run(&self, x: &[i64]) -> Result<Trace, ZkError> {
        let spec = &self.spec;
        let mut a = vec![0i64; spec.input_layout().size()];
        for (i, &v) in x.iter().enumerate() {
            a[spec.input_layout().index_of_dense(i)] = v;
        }
        let (mut inputs, mut accs, mut rounded) = (Vec::new(), Vec::new(), Vec::new());
        for (l, (ls, k)) in spec.layers.iter().zip(&self.weights).enumerate() {
            let cw = 1usize << ls.col_vars();
            let mut y = vec![0i64; ls.output.size()];
            for o in 0..ls.output.ch {
                let row = &k[o * cw..(o + 1) * cw];
                for p in 0..ls.output.pos {
                    let mut acc: i128 = row[ls.ones()] as i128;
                    for (j, &kv) in row[..ls.ones()].iter().enumerate() {
                        if kv != 0 {
                            if let Some(s) = ls.source(j, p) {
                                acc += kv as i128 * a[s] as i128;
                            }
                        }
                    }
                    if acc.unsigned_abs() >= 1u128 << ACC_BITS {
                        return Err(ZkError::Input(format!(
                            "layer {l}: the accumulator overflows 2^{ACC_BITS}"
                        )));
                    }
                    y[ls.output.index(o, p)] = acc as i64;
                }
            }
            inputs.push(std::mem::take(&mut a));
            match ls.rescale {
                Some(r) => {
                    let half = 1i64 << (r.shift - 1);
                    let q: Vec<i64> = y
                        .iter()
                        .map(|&v| (v + half).div_euclid(1i64 << r.shift))
                        .collect();
                    if let Some(bad) = q
                        .iter()
                        .find(|&&v| v < -(1i64 << r.bits) || v >= 1i64 << r.bits)
                    {
                        return Err(ZkError::Input(format!(
                            "layer {l}: activation {bad} is out of its {}-bit range",
                            r.bits
                        )));
                    }
                    a = q
                        .iter()
                        .map(|&v| if ls.relu { v.max(0) } else { v })
                        .collect();
                    rounded.push(Some(q));
                }
                None => {
                    a = y.clone();
                    rounded.push(None);
                }
            }
            accs.push(y);
        }
        let out = spec.output_layout();
        let output = (0..out.dense_len())
            .map(|i| a[out.index_of_dense(i)])
            .collect();
        Ok(Trace {
            inputs,
            accs,
            rounded,
            output,
        })
    }

    /// The dequantized output for a float input.
    pub fn forward(&self, x: &[f32]) -> Result<Vec<f32>, ZkError> {
        let q = self.spec.quantize_input(x)?;
        Ok(self.spec.dequantize_output(&self.run(&q)?.output))
    }
}
