//! Choosing the next token from logits, without the heap: greedy,
//! temperature, top-k, top-p, min-p and a repetition penalty, drawn with a
//! seeded integer generator so that the same seed and the same logits give
//! the same token on every target. The caller hands in a candidate buffer
//! of `vocab` entries once; sampling never allocates.

/// How to sample. The default is greedy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplerConfig {
    /// 0 picks the most likely token; higher flattens the distribution.
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens (0: no limit).
    pub top_k: u32,
    /// Keep the smallest set of most likely tokens whose probability adds
    /// up to `top_p` (1: no limit).
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` × the most likely one (0: none).
    pub min_p: f32,
    /// Divide positive (multiply negative) logits of recent tokens by this
    /// (1: off), as transformers does.
    pub repetition_penalty: f32,
    /// Seed of the random draws.
    pub seed: u64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            seed: 0,
        }
    }
}

/// A token chooser over caller-provided scratch.
#[derive(Debug)]
pub struct Sampler<'a> {
    config: SamplerConfig,
    state: u64,
    /// Candidate token ids, `vocab` of them.
    candidates: &'a mut [u32],
}

impl<'a> Sampler<'a> {
    /// A sampler for a vocabulary of `candidates.len()` tokens.
    pub fn new(config: SamplerConfig, candidates: &'a mut [u32]) -> Self {
        // splitmix64 of the seed, so nearby seeds give unrelated streams.
        let mut s = config.seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        s = (s ^ (s >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        s = (s ^ (s >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Sampler {
            config,
            state: (s ^ (s >> 31)) | 1,
            candidates,
        }
    }

    /// Picks the next token. `logits` is changed in place (penalty,
    /// temperature, probabilities); `recent` are the tokens the repetition
    /// penalty applies to.
    pub fn sample(&mut self, logits: &mut [f32], recent: &[u32]) -> u32 {
        let c = self.config;
        if c.repetition_penalty != 1.0 {
            for &t in recent {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l = if *l > 0.0 {
                        *l / c.repetition_penalty
                    } else {
                        *l * c.repetition_penalty
                    };
                }
            }
        }
        if c.temperature <= 0.0 {
            return argmax(logits);
        }
        let n = logits.len().min(self.candidates.len());
        let cand = &mut self.candidates[..n];
        for (i, c) in cand.iter_mut().enumerate() {
            *c = i as u32;
        }
        // Most likely first; ties by token id, so the order is the same everywhere.
        let by_logit = |a: &u32, b: &u32| {
            logits[*b as usize]
                .total_cmp(&logits[*a as usize])
                .then(a.cmp(b))
        };
        let mut keep = n;
        if c.top_k > 0 && (c.top_k as usize) < n {
            keep = c.top_k as usize;
            cand.select_nth_unstable_by(keep - 1, by_logit);
        }
        let cand = &mut cand[..keep];
        cand.sort_unstable_by(by_logit);
        // Softmax over the candidates, at the temperature.
        let max = logits[cand[0] as usize];
        let mut total = 0.0f32;
        for &t in cand.iter() {
            let p = libm::expf((logits[t as usize] - max) / c.temperature);
            logits[t as usize] = p;
            total += p;
        }
        // min-p against the most likely, then top-p over what is left.
        let floor = c.min_p * logits[cand[0] as usize];
        let mut kept = 0.0f32;
        let mut count = 0;
        for &t in cand.iter() {
            let p = logits[t as usize];
            if count > 0 && (p < floor || kept >= c.top_p * total) {
                break;
            }
            kept += p;
            count += 1;
        }
        let u = next_uniform(&mut self.state);
        let mut r = u * kept;
        for &t in &cand[..count] {
            r -= logits[t as usize];
            if r < 0.0 {
                return t;
            }
        }
        cand[count - 1]
    }
}

/// A uniform draw in [0, 1) from a xorshift64* state (24 bits of it).
fn next_uniform(state: &mut u64) -> f32 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40) as f32 / (1u32 << 24) as f32
}

/// Index of the largest value (first on ties).
pub fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logits() -> [f32; 6] {
        [1.0, 3.0, 2.0, -1.0, 2.5, 0.0]
    }

    fn draw(config: SamplerConfig, n: usize) -> [u32; 6] {
        let mut cand = [0u32; 6];
        let mut s = Sampler::new(config, &mut cand);
        let mut counts = [0u32; 6];
        for _ in 0..n {
            let mut l = logits();
            counts[s.sample(&mut l, &[]) as usize] += 1;
        }
        counts
    }

    #[test]
    fn greedy_and_its_limits_pick_the_argmax() {
        let t = SamplerConfig {
            temperature: 1.0,
            ..Default::default()
        };
        assert_eq!(draw(SamplerConfig::default(), 10), [0, 10, 0, 0, 0, 0]);
        assert_eq!(
            draw(SamplerConfig { top_k: 1, ..t }, 50),
            [0, 50, 0, 0, 0, 0]
        );
        assert_eq!(
            draw(SamplerConfig { top_p: 0.01, ..t }, 50),
            [0, 50, 0, 0, 0, 0]
        );
        assert_eq!(
            draw(SamplerConfig { min_p: 1.0, ..t }, 50),
            [0, 50, 0, 0, 0, 0]
        );
    }

    #[test]
    fn temperature_one_follows_the_softmax() {
        let n = 20_000;
        let counts = draw(
            SamplerConfig {
                temperature: 1.0,
                seed: 7,
                ..Default::default()
            },
            n,
        );
        let l = logits();
        let z: f32 = l.iter().map(|x| libm::expf(*x)).sum();
        for (i, &c) in counts.iter().enumerate() {
            let want = libm::expf(l[i]) / z;
            let got = c as f32 / n as f32;
            assert!((want - got).abs() < 0.015, "token {i}: {got} vs {want}");
        }
    }

    #[test]
    fn top_k_and_top_p_cut_the_tail() {
        let t = SamplerConfig {
            temperature: 1.0,
            seed: 3,
            ..Default::default()
        };
        let c = draw(SamplerConfig { top_k: 2, ..t }, 2000);
        assert!(
            c[1] > 0 && c[4] > 0 && c[0] + c[2] + c[3] + c[5] == 0,
            "{c:?}"
        );
        // p(1)≈0.45, p(4)≈0.27: top_p 0.6 keeps exactly those two.
        let c = draw(SamplerConfig { top_p: 0.6, ..t }, 2000);
        assert!(
            c[1] > 0 && c[4] > 0 && c[0] + c[2] + c[3] + c[5] == 0,
            "{c:?}"
        );
        let c = draw(SamplerConfig { min_p: 0.5, ..t }, 2000);
        assert!(c[3] == 0 && c[5] == 0 && c[0] == 0, "{c:?}");
    }

    #[test]
    fn the_same_seed_gives_the_same_tokens() {
        let t = SamplerConfig {
            temperature: 0.9,
            top_k: 5,
            top_p: 0.95,
            seed: 42,
            ..Default::default()
        };
        assert_eq!(draw(t, 500), draw(t, 500));
        assert_ne!(draw(t, 500), draw(SamplerConfig { seed: 43, ..t }, 500));
    }

    #[test]
    fn repetition_penalty_pushes_recent_tokens_down() {
        let mut cand = [0u32; 6];
        let mut s = Sampler::new(
            SamplerConfig {
                repetition_penalty: 2.0,
                ..Default::default()
            },
            &mut cand,
        );
        let mut l = logits();
        // Token 1 (3.0) becomes 1.5, below token 4 (2.5).
        assert_eq!(s.sample(&mut l, &[1]), 4);
        assert_eq!(l[1], 1.5);
        let mut l = logits();
        assert_eq!(s.sample(&mut l, &[3]), 1);
        assert_eq!(l[3], -2.0, "negative logits are multiplied");
    }
}
