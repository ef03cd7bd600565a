//! A Ligero-style polynomial commitment over Goldilocks: a matrix of field elements is
//! Reed-Solomon encoded row by row (rate 1/4), its columns are Merkle-hashed with SHA-256, and a
//! claim `γᵀ·M·eq(z) = v` is opened by sending `u = γᵀ·M` and spot-checking columns of the
//! encoding. Transparent: no setup, no trusted ceremony.
//!
//! Soundness: a random proximity combination and [`QUERIES`] column queries. At rate 1/4 the code
//! has relative distance 3/4, and with the unique-decoding proximity gap each query catches a
//! far combination with probability at least 3/8, so 160 queries leave about 2^-108.

use crate::field::{ntt, E, F};
use crate::poly::eq_table;
use crate::transcript::Transcript;
use crate::ZkError;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Reed-Solomon blow-up (1 / rate).
pub const BLOWUP: usize = 4;
/// Column queries per opening.
pub const QUERIES: usize = 160;

pub type Hash = [u8; 32];

fn hash_leaf(values: &[F]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    for v in values {
        h.update(v.value().to_le_bytes());
    }
    h.finalize().into()
}

fn hash_node(l: &Hash, r: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(l);
    h.update(r);
    h.finalize().into()
}

/// A committed matrix: what the prover keeps to open it later.
pub struct Committed {
    rows: Vec<Vec<F>>,
    /// columns of the encoded matrix, each `rows.len()` long
    columns: Vec<Vec<F>>,
    /// Merkle layers, leaves first
    layers: Vec<Vec<Hash>>,
}

/// The public shape and root of a commitment.
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
pub struct Commitment {
    pub rows: usize,
    pub log_cols: usize,
    #[serde(with = "crate::wire::hex32")]
    pub root: Hash,
}

/// One queried column and its values.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Column {
    pub index: usize,
    pub values: Vec<F>,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Opening {
    /// ρᵀ·M for the proximity test (default encoding: CBOR writes the zeros of an unused
    /// region of the matrix in one byte each)
    pub proximity: Vec<E>,
    /// γᵢᵀ·M for each claim
    pub combined: Vec<Vec<E>>,
    /// the queried columns, each once, in increasing index order
    pub columns: Vec<Column>,
    /// the Merkle nodes that the opened columns do not determine, in the order
    /// [`multiproof_root`] consumes them
    #[serde(with = "crate::wire::path")]
    pub nodes: Vec<Hash>,
}

/// The distinct queried indices, sorted.
fn distinct(mut q: Vec<usize>) -> Vec<usize> {
    q.sort_unstable();
    q.dedup();
    q
}

/// Walks the tree from the given leaves to the root, level by level, taking a sibling from
/// `next_node` whenever the known nodes do not hold it. Returns the root.
fn multiproof_root(
    mut level: Vec<(usize, Hash)>,
    depth: usize,
    mut next_node: impl FnMut(usize, usize) -> Option<Hash>,
) -> Option<Hash> {
    for d in 0..depth {
        let mut up = Vec::with_capacity(level.len());
        let mut k = 0;
        while k < level.len() {
            let (i, h) = level[k];
            let (l, r) = if i & 1 == 0 {
                match level.get(k + 1) {
                    Some(&(j, hj)) if j == i + 1 => {
                        k += 1;
                        (h, hj)
                    }
                    _ => (h, next_node(d, i + 1)?),
                }
            } else {
                (next_node(d, i - 1)?, h)
            };
            up.push((i >> 1, hash_node(&l, &r)));
            k += 1;
        }
        level = up;
    }
    (level.len() == 1).then(|| level[0].1)
}

/// A claim on a committed matrix: `row_weights ᵀ · M · eq(col_point) = value`.
pub struct Claim {
    pub row_weights: Vec<E>,
    pub col_point: Vec<E>,
    pub value: E,
}

fn encode_f(row: &[F]) -> Vec<F> {
    let mut v = row.to_vec();
    v.resize(row.len() * BLOWUP, F::ZERO);
    ntt(&mut v);
    v
}

fn encode_e(row: &[E]) -> Vec<E> {
    let a: Vec<F> = row.iter().map(|e| e.0).collect();
    let b: Vec<F> = row.iter().map(|e| e.1).collect();
    encode_f(&a)
        .into_iter()
        .zip(encode_f(&b))
        .map(|(x, y)| E(x, y))
        .collect()
}

fn combine(weights: &[E], rows: &[Vec<F>]) -> Vec<E> {
    let mut u = vec![E::ZERO; rows[0].len()];
    for (w, row) in weights.iter().zip(rows) {
        if *w == E::ZERO {
            continue;
        }
        for (acc, &x) in u.iter_mut().zip(row) {
            *acc += *w * x;
        }
    }
    u
}

impl Committed {
    /// Commits to `rows` (each of the same power-of-two length).
    pub fn new(rows: Vec<Vec<F>>) -> Committed {
        assert!(!rows.is_empty() && rows[0].len().is_power_of_two());
        let n = rows[0].len() * BLOWUP;
        let encoded: Vec<Vec<F>> = rows.iter().map(|r| encode_f(r)).collect();
        let columns: Vec<Vec<F>> = (0..n)
            .map(|j| encoded.iter().map(|r| r[j]).collect())
            .collect();
        let mut layers = vec![columns.iter().map(|c| hash_leaf(c)).collect::<Vec<_>>()];
        while layers.last().expect("a layer").len() > 1 {
            let prev = layers.last().expect("a layer");
            let next = prev.chunks(2).map(|p| hash_node(&p[0], &p[1])).collect();
            layers.push(next);
        }
        Committed {
            rows,
            columns,
            layers,
        }
    }

    /// The committed rows, as given.
    pub fn rows(&self) -> &[Vec<F>] {
        &self.rows
    }

    pub fn commitment(&self) -> Commitment {
        Commitment {
            rows: self.rows.len(),
            log_cols: self.rows[0].len().trailing_zeros() as usize,
            root: self.layers.last().expect("a root")[0],
        }
    }

    /// Opens the claims; the transcript must already hold the commitment and the claims.
    pub fn open(&self, claims: &[Vec<E>], tr: &mut Transcript) -> Opening {
        let rho = tr.challenges(self.rows.len());
        let proximity = combine(&rho, &self.rows);
        let combined: Vec<Vec<E>> = claims.iter().map(|w| combine(w, &self.rows)).collect();
        tr.absorb_e(b"ligero.proximity", &proximity);
        for u in &combined {
            tr.absorb_e(b"ligero.combined", u);
        }
        let n = self.columns.len();
        let indices = distinct(tr.indices(QUERIES, n));
        let leaves: Vec<(usize, Hash)> = indices.iter().map(|&i| (i, self.layers[0][i])).collect();
        let mut nodes = Vec::new();
        multiproof_root(leaves, self.layers.len() - 1, |d, i| {
            nodes.push(self.layers[d][i]);
            Some(self.layers[d][i])
        })
        .expect("the prover's own tree");
        let columns = indices
            .iter()
            .map(|&index| Column {
                index,
                values: self.columns[index].clone(),
            })
            .collect();
        Opening {
            proximity,
            combined,
            columns,
            nodes,
        }
    }
}

impl Commitment {
    /// Checks an opening of `claims`; `what` names the commitment in errors.
    pub fn verify(
        &self,
        claims: &[Claim],
        o: &Opening,
        tr: &mut Transcript,
        what: &str,
    ) -> Result<(), ZkError> {
        let cols = 1usize << self.log_cols;
        let n = cols * BLOWUP;
        let rho = tr.challenges(self.rows);
        if o.proximity.len() != cols
            || o.combined.len() != claims.len()
            || o.combined.iter().any(|u| u.len() != cols)
        {
            return Err(ZkError::proof(
                what,
                "the opening's combined rows have the wrong shape",
            ));
        }
        for (k, (c, u)) in claims.iter().zip(&o.combined).enumerate() {
            if c.row_weights.len() != self.rows || c.col_point.len() != self.log_cols {
                return Err(ZkError::proof(
                    what,
                    format!("claim {k} does not fit the commitment's shape"),
                ));
            }
            let eq = eq_table(&c.col_point);
            let v = u.iter().zip(&eq).fold(E::ZERO, |s, (&x, &e)| s + x * e);
            if v != c.value {
                return Err(ZkError::proof(
                    what,
                    format!("opening {k} does not evaluate to the claimed value"),
                ));
            }
        }
        tr.absorb_e(b"ligero.proximity", &o.proximity);
        for u in &o.combined {
            tr.absorb_e(b"ligero.combined", u);
        }
        let expected = distinct(tr.indices(QUERIES, n));
        if o.columns.len() != expected.len() {
            return Err(ZkError::proof(
                what,
                format!(
                    "{} columns opened, expected {}",
                    o.columns.len(),
                    expected.len()
                ),
            ));
        }
        let enc_prox = encode_e(&o.proximity);
        let enc: Vec<Vec<E>> = o.combined.iter().map(|u| encode_e(u)).collect();
        let depth = n.trailing_zeros() as usize;
        let mut leaves = Vec::with_capacity(expected.len());
        for (q, (col, &want)) in o.columns.iter().zip(&expected).enumerate() {
            if col.index != want {
                return Err(ZkError::proof(
                    what,
                    format!("opened column {q} is {}, expected {want}", col.index),
                ));
            }
            if col.values.len() != self.rows {
                return Err(ZkError::proof(
                    what,
                    format!("column {} has the wrong shape", col.index),
                ));
            }
            leaves.push((col.index, hash_leaf(&col.values)));
        }
        let mut supplied = o.nodes.iter();
        let root = multiproof_root(leaves, depth, |_, _| supplied.next().copied());
        if root != Some(self.root) || supplied.next().is_some() {
            return Err(ZkError::proof(
                what,
                "the opened columns are not under the committed root",
            ));
        }
        for col in &o.columns {
            let dot = |w: &[E]| {
                w.iter()
                    .zip(&col.values)
                    .fold(E::ZERO, |s, (&a, &b)| s + a * b)
            };
            if dot(&rho) != enc_prox[col.index] {
                return Err(ZkError::proof(
                    what,
                    format!("column {} fails the proximity test", col.index),
                ));
            }
            for (k, c) in claims.iter().enumerate() {
                if dot(&c.row_weights) != enc[k][col.index] {
                    return Err(ZkError::proof(
                        what,
                        format!(
                            "column {} disagrees with the opening of claim {k}",
                            col.index
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::poly::mle_f;

    fn matrix() -> Vec<Vec<F>> {
        (0..6u64)
            .map(|r| (0..16u64).map(|c| F::new(r * 100 + c * c + 1)).collect())
            .collect()
    }

    fn claim_for(rows: &[Vec<F>], tr: &mut Transcript) -> Claim {
        let row_weights = tr.challenges(rows.len());
        let col_point = tr.challenges(4);
        let value = row_weights
            .iter()
            .zip(rows)
            .fold(E::ZERO, |s, (w, r)| s + *w * mle_f(r, &col_point));
        Claim {
            row_weights,
            col_point,
            value,
        }
    }

    #[test]
    fn an_honest_opening_verifies_and_tampering_fails() {
        let rows = matrix();
        let c = Committed::new(rows.clone());
        let com = c.commitment();
        let mut tp = Transcript::new(b"l");
        let claim = claim_for(&rows, &mut tp);
        let opening = c.open(std::slice::from_ref(&claim.row_weights), &mut tp);
        let mut tv = Transcript::new(b"l");
        let claim_v = claim_for(&rows, &mut tv);
        com.verify(std::slice::from_ref(&claim_v), &opening, &mut tv, "w")
            .unwrap();

        // A wrong value, a tampered column, a wrong root: each fails.
        let mut tv = Transcript::new(b"l");
        let mut bad = claim_for(&rows, &mut tv);
        bad.value += E::ONE;
        assert!(com.verify(&[bad], &opening, &mut tv, "w").is_err());
        let mut t2 = opening.clone();
        t2.columns[3].values[0] += F::ONE;
        let mut tv = Transcript::new(b"l");
        let claim_v = claim_for(&rows, &mut tv);
        let err = com
            .verify(&[claim_v], &t2, &mut tv, "w")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not under the committed root"), "{err}");
        let mut other = com;
        other.root[0] ^= 1;
        let mut tv = Transcript::new(b"l");
        let claim_v = claim_for(&rows, &mut tv);
        assert!(other.verify(&[claim_v], &opening, &mut tv, "w").is_err());
    }

    #[test]
    fn a_combination_from_other_rows_is_caught_by_the_columns() {
        let rows = matrix();
        let c = Committed::new(rows.clone());
        let mut tp = Transcript::new(b"l");
        let claim = claim_for(&rows, &mut tp);
        let mut opening = c.open(std::slice::from_ref(&claim.row_weights), &mut tp);
        // Claim a different value and send a u that evaluates to it.
        opening.combined[0][0] += E::ONE;
        let mut tv = Transcript::new(b"l");
        let mut claim_v = claim_for(&rows, &mut tv);
        claim_v.value += eq_table(&claim_v.col_point)[0];
        assert!(c
            .commitment()
            .verify(&[claim_v], &opening, &mut tv, "w")
            .is_err());
    }
}
