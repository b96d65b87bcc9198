//! The linear layer: one base matmul for every row of the batch, then each segment adds the low-rank
//! update of its own adapter (if it has one for this module).

use crate::batch::SegmentView;
use crate::error::Result;
use crate::lora::Target;
use crate::quant::{QuantMatrix, SMALL_BATCH};
use crate::weights::Weight;
use candle_core::Tensor;
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

    /// `x`: `[tokens, in]` -> `[tokens, out]`.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Matrix::Dense(w_t) => Ok(x.matmul(w_t)?),
            Matrix::Quant(q) => q.matmul_t(x),
        }
    }
}

pub(crate) struct Linear {
    weight: Matrix,
    bias: Option<Tensor>,
    layer: usize,
    target: Target,
}

impl Linear {
    pub(crate) fn new(weight: Weight, bias: Option<Tensor>, layer: usize, target: Target) -> Result<Self> {
        Ok(Linear { weight: Matrix::new(weight)?, bias, layer, target })
    }

    /// `x`: `[tokens, in]` -> `[tokens, out]`.
    pub(crate) fn forward(&self, x: &Tensor, segments: &[SegmentView<'_>]) -> Result<Tensor> {
        let mut y = self.weight.forward(x)?;
        if let Some(b) = &self.bias {
            y = y.broadcast_add(b)?;
        }
        let adapted = segments.iter().any(|s| s.adapter.and_then(|a| a.pair(self.layer, self.target)).is_some());
        if !adapted {
            return Ok(y);
        }
        let rows = x.dim(0)?;
        if rows <= SMALL_BATCH {
            // Few rows (decode): a rank-r update is a few thousand multiply-adds, less than the cost
            // of the tensor ops it would take; do it on plain rows.
            let (inp, out) = (x.dim(1)?, y.dim(1)?);
            let xs: Vec<f32> = x.flatten_all()?.to_vec1()?;
            let mut ys: Vec<f32> = y.flatten_all()?.to_vec1()?;
            for s in segments {
                if let Some(p) = s.adapter.and_then(|a| a.pair(self.layer, self.target)) {
                    p.add_delta(&xs[s.start * inp..(s.start + s.len) * inp], &mut ys[s.start * out..(s.start + s.len) * out], s.len);
                }
            }
            return Ok(Tensor::from_vec(ys, (rows, out), x.device())?);
        }
        let mut pieces = Vec::with_capacity(segments.len());
        for s in segments {
            let ys = y.narrow(0, s.start, s.len)?;
            match s.adapter.and_then(|a| a.pair(self.layer, self.target)) {
                Some(p) => {
                    let xs = x.narrow(0, s.start, s.len)?;
                    let delta = xs.matmul(&p.a.t()?)?.matmul(&p.b.t()?)?.affine(p.scale, 0.0)?;
                    pieces.push((ys + delta)?);
                }
                None => pieces.push(ys),
            }
        }
        Ok(Tensor::cat(&pieces, 0)?)
    }
}
