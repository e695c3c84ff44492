//! Pointwise sliced MI (smi.md §3, §4): per (class, slice) Gaussian fits from mergeable statistics,
//! log-domain scoring, per-sample aggregation over slices, and the `psmi` package's auto mode.
//!
//! Degenerate slices: when some class is constant on a slice (σ = 0, up to the rounding of its mean:
//! σ ≤ 64·ε·|μ|) the slice is excluded for every sample and the count is reported
//! ([`PsmiScores::excluded`]); if no slice is left it is an error.

use super::directions::Directions;
use super::ksg::{ksg_mi_columns, Jitter, KsgOptions};
use super::project::{Dense, ProjElem, Project};
use super::stats::{mean_std, quantile_linear};
use super::{check_counts, Classes};
use crate::error::{Error, Result};
use rayon::prelude::*;

/// Which standard deviation a class Gaussian uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Ddof {
    /// Population std (numpy `.std()`, the `psmi` package; memsieve's default).
    Zero,
    /// Unbiased std (torch `.std()`, the LLM code).
    One,
}

impl Ddof {
    pub fn from_u8(v: u8) -> Result<Ddof> {
        match v {
            0 => Ok(Ddof::Zero),
            1 => Ok(Ddof::One),
            _ => Err(Error::Input(format!("ddof must be 0 or 1, not {v}"))),
        }
    }
}

/// Per (class, slice) count, mean and M2 (sum of squared deviations), f64, mergeable (Chan et al.).
#[derive(Clone, Debug, PartialEq)]
pub struct ClassSliceStats {
    pub classes: usize,
    pub slices: usize,
    /// Samples per class (the same on every slice).
    pub count: Vec<u64>,
    /// [c·slices + j]
    pub mean: Vec<f64>,
    pub m2: Vec<f64>,
}

/// σ at or below this multiple of |μ| is a constant class (f64 rounding of a mean of equal values
/// leaves M2 of order (ε·μ)²); distinct f32 projections differ by at least 2⁻²⁴ relative.
const DEGENERATE_REL_SIGMA: f64 = 64.0 * f64::EPSILON;

/// Rows per statistics chunk: each chunk is summed in two passes, then chunks are merged in order.
/// Device backends compute the same per-chunk statistics (`Op::SmiClassStats`), so the host merge
/// order, and with it every result, is the same for any sample chunking or sharding.
pub const STATS_ROWS: usize = 1024;

impl ClassSliceStats {
    pub fn empty(classes: usize, slices: usize) -> Self {
        ClassSliceStats { classes, slices, count: vec![0; classes], mean: vec![0.0; classes * slices], m2: vec![0.0; classes * slices] }
    }

    /// Statistics of the rows of `p` (rows × slices, row-major); `class_of` gives each row's class.
    pub fn of_rows<T: ProjElem>(p: &[T], slices: usize, class_of: &[u32], classes: usize) -> Self {
        let mut s = Self::empty(classes, slices);
        let mut sum = vec![0f64; classes * slices];
        for (row, &c) in p.chunks(slices).zip(class_of) {
            s.count[c as usize] += 1;
            let acc = &mut sum[c as usize * slices..][..slices];
            for (a, v) in acc.iter_mut().zip(row) {
                *a += v.to_f64();
            }
        }
        for c in 0..classes {
            if s.count[c] > 0 {
                let inv = 1.0 / s.count[c] as f64;
                for j in 0..slices {
                    s.mean[c * slices + j] = sum[c * slices + j] * inv;
                }
            }
        }
        for (row, &c) in p.chunks(slices).zip(class_of) {
            let base = c as usize * slices;
            for (j, v) in row.iter().enumerate() {
                let dev = v.to_f64() - s.mean[base + j];
                s.m2[base + j] += dev * dev;
            }
        }
        s
    }

    /// Statistics of a whole n × slices projection block (row chunks in parallel, merged in order so
    /// the result never depends on the thread count).
    pub fn of_block<T: ProjElem>(p: &[T], slices: usize, classes: &Classes) -> Self {
        let parts: Vec<Self> = p
            .par_chunks(STATS_ROWS * slices)
            .zip(classes.of_sample.par_chunks(STATS_ROWS))
            .map(|(rows, cls)| Self::of_rows(rows, slices, cls, classes.len()))
            .collect();
        let mut total = Self::empty(classes.len(), slices);
        for part in &parts {
            total.merge(part).expect("same shape by construction");
        }
        total
    }

    /// Chan's parallel update: self ← self ∪ other.
    pub fn merge(&mut self, other: &Self) -> Result<()> {
        if self.classes != other.classes || self.slices != other.slices {
            return Err(Error::Input(format!(
                "cannot merge statistics of {}×{} with {}×{} (classes × slices)",
                self.classes, self.slices, other.classes, other.slices
            )));
        }
        for c in 0..self.classes {
            let (na, nb) = (self.count[c] as f64, other.count[c] as f64);
            if nb == 0.0 {
                continue;
            }
            let n = na + nb;
            for j in 0..self.slices {
                let idx = c * self.slices + j;
                let delta = other.mean[idx] - self.mean[idx];
                self.mean[idx] += delta * nb / n;
                self.m2[idx] += other.m2[idx] + delta * delta * na * nb / n;
            }
            self.count[c] += other.count[c];
        }
        Ok(())
    }

    /// Gaussian model per (slice, class) with the chosen std convention.
    pub fn model(&self, ddof: Ddof) -> SliceModel {
        let (cs, ks) = (self.classes, self.slices);
        let n: u64 = self.count.iter().sum();
        let mut m = SliceModel { classes: cs, slices: ks, mu: vec![0.0; cs * ks], inv_sigma: vec![0.0; cs * ks], log_weight: vec![0.0; cs * ks], log_prior: vec![0.0; cs], degenerate: vec![false; ks] };
        for c in 0..cs {
            let nc = self.count[c] as f64;
            let ln_pi = (nc / n as f64).ln();
            m.log_prior[c] = ln_pi;
            let denom = match ddof {
                Ddof::Zero => nc,
                Ddof::One => nc - 1.0,
            };
            for j in 0..ks {
                let sigma = (self.m2[c * ks + j] / denom).sqrt();
                let at = j * cs + c;
                let mu = self.mean[c * ks + j];
                m.mu[at] = mu;
                // A constant class leaves only the rounding of its mean in M2 (σ ~ ε·|μ|), not 0.
                if sigma > DEGENERATE_REL_SIGMA * mu.abs() && sigma.is_finite() {
                    m.inv_sigma[at] = 1.0 / sigma;
                    m.log_weight[at] = ln_pi - sigma.ln();
                } else {
                    m.degenerate[j] = true;
                }
            }
        }
        m
    }

    /// σ_cj for tests and reports.
    pub fn sigma(&self, c: usize, j: usize, ddof: Ddof) -> f64 {
        let nc = self.count[c] as f64;
        let denom = if ddof == Ddof::One { nc - 1.0 } else { nc };
        (self.m2[c * self.slices + j] / denom).sqrt()
    }
}

/// Per (slice j, class c) Gaussian, laid out [j·C + c] so one sample's scoring reads memory in order.
#[derive(Clone, Debug)]
pub struct SliceModel {
    pub classes: usize,
    pub slices: usize,
    pub mu: Vec<f64>,
    pub inv_sigma: Vec<f64>,
    /// ln π_c − ln σ_cj: the class term of the log mixture (the −½ ln 2π constant cancels).
    pub log_weight: Vec<f64>,
    /// ln π_c per class.
    pub log_prior: Vec<f64>,
    /// σ = 0 for some class: the slice is excluded.
    pub degenerate: Vec<bool>,
}

/// pmi of one projection value p of a sample of class `y` on one slice:
/// ℓ_y − LSE_c(ln π_c + ℓ_c), with ℓ_c = −½((p−μ_c)/σ_c)² − ln σ_c, max-shifted.
/// `log_weight[c]` = ln π_c − ln σ_c, so term(c) = ln π_c + ℓ_c and ℓ_y = term(y) − ln π_y.
/// `terms` is scratch of length C (each term is computed once).
#[inline]
pub fn pmi_one(p: f64, y: usize, mu: &[f64], inv_sigma: &[f64], log_weight: &[f64], log_prior_y: f64, terms: &mut [f64]) -> f64 {
    let mut max = f64::NEG_INFINITY;
    for (c, t) in terms.iter_mut().enumerate() {
        let z = (p - mu[c]) * inv_sigma[c];
        *t = -0.5 * z * z + log_weight[c];
        max = max.max(*t);
    }
    let sum: f64 = terms.iter().map(|t| (t - max).exp()).sum();
    (terms[y] - log_prior_y) - (max + sum.ln())
}

/// Slices scored together: one vector of f64 lanes per class term.
const LANES: usize = 8;

/// Score an n × kb projection block into pmi values (f32, same layout). Degenerate slices get NaN.
/// Same expression as [`pmi_one`], evaluated [`LANES`] slices at a time from a class-major copy of
/// the model with the vectorizable exp/ln of [`super::vmath`].
pub fn score_block<T: ProjElem>(p: &[T], kb: usize, classes: &Classes, model: &SliceModel) -> Vec<f32> {
    let cs = classes.len();
    // [c][j], each class's row padded to whole lane groups (padding: μ 0, 1/σ 0, weight 0).
    let groups = kb.div_ceil(LANES);
    let width = groups * LANES;
    let (mut mu, mut inv, mut lw) = (vec![0f64; cs * width], vec![0f64; cs * width], vec![0f64; cs * width]);
    for j in 0..kb {
        for c in 0..cs {
            mu[c * width + j] = model.mu[j * cs + c];
            inv[c * width + j] = model.inv_sigma[j * cs + c];
            lw[c * width + j] = model.log_weight[j * cs + c];
        }
    }
    let mut out = vec![0f32; p.len()];
    out.par_chunks_mut(kb).zip(p.par_chunks(kb)).zip(classes.of_sample.par_iter()).for_each(|((o, row), &y)| {
        let y = y as usize;
        for g in 0..groups {
            let j0 = g * LANES;
            let lanes = LANES.min(kb - j0);
            let mut x = [0f64; LANES];
            for (xv, v) in x.iter_mut().zip(&row[j0..j0 + lanes]) {
                *xv = v.to_f64();
            }
            let pmi = score_group(&x, y, cs, width, j0, &mu, &inv, &lw, model.log_prior[y]);
            for l in 0..lanes {
                o[j0 + l] = if model.degenerate[j0 + l] { f32::NAN } else { pmi[l] as f32 };
            }
        }
    });
    out
}

/// pmi of one sample (class y) on LANES slices from j0: ℓ_y − LSE_c(ln π_c + ℓ_c), the class
/// terms recomputed per pass (3 flops) rather than stored. Model arrays are class-major, rows `width`.
#[allow(clippy::too_many_arguments)]
#[inline(never)]
fn score_group(x: &[f64; LANES], y: usize, cs: usize, width: usize, j0: usize, mu: &[f64], inv: &[f64], lw: &[f64], log_prior_y: f64) -> [f64; LANES] {
    let at = |c: usize| c * width + j0;
    let mut max = [f64::NEG_INFINITY; LANES];
    for c in 0..cs {
        let t = class_terms(x, &mu[at(c)..], &inv[at(c)..], &lw[at(c)..]);
        for l in 0..LANES {
            max[l] = max[l].max(t[l]);
        }
    }
    let mut sum = [0f64; LANES];
    for c in 0..cs {
        let t = class_terms(x, &mu[at(c)..], &inv[at(c)..], &lw[at(c)..]);
        for l in 0..LANES {
            sum[l] += super::vmath::exp_nonpos(t[l] - max[l]);
        }
    }
    let ty = class_terms(x, &mu[at(y)..], &inv[at(y)..], &lw[at(y)..]);
    std::array::from_fn(|l| (ty[l] - log_prior_y) - (max[l] + super::vmath::ln_ge1(sum[l])))
}

/// term_c = −½((x−μ_c)/σ_c)² + ln π_c − ln σ_c on LANES slices (the class's model rows from j0).
#[inline(always)]
fn class_terms(x: &[f64; LANES], mu: &[f64], inv_sigma: &[f64], log_weight: &[f64]) -> [f64; LANES] {
    let (mu, inv_sigma, log_weight) = (&mu[..LANES], &inv_sigma[..LANES], &log_weight[..LANES]);
    let mut t = [0f64; LANES];
    for l in 0..LANES {
        let z = (x[l] - mu[l]) * inv_sigma[l];
        t[l] = -0.5 * z * z + log_weight[l];
    }
    t
}

/// Options of a PSMI run.
#[derive(Clone, Debug)]
pub struct PsmiOptions {
    pub ddof: Ddof,
    /// Slices per projection block (bounds memory at n × block values of the projection type).
    pub block: usize,
    /// Also compute the per-slice KSG MI (dataset-level SMI) on the same projections.
    pub ksg: Option<KsgOptions>,
}

impl Default for PsmiOptions {
    fn default() -> Self {
        PsmiOptions { ddof: Ddof::Zero, block: 500, ksg: None }
    }
}

/// One slice block's output.
#[derive(Clone, Debug)]
struct Block {
    /// n × width pmi values (NaN on excluded slices).
    pmi: Vec<f32>,
    width: usize,
    degenerate: Vec<bool>,
    ksg_mi: Vec<f64>,
}

/// Per-sample PSMI scores over all kept slices.
#[derive(Clone, Debug)]
pub struct PsmiScores {
    pub samples: usize,
    /// Slices drawn (including excluded ones).
    pub slices: usize,
    /// Indices of slices excluded because some class was constant on them.
    pub excluded: Vec<usize>,
    /// Mean PSMI per sample (the published score).
    pub mean: Vec<f64>,
    /// Population std (ddof 0) over slices.
    pub std: Vec<f64>,
    /// Quantile 0.01 ("min") and 0.99 ("max") over slices, numpy linear.
    pub q01: Vec<f64>,
    pub q99: Vec<f64>,
    /// Per-slice KSG MI (when asked for), one per drawn slice.
    pub ksg_mi: Vec<f64>,
    /// Auto mode: whether the stopping rule was met (always true for a fixed K).
    pub converged: bool,
    blocks: Vec<Block>,
}

impl PsmiScores {
    /// pmi of sample i on slice j (NaN on excluded slices).
    pub fn pmi(&self, i: usize, j: usize) -> f32 {
        let mut j = j;
        for b in &self.blocks {
            if j < b.width {
                return b.pmi[i * b.width + j];
            }
            j -= b.width;
        }
        f32::NAN
    }

    /// The full n × K pmi matrix (NaN columns for excluded slices).
    pub fn pmi_matrix(&self) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.samples * self.slices);
        for i in 0..self.samples {
            for b in &self.blocks {
                out.extend_from_slice(&b.pmi[i * b.width..(i + 1) * b.width]);
            }
        }
        out
    }
}

/// Directions, projection, statistics, optional KSG and scoring of slices [j0, j1).
fn run_block<X: Project>(x: &X, classes: &Classes, dirs: &Directions, j0: usize, j1: usize, opts: &PsmiOptions, jitter: Option<&Jitter>) -> Result<Block> {
    let (n, _) = x.shape();
    let width = j1 - j0;
    let p = x.project_block(&dirs.block(j0, j1)?, width)?;
    let stats = ClassSliceStats::of_block(&p, width, classes);
    let model = stats.model(opts.ddof);
    let ksg_mi = match &opts.ksg {
        Some(k) => ksg_mi_columns(&p, n, width, classes, k, jitter, j0)?,
        None => Vec::new(),
    };
    let pmi = score_block(&p, width, classes, &model);
    Ok(Block { pmi, width, degenerate: model.degenerate, ksg_mi })
}

pub(crate) fn check_inputs<X: Project>(x: &X, classes: &Classes, dirs: &Directions) -> Result<()> {
    let (n, d) = x.shape();
    check_counts(n, classes.samples())?;
    x.check()?;
    classes.require_two_per_class()?;
    if dirs.dim() != d {
        return Err(Error::Input(format!("directions have dimension {}, features {d}", dirs.dim())));
    }
    Ok(())
}

/// (mean, std, quantile 0.01, quantile 0.99) of one sample's kept pmi values (reordered).
pub fn summarize_row(values: &mut [f64]) -> [f64; 4] {
    let (mean, std) = mean_std(values);
    let q01 = quantile_linear(values, 0.01);
    let q99 = quantile_linear(values, 0.99);
    [mean, std, q01, q99]
}

impl PsmiScores {
    /// Scores from per-sample summaries `rows[i]` = [`summarize_row`]. Alone (the device pipeline's
    /// result) it keeps no pmi matrix: `pmi` is NaN and `pmi_matrix` empty.
    pub fn from_summaries(rows: &[[f64; 4]], slices: usize, excluded: Vec<usize>, ksg_mi: Vec<f64>) -> PsmiScores {
        PsmiScores {
            samples: rows.len(),
            slices,
            excluded,
            mean: rows.iter().map(|r| r[0]).collect(),
            std: rows.iter().map(|r| r[1]).collect(),
            q01: rows.iter().map(|r| r[2]).collect(),
            q99: rows.iter().map(|r| r[3]).collect(),
            ksg_mi,
            converged: true,
            blocks: Vec::new(),
        }
    }
}

/// Aggregate blocks into per-sample scores over kept slices.
fn aggregate(n: usize, blocks: Vec<Block>, converged: bool) -> Result<PsmiScores> {
    let slices: usize = blocks.iter().map(|b| b.width).sum();
    let excluded: Vec<usize> = blocks.iter().flat_map(|b| b.degenerate.iter().copied()).enumerate().filter(|(_, d)| *d).map(|(j, _)| j).collect();
    if excluded.len() == slices {
        return Err(Error::Numerical(format!("all {slices} slices are degenerate (some class is constant on every slice)")));
    }
    let mut rows: Vec<[f64; 4]> = vec![[0.0; 4]; n];
    rows.par_iter_mut().enumerate().for_each_init(Vec::new, |scratch: &mut Vec<f64>, (i, out)| {
        scratch.clear();
        for b in &blocks {
            let row = &b.pmi[i * b.width..(i + 1) * b.width];
            scratch.extend(row.iter().zip(&b.degenerate).filter(|(_, &deg)| !deg).map(|(&v, _)| v as f64));
        }
        *out = summarize_row(scratch);
    });
    let ksg_mi = blocks.iter().flat_map(|b| b.ksg_mi.iter().copied()).collect();
    Ok(PsmiScores { converged, blocks, ..PsmiScores::from_summaries(&rows, slices, excluded, ksg_mi) })
}

/// PSMI of every sample over `slices` directions (fixed K). `x` is n × d row-major.
/// `progress(done, total)` is called after each slice block.
#[allow(clippy::too_many_arguments)]
pub fn psmi<T: ProjElem>(x: &[T], n: usize, d: usize, classes: &Classes, dirs: &Directions, slices: usize, opts: &PsmiOptions, progress: &(dyn Fn(usize, usize) + Sync)) -> Result<PsmiScores> {
    psmi_of(&Dense { x, n, d }, classes, dirs, slices, opts, progress)
}

/// [`psmi`] on features of any projection precision (dense f32/f64, or bf16).
pub fn psmi_of<X: Project>(x: &X, classes: &Classes, dirs: &Directions, slices: usize, opts: &PsmiOptions, progress: &(dyn Fn(usize, usize) + Sync)) -> Result<PsmiScores> {
    check_inputs(x, classes, dirs)?;
    let (n, _) = x.shape();
    if slices == 0 {
        return Err(Error::Input("need at least one slice".into()));
    }
    if let Some(avail) = dirs.available() {
        if avail < slices {
            return Err(Error::Input(format!("{slices} slices asked for but only {avail} directions supplied")));
        }
    }
    let block = opts.block.max(1);
    let jitter = match &opts.ksg {
        Some(k) if k.sklearn_exact => Some(Jitter::new(n, slices)),
        _ => None,
    };
    let mut blocks = Vec::new();
    for j0 in (0..slices).step_by(block) {
        let j1 = (j0 + block).min(slices);
        blocks.push(run_block(x, classes, dirs, j0, j1, opts, jitter.as_ref())?);
        progress(j1, slices);
    }
    aggregate(n, blocks, true)
}

/// Options of the `psmi` package's auto mode (smi.md §4).
#[derive(Clone, Debug)]
pub struct AutoOptions {
    /// Directions per block (`min_n_estimators`).
    pub block: usize,
    pub lowest_quantile: f64,
    pub max_variation: f64,
    pub milestone: f64,
    /// Hard cap on blocks (the reference has none and can loop forever).
    pub max_blocks: usize,
}

impl Default for AutoOptions {
    fn default() -> Self {
        AutoOptions { block: 500, lowest_quantile: 0.05, max_variation: 0.05, milestone: 0.5, max_blocks: 40 }
    }
}

/// Mean of the kept pmi values of each row of a block (NaN if every slice of the block is excluded).
fn block_row_means(b: &Block, n: usize) -> Vec<f64> {
    (0..n)
        .map(|i| {
            let row = &b.pmi[i * b.width..(i + 1) * b.width];
            let kept: Vec<f64> = row.iter().zip(&b.degenerate).filter(|(_, &deg)| !deg).map(|(&v, _)| v as f64).collect();
            kept.iter().sum::<f64>() / kept.len() as f64
        })
        .collect()
}

/// The auto stopping rule on per-block means `block_means[b][i]`: mean over the ⌊q·n⌋ (at least 1)
/// samples of lowest full mean of |mean of the first ⌊milestone·b⌋ blocks − full| / |full|.
/// None while fewer than 2 milestone blocks exist.
pub fn auto_criterion(block_means: &[Vec<f64>], n: usize, a: &AutoOptions) -> Option<f64> {
    let b = block_means.len();
    let b_m = (a.milestone * b as f64) as usize;
    if b_m == 0 {
        return None;
    }
    let mean_of = |upto: usize, i: usize| block_means[..upto].iter().map(|m| m[i]).sum::<f64>() / upto as f64;
    let full: Vec<f64> = (0..n).map(|i| mean_of(b, i)).collect();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&p, &q| full[p].total_cmp(&full[q]));
    let lowest = ((a.lowest_quantile * n as f64) as usize).max(1).min(n);
    let variation: f64 = order[..lowest].iter().map(|&i| ((mean_of(b_m, i) - full[i]) / full[i]).abs()).sum::<f64>() / lowest as f64;
    Some(variation)
}

/// Auto mode: add blocks of `auto.block` directions until the lowest-PSMI samples stabilise
/// (or `max_blocks` is reached: `converged` false). Final scores use every direction drawn.
#[allow(clippy::too_many_arguments)]
pub fn psmi_auto<T: ProjElem>(x: &[T], n: usize, d: usize, classes: &Classes, dirs: &Directions, opts: &PsmiOptions, auto: &AutoOptions, progress: &(dyn Fn(usize, usize) + Sync)) -> Result<PsmiScores> {
    psmi_auto_of(&Dense { x, n, d }, classes, dirs, opts, auto, progress)
}

/// [`psmi_auto`] on features of any projection precision.
pub fn psmi_auto_of<X: Project>(x: &X, classes: &Classes, dirs: &Directions, opts: &PsmiOptions, auto: &AutoOptions, progress: &(dyn Fn(usize, usize) + Sync)) -> Result<PsmiScores> {
    check_inputs(x, classes, dirs)?;
    let (n, _) = x.shape();
    if auto.block == 0 || auto.max_blocks == 0 {
        return Err(Error::Input("auto mode needs a positive block size and block cap".into()));
    }
    if opts.ksg.as_ref().is_some_and(|k| k.sklearn_exact) {
        return Err(Error::Input("the exact scikit-learn jitter needs K up front; auto mode cannot emulate it".into()));
    }
    let mut blocks = Vec::new();
    let mut means = Vec::new();
    let mut converged = false;
    while blocks.len() < auto.max_blocks {
        let j0 = blocks.len() * auto.block;
        if dirs.available().is_some_and(|avail| avail < j0 + auto.block) {
            return Err(Error::Input(format!("auto mode ran out of supplied directions after {j0}")));
        }
        let b = run_block(x, classes, dirs, j0, j0 + auto.block, opts, None)?;
        means.push(block_row_means(&b, n));
        blocks.push(b);
        progress(blocks.len() * auto.block, auto.max_blocks * auto.block);
        if auto_criterion(&means, n, auto).is_some_and(|v| v <= auto.max_variation) {
            converged = true;
            break;
        }
    }
    aggregate(n, blocks, converged)
}
