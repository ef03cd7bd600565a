//! Fiat-Shamir transcript over SHA-256: every message the prover sends is absorbed before the
//! challenge that depends on it is squeezed.

use crate::field::{E, F, P};
use sha2::{Digest, Sha256};

pub struct Transcript {
    state: [u8; 32],
    counter: u64,
}

impl Transcript {
    pub fn new(domain: &[u8]) -> Self {
        let mut t = Transcript {
            state: [0; 32],
            counter: 0,
        };
        t.absorb(b"domain", domain);
        t
    }

    /// Mixes a labelled message into the state.
    pub fn absorb(&mut self, label: &[u8], data: &[u8]) {
        let mut h = Sha256::new();
        h.update(self.state);
        h.update((label.len() as u64).to_le_bytes());
        h.update(label);
        h.update((data.len() as u64).to_le_bytes());
        h.update(data);
        self.state = h.finalize().into();
        self.counter = 0;
    }

    pub fn absorb_e(&mut self, label: &[u8], values: &[E]) {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_bytes()).collect();
        self.absorb(label, &bytes);
    }

    pub fn absorb_i64(&mut self, label: &[u8], values: &[i64]) {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.absorb(label, &bytes);
    }

    fn next_block(&mut self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.state);
        h.update(b"squeeze");
        h.update(self.counter.to_le_bytes());
        self.counter += 1;
        h.finalize().into()
    }

    /// A base-field element, by rejection sampling (unbiased).
    fn squeeze_f(&mut self) -> F {
        loop {
            let b = self.next_block();
            for c in b.chunks(8) {
                let v = u64::from_le_bytes(c.try_into().expect("8 bytes"));
                if v < P {
                    return F::new(v);
                }
            }
        }
    }

    pub fn challenge(&mut self) -> E {
        E(self.squeeze_f(), self.squeeze_f())
    }

    pub fn challenges(&mut self, n: usize) -> Vec<E> {
        (0..n).map(|_| self.challenge()).collect()
    }

    /// `n` indices below `bound` (a power of two), for column queries.
    pub fn indices(&mut self, n: usize, bound: usize) -> Vec<usize> {
        assert!(bound.is_power_of_two());
        (0..n)
            .map(|_| {
                let b = self.next_block();
                (u64::from_le_bytes(b[..8].try_into().expect("8 bytes")) as usize) & (bound - 1)
            })
            .collect()
    }
}
