//! Weight matrices kept as GGUF quantisation blocks (Q8_0, Q4_0, Q4_1), multiplied by f32 activations
//! without expanding the weights in memory. Decoding reads every weight once per token, so bytes per
//! weight set the speed: each block is decoded once per batch and applied to every row of it.
//!
//! Activations stay f32 (llama.cpp quantises them to 8 bits; we keep the engine's results equal to
//! an f32 computation on the dequantised weights, which the reference tests check). Batches of more
//! than [`SMALL_BATCH`] rows (prefill) dequantise the matrix and use candle's f32 matmul instead.

use crate::error::Result;
use crate::EngineError;
use candle_core::{Device, Tensor};
use half::f16;
use rayon::prelude::*;

/// Up to this many rows, the block kernel; above, dequantise and use a dense matmul.
pub(crate) const SMALL_BATCH: usize = 16;
const BLOCK: usize = 32;
/// Output rows handled by one parallel task.
const ROWS_PER_TASK: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BlockKind {
    Q4_0,
    Q4_1,
    Q8_0,
}

impl BlockKind {
    pub(crate) fn from_ggml(dtype: candle_core::quantized::GgmlDType) -> Option<Self> {
        use candle_core::quantized::GgmlDType as G;
        match dtype {
            G::Q4_0 => Some(BlockKind::Q4_0),
            G::Q4_1 => Some(BlockKind::Q4_1),
            G::Q8_0 => Some(BlockKind::Q8_0),
            _ => None,
        }
    }

    /// Bytes of one block of 32 weights.
    const fn bytes(self) -> usize {
        match self {
            BlockKind::Q4_0 => 18,
            BlockKind::Q4_1 => 20,
            BlockKind::Q8_0 => 34,
        }
    }
}

/// A `[rows, cols]` weight matrix (rows = outputs) as consecutive blocks, row after row.
#[derive(Debug, Clone)]
pub(crate) struct QuantMatrix {
    kind: BlockKind,
    rows: usize,
    cols: usize,
    data: Vec<u8>,
}

#[inline(always)]
fn half_at(b: &[u8], at: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[at], b[at + 1]])).to_f32()
}

/// Decodes one block into 32 weights.
#[inline(always)]
fn decode_block(kind: BlockKind, b: &[u8], out: &mut [f32; BLOCK]) {
    match kind {
        BlockKind::Q8_0 => {
            let d = half_at(b, 0);
            for (o, &q) in out.iter_mut().zip(&b[2..34]) {
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
    }
}

/// `out[local * m + i]`: the dot products of weight rows `first_row..` with every x row `i`.
/// Written plainly so that the compiler vectorises it for the instruction set of its caller: each x row
/// accumulates in 32 independent lanes (a float sum in one register would be sequential), reduced once
/// per output.
#[inline(always)]
fn rows_kernel(q: &QuantMatrix, first_row: usize, out: &mut [f32], x: &[f32], m: usize) {
    let blocks = q.cols / BLOCK;
    let block_bytes = q.kind.bytes();
    let row_bytes = blocks * block_bytes;
    let n = out.len() / m;
    let mut w = [0f32; BLOCK];
    let mut lanes = [[0f32; BLOCK]; SMALL_BATCH];
    for local in 0..n {
        let row = &q.data[(first_row + local) * row_bytes..][..row_bytes];
        for l in lanes[..m].iter_mut() {
            *l = [0.0; BLOCK];
        }
        for (b, block) in row.chunks_exact(block_bytes).enumerate() {
            decode_block(q.kind, block, &mut w);
            for (i, l) in lanes[..m].iter_mut().enumerate() {
                let xs: &[f32; BLOCK] = x[i * q.cols + b * BLOCK..][..BLOCK].try_into().expect("32 columns");
                for k in 0..BLOCK {
                    l[k] += w[k] * xs[k];
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
fn rows_kernel_avx512(q: &QuantMatrix, first_row: usize, out: &mut [f32], x: &[f32], m: usize) {
    rows_kernel(q, first_row, out, x, m)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
fn rows_kernel_avx2(q: &QuantMatrix, first_row: usize, out: &mut [f32], x: &[f32], m: usize) {
    rows_kernel(q, first_row, out, x, m)
}

#[derive(Clone, Copy)]
enum Isa {
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    Portable,
}

fn isa() -> Isa {
    static ISA: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
    *ISA.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            // AVX-512F/BW only: never AMX, which these CPUs advertise but the VMs do not allow.
            if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c") {
                return Isa::Avx512;
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c") {
                return Isa::Avx2;
            }
        }
        Isa::Portable
    })
}

impl QuantMatrix {
    pub(crate) fn new(kind: BlockKind, rows: usize, cols: usize, data: Vec<u8>) -> Result<Self> {
        if cols % BLOCK != 0 || data.len() != rows * cols / BLOCK * kind.bytes() {
            return Err(EngineError::Malformed(format!(
                "{kind:?} matrix [{rows}, {cols}] needs {} bytes, has {}",
                rows * cols / BLOCK * kind.bytes(),
                data.len()
            )));
        }
        Ok(QuantMatrix { kind, rows, cols, data })
    }

    pub(crate) fn dims(&self) -> [usize; 2] {
        [self.rows, self.cols]
    }

    fn row_bytes(&self) -> usize {
        self.cols / BLOCK * self.kind.bytes()
    }

    /// The matrix with row `r` taken from row `source(r)`: blocks run along columns, so rows move whole.
    pub(crate) fn permute_rows(&self, source: impl Fn(usize) -> usize) -> Self {
        let rb = self.row_bytes();
        let mut data = Vec::with_capacity(self.data.len());
        for r in 0..self.rows {
            let s = source(r);
            data.extend_from_slice(&self.data[s * rb..(s + 1) * rb]);
        }
        QuantMatrix { data, ..*self }
    }

    fn dequantize_rows_into(&self, rows: impl Iterator<Item = usize>, out: &mut Vec<f32>) {
        let rb = self.row_bytes();
        let mut w = [0f32; BLOCK];
        for r in rows {
            let row = &self.data[r * rb..(r + 1) * rb];
            for b in 0..self.cols / BLOCK {
                decode_block(self.kind, &row[b * self.kind.bytes()..], &mut w);
                out.extend_from_slice(&w);
            }
        }
    }

    /// Rows `ids` as an f32 tensor `[ids.len(), cols]` (embedding lookup).
    pub(crate) fn gather_rows(&self, ids: &[u32]) -> Result<Tensor> {
        let mut out = Vec::with_capacity(ids.len() * self.cols);
        if let Some(bad) = ids.iter().find(|&&i| i as usize >= self.rows) {
            return Err(EngineError::Tensor(format!("token id {bad} is outside the vocabulary of {}", self.rows)));
        }
        self.dequantize_rows_into(ids.iter().map(|&i| i as usize), &mut out);
        Ok(Tensor::from_vec(out, (ids.len(), self.cols), &Device::Cpu)?)
    }

    /// The whole matrix in f32, `[rows, cols]`.
    pub(crate) fn dequantize(&self) -> Result<Tensor> {
        let mut out = Vec::with_capacity(self.rows * self.cols);
        self.dequantize_rows_into(0..self.rows, &mut out);
        Ok(Tensor::from_vec(out, (self.rows, self.cols), &Device::Cpu)?)
    }

    /// `x W^T` for `x`: `[m, cols]` -> `[m, rows]`.
    pub(crate) fn matmul_t(&self, x: &Tensor) -> Result<Tensor> {
        let m = x.dim(0)?;
        if m > SMALL_BATCH {
            return Ok(x.matmul(&self.dequantize()?.t()?)?);
        }
        let xs: Vec<f32> = x.contiguous()?.flatten_all()?.to_vec1()?;
        let mut transposed = vec![0f32; self.rows * m];
        let isa = isa();
        transposed.par_chunks_mut(ROWS_PER_TASK * m).enumerate().for_each(|(task, out)| {
            let first = task * ROWS_PER_TASK;
            match isa {
                // SAFETY: `isa()` checked at run time that the CPU has these features.
                #[cfg(target_arch = "x86_64")]
                #[allow(unsafe_code)]
                Isa::Avx512 => unsafe { rows_kernel_avx512(self, first, out, &xs, m) },
                #[cfg(target_arch = "x86_64")]
                #[allow(unsafe_code)]
                Isa::Avx2 => unsafe { rows_kernel_avx2(self, first, out, &xs, m) },
                Isa::Portable => rows_kernel(self, first, out, &xs, m),
            }
        });
        let mut y = vec![0f32; m * self.rows];
        for r in 0..self.rows {
            for i in 0..m {
                y[i * self.rows + r] = transposed[r * m + i];
            }
        }
        Ok(Tensor::from_vec(y, (m, self.rows), &Device::Cpu)?)
    }
}
