//! Dataset-level SMI: the 1-D KSG/Ross MI between each slice and the labels, exactly as
//! scikit-learn's `mutual_info_classif(n_neighbors=k, random_state=0)` computes it (smi.md §5),
//! with sorting instead of trees: O(n log n) per slice, slices in parallel.

use super::mt19937::Mt19937;
use super::project::ProjElem;
use super::stats::{digamma_int, numpy_column_sum};
use super::Classes;
use crate::error::{Error, Result};
use rayon::prelude::*;

#[derive(Clone, Debug, serde::Serialize)]
pub struct KsgOptions {
    /// k of the estimator (scikit-learn's `n_neighbors`, default 3).
    pub n_neighbors: usize,
    /// Emulate scikit-learn bit for bit: the `RandomState(0)` jitter and the brute-force distance
    /// formula of classes of ≤ 2k+1 samples. Without it (default) results equal scikit-learn's on
    /// data without ties and with larger classes.
    pub sklearn_exact: bool,
}

impl Default for KsgOptions {
    fn default() -> Self {
        KsgOptions { n_neighbors: 3, sklearn_exact: false }
    }
}

/// scikit-learn's tie-breaking noise: `RandomState(0).standard_normal((n, K))`, row-major, so slice j
/// of sample i gets draw i·K + j. Depends on the total K: build it once per run.
pub struct Jitter {
    slices: usize,
    eps: Vec<f64>,
}

impl Jitter {
    pub fn new(samples: usize, slices: usize) -> Jitter {
        let mut rng = Mt19937::new(0);
        Jitter { slices, eps: (0..samples * slices).map(|_| rng.standard_normal()).collect() }
    }

    fn at(&self, sample: usize, slice: usize) -> f64 {
        self.eps[sample * self.slices + slice]
    }
}

/// x ← x / s with s the population std (no centring, `np.nanstd`); s < 10·ε is replaced by 1
/// (sklearn `scale`). Sums are numpy's pairwise ones, for bit parity of the jitter and small-class paths.
pub fn scale_column(x: &mut [f64]) {
    let n = x.len() as f64;
    let mean = numpy_column_sum(x) / n;
    let squares: Vec<f64> = x.iter().map(|v| (v - mean) * (v - mean)).collect();
    let var = numpy_column_sum(&squares) / n;
    let mut s = var.sqrt();
    if s < 10.0 * f64::EPSILON {
        s = 1.0;
    }
    for v in x.iter_mut() {
        *v /= s;
    }
}

/// x_i ← x_i + 1e-10·max(1, mean|x|)·ε_i.
pub fn jitter_column(x: &mut [f64], eps: impl Iterator<Item = f64>) {
    let abs: Vec<f64> = x.iter().map(|v| v.abs()).collect();
    let mean_abs = numpy_column_sum(&abs) / x.len() as f64;
    let amplitude = 1e-10 * mean_abs.max(1.0);
    for (v, e) in x.iter_mut().zip(eps) {
        *v += amplitude * e;
    }
}

/// The largest double below r (r > 0); 0 stays 0 (numpy `nextafter(r, 0)`).
fn next_toward_zero(r: f64) -> f64 {
    if r > 0.0 {
        f64::from_bits(r.to_bits() - 1)
    } else {
        r
    }
}

/// scikit-learn's brute-force distance √(max(0, (−2·a·b + a²) + b²)), a few ulps off |a − b|.
fn brute_distance(a: f64, b: f64) -> f64 {
    ((-2.0 * a * b + a * a) + b * b).max(0.0).sqrt()
}

/// k-th nearest distance (1-based) of the element at position q of an ascending class array,
/// merging the left and right neighbour distances (both increase away from q).
fn kth_sorted_distance(sorted: &[f64], q: usize, k: usize) -> f64 {
    let x = sorted[q];
    let (mut left, mut right) = (q, q + 1);
    let mut r = 0.0;
    for _ in 0..k {
        let dl = if left > 0 { Some(x - sorted[left - 1]) } else { None };
        let dr = sorted.get(right).map(|&v| v - x);
        r = match (dl, dr) {
            (Some(a), Some(b)) if a <= b => {
                left -= 1;
                a
            }
            (Some(a), None) => {
                left -= 1;
                a
            }
            (_, Some(b)) => {
                right += 1;
                b
            }
            (None, None) => unreachable!("k < class size"),
        };
    }
    r
}

/// k-th nearest distance of sorted[q] by scikit-learn's brute-force formula (small classes).
fn kth_brute_distance(sorted: &[f64], q: usize, k: usize) -> f64 {
    let mut d: Vec<f64> = sorted.iter().enumerate().filter(|&(i, _)| i != q).map(|(_, &v)| brute_distance(sorted[q], v)).collect();
    d.sort_by(f64::total_cmp);
    d[k - 1]
}

/// 1-D KSG/Ross MI (nats) of one already scaled (and possibly jittered) column against the labels.
/// Singleton classes are dropped; the result is clipped at 0. `brute_quirk` reproduces scikit-learn's
/// brute-force distances on classes where its `NearestNeighbors` picks them (k_c ≥ ⌊n_c/2⌋).
pub fn ksg_mi_1d(x: &[f64], classes: &Classes, k: usize, brute_quirk: bool) -> f64 {
    let cs = classes.len();
    // Samples grouped by class, each group ascending (ties broken by index, irrelevant to the result).
    let mut by_class: Vec<Vec<(f64, usize)>> = vec![Vec::new(); cs];
    for (i, (&v, &c)) in x.iter().zip(&classes.of_sample).enumerate() {
        by_class[c as usize].push((v, i));
    }
    let mut radius = vec![0f64; x.len()];
    let (mut sum_psi_k, mut sum_psi_nc, mut kept) = (0f64, 0f64, 0usize);
    let mut kept_values = Vec::with_capacity(x.len());
    for group in by_class.iter_mut() {
        let nc = group.len();
        if nc < 2 {
            continue;
        }
        group.sort_by(|a, b| a.0.total_cmp(&b.0));
        let values: Vec<f64> = group.iter().map(|g| g.0).collect();
        let kc = k.min(nc - 1);
        let brute = brute_quirk && kc >= nc / 2;
        for (q, &(_, i)) in group.iter().enumerate() {
            let r = if brute { kth_brute_distance(&values, q, kc) } else { kth_sorted_distance(&values, q, kc) };
            radius[i] = next_toward_zero(r);
        }
        sum_psi_k += nc as f64 * digamma_int(kc as u64);
        sum_psi_nc += nc as f64 * digamma_int(nc as u64);
        kept += nc;
        kept_values.extend_from_slice(&values);
    }
    if kept == 0 {
        return 0.0;
    }
    kept_values.sort_by(f64::total_cmp);
    let mut sum_psi_m = 0f64;
    for group in by_class.iter().filter(|g| g.len() >= 2) {
        for &(xi, i) in group {
            let r = radius[i];
            // Count |x_j − x_i| ≤ r with that exact predicate on both sides of x_i.
            let pos = kept_values.partition_point(|&v| v < xi);
            let first = kept_values[..pos].partition_point(|&v| (xi - v).abs() > r);
            let after = kept_values[pos..].partition_point(|&v| (v - xi).abs() <= r);
            let m = (pos - first) + after;
            sum_psi_m += digamma_int(m as u64);
        }
    }
    let nk = kept as f64;
    let mi = digamma_int(kept as u64) + sum_psi_k / nk - sum_psi_nc / nk - sum_psi_m / nk;
    mi.max(0.0)
}

/// Per-slice KSG MI of the columns of an n × width projection block. `first_slice` is the block's
/// global slice index (it selects the jitter columns).
pub fn ksg_mi_columns<T: ProjElem>(p: &[T], n: usize, width: usize, classes: &Classes, opts: &KsgOptions, jitter: Option<&Jitter>, first_slice: usize) -> Result<Vec<f64>> {
    if p.len() != n * width || classes.samples() != n {
        return Err(Error::Input(format!("KSG: {} values for {n} samples × {width} slices and {} labels", p.len(), classes.samples())));
    }
    if opts.n_neighbors == 0 {
        return Err(Error::Input("KSG needs n_neighbors ≥ 1".into()));
    }
    if opts.sklearn_exact && jitter.is_none() {
        return Err(Error::Input("exact scikit-learn emulation needs the jitter matrix".into()));
    }
    Ok((0..width)
        .into_par_iter()
        .map(|j| {
            let mut col: Vec<f64> = (0..n).map(|i| p[i * width + j].to_f64()).collect();
            scale_column(&mut col);
            if let (true, Some(eps)) = (opts.sklearn_exact, jitter) {
                jitter_column(&mut col, (0..n).map(|i| eps.at(i, first_slice + j)));
            }
            ksg_mi_1d(&col, classes, opts.n_neighbors, opts.sklearn_exact)
        })
        .collect())
}

/// KSG MI of every column of an n × K matrix in one call (the jitter then spans all K columns, as
/// one scikit-learn call does).
pub fn ksg_mi_matrix<T: ProjElem>(p: &[T], n: usize, slices: usize, classes: &Classes, opts: &KsgOptions) -> Result<Vec<f64>> {
    let jitter = opts.sklearn_exact.then(|| Jitter::new(n, slices));
    ksg_mi_columns(p, n, slices, classes, opts, jitter.as_ref(), 0)
}
