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
    use crate::isa::Isa;
    use crate::quant::{BlockKind, QuantMatrix};
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

    /// Every instruction set this CPU has, forced one after the other, against an f64 product of the
    /// dequantised weights: one row (decode), pairs, a full pass, several passes, the dense path; with
    /// 128 rows the 32-weight formats are interleaved, with 131 they are not.
    #[test]
    fn every_kernel_set_matches_the_dequantised_f64_product() {
        let mut rng = StdRng::seed_from_u64(5);
        let kinds =
            [BlockKind::Q8_0, BlockKind::Q4_0, BlockKind::Q4_1, BlockKind::Q5_0, BlockKind::Q4K, BlockKind::Q6K];
        for (kind, rows) in kinds.into_iter().flat_map(|k| [(k, 128), (k, 131)]) {
            let cols = 512;
            let q = random_matrix(kind, rows, cols, &mut rng);
            let dense = q.dequantize().unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            for m in [1usize, 2, 3, 8, 9, 16, 17, 49] {
                let x: Vec<f32> = (0..m * cols).map(|_| rng.random_range(-1.0f32..1.0)).collect();
                let want: Vec<f64> = (0..m * rows)
                    .map(|o| {
                        let (i, r) = (o / rows, o % rows);
                        (0..cols).map(|c| x[i * cols + c] as f64 * dense[r * cols + c] as f64).sum()
                    })
                    .collect();
                let scale = want.iter().map(|v| v.abs()).fold(1f64, f64::max);
                for isa in Isa::available() {
                    let got = q.matmul_on(isa, &x, m).unwrap();
                    let diff = got.iter().zip(&want).map(|(a, b)| (*a as f64 - b).abs()).fold(0f64, f64::max);
                    assert!(diff / scale < 1e-5, "{kind:?} m={m} {}: {diff} of {scale}", isa.name());
                }
            }
        }
    }

    #[test]
    fn permuted_and_gathered_rows_are_the_rows_asked_for() {
        let mut rng = StdRng::seed_from_u64(6);
        // 8 rows stay row by row, 48 are interleaved.
        for rows in [8, 48] {
            let q = random_matrix(BlockKind::Q4_1, rows, 64, &mut rng);
            let dense = q.dequantize().unwrap().to_vec2::<f32>().unwrap();
            let reversed = q.permute_rows(|r| rows - 1 - r).dequantize().unwrap().to_vec2::<f32>().unwrap();
            assert_eq!(reversed[0], dense[rows - 1]);
            assert_eq!(reversed[rows - 1], dense[0]);
            let gathered = q.gather_rows(&[3, 3, 0]).unwrap();
            assert_eq!(gathered, [dense[3].clone(), dense[3].clone(), dense[0].clone()].concat());
            assert!(q.gather_rows(&[rows as u32]).is_err());
        }
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

mod forced_kernel_sets {
    use crate::attention::{paged_attention_on, AttentionShape};
    use crate::batch::SegmentView;
    use crate::isa::Isa;
    use crate::kv_cache::{KvPool, BLOCK_TOKENS};
    use crate::lora::LoraPair;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn random(n: usize, rng: &mut StdRng) -> Vec<f32> {
        (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    /// Softmax attention in f64 over positions `first..=pos` of one sequence's keys and values
    /// (`[positions, kv_heads, head_dim]`), for every head of one query row.
    fn reference(q: &[f32], keys: &[f32], values: &[f32], pos: usize, first: usize, s: AttentionShape) -> Vec<f64> {
        let (hd, group) = (s.head_dim, s.heads / s.kv_heads);
        let mut out = vec![0f64; s.heads * hd];
        for h in 0..s.heads {
            let kv = h / group;
            let at = |t: usize| (t * s.kv_heads + kv) * hd;
            let scores: Vec<f64> = (first..=pos)
                .map(|t| {
                    (0..hd).map(|d| q[h * hd + d] as f64 * keys[at(t) + d] as f64).sum::<f64>() / (hd as f64).sqrt()
                })
                .collect();
            let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let total: f64 = scores.iter().map(|x| (x - max).exp()).sum();
            for (t, sc) in (first..=pos).zip(&scores) {
                let w = (sc - max).exp() / total;
                for d in 0..hd {
                    out[h * hd + d] += w * values[at(t) + d] as f64;
                }
            }
        }
        out
    }

    /// Two sequences in one batch (a 20-token prefill from empty, one decode step after 150 positions
    /// spread over blocks out of order), with and without a sliding window, on every instruction set.
    #[test]
    fn attention_on_every_kernel_set_matches_f64() {
        let mut rng = StdRng::seed_from_u64(9);
        for window in [None, Some(37)] {
            let shape = AttentionShape { heads: 6, kv_heads: 2, head_dim: 64, window };
            let (hd, kvd) = (shape.head_dim, shape.kv_heads * shape.head_dim);
            let mut pool = KvPool::new(1, shape.kv_heads, hd, 16);
            let lens = [(0usize, 20usize), (150, 1)];
            let tables: [Vec<u32>; 2] = [vec![3, 1], vec![15, 0, 2, 4, 5, 6, 7, 8, 9, 10]];
            let mut kvs = Vec::new();
            for ((past, len), table) in lens.iter().zip(&tables) {
                let (k, v) = (random((past + len) * kvd, &mut rng), random((past + len) * kvd, &mut rng));
                assert!(table.len() * BLOCK_TOKENS >= past + len);
                pool.write(0, table, 0, &k, &v);
                kvs.push((k, v));
            }
            let views: Vec<SegmentView<'_>> = vec![
                SegmentView { start: 0, len: 20, past: 0, table: &tables[0], adapter: None },
                SegmentView { start: 20, len: 1, past: 150, table: &tables[1], adapter: None },
            ];
            let q = random(21 * shape.heads * hd, &mut rng);
            let mut want = Vec::new();
            for (si, v) in views.iter().enumerate() {
                for i in 0..v.len {
                    let pos = v.past + i;
                    let first = window.map_or(0, |w| (pos + 1).saturating_sub(w));
                    let row = &q[(v.start + i) * shape.heads * hd..][..shape.heads * hd];
                    want.extend(reference(row, &kvs[si].0, &kvs[si].1, pos, first, shape));
                }
            }
            for isa in Isa::available() {
                let mut got = vec![0f32; q.len()];
                paged_attention_on(isa, &q, &mut got, &pool, 0, &views, shape);
                let diff = got.iter().zip(&want).map(|(a, b)| (*a as f64 - b).abs()).fold(0f64, f64::max);
                assert!(diff < 1e-5, "{} window {window:?}: {diff}", isa.name());
            }
        }
    }

    #[test]
    fn lora_update_on_every_kernel_set_matches_f64() {
        let mut rng = StdRng::seed_from_u64(10);
        let (inp, out, rank, rows) = (96, 80, 8, 5);
        let pair = LoraPair { a: random(rank * inp, &mut rng), b_t: random(rank * out, &mut rng), scale: 2.0, rank };
        let x = random(rows * inp, &mut rng);
        let y0 = random(rows * out, &mut rng);
        let want: Vec<f64> = (0..rows * out)
            .map(|o| {
                let (i, c) = (o / out, o % out);
                let t = |k: usize| (0..inp).map(|j| x[i * inp + j] as f64 * pair.a[k * inp + j] as f64).sum::<f64>();
                y0[o] as f64 + 2.0 * (0..rank).map(|k| t(k) * pair.b_t[k * out + c] as f64).sum::<f64>()
            })
            .collect();
        for isa in Isa::available() {
            let mut y = y0.clone();
            pair.add_delta_on(isa, &x, &mut y, rows);
            let diff = y.iter().zip(&want).map(|(a, b)| (*a as f64 - b).abs()).fold(0f64, f64::max);
            assert!(diff < 1e-4, "{}: {diff}", isa.name());
        }
    }
}
