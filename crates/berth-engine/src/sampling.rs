//! Token selection: greedy at temperature 0, otherwise nucleus sampling with a per-request RNG.

use crate::{SamplingParams, TokenLogprob};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;

pub(crate) struct Sampler {
    params: SamplingParams,
    rng: StdRng,
    /// How often each token was generated so far (for the penalties).
    counts: HashMap<u32, u32>,
}

impl Sampler {
    pub(crate) fn new(params: SamplingParams) -> Self {
        let rng = match params.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        Sampler { params, rng, counts: HashMap::new() }
    }

    /// Picks the next token and remembers it for the penalties.
    #[cfg(test)]
    pub(crate) fn sample(&mut self, logits: &[f32]) -> u32 {
        self.sample_scored(logits).0
    }

    /// [`Sampler::sample`], and with `logprobs` asked for, the token's log-probability and the top
    /// alternatives under the logits it was picked from.
    pub(crate) fn sample_scored(&mut self, logits: &[f32]) -> (u32, Option<TokenLogprob>) {
        let adjusted;
        let logits = if self.params.logit_bias.is_empty() && self.counts.is_empty() {
            logits
        } else {
            adjusted = self.adjust(logits);
            &adjusted
        };
        let token = self.pick(logits);
        let scored = self.params.logprobs.map(|top| log_probs(logits, token, top));
        if self.params.presence_penalty != 0.0 || self.params.frequency_penalty != 0.0 {
            *self.counts.entry(token).or_default() += 1;
        }
        (token, scored)
    }

    fn adjust(&self, logits: &[f32]) -> Vec<f32> {
        let mut out = logits.to_vec();
        for &(token, bias) in &self.params.logit_bias {
            if let Some(l) = out.get_mut(token as usize) {
                *l += bias;
            }
        }
        for (&token, &n) in &self.counts {
            if let Some(l) = out.get_mut(token as usize) {
                *l -= self.params.presence_penalty + self.params.frequency_penalty * n as f32;
            }
        }
        out
    }

    fn pick(&mut self, logits: &[f32]) -> u32 {
        if self.params.temperature <= 0.0 {
            return argmax(logits);
        }
        let inv_t = 1.0 / self.params.temperature;
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut probs: Vec<(u32, f32)> =
            logits.iter().enumerate().map(|(i, &l)| (i as u32, ((l - max) * inv_t).exp())).collect();
        let total: f32 = probs.iter().map(|p| p.1).sum();
        if !(total.is_finite() && total > 0.0) {
            return argmax(logits);
        }
        let top_p = self.params.top_p.clamp(0.0, 1.0);
        let mut mass = total;
        if top_p < 1.0 {
            probs.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
            let mut acc = 0.0;
            let mut keep = probs.len();
            for (i, p) in probs.iter().enumerate() {
                acc += p.1;
                if acc >= top_p * total {
                    keep = i + 1;
                    break;
                }
            }
            probs.truncate(keep.max(1));
            mass = probs.iter().map(|p| p.1).sum();
        }
        let mut target = self.rng.random::<f32>() * mass;
        for (id, p) in &probs {
            if target < *p {
                return *id;
            }
            target -= p;
        }
        probs.last().map(|p| p.0).unwrap_or(0)
    }
}

/// Log-softmax of `logits` at `token`, and the `top` most likely tokens with theirs (ties by id). The
/// normaliser is summed in f64, so that a 49k vocabulary adds no error of its own.
fn log_probs(logits: &[f32], token: u32, top: usize) -> TokenLogprob {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
    let norm = max + sum.ln();
    let lp = |id: u32| logits.get(id as usize).map_or(f32::NEG_INFINITY, |&l| (l as f64 - norm) as f32);
    // The `top` best, kept sorted (best first) while scanning once.
    let mut best: Vec<u32> = Vec::with_capacity(top + 1);
    for (i, &l) in logits.iter().enumerate() {
        if top == 0 || (best.len() == top && best.last().is_some_and(|&b| l <= logits[b as usize])) {
            continue;
        }
        let at = best.partition_point(|&b| logits[b as usize] >= l);
        best.insert(at, i as u32);
        best.truncate(top);
    }
    TokenLogprob { token, logprob: lp(token), top: best.into_iter().map(|id| (id, lp(id))).collect() }
}

pub(crate) fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}
