//! Weight matrices kept as GGUF quantisation blocks (Q8_0, Q4_0, Q4_1, Q5_0, Q4_K, Q6_K), multiplied by f32 activations
//! without expanding the weights in memory. Decoding reads every weight once per token, so bytes per
//! weight set the speed: each block is decoded once per batch and applied to every row of it.
//!
//! Activations stay f32 (llama.cpp quantises them to 8 bits; we keep the engine's results equal to
//! an f32 computation on the dequantised weights, which the reference tests check). Batches of more
//! than [`CHUNKED_BATCH`] rows (long prefills) dequantise the matrix and use candle's f32 matmul instead.

use crate::error::Result;
use crate::isa::{isa, Isa};
use crate::EngineError;
use candle_core::{Device, Tensor};
use half::f16;
use rayon::prelude::*;

mod interleaved;

/// Rows the block kernel takes in one pass.
pub(crate) const SMALL_BATCH: usize = 16;
/// Up to this many rows, passes of the block kernel; above, dequantise and use a dense matmul.
const CHUNKED_BATCH: usize = 48;
/// Columns per lane group; every block holds a whole number of them.
const BLOCK: usize = 32;
/// The largest block (K-quant super-blocks).
const MAX_BLOCK: usize = 256;
/// Output rows handled by one parallel task.
const ROWS_PER_TASK: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BlockKind {
    Q4_0,
    Q4_1,
    Q5_0,
    Q8_0,
    Q4K,
    Q6K,
}

impl BlockKind {
    pub(crate) fn from_ggml(dtype: candle_core::quantized::GgmlDType) -> Option<Self> {
        use candle_core::quantized::GgmlDType as G;
        match dtype {
            G::Q4_0 => Some(BlockKind::Q4_0),
            G::Q4_1 => Some(BlockKind::Q4_1),
            G::Q5_0 => Some(BlockKind::Q5_0),
            G::Q8_0 => Some(BlockKind::Q8_0),
            G::Q4K => Some(BlockKind::Q4K),
            G::Q6K => Some(BlockKind::Q6K),
            _ => None,
        }
    }

    /// Bytes of one block.
    const fn bytes(self) -> usize {
        match self {
            BlockKind::Q4_0 => 18,
            BlockKind::Q4_1 => 20,
            BlockKind::Q5_0 => 22,
            BlockKind::Q8_0 => 34,
            BlockKind::Q4K => 144,
            BlockKind::Q6K => 210,
        }
    }

    /// Weights in one block.
    const fn elems(self) -> usize {
        match self {
            BlockKind::Q4K | BlockKind::Q6K => 256,
            _ => 32,
        }
    }
}

/// A `[rows, cols]` weight matrix (rows = outputs) as its GGUF blocks: row after row, or for the
/// formats and shapes of [`interleaved::applies`], 16 rows interleaved.
#[derive(Debug, Clone)]
pub(crate) struct QuantMatrix {
    kind: BlockKind,
    rows: usize,
    cols: usize,
    data: Vec<u8>,
    interleaved: bool,
}

#[inline(always)]
fn half_at(b: &[u8], at: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[at], b[at + 1]])).to_f32()
}

/// Q4_K packs 8 six-bit (scale, min) pairs into 12 bytes (llama.cpp's `get_scale_min_k4`).
#[inline(always)]
fn scale_min_k4(j: usize, q: &[u8]) -> (f32, f32) {
    if j < 4 {
        ((q[j] & 63) as f32, (q[j + 4] & 63) as f32)
    } else {
        (((q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4)) as f32, ((q[j + 4] >> 4) | ((q[j] >> 6) << 4)) as f32)
    }
}

/// Decodes one block into `kind.elems()` weights, as llama.cpp's `dequantize_row_*` does.
#[inline(always)]
fn decode_block(kind: BlockKind, b: &[u8], out: &mut [f32]) {
    match kind {
        BlockKind::Q8_0 => {
            let d = half_at(b, 0);
            for (o, &q) in out[..32].iter_mut().zip(&b[2..34]) {
                *o = d * (q as i8) as f32;
            }
        }
        BlockKind::Q4_0 => {
            let d = half_at(b, 0);
            let qs = &b[2..18];
            for j in 0..16 {
                out[j] = d * ((qs[j] & 0x0F) as i32 - 8) as f32;
                out[j + 16] = d * ((qs[j] >> 4) as i32 - 8) as f32;
            }
        }
        BlockKind::Q4_1 => {
            let d = half_at(b, 0);
            let m = half_at(b, 2);
            let qs = &b[4..20];
            for j in 0..16 {
                out[j] = d * (qs[j] & 0x0F) as f32 + m;
                out[j + 16] = d * (qs[j] >> 4) as f32 + m;
            }
        }
        BlockKind::Q5_0 => {
            let d = half_at(b, 0);
            let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
            let qs = &b[6..22];
            for j in 0..16 {
                let h0 = ((qh >> j) << 4) & 0x10;
                let h1 = (qh >> (j + 12)) & 0x10;
                out[j] = d * (((qs[j] & 0x0F) as u32 | h0) as i32 - 16) as f32;
                out[j + 16] = d * (((qs[j] >> 4) as u32 | h1) as i32 - 16) as f32;
            }
        }
        BlockKind::Q4K => {
            let d = half_at(b, 0);
            let dmin = half_at(b, 2);
            let scales = &b[4..16];
            let qs = &b[16..144];
            for group in 0..4 {
                let (s1, m1) = scale_min_k4(2 * group, scales);
                let (s2, m2) = scale_min_k4(2 * group + 1, scales);
                let (d1, min1, d2, min2) = (d * s1, dmin * m1, d * s2, dmin * m2);
                let q = &qs[32 * group..32 * group + 32];
                let o = &mut out[64 * group..64 * group + 64];
                for l in 0..32 {
                    o[l] = d1 * (q[l] & 0x0F) as f32 - min1;
                    o[l + 32] = d2 * (q[l] >> 4) as f32 - min2;
                }
            }
        }
        BlockKind::Q6K => {
            let ql_all = &b[0..128];
            let qh_all = &b[128..192];
            let sc_all = &b[192..208];
            let d = half_at(b, 208);
            for half in 0..2 {
                let (ql, qh) = (&ql_all[64 * half..], &qh_all[32 * half..]);
                let sc = &sc_all[8 * half..];
                let o = &mut out[128 * half..128 * half + 128];
                for l in 0..32 {
                    let is = l / 16;
                    let q1 = ((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) as i32 - 32;
                    let q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                    let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                    let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                    o[l] = d * (sc[is] as i8) as f32 * q1 as f32;
                    o[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
                    o[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
                    o[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
                }
            }
        }
    }
}

/// `out[local * m + i]`: the dot products of weight rows `first_row..` with every x row `i`.
/// Written plainly so that the compiler vectorises it for the instruction set of its caller: each x row
/// accumulates in 32 independent lanes (a float sum in one register would be sequential), reduced once
/// per output.
#[inline(always)]
fn rows_kernel(q: &QuantMatrix, first_row: usize, out: &mut [f32], x: &[f32], m: usize) {
    let elems = q.kind.elems();
    let block_bytes = q.kind.bytes();
    let row_bytes = q.cols / elems * block_bytes;
    let n = out.len() / m;
    let mut w = [0f32; MAX_BLOCK];
    let mut lanes = [[0f32; BLOCK]; SMALL_BATCH];
    let mut buf = Vec::new();
    for local in 0..n {
        let row = q.row(first_row + local, &mut buf);
        debug_assert_eq!(row.len(), row_bytes);
        for l in lanes[..m].iter_mut() {
            *l = [0.0; BLOCK];
        }
        for (b, block) in row.chunks_exact(block_bytes).enumerate() {
            decode_block(q.kind, block, &mut w[..elems]);
            for (i, l) in lanes[..m].iter_mut().enumerate() {
                let xb = &x[i * q.cols + b * elems..][..elems];
                for (wc, xc) in w[..elems].chunks_exact(BLOCK).zip(xb.chunks_exact(BLOCK)) {
                    let wc: &[f32; BLOCK] = wc.try_into().expect("32 weights");
                    let xc: &[f32; BLOCK] = xc.try_into().expect("32 columns");
                    for k in 0..BLOCK {
                        l[k] += wc[k] * xc[k];
                    }
                }
            }
        }
        for (o, l) in out[local * m..(local + 1) * m].iter_mut().zip(&lanes[..m]) {
            *o = l.iter().sum();
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
fn rows_kernel_avx512(q: &QuantMatrix, first_row: usize, out: &mut [f32], x: &XRows<'_>, m: usize) {
    if q.interleaved {
        return interleaved::avx512::rows(q, first_row, out, x.by_row, &x.block_sums, m);
    }
    match q.kind {
        BlockKind::Q4_0 | BlockKind::Q4_1 | BlockKind::Q5_0 | BlockKind::Q8_0 => {
            avx512::rows_32(q, first_row, out, &x.by_block, m)
        }
        BlockKind::Q4K | BlockKind::Q6K => avx512::rows_256(q, first_row, out, x.by_row, m),
    }
}

/// The activations of one pass in two layouts: row by row, and block-major (the 32 columns of block `b`
/// of every row together, `[blocks, m, 32]`), so that the AVX-512 kernel's walk over the rows for one
/// weight block reads one contiguous run instead of `m` lines far apart.
struct XRows<'a> {
    by_row: &'a [f32],
    by_block: std::borrow::Cow<'a, [f32]>,
    /// `[m, cols / 32]`: each row's sum over each 32-column block (the interleaved kernel's minima).
    block_sums: Vec<f32>,
}

impl<'a> XRows<'a> {
    /// `by_block`: whether a row-by-row matrix will read them (interleaved ones do not).
    fn new(x: &'a [f32], m: usize, isa: Isa, by_block: bool) -> Self {
        let by_block = match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 if m > 1 && by_block => {
                let cols = x.len() / m;
                let mut v = Vec::with_capacity(x.len());
                for b in 0..cols / BLOCK {
                    for i in 0..m {
                        v.extend_from_slice(&x[i * cols + b * BLOCK..][..BLOCK]);
                    }
                }
                std::borrow::Cow::Owned(v)
            }
            // One row is already block-major.
            _ => std::borrow::Cow::Borrowed(x),
        };
        let block_sums = match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => x.chunks_exact(BLOCK).map(|c| c.iter().sum()).collect(),
            _ => Vec::new(),
        };
        XRows { by_row: x, by_block, block_sums }
    }
}

/// Hand-written AVX-512 for the 32-weight block formats: a block is decoded straight into two
/// registers and multiplied into per-row accumulators, with no trip through memory.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx512 {
    use super::{BlockKind, QuantMatrix, BLOCK, SMALL_BATCH};
    use std::arch::x86_64::*;

    /// The f16 at `b[at..at + 2]`, converted by the F16C instruction (the `half` crate checks the
    /// CPU's features on every call).
    #[inline]
    #[target_feature(enable = "avx512f,f16c")]
    pub(super) fn half_at(b: &[u8], at: usize) -> f32 {
        let bits = u16::from_le_bytes([b[at], b[at + 1]]);
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
    }

    /// Block formats as const parameters: each kernel instance is compiled for one format, so the
    /// block decoder is small enough to be inlined into its loop.
    const Q8_0: u8 = 0;
    const Q4_0: u8 = 1;
    const Q4_1: u8 = 2;
    const Q5_0: u8 = 3;

    const fn kind_of(k: u8) -> BlockKind {
        match k {
            Q8_0 => BlockKind::Q8_0,
            Q4_0 => BlockKind::Q4_0,
            Q4_1 => BlockKind::Q4_1,
            _ => BlockKind::Q5_0,
        }
    }

    /// The 32 weights of one block as two vectors of 16.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,fma,f16c")]
    fn decode<const K: u8>(b: &[u8]) -> (__m512, __m512) {
        let kind = const { kind_of(K) };
        let d = _mm512_set1_ps(half_at(b, 0));
        match kind {
            BlockKind::Q8_0 => {
                let q: &[u8; 32] = b[2..34].try_into().expect("Q8_0 block");
                // SAFETY: `q` is 32 readable bytes; each load reads 16 of them.
                let (q0, q1) =
                    unsafe { (_mm_loadu_si128(q.as_ptr().cast()), _mm_loadu_si128(q.as_ptr().add(16).cast())) };
                (
                    _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q0))),
                    _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q1))),
                )
            }
            BlockKind::Q4_0 => {
                let q: &[u8; 16] = b[2..18].try_into().expect("Q4_0 block");
                // SAFETY: `q` is 16 readable bytes.
                let v = _mm512_cvtepu8_epi32(unsafe { _mm_loadu_si128(q.as_ptr().cast()) });
                let eight = _mm512_set1_epi32(8);
                let lo = _mm512_sub_epi32(_mm512_and_si512(v, _mm512_set1_epi32(0x0F)), eight);
                let hi = _mm512_sub_epi32(_mm512_srli_epi32::<4>(v), eight);
                (_mm512_mul_ps(d, _mm512_cvtepi32_ps(lo)), _mm512_mul_ps(d, _mm512_cvtepi32_ps(hi)))
            }
            BlockKind::Q5_0 => {
                // Low nibbles as Q4_0; the fifth bit of element j is bit j of `qh`.
                let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
                let q: &[u8; 16] = b[6..22].try_into().expect("Q5_0 block");
                // SAFETY: `q` is 16 readable bytes.
                let v = _mm512_cvtepu8_epi32(unsafe { _mm_loadu_si128(q.as_ptr().cast()) });
                let sixteen = _mm512_set1_epi32(16);
                let lo = _mm512_or_si512(
                    _mm512_and_si512(v, _mm512_set1_epi32(0x0F)),
                    _mm512_maskz_mov_epi32(qh as u16, sixteen),
                );
                let hi = _mm512_or_si512(_mm512_srli_epi32::<4>(v), _mm512_maskz_mov_epi32((qh >> 16) as u16, sixteen));
                (
                    _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_sub_epi32(lo, sixteen))),
                    _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_sub_epi32(hi, sixteen))),
                )
            }
            BlockKind::Q4_1 => {
                let m = _mm512_set1_ps(half_at(b, 2));
                let q: &[u8; 16] = b[4..20].try_into().expect("Q4_1 block");
                // SAFETY: `q` is 16 readable bytes.
                let v = _mm512_cvtepu8_epi32(unsafe { _mm_loadu_si128(q.as_ptr().cast()) });
                let lo = _mm512_and_si512(v, _mm512_set1_epi32(0x0F));
                let hi = _mm512_srli_epi32::<4>(v);
                (_mm512_fmadd_ps(_mm512_cvtepi32_ps(lo), d, m), _mm512_fmadd_ps(_mm512_cvtepi32_ps(hi), d, m))
            }
            _ => unreachable!("only 32-weight block formats come here"),
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    fn load16(x: &[f32]) -> __m512 {
        let x: &[f32; 16] = x[..16].try_into().expect("16 floats");
        // SAFETY: `x` is 16 readable floats.
        unsafe { _mm512_loadu_ps(x.as_ptr()) }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
    pub(super) fn rows_32(q: &QuantMatrix, first_row: usize, out: &mut [f32], x: &[f32], m: usize) {
        match q.kind {
            BlockKind::Q8_0 => rows_32_k::<Q8_0>(q, first_row, out, x, m),
            BlockKind::Q4_0 => rows_32_k::<Q4_0>(q, first_row, out, x, m),
            BlockKind::Q4_1 => rows_32_k::<Q4_1>(q, first_row, out, x, m),
            BlockKind::Q5_0 => rows_32_k::<Q5_0>(q, first_row, out, x, m),
            _ => unreachable!("only 32-weight block formats come here"),
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
    fn rows_32_k<const K: u8>(q: &QuantMatrix, first_row: usize, out: &mut [f32], x: &[f32], m: usize) {
        // One instance per batch size, so that the accumulators live in registers (with a runtime
        // count they go through the stack, and the store of every partial sum is the bottleneck).
        // From 2 rows on, two weight rows share every load of the activations (up to 8 activation
        // rows at a time: 16 accumulators).
        macro_rules! dispatch {
            ($($n:literal)*; $($big:literal => $rest:literal)*) => {
                match m {
                    1 => one_row::<K>(q, first_row, out, x),
                    $($n => paired::<K, $n>(q, first_row, out, x, m, 0),)*
                    $($big => {
                        paired::<K, 8>(q, first_row, out, x, m, 0);
                        paired::<K, $rest>(q, first_row, out, x, m, 8);
                    })*
                    _ => unreachable!("at most SMALL_BATCH rows per pass"),
                }
            };
        }
        const _: () = assert!(SMALL_BATCH == 16);
        dispatch!(2 3 4 5 6 7 8; 9 => 1 10 => 2 11 => 3 12 => 4 13 => 5 14 => 6 15 => 7 16 => 8)
    }

    /// Activation rows `i0..i0 + H` of `m` (block-major) against every weight row of the task, two
    /// weight rows at a time. Every (weight row, activation row) sum runs in the same order whether
    /// its weight row is paired or not and whichever half of the batch it is in.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
    fn paired<const K: u8, const H: usize>(
        q: &QuantMatrix,
        first_row: usize,
        out: &mut [f32],
        x: &[f32],
        m: usize,
        i0: usize,
    ) {
        let bytes = q.kind.bytes();
        let row_bytes = q.cols / BLOCK * bytes;
        let n = out.len() / m;
        let mut local = 0;
        while local + 1 < n {
            let r0 = &q.data[(first_row + local) * row_bytes..][..row_bytes];
            let r1 = &q.data[(first_row + local + 1) * row_bytes..][..row_bytes];
            let mut a0 = [_mm512_setzero_ps(); H];
            let mut a1 = [_mm512_setzero_ps(); H];
            for (b, (b0, b1)) in r0.chunks_exact(bytes).zip(r1.chunks_exact(bytes)).enumerate() {
                let (w00, w01) = decode::<K>(b0);
                let (w10, w11) = decode::<K>(b1);
                let xs = &x[(b * m + i0) * BLOCK..][..H * BLOCK];
                for ((c0, c1), xb) in a0.iter_mut().zip(a1.iter_mut()).zip(xs.chunks_exact(BLOCK)) {
                    let (x0, x1) = (load16(xb), load16(&xb[16..]));
                    *c0 = _mm512_fmadd_ps(w01, x1, _mm512_fmadd_ps(w00, x0, *c0));
                    *c1 = _mm512_fmadd_ps(w11, x1, _mm512_fmadd_ps(w10, x0, *c1));
                }
            }
            for i in 0..H {
                out[local * m + i0 + i] = _mm512_reduce_add_ps(a0[i]);
                out[(local + 1) * m + i0 + i] = _mm512_reduce_add_ps(a1[i]);
            }
            local += 2;
        }
        if local < n {
            let row = &q.data[(first_row + local) * row_bytes..][..row_bytes];
            let mut acc = [_mm512_setzero_ps(); H];
            for (b, block) in row.chunks_exact(bytes).enumerate() {
                let (w0, w1) = decode::<K>(block);
                let xs = &x[(b * m + i0) * BLOCK..][..H * BLOCK];
                for (a, xb) in acc.iter_mut().zip(xs.chunks_exact(BLOCK)) {
                    *a = _mm512_fmadd_ps(w1, load16(&xb[16..]), _mm512_fmadd_ps(w0, load16(xb), *a));
                }
            }
            for i in 0..H {
                out[local * m + i0 + i] = _mm512_reduce_add_ps(acc[i]);
            }
        }
    }

    /// The K-quant formats (256-weight super-blocks): each super-block is decoded once into a buffer
    /// and multiplied into every row's accumulator with full-width FMAs.
    #[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
    pub(super) fn rows_256(q: &QuantMatrix, first_row: usize, out: &mut [f32], x: &[f32], m: usize) {
        macro_rules! dispatch {
            ($($n:literal)*) => {
                match m {
                    $($n => rows_256_m::<$n>(q, first_row, out, x),)*
                    _ => unreachable!("at most SMALL_BATCH rows per pass"),
                }
            };
        }
        dispatch!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16)
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
    fn rows_256_m<const M: usize>(q: &QuantMatrix, first_row: usize, out: &mut [f32], x: &[f32]) {
        const E: usize = 256;
        let bytes = q.kind.bytes();
        let row_bytes = q.cols / E * bytes;
        let n = out.len() / M;
        let mut w = [0f32; E];
        for local in 0..n {
            let row = &q.data[(first_row + local) * row_bytes..][..row_bytes];
            let mut acc = [_mm512_setzero_ps(); M];
            for (b, block) in row.chunks_exact(bytes).enumerate() {
                super::decode_block(q.kind, block, &mut w);
                for (i, a) in acc.iter_mut().enumerate() {
                    let xb = &x[i * q.cols + b * E..][..E];
                    let mut s = *a;
                    for c in (0..E).step_by(16) {
                        s = _mm512_fmadd_ps(load16(&w[c..]), load16(&xb[c..]), s);
                    }
                    *a = s;
                }
            }
            for (o, a) in out[local * M..(local + 1) * M].iter_mut().zip(&acc) {
                *o = _mm512_reduce_add_ps(*a);
            }
        }
    }

    /// One activation row: two accumulators, so that consecutive blocks do not wait on each other.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
    fn one_row<const K: u8>(q: &QuantMatrix, first_row: usize, out: &mut [f32], x: &[f32]) {
        let bytes = q.kind.bytes();
        let row_bytes = q.cols / BLOCK * bytes;
        for (local, o) in out.iter_mut().enumerate() {
            let row = &q.data[(first_row + local) * row_bytes..][..row_bytes];
            let (mut a0, mut a1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
            for (b, block) in row.chunks_exact(bytes).enumerate() {
                let (w0, w1) = decode::<K>(block);
                let xb = &x[b * BLOCK..][..BLOCK];
                a0 = _mm512_fmadd_ps(w0, load16(xb), a0);
                a1 = _mm512_fmadd_ps(w1, load16(&xb[16..]), a1);
            }
            *o = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
fn rows_kernel_avx2(q: &QuantMatrix, first_row: usize, out: &mut [f32], x: &[f32], m: usize) {
    rows_kernel(q, first_row, out, x, m)
}

impl QuantMatrix {
    pub(crate) fn new(kind: BlockKind, rows: usize, cols: usize, data: Vec<u8>) -> Result<Self> {
        if !cols.is_multiple_of(kind.elems()) || data.len() != rows * cols / kind.elems() * kind.bytes() {
            return Err(EngineError::Malformed(format!(
                "{kind:?} matrix [{rows}, {cols}] needs {} bytes, has {}",
                rows * (cols / kind.elems()) * kind.bytes(),
                data.len()
            )));
        }
        if interleaved::applies(kind, rows) {
            let data = interleaved::pack(kind, rows, cols, &data);
            return Ok(QuantMatrix { kind, rows, cols, data, interleaved: true });
        }
        Ok(QuantMatrix { kind, rows, cols, data, interleaved: false })
    }

    /// Row `r` as GGUF blocks: borrowed, or for an interleaved matrix gathered into `buf`.
    fn row<'a>(&'a self, r: usize, buf: &'a mut Vec<u8>) -> &'a [u8] {
        if self.interleaved {
            interleaved::unpack_row(self.kind, self.cols, &self.data, r, buf);
            buf
        } else {
            let rb = self.row_bytes();
            &self.data[r * rb..(r + 1) * rb]
        }
    }

    pub(crate) fn dims(&self) -> [usize; 2] {
        [self.rows, self.cols]
    }

    fn row_bytes(&self) -> usize {
        self.cols / self.kind.elems() * self.kind.bytes()
    }

    /// The matrix with row `r` taken from row `source(r)`: blocks run along columns, so rows move whole.
    pub(crate) fn permute_rows(&self, source: impl Fn(usize) -> usize) -> Self {
        let mut data = Vec::with_capacity(self.data.len());
        let mut buf = Vec::new();
        for r in 0..self.rows {
            data.extend_from_slice(self.row(source(r), &mut buf));
        }
        QuantMatrix::new(self.kind, self.rows, self.cols, data).expect("the same shape and byte count")
    }

    fn dequantize_rows_into(&self, rows: impl Iterator<Item = usize>, out: &mut Vec<f32>) {
        let elems = self.kind.elems();
        let mut w = [0f32; MAX_BLOCK];
        let mut buf = Vec::new();
        for r in rows {
            for block in self.row(r, &mut buf).chunks_exact(self.kind.bytes()) {
                decode_block(self.kind, block, &mut w[..elems]);
                out.extend_from_slice(&w[..elems]);
            }
        }
    }

    /// Rows `ids` as f32, `[ids.len() * cols]` (embedding lookup).
    pub(crate) fn gather_rows(&self, ids: &[u32]) -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(ids.len() * self.cols);
        if let Some(bad) = ids.iter().find(|&&i| i as usize >= self.rows) {
            return Err(EngineError::Tensor(format!("token id {bad} is outside the vocabulary of {}", self.rows)));
        }
        self.dequantize_rows_into(ids.iter().map(|&i| i as usize), &mut out);
        Ok(out)
    }

    /// The whole matrix in f32, `[rows, cols]`.
    pub(crate) fn dequantize(&self) -> Result<Tensor> {
        let mut out = Vec::with_capacity(self.rows * self.cols);
        self.dequantize_rows_into(0..self.rows, &mut out);
        Ok(Tensor::from_vec(out, (self.rows, self.cols), &Device::Cpu)?)
    }

    /// `x W^T` for `x`: `m` rows of `cols` -> `m` rows of `rows`.
    pub(crate) fn matmul_rows(&self, x: &[f32], m: usize) -> Result<Vec<f32>> {
        if x.len() != m * self.cols {
            return Err(EngineError::Tensor(format!("{} inputs for {m} rows of {} columns", x.len(), self.cols)));
        }
        self.matmul_f32(x, m)
    }

    /// `x W^T` on f32 activations as given.
    fn matmul_f32(&self, x: &[f32], m: usize) -> Result<Vec<f32>> {
        self.matmul_on(isa(), x, m)
    }

    /// `x W^T` with the kernels of `isa` (which the CPU must have: see [`Isa::available`]).
    pub(crate) fn matmul_on(&self, isa: Isa, x: &[f32], m: usize) -> Result<Vec<f32>> {
        #[cfg(target_arch = "x86_64")]
        if self.interleaved && isa == Isa::Avx512 {
            // Any number of rows in one pass: each task keeps its weight rows in L1 while the
            // activations stream past 8 rows at a time, so a prefill never expands the matrix.
            let mut y = vec![0f32; m * self.rows];
            self.pass(isa, x, m, &mut y);
            return Ok(y);
        }
        if m > CHUNKED_BATCH {
            let xt = Tensor::from_slice(x, (m, self.cols), &Device::Cpu)?;
            return Ok(xt.matmul(&self.dequantize()?.t()?)?.flatten_all()?.to_vec1()?);
        }
        let mut y = vec![0f32; m * self.rows];
        // Above one pass, a short prompt goes through several: still cheaper than expanding the matrix.
        for start in (0..m).step_by(SMALL_BATCH) {
            let n = SMALL_BATCH.min(m - start);
            self.pass(
                isa,
                &x[start * self.cols..(start + n) * self.cols],
                n,
                &mut y[start * self.rows..(start + n) * self.rows],
            );
        }
        Ok(y)
    }

    /// `x W^T` for each of several matrices over the same `m <= SMALL_BATCH` rows (Q, K and V; gate
    /// and up): one parallel loop over the rows of all of them, so a decode step waits for the
    /// threads once per group instead of once per matrix.
    pub(crate) fn matmul_group(mats: &[&QuantMatrix], x: &[f32], m: usize) -> Result<Vec<Vec<f32>>> {
        if m > SMALL_BATCH || mats.iter().any(|q| q.cols * m != x.len()) {
            return mats.iter().map(|q| q.matmul_rows(x, m)).collect();
        }
        let mut transposed: Vec<Vec<f32>> = mats.iter().map(|q| vec![0f32; q.rows * m]).collect();
        let mut tasks: Vec<(usize, usize, &mut [f32])> = Vec::new();
        for (mi, buf) in transposed.iter_mut().enumerate() {
            for (task, out) in buf.chunks_mut(ROWS_PER_TASK * m).enumerate() {
                tasks.push((mi, task * ROWS_PER_TASK, out));
            }
        }
        let isa = isa();
        let xs = XRows::new(x, m, isa, mats.iter().any(|q| !q.interleaved));
        tasks.into_par_iter().for_each(|(mi, first, out)| mats[mi].kernel(isa, first, out, &xs, m));
        Ok(mats
            .iter()
            .zip(&transposed)
            .map(|(q, t)| {
                let mut y = vec![0f32; m * q.rows];
                for r in 0..q.rows {
                    for i in 0..m {
                        y[i * q.rows + r] = t[r * m + i];
                    }
                }
                y
            })
            .collect())
    }

    /// The block kernel for the instruction set `isa` (see [`rows_kernel`]).
    fn kernel(&self, isa: Isa, first: usize, out: &mut [f32], xs: &XRows<'_>, m: usize) {
        match isa {
            // SAFETY: an `Isa` other than `Portable` is only ever chosen from `Isa::available()`,
            // which checked at run time that the CPU has these features.
            #[cfg(target_arch = "x86_64")]
            #[allow(unsafe_code)]
            Isa::Avx512 => unsafe { rows_kernel_avx512(self, first, out, xs, m) },
            #[cfg(target_arch = "x86_64")]
            #[allow(unsafe_code)]
            Isa::Avx2 => unsafe { rows_kernel_avx2(self, first, out, xs.by_row, m) },
            Isa::Portable => rows_kernel(self, first, out, xs.by_row, m),
        }
    }

    /// One pass of the block kernel over every weight row, for `m <= SMALL_BATCH` rows of `x`.
    fn pass(&self, isa: Isa, xs: &[f32], m: usize, y: &mut [f32]) {
        let xs = XRows::new(xs, m, isa, !self.interleaved);
        self.pass_with(m, y, |first, out| self.kernel(isa, first, out, &xs, m));
    }

    /// Runs `kernel(first_row, out)` over all weight rows in parallel tasks (`out`: `[rows, m]`), then
    /// transposes into `y`: `[m, rows]`.
    fn pass_with(&self, m: usize, y: &mut [f32], kernel: impl Fn(usize, &mut [f32]) + Sync) {
        let mut transposed = vec![0f32; self.rows * m];
        transposed
            .par_chunks_mut(ROWS_PER_TASK * m)
            .enumerate()
            .for_each(|(task, out)| kernel(task * ROWS_PER_TASK, out));
        for r in 0..self.rows {
            for i in 0..m {
                y[i * self.rows + r] = transposed[r * m + i];
            }
        }
    }
}
