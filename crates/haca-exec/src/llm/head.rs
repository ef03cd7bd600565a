//! The output projection of a step that scores several sequences at once, done here
//! instead of by llama.cpp.
//!
//! Why: llama.cpp multiplies several hidden states by the vocabulary matrix with llamafile's
//! tinyBLAS, which walks four weight rows at a time in short interleaved runs. For Gemma 3's
//! q8_0 vocabulary matrix (262,144 x 640) that cost 1.9x the CPU time per row of llama.cpp's
//! one-row kernel (perf, one thread), so four streams decoded fewer tokens per CPU-second
//! than one. Here each tile of weight rows is read from memory once and scored against every
//! hidden state while it sits in L1: for q8_0 weights on a CPU with AVX-512 VNNI by [`q8`],
//! four states per pass over a weight row (2.7x less CPU a row than llama.cpp's one-row
//! kernel); otherwise by llama.cpp's own one-row dot product for the weight type, with the
//! input quantized as llama.cpp quantizes it, so a row comes out as a lone step scores it.
//!
//! How: llama.cpp's graph-evaluation callback. The node named `result_norm` (the final
//! hidden states) is asked for, so the graph is computed up to it; when the next node is the
//! projection that makes `result_output` (the logits llama.cpp hands back), its rows are
//! written here, and the node is marked as nothing to compute while llama.cpp runs it. Any
//! other shape (one row, a soft-capped or scaled output, weights off the host) is left to
//! llama.cpp untouched.

use llama_cpp_sys_2 as sys;
use std::ffi::{c_void, CStr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Steps this process scored here, and the rows (sequences) in them, over every model: what
/// the node's `/metrics` shows of batching.
static STEPS: AtomicU64 = AtomicU64::new(0);
static ROWS: AtomicU64 = AtomicU64::new(0);

/// (steps, rows) scored here so far by every local model of this process: rows over steps is
/// the mean number of sequences a batched step decoded.
pub fn batched_totals() -> (u64, u64) {
    (STEPS.load(Ordering::Relaxed), ROWS.load(Ordering::Relaxed))
}

/// Bytes of weight rows scored together against every hidden state: well inside L1.
const TILE_BYTES: usize = 16 * 1024;

/// The callback's state, owned by the engine thread for the life of its context.
pub(crate) struct HeadTap {
    threads: usize,
    /// The `result_norm` node of the graph being computed, once asked for (several rows).
    norm: *const sys::ggml_tensor,
    /// Whether `norm` has been computed and nothing since.
    norm_ready: bool,
    /// The projection node set to compute nothing, and the op to put back.
    muted: Option<(*mut sys::ggml_tensor, sys::ggml_op)>,
    /// Rows scored here, for the node's metrics and the tests.
    pub(crate) rows: Arc<AtomicU64>,
}

// SAFETY: the pointers are graph nodes of one decode call, set and read on the engine
// thread inside it; the tap is only made elsewhere, empty.
unsafe impl Send for HeadTap {}

impl HeadTap {
    pub(crate) fn new(threads: usize) -> HeadTap {
        HeadTap {
            threads: threads.max(1),
            norm: std::ptr::null(),
            norm_ready: false,
            muted: None,
            rows: Arc::new(AtomicU64::new(0)),
        }
    }
}

/// Sets the callback on llama.cpp's context parameters.
///
/// `LlamaContextParams` wraps `llama_context_params` as its only field and has no setter for
/// the callback; `transmute` refuses to compile unless the two have the same size, which,
/// with one field, puts that field at offset 0.
pub(crate) fn with_tap(
    params: llama_cpp_2::context::params::LlamaContextParams,
    tap: *mut HeadTap,
) -> llama_cpp_2::context::params::LlamaContextParams {
    let mut raw: sys::llama_context_params = unsafe { std::mem::transmute(params) };
    raw.cb_eval = Some(eval_callback);
    raw.cb_eval_user_data = tap.cast();
    unsafe { std::mem::transmute(raw) }
}

fn name_of(t: &sys::ggml_tensor) -> &[u8] {
    // SAFETY: ggml keeps tensor names NUL-terminated within the array.
    unsafe { CStr::from_ptr(t.name.as_ptr()) }.to_bytes()
}

unsafe extern "C" fn eval_callback(t: *mut sys::ggml_tensor, ask: bool, data: *mut c_void) -> bool {
    // SAFETY: `data` is the engine thread's HeadTap, alive while the context is; llama.cpp
    // calls back on the thread that called decode.
    let tap = unsafe { &mut *data.cast::<HeadTap>() };
    let node = unsafe { &mut *t };
    if !ask {
        // `t` has been computed.
        if let Some((muted, op)) = tap.muted.take() {
            unsafe { (*muted).op = op };
        }
        tap.norm_ready = std::ptr::eq(t, tap.norm);
        return true;
    }
    // A node still muted here means the compute that muted it failed before it was done (the
    // graph may be freed since: forget the pointer); a reused graph's projection node is put
    // back below, by its name.
    tap.muted = None;
    let (output, final_norm) = match name_of(node) {
        b"result_output" => (true, false),
        b"result_norm" => (false, true),
        _ => (false, false),
    };
    if output && node.op == sys::GGML_OP_NONE {
        node.op = sys::GGML_OP_MUL_MAT;
    }
    if final_norm {
        // One row is llama.cpp's one-row kernel already: no need to stop there.
        let several = node.ne[1] >= 2;
        tap.norm = if several { t } else { std::ptr::null() };
        tap.norm_ready = false;
        return several;
    }
    // Only the node right after a computed `result_norm` is taken over.
    let norm = std::mem::replace(&mut tap.norm, std::ptr::null());
    if !std::mem::take(&mut tap.norm_ready) || !output {
        return false;
    }
    // SAFETY: the graph's nodes and the model's weights outlive this call.
    let Some(projection) = (unsafe { Projection::of(node, norm) }) else {
        return false;
    };
    let rows = node.ne[1] as usize;
    unsafe { projection.score(&*norm, node.data.cast(), rows, tap.threads) };
    tap.rows.fetch_add(rows as u64, Ordering::Relaxed);
    STEPS.fetch_add(1, Ordering::Relaxed);
    ROWS.fetch_add(rows as u64, Ordering::Relaxed);
    tap.muted = Some((t, node.op));
    node.op = sys::GGML_OP_NONE;
    true
}

/// A host-resident weight matrix and llama.cpp's CPU kernels for it.
pub(crate) struct Projection {
    weight: *const u8,
    ty: sys::ggml_type,
    row_bytes: usize,
    n_in: usize,
    n_out: usize,
    vec_dot:
        unsafe extern "C" fn(i32, *mut f32, usize, *const c_void, usize, *const c_void, usize, i32),
    input_type: sys::ggml_type,
    quantize: Option<unsafe extern "C" fn(*const f32, *mut c_void, i64)>,
}

// SAFETY: the weight is read-only model memory that outlives the projection.
unsafe impl Sync for Projection {}

impl Projection {
    /// The projection `out = weight x norm` if `out` is exactly that, over f32 rows, with a
    /// host-resident weight that has a CPU dot product.
    ///
    /// # Safety
    /// `out` and `norm` are live tensors of the graph being computed.
    unsafe fn of(out: &sys::ggml_tensor, norm: *const sys::ggml_tensor) -> Option<Projection> {
        if out.op != sys::GGML_OP_MUL_MAT || !std::ptr::eq(out.src[1], norm) {
            return None;
        }
        let (w, h) = unsafe { (&*out.src[0], &*norm) };
        let plain = |t: &sys::ggml_tensor| t.ne[2] == 1 && t.ne[3] == 1;
        let f32_rows = |t: &sys::ggml_tensor| {
            t.type_ == sys::GGML_TYPE_F32 && plain(t) && unsafe { sys::ggml_is_contiguous(t) }
        };
        let host = !w.buffer.is_null() && unsafe { sys::ggml_backend_buffer_is_host(w.buffer) };
        if !host
            || w.data.is_null()
            || !plain(w)
            || !unsafe { sys::ggml_is_contiguous(w) }
            || !f32_rows(h)
            || !f32_rows(out)
            || h.ne[0] != w.ne[0]
            || out.ne[0] != w.ne[1]
            || out.ne[1] != h.ne[1]
        {
            return None;
        }
        unsafe { Projection::new(w.data.cast(), w.type_, w.ne[0] as usize, w.ne[1] as usize) }
    }

    /// A projection over `n_out` rows of `n_in` values of type `ty` at `weight`.
    ///
    /// # Safety
    /// `weight` holds `n_out` contiguous rows of that type, alive while this is used.
    pub(crate) unsafe fn new(
        weight: *const u8,
        ty: sys::ggml_type,
        n_in: usize,
        n_out: usize,
    ) -> Option<Projection> {
        let traits = unsafe { sys::ggml_get_type_traits_cpu(ty).as_ref()? };
        let vec_dot = traits.vec_dot?;
        let input_type = traits.vec_dot_type;
        let quantize = if input_type == sys::GGML_TYPE_F32 {
            None
        } else {
            Some(unsafe { sys::ggml_get_type_traits_cpu(input_type).as_ref()? }.from_float?)
        };
        Some(Projection {
            weight,
            ty,
            row_bytes: unsafe { sys::ggml_row_size(ty, n_in as i64) },
            n_in,
            n_out,
            vec_dot,
            input_type,
            quantize,
        })
    }

    /// Scores `rows` hidden states (the f32 rows of `hidden`) into `out`, `n_out` floats per
    /// row, on `threads` threads.
    ///
    /// # Safety
    /// `hidden` holds `rows` rows of `n_in` f32 values; `out` has room for `rows * n_out`.
    unsafe fn score(&self, hidden: &sys::ggml_tensor, out: *mut f32, rows: usize, threads: usize) {
        let values =
            unsafe { std::slice::from_raw_parts(hidden.data as *const f32, rows * self.n_in) };
        let out = unsafe { std::slice::from_raw_parts_mut(out, rows * self.n_out) };
        self.score_rows(values, out, threads);
    }

    /// Scores each `n_in`-wide row of `hidden` into the matching `n_out`-wide row of `out`.
    pub(crate) fn score_rows(&self, hidden: &[f32], out: &mut [f32], threads: usize) {
        self.score_rows_with(hidden, out, threads, Kernel::Fastest)
    }

    /// [`score_rows`](Self::score_rows) with the kernel chosen.
    fn score_rows_with(&self, hidden: &[f32], out: &mut [f32], threads: usize, kernel: Kernel) {
        let rows = hidden.len() / self.n_in;
        assert_eq!(
            out.len(),
            rows * self.n_out,
            "one output row per hidden row"
        );
        // The input as the dot product takes it (q8_0 for q8_0 weights, and so on), once.
        let input_row = unsafe { sys::ggml_row_size(self.input_type, self.n_in as i64) };
        let mut input = vec![0u8; rows * input_row];
        for (r, h) in hidden.chunks_exact(self.n_in).enumerate() {
            let dst = &mut input[r * input_row..(r + 1) * input_row];
            match self.quantize {
                Some(q) => unsafe { q(h.as_ptr(), dst.as_mut_ptr().cast(), self.n_in as i64) },
                None => dst.copy_from_slice(bytemuck_f32(h)),
            }
        }
        // q8_0 weights on a CPU with AVX-512 VNNI: several hidden states per weight block.
        let q8 = (kernel == Kernel::Fastest
            && self.ty == sys::GGML_TYPE_Q8_0
            && self.input_type == sys::GGML_TYPE_Q8_0)
            .then(|| q8::Inputs::new(&input, rows, self.n_in))
            .flatten();
        let tile = (TILE_BYTES / self.row_bytes).max(1);
        let tiles = self.n_out.div_ceil(tile);
        let threads = threads.clamp(1, tiles);
        let per_thread = tiles.div_ceil(threads) * tile;
        let out_ptr = SendPtr(out.as_mut_ptr());
        let run = |first: usize| {
            let end = (first + per_thread).min(self.n_out);
            let mut start = first;
            while start < end {
                let stop = (start + tile).min(end);
                if let Some(q8) = &q8 {
                    // SAFETY: rows start..stop of the weight; this thread's columns of `out`.
                    unsafe {
                        q8.score(
                            self.weight,
                            self.row_bytes,
                            start..stop,
                            out_ptr.0,
                            self.n_out,
                        )
                    };
                    start = stop;
                    continue;
                }
                for r in 0..rows {
                    let x = input[r * input_row..].as_ptr().cast::<c_void>();
                    for v in start..stop {
                        // SAFETY: row v of the weight; each thread writes its own columns.
                        unsafe {
                            (self.vec_dot)(
                                self.n_in as i32,
                                out_ptr.at(r * self.n_out + v),
                                0,
                                self.weight.add(v * self.row_bytes).cast(),
                                0,
                                x,
                                0,
                                1,
                            )
                        };
                    }
                }
                start = stop;
            }
        };
        std::thread::scope(|s| {
            for t in 1..threads {
                let run = &run;
                s.spawn(move || run(t * per_thread));
            }
            run(0);
        });
    }
}

/// Which dot-product kernel scores the rows.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kernel {
    /// haca's own for q8_0 weights where the CPU has AVX-512 VNNI, else llama.cpp's.
    Fastest,
    /// llama.cpp's one-row kernel for the weight type, always.
    #[cfg_attr(not(test), allow(dead_code))]
    LlamaCpp,
}

/// q8_0 x q8_0 dot products with AVX-512 VNNI, four hidden states per pass over a weight row.
///
/// A q8_0 block is an f16 scale and 32 signed bytes (34 bytes). Two blocks of a weight row
/// fill one 512-bit register; each hidden state's matching quants are multiplied in with
/// `vpdpbusd` (unsigned x signed, so the weight's magnitude times the input with the weight's
/// sign), and the 16 integer sums are scaled by both blocks' scales into float lanes that are
/// added up once per row. llama.cpp's x86 kernel does one block, one state and one horizontal
/// sum per call, and converts each scale through a table. The products are the same integers
/// and scales as llama.cpp's; only the order of the float additions differs (scores agree to
/// 1e-4 relative, tested).
mod q8 {
    #[cfg(target_arch = "x86_64")]
    use std::arch::x86_64::*;

    /// Bytes of a q8_0 block: an f16 scale, then 32 quants.
    const BLOCK: usize = 34;
    // Loads are masked loads with every lane set: the same instruction as a plain load, but
    // an intrinsic of its own, where a plain load goes through `ptr::read_unaligned` and, in
    // builds with debug assertions (tests), its checks, which cost this loop half its speed.
    const ALL16: u16 = u16::MAX;
    const ALL32: u32 = u32::MAX;
    const ALL64: u64 = u64::MAX;

    /// Hidden states quantized to q8_0, laid out for the kernel: each row's quants contiguous,
    /// and each block's scale repeated over the 8 lanes its sums land in.
    pub(super) struct Inputs {
        rows: usize,
        blocks: usize,
        quants: Vec<i8>,
        scales: Vec<f32>,
    }

    impl Inputs {
        /// `input` holds `rows` rows of `n_in` values in q8_0 blocks; `None` where the kernel
        /// cannot run (no AVX-512 VNNI, or an odd number of blocks a row).
        pub(super) fn new(input: &[u8], rows: usize, n_in: usize) -> Option<Inputs> {
            let blocks = n_in / 32;
            if !n_in.is_multiple_of(64) || !available() {
                return None;
            }
            let mut quants = Vec::with_capacity(rows * n_in);
            let mut scales = Vec::with_capacity(rows * blocks * 8);
            for block in input.chunks_exact(BLOCK) {
                // SAFETY: a plain conversion of an f16's bits.
                let d = unsafe {
                    super::sys::ggml_fp16_to_fp32(u16::from_le_bytes([block[0], block[1]]))
                };
                scales.extend_from_slice(&[d; 8]);
                quants.extend(block[2..].iter().map(|&q| q as i8));
            }
            Some(Inputs {
                rows,
                blocks,
                quants,
                scales,
            })
        }

        /// Scores weight rows `span` (q8_0 rows of `row_bytes` at `weight`) against every
        /// row, into `out` (row r's score of weight row v at `r * n_out + v`).
        ///
        /// # Safety
        /// The weight rows exist; `out` has room for every row's `n_out` scores, and no other
        /// thread writes these columns.
        pub(super) unsafe fn score(
            &self,
            weight: *const u8,
            row_bytes: usize,
            span: std::ops::Range<usize>,
            out: *mut f32,
            n_out: usize,
        ) {
            let mut first = 0;
            while first < self.rows {
                let group = (self.rows - first).min(4);
                // A group of fewer than 4 repeats its last row; those scores are not kept.
                let rows: [usize; 4] = std::array::from_fn(|i| first + i.min(group - 1));
                // SAFETY: as the caller promised; `available` was checked in `new`.
                unsafe { self.four(weight, row_bytes, span.clone(), rows, group, out, n_out) };
                first += group;
            }
        }

        /// Weight rows `span` (`self.blocks` q8_0 blocks each, `row_bytes` apart from
        /// `weight`) against hidden rows `rows`, the first `keep` of them written to `out`.
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,f16c,fma,avx2")]
        #[allow(clippy::too_many_arguments)]
        unsafe fn four(
            &self,
            weight: *const u8,
            row_bytes: usize,
            span: std::ops::Range<usize>,
            rows: [usize; 4],
            keep: usize,
            out: *mut f32,
            n_out: usize,
        ) {
            let n_in = self.blocks * 32;
            let quants: [*const i8; 4] =
                std::array::from_fn(|i| self.quants[rows[i] * n_in..].as_ptr());
            let scales: [*const f32; 4] =
                std::array::from_fn(|i| self.scales[rows[i] * self.blocks * 8..].as_ptr());
            let pairs = self.blocks / 2;
            // Lanes 0-7 take the first block's scale, 8-15 the second's.
            let pair = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
            let zero = _mm512_setzero_si512();
            for v in span {
                let (mut a0, mut a1, mut a2, mut a3) = (
                    _mm512_setzero_ps(),
                    _mm512_setzero_ps(),
                    _mm512_setzero_ps(),
                    _mm512_setzero_ps(),
                );
                let mut p0 = weight.wrapping_add(v * row_bytes);
                let [mut q0, mut q1, mut q2, mut q3] = quants;
                let [mut s0, mut s1, mut s2, mut s3] = scales;
                for _ in 0..pairs {
                    let p1 = p0.wrapping_add(BLOCK);
                    // SAFETY: two whole blocks of the row: scales, then quants.
                    let (w, d) = unsafe {
                        (
                            _mm512_inserti64x4::<1>(
                                _mm512_castsi256_si512(_mm256_maskz_loadu_epi8(
                                    ALL32,
                                    p0.wrapping_add(2).cast(),
                                )),
                                _mm256_maskz_loadu_epi8(ALL32, p1.wrapping_add(2).cast()),
                            ),
                            _mm_unpacklo_epi16(
                                _mm_maskz_loadu_epi16(1, p0.cast()),
                                _mm_maskz_loadu_epi16(1, p1.cast()),
                            ),
                        )
                    };
                    let magnitude = _mm512_abs_epi8(w);
                    let negative = _mm512_movepi8_mask(w);
                    let wd = _mm512_permutexvar_ps(pair, _mm512_castps128_ps512(_mm_cvtph_ps(d)));
                    // The input with the weight's sign (a negative weight negates it), times
                    // the weight's magnitude, 4 bytes summed a lane; then both blocks' scales.
                    macro_rules! add {
                        ($acc:ident, $q:ident, $s:ident) => {{
                            // SAFETY: the same two blocks of this hidden row, and their scales.
                            let (x, xd) = unsafe {
                                (
                                    _mm512_maskz_loadu_epi8(ALL64, $q),
                                    _mm512_maskz_loadu_ps(ALL16, $s),
                                )
                            };
                            let signed = _mm512_mask_sub_epi8(x, negative, zero, x);
                            let sums = _mm512_dpbusd_epi32(zero, magnitude, signed);
                            $acc = _mm512_fmadd_ps(
                                _mm512_cvtepi32_ps(sums),
                                _mm512_mul_ps(wd, xd),
                                $acc,
                            );
                            $q = $q.wrapping_add(64);
                            $s = $s.wrapping_add(16);
                        }};
                    }
                    add!(a0, q0, s0);
                    add!(a1, q1, s1);
                    add!(a2, q2, s2);
                    add!(a3, q3, s3);
                    p0 = p0.wrapping_add(2 * BLOCK);
                }
                let sums = [a0, a1, a2, a3];
                for (i, a) in sums.iter().enumerate().take(keep) {
                    // SAFETY: row rows[i]'s score of weight row v, in this thread's columns.
                    unsafe { *out.add(rows[i] * n_out + v) = _mm512_reduce_add_ps(*a) };
                }
            }
        }

        #[cfg(not(target_arch = "x86_64"))]
        #[allow(clippy::too_many_arguments)]
        unsafe fn four(
            &self,
            _: *const u8,
            _: usize,
            _: std::ops::Range<usize>,
            _: [usize; 4],
            _: usize,
            _: *mut f32,
            _: usize,
        ) {
            unreachable!("Inputs::new returns None off x86-64")
        }
    }

    fn available() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vl")
                && is_x86_feature_detected!("avx512vnni")
                && is_x86_feature_detected!("f16c")
                && is_x86_feature_detected!("fma")
        }
        #[cfg(not(target_arch = "x86_64"))]
        false
    }
}

fn bytemuck_f32(v: &[f32]) -> &[u8] {
    // SAFETY: any f32 is four plain bytes.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast(), std::mem::size_of_val(v)) }
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: threads write disjoint elements (their own ranges of weight rows).
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}
impl SendPtr {
    fn at(self, i: usize) -> *mut f32 {
        unsafe { self.0.add(i) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Weights of type `ty` made from `w` (row-major, `n_out` x `n_in`), and what they read
    /// back as.
    fn quantized(ty: sys::ggml_type, w: &[f32], n_in: usize) -> (Vec<u8>, Vec<f32>) {
        unsafe { sys::ggml_cpu_init() };
        let row = unsafe { sys::ggml_row_size(ty, n_in as i64) };
        let n_out = w.len() / n_in;
        let mut bytes = vec![0u8; row * n_out];
        let traits = unsafe { &*sys::ggml_get_type_traits_cpu(ty) };
        let back = unsafe { &*sys::ggml_get_type_traits(ty) };
        let mut read = vec![0f32; w.len()];
        for r in 0..n_out {
            let (src, dst) = (
                &w[r * n_in..(r + 1) * n_in],
                &mut bytes[r * row..(r + 1) * row],
            );
            unsafe {
                traits.from_float.unwrap()(src.as_ptr(), dst.as_mut_ptr().cast(), n_in as i64)
            };
            let to = &mut read[r * n_in..(r + 1) * n_in];
            match back.to_float {
                Some(f) => unsafe { f(dst.as_ptr().cast(), to.as_mut_ptr(), n_in as i64) },
                None => to.copy_from_slice(src), // f32 is itself
            }
        }
        (bytes, read)
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut x = seed.wrapping_mul(2654435761).max(1);
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn every_row_of_every_hidden_state_is_scored_as_the_dequantized_product() {
        let (n_in, n_out, rows) = (256, 1001, 3); // 1,001: the last tile and thread run short
        let w = values(n_in * n_out, 7);
        let hidden = values(n_in * rows, 11);
        for ty in [
            sys::GGML_TYPE_Q8_0,
            sys::GGML_TYPE_Q4_K,
            sys::GGML_TYPE_F16,
            sys::GGML_TYPE_F32,
        ] {
            let (bytes, read) = quantized(ty, &w, n_in);
            let p = unsafe { Projection::new(bytes.as_ptr(), ty, n_in, n_out) }.unwrap();
            for (threads, kernel) in [
                (1, Kernel::Fastest),
                (2, Kernel::Fastest),
                (5, Kernel::Fastest),
                (2, Kernel::LlamaCpp),
            ] {
                let mut out = vec![f32::NAN; rows * n_out];
                p.score_rows_with(&hidden, &mut out, threads, kernel);
                for r in 0..rows {
                    let h = &hidden[r * n_in..(r + 1) * n_in];
                    for v in 0..n_out {
                        let exact: f64 = read[v * n_in..(v + 1) * n_in]
                            .iter()
                            .zip(h)
                            .map(|(&a, &b)| a as f64 * b as f64)
                            .sum();
                        let got = out[r * n_out + v] as f64;
                        // The input is quantized too (to q8 for quantized weights): about 1%.
                        assert!(
                            (got - exact).abs() <= 0.02 * (1.0 + exact.abs()) + 0.15,
                            "type {ty}, {kernel:?}, {threads} threads, row {r}, output {v}: {got} vs {exact}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn the_q8_0_kernel_agrees_with_llama_cpps_for_every_group_of_hidden_states() {
        let (n_in, n_out) = (640, 777);
        let w = values(n_in * n_out, 3);
        let (bytes, _) = quantized(sys::GGML_TYPE_Q8_0, &w, n_in);
        let p =
            unsafe { Projection::new(bytes.as_ptr(), sys::GGML_TYPE_Q8_0, n_in, n_out) }.unwrap();
        if q8::Inputs::new(&[], 0, n_in).is_none() {
            eprintln!(
                "skipped: this CPU has no AVX-512 VNNI, so llama.cpp's kernel is the only one"
            );
            return;
        }
        // 1 to 6 rows: groups of 4, then what is left.
        for rows in 1..=6 {
            let hidden = values(n_in * rows, 100 + rows as u32);
            let (mut ours, mut theirs) =
                (vec![f32::NAN; rows * n_out], vec![f32::NAN; rows * n_out]);
            p.score_rows_with(&hidden, &mut ours, 2, Kernel::Fastest);
            p.score_rows_with(&hidden, &mut theirs, 2, Kernel::LlamaCpp);
            for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
                // The same integer products and scales, summed in another order.
                assert!(
                    (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                    "{rows} rows, score {i}: {a} vs {b}"
                );
            }
        }
    }
}
