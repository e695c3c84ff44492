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
    scale_column_in(x, &mut Vec::new())
}

/// [`scale_column`] with a reusable buffer for the squared deviations.
fn scale_column_in(x: &mut [f64], squares: &mut Vec<f64>) {
    let n = x.len() as f64;
    let mean = numpy_column_sum(x) / n;
    squares.clear();
    squares.extend(x.iter().map(|v| (v - mean) * (v - mean)));
    let var = numpy_column_sum(squares) / n;
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

/// Order-preserving u64 key of a finite f64 (sign-magnitude → two's-order), for integer sorting.
#[inline]
pub fn order_key(v: f64) -> u64 {
    let b = v.to_bits();
    if b >> 63 == 1 {
        !b
    } else {
        b | (1 << 63)
    }
}

/// Sort (key, index) pairs by key, ties by index: an LSD radix sort with 11-bit digits that skips
/// digits on which all keys agree (stable, and the input is in index order). Small inputs use the
/// comparison sort.
fn sort_pairs(items: &mut Vec<(u64, u32)>) {
    const BITS: u32 = 11;
    const MASK: u64 = (1 << BITS) - 1;
    if items.len() < 512 {
        items.sort_unstable();
        return;
    }
    let first = items[0].0;
    let differing = items.iter().fold(0u64, |m, &(k, _)| m | (k ^ first));
    let mut scratch = vec![(0u64, 0u32); items.len()];
    let mut counts = vec![0usize; 1 << BITS];
    for shift in (0..64).step_by(BITS as usize) {
        if (differing >> shift) & MASK == 0 {
            continue;
        }
        counts.fill(0);
        for &(k, _) in items.iter() {
            counts[((k >> shift) & MASK) as usize] += 1;
        }
        let mut offset = 0;
        for c in counts.iter_mut() {
            let n = *c;
            *c = offset;
            offset += n;
        }
        for &item in items.iter() {
            let bucket = ((item.0 >> shift) & MASK) as usize;
            scratch[counts[bucket]] = item;
            counts[bucket] += 1;
        }
        std::mem::swap(items, &mut scratch);
    }
}

/// Sort items `key << 32 | index` (keys of 32 bits, the input in index order) by key, ties by index:
/// [`sort_pairs`] on half the bytes, with the three digit histograms counted in one read.
fn sort_packed(items: &mut Vec<u64>, scratch: &mut Vec<u64>) {
    const BITS: u32 = 11;
    const MASK: u64 = (1 << BITS) - 1;
    if items.len() < 512 {
        items.sort_unstable();
        return;
    }
    let first = items[0] >> 32;
    let mut counts = [[0u32; 1 << BITS]; 3];
    let mut differing = 0u64;
    for &item in items.iter() {
        let key = item >> 32;
        differing |= key ^ first;
        counts[0][(key & MASK) as usize] += 1;
        counts[1][((key >> BITS) & MASK) as usize] += 1;
        counts[2][((key >> (2 * BITS)) & MASK) as usize] += 1;
    }
    scratch.resize(items.len(), 0);
    for (digit, counts) in counts.iter_mut().enumerate() {
        let shift = digit as u32 * BITS;
        if (differing >> shift) & MASK == 0 {
            continue;
        }
        let mut offset = 0;
        for c in counts.iter_mut() {
            let n = *c;
            *c = offset;
            offset += n;
        }
        for &item in items.iter() {
            let bucket = ((item >> (32 + shift)) & MASK) as usize;
            scratch[counts[bucket] as usize] = item;
            counts[bucket] += 1;
        }
        std::mem::swap(items, scratch);
    }
}

/// Buffers of [`ksg_mi_1d_keyed`], reused across the columns of a tile.
#[derive(Default)]
struct Workspace {
    packed: Vec<u64>,
    packed_scratch: Vec<u64>,
    /// Sample indices in global (value) order.
    order: Vec<u32>,
    global: Vec<f64>,
    class_vals: Vec<f64>,
    class_gpos: Vec<u32>,
    squares: Vec<f64>,
}

/// Largest c ≤ len with pred(1), …, pred(c) all true, for pred true-then-false: galloping, so the
/// cost is O(log c), and c (the ball count) is small next to n.
#[inline]
fn gallop(len: usize, pred: impl Fn(usize) -> bool) -> usize {
    let mut hi = 1;
    while hi <= len && pred(hi) {
        hi *= 2;
    }
    let (mut lo, mut hi) = (hi / 2, hi.min(len + 1));
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if pred(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo
}

/// 1-D KSG/Ross MI (nats) of one already scaled (and possibly jittered) column against the labels.
/// Singleton classes are dropped; the result is clipped at 0. `brute_quirk` reproduces scikit-learn's
/// brute-force distances on classes where its `NearestNeighbors` picks them (k_c ≥ ⌊n_c/2⌋).
///
/// One sort per slice: the global order, then a stable counting pass by class gives each class's
/// sorted values and every element's global position, so radii come from neighbours in the class
/// array and counts from galloping outwards in the global array with the exact predicate
/// |x_j − x_i| ≤ r_i.
pub fn ksg_mi_1d(x: &[f64], classes: &Classes, k: usize, brute_quirk: bool) -> f64 {
    ksg_mi_1d_keyed(x, None, classes, k, brute_quirk)
}

/// [`ksg_mi_1d`] with sort keys supplied: any keys ordered like `x` (ties included). Keys of the
/// unscaled f32 projections have 32 significant bits, so the radix sort makes 3 passes instead of 6.
pub fn ksg_mi_1d_keyed(x: &[f64], keys: Option<&[u64]>, classes: &Classes, k: usize, brute_quirk: bool) -> f64 {
    ksg_mi_1d_in(&mut Workspace::default(), x, keys, classes, k, brute_quirk)
}

fn ksg_mi_1d_in(ws: &mut Workspace, x: &[f64], keys: Option<&[u64]>, classes: &Classes, k: usize, brute_quirk: bool) -> f64 {
    let counts = &classes.counts;
    let kept_samples = (0..x.len()).filter(|&i| counts[classes.of_sample[i] as usize] >= 2);
    ws.order.clear();
    match keys {
        // 32-bit keys (f32 projections): packed with the index into one word.
        Some(ks) if ks.iter().all(|&key| key >> 32 == 0) => {
            ws.packed.clear();
            ws.packed.extend(kept_samples.map(|i| ks[i] << 32 | i as u64));
            sort_packed(&mut ws.packed, &mut ws.packed_scratch);
            ws.order.extend(ws.packed.iter().map(|&item| item as u32));
        }
        _ => {
            let key = |i: usize| keys.map_or_else(|| order_key(x[i]), |ks| ks[i]);
            let mut pairs: Vec<(u64, u32)> = kept_samples.map(|i| (key(i), i as u32)).collect();
            sort_pairs(&mut pairs);
            ws.order.extend(pairs.iter().map(|&(_, i)| i));
        }
    }
    let order = &ws.order;
    let kept = order.len();
    if kept == 0 {
        return 0.0;
    }
    ws.global.clear();
    ws.global.extend(order.iter().map(|&i| x[i as usize]));
    let global = &ws.global;
    // Class segments of the class-sorted array.
    let mut start = vec![0usize; counts.len() + 1];
    for (c, &nc) in counts.iter().enumerate() {
        start[c + 1] = start[c] + if nc >= 2 { nc } else { 0 };
    }
    let mut fill = start.clone();
    let (class_vals, class_gpos) = (&mut ws.class_vals, &mut ws.class_gpos);
    class_vals.resize(kept, 0.0);
    class_gpos.resize(kept, 0);
    for (g, &i) in order.iter().enumerate() {
        let c = classes.of_sample[i as usize] as usize;
        class_vals[fill[c]] = global[g];
        class_gpos[fill[c]] = g as u32;
        fill[c] += 1;
    }
    let (mut sum_psi_k, mut sum_psi_nc, mut sum_psi_m) = (0f64, 0f64, 0f64);
    for (c, &nc) in counts.iter().enumerate() {
        if nc < 2 {
            continue;
        }
        let vals = &class_vals[start[c]..start[c + 1]];
        let kc = k.min(nc - 1);
        let brute = brute_quirk && kc >= nc / 2;
        sum_psi_k += nc as f64 * digamma_int(kc as u64);
        sum_psi_nc += nc as f64 * digamma_int(nc as u64);
        for (q, &xi) in vals.iter().enumerate() {
            let r = next_toward_zero(if brute { kth_brute_distance(vals, q, kc) } else { kth_sorted_distance(vals, q, kc) });
            let g = class_gpos[start[c] + q] as usize;
            let left = gallop(g, |o| (xi - global[g - o]).abs() <= r);
            let right = gallop(kept - 1 - g, |o| (global[g + o] - xi).abs() <= r);
            sum_psi_m += digamma_int((1 + left + right) as u64);
        }
    }
    let nk = kept as f64;
    let mi = digamma_int(kept as u64) + sum_psi_k / nk - sum_psi_nc / nk - sum_psi_m / nk;
    mi.max(0.0)
}

/// Columns per gather tile: reading P row by row, 32 contiguous values at a time, instead of one
/// strided value per row per column.
const TILE: usize = 32;

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
    let tiles: Vec<Vec<f64>> = (0..width.div_ceil(TILE))
        .into_par_iter()
        .map(|t| {
            let (j0, j1) = (t * TILE, ((t + 1) * TILE).min(width));
            let w = j1 - j0;
            let mut cols = vec![0f64; w * n];
            // Scaling by a positive std keeps the order of the raw values, so without jitter they
            // give the sort keys (narrower for f32).
            let mut keys = if opts.sklearn_exact { Vec::new() } else { vec![0u64; w * n] };
            for i in 0..n {
                for (dj, v) in p[i * width + j0..i * width + j1].iter().enumerate() {
                    cols[dj * n + i] = v.to_f64();
                    if let Some(k) = keys.get_mut(dj * n + i) {
                        *k = v.order_key();
                    }
                }
            }
            let mut ws = Workspace::default();
            cols.chunks_mut(n)
                .enumerate()
                .map(|(dj, col)| {
                    scale_column_in(col, &mut ws.squares);
                    if let (true, Some(eps)) = (opts.sklearn_exact, jitter) {
                        jitter_column(col, (0..n).map(|i| eps.at(i, first_slice + j0 + dj)));
                    }
                    let col_keys = (!keys.is_empty()).then(|| &keys[dj * n..(dj + 1) * n]);
                    ksg_mi_1d_in(&mut ws, col, col_keys, classes, opts.n_neighbors, opts.sklearn_exact)
                })
                .collect()
        })
        .collect();
    Ok(tiles.concat())
}

/// KSG MI of every column of an n × K matrix in one call (the jitter then spans all K columns, as
/// one scikit-learn call does).
pub fn ksg_mi_matrix<T: ProjElem>(p: &[T], n: usize, slices: usize, classes: &Classes, opts: &KsgOptions) -> Result<Vec<f64>> {
    let jitter = opts.sklearn_exact.then(|| Jitter::new(n, slices));
    ksg_mi_columns(p, n, slices, classes, opts, jitter.as_ref(), 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smi::project::ProjElem;

    #[test]
    fn radix_sort_equals_comparison_sort() {
        let mut rng = crate::rng::Stream::new(5, crate::rng::purpose::MISC, 0);
        for n in [3usize, 511, 512, 5000] {
            // Normals, exact duplicates, ±0 and a constant high part (skipped digits).
            let vals: Vec<f64> = (0..n)
                .map(|i| match i % 7 {
                    0 => 0.0,
                    1 => -0.0,
                    2 => 1.5,
                    _ => rng.normal() * 10f64.powi((i % 5) as i32 - 2),
                })
                .collect();
            let mut a: Vec<(u64, u32)> = vals.iter().enumerate().map(|(i, &v)| (order_key(v), i as u32)).collect();
            let mut b = a.clone();
            sort_pairs(&mut a);
            b.sort_unstable();
            assert_eq!(a, b, "n = {n}");
            assert!(a.windows(2).all(|w| vals[w[0].1 as usize] <= vals[w[1].1 as usize]));
        }
    }

    #[test]
    fn packed_radix_sort_equals_comparison_sort() {
        let mut rng = crate::rng::Stream::new(6, crate::rng::purpose::MISC, 0);
        for n in [3usize, 511, 512, 5000] {
            // f32 keys with duplicates, ±0 and a shared high digit (skipped).
            let keys: Vec<u64> = (0..n)
                .map(|i| match i % 5 {
                    0 => 0f32.order_key(),
                    1 => (-0f32).order_key(),
                    2 => 1.5f32.order_key(),
                    _ => ((rng.normal() as f32) * 1e-3 + 1.0).order_key(),
                })
                .collect();
            let mut a: Vec<u64> = keys.iter().enumerate().map(|(i, &k)| k << 32 | i as u64).collect();
            let mut b = a.clone();
            sort_packed(&mut a, &mut Vec::new());
            b.sort_unstable();
            assert_eq!(a, b, "n = {n}");
        }
    }

    /// The f32 sort keys give exactly the MI of sorting the scaled f64 values (ties, ±0 included).
    #[test]
    fn f32_keys_give_the_same_mi_as_f64_keys() {
        let mut rng = crate::rng::Stream::new(9, crate::rng::purpose::MISC, 0);
        let (n, width) = (700, 5);
        let labels: Vec<i64> = (0..n).map(|i| (i % 3) as i64 + if i == 5 { 7 } else { 0 }).collect();
        let classes = Classes::new(&labels).unwrap();
        let p: Vec<f32> = (0..n * width)
            .map(|i| match i % 11 {
                0 => 0.0,
                1 => -0.0,
                2 => 0.25,
                _ => (rng.normal() + (labels[i / width] as f64) * 0.3) as f32,
            })
            .collect();
        let opts = KsgOptions { n_neighbors: 3, sklearn_exact: false };
        let keyed = ksg_mi_columns(&p, n, width, &classes, &opts, None, 0).unwrap();
        for (j, &mi) in keyed.iter().enumerate() {
            let mut col: Vec<f64> = (0..n).map(|i| p[i * width + j] as f64).collect();
            scale_column(&mut col);
            assert_eq!(mi, ksg_mi_1d(&col, &classes, 3, false), "slice {j}");
        }
        for (a, b) in [(-1.5f32, -0.5f32), (-0.0, 0.0), (0.0, 1e-30), (3.0, f32::MAX)] {
            assert!(a.order_key() < b.order_key(), "{a} < {b}");
        }
    }

    #[test]
    fn gallop_counts_leading_trues() {
        for len in 0..40 {
            for c in 0..=len {
                assert_eq!(gallop(len, |o| o <= c), c);
            }
        }
    }
}
