//! The interleaved layout of Q8_0, Q4_0, Q4_1, Q5_0 and Q4_K: the same bytes as the GGUF blocks, regrouped
//! at load so that one vector lane holds one weight row.
//!
//! Rows go in groups of 16. For each group and block column, `data` holds the block header (scales,
//! minima; Q5_0's fifth bits; Q4_K's packed sub-block scales) two bytes at a time for rows 0..16, then the code bytes
//! with the rows interleaved: byte `c` of rows 0..16, byte `c + 1` of rows 0..16, and so on. A kernel loads 16 rows' codes of one column with
//! one load, applies 16 rows' scales with one multiply-add, and broadcasts each activation once for 16
//! rows: about half the instructions per weight of the row-by-row kernels, whose per-block scale
//! handling and horizontal sums dominate a one-row product. Memory is unchanged.

use super::BlockKind;

/// Rows per group: one 512-bit vector of f32.
pub(super) const GROUP: usize = 16;

/// Whether matrices of `kind` with `rows` rows are kept interleaved: only where the kernels in use
/// have an interleaved version (the others read an interleaved matrix a row at a time, gathered: slow).
pub(super) fn applies(kind: BlockKind, rows: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    let fits = crate::isa::isa() == crate::isa::Isa::Avx512;
    #[cfg(not(target_arch = "x86_64"))]
    let fits = false;
    fits && matches!(kind, BlockKind::Q8_0 | BlockKind::Q4_0 | BlockKind::Q4_1 | BlockKind::Q5_0 | BlockKind::Q4K)
        && rows.is_multiple_of(GROUP)
}

/// Bytes before the codes in a GGUF block: the f16 scale; Q4_1's f16 minimum; Q4_K's f16 scale and
/// minimum and twelve bytes of six-bit sub-block scales and minima.
const fn header(kind: BlockKind) -> usize {
    match kind {
        BlockKind::Q4_1 => 4,
        BlockKind::Q5_0 => 6,
        BlockKind::Q4K => 16,
        _ => 2,
    }
}

/// GGUF row-major blocks -> interleaved (`rows` a multiple of [`GROUP`]).
pub(super) fn pack(kind: BlockKind, rows: usize, cols: usize, data: &[u8]) -> Vec<u8> {
    let (bytes, hdr, blocks) = (kind.bytes(), header(kind), cols / kind.elems());
    let mut out = vec![0u8; data.len()];
    for g in 0..rows / GROUP {
        for b in 0..blocks {
            let dst = &mut out[(g * blocks + b) * GROUP * bytes..][..GROUP * bytes];
            for r in 0..GROUP {
                let src = &data[((g * GROUP + r) * blocks + b) * bytes..][..bytes];
                for f in 0..hdr / 2 {
                    dst[f * 2 * GROUP + r * 2..][..2].copy_from_slice(&src[f * 2..f * 2 + 2]);
                }
                for c in 0..bytes - hdr {
                    dst[hdr * GROUP + c * GROUP + r] = src[hdr + c];
                }
            }
        }
    }
    out
}

/// Row `r` of an interleaved matrix as GGUF blocks, into `buf`.
pub(super) fn unpack_row(kind: BlockKind, cols: usize, data: &[u8], r: usize, buf: &mut Vec<u8>) {
    let (bytes, hdr, blocks) = (kind.bytes(), header(kind), cols / kind.elems());
    let (g, lane) = (r / GROUP, r % GROUP);
    buf.clear();
    for b in 0..blocks {
        let src = &data[(g * blocks + b) * GROUP * bytes..][..GROUP * bytes];
        for f in 0..hdr / 2 {
            buf.extend_from_slice(&src[f * 2 * GROUP + lane * 2..][..2]);
        }
        buf.extend((0..bytes - hdr).map(|c| src[hdr * GROUP + c * GROUP + lane]));
    }
}

/// The AVX-512 kernel over interleaved groups.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
pub(super) mod avx512 {
    use super::super::{BlockKind, QuantMatrix, BLOCK};
    use super::GROUP;
    use std::arch::x86_64::*;

    /// Activation rows per instance: accumulators and block sums of 8 rows (16 registers) leave room
    /// for the codes.
    const MAX_M: usize = 8;

    /// `out[local * m + i]` for the weight rows `first_row..` (whole groups) and every activation row
    /// `i` of `x` (`[m, cols]`); `block_sums[i * blocks + b]` is the sum of row `i`'s 32 activations of
    /// block `b` (for the minima of Q4_1 and the offset of Q4_0's codes).
    #[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
    pub(in super::super) fn rows(
        q: &QuantMatrix,
        first_row: usize,
        out: &mut [f32],
        x: &[f32],
        block_sums: &[f32],
        m: usize,
    ) {
        let mut i0 = 0;
        while i0 < m {
            let h = MAX_M.min(m - i0);
            macro_rules! dispatch {
                ($($n:literal)*) => {
                    match (q.kind, h) {
                        $(
                            (BlockKind::Q8_0, $n) => pass::<0, $n>(q, first_row, out, x, block_sums, m, i0),
                            (BlockKind::Q4_0, $n) => pass::<1, $n>(q, first_row, out, x, block_sums, m, i0),
                            (BlockKind::Q4_1, $n) => pass::<2, $n>(q, first_row, out, x, block_sums, m, i0),
                            (BlockKind::Q5_0, $n) => pass::<3, $n>(q, first_row, out, x, block_sums, m, i0),
                            (BlockKind::Q4K, $n) => super::avx512_q4k::pass::<$n>(q, first_row, out, x, block_sums, m, i0),
                        )*
                        _ => unreachable!("only Q8_0, Q4_0, Q4_1, Q5_0 and Q4_K are interleaved, at most 8 rows a pass"),
                    }
                };
            }
            dispatch!(1 2 3 4 5 6 7 8);
            i0 += h;
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) fn load_f16x16(b: &[u8]) -> __m512 {
        let b: &[u8; 32] = b[..32].try_into().expect("16 halves");
        // SAFETY: `b` is 32 readable bytes.
        _mm512_cvtph_ps(unsafe { _mm256_loadu_si256(b.as_ptr().cast()) })
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) fn load_u8x16(b: &[u8]) -> __m128i {
        let b: &[u8; 16] = b[..16].try_into().expect("16 bytes");
        // SAFETY: `b` is 16 readable bytes.
        unsafe { _mm_loadu_si128(b.as_ptr().cast()) }
    }

    /// Activation rows `i0..i0 + H` against the task's groups; `K`: 0 Q8_0, 1 Q4_0, 2 Q4_1, 3 Q5_0.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
    fn pass<const K: u8, const H: usize>(
        q: &QuantMatrix,
        first_row: usize,
        out: &mut [f32],
        x: &[f32],
        block_sums: &[f32],
        m: usize,
        i0: usize,
    ) {
        let cols = q.cols;
        let blocks = cols / BLOCK;
        let gbytes = GROUP * q.kind.bytes();
        let hdr = match K {
            2 => 4,
            3 => 6,
            _ => 2,
        } * GROUP;
        let xs: [&[f32]; H] = std::array::from_fn(|i| &x[(i0 + i) * cols..][..cols]);
        let sums: [&[f32]; H] = std::array::from_fn(|i| &block_sums[(i0 + i) * blocks..][..blocks]);
        let low = _mm512_set1_epi32(0x0F);
        const { assert!(H <= MAX_M) };
        for g in 0..out.len() / m / GROUP {
            let group = first_row / GROUP + g;
            let mut acc = [_mm512_setzero_ps(); H];
            for b in 0..blocks {
                let blk = &q.data[(group * blocks + b) * gbytes..][..gbytes];
                let codes = &blk[hdr..];
                // Fixed-size views: the loops below index them with no bounds checks.
                let xb = |i: usize| -> &[f32; BLOCK] { xs[i][b * BLOCK..][..BLOCK].try_into().expect("32 columns") };
                // Two chains per row (four for one or two rows), so that several multiply-adds per
                // row are in flight: each waits about four cycles for its accumulator.
                let z = _mm512_setzero_ps();
                let (mut t0, mut t1, mut t2, mut t3) = ([z; H], [z; H], [z; H], [z; H]);
                let four = H <= 2;
                if K == 0 {
                    let codes: &[u8; BLOCK * GROUP] = codes[..BLOCK * GROUP].try_into().expect("Q8_0 codes");
                    let col = |k: usize| _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(load_u8x16(&codes[k * GROUP..])));
                    for k in (0..BLOCK).step_by(4) {
                        let (c0, c1, c2, c3) = (col(k), col(k + 1), col(k + 2), col(k + 3));
                        for i in 0..H {
                            let x = xb(i);
                            t0[i] = _mm512_fmadd_ps(c0, _mm512_set1_ps(x[k]), t0[i]);
                            t1[i] = _mm512_fmadd_ps(c1, _mm512_set1_ps(x[k + 1]), t1[i]);
                            let (a, b) = if four { (&mut t2[i], &mut t3[i]) } else { (&mut t0[i], &mut t1[i]) };
                            *a = _mm512_fmadd_ps(c2, _mm512_set1_ps(x[k + 2]), *a);
                            *b = _mm512_fmadd_ps(c3, _mm512_set1_ps(x[k + 3]), *b);
                        }
                    }
                } else {
                    // Byte j holds element j (low nibble) and element j + 16 (high nibble).
                    let codes: &[u8; BLOCK / 2 * GROUP] = codes[..BLOCK / 2 * GROUP].try_into().expect("4-bit codes");
                    // Q5_0: bit e of each row's 32-bit `qh` is the fifth bit of element e.
                    let qh = if K == 3 {
                        let half = |at: usize| {
                            let b: &[u8; 32] = blk[at..][..32].try_into().expect("16 halves");
                            // SAFETY: `b` is 32 readable bytes.
                            _mm512_cvtepu16_epi32(unsafe { _mm256_loadu_si256(b.as_ptr().cast()) })
                        };
                        _mm512_or_si512(half(2 * GROUP), _mm512_slli_epi32::<16>(half(4 * GROUP)))
                    } else {
                        _mm512_setzero_si512()
                    };
                    let sixteen = _mm512_set1_epi32(16);
                    let cols = |j: usize| {
                        let v = _mm512_cvtepu8_epi32(load_u8x16(&codes[j * GROUP..]));
                        let (mut lo, mut hi) = (_mm512_and_si512(v, low), _mm512_srli_epi32::<4>(v));
                        if K == 3 {
                            let bit_lo = _mm512_test_epi32_mask(qh, _mm512_set1_epi32(1 << j));
                            let bit_hi = _mm512_test_epi32_mask(qh, _mm512_set1_epi32(1 << (j + 16)));
                            lo = _mm512_mask_or_epi32(lo, bit_lo, lo, sixteen);
                            hi = _mm512_mask_or_epi32(hi, bit_hi, hi, sixteen);
                        }
                        (_mm512_cvtepi32_ps(lo), _mm512_cvtepi32_ps(hi))
                    };
                    for j in (0..BLOCK / 2).step_by(2) {
                        let ((l0, h0), (l1, h1)) = (cols(j), cols(j + 1));
                        for i in 0..H {
                            let x = xb(i);
                            t0[i] = _mm512_fmadd_ps(l0, _mm512_set1_ps(x[j]), t0[i]);
                            t1[i] = _mm512_fmadd_ps(h0, _mm512_set1_ps(x[j + 16]), t1[i]);
                            let (a, b) = if four { (&mut t2[i], &mut t3[i]) } else { (&mut t0[i], &mut t1[i]) };
                            *a = _mm512_fmadd_ps(l1, _mm512_set1_ps(x[j + 1]), *a);
                            *b = _mm512_fmadd_ps(h1, _mm512_set1_ps(x[j + 17]), *b);
                        }
                    }
                }
                let d = load_f16x16(blk);
                for i in 0..H {
                    let mut sum = _mm512_add_ps(t0[i], t1[i]);
                    if four {
                        sum = _mm512_add_ps(sum, _mm512_add_ps(t2[i], t3[i]));
                    }
                    acc[i] = _mm512_fmadd_ps(d, sum, acc[i]);
                }
                // Q4_1: + min * sum(x); Q4_0's and Q5_0's codes are offset by 8 and 16: - 8 d * sum(x).
                if K != 0 {
                    let offset = match K {
                        2 => load_f16x16(&blk[2 * GROUP..]),
                        3 => _mm512_mul_ps(d, _mm512_set1_ps(-16.0)),
                        _ => _mm512_mul_ps(d, _mm512_set1_ps(-8.0)),
                    };
                    for i in 0..H {
                        acc[i] = _mm512_fmadd_ps(offset, _mm512_set1_ps(sums[i][b]), acc[i]);
                    }
                }
            }
            store_group(&acc, out, g, m, i0);
        }
    }

    /// Group `g`'s sums (lane r: weight row `16 g + r`) into `out[local * m + i0 + i]`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) fn store_group(acc: &[__m512], out: &mut [f32], g: usize, m: usize, i0: usize) {
        let mut lanes = [0f32; GROUP];
        for (i, a) in acc.iter().enumerate() {
            // SAFETY: `lanes` is 16 writable floats.
            unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), *a) };
            for (r, v) in lanes.iter().enumerate() {
                out[(g * GROUP + r) * m + i0 + i] = *v;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx512_q4k {
    use super::super::{QuantMatrix, BLOCK};
    use super::avx512::{load_f16x16, load_u8x16, store_group};
    use super::GROUP;
    use std::arch::x86_64::*;

    /// Weights per super-block.
    const SUPER: usize = 256;

    /// Byte `k` (0..12) of the sub-block scales of each of the 16 rows, one per lane.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn scale_byte(blk: &[u8], k: usize) -> __m512i {
        let field: &[u8; 32] = blk[4 * GROUP + (k / 2) * 2 * GROUP..][..32].try_into().expect("16 pairs");
        // SAFETY: `field` is 32 readable bytes.
        let pairs = _mm512_cvtepu16_epi32(unsafe { _mm256_loadu_si256(field.as_ptr().cast()) });
        if k.is_multiple_of(2) {
            _mm512_and_si512(pairs, _mm512_set1_epi32(0xFF))
        } else {
            _mm512_srli_epi32::<8>(pairs)
        }
    }

    /// Sub-block `j`'s six-bit scale and minimum for the 16 rows (llama.cpp's `get_scale_min_k4`).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn scale_min(blk: &[u8], j: usize) -> (__m512, __m512) {
        let six = _mm512_set1_epi32(63);
        let (sc, mn) = if j < 4 {
            (_mm512_and_si512(scale_byte(blk, j), six), _mm512_and_si512(scale_byte(blk, j + 4), six))
        } else {
            let (a, lo, hi) = (scale_byte(blk, j + 4), scale_byte(blk, j - 4), scale_byte(blk, j));
            let top = |v: __m512i| _mm512_slli_epi32::<4>(_mm512_srli_epi32::<6>(v));
            (
                _mm512_or_si512(_mm512_and_si512(a, _mm512_set1_epi32(0x0F)), top(lo)),
                _mm512_or_si512(_mm512_srli_epi32::<4>(a), top(hi)),
            )
        };
        (_mm512_cvtepi32_ps(sc), _mm512_cvtepi32_ps(mn))
    }

    /// Q4_K: activation rows `i0..i0 + H` against the task's groups. Each 64-weight quarter of a
    /// super-block has two sub-blocks (the low and the high nibbles of 32 code bytes), each with its
    /// own six-bit scale and minimum: `w = d * sc * q - dmin * mn`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
    pub(in super::super) fn pass<const H: usize>(
        q: &QuantMatrix,
        first_row: usize,
        out: &mut [f32],
        x: &[f32],
        block_sums: &[f32],
        m: usize,
        i0: usize,
    ) {
        let cols = q.cols;
        let (supers, blocks) = (cols / SUPER, cols / BLOCK);
        let gbytes = GROUP * q.kind.bytes();
        let low = _mm512_set1_epi32(0x0F);
        let four = H <= 2;
        for g in 0..out.len() / m / GROUP {
            let group = first_row / GROUP + g;
            let mut acc = [_mm512_setzero_ps(); H];
            for sb in 0..supers {
                let blk = &q.data[(group * supers + sb) * gbytes..][..gbytes];
                let (d, dmin) = (load_f16x16(blk), load_f16x16(&blk[2 * GROUP..]));
                let codes: &[u8; 128 * GROUP] = blk[16 * GROUP..].try_into().expect("Q4_K codes");
                for quarter in 0..4 {
                    let base = sb * SUPER + 64 * quarter;
                    let z = _mm512_setzero_ps();
                    let (mut t0, mut t1, mut t2, mut t3) = ([z; H], [z; H], [z; H], [z; H]);
                    let cols = |l: usize| {
                        let v = _mm512_cvtepu8_epi32(load_u8x16(&codes[(32 * quarter + l) * GROUP..]));
                        (_mm512_cvtepi32_ps(_mm512_and_si512(v, low)), _mm512_cvtepi32_ps(_mm512_srli_epi32::<4>(v)))
                    };
                    for l in (0..32).step_by(2) {
                        let ((l0, h0), (l1, h1)) = (cols(l), cols(l + 1));
                        for i in 0..H {
                            let xr: &[f32; 64] =
                                x[(i0 + i) * q.cols + base..][..64].try_into().expect("64 activations");
                            t0[i] = _mm512_fmadd_ps(l0, _mm512_set1_ps(xr[l]), t0[i]);
                            t1[i] = _mm512_fmadd_ps(h0, _mm512_set1_ps(xr[l + 32]), t1[i]);
                            let (a, b) = if four { (&mut t2[i], &mut t3[i]) } else { (&mut t0[i], &mut t1[i]) };
                            *a = _mm512_fmadd_ps(l1, _mm512_set1_ps(xr[l + 1]), *a);
                            *b = _mm512_fmadd_ps(h1, _mm512_set1_ps(xr[l + 33]), *b);
                        }
                    }
                    let (sc_lo, mn_lo) = scale_min(blk, 2 * quarter);
                    let (sc_hi, mn_hi) = scale_min(blk, 2 * quarter + 1);
                    let (sc_lo, sc_hi) = (_mm512_mul_ps(d, sc_lo), _mm512_mul_ps(d, sc_hi));
                    let (mn_lo, mn_hi) = (_mm512_mul_ps(dmin, mn_lo), _mm512_mul_ps(dmin, mn_hi));
                    let b32 = sb * SUPER / BLOCK + 2 * quarter;
                    for i in 0..H {
                        let (mut lo, mut hi) = (t0[i], t1[i]);
                        if four {
                            lo = _mm512_add_ps(lo, t2[i]);
                            hi = _mm512_add_ps(hi, t3[i]);
                        }
                        let sums = &block_sums[(i0 + i) * blocks..][..blocks];
                        let a = _mm512_fmadd_ps(sc_lo, lo, acc[i]);
                        let a = _mm512_fmadd_ps(sc_hi, hi, a);
                        let a = _mm512_fnmadd_ps(mn_lo, _mm512_set1_ps(sums[b32]), a);
                        acc[i] = _mm512_fnmadd_ps(mn_hi, _mm512_set1_ps(sums[b32 + 1]), a);
                    }
                }
            }
            store_group(&acc, out, g, m, i0);
        }
    }
}
