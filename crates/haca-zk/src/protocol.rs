//! The proof: from the public output back to the public input, one sumcheck per linear layer
//! (weights × wired input) and one per hidden layer's rounding and ReLU (over committed bit
//! planes, batched with their booleanity check), then one opening of the witness commitment and
//! one of the weight commitment.
//!
//! Nothing here hides anything: haca's input, output and model are public, and the proof's job is
//! a check of correct execution that costs less than re-running the model and needs no trusted
//! party.

use crate::field::{E, F};
use crate::ligero::{Claim, Commitment, Committed, Opening};
use crate::poly::{self, eq_at, eq_table, mle_e, Rounds};
use crate::quant::{LayerSpec, NetSpec, QuantNet, Rescale};
use crate::transcript::Transcript;
use crate::ZkError;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const SYSTEM: &str = "haca-zk/sumcheck-ligero-goldilocks/v1";

/// What a verifier needs: the network's shape and scales and the weight commitment.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct VerifyingKey {
    pub system: String,
    pub net: NetSpec,
    pub weights: Commitment,
}

impl VerifyingKey {
    /// SHA-256 of the key's JSON: what a receipt names.
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(serde_json::to_vec(self).expect("a key serializes")).into()
    }
}

/// The prover's side: the quantized network and its committed weights.
pub struct ProvingKey {
    pub net: QuantNet,
    pub vk: VerifyingKey,
    weights: Committed,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct RescaleProof {
    pub rounds: Rounds,
    /// each bit plane's value at the sumcheck's point
    pub planes: Vec<E>,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct LayerProof {
    pub rescale: Option<RescaleProof>,
    pub rounds: Rounds,
    /// the weight matrix's and the wired input's values at the sumcheck's point
    pub weight_eval: E,
    pub input_eval: E,
}

/// A proof that the committed network maps `input` to `output` (both quantized, dense order).
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Proof {
    pub system: String,
    #[serde(with = "crate::wire::hex32")]
    pub vk_digest: [u8; 32],
    pub input: Vec<i64>,
    pub output: Vec<i64>,
    pub witness: Option<Commitment>,
    /// last layer first
    pub layers: Vec<LayerProof>,
    pub witness_opening: Option<Opening>,
    pub weight_opening: Opening,
}

fn weight_rows(net: &QuantNet) -> (Vec<Vec<F>>, usize) {
    let spec = &net.spec;
    let (offsets, m) = spec.weight_blocks();
    let mut v = vec![F::ZERO; 1 << m];
    // Each block is its layer's matrix row-major, as `net.weights` holds it.
    for (k, off) in net.weights.iter().zip(offsets) {
        for (d, &x) in v[off..].iter_mut().zip(k) {
            *d = F::from_i64(x);
        }
    }
    let log_cols = weight_log_cols(m);
    (
        v.chunks(1 << log_cols).map(|c| c.to_vec()).collect(),
        log_cols,
    )
}

/// Columns of the weight matrix: wider than square, since each query opens a whole column.
fn weight_log_cols(m: usize) -> usize {
    m.min(m / 2 + 3)
}

impl ProvingKey {
    /// Commits to the network's weights (the per-model setup: deterministic, no secrets).
    pub fn new(net: QuantNet) -> ProvingKey {
        let (rows, _) = weight_rows(&net);
        let weights = Committed::new(rows);
        let vk = VerifyingKey {
            system: SYSTEM.into(),
            net: net.spec.clone(),
            weights: weights.commitment(),
        };
        ProvingKey { net, vk, weights }
    }

    /// Runs the model on a float input and proves the run. Returns the float output and the proof.
    pub fn prove(&self, x: &[f32]) -> Result<(Vec<f32>, Proof), ZkError> {
        let spec = &self.net.spec;
        let xq = spec.quantize_input(x)?;
        let trace = self.net.run(&xq)?;
        let layers = &spec.layers;
        let n = layers.len();

        // Witness: every hidden layer's bit planes, one row each, all as wide as the widest layer.
        let width = layers
            .iter()
            .filter(|l| l.rescale.is_some())
            .map(|l| l.output.size())
            .max();
        let mut plane_rows: Vec<Vec<F>> = Vec::new();
        let mut first_row = vec![0usize; n];
        for (l, ls) in layers.iter().enumerate() {
            if let (Some(r), Some(q)) = (ls.rescale, &trace.rounded[l]) {
                first_row[l] = plane_rows.len();
                let w = width.expect("a hidden layer");
                plane_rows.extend(bit_planes(r, &trace.accs[l], q, w));
            }
        }
        let witness = (!plane_rows.is_empty()).then(|| Committed::new(plane_rows));

        let vk_digest = self.vk.digest();
        let mut tr = Transcript::new(SYSTEM.as_bytes());
        tr.absorb(b"vk", &vk_digest);
        tr.absorb_i64(b"input", &xq);
        tr.absorb_i64(b"output", &trace.output);
        if let Some(w) = &witness {
            tr.absorb(b"witness", &w.commitment().root);
        }

        let out_layout = spec.output_layout();
        let r = tr.challenges(out_layout.vars());
        let mut w_vec = eq_table(&r);

        let mut proofs = Vec::with_capacity(n);
        let mut witness_claims: Vec<(usize, Vec<E>, Vec<E>)> = Vec::new(); // (layer, point, planes)
        let mut weight_claims: Vec<(usize, Vec<E>)> = Vec::new(); // (layer, full point in block)
        for l in (0..n).rev() {
            let ls = &layers[l];
            // 1. The rounding and ReLU: reduce a claim on the output `a` to one on the accumulator.
            let (point, rescale) = match ls.rescale {
                Some(rs) => {
                    let vars = ls.output.vars();
                    let lambda = tr.challenge();
                    let tau = tr.challenges(vars);
                    let beta = tr.challenges(rs.planes());
                    // The planes committed above, cut to this layer's width.
                    let committed = witness.as_ref().expect("hidden layers commit planes");
                    let planes = &committed.rows()[first_row[l]..first_row[l] + rs.planes()];
                    let mut tables = vec![w_vec, eq_table(&tau)];
                    tables.extend(planes.iter().map(|p| {
                        p[..ls.output.size()]
                            .iter()
                            .map(|&f| E::from(f))
                            .collect::<Vec<E>>()
                    }));
                    let f = rescale_fn(rs, ls.relu, lambda, &beta);
                    let (rounds, point) = poly::prove(&mut tables, 3, f, &mut tr);
                    let evals: Vec<E> = tables[2..].iter().map(|t| t[0]).collect();
                    tr.absorb_e(b"planes", &evals);
                    witness_claims.push((l, point.clone(), evals.clone()));
                    (
                        point,
                        Some(RescaleProof {
                            rounds,
                            planes: evals,
                        }),
                    )
                }
                None => (r.clone(), None),
            };
            // 2. The matrix product: y(r_o, r_p) = Σ_j K(r_o, j) · X(j, r_p).
            let pv = ls.output.pos_vars();
            let (r_p, r_o) = point.split_at(pv);
            let (eq_o, eq_p) = (eq_table(r_o), eq_table(r_p));
            let cw = 1usize << ls.col_vars();
            let k = &self.net.weights[l];
            let mut f_tab = vec![E::ZERO; cw];
            for o in 0..ls.output.ch {
                for (j, &kv) in k[o * cw..(o + 1) * cw].iter().enumerate() {
                    if kv != 0 {
                        f_tab[j] += eq_o[o] * F::from_i64(kv);
                    }
                }
            }
            let input = &trace.inputs[l];
            let mut g_tab = vec![E::ZERO; cw];
            for (j, g) in g_tab.iter_mut().enumerate().take(ls.ones()) {
                for (p, &e) in eq_p.iter().enumerate().take(ls.output.pos) {
                    if let Some(s) = ls.source(j, p) {
                        *g += e * F::from_i64(input[s]);
                    }
                }
            }
            g_tab[ls.ones()] = eq_p.iter().take(ls.output.pos).fold(E::ZERO, |s, &e| s + e);
            let mut tables = vec![f_tab, g_tab];
            let (rounds, t) = poly::prove(&mut tables, 2, |v| v[0] * v[1], &mut tr);
            let (weight_eval, input_eval) = (tables[0][0], tables[1][0]);
            tr.absorb_e(b"matmul", &[weight_eval, input_eval]);
            weight_claims.push((l, [t.as_slice(), r_o].concat()));
            proofs.push(LayerProof {
                rescale,
                rounds,
                weight_eval,
                input_eval,
            });
            // 3. Hand the claim on the wired input to the layer below.
            w_vec = wiring_claim(ls, &t, r_p, input_eval).0;
        }

        let witness_opening = witness.as_ref().map(|w| {
            let cl = witness_claim_rows(
                layers,
                &first_row,
                &witness_claims,
                w.commitment().rows,
                &mut tr,
                None,
            )
            .expect("the prover's own claims fit");
            w.open(
                &cl.iter().map(|c| c.row_weights.clone()).collect::<Vec<_>>(),
                &mut tr,
            )
        });
        let cl = weight_claim_rows(spec, &self.vk.weights, &weight_claims, &proofs);
        let weight_opening = self.weights.open(
            &cl.iter().map(|c| c.row_weights.clone()).collect::<Vec<_>>(),
            &mut tr,
        );
        let output = spec.dequantize_output(&trace.output);
        Ok((
            output,
            Proof {
                system: SYSTEM.into(),
                vk_digest,
                input: xq,
                output: trace.output,
                witness: witness.map(|w| w.commitment()),
                layers: proofs,
                witness_opening,
                weight_opening,
            },
        ))
    }
}

/// A hidden layer's bit planes, each `width` long: remainder bits, magnitude bits, sign.
fn bit_planes(r: Rescale, acc: &[i64], rounded: &[i64], width: usize) -> Vec<Vec<F>> {
    let half = 1i64 << (r.shift - 1);
    let mut planes = vec![vec![F::ZERO; width]; r.planes()];
    for (i, (&y, &q)) in acc.iter().zip(rounded).enumerate() {
        let rem = y + half - (q << r.shift);
        for (t, plane) in planes.iter_mut().take(r.shift as usize).enumerate() {
            plane[i] = F::new(((rem >> t) & 1) as u64);
        }
        // two's complement in bits+1 bits: q = Σ 2^t c_t - 2^bits·sign
        let sign = q < 0;
        let mag = if sign { q + (1i64 << r.bits) } else { q };
        for t in 0..r.bits as usize {
            planes[r.shift as usize + t][i] = F::new(((mag >> t) & 1) as u64);
        }
        planes[r.planes() - 1][i] = F::new(sign as u64);
    }
    planes
}

fn pow2(t: u32) -> E {
    E::from_u64(1u64 << t)
}

/// The rounded value from plane values: Σ 2^t c_t - 2^bits·sign.
fn rounded_from(r: Rescale, v: &[E]) -> E {
    let s = r.shift as usize;
    let mut q = E::ZERO;
    for t in 0..r.bits as usize {
        q += v[s + t] * pow2(t as u32);
    }
    q - v[r.planes() - 1] * pow2(r.bits)
}

/// y = 2^shift·q + remainder - 2^(shift-1).
fn accumulator_from_planes(r: Rescale, v: &[E]) -> E {
    let mut rem = E::ZERO;
    for (t, &b) in v.iter().take(r.shift as usize).enumerate() {
        rem += b * pow2(t as u32);
    }
    rounded_from(r, v) * pow2(r.shift) + rem - pow2(r.shift - 1)
}

/// The summand of a hidden layer's sumcheck: args = [w, eq(τ), planes...].
fn rescale_fn(r: Rescale, relu: bool, lambda: E, beta: &[E]) -> impl Fn(&[E]) -> E + '_ {
    move |v: &[E]| {
        let planes = &v[2..];
        let q = rounded_from(r, planes);
        let a = if relu {
            (E::ONE - planes[r.planes() - 1]) * q
        } else {
            q
        };
        let mut boolean = E::ZERO;
        for (b, &x) in beta.iter().zip(planes) {
            boolean += *b * x * (x - E::ONE);
        }
        v[0] * a + lambda * v[1] * boolean
    }
}

/// The claim Σ_q w_q·a_q = value on the layer's input `a`, from X(t, r_p) = input_eval.
fn wiring_claim(ls: &LayerSpec, t: &[E], r_p: &[E], input_eval: E) -> (Vec<E>, E) {
    let (eq_t, eq_p) = (eq_table(t), eq_table(r_p));
    let mut w = vec![E::ZERO; ls.input.size()];
    for (j, &et) in eq_t.iter().enumerate().take(ls.ones()) {
        for (p, &ep) in eq_p.iter().enumerate().take(ls.output.pos) {
            if let Some(s) = ls.source(j, p) {
                w[s] += et * ep;
            }
        }
    }
    let valid = eq_p.iter().take(ls.output.pos).fold(E::ZERO, |s, &e| s + e);
    (w, input_eval - eq_t[ls.ones()] * valid)
}

/// Witness opening claims: per hidden layer, a random combination of its planes at its point.
fn witness_claim_rows(
    layers: &[LayerSpec],
    first_row: &[usize],
    claims: &[(usize, Vec<E>, Vec<E>)],
    rows: usize,
    tr: &mut Transcript,
    log_cols: Option<usize>,
) -> Result<Vec<Claim>, ZkError> {
    let width_vars = layers
        .iter()
        .filter(|l| l.rescale.is_some())
        .map(|l| l.output.vars())
        .max()
        .unwrap_or(0);
    let lc = log_cols.unwrap_or(width_vars);
    if lc != width_vars {
        return Err(ZkError::proof(
            "witness",
            "the witness commitment's width does not fit the network",
        ));
    }
    let mut out = Vec::new();
    for (l, point, planes) in claims {
        let coeffs = tr.challenges(planes.len());
        let mut row_weights = vec![E::ZERO; rows];
        let start = first_row[*l];
        if start + planes.len() > rows {
            return Err(ZkError::proof(
                "witness",
                "the witness commitment has too few rows for the network",
            ));
        }
        row_weights[start..start + planes.len()].copy_from_slice(&coeffs);
        let mut col_point = point.clone();
        col_point.resize(lc, E::ZERO);
        let value = coeffs
            .iter()
            .zip(planes)
            .fold(E::ZERO, |s, (&c, &p)| s + c * p);
        out.push(Claim {
            row_weights,
            col_point,
            value,
        });
    }
    Ok(out)
}

/// Weight opening claims: each layer's K(r_o, t) at its block of the committed vector.
fn weight_claim_rows(
    spec: &NetSpec,
    com: &Commitment,
    claims: &[(usize, Vec<E>)],
    proofs: &[LayerProof],
) -> Vec<Claim> {
    let (offsets, m) = spec.weight_blocks();
    claims
        .iter()
        .zip(proofs)
        .map(|((l, point), lp)| {
            let ls = &spec.layers[*l];
            let block_vars = ls.col_vars() + ls.row_vars();
            // the block's own variables, then the offset's bits (constant 0/1)
            let mut full = point.clone();
            full.resize(block_vars, E::ZERO);
            for b in block_vars..m {
                full.push(if (offsets[*l] >> b) & 1 == 1 {
                    E::ONE
                } else {
                    E::ZERO
                });
            }
            let (col_point, row_point) = full.split_at(com.log_cols);
            Claim {
                row_weights: eq_table(row_point),
                col_point: col_point.to_vec(),
                value: lp.weight_eval,
            }
        })
        .collect()
}

/// Checks `proof` against `vk`. The caller checks that `proof.input` and `proof.output` are the
/// run's (see [`NetSpec::quantize_input`]).
pub fn verify(vk: &VerifyingKey, proof: &Proof) -> Result<(), ZkError> {
    if proof.system != SYSTEM || vk.system != SYSTEM {
        return Err(ZkError::proof(
            "system",
            format!("is {:?}, this verifier checks {SYSTEM:?}", proof.system),
        ));
    }
    let spec = &vk.net;
    if proof.vk_digest != vk.digest() {
        return Err(ZkError::proof(
            "vk_digest",
            "the proof was made for another verifying key (another model or blob)",
        ));
    }
    let (in_layout, out_layout) = (spec.input_layout(), spec.output_layout());
    if proof.input.len() != in_layout.dense_len() {
        return Err(ZkError::proof(
            "input",
            format!(
                "has {} values, the model takes {}",
                proof.input.len(),
                in_layout.dense_len()
            ),
        ));
    }
    if let Some(i) = proof
        .input
        .iter()
        .position(|v| v.unsigned_abs() > spec.input_bound as u64)
    {
        return Err(ZkError::proof(
            "input",
            format!("value {i} is outside the model's input range"),
        ));
    }
    if proof.output.len() != out_layout.dense_len() {
        return Err(ZkError::proof(
            "output",
            format!(
                "has {} values, the model gives {}",
                proof.output.len(),
                out_layout.dense_len()
            ),
        ));
    }
    let layers = &spec.layers;
    let n = layers.len();
    if proof.layers.len() != n {
        return Err(ZkError::proof(
            "layers",
            format!(
                "has {} layer proofs, the model has {n} layers",
                proof.layers.len()
            ),
        ));
    }
    let hidden: Vec<usize> = (0..n).filter(|&l| layers[l].rescale.is_some()).collect();
    if proof.witness.is_some() == hidden.is_empty()
        || proof.witness_opening.is_some() == hidden.is_empty()
    {
        return Err(ZkError::proof(
            "witness",
            "a witness commitment is required exactly when the model has hidden layers",
        ));
    }
    let mut first_row = vec![0usize; n];
    let mut rows = 0;
    for &l in &hidden {
        first_row[l] = rows;
        rows += layers[l].rescale.expect("hidden").planes();
    }

    let mut tr = Transcript::new(SYSTEM.as_bytes());
    tr.absorb(b"vk", &proof.vk_digest);
    tr.absorb_i64(b"input", &proof.input);
    tr.absorb_i64(b"output", &proof.output);
    if let Some(w) = &proof.witness {
        if w.rows != rows {
            return Err(ZkError::proof(
                "witness",
                format!("commits {} rows, the model has {rows} bit planes", w.rows),
            ));
        }
        tr.absorb(b"witness", &w.root);
    }
    let mut out_padded = vec![E::ZERO; out_layout.size()];
    for (i, &v) in proof.output.iter().enumerate() {
        out_padded[out_layout.index_of_dense(i)] = E::from_i64(v);
    }
    let r = tr.challenges(out_layout.vars());
    let mut w_vec = eq_table(&r);
    let mut claim = mle_e(&out_padded, &r);
    let mut witness_claims = Vec::new();
    let mut weight_claims = Vec::new();
    for (step, l) in (0..n).rev().enumerate() {
        let ls = &layers[l];
        let lp = &proof.layers[step];
        let what = format!("layers[{step}] (model layer {l})");
        let point = match (ls.rescale, &lp.rescale) {
            (Some(rs), Some(rp)) => {
                let vars = ls.output.vars();
                let lambda = tr.challenge();
                let tau = tr.challenges(vars);
                let beta = tr.challenges(rs.planes());
                let (point, last) = poly::verify(
                    &rp.rounds,
                    vars,
                    3,
                    claim,
                    &mut tr,
                    &format!("{what} rounding"),
                )?;
                if rp.planes.len() != rs.planes() {
                    return Err(ZkError::proof(
                        &what,
                        format!(
                            "gives {} bit planes, expected {}",
                            rp.planes.len(),
                            rs.planes()
                        ),
                    ));
                }
                let mut args = vec![mle_e(&w_vec, &point), eq_at(&tau, &point)];
                args.extend_from_slice(&rp.planes);
                if rescale_fn(rs, ls.relu, lambda, &beta)(&args) != last {
                    return Err(ZkError::proof(
                        &what,
                        "the rounding and ReLU check fails at the sumcheck's point",
                    ));
                }
                tr.absorb_e(b"planes", &rp.planes);
                claim = accumulator_from_planes(rs, &rp.planes);
                witness_claims.push((l, point.clone(), rp.planes.clone()));
                point
            }
            (None, None) => r.clone(),
            _ => {
                return Err(ZkError::proof(
                    &what,
                    "a rounding proof is required exactly for hidden layers",
                ))
            }
        };
        let pv = ls.output.pos_vars();
        let (r_p, r_o) = point.split_at(pv);
        let (t, last) = poly::verify(
            &lp.rounds,
            ls.col_vars(),
            2,
            claim,
            &mut tr,
            &format!("{what} matrix product"),
        )?;
        if lp.weight_eval * lp.input_eval != last {
            return Err(ZkError::proof(
                &what,
                "the matrix product check fails at the sumcheck's point",
            ));
        }
        tr.absorb_e(b"matmul", &[lp.weight_eval, lp.input_eval]);
        weight_claims.push((l, [t.as_slice(), r_o].concat()));
        let (w, c) = wiring_claim(ls, &t, r_p, lp.input_eval);
        w_vec = w;
        claim = c;
    }
    // The public input closes the chain.
    let mut x = vec![E::ZERO; in_layout.size()];
    for (i, &v) in proof.input.iter().enumerate() {
        x[in_layout.index_of_dense(i)] = E::from_i64(v);
    }
    let at_input = w_vec.iter().zip(&x).fold(E::ZERO, |s, (&a, &b)| s + a * b);
    if at_input != claim {
        return Err(ZkError::proof(
            "input",
            "the proof does not lead back to this input",
        ));
    }
    if let (Some(w), Some(o)) = (&proof.witness, &proof.witness_opening) {
        let cl = witness_claim_rows(
            layers,
            &first_row,
            &witness_claims,
            w.rows,
            &mut tr,
            Some(w.log_cols),
        )?;
        w.verify(&cl, o, &mut tr, "witness_opening")?;
    }
    let (_, m) = spec.weight_blocks();
    if vk.weights.log_cols != weight_log_cols(m)
        || vk.weights.rows != 1 << (m - vk.weights.log_cols)
    {
        return Err(ZkError::proof(
            "vk.weights",
            "the weight commitment's shape does not fit the network",
        ));
    }
    let cl = weight_claim_rows(spec, &vk.weights, &weight_claims, &proof.layers);
    vk.weights
        .verify(&cl, &proof.weight_opening, &mut tr, "weight_opening")
}
