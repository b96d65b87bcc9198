//! The paged KV cache: keys and values of every sequence live in fixed-size blocks of one pool per
//! engine, so memory is bounded by configuration and blocks of a shared prompt prefix can be used by
//! several sequences. A sequence names its blocks in a block table (`&[u32]`, position `p` in block
//! `table[p / BLOCK_TOKENS]`); which blocks are free, shared or cached is [`crate::block_manager`]'s
//! business, not the pool's.

/// Positions per block.
pub const BLOCK_TOKENS: usize = 16;

/// Per layer and block, in f32: keys `[kv_head][head_dim][slot]` (a block's keys of one head are a
/// `head_dim x 16` matrix, so sixteen scores come out of one pass with no horizontal sums) and values
/// `[kv_head][slot][head_dim]` (each position's value row is contiguous for the weighted sum).
pub struct KvPool {
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    blocks: usize,
    kv_heads: usize,
    head_dim: usize,
}

impl std::fmt::Debug for KvPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvPool").field("blocks", &self.blocks).field("kv_heads", &self.kv_heads).finish_non_exhaustive()
    }
}

impl KvPool {
    /// A pool of `blocks` blocks. The memory is zero-initialised by the allocator, so pages are only
    /// resident once a block is written.
    pub fn new(layers: usize, kv_heads: usize, head_dim: usize, blocks: usize) -> Self {
        let per_layer = blocks * BLOCK_TOKENS * kv_heads * head_dim;
        KvPool {
            k: (0..layers).map(|_| vec![0f32; per_layer]).collect(),
            v: (0..layers).map(|_| vec![0f32; per_layer]).collect(),
            blocks,
            kv_heads,
            head_dim,
        }
    }

    /// Bytes one position takes over all layers (K and V).
    pub fn bytes_per_token(layers: usize, kv_heads: usize, head_dim: usize) -> usize {
        layers * 2 * kv_heads * head_dim * std::mem::size_of::<f32>()
    }

    pub fn blocks(&self) -> usize {
        self.blocks
    }

    /// Floats of one head's block (keys or values).
    pub(crate) const fn head_block(head_dim: usize) -> usize {
        head_dim * BLOCK_TOKENS
    }

    /// Writes the keys and values of positions `first..first + n` (`k`, `v`: `[n, kv_heads, head_dim]`).
    pub(crate) fn write(&mut self, layer: usize, table: &[u32], first: usize, k: &[f32], v: &[f32]) {
        let (hd, kvh) = (self.head_dim, self.kv_heads);
        let hb = Self::head_block(hd);
        for (i, (kr, vr)) in k.chunks_exact(kvh * hd).zip(v.chunks_exact(kvh * hd)).enumerate() {
            let pos = first + i;
            let (block, slot) = (table[pos / BLOCK_TOKENS] as usize, pos % BLOCK_TOKENS);
            for h in 0..kvh {
                let base = (block * kvh + h) * hb;
                let keys = &mut self.k[layer][base..base + hb];
                for (d, &x) in kr[h * hd..(h + 1) * hd].iter().enumerate() {
                    keys[d * BLOCK_TOKENS + slot] = x;
                }
                self.v[layer][base + slot * hd..base + (slot + 1) * hd].copy_from_slice(&vr[h * hd..(h + 1) * hd]);
            }
        }
    }

    /// The keys and values of one layer, for [`crate::attention`] to read through block tables.
    pub(crate) fn layer(&self, layer: usize) -> (&[f32], &[f32]) {
        (&self.k[layer], &self.v[layer])
    }
}
