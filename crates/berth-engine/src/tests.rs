use crate::sampling::{argmax, Sampler};
use crate::weights::unpermute_rope_rows;
use crate::SamplingParams;
use candle_core::{Device, Tensor};

#[test]
fn greedy_picks_the_largest_logit() {
    let mut s = Sampler::new(SamplingParams::greedy());
    assert_eq!(s.sample(&[0.1, 3.0, -1.0, 2.9]), 1);
    assert_eq!(argmax(&[5.0, 1.0]), 0);
}

#[test]
fn penalties_and_logit_bias_move_the_choice() {
    let logits = [1.0, 0.9, 0.0];
    let mut s = Sampler::new(SamplingParams { frequency_penalty: 0.5, ..SamplingParams::greedy() });
    assert_eq!(s.sample(&logits), 0);
    assert_eq!(s.sample(&logits), 1, "token 0 was penalised after one use");
    let mut s = Sampler::new(SamplingParams { logit_bias: vec![(2, 5.0)], ..SamplingParams::greedy() });
    assert_eq!(s.sample(&logits), 2);
}

#[test]
fn seeded_sampling_is_reproducible_and_top_p_truncates() {
    let logits: Vec<f32> = (0..50).map(|i| (i as f32) * 0.1).collect();
    let draw = |seed| {
        let mut s = Sampler::new(SamplingParams { seed: Some(seed), ..SamplingParams::default() });
        (0..20).map(|_| s.sample(&logits)).collect::<Vec<_>>()
    };
    assert_eq!(draw(7), draw(7));
    assert_ne!(draw(7), draw(8));
    // With a tiny top_p only the most likely token survives.
    let mut s = Sampler::new(SamplingParams { top_p: 0.01, seed: Some(1), ..SamplingParams::default() });
    assert!((0..20).all(|_| s.sample(&logits) == 49));
}

#[test]
fn unpermute_inverts_llama_cpp_permutation() {
    // llama.cpp: w.reshape(heads, 2, hd/2, in).swapaxes(1, 2).reshape(rows, in)
    let (heads, hd, inp) = (2usize, 4usize, 3usize);
    let hf: Vec<f32> = (0..heads * hd * inp).map(|v| v as f32).collect();
    let hf = Tensor::from_vec(hf, (heads * hd, inp), &Device::Cpu).unwrap();
    let permuted = hf
        .reshape((heads, 2, hd / 2, inp))
        .unwrap()
        .transpose(1, 2)
        .unwrap()
        .contiguous()
        .unwrap()
        .reshape((heads * hd, inp))
        .unwrap();
    let back = unpermute_rope_rows(&permuted, heads).unwrap();
    assert_eq!(back.to_vec2::<f32>().unwrap(), hf.to_vec2::<f32>().unwrap());
}
