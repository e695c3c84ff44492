//! Dataset-level SMI: the 1-D KSG/Ross MI between each slice and the labels, exactly as
//! scikit-learn's `mutual_info_classif(n_neighbors=k, random_state=0)` computes it (smi.md §5),
//! with sorting instead of trees: O(n log n) per slice, slices in parallel.

use super::mt19937::Mt19937;
use super::project::ProjElem;
use super::stats::{digamma_int, digamma_table, numpy_column_sum};
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

/// Sentinels on each side of the global array, a whole chunk of the ball counts: they end every
/// count, so the chunked reads need no bounds tests.
const LANES: usize = 8;

/// Buffers of [`ksg_mi_1d_in`], reused across the columns of a tile.
#[derive(Default)]
struct Workspace {
    squares: Vec<f64>,
    packed: Vec<u64>,
    packed_scratch: Vec<u64>,
    pairs: Vec<(u64, u32)>,
    /// Sample indices in global (value) order.
    order: Vec<u32>,
    /// Values in global order, between LANES −∞ and LANES +∞.
    global: Vec<f64>,
    /// Each class's values ascending, between k −∞ and k +∞, and their positions in `global`.
    class_vals: Vec<f64>,
    class_gpos: Vec<u32>,
    /// Start of each class's values in `class_vals`, and the next free slot while filling.
    start: Vec<usize>,
    fill: Vec<usize>,
}

/// k-th nearest distance (1-based) of vals[q] in an ascending class array with at least k −∞
/// before and k +∞ after: the k-th smallest of the left distances L_1 ≤ L_2 ≤ … and the right ones
/// R_1 ≤ R_2 ≤ … is min over a + b = k of max(L_a, R_b) (L_0 = R_0 = 0). Branch-free, and the same
/// value as merging both sides (the sentinels' distances are +∞).
#[inline]
fn kth_padded_distance(vals: &[f64], q: usize, k: usize) -> f64 {
    let x = vals[q];
    let mut d = vals[q + k] - x;
    for a in 1..=k {
        let left = x - vals[q - a];
        let split = if a == k { left } else { left.max_plain(vals[q + k - a] - x) };
        d = d.min_plain(split);
    }
    d
}

/// max/min without the NaN rules of f64::max (the values here are never NaN): one instruction.
trait PlainMinMax {
    fn max_plain(self, other: Self) -> Self;
    fn min_plain(self, other: Self) -> Self;
}

impl PlainMinMax for f64 {
    #[inline]
    fn max_plain(self, other: f64) -> f64 {
        if self > other {
            self
        } else {
            other
        }
    }
    #[inline]
    fn min_plain(self, other: f64) -> f64 {
        if self < other {
            self
        } else {
            other
        }
    }
}

/// Bit t set where x − chunk[t] ≤ r (`left`) or chunk[t] − x ≤ r: one vector compare into a mask
/// (LLVM does not find it in the portable loop).
#[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
#[inline]
fn within_mask<const LEFT: bool>(chunk: &[f64; LANES], x: f64, r: f64) -> u32 {
    use std::arch::x86_64::*;
    // SAFETY: the load reads the 8 doubles of `chunk`; AVX-512F is enabled at compile time.
    unsafe {
        let v = _mm512_loadu_pd(chunk.as_ptr());
        let xs = _mm512_set1_pd(x);
        let d = if LEFT { _mm512_sub_pd(xs, v) } else { _mm512_sub_pd(v, xs) };
        _mm512_cmp_pd_mask::<_CMP_LE_OQ>(d, _mm512_set1_pd(r)) as u32
    }
}

#[cfg(not(all(target_arch = "x86_64", target_feature = "avx512f")))]
#[inline]
fn within_mask<const LEFT: bool>(chunk: &[f64; LANES], x: f64, r: f64) -> u32 {
    chunk.iter().enumerate().fold(0, |m, (t, &v)| m | (((if LEFT { x - v } else { v - x }) <= r) as u32) << t)
}

/// Samples j < g of the padded ascending `global` with x − global[j] ≤ r, counted a chunk at a
/// time: the predicate holds on a run ending at g − 1, so a chunk that is not all true ends it.
#[inline]
fn count_left(global: &[f64], g: usize, x: f64, r: f64) -> usize {
    let mut c = 0;
    loop {
        let chunk: &[f64; LANES] = global[g - c - LANES..g - c].try_into().expect("chunk");
        let m = within_mask::<true>(chunk, x, r).count_ones() as usize;
        c += m;
        if m < LANES {
            return c;
        }
    }
}

/// Samples j > g with global[j] − x ≤ r (the mirror of [`count_left`]).
#[inline]
fn count_right(global: &[f64], g: usize, x: f64, r: f64) -> usize {
    let mut c = 0;
    loop {
        let chunk: &[f64; LANES] = global[g + 1 + c..g + 1 + c + LANES].try_into().expect("chunk");
        let m = within_mask::<false>(chunk, x, r).count_ones() as usize;
        c += m;
        if m < LANES {
            return c;
        }
    }
}

/// 1-D KSG/Ross MI (nats) of one already scaled (and possibly jittered) column against the labels.
/// Singleton classes are dropped; the result is clipped at 0. `brute_quirk` reproduces scikit-learn's
/// brute-force distances on classes where its `NearestNeighbors` picks them (k_c ≥ ⌊n_c/2⌋).
///
/// One sort per slice: the global order, then a stable counting pass by class gives each class's
/// sorted values and every element's global position, so radii come from neighbours in the class
/// array and counts from scanning outwards in the global array with the exact predicate
/// |x_j − x_i| ≤ r_i.
pub fn ksg_mi_1d(x: &[f64], classes: &Classes, k: usize, brute_quirk: bool) -> f64 {
    ksg_mi_1d_in(&mut Workspace::default(), x, |i| order_key(x[i]), false, classes, k, brute_quirk)
}

/// [`ksg_mi_1d`] with sort keys `key(i)` ordered like `x` (ties included). Keys of the unscaled f32
/// projections have 32 significant bits (`narrow`): packed with the index, the radix sort makes 3
/// passes over single words instead of 6 over pairs.
fn ksg_mi_1d_in(ws: &mut Workspace, x: &[f64], key: impl Fn(usize) -> u64, narrow: bool, classes: &Classes, k: usize, brute_quirk: bool) -> f64 {
    let (counts, of_sample) = (&classes.counts, &classes.of_sample);
    let all_kept = counts.iter().all(|&nc| nc != 1);
    let kept_samples = (0..x.len()).filter(|&i| all_kept || counts[of_sample[i] as usize] >= 2);
    ws.order.clear();
    if narrow {
        ws.packed.clear();
        ws.packed.extend(kept_samples.map(|i| key(i) << 32 | i as u64));
        sort_packed(&mut ws.packed, &mut ws.packed_scratch);
        ws.order.extend(ws.packed.iter().map(|&item| item as u32));
    } else {
        ws.pairs.clear();
        ws.pairs.extend(kept_samples.map(|i| (key(i), i as u32)));
        sort_pairs(&mut ws.pairs);
        ws.order.extend(ws.pairs.iter().map(|&(_, i)| i));
    }
    let kept = ws.order.len();
    if kept == 0 {
        return 0.0;
    }
    // Class segments, each between k sentinels (k_c ≤ k).
    ws.start.clear();
    let mut len = 0;
    for &nc in counts {
        ws.start.push(len + k);
        len += 2 * k + if nc >= 2 { nc } else { 0 };
    }
    let class_vals = &mut ws.class_vals;
    class_vals.clear();
    class_vals.resize(len, f64::NEG_INFINITY);
    ws.class_gpos.resize(len, 0);
    for (c, &nc) in counts.iter().enumerate().filter(|&(_, &nc)| nc >= 2) {
        let s = ws.start[c] + nc;
        class_vals[s..s + k].fill(f64::INFINITY);
    }
    let global = &mut ws.global;
    global.clear();
    global.resize(kept + 2 * LANES, f64::NEG_INFINITY);
    global[LANES + kept..].fill(f64::INFINITY);
    ws.fill.clone_from(&ws.start);
    for (g, &i) in ws.order.iter().enumerate() {
        let v = x[i as usize];
        global[LANES + g] = v;
        let slot = &mut ws.fill[of_sample[i as usize] as usize];
        class_vals[*slot] = v;
        ws.class_gpos[*slot] = (LANES + g) as u32;
        *slot += 1;
    }
    let (global, class_vals) = (&ws.global, &ws.class_vals);
    let psi_table = digamma_table();
    let psi = |m: usize| psi_table.get(m).copied().unwrap_or_else(|| digamma_int(m as u64));
    let (mut sum_psi_k, mut sum_psi_nc, mut sum_psi_m) = (0f64, 0f64, 0f64);
    for (c, &nc) in counts.iter().enumerate() {
        if nc < 2 {
            continue;
        }
        let s = ws.start[c];
        let kc = k.min(nc - 1);
        let brute = brute_quirk && kc >= nc / 2;
        sum_psi_k += nc as f64 * digamma_int(kc as u64);
        sum_psi_nc += nc as f64 * digamma_int(nc as u64);
        for q in s..s + nc {
            let xi = class_vals[q];
            let d = if brute { kth_brute_distance(&class_vals[s..s + nc], q - s, kc) } else { kth_padded_distance(class_vals, q, kc) };
            let r = next_toward_zero(d);
            let g = ws.class_gpos[q] as usize;
            let m = 1 + count_left(global, g, xi, r) + count_right(global, g, xi, r);
            sum_psi_m += psi(m);
        }
    }
    let nk = kept as f64;
    let mi = digamma_int(kept as u64) + sum_psi_k / nk - sum_psi_nc / nk - sum_psi_m / nk;
    mi.max(0.0)
}

/// Columns per gather tile: reading P row by row, two cache lines of f32 at a time (prefetched),
/// into a column-major tile (1.9 MB at n = 15000, read back a column at a time), instead of one
/// strided value per row per column.
const TILE: usize = 32;

/// Rows the gather prefetches ahead: its stride (a whole row of P) defeats the hardware
/// prefetchers, and a row is a few dozen cycles of work against a DRAM latency of hundreds.
const AHEAD: usize = 24;

/// Hint that `row` is read soon: each of its cache lines.
#[inline]
fn prefetch<T>(row: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        let step = (64 / std::mem::size_of::<T>()).max(1);
        for v in row.iter().step_by(step).chain(row.last()) {
            // SAFETY: a prefetch is only a hint, and the address is that of a live element.
            unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>((v as *const T).cast()) }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = row;
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
    let k = opts.n_neighbors;
    let tiles: Vec<Vec<f64>> = (0..width.div_ceil(TILE))
        .into_par_iter()
        .map_init(
            || (Workspace::default(), Vec::<T>::new(), Vec::<f64>::new()),
            |(ws, tile, x), t| {
                let (j0, j1) = (t * TILE, ((t + 1) * TILE).min(width));
                let w = j1 - j0;
                tile.resize(w * n, T::default());
                for i in 0..n {
                    prefetch(&p[(i + AHEAD).min(n - 1) * width..][j0..j1]);
                    for (dj, &v) in p[i * width + j0..i * width + j1].iter().enumerate() {
                        tile[dj * n + i] = v;
                    }
                }
                tile.chunks(n)
                    .enumerate()
                    .map(|(dj, col)| {
                        x.clear();
                        x.extend(col.iter().map(|v| v.to_f64()));
                        scale_column_in(x, &mut ws.squares);
                        match (opts.sklearn_exact, jitter) {
                            (true, Some(eps)) => {
                                jitter_column(x, (0..n).map(|i| eps.at(i, first_slice + j0 + dj)));
                                ksg_mi_1d_in(ws, x, |i| order_key(x[i]), false, classes, k, true)
                            }
                            // Scaling by a positive std keeps the order of the raw values, so
                            // without jitter they give the sort keys (narrower for f32).
                            _ => ksg_mi_1d_in(ws, x, |i| col[i].order_key(), T::NARROW_KEY, classes, k, false),
                        }
                    })
                    .collect()
            },
        )
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

    /// Ascending values with ties and ±0, between `pad` −∞ and `pad` +∞.
    fn padded_sorted(n: usize, pad: usize, seed: u64) -> Vec<f64> {
        let mut rng = crate::rng::Stream::new(seed, crate::rng::purpose::MISC, 0);
        let mut v: Vec<f64> = (0..n).map(|i| if i % 6 == 0 { 0.5 } else if i % 11 == 0 { -0.0 } else { rng.normal() }).collect();
        v.sort_by(f64::total_cmp);
        let mut out = vec![f64::NEG_INFINITY; pad];
        out.extend(v);
        out.extend(std::iter::repeat_n(f64::INFINITY, pad));
        out
    }

    #[test]
    fn padded_kth_distance_is_the_kth_smallest() {
        for n in [2usize, 3, 7, 40] {
            for k in 1..n.min(6) {
                let vals = padded_sorted(n, k, n as u64 * 10 + k as u64);
                for q in k..k + n {
                    let x = vals[q];
                    let mut d: Vec<f64> = (k..k + n).filter(|&j| j != q).map(|j| if j < q { x - vals[j] } else { vals[j] - x }).collect();
                    d.sort_by(f64::total_cmp);
                    assert_eq!(kth_padded_distance(&vals, q, k).to_bits(), d[k - 1].to_bits(), "n {n} k {k} q {q}");
                }
            }
        }
    }

    #[test]
    fn chunked_ball_counts_equal_plain_counts() {
        for n in [1usize, 5, 8, 9, 17, 100] {
            let global = padded_sorted(n, LANES, n as u64);
            for g in LANES..LANES + n {
                let x = global[g];
                for r in [0.0, 1e-3, 0.3, 1.0, 1e300] {
                    let left = (LANES..g).filter(|&j| x - global[j] <= r).count();
                    let right = (g + 1..LANES + n).filter(|&j| global[j] - x <= r).count();
                    assert_eq!((count_left(&global, g, x, r), count_right(&global, g, x, r)), (left, right), "n {n} g {g} r {r}");
                }
            }
        }
    }
}
