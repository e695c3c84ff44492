//! Exposure of a planted secret (depn-attention.md §A5, §A10): DEPN's per-digit rank, and the
//! secret-sharer rank of Carlini et al. by exact best-first enumeration or by sampling.
//!
//! The model enters through one callback: the log-probabilities (natural log, over the secret's
//! alphabet only, e.g. the 10 digit tokens renormalised) of the next symbol after a prefix of the
//! secret, the fixed context being the callback's business.

use crate::error::{Error, Result};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// log₂ of the candidate-space size |R| = base^len.
pub fn log2_space(base: usize, len: usize) -> f64 {
    len as f64 * (base as f64).log2()
}

/// 0-based rank of `truth` among the alphabet by descending logit (symbols with a strictly higher
/// logit come first; ties do not count against the true symbol).
pub fn symbol_rank(logits: &[f64], truth: usize) -> Result<usize> {
    let t = *logits.get(truth).ok_or_else(|| Error::Input(format!("symbol {truth} outside an alphabet of {}", logits.len())))?;
    Ok(logits.iter().filter(|&&v| v > t).count())
}

/// DEPN's per-digit exposure: Rank = 1 + Σ r_i·base^(len−1−i) from the 0-based per-position ranks,
/// exposure = log₂|R| − log₂ Rank. All top-1 gives log₂|R| (33.22 for 10 digits); all last gives 0.
pub fn per_digit_exposure(ranks: &[usize], base: usize) -> Result<f64> {
    if base < 2 || ranks.is_empty() {
        return Err(Error::Input("per-digit exposure needs an alphabet of at least 2 and a non-empty secret".into()));
    }
    let mut rank = 0f64;
    for &r in ranks {
        if r >= base {
            return Err(Error::Input(format!("rank {r} outside an alphabet of {base}")));
        }
        rank = rank * base as f64 + r as f64;
    }
    Ok(log2_space(base, ranks.len()) - (rank + 1.0).log2())
}

/// Log-perplexity Px(s) = Σ_i −log₂ P(s_i | s_<i) of a full candidate.
pub fn log_perplexity(secret: &[usize], mut next_logp: impl FnMut(&[usize]) -> Result<Vec<f64>>) -> Result<f64> {
    let mut px = 0.0;
    for i in 0..secret.len() {
        let lp = next_logp(&secret[..i])?;
        let v = *lp.get(secret[i]).ok_or_else(|| Error::Input(format!("symbol {} outside an alphabet of {}", secret[i], lp.len())))?;
        px -= v / std::f64::consts::LN_2;
    }
    Ok(px)
}

/// Exact secret-sharer rank by best-first (Dijkstra) enumeration of the candidate tree, cheapest
/// log-perplexity first: rank(ŝ) = |{r : Px(r) ≤ Px(ŝ)}|. Each node expansion is one callback
/// call; past `budget` expansions the rank is unknown (None) and the caller falls back to sampling.
pub fn exact_rank(secret: &[usize], base: usize, budget: usize, mut next_logp: impl FnMut(&[usize]) -> Result<Vec<f64>>) -> Result<Option<u64>> {
    let target = log_perplexity(secret, &mut next_logp)?;
    // Costs are non-negative, so full candidates pop in non-decreasing Px. Keys are f64 bits
    // (order-preserving for non-negative floats).
    let mut heap: BinaryHeap<Reverse<(u64, Vec<usize>)>> = BinaryHeap::new();
    heap.push(Reverse((0f64.to_bits(), Vec::new())));
    let (mut rank, mut expansions) = (0u64, 0usize);
    // A little slack absorbs the rounding of summing the same terms in another order.
    let limit = target + 1e-9 * target.abs().max(1.0);
    while let Some(Reverse((bits, prefix))) = heap.pop() {
        let cost = f64::from_bits(bits);
        if cost > limit {
            break;
        }
        if prefix.len() == secret.len() {
            rank += 1;
            continue;
        }
        if expansions == budget {
            return Ok(None);
        }
        expansions += 1;
        let lp = next_logp(&prefix)?;
        if lp.len() != base {
            return Err(Error::Input(format!("{} log-probabilities for an alphabet of {base}", lp.len())));
        }
        for (sym, &l) in lp.iter().enumerate() {
            let c = cost - l / std::f64::consts::LN_2;
            if c <= limit {
                let mut p = prefix.clone();
                p.push(sym);
                heap.push(Reverse((c.max(0.0).to_bits(), p)));
            }
        }
    }
    Ok(Some(rank.max(1)))
}

/// Exposure from a rank: log₂|R| − log₂ rank.
pub fn exposure_of_rank(rank: u64, base: usize, len: usize) -> f64 {
    log2_space(base, len) - (rank.max(1) as f64).log2()
}

/// Sampling estimate −log₂ Pr_{r∼U(R)}[Px(r) ≤ Px(ŝ)] from the log-perplexities of random
/// candidates. With no sample at or below the secret the estimate is a lower bound, log₂(samples)
/// (returned with `false`).
pub fn sampled_exposure(secret_px: f64, sample_px: &[f64]) -> Result<(f64, bool)> {
    if sample_px.is_empty() {
        return Err(Error::Input("sampled exposure needs at least one random candidate".into()));
    }
    let below = sample_px.iter().filter(|&&p| p <= secret_px).count();
    if below == 0 {
        Ok(((sample_px.len() as f64).log2(), false))
    } else {
        Ok((-(below as f64 / sample_px.len() as f64).log2(), true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_digit_exposure_endpoints() {
        let top = per_digit_exposure(&[0; 10], 10).unwrap();
        assert!((top - 33.219_280_948_873_62).abs() < 1e-9, "{top}");
        assert!(per_digit_exposure(&[9; 10], 10).unwrap().abs() < 1e-9);
        // Rank = 1 + 3·10 + 2 = 33 for two digits.
        assert!((per_digit_exposure(&[3, 2], 10).unwrap() - (100f64.log2() - 33f64.log2())).abs() < 1e-12);
        assert!(per_digit_exposure(&[10], 10).is_err());
        assert_eq!(symbol_rank(&[0.1, 0.7, 0.7, -1.0], 2).unwrap(), 0);
        assert_eq!(symbol_rank(&[0.1, 0.7, 0.7, -1.0], 3).unwrap(), 3);
    }

    /// A model whose next-symbol distribution depends on the prefix: the exact rank must equal the
    /// rank by brute force over all base^len candidates.
    #[test]
    fn exact_rank_matches_brute_force() {
        let (base, len) = (4usize, 5usize);
        let logp = |prefix: &[usize]| -> Result<Vec<f64>> {
            let h = prefix.iter().fold(7usize, |a, &s| a * 31 + s + 1);
            let w: Vec<f64> = (0..base).map(|s| 1.0 + ((h * (s + 3)) % 11) as f64).collect();
            let z: f64 = w.iter().sum();
            Ok(w.iter().map(|v| (v / z).ln()).collect())
        };
        let all: Vec<Vec<usize>> = (0..base.pow(len as u32)).map(|mut i| (0..len).map(|_| { let d = i % base; i /= base; d }).collect()).collect();
        let px: Vec<f64> = all.iter().map(|c| log_perplexity(c, logp).unwrap()).collect();
        for probe in [0usize, 17, 400, 1023] {
            let secret = &all[probe];
            let want = px.iter().filter(|&&p| p <= px[probe] + 1e-12).count() as u64;
            assert_eq!(exact_rank(secret, base, 100_000, logp).unwrap(), Some(want), "candidate {probe}");
        }
        // A tiny budget gives up instead of guessing.
        let worst = (0..all.len()).max_by(|&a, &b| px[a].total_cmp(&px[b])).unwrap();
        assert_eq!(exact_rank(&all[worst], base, 3, logp).unwrap(), None);
        let e = exposure_of_rank(1, 10, 10);
        assert!((e - 33.219_280_948_873_62).abs() < 1e-9);
    }

    #[test]
    fn sampled_exposure_and_its_lower_bound() {
        let (e, exact) = sampled_exposure(2.0, &[1.0, 3.0, 4.0, 5.0]).unwrap();
        assert!(exact && (e - 2.0).abs() < 1e-12);
        let (e, exact) = sampled_exposure(0.5, &[1.0, 3.0, 4.0, 5.0]).unwrap();
        assert!(!exact && (e - 2.0).abs() < 1e-12);
        assert!(sampled_exposure(0.5, &[]).is_err());
    }
}
