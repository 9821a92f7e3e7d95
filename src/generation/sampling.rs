//! Choosing the next token from one row of logits: repetition penalty,
//! minimum length, temperature, top-k, top-p. Each sequence owns its random
//! generator, so other requests never draw from it: a seed gives the same
//! draws alone or in a batch. The logits it draws from can still differ in
//! the last bits between batch sizes (see README, Known limits).

use std::time::{SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The decoding options of one sequence.
#[derive(Debug, Clone)]
pub struct SamplingParams {
    /// 0 means greedy decoding.
    pub temperature: f64,
    /// 0 disables the filter.
    pub top_k: usize,
    pub top_p: f64,
    pub repetition_penalty: f64,
}

pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
}

/// How many of the most likely tokens top-p looks at before sorting them all.
const TOP_P_FIRST_LOOK: usize = 256;

impl Sampler {
    pub fn new(params: SamplingParams, seed: u64) -> Sampler {
        Sampler {
            params,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// Picks the next token. `history` is the prompt and everything generated
    /// so far; `banned` tokens (end-of-text before the minimum length) are
    /// never chosen.
    pub fn next_token(&mut self, logits: &mut [f32], history: &[i64], banned: Option<i64>) -> i64 {
        apply_repetition_penalty(logits, history, self.params.repetition_penalty);
        if let Some(token) = banned.and_then(|t| logits.get_mut(t as usize)) {
            *token = f32::NEG_INFINITY;
        }
        if self.params.temperature <= 0.0 {
            return argmax(logits);
        }
        let temperature = self.params.temperature as f32;
        let mut candidates: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .filter(|(_, logit)| logit.is_finite())
            .map(|(id, &logit)| (id as u32, logit / temperature))
            .collect();
        if candidates.is_empty() {
            return argmax(logits);
        }
        if self.params.top_k > 0 && self.params.top_k < candidates.len() {
            keep_largest(&mut candidates, self.params.top_k);
        }
        softmax(&mut candidates);
        if self.params.top_p < 1.0 {
            keep_nucleus(&mut candidates, self.params.top_p);
        }
        let total: f32 = candidates.iter().map(|(_, p)| p).sum();
        let mut draw = self.rng.gen::<f32>() * total;
        for &(id, probability) in &candidates {
            if draw < probability {
                return id as i64;
            }
            draw -= probability;
        }
        candidates.last().map(|&(id, _)| id as i64).unwrap_or(0)
    }
}

/// HF semantics: a seen token's positive logit is divided by the penalty,
/// a negative one multiplied.
fn apply_repetition_penalty(logits: &mut [f32], history: &[i64], penalty: f64) {
    if penalty == 1.0 {
        return;
    }
    let penalty = penalty as f32;
    let mut seen = history.to_vec();
    seen.sort_unstable();
    seen.dedup();
    for token in seen {
        if let Some(logit) = logits.get_mut(token as usize) {
            *logit = if *logit > 0.0 {
                *logit / penalty
            } else {
                *logit * penalty
            };
        }
    }
}

fn argmax(logits: &[f32]) -> i64 {
    let mut best = 0;
    for (id, &logit) in logits.iter().enumerate() {
        if logit > logits[best] {
            best = id;
        }
    }
    best as i64
}

/// Keeps the `k` largest, sorted from the largest.
fn keep_largest(candidates: &mut Vec<(u32, f32)>, k: usize) {
    candidates.select_nth_unstable_by(k - 1, |a, b| b.1.total_cmp(&a.1));
    candidates.truncate(k);
    candidates.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
}

/// Turns scaled logits into probabilities.
fn softmax(candidates: &mut [(u32, f32)]) {
    let max = candidates
        .iter()
        .map(|c| c.1)
        .fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for candidate in candidates.iter_mut() {
        candidate.1 = (candidate.1 - max).exp();
        sum += candidate.1;
    }
    for candidate in candidates.iter_mut() {
        candidate.1 /= sum;
    }
}

/// Keeps the smallest set of most likely tokens whose probabilities reach `top_p`.
fn keep_nucleus(candidates: &mut Vec<(u32, f32)>, top_p: f64) {
    let top_p = top_p as f32;
    if candidates.len() > TOP_P_FIRST_LOOK {
        // Usually a few hundred tokens hold the nucleus: sort those first.
        let mut head = candidates.clone();
        keep_largest(&mut head, TOP_P_FIRST_LOOK);
        if head.iter().map(|c| c.1).sum::<f32>() >= top_p {
            *candidates = head;
        } else {
            candidates.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        }
    } else {
        candidates.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    }
    let mut cumulative = 0.0;
    let mut keep = candidates.len();
    for (index, candidate) in candidates.iter().enumerate() {
        cumulative += candidate.1;
        if cumulative >= top_p {
            keep = index + 1;
            break;
        }
    }
    candidates.truncate(keep);
}

/// A seed for a request that gave none.
pub fn fresh_seed() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampler(temperature: f64, top_k: usize, top_p: f64, penalty: f64) -> Sampler {
        Sampler::new(
            SamplingParams {
                temperature,
                top_k,
                top_p,
                repetition_penalty: penalty,
            },
            7,
        )
    }

    #[test]
    fn greedy_takes_the_largest_and_respects_bans() {
        let mut greedy = sampler(0.0, 0, 1.0, 1.0);
        assert_eq!(greedy.next_token(&mut [0.1, 3.0, 2.0], &[], None), 1);
        assert_eq!(greedy.next_token(&mut [0.1, 3.0, 2.0], &[], Some(1)), 2);
    }

    #[test]
    fn repetition_penalty_pushes_seen_tokens_down() {
        let mut greedy = sampler(0.0, 0, 1.0, 2.0);
        // 3.0 / 2 = 1.5 < 2.0
        assert_eq!(greedy.next_token(&mut [0.0, 3.0, 2.0], &[1], None), 2);
        let mut logits = [-1.0, 0.5];
        apply_repetition_penalty(&mut logits, &[0, 0], 2.0);
        assert_eq!(logits, [-2.0, 0.5]);
    }

    #[test]
    fn top_k_one_is_greedy() {
        let mut top1 = sampler(1.5, 1, 1.0, 1.0);
        for _ in 0..20 {
            assert_eq!(top1.next_token(&mut [0.0, 1.0, 0.9, -3.0], &[], None), 1);
        }
    }

    #[test]
    fn top_p_keeps_only_the_nucleus() {
        // Probabilities about 0.84, 0.11, 0.04...: top_p 0.8 keeps one token.
        let mut nucleus = sampler(1.0, 0, 0.8, 1.0);
        for _ in 0..20 {
            assert_eq!(nucleus.next_token(&mut [4.0, 2.0, 1.0, 0.0], &[], None), 0);
        }
    }

    #[test]
    fn the_same_seed_draws_the_same_tokens() {
        let draw = |seed| {
            let mut s = Sampler::new(
                SamplingParams {
                    temperature: 1.0,
                    top_k: 0,
                    top_p: 1.0,
                    repetition_penalty: 1.0,
                },
                seed,
            );
            (0..32)
                .map(|_| s.next_token(&mut [0.0; 300], &[], None))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(1), draw(1));
        assert_ne!(draw(1), draw(2));
    }

    #[test]
    fn nucleus_beyond_the_first_look_sorts_everything() {
        // Powers of two add up exactly.
        let mut candidates: Vec<(u32, f32)> = (0..1024).map(|i| (i, 1.0 / 1024.0)).collect();
        keep_nucleus(&mut candidates, 0.5);
        assert_eq!(candidates.len(), 512);
    }
}
