//! The Goldilocks field `F` (p = 2^64 - 2^32 + 1) and its quadratic extension `E = F[X]/(X^2 - 7)`.
//!
//! Data (weights, witness bits, quantized tensors) lives in `F`; every verifier challenge is drawn
//! from `E` (about 2^128 elements), so that the sumcheck and commitment soundness errors are
//! bounded by degree / |E| rather than degree / |F|.

use std::ops::{Add, AddAssign, Mul, MulAssign, Neg, Sub, SubAssign};

/// The Goldilocks prime.
pub const P: u64 = 0xFFFF_FFFF_0000_0001;
/// 2^64 mod p.
const EPS: u64 = 0xFFFF_FFFF;

/// An element of the Goldilocks field, always canonical (< p).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Debug, PartialOrd, Ord)]
pub struct F(u64);

impl F {
    pub const ZERO: F = F(0);
    pub const ONE: F = F(1);

    /// The element `v mod p`.
    pub const fn new(v: u64) -> F {
        F(if v >= P { v - P } else { v })
    }

    /// A signed integer as a field element (negative numbers wrap to p - |v|).
    pub fn from_i64(v: i64) -> F {
        if v >= 0 {
            F::new(v as u64)
        } else {
            -F::new(v.unsigned_abs())
        }
    }

    /// The canonical representative in [0, p).
    pub fn value(self) -> u64 {
        self.0
    }

    /// The element read as a signed integer in (-p/2, p/2).
    pub fn to_i64(self) -> i64 {
        if self.0 > P / 2 {
            -((P - self.0) as i64)
        } else {
            self.0 as i64
        }
    }

    pub fn pow(self, mut e: u64) -> F {
        let (mut base, mut acc) = (self, F::ONE);
        while e > 0 {
            if e & 1 == 1 {
                acc *= base;
            }
            base *= base;
            e >>= 1;
        }
        acc
    }

    /// The inverse; zero has none and maps to zero.
    pub fn inverse(self) -> F {
        self.pow(P - 2)
    }

    /// A primitive `2^log_n`-th root of unity (7 generates the multiplicative group).
    pub fn root_of_unity(log_n: u32) -> F {
        assert!(
            log_n <= 32,
            "Goldilocks has roots of unity of order up to 2^32"
        );
        F(7).pow((P - 1) >> log_n)
    }
}

/// x mod p for x < 2^128, using 2^64 = 2^32 - 1 and 2^96 = -1 (mod p).
#[inline]
fn reduce128(x: u128) -> u64 {
    let lo = x as u64;
    let hi = (x >> 64) as u64;
    let (hi_hi, hi_lo) = (hi >> 32, hi & EPS);
    let (mut t0, borrow) = lo.overflowing_sub(hi_hi);
    if borrow {
        t0 = t0.wrapping_sub(EPS);
    }
    let t1 = hi_lo * EPS;
    let (mut t2, carry) = t0.overflowing_add(t1);
    if carry {
        t2 = t2.wrapping_add(EPS);
    }
    if t2 >= P {
        t2 - P
    } else {
        t2
    }
}

impl Add for F {
    type Output = F;
    #[inline]
    fn add(self, o: F) -> F {
        let s = self.0 as u128 + o.0 as u128;
        F(if s >= P as u128 {
            (s - P as u128) as u64
        } else {
            s as u64
        })
    }
}
impl Sub for F {
    type Output = F;
    #[inline]
    fn sub(self, o: F) -> F {
        F(if self.0 >= o.0 {
            self.0 - o.0
        } else {
            self.0.wrapping_sub(o.0).wrapping_add(P)
        })
    }
}
impl Neg for F {
    type Output = F;
    fn neg(self) -> F {
        F::ZERO - self
    }
}
impl Mul for F {
    type Output = F;
    #[inline]
    fn mul(self, o: F) -> F {
        F(reduce128(self.0 as u128 * o.0 as u128))
    }
}
impl AddAssign for F {
    fn add_assign(&mut self, o: F) {
        *self = *self + o;
    }
}
impl SubAssign for F {
    fn sub_assign(&mut self, o: F) {
        *self = *self - o;
    }
}
impl MulAssign for F {
    fn mul_assign(&mut self, o: F) {
        *self = *self * o;
    }
}

/// The non-residue that defines the extension: X^2 = 7.
const W: F = F(7);

/// An element `a + b·X` of the quadratic extension.
#[derive(Clone, Copy, PartialEq, Eq, Default, Debug)]
pub struct E(pub F, pub F);

impl E {
    pub const ZERO: E = E(F::ZERO, F::ZERO);
    pub const ONE: E = E(F::ONE, F::ZERO);

    pub fn from_u64(v: u64) -> E {
        E(F::new(v), F::ZERO)
    }

    pub fn from_i64(v: i64) -> E {
        E(F::from_i64(v), F::ZERO)
    }

    pub fn inverse(self) -> E {
        // (a + bX)(a - bX) = a^2 - 7 b^2, which lies in F.
        let norm = self.0 * self.0 - W * self.1 * self.1;
        let inv = norm.inverse();
        E(self.0 * inv, -(self.1 * inv))
    }

    /// The element as 16 little-endian bytes, for the transcript.
    pub fn to_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.0.value().to_le_bytes());
        b[8..].copy_from_slice(&self.1.value().to_le_bytes());
        b
    }
}

impl From<F> for E {
    fn from(f: F) -> E {
        E(f, F::ZERO)
    }
}
impl Add for E {
    type Output = E;
    #[inline]
    fn add(self, o: E) -> E {
        E(self.0 + o.0, self.1 + o.1)
    }
}
impl Sub for E {
    type Output = E;
    #[inline]
    fn sub(self, o: E) -> E {
        E(self.0 - o.0, self.1 - o.1)
    }
}
impl Neg for E {
    type Output = E;
    fn neg(self) -> E {
        E(-self.0, -self.1)
    }
}
impl Mul for E {
    type Output = E;
    #[inline]
    fn mul(self, o: E) -> E {
        E(self.0 * o.0 + W * self.1 * o.1, self.0 * o.1 + self.1 * o.0)
    }
}
impl Mul<F> for E {
    type Output = E;
    #[inline]
    fn mul(self, o: F) -> E {
        E(self.0 * o, self.1 * o)
    }
}
impl AddAssign for E {
    fn add_assign(&mut self, o: E) {
        *self = *self + o;
    }
}
impl SubAssign for E {
    fn sub_assign(&mut self, o: E) {
        *self = *self - o;
    }
}
impl MulAssign for E {
    fn mul_assign(&mut self, o: E) {
        *self = *self * o;
    }
}

/// In-place radix-2 NTT: `a` (length 2^k, coefficients) becomes its evaluations at the powers
/// of a primitive 2^k-th root of unity, in natural order.
pub fn ntt(a: &mut [F]) {
    let n = a.len();
    assert!(n.is_power_of_two(), "NTT length must be a power of two");
    let log_n = n.trailing_zeros();
    // Bit-reversal permutation, then Cooley-Tukey butterflies.
    for i in 0..n {
        let j = i.reverse_bits() >> (usize::BITS - log_n.max(1)) as usize;
        if log_n > 0 && i < j {
            a.swap(i, j);
        }
    }
    let mut len = 2;
    while len <= n {
        let w_len = F::root_of_unity(len.trailing_zeros());
        let half = len / 2;
        let mut twiddles = Vec::with_capacity(half);
        let mut w = F::ONE;
        for _ in 0..half {
            twiddles.push(w);
            w *= w_len;
        }
        for chunk in a.chunks_mut(len) {
            let (lo, hi) = chunk.split_at_mut(half);
            for ((x, y), t) in lo.iter_mut().zip(hi.iter_mut()).zip(&twiddles) {
                let v = *y * *t;
                *y = *x - v;
                *x += v;
            }
        }
        len <<= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn slow_mul(a: u64, b: u64) -> u64 {
        ((a as u128 * b as u128) % P as u128) as u64
    }

    proptest! {
        #[test]
        fn multiplication_matches_u128_remainder(a in 0..P, b in 0..P) {
            prop_assert_eq!((F::new(a) * F::new(b)).value(), slow_mul(a, b));
        }

        #[test]
        fn addition_and_subtraction_invert(a in 0..P, b in 0..P) {
            let (x, y) = (F::new(a), F::new(b));
            prop_assert_eq!((x + y) - y, x);
            prop_assert_eq!(((a as u128 + b as u128) % P as u128) as u64, (x + y).value());
        }

        #[test]
        fn extension_inverse_is_an_inverse(a in 1..P, b in 0..P) {
            let e = E(F::new(a), F::new(b));
            prop_assert_eq!(e * e.inverse(), E::ONE);
        }
    }

    #[test]
    fn edge_products_reduce() {
        for (a, b) in [(P - 1, P - 1), (P - 1, 2), (EPS, EPS), (1 << 63, 1 << 63)] {
            assert_eq!((F::new(a) * F::new(b)).value(), slow_mul(a, b), "{a} * {b}");
        }
    }

    #[test]
    fn seven_is_a_non_residue_and_roots_have_their_order() {
        // Euler's criterion: 7^((p-1)/2) = -1, so X^2 - 7 is irreducible.
        assert_eq!(F::new(7).pow((P - 1) / 2), -F::ONE);
        let w = F::root_of_unity(32);
        assert_eq!(w.pow(1 << 32), F::ONE);
        assert_ne!(w.pow(1 << 31), F::ONE);
    }

    #[test]
    fn ntt_evaluates_the_polynomial() {
        let coeffs: Vec<F> = (0..16u64).map(|i| F::new(i * i + 3)).collect();
        let mut evals = coeffs.clone();
        ntt(&mut evals);
        let w = F::root_of_unity(4);
        for (k, e) in evals.iter().enumerate() {
            let x = w.pow(k as u64);
            let direct = coeffs.iter().rev().fold(F::ZERO, |acc, c| acc * x + *c);
            assert_eq!(*e, direct, "evaluation {k}");
        }
    }

    #[test]
    fn signed_round_trip() {
        for v in [0i64, 1, -1, 123456, -987654321, i64::from(i32::MAX)] {
            assert_eq!(F::from_i64(v).to_i64(), v);
        }
    }
}
