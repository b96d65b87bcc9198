//! Row-wise operations of the decoder on plain `f32` rows: RMS norm, RoPE, SiLU gating, and an `exp`
//! the compiler can vectorise. Decoding runs a few dozen of these per layer on a handful of rows; as
//! tensor ops each would cost an allocation and a dispatch, which on a small model weighs more than
//! the arithmetic.

/// `x / rms(x) * weight`, row by row, in place.
pub(crate) fn rms_norm(x: &[f32], weight: &[f32], eps: f64, out: &mut Vec<f32>) {
    let h = weight.len();
    out.clear();
    out.reserve(x.len());
    for row in x.chunks_exact(h) {
        let ms = row.iter().map(|v| (*v as f64) * (*v as f64)).sum::<f64>() / h as f64;
        let inv = (1.0 / (ms + eps).sqrt()) as f32;
        out.extend(row.iter().zip(weight).map(|(v, w)| v * inv * w));
    }
}

/// Rotate-half RoPE in place on `x`: `[tokens, heads, head_dim]`, with `cos`/`sin` tables
/// `[positions, head_dim / 2]` and the position of each token.
pub(crate) fn rope(x: &mut [f32], heads: usize, head_dim: usize, positions: &[u32], cos: &[f32], sin: &[f32]) {
    let half = head_dim / 2;
    for (row, &pos) in x.chunks_exact_mut(heads * head_dim).zip(positions) {
        let c = &cos[pos as usize * half..][..half];
        let s = &sin[pos as usize * half..][..half];
        for head in row.chunks_exact_mut(head_dim) {
            let (x1, x2) = head.split_at_mut(half);
            for i in 0..half {
                let (a, b) = (x1[i], x2[i]);
                x1[i] = a * c[i] - b * s[i];
                x2[i] = b * c[i] + a * s[i];
            }
        }
    }
}

/// `silu(gate) * up` into `gate`.
pub(crate) fn silu_mul(gate: &mut [f32], up: &[f32]) {
    for (g, u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + exp(-*g)) * u;
    }
}

pub(crate) fn add_assign(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// `e^x` to about 2 ulp for the range softmax and SiLU use, written with no calls or branches so that
/// loops over it vectorise (`f32::exp` is a libm call per element).
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.3, 88.3);
    // e^x = 2^n * e^r with n = round(x / ln 2), |r| <= ln2 / 2.
    let n = (x * std::f32::consts::LOG2_E).round();
    let r = x - n * 0.693_145_75 - n * 1.428_606_8e-6;
    let p = 1.0
        + r * (1.0 + r * (0.5 + r * (0.166_666_67 + r * (0.041_666_668 + r * (0.008_333_334 + r * 0.001_388_889)))));
    let bits = ((n as i32 + 127) << 23) as u32;
    p * f32::from_bits(bits)
}

#[cfg(test)]
mod tests {
    #[test]
    fn fast_exp_matches_std() {
        let mut worst = 0f32;
        let mut x = -87.0f32;
        while x < 88.0 {
            let rel = ((super::exp(x) - x.exp()) / x.exp()).abs();
            worst = worst.max(rel);
            x += 0.013;
        }
        assert!(worst < 1e-6, "relative error {worst}");
        assert!(super::exp(-1000.0) < 1e-37);
    }
}
