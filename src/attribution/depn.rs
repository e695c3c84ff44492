//! Integrated-gradients Riemann grids and the DEPN privacy-neuron detector and aggregator
//! (depn-attention.md §A2–A3, tinymem.md §5.4).

use super::NeuronScores;
use std::cmp::Reverse;
use crate::error::{Error, Result};

/// Where the m points of the IG path sit on [0, 1]; every convention divides the sum by m.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Grid {
    /// α_j = j/m, j = 0..m−1 (the DEPN code).
    Left,
    /// α_j = j/m, j = 1..m (DEPN paper, Eq. 4).
    Right,
    /// linspace(0, 1, m), both ends (TinyMem's `ig_full_data`, EleutherAI knowledge-neurons).
    Linspace,
}

impl Grid {
    /// The m scaling factors.
    pub fn alphas(self, m: usize) -> Result<Vec<f64>> {
        if m == 0 || (self == Grid::Linspace && m < 2) {
            return Err(Error::Input(format!("integrated gradients need at least {} steps, not {m}", if self == Grid::Linspace { 2 } else { 1 })));
        }
        Ok(match self {
            Grid::Left => (0..m).map(|j| j as f64 / m as f64).collect(),
            Grid::Right => (1..=m).map(|j| j as f64 / m as f64).collect(),
            Grid::Linspace => (0..m).map(|j| j as f64 / (m - 1) as f64).collect(),
        })
    }
}

/// IG attribution of one layer from its activation and the gradients at the m grid points:
/// a_k · (Σ_j g_j[k]) / m. `grads` is m × width, row-major.
pub fn ig_attribution(activation: &[f64], grads: &[f64], m: usize) -> Result<Vec<f64>> {
    let w = activation.len();
    if m == 0 || grads.len() != m * w {
        return Err(Error::Input(format!("{} gradient values are not {m} steps × {w} neurons", grads.len())));
    }
    Ok((0..w).map(|k| activation[k] * (0..m).map(|j| grads[j * w + k]).sum::<f64>() / m as f64).collect())
}

/// DEPN's per-text candidate set: neurons with attribution ≥ ratio · (global max over all layers),
/// in (layer, neuron) order. The effective published rule is ratio 0.1. An all-non-positive matrix
/// has no candidates (a threshold at or below 0 would select neurons that carry no attribution).
pub fn candidates(scores: &NeuronScores, ratio: f64) -> Vec<(usize, usize)> {
    let max = scores.values.iter().copied().filter(|v| !v.is_nan()).fold(f64::NEG_INFINITY, f64::max);
    if max <= 0.0 {
        return Vec::new();
    }
    let cut = ratio * max;
    (0..scores.layers)
        .flat_map(|l| (0..scores.width).map(move |k| (l, k)))
        .filter(|&(l, k)| scores.get(l, k) >= cut)
        .collect()
}

/// The privacy-neuron aggregator (§3.4): every text votes for its candidates; the z neurons with
/// the most votes are kept, as (layer, neuron, votes). Ties keep first-seen order (text order, then
/// (layer, neuron) order), as Python's `Counter.most_common`.
pub fn aggregate(per_text: &[Vec<(usize, usize)>], z: usize) -> Vec<(usize, usize, usize)> {
    let mut seen: Vec<(usize, usize)> = Vec::new();
    let mut votes: std::collections::HashMap<(usize, usize), usize> = std::collections::HashMap::new();
    for cands in per_text {
        for &n in cands {
            let v = votes.entry(n).or_insert(0);
            if *v == 0 {
                seen.push(n);
            }
            *v += 1;
        }
    }
    // A stable sort by descending votes keeps first-seen order among equals.
    let mut ranked: Vec<(usize, usize, usize)> = seen.into_iter().map(|n| (n.0, n.1, votes[&n])).collect();
    ranked.sort_by_key(|r| Reverse(r.2));
    ranked.truncate(z);
    ranked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grids_follow_the_three_conventions() {
        assert_eq!(Grid::Left.alphas(4).unwrap(), vec![0.0, 0.25, 0.5, 0.75]);
        assert_eq!(Grid::Right.alphas(4).unwrap(), vec![0.25, 0.5, 0.75, 1.0]);
        assert_eq!(Grid::Linspace.alphas(5).unwrap(), vec![0.0, 0.25, 0.5, 0.75, 1.0]);
        assert!(Grid::Linspace.alphas(1).is_err() && Grid::Left.alphas(0).is_err());
    }

    #[test]
    fn attribution_is_activation_times_mean_gradient() {
        let a = [2.0, -1.0];
        let g = [1.0, 4.0, 3.0, 0.0]; // two steps × two neurons
        assert_eq!(ig_attribution(&a, &g, 2).unwrap(), vec![4.0, -2.0]);
        assert!(ig_attribution(&a, &g, 3).is_err());
    }

    #[test]
    fn candidates_use_the_global_max_over_layers() {
        let s = NeuronScores::new(2, 3, vec![1.0, 0.09, 0.5, 0.1, 10.0, -3.0]).unwrap();
        // max 10 → cut 1.0
        assert_eq!(candidates(&s, 0.1), vec![(0, 0), (1, 1)]);
        assert_eq!(candidates(&NeuronScores::new(1, 2, vec![-1.0, 0.0]).unwrap(), 0.1), vec![]);
    }

    #[test]
    fn aggregator_counts_votes_and_keeps_first_seen_order_on_ties() {
        let texts = vec![vec![(0, 5), (1, 2)], vec![(1, 2), (0, 7)], vec![(0, 7), (0, 5), (2, 0)]];
        // votes: (0,5)=2 (0,7)=2 (1,2)=2 (2,0)=1; first seen: (0,5), (1,2), (0,7), (2,0)
        assert_eq!(aggregate(&texts, 3), vec![(0, 5, 2), (1, 2, 2), (0, 7, 2)]);
        assert_eq!(aggregate(&texts, 10).len(), 4);
        assert_eq!(aggregate(&[], 3), vec![]);
    }
}
