use crate::{LoraAdapter, SeqKvCache};

/// One sequence's part of a batch: `len` new tokens, appended after what its cache already holds.
pub struct Segment<'a> {
    pub len: usize,
    pub cache: &'a mut SeqKvCache,
    pub adapter: Option<&'a LoraAdapter>,
}

/// What `forward` needs besides the weights: the sequences of the batch, their caches and adapters.
/// Tokens of all segments arrive concatenated, in segment order.
pub struct BatchContext<'a> {
    pub segments: Vec<Segment<'a>>,
    /// Logits for every position (reference checks) instead of only each segment's last one.
    pub all_logits: bool,
}

/// The shape of a segment without the borrow of its cache, handed down to the layers.
#[derive(Clone, Copy)]
pub(crate) struct SegmentView<'a> {
    pub start: usize,
    pub len: usize,
    pub past: usize,
    pub adapter: Option<&'a LoraAdapter>,
}
