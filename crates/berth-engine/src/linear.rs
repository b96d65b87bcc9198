//! The linear layer: one base matmul for every row of the batch, then each segment adds the low-rank
//! update of its own adapter (if it has one for this module).

use crate::batch::SegmentView;
use crate::error::Result;
use crate::lora::Target;
use candle_core::Tensor;

pub(crate) struct Linear {
    /// `[in, out]`, transposed once at load so that the hot matmul reads it contiguously.
    weight_t: Tensor,
    bias: Option<Tensor>,
    layer: usize,
    target: Target,
}

impl Linear {
    pub(crate) fn new(weight: Tensor, bias: Option<Tensor>, layer: usize, target: Target) -> Result<Self> {
        Ok(Linear { weight_t: weight.t()?.contiguous()?, bias, layer, target })
    }

    /// `x`: `[tokens, in]` -> `[tokens, out]`.
    pub(crate) fn forward(&self, x: &Tensor, segments: &[SegmentView<'_>]) -> Result<Tensor> {
        let mut y = x.matmul(&self.weight_t)?;
        if let Some(b) = &self.bias {
            y = y.broadcast_add(b)?;
        }
        let adapted = segments.iter().any(|s| s.adapter.and_then(|a| a.pair(self.layer, self.target)).is_some());
        if !adapted {
            return Ok(y);
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
