//! LiRA-style ground truth of memorization (smi.md §7): the logit gap of the trained answer
//! among the answer options, and the online LiRA score memo = log φ(g; μ_in, σ_in) −
//! log φ(g; μ_out, σ_out) from the gaps of shadow models that did (IN) and did not (OUT) train on
//! the sample, in nats and in log space (no density ratio, so no underflow).

use crate::error::{Error, Result};

/// σ floor: a side whose shadow gaps are (nearly) identical would otherwise give ±inf. Gaps are
/// logit differences of order 1–10, so 10⁻³ only bites on degenerate sets; the reference's
/// `MEMO_SCORE_EPSILON` has the same size (and is ignored there).
pub const SIGMA_FLOOR: f64 = 1e-3;
/// μ, σ of a side with no shadow gap at all (the reference's fallback).
pub const EMPTY_SIDE: (f64, f64) = (0.0, 0.1);

/// g = logit[label] − max over the other options (`options` are the option logits).
pub fn logit_gap(options: &[f32], label: usize) -> Result<f64> {
    if label >= options.len() || options.len() < 2 {
        return Err(Error::Input(format!("label {label} among {} options: a gap needs the label and another option", options.len())));
    }
    let other = options.iter().enumerate().filter(|&(k, _)| k != label).map(|(_, &v)| v as f64).fold(f64::NEG_INFINITY, f64::max);
    Ok(options[label] as f64 - other)
}

/// Mean and population std (ddof 0) of a side; `EMPTY_SIDE` when empty. σ is not floored here.
pub fn fit_side(gaps: &[f64]) -> (f64, f64) {
    if gaps.is_empty() {
        return EMPTY_SIDE;
    }
    let n = gaps.len() as f64;
    let mu = gaps.iter().sum::<f64>() / n;
    let var = gaps.iter().map(|g| (g - mu) * (g - mu)).sum::<f64>() / n;
    (mu, var.sqrt())
}

fn log_phi(x: f64, mu: f64, sigma: f64) -> f64 {
    let z = (x - mu) / sigma;
    -0.5 * z * z - sigma.ln() - 0.5 * (2.0 * std::f64::consts::PI).ln()
}

/// memo of a target gap given the IN and OUT Gaussians (σ floored at `SIGMA_FLOOR`).
pub fn memo_score(target: f64, (mu_in, s_in): (f64, f64), (mu_out, s_out): (f64, f64)) -> f64 {
    log_phi(target, mu_in, s_in.max(SIGMA_FLOOR)) - log_phi(target, mu_out, s_out.max(SIGMA_FLOOR))
}

/// Shadow gaps of one sample.
#[derive(Clone, Debug, Default)]
pub struct ShadowGaps {
    pub in_gaps: Vec<f64>,
    pub out_gaps: Vec<f64>,
}

/// Online LiRA with a Gaussian per sample and side.
pub fn memo_online(targets: &[f64], shadows: &[ShadowGaps]) -> Vec<f64> {
    targets.iter().zip(shadows).map(|(&g, s)| memo_score(g, fit_side(&s.in_gaps), fit_side(&s.out_gaps))).collect()
}

/// LiRA's fixed-variance variant (Carlini et al. 2022), for few shadows: per-sample means, but one
/// σ per side pooled over all samples (the root of the mean squared deviation from each sample's
/// own mean). A sample with an empty side keeps `EMPTY_SIDE` there.
pub fn memo_fixed_variance(targets: &[f64], shadows: &[ShadowGaps]) -> Vec<f64> {
    let pooled = |side: &dyn Fn(&ShadowGaps) -> &Vec<f64>| {
        let (mut ss, mut n) = (0f64, 0usize);
        for s in shadows {
            let g = side(s);
            let (mu, _) = fit_side(g);
            ss += g.iter().map(|x| (x - mu) * (x - mu)).sum::<f64>();
            n += g.len();
        }
        if n == 0 { EMPTY_SIDE.1 } else { (ss / n as f64).sqrt() }
    };
    let (s_in, s_out) = (pooled(&|s| &s.in_gaps), pooled(&|s| &s.out_gaps));
    let side = |g: &[f64], s: f64| if g.is_empty() { EMPTY_SIDE } else { (fit_side(g).0, s) };
    targets.iter().zip(shadows).map(|(&g, s)| memo_score(g, side(&s.in_gaps, s_in), side(&s.out_gaps, s_out))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// smi.md §12.5.
    #[test]
    fn spec_vector() {
        let (mi, si) = fit_side(&[3.1, 2.7, 3.6, 2.9]);
        let (mo, so) = fit_side(&[0.4, -0.3, 1.1, 0.2, -0.6]);
        assert!((mi - 3.075).abs() < 1e-12 && (si - 0.334477).abs() < 1e-6);
        assert!((mo - 0.16).abs() < 1e-12 && (so - 0.588558).abs() < 1e-6);
        assert!((memo_score(3.3, (mi, si), (mo, so)) - 14.570373).abs() < 1e-6);
        assert_eq!(logit_gap(&[2.0, 3.5, -1.0, 3.0], 0).unwrap(), -1.5);
        assert!(logit_gap(&[1.0], 0).is_err() && logit_gap(&[1.0, 2.0], 2).is_err());
    }

    #[test]
    fn floors_fallbacks_and_fixed_variance() {
        // Identical IN gaps: σ = 0 is floored, the score stays finite.
        let m = memo_score(1.0, fit_side(&[1.0, 1.0]), fit_side(&[-1.0, 0.0]));
        assert!(m.is_finite() && m > 4.0, "{m}");
        assert_eq!(fit_side(&[]), EMPTY_SIDE);
        let shadows = vec![
            ShadowGaps { in_gaps: vec![2.0, 4.0], out_gaps: vec![-1.0, 1.0] },
            ShadowGaps { in_gaps: vec![1.0, 1.0], out_gaps: vec![0.0, 0.0] },
        ];
        // Pooled σ_in = √((1 + 1 + 0 + 0) / 4), σ_out likewise.
        let fixed = memo_fixed_variance(&[3.0, 1.0], &shadows);
        let s = (0.5f64).sqrt();
        assert!((fixed[0] - memo_score(3.0, (3.0, s), (0.0, s))).abs() < 1e-12);
        assert!((fixed[1] - memo_score(1.0, (1.0, s), (0.0, s))).abs() < 1e-12);
        let online = memo_online(&[3.0, 1.0], &shadows);
        assert!((online[0] - memo_score(3.0, (3.0, 1.0), (0.0, 1.0))).abs() < 1e-12);
    }
}
