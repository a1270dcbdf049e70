//! Routing rules: which experts a token goes to and with what weights,
//! from the router's logits. Softmax or sigmoid scores, group-limited
//! choice, DeepSeek-V3's correction bias, renormalisation and scaling, and
//! Phi-MoE's sparsemixer. Pure functions over the config; no state.

use crate::format::config::{ModelConfig, RouterScoring};
use crate::kernels::scalar;

/// Chooses `chosen.len()` experts from router `logits` (turned into
/// scores in place) and their weights, by the family's rule: sparsemixer;
/// or softmax or sigmoid scores, the best `topk_groups` expert groups kept
/// (a group scores its best expert, or with a correction bias its best
/// two), the top-k of the kept by score plus `bias`, ties to the lower
/// index; weights are the scores, renormalised if the config says so, times
/// `routed_scaling_factor`.
pub(super) fn route(
    c: &ModelConfig,
    logits: &mut [f32],
    bias: Option<&[u8]>,
    chosen: &mut [u32],
    weights: &mut [f32],
) {
    if c.architecture.sparsemixer() {
        return sparsemixer(logits, chosen, weights, c.router_jitter);
    }
    let scores = logits;
    match c.architecture.router_scoring() {
        RouterScoring::Softmax => scalar::softmax(scores),
        RouterScoring::Sigmoid => scores
            .iter_mut()
            .for_each(|s| *s = 1.0 / (1.0 + libm::expf(-*s))),
    }
    let key = |e: usize| scores[e] + bias.map_or(0.0, |b| scalar::f32_at(b, e));
    // Group limit: experts outside the kept groups cannot be chosen.
    // Group limit: experts outside the kept groups cannot be chosen. One
    // bit per group (at most MAX_EXPERTS groups; a few words of stack).
    let groups = c.expert_groups as usize;
    let size = scores.len() / groups;
    let mut kept_groups = [0u64; (crate::format::config::MAX_EXPERTS as usize).div_ceil(64)];
    let group_kept = |bits: &[u64], g: usize| bits[g / 64] >> (g % 64) & 1 == 1;
    if groups > 1 {
        let group_score = |g: usize| {
            let (mut first, mut second) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
            for e in g * size..(g + 1) * size {
                let k = key(e);
                if k > first {
                    (first, second) = (k, first);
                } else if k > second {
                    second = k;
                }
            }
            match bias {
                Some(_) => first + second,
                None => first,
            }
        };
        for _ in 0..c.topk_groups {
            let (mut best, mut best_score) = (usize::MAX, f32::NEG_INFINITY);
            for g in (0..groups).filter(|&g| !group_kept(&kept_groups, g)) {
                let s = group_score(g);
                if best == usize::MAX || s > best_score {
                    (best, best_score) = (g, s);
                }
            }
            kept_groups[best / 64] |= 1 << (best % 64);
        }
    }
    let kept = |e: usize| groups <= 1 || group_kept(&kept_groups, e / size);
    for k in 0..chosen.len() {
        let mut best = usize::MAX;
        for e in 0..scores.len() {
            if kept(e)
                && !chosen[..k].contains(&(e as u32))
                && (best == usize::MAX || key(e) > key(best))
            {
                best = e;
            }
        }
        chosen[k] = best as u32;
        weights[k] = scores[best];
    }
    if c.norm_topk_prob {
        let total: f32 = weights.iter().sum::<f32>() + 1e-20;
        weights.iter_mut().for_each(|w| *w /= total);
    }
    if c.routed_scaling_factor != 1.0 {
        weights
            .iter_mut()
            .for_each(|w| *w *= c.routed_scaling_factor);
    }
}

/// Phi-MoE's sparsemixer at inference, on router `logits`: the best expert,
/// weighted by its softmax among the experts within `2·eps` (relative) of
/// it; then the best of the rest, weighted likewise among the rest. The
/// weights are not renormalised.
fn sparsemixer(logits: &[f32], chosen: &mut [u32], weights: &mut [f32], eps: f32) {
    for k in 0..2 {
        let mut best = usize::MAX;
        for (e, &s) in logits.iter().enumerate() {
            if !chosen[..k].contains(&(e as u32)) && (best == usize::MAX || s > logits[best]) {
                best = e;
            }
        }
        let top = logits[best];
        // softmax over the unmasked experts, read at `best`.
        let kept = |e: usize, s: f32| {
            let factor = libm::fabsf(s).max(top);
            // As in torch, a NaN ratio (0/0) does not mask.
            let masked = (top - s) / factor > 2.0 * eps;
            !chosen[..k].contains(&(e as u32)) && !masked
        };
        let total: f32 = logits
            .iter()
            .enumerate()
            .filter(|&(e, &s)| kept(e, s))
            .map(|(_, &s)| libm::expf(s - top))
            .sum();
        chosen[k] = best as u32;
        weights[k] = 1.0 / total;
    }
}
