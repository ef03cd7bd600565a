//! The output projection of a step that scores several sequences at once, done here
//! instead of by llama.cpp.
//!
//! Why: llama.cpp multiplies several hidden states by the vocabulary matrix with llamafile's
//! tinyBLAS, which walks four weight rows at a time in short interleaved runs. For Gemma 3's
//! q8_0 vocabulary matrix (262,144 x 640) that cost 1.9x the CPU time per row of llama.cpp's
//! one-row kernel (perf, one thread), so four streams decoded fewer tokens per CPU-second
//! than one. Here each tile of weight rows is read from memory once and scored against every
//! hidden state while it sits in L1, with llama.cpp's own one-row dot product and the input
//! quantized as llama.cpp quantizes it: a row comes out as a lone step would score it.
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
    if name_of(node) == b"result_norm" {
        // One row is llama.cpp's one-row kernel already: no need to stop there.
        let several = node.ne[1] >= 2;
        tap.norm = if several { t } else { std::ptr::null() };
        tap.norm_ready = false;
        return several;
    }
    // Only the node right after a computed `result_norm` is taken over.
    let norm = std::mem::replace(&mut tap.norm, std::ptr::null());
    if !std::mem::take(&mut tap.norm_ready) || name_of(node) != b"result_output" {
        return false;
    }
    // SAFETY: the graph's nodes and the model's weights outlive this call.
    let Some(projection) = (unsafe { Projection::of(node, norm) }) else {
        return false;
    };
    let rows = node.ne[1] as usize;
    unsafe { projection.score(&*norm, node.data.cast(), rows, tap.threads) };
    tap.rows.fetch_add(rows as u64, Ordering::Relaxed);
    tap.muted = Some((t, node.op));
    node.op = sys::GGML_OP_NONE;
    true
}

/// A host-resident weight matrix and llama.cpp's CPU kernels for it.
pub(crate) struct Projection {
    weight: *const u8,
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
            for threads in [1, 2, 5] {
                let mut out = vec![f32::NAN; rows * n_out];
                p.score_rows(&hidden, &mut out, threads);
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
                            "type {ty}, {threads} threads, row {r}, output {v}: {got} vs {exact}"
                        );
                    }
                }
            }
        }
    }
}
