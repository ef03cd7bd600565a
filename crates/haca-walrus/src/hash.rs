//! Blake2b-256 over many equal-length messages `prefix || chunk`: Walrus's Merkle leaves
//! (`0x00 || symbol`) and inner nodes (`0x01 || left || right`).
//!
//! Nearly all of a blob id's time is these hashes (an `n x n` matrix of leaves and as many
//! inner nodes), so on x86-64 with AVX-512 eight messages are hashed at once, one per 64-bit
//! lane of the vector registers; elsewhere, and for the remainder, the `blake2` crate hashes
//! one at a time. Both give the same digests (tested here and by the golden blob ids).

use blake2::digest::consts::U32;
use blake2::{Blake2b, Digest};

pub type Hash = [u8; 32];

/// Blake2b-256 of `prefix || data`, one message.
pub fn hash_one(prefix: u8, data: &[u8]) -> Hash {
    let mut h = Blake2b::<U32>::new();
    h.update([prefix]);
    h.update(data);
    h.finalize().into()
}

/// `out[i]` = Blake2b-256 of `prefix || data[i*chunk..(i+1)*chunk]`, for each of `out.len()`
/// chunks.
pub fn hash_chunks(prefix: u8, data: &[u8], chunk: usize, out: &mut [Hash]) {
    assert!(chunk > 0 && data.len() >= out.len() * chunk);
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        while done + 8 <= out.len() {
            let chunks: [&[u8]; 8] =
                std::array::from_fn(|l| &data[(done + l) * chunk..(done + l + 1) * chunk]);
            // SAFETY: AVX-512F was detected at run time just above.
            unsafe { x86::hash8(prefix, &chunks, &mut out[done..done + 8]) };
            done += 8;
        }
    }
    for (i, o) in out.iter_mut().enumerate().skip(done) {
        *o = hash_one(prefix, &data[i * chunk..(i + 1) * chunk]);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Hash;
    use core::arch::x86_64::*;

    const IV: [u64; 8] = [
        0x6a09e667f3bcc908,
        0xbb67ae8584caa73b,
        0x3c6ef372fe94f82b,
        0xa54ff53a5f1d36f1,
        0x510e527fade682d1,
        0x9b05688c2b3e6c1f,
        0x1f83d9abfb41bd6b,
        0x5be0cd19137e2179,
    ];

    const SIGMA: [[usize; 16]; 12] = [
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
        [14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3],
        [11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4],
        [7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8],
        [9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13],
        [2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9],
        [12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11],
        [13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10],
        [6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5],
        [10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0],
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
        [14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3],
    ];

    /// Copies block `offset..offset + 128` of the message `prefix || chunk` into `block`,
    /// zero-padded past the message's end.
    #[inline(always)]
    fn fill_block(block: &mut [u8; 128], prefix: u8, chunk: &[u8], offset: usize) {
        let (dest, src) = if offset == 0 {
            block[0] = prefix;
            (&mut block[1..], chunk)
        } else {
            (&mut block[..], &chunk[offset - 1..])
        };
        let n = dest.len().min(src.len());
        dest[..n].copy_from_slice(&src[..n]);
        dest[n..].fill(0);
    }

    #[inline(always)]
    unsafe fn g(
        v: &mut [__m512i; 16],
        a: usize,
        b: usize,
        c: usize,
        d: usize,
        x: __m512i,
        y: __m512i,
    ) {
        v[a] = _mm512_add_epi64(_mm512_add_epi64(v[a], v[b]), x);
        v[d] = _mm512_ror_epi64::<32>(_mm512_xor_si512(v[d], v[a]));
        v[c] = _mm512_add_epi64(v[c], v[d]);
        v[b] = _mm512_ror_epi64::<24>(_mm512_xor_si512(v[b], v[c]));
        v[a] = _mm512_add_epi64(_mm512_add_epi64(v[a], v[b]), y);
        v[d] = _mm512_ror_epi64::<16>(_mm512_xor_si512(v[d], v[a]));
        v[c] = _mm512_add_epi64(v[c], v[d]);
        v[b] = _mm512_ror_epi64::<63>(_mm512_xor_si512(v[b], v[c]));
    }

    #[inline(always)]
    unsafe fn round(v: &mut [__m512i; 16], m: &[__m512i; 16], s: &[usize; 16]) {
        g(v, 0, 4, 8, 12, m[s[0]], m[s[1]]);
        g(v, 1, 5, 9, 13, m[s[2]], m[s[3]]);
        g(v, 2, 6, 10, 14, m[s[4]], m[s[5]]);
        g(v, 3, 7, 11, 15, m[s[6]], m[s[7]]);
        g(v, 0, 5, 10, 15, m[s[8]], m[s[9]]);
        g(v, 1, 6, 11, 12, m[s[10]], m[s[11]]);
        g(v, 2, 7, 8, 13, m[s[12]], m[s[13]]);
        g(v, 3, 4, 9, 14, m[s[14]], m[s[15]]);
    }

    /// Blake2b-256 of `prefix || chunks[l]` into `out[l]`, the eight lanes at once. The chunks
    /// must have one length.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn hash8(prefix: u8, chunks: &[&[u8]; 8], out: &mut [Hash]) {
        let len = chunks[0].len() + 1;
        debug_assert!(chunks.iter().all(|c| c.len() + 1 == len) && out.len() == 8);
        let n_blocks = len.div_ceil(128);
        let mut h: [__m512i; 8] = core::array::from_fn(|i| _mm512_set1_epi64(IV[i] as i64));
        // Parameter block: digest length 32, no key, fanout 1, depth 1.
        h[0] = _mm512_set1_epi64((IV[0] ^ 0x0101_0020) as i64);
        let mut blocks = [[0u64; 16]; 8];
        for b in 0..n_blocks {
            for (block, chunk) in blocks.iter_mut().zip(chunks) {
                // SAFETY: [u64; 16] and [u8; 128] have one size, and u8 has no alignment;
                // x86-64 is little-endian, as Blake2b reads its message words.
                let bytes = &mut *(block.as_mut_ptr() as *mut [u8; 128]);
                fill_block(bytes, prefix, chunk, b * 128);
            }
            let m: [__m512i; 16] = core::array::from_fn(|j| {
                _mm512_set_epi64(
                    blocks[7][j] as i64,
                    blocks[6][j] as i64,
                    blocks[5][j] as i64,
                    blocks[4][j] as i64,
                    blocks[3][j] as i64,
                    blocks[2][j] as i64,
                    blocks[1][j] as i64,
                    blocks[0][j] as i64,
                )
            });
            let counter = ((b + 1) * 128).min(len) as u64;
            let last = b + 1 == n_blocks;
            let mut v = [_mm512_setzero_si512(); 16];
            v[..8].copy_from_slice(&h);
            for i in 0..8 {
                v[8 + i] = _mm512_set1_epi64(IV[i] as i64);
            }
            v[12] = _mm512_set1_epi64((IV[4] ^ counter) as i64);
            if last {
                v[14] = _mm512_set1_epi64(!IV[6] as i64);
            }
            round(&mut v, &m, &SIGMA[0]);
            round(&mut v, &m, &SIGMA[1]);
            round(&mut v, &m, &SIGMA[2]);
            round(&mut v, &m, &SIGMA[3]);
            round(&mut v, &m, &SIGMA[4]);
            round(&mut v, &m, &SIGMA[5]);
            round(&mut v, &m, &SIGMA[6]);
            round(&mut v, &m, &SIGMA[7]);
            round(&mut v, &m, &SIGMA[8]);
            round(&mut v, &m, &SIGMA[9]);
            round(&mut v, &m, &SIGMA[10]);
            round(&mut v, &m, &SIGMA[11]);
            for i in 0..8 {
                h[i] = _mm512_xor_si512(h[i], _mm512_xor_si512(v[i], v[i + 8]));
            }
        }
        let mut words = [[0u64; 8]; 4];
        for (w, word) in words.iter_mut().enumerate() {
            _mm512_storeu_si512(word.as_mut_ptr() as *mut _, h[w]);
        }
        for (l, o) in out.iter_mut().enumerate() {
            for (w, word) in words.iter().enumerate() {
                o[8 * w..8 * w + 8].copy_from_slice(&word[l].to_le_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_at_once_equals_one_at_a_time() {
        let data: Vec<u8> = (0..40_000u32).map(|i| (i * 7 + 3) as u8).collect();
        // Chunk lengths around the 128-byte block boundary (the prefix takes one byte).
        for chunk in [1, 2, 38, 64, 126, 127, 128, 129, 255, 256, 302, 1206] {
            for count in [1, 7, 8, 9, 17, 24] {
                let mut out = vec![[0u8; 32]; count];
                hash_chunks(1, &data, chunk, &mut out);
                for (i, o) in out.iter().enumerate() {
                    assert_eq!(
                        *o,
                        hash_one(1, &data[i * chunk..(i + 1) * chunk]),
                        "{chunk} {i}"
                    );
                }
            }
        }
    }
}
