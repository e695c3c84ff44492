//! Small numeric pieces shared by PSMI and KSG: numpy's linear quantile, mean/std, ψ of integers.

/// Euler–Mascheroni γ; ψ(1) = −γ.
const EULER_GAMMA: f64 = 0.577_215_664_901_532_9;

/// Position of quantile q among `len` sorted values, exactly as numpy computes it for the default
/// "linear" method (`_compute_virtual_index` with α = β = 1): (index below, fraction).
pub fn linear_position(len: usize, q: f64) -> (usize, usize, f64) {
    const ALPHA: f64 = 1.0;
    const BETA: f64 = 1.0;
    let n = len as f64;
    let virtual_index = (n * q + (ALPHA + q * (1.0 - ALPHA - BETA))) - 1.0;
    let below = virtual_index.floor().clamp(0.0, n - 1.0);
    let above = (below + 1.0).min(n - 1.0);
    (below as usize, above as usize, virtual_index - virtual_index.floor())
}

/// numpy's `_lerp`: a + t·(b−a) for t < 0.5, b − (1−t)·(b−a) otherwise (bit parity with numpy).
pub fn numpy_lerp(a: f64, b: f64, t: f64) -> f64 {
    let diff = b - a;
    if t >= 0.5 {
        b - diff * (1.0 - t)
    } else {
        a + diff * t
    }
}

/// Quantile q (numpy "linear") of `values`, which are reordered (partial selection, O(len)).
/// Returns NaN for an empty slice.
pub fn quantile_linear(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let (lo, hi, t) = linear_position(values.len(), q);
    let cmp = |a: &f64, b: &f64| a.total_cmp(b);
    let (_, &mut v_lo, right) = values.select_nth_unstable_by(lo, cmp);
    let v_hi = if hi > lo { right.iter().copied().min_by(cmp).unwrap_or(v_lo) } else { v_lo };
    numpy_lerp(v_lo, v_hi, t)
}

/// numpy's pairwise summation (`pairwise_sum` in its loops): what `np.sum` does along a contiguous
/// axis. scikit-learn's column statistics hit it because `X[:, mask]` is a Fortran-order copy.
pub fn numpy_pairwise_sum(a: &[f64]) -> f64 {
    const BLOCK: usize = 128;
    let n = a.len();
    if n < 8 {
        a.iter().fold(-0.0, |acc, v| acc + v)
    } else if n <= BLOCK {
        let mut r = [0f64; 8];
        r.copy_from_slice(&a[..8]);
        let whole = n - n % 8;
        for chunk in a[8..whole].chunks_exact(8) {
            for (acc, v) in r.iter_mut().zip(chunk) {
                *acc += v;
            }
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for v in &a[whole..] {
            res += v;
        }
        res
    } else {
        let half = n / 2;
        let half = half - half % 8;
        numpy_pairwise_sum(&a[..half]) + numpy_pairwise_sum(&a[half..])
    }
}

/// `np.sum` of a contiguous column: the reduction starts from the identity 0, then adds the
/// pairwise sum.
pub fn numpy_column_sum(a: &[f64]) -> f64 {
    0.0 + numpy_pairwise_sum(a)
}

/// Mean and population std (ddof 0), two passes in f64.
pub fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    (mean, var.sqrt())
}

/// ψ(m) for a positive integer m: the recurrence ψ(m+1) = ψ(m) + 1/m below 20, the asymptotic
/// series above (truncation error < 2·10⁻¹³ there; smi.md §5).
pub fn digamma_int(m: u64) -> f64 {
    digamma_table().get(m as usize).copied().unwrap_or_else(|| digamma_direct(m))
}

/// ψ(m) for 0 < m < 4096 (index 0 is NaN), for loops that look up many: [`digamma_int`] without
/// the once-initialisation check per call.
pub fn digamma_table() -> &'static [f64] {
    const TABLE: u64 = 1 << 12;
    static SMALL: std::sync::OnceLock<Vec<f64>> = std::sync::OnceLock::new();
    SMALL.get_or_init(|| (0..TABLE).map(|i| if i == 0 { f64::NAN } else { digamma_direct(i) }).collect())
}

fn digamma_direct(m: u64) -> f64 {
    debug_assert!(m >= 1);
    if m < 20 {
        let mut psi = -EULER_GAMMA;
        for i in 1..m {
            psi += 1.0 / i as f64;
        }
        psi
    } else {
        let x = m as f64;
        let x2 = x * x;
        x.ln() - 0.5 / x - 1.0 / (12.0 * x2) + 1.0 / (120.0 * x2 * x2) - 1.0 / (252.0 * x2 * x2 * x2)
    }
}

/// Mean and the 0.01 / 0.99 quantiles of a set of per-slice or per-sample values.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct Summary {
    pub mean: f64,
    pub std: f64,
    pub q01: f64,
    pub q50: f64,
    pub q99: f64,
    pub min: f64,
    pub max: f64,
}

impl Summary {
    /// Summary of `values` (reordered in place).
    pub fn of(values: &mut [f64]) -> Summary {
        let (mean, std) = mean_std(values);
        Summary {
            mean,
            std,
            q01: quantile_linear(values, 0.01),
            q50: quantile_linear(values, 0.5),
            q99: quantile_linear(values, 0.99),
            min: values.iter().copied().fold(f64::INFINITY, f64::min),
            max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_match_spec_vector() {
        // smi.md §12.4
        let v = [0.5, -0.2, 0.9, 0.1, 0.3];
        let q = |p: f64| quantile_linear(&mut v.clone(), p);
        assert!((q(0.99) - 0.884).abs() < 1e-12);
        assert!((q(0.01) - -0.188).abs() < 1e-12);
        assert_eq!(q(0.5), 0.3);
        assert_eq!(q(0.0), -0.2);
        assert_eq!(q(1.0), 0.9);
        assert_eq!(quantile_linear(&mut [2.5], 0.99), 2.5);
        assert!(quantile_linear(&mut [], 0.5).is_nan());
    }

    #[test]
    fn pairwise_sum_matches_numpy() {
        // np.sum(a.reshape(-1, 1), axis=0) for a_i = ((7919·i) mod 1000)·0.0137 − 6.1, i = 1..=200
        // (numpy 2.4): the 8-accumulator blocks and the recursive split; a sequential sum differs.
        let a: Vec<f64> = (1..=200u64).map(|i| ((i * 7919) % 1000) as f64 * 0.0137 - 6.1).collect();
        assert_eq!(numpy_column_sum(&a), 148.6300000000001);
        assert_eq!(a.iter().sum::<f64>(), 148.63000000000008);
    }

    #[test]
    fn digamma_matches_known_values() {
        assert!((digamma_int(1) + EULER_GAMMA).abs() < 1e-15);
        assert!((digamma_int(2) - (1.0 - EULER_GAMMA)).abs() < 1e-15);
        // Recurrence and asymptotic branch agree across the switch.
        let mut psi = -EULER_GAMMA;
        for m in 1..200u64 {
            assert!((digamma_int(m) - psi).abs() < 1e-12, "psi({m})");
            psi += 1.0 / m as f64;
        }
        // scipy.special.digamma at 7, 20 and 1e6.
        assert!((digamma_int(7) - 1.872784335098467).abs() < 1e-14);
        assert!((digamma_int(20) - 2.970523992242149).abs() < 3e-13);
        assert!((digamma_int(1_000_000) - 13.81551005796419).abs() < 1e-12);
    }
}
