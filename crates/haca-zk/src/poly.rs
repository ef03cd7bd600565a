//! Multilinear extensions and the sumcheck protocol.
//!
//! A vector `v` of length 2^n is the table of a multilinear polynomial; bit k of an index is
//! variable k (least significant first). Sumcheck binds variable 0 first.

use crate::field::{E, F};
use crate::transcript::Transcript;
use crate::ZkError;

/// eq(z, i) for every i in {0,1}^n.
pub fn eq_table(z: &[E]) -> Vec<E> {
    let mut t = Vec::with_capacity(1 << z.len());
    t.push(E::ONE);
    for &zk in z {
        let len = t.len();
        t.extend_from_within(..);
        let one_minus = E::ONE - zk;
        for i in 0..len {
            let v = t[i];
            t[i] = v * one_minus;
            t[i + len] = v * zk;
        }
    }
    t
}

/// eq(a, b) for two points.
pub fn eq_at(a: &[E], b: &[E]) -> E {
    a.iter().zip(b).fold(E::ONE, |acc, (&x, &y)| {
        acc * (x * y + (E::ONE - x) * (E::ONE - y))
    })
}

/// The multilinear extension of `v` (zero-padded to 2^z.len()) at `z`.
pub fn mle_f(v: &[F], z: &[E]) -> E {
    let eq = eq_table(z);
    assert!(v.len() <= eq.len());
    v.iter().zip(&eq).fold(E::ZERO, |acc, (&x, &e)| acc + e * x)
}

pub fn mle_e(v: &[E], z: &[E]) -> E {
    let eq = eq_table(z);
    assert!(v.len() <= eq.len());
    v.iter().zip(&eq).fold(E::ZERO, |acc, (&x, &e)| acc + e * x)
}

/// Number of variables of a table of `len` entries, padded to a power of two.
pub fn vars(len: usize) -> usize {
    len.max(1).next_power_of_two().trailing_zeros() as usize
}

/// The polynomial through (0, ys[0]), (1, ys[1]), ..., evaluated at `x`.
pub fn interpolate(ys: &[E], x: E) -> E {
    let d = ys.len();
    let mut acc = E::ZERO;
    for (i, &y) in ys.iter().enumerate() {
        let (mut num, mut den) = (E::ONE, F::ONE);
        for j in 0..d {
            if j != i {
                num *= x - E::from_u64(j as u64);
                den *= F::from_i64(i as i64 - j as i64);
            }
        }
        acc += y * num * den.inverse();
    }
    acc
}

/// One sumcheck's messages: the round polynomials, each as its values at 0..=degree.
pub type Rounds = Vec<Vec<E>>;

/// Proves Σ_i f(t_0[i], t_1[i], ...) over the hypercube, where f has degree `degree` in each
/// variable. The tables are bound in place; returns the rounds and the random point.
pub fn prove(
    tables: &mut [Vec<E>],
    degree: usize,
    f: impl Fn(&[E]) -> E,
    tr: &mut Transcript,
) -> (Rounds, Vec<E>) {
    let n = vars(tables[0].len());
    for t in tables.iter_mut() {
        assert!(t.len() <= 1 << n);
        t.resize(1 << n, E::ZERO);
    }
    let mut rounds = Vec::with_capacity(n);
    let mut point = Vec::with_capacity(n);
    let mut args = vec![E::ZERO; tables.len()];
    let xs: Vec<E> = (0..=degree).map(|x| E::from_u64(x as u64)).collect();
    for _ in 0..n {
        let half = tables[0].len() / 2;
        let mut evals = vec![E::ZERO; degree + 1];
        for i in 0..half {
            for (k, &x) in xs.iter().enumerate() {
                for (a, t) in args.iter_mut().zip(tables.iter()) {
                    let (lo, hi) = (t[2 * i], t[2 * i + 1]);
                    *a = lo + (hi - lo) * x;
                }
                evals[k] += f(&args);
            }
        }
        tr.absorb_e(b"sumcheck.round", &evals);
        let r = tr.challenge();
        for t in tables.iter_mut() {
            for i in 0..half {
                let (lo, hi) = (t[2 * i], t[2 * i + 1]);
                t[i] = lo + (hi - lo) * r;
            }
            t.truncate(half);
        }
        rounds.push(evals);
        point.push(r);
    }
    (rounds, point)
}

/// Checks the rounds against `claim`; returns the point and the value f must have there.
pub fn verify(
    rounds: &[Vec<E>],
    n: usize,
    degree: usize,
    mut claim: E,
    tr: &mut Transcript,
    what: &str,
) -> Result<(Vec<E>, E), ZkError> {
    if rounds.len() != n {
        return Err(ZkError::proof(
            what,
            format!("has {} sumcheck rounds, expected {n}", rounds.len()),
        ));
    }
    let mut point = Vec::with_capacity(n);
    for (k, g) in rounds.iter().enumerate() {
        if g.len() != degree + 1 {
            return Err(ZkError::proof(
                what,
                format!("round {k} has {} values, expected {}", g.len(), degree + 1),
            ));
        }
        if g[0] + g[1] != claim {
            return Err(ZkError::proof(
                what,
                format!("sumcheck round {k} does not add up to the claim"),
            ));
        }
        tr.absorb_e(b"sumcheck.round", g);
        let r = tr.challenge();
        claim = interpolate(g, r);
        point.push(r);
    }
    Ok((point, claim))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(v: u64) -> E {
        E::from_u64(v)
    }

    #[test]
    fn eq_table_is_the_indicator_on_the_hypercube() {
        let z = [e(1), e(0), e(1)];
        let t = eq_table(&z);
        for (i, v) in t.iter().enumerate() {
            assert_eq!(*v, if i == 0b101 { E::ONE } else { E::ZERO }, "index {i}");
        }
    }

    #[test]
    fn mle_agrees_with_the_table_and_eq_at() {
        let v: Vec<F> = (0..8u64).map(|i| F::new(i * 7 + 1)).collect();
        for i in 0..8usize {
            let z: Vec<E> = (0..3).map(|k| e(((i >> k) & 1) as u64)).collect();
            assert_eq!(mle_f(&v, &z), E::from(v[i]));
        }
        let a = [e(3), e(5)];
        let b = [e(11), e(2)];
        assert_eq!(mle_e(&eq_table(&a), &b), eq_at(&a, &b));
    }

    #[test]
    fn sumcheck_of_a_product_verifies_and_a_wrong_claim_fails() {
        let a: Vec<E> = (0..16u64).map(|i| e(i + 1)).collect();
        let b: Vec<E> = (0..16u64).map(|i| e(3 * i + 2)).collect();
        let sum = a.iter().zip(&b).fold(E::ZERO, |s, (x, y)| s + *x * *y);
        let mut tr = Transcript::new(b"t");
        let (rounds, point) = prove(&mut [a.clone(), b.clone()], 2, |v| v[0] * v[1], &mut tr);
        let mut tv = Transcript::new(b"t");
        let (p2, last) = verify(&rounds, 4, 2, sum, &mut tv, "test").unwrap();
        assert_eq!(point, p2);
        assert_eq!(last, mle_e(&a, &point) * mle_e(&b, &point));
        let mut tw = Transcript::new(b"t");
        assert!(verify(&rounds, 4, 2, sum + E::ONE, &mut tw, "test").is_err());
    }
}
