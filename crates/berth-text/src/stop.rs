//! Stop sequences over streamed text. Text that might be the beginning of a stop sequence is held back
//! until it is clear, so a client never sees part of a stop sequence.

/// What to do with text pushed into a [`StopMatcher`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopOutcome {
    /// Safe to emit this text; generation goes on.
    Continue(String),
    /// A stop sequence matched: emit this text (what came before the stop), then finish.
    Stopped(String),
}

#[derive(Debug, Clone, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
}

impl StopMatcher {
    pub fn new(stops: Vec<String>) -> Self {
        StopMatcher { stops: stops.into_iter().filter(|s| !s.is_empty()).collect(), held: String::new() }
    }

    pub fn push(&mut self, delta: &str) -> StopOutcome {
        self.held.push_str(delta);
        let first_stop = self.stops.iter().filter_map(|s| self.held.find(s.as_str())).min();
        if let Some(at) = first_stop {
            let out = self.held[..at].to_string();
            self.held.clear();
            return StopOutcome::Stopped(out);
        }
        // Hold back the longest suffix of `held` that is a proper prefix of some stop sequence.
        let mut keep = 0;
        for stop in &self.stops {
            for (i, _) in stop.char_indices().skip(1) {
                if self.held.ends_with(&stop[..i]) {
                    keep = keep.max(i);
                }
            }
        }
        let cut = self.held.len() - keep;
        let out = self.held[..cut].to_string();
        self.held.drain(..cut);
        StopOutcome::Continue(out)
    }

    /// Text held back when generation ends for another reason (length, end of sequence).
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}
