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

mod quant_kernels {
    use crate::quant::{BlockKind, QuantMatrix};
    use candle_core::{Device, Tensor};
    use half::f16;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// Random blocks with small finite scales, in each block format.
    fn random_matrix(kind: BlockKind, rows: usize, cols: usize, rng: &mut StdRng) -> QuantMatrix {
        // (bytes per block, weights per block, byte offsets of f16 scales)
        let (bytes, elems, scales): (usize, usize, &[usize]) = match kind {
            BlockKind::Q8_0 => (34, 32, &[0]),
            BlockKind::Q4_0 => (18, 32, &[0]),
            BlockKind::Q4_1 => (20, 32, &[0, 2]),
            BlockKind::Q5_0 => (22, 32, &[0]),
            BlockKind::Q4K => (144, 256, &[0, 2]),
            BlockKind::Q6K => (210, 256, &[208]),
        };
        let mut data = vec![0u8; rows * cols / elems * bytes];
        rng.fill(&mut data[..]);
        for block in data.chunks_mut(bytes) {
            for &at in scales {
                let v = f16::from_f32(rng.random_range(-0.01f32..0.01)).to_bits().to_le_bytes();
                block[at..at + 2].copy_from_slice(&v);
            }
        }
        QuantMatrix::new(kind, rows, cols, data).unwrap()
    }

    #[test]
    fn block_kernel_matches_dequantised_matmul() {
        let mut rng = StdRng::seed_from_u64(5);
        for kind in [BlockKind::Q8_0, BlockKind::Q4_0, BlockKind::Q4_1, BlockKind::Q5_0, BlockKind::Q4K, BlockKind::Q6K]
        {
            let q = random_matrix(kind, 200, 512, &mut rng);
            let dense = q.dequantize().unwrap();
            for m in [1usize, 3, 16, 17] {
                let x: Vec<f32> = (0..m * 512).map(|_| rng.random_range(-1.0f32..1.0)).collect();
                let x = Tensor::from_vec(x, (m, 512), &Device::Cpu).unwrap();
                let got = q.matmul_t(&x).unwrap().to_vec2::<f32>().unwrap();
                let want = x.matmul(&dense.t().unwrap()).unwrap().to_vec2::<f32>().unwrap();
                let diff =
                    got.iter().flatten().zip(want.iter().flatten()).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                let scale = want.iter().flatten().map(|v| v.abs()).fold(1f32, f32::max);
                assert!(diff / scale < 1e-5, "{kind:?} m={m}: {diff} of {scale}");
            }
        }
    }

    #[test]
    fn permuted_and_gathered_rows_are_the_rows_asked_for() {
        let mut rng = StdRng::seed_from_u64(6);
        let q = random_matrix(BlockKind::Q4_1, 8, 64, &mut rng);
        let dense = q.dequantize().unwrap().to_vec2::<f32>().unwrap();
        let reversed = q.permute_rows(|r| 7 - r).dequantize().unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(reversed[0], dense[7]);
        let gathered = q.gather_rows(&[3, 3, 0]).unwrap();
        assert_eq!(gathered, [dense[3].clone(), dense[3].clone(), dense[0].clone()].concat());
        assert!(q.gather_rows(&[8]).is_err());
    }
}

#[test]
fn logprobs_are_the_log_softmax_of_the_biased_logits_whatever_the_temperature() {
    let logits = [1.0f32, 3.0, -2.0, 2.5, 0.0];
    let params = |temperature| SamplingParams {
        temperature,
        logit_bias: vec![(4, 4.0)],
        logprobs: Some(3),
        seed: Some(1),
        ..SamplingParams::default()
    };
    let biased = [1.0f64, 3.0, -2.0, 2.5, 4.0];
    let norm = biased.iter().map(|l| l.exp()).sum::<f64>().ln();
    for temperature in [0.0, 0.7, 1.5] {
        let (token, scored) = Sampler::new(params(temperature)).sample_scored(&logits);
        let scored = scored.unwrap();
        assert_eq!(scored.token, token);
        assert!((scored.logprob as f64 - (biased[token as usize] - norm)).abs() < 1e-6);
        assert_eq!(scored.top.iter().map(|t| t.0).collect::<Vec<_>>(), vec![4, 1, 3]);
        for (id, lp) in &scored.top {
            assert!((*lp as f64 - (biased[*id as usize] - norm)).abs() < 1e-6);
        }
    }
    let (_, none) = Sampler::new(SamplingParams::greedy()).sample_scored(&logits);
    assert!(none.is_none());
}
