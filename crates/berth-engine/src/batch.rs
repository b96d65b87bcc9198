use crate::{KvPool, LoraAdapter};

/// One sequence's part of a batch: `len` new tokens at positions `past..past + len`, whose keys and
/// values go to the blocks of `table` (which must already cover `past + len` positions).
pub struct Segment<'a> {
    pub len: usize,
    pub past: usize,
    pub table: &'a [u32],
    pub adapter: Option<&'a LoraAdapter>,
}

/// What `forward` needs besides the weights: the KV pool and the sequences of the batch. Tokens of all
/// segments arrive concatenated, in segment order.
pub struct BatchContext<'a> {
    pub kv: &'a mut KvPool,
    pub segments: Vec<Segment<'a>>,
    /// Logits for every position (reference checks) instead of only each segment's last one.
    pub all_logits: bool,
}

/// A segment with its offset in the batch, handed down to the layers.
#[derive(Clone, Copy)]
pub(crate) struct SegmentView<'a> {
    pub start: usize,
    pub len: usize,
    pub past: usize,
    pub table: &'a [u32],
    pub adapter: Option<&'a LoraAdapter>,
}
