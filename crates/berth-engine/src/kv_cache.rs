//! The KV cache of one sequence, owned by whoever owns the sequence and lent to `forward` through a
//! [`crate::BatchContext`]. Per layer one K and one V buffer of shape `[kv_heads, capacity, head_dim]`,
//! grown by doubling.

use crate::error::Result;
use candle_core::{DType, Device, Tensor};

const INITIAL_CAPACITY: usize = 256;

#[derive(Debug)]
pub struct SeqKvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
    kv_heads: usize,
    head_dim: usize,
}

impl SeqKvCache {
    pub fn new(num_layers: usize, kv_heads: usize, head_dim: usize) -> Self {
        SeqKvCache { layers: (0..num_layers).map(|_| None).collect(), len: 0, kv_heads, head_dim }
    }

    /// Number of positions already computed.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Writes `k`, `v` (`[new, kv_heads, head_dim]`) after the committed positions of `layer` and returns
    /// the whole keys and values so far (`[kv_heads, len + new, head_dim]`).
    pub(crate) fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let new = k.dim(0)?;
        let need = self.len + new;
        let k = k.transpose(0, 1)?.contiguous()?;
        let v = v.transpose(0, 1)?.contiguous()?;
        let (kv_heads, head_dim, len) = (self.kv_heads, self.head_dim, self.len);
        let slot = &mut self.layers[layer];
        let capacity = slot.as_ref().map(|(k, _)| k.dim(1)).transpose()?.unwrap_or(0);
        if capacity < need {
            let new_cap = need.max(capacity * 2).max(INITIAL_CAPACITY);
            let grow = |old: Option<&Tensor>| -> Result<Tensor> {
                let buf = Tensor::zeros((kv_heads, new_cap, head_dim), DType::F32, &Device::Cpu)?;
                if let Some(old) = old {
                    if len > 0 {
                        buf.slice_set(&old.narrow(1, 0, len)?.contiguous()?, 1, 0)?;
                    }
                }
                Ok(buf)
            };
            let (nk, nv) = (grow(slot.as_ref().map(|s| &s.0))?, grow(slot.as_ref().map(|s| &s.1))?);
            *slot = Some((nk, nv));
        }
        let Some((kb, vb)) = slot.as_ref() else { unreachable!("buffer allocated above") };
        kb.slice_set(&k, 1, len)?;
        vb.slice_set(&v, 1, len)?;
        Ok((kb.narrow(1, 0, need)?.contiguous()?, vb.narrow(1, 0, need)?.contiguous()?))
    }

    /// Marks `n` more positions as computed, after every layer has appended them.
    pub(crate) fn commit(&mut self, n: usize) {
        self.len += n;
    }
}
