//! The linear layer: one base matmul for every row of the batch, then each segment adds the low-rank
//! update of its own adapter (if it has one for this module).

use crate::batch::SegmentView;
use crate::error::Result;
use crate::lora::{LoraPair, Target};
use crate::quant::{QuantMatrix, SMALL_BATCH};
use crate::weights::Weight;
use candle_core::{Device, Tensor};
use std::sync::Arc;

/// A weight matrix `[out, in]` ready for `x W^T`.
pub(crate) enum Matrix {
    /// `[in, out]`, transposed once at load so that the matmul reads it contiguously.
    Dense(Tensor),
    Quant(Arc<QuantMatrix>),
}

impl Matrix {
    pub(crate) fn new(weight: Weight) -> Result<Self> {
        Ok(match weight {
            Weight::Dense(t) => Matrix::Dense(t.t()?.contiguous()?),
            Weight::Quant(q) => Matrix::Quant(Arc::new(q)),
        })
    }

    /// `x`: `m` rows of `in` -> `m` rows of `out`.
    pub(crate) fn forward(&self, x: &[f32], m: usize) -> Result<Vec<f32>> {
        match self {
            Matrix::Dense(w_t) => {
                let xt = Tensor::from_slice(x, (m, x.len() / m.max(1)), w_t.device())?;
                Ok(xt.matmul(w_t)?.flatten_all()?.to_vec1()?)
            }
            Matrix::Quant(q) => q.matmul_rows(x, m),
        }
    }
}

pub(crate) struct Linear {
    weight: Matrix,
    bias: Option<Vec<f32>>,
    layer: usize,
    target: Target,
}

impl Linear {
    pub(crate) fn new(weight: Weight, bias: Option<Tensor>, layer: usize, target: Target) -> Result<Self> {
        let bias = bias.map(|b| b.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1::<f32>()).transpose()?;
        Ok(Linear { weight: Matrix::new(weight)?, bias, layer, target })
    }

    /// `x`: `rows` rows of `in` -> `rows` rows of `out`.
    pub(crate) fn forward(&self, x: &[f32], rows: usize, segments: &[SegmentView<'_>]) -> Result<Vec<f32>> {
        let y = self.weight.forward(x, rows)?;
        self.finish(x, rows, segments, y)
    }

    /// Several layers applied to the same input (Q, K, V; gate, up), with the base matmuls of
    /// quantised weights run as one group.
    pub(crate) fn forward_group<const N: usize>(
        layers: [&Linear; N],
        x: &[f32],
        rows: usize,
        segments: &[SegmentView<'_>],
    ) -> Result<[Vec<f32>; N]> {
        let quant: Vec<&QuantMatrix> = layers
            .iter()
            .filter_map(|l| match &l.weight {
                Matrix::Quant(q) => Some(q.as_ref()),
                Matrix::Dense(_) => None,
            })
            .collect();
        let bases = if quant.len() == N {
            QuantMatrix::matmul_group(&quant, x, rows)?
        } else {
            layers.iter().map(|l| l.weight.forward(x, rows)).collect::<Result<Vec<_>>>()?
        };
        let mut out = Vec::with_capacity(N);
        for (l, y) in layers.iter().zip(bases) {
            out.push(l.finish(x, rows, segments, y)?);
        }
        Ok(out.try_into().unwrap_or_else(|_| unreachable!("one output per layer")))
    }

    /// Adds the bias and each segment's low-rank update to the base product `y`.
    fn finish(&self, x: &[f32], rows: usize, segments: &[SegmentView<'_>], mut y: Vec<f32>) -> Result<Vec<f32>> {
        if let Some(b) = &self.bias {
            let out = b.len();
            for row in y.chunks_exact_mut(out) {
                crate::ops::add_assign(row, b);
            }
        }
        let inp = x.len() / rows.max(1);
        let out = y.len() / rows.max(1);
        // Rows of the same adapter form one group: each factor is read once for the whole group.
        let mut groups: Vec<(&LoraPair, Vec<usize>)> = Vec::new();
        for (si, s) in segments.iter().enumerate() {
            let Some(p) = s.adapter.and_then(|a| a.pair(self.layer, self.target)) else { continue };
            match groups.iter_mut().find(|(q, _)| std::ptr::eq(*q, p)) {
                Some((_, members)) => members.push(si),
                None => groups.push((p, vec![si])),
            }
        }
        for (p, members) in groups {
            let n: usize = members.iter().map(|&si| segments[si].len).sum();
            let mut xs = Vec::with_capacity(n * inp);
            for &si in &members {
                let s = &segments[si];
                xs.extend_from_slice(&x[s.start * inp..(s.start + s.len) * inp]);
            }
            let mut delta = vec![0f32; n * out];
            if n <= SMALL_BATCH {
                // Few rows (decode): a rank-r update is a few thousand multiply-adds, less than the
                // cost of the tensor ops it would take; do it on plain rows.
                p.add_delta(&xs, &mut delta, n);
            } else {
                let a = Tensor::from_slice(&p.a, (p.rank, inp), &Device::Cpu)?;
                let b_t = Tensor::from_slice(&p.b_t, (p.rank, out), &Device::Cpu)?;
                let xt = Tensor::from_vec(xs, (n, inp), &Device::Cpu)?;
                delta = xt.matmul(&a.t()?)?.matmul(&b_t)?.affine(p.scale as f64, 0.0)?.flatten_all()?.to_vec1()?;
            }
            let mut at = 0;
            for &si in &members {
                let s = &segments[si];
                crate::ops::add_assign(
                    &mut y[s.start * out..(s.start + s.len) * out],
                    &delta[at * out..(at + s.len) * out],
                );
                at += s.len;
            }
        }
        Ok(y)
    }
}
