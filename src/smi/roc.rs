//! ROC metrics of a memorization predictor (smi.md §8): AUC with ties counted ½ (Mann–Whitney U,
//! as scikit-learn's `roc_auc_score`), the FPR at the first point of the full ROC curve whose TPR
//! reaches a target (v1's main metric, TPR = 0.75), and the TPR/FPR of a fixed flagging rule.
//! Higher score ⇒ predicted memorized; `positive[i]` marks the memorized samples.

use crate::error::{Error, Result};
use serde::Serialize;

fn check(scores: &[f64], positive: &[bool]) -> Result<(usize, usize)> {
    if scores.len() != positive.len() {
        return Err(Error::Input(format!("{} scores for {} labels", scores.len(), positive.len())));
    }
    if let Some(i) = scores.iter().position(|s| s.is_nan()) {
        return Err(Error::Numerical(format!("score {i} is NaN")));
    }
    let pos = positive.iter().filter(|&&p| p).count();
    Ok((pos, positive.len() - pos))
}

/// Indices sorted by descending score (ties in index order).
fn descending(scores: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    order
}

/// ROC AUC; `None` when either class is empty (the AUC is undefined then).
pub fn auc(scores: &[f64], positive: &[bool]) -> Result<Option<f64>> {
    let (n_pos, n_neg) = check(scores, positive)?;
    if n_pos == 0 || n_neg == 0 {
        return Ok(None);
    }
    // Walk tied groups from the top: each positive beats every negative below its group and ties
    // (½) with the negatives inside it.
    let order = descending(scores);
    let (mut wins, mut neg_above) = (0f64, 0usize);
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j < order.len() && scores[order[j]] == scores[order[i]] {
            j += 1;
        }
        let p = order[i..j].iter().filter(|&&k| positive[k]).count();
        let q = (j - i) - p;
        wins += p as f64 * (n_neg - neg_above - q) as f64 + 0.5 * (p * q) as f64;
        neg_above += q;
        i = j;
    }
    Ok(Some(wins / (n_pos as f64 * n_neg as f64)))
}

/// One point of the full ROC curve: flag every score ≥ `threshold`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct RocPoint {
    pub threshold: f64,
    pub tpr: f64,
    pub fpr: f64,
}

/// FPR at the first threshold (descending, one per distinct score) whose TPR ≥ `target`;
/// `None` without positives or negatives.
pub fn fpr_at_tpr(scores: &[f64], positive: &[bool], target: f64) -> Result<Option<RocPoint>> {
    let (n_pos, n_neg) = check(scores, positive)?;
    if n_pos == 0 || n_neg == 0 {
        return Ok(None);
    }
    let order = descending(scores);
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut i = 0;
    while i < order.len() {
        let thr = scores[order[i]];
        while i < order.len() && scores[order[i]] == thr {
            if positive[order[i]] {
                tp += 1;
            } else {
                fp += 1;
            }
            i += 1;
        }
        let tpr = tp as f64 / n_pos as f64;
        if tpr >= target {
            return Ok(Some(RocPoint { threshold: thr, tpr, fpr: fp as f64 / n_neg as f64 }));
        }
    }
    unreachable!("the last point has TPR 1")
}

/// TPR and FPR of a fixed rule (`flagged[i]`); NaN for an empty class.
pub fn rule_rates(flagged: &[bool], positive: &[bool]) -> Result<(f64, f64)> {
    if flagged.len() != positive.len() {
        return Err(Error::Input(format!("{} flags for {} labels", flagged.len(), positive.len())));
    }
    let (mut tp, mut fp, mut n_pos) = (0usize, 0usize, 0usize);
    for (&f, &p) in flagged.iter().zip(positive) {
        n_pos += p as usize;
        tp += (f && p) as usize;
        fp += (f && !p) as usize;
    }
    let n_neg = positive.len() - n_pos;
    let rate = |k: usize, n: usize| if n == 0 { f64::NAN } else { k as f64 / n as f64 };
    Ok((rate(tp, n_pos), rate(fp, n_neg)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// smi.md §12.6.
    #[test]
    fn spec_vector() {
        let memorized = [1, 0, 1, 1, 0, 0, 0, 1, 0, 0].map(|m| m == 1);
        let psmi = [-0.30, 0.20, -0.05, 0.10, 0.40, -0.10, 0.25, -0.20, 0.05, 0.30];
        let score: Vec<f64> = psmi.iter().map(|p| -p).collect();
        assert!((auc(&score, &memorized).unwrap().unwrap() - 0.875).abs() < 1e-12);
        let p = fpr_at_tpr(&score, &memorized, 0.75).unwrap().unwrap();
        assert!((p.fpr - 1.0 / 6.0).abs() < 1e-12 && p.tpr == 0.75 && p.threshold == 0.05, "{p:?}");
        let flags: Vec<bool> = psmi.iter().map(|&p| p <= 0.0).collect();
        let (tpr, fpr) = rule_rates(&flags, &memorized).unwrap();
        assert!(tpr == 0.75 && (fpr - 1.0 / 6.0).abs() < 1e-12);
    }

    #[test]
    fn ties_count_half_and_degenerate_cases() {
        // All scores equal: AUC ½, and the only ROC point is (1, 1).
        let pos = [true, false, true, false, false];
        assert_eq!(auc(&[1.0; 5], &pos).unwrap(), Some(0.5));
        assert_eq!(fpr_at_tpr(&[1.0; 5], &pos, 0.75).unwrap().unwrap().fpr, 1.0);
        // One positive tied with one of two negatives at the top: (1·1 + ½) / 2.
        assert_eq!(auc(&[2.0, 2.0, 0.0], &[true, false, false]).unwrap(), Some(0.75));
        // Perfect and inverted separation.
        assert_eq!(auc(&[3.0, 2.0, 1.0], &[true, true, false]).unwrap(), Some(1.0));
        assert_eq!(auc(&[1.0, 2.0, 3.0], &[true, true, false]).unwrap(), Some(0.0));
        assert_eq!(auc(&[1.0, 2.0], &[true, true]).unwrap(), None);
        assert_eq!(fpr_at_tpr(&[1.0, 2.0], &[false, false], 0.75).unwrap(), None);
        assert!(auc(&[f64::NAN, 1.0], &[true, false]).is_err());
        assert!(auc(&[1.0], &[true, false]).is_err());
        let (tpr, fpr) = rule_rates(&[true, false], &[true, true]).unwrap();
        assert!(tpr == 0.5 && fpr.is_nan());
    }

    /// AUC equals the brute-force pair count on random scores with many ties.
    #[test]
    fn auc_matches_pair_count() {
        let mut rng = crate::rng::Stream::new(3, crate::rng::purpose::MISC, 0);
        let n = 200;
        let scores: Vec<f64> = (0..n).map(|_| rng.below(17) as f64).collect();
        let pos: Vec<bool> = (0..n).map(|_| rng.uniform() < 0.3).collect();
        let (mut w, mut pairs) = (0f64, 0f64);
        for i in 0..n {
            for j in 0..n {
                if pos[i] && !pos[j] {
                    pairs += 1.0;
                    w += if scores[i] > scores[j] { 1.0 } else if scores[i] == scores[j] { 0.5 } else { 0.0 };
                }
            }
        }
        assert!((auc(&scores, &pos).unwrap().unwrap() - w / pairs).abs() < 1e-12);
    }
}
