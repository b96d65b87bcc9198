//! Attention read straight from the paged KV pool: each query row of each head looks at the positions
//! of its own sequence through that sequence's block table, so no sequence's keys are ever gathered
//! into a contiguous copy. Rows × heads run in parallel; the inner loops are written for the compiler
//! to vectorise and compiled once per instruction set (chosen at run time).

use crate::batch::SegmentView;
use crate::isa::{isa, Isa};
use crate::kv_cache::{KvPool, BLOCK_TOKENS};
use crate::ops::exp;
use rayon::prelude::*;

#[derive(Clone, Copy)]
pub(crate) struct AttentionShape {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub window: Option<usize>,
}

/// Blocks of positions one task looks at: a long context is split so that both cores share one row.
const BLOCKS_PER_TASK: usize = 8;

/// `q`: `[tokens, heads, head_dim]` (RoPE applied) -> `out` of the same shape. The keys and values of
/// every position of the batch, new ones included, must already be in `pool` for `layer`.
///
/// A task takes one query row, one KV head and up to [`BLOCKS_PER_TASK`] blocks of that row's
/// positions, and computes every query head that shares the KV head, so each key and value is read
/// once per group, not once per head. Tasks over different blocks of one row are merged afterwards
/// with the usual rescaling of their softmax sums.
pub(crate) fn paged_attention(
    q: &[f32],
    out: &mut [f32],
    pool: &KvPool,
    layer: usize,
    views: &[SegmentView<'_>],
    shape: AttentionShape,
) {
    paged_attention_on(isa(), q, out, pool, layer, views, shape)
}

/// [`paged_attention`] with the kernels of `isa` (which the CPU must have: see [`Isa::available`]).
pub(crate) fn paged_attention_on(
    isa: Isa,
    q: &[f32],
    out: &mut [f32],
    pool: &KvPool,
    layer: usize,
    views: &[SegmentView<'_>],
    shape: AttentionShape,
) {
    let group = shape.heads / shape.kv_heads;
    let hd = shape.head_dim;
    let mut tasks = Vec::new();
    // Per (row, kv head): where its tasks start in `tasks`.
    let mut firsts = Vec::new();
    let mut row = 0;
    for (si, v) in views.iter().enumerate() {
        for i in 0..v.len {
            let pos = v.past + i;
            let first = shape.window.map_or(0, |w| (pos + 1).saturating_sub(w));
            let (b0, b1) = (first / BLOCK_TOKENS, pos / BLOCK_TOKENS + 1);
            for kv in 0..shape.kv_heads {
                firsts.push(tasks.len());
                for c in (b0..b1).step_by(BLOCKS_PER_TASK) {
                    tasks.push(Part { row, seg: si, pos, first, kv, blocks: c..(c + BLOCKS_PER_TASK).min(b1) });
                }
            }
            row += 1;
        }
    }
    firsts.push(tasks.len());
    let (keys, values) = pool.layer(layer);
    let ctx = Task { q, keys, values, views, shape };
    // Per task: the unnormalised output `[group, head_dim]`, then each head's max and sum.
    let stride = group * hd + 2 * group;
    let mut partial = vec![0f32; tasks.len() * stride];
    partial.par_chunks_mut(stride).zip(tasks.par_iter()).for_each_init(Vec::new, |scores, (o, part)| match isa {
        // SAFETY: `isa` comes from `Isa::available()`, which checked that the CPU has these features.
        #[cfg(target_arch = "x86_64")]
        #[allow(unsafe_code)]
        Isa::Avx512 => unsafe { ctx.run_avx512(part, o, scores) },
        #[cfg(target_arch = "x86_64")]
        #[allow(unsafe_code)]
        Isa::Avx2 => unsafe { ctx.run_avx2(part, o, scores) },
        Isa::Portable => ctx.run(part, o, scores),
    });
    for (rk, parts) in firsts.windows(2).enumerate() {
        let dst = &mut out[rk * group * hd..(rk + 1) * group * hd];
        let parts = &partial[parts[0] * stride..parts[1] * stride];
        for g in 0..group {
            let stats = |p: &[f32]| (p[group * hd + g], p[group * hd + group + g]);
            let max = parts.chunks_exact(stride).map(|p| stats(p).0).fold(f32::NEG_INFINITY, f32::max);
            let d = &mut dst[g * hd..(g + 1) * hd];
            d.fill(0.0);
            let mut total = 0.0;
            for p in parts.chunks_exact(stride) {
                let (m, sum) = stats(p);
                let w = exp(m - max);
                total += sum * w;
                for (o, x) in d.iter_mut().zip(&p[g * hd..(g + 1) * hd]) {
                    *o += w * x;
                }
            }
            let inv = 1.0 / total;
            for o in d.iter_mut() {
                *o *= inv;
            }
        }
    }
}

struct Part {
    row: usize,
    seg: usize,
    pos: usize,
    first: usize,
    kv: usize,
    blocks: std::ops::Range<usize>,
}

struct Task<'a> {
    q: &'a [f32],
    keys: &'a [f32],
    values: &'a [f32],
    views: &'a [SegmentView<'a>],
    shape: AttentionShape,
}

impl Task<'_> {
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
    fn run_avx512(&self, part: &Part, out: &mut [f32], scores: &mut Vec<f32>) {
        self.run(part, out, scores)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn run_avx2(&self, part: &Part, out: &mut [f32], scores: &mut Vec<f32>) {
        self.run(part, out, scores)
    }

    /// One part: `out` gets the unnormalised `[group, head_dim]` sums, then the heads' maxima and sums.
    #[inline(always)]
    fn run(&self, part: &Part, out: &mut [f32], scores: &mut Vec<f32>) {
        const B: usize = BLOCK_TOKENS;
        let AttentionShape { heads, kv_heads, head_dim: hd, .. } = self.shape;
        let group = heads / kv_heads;
        let (row, kv, pos, first) = (part.row, part.kv, part.pos, part.first);
        let table = &self.views[part.seg].table[part.blocks.clone()];
        let b0 = part.blocks.start;
        let span = table.len() * B;
        let scale = 1.0 / (hd as f32).sqrt();
        let hb = KvPool::head_block(hd);
        let q = &self.q[(row * heads + kv * group) * hd..][..group * hd];
        // Scores of every slot of the part's blocks, head by head: `[group, span]`.
        scores.clear();
        scores.resize(group * span, 0.0);
        for (bi, &block) in table.iter().enumerate() {
            let kt = &self.keys[(block as usize * kv_heads + kv) * hb..][..hb];
            for g in 0..group {
                let qg = &q[g * hd..(g + 1) * hd];
                let mut acc = [[0f32; B]; 2];
                for (d2, (k0, k1)) in kt.chunks_exact(2 * B).map(|c| c.split_at(B)).enumerate() {
                    let (x0, x1) = (qg[2 * d2], qg[2 * d2 + 1]);
                    for s in 0..B {
                        acc[0][s] += x0 * k0[s];
                        acc[1][s] += x1 * k1[s];
                    }
                }
                let dst = &mut scores[g * span + bi * B..][..B];
                for s in 0..B {
                    dst[s] = (acc[0][s] + acc[1][s]) * scale;
                }
            }
        }
        // Slots outside `first..=pos` do not count.
        let lo = first.saturating_sub(b0 * B).min(span);
        let hi = (pos + 1 - b0 * B).min(span);
        let (sums, stats) = out.split_at_mut(group * hd);
        sums.fill(0.0);
        for g in 0..group {
            let sc = &mut scores[g * span..(g + 1) * span];
            let max = sc[lo..hi].iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
            for x in sc[lo..hi].iter_mut() {
                *x = exp(*x - max);
            }
            let mut lanes = [0f32; B];
            for c in sc[lo..hi].chunks(B) {
                for (l, x) in lanes.iter_mut().zip(c) {
                    *l += x;
                }
            }
            stats[g] = max;
            stats[group + g] = lanes.iter().sum::<f32>();
        }
        for (bi, &block) in table.iter().enumerate() {
            let vb = &self.values[(block as usize * kv_heads + kv) * hb..][..hb];
            let slots = (bi * B).max(lo)..((bi + 1) * B).min(hi);
            for j in slots {
                let v = &vb[(j - bi * B) * hd..][..hd];
                for g in 0..group {
                    let p = scores[g * span + j];
                    for (o, x) in sums[g * hd..(g + 1) * hd].iter_mut().zip(v) {
                        *o += p * x;
                    }
                }
            }
        }
    }
}
