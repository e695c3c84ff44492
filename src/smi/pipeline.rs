//! PSMI screening written once over `Device<B>`: every backend runs the same op sequence
//! (`Op::SmiDirections` → `SmiProject` → `SmiClassStats` → host merge → `SmiScore` → `SmiRowSummary`).
//!
//! Memory is bounded by working in chunks of samples × blocks of slices ([`plan`]). Per-part class
//! statistics (parts of `STATS_ROWS` rows) come back to the host, where they are merged in f64 with
//! Chan's update in part order — the order `ClassSliceStats::of_block` uses — so the chunking, and
//! sharding (`--shard i/N`, [`PartStats`] files merged by `memsieve screen merge`), never change a
//! result. When all samples fit in one chunk each block is projected once; otherwise a first pass
//! computes the statistics and a second projects again to score.
//!
//! The per-slice KSG MI runs on the device too (`Op::SmiKsg`): the block's projections of all samples
//! stay there (chunks are projected into their rows of one n × block buffer) and only the block's MI
//! values come back. scikit-learn's exact mode (its `RandomState(0)` jitter, n × K normals made on the
//! host) downloads the projections and runs `ksg_mi_columns` on the host instead.

use super::directions::Directions;
use super::ksg::{ksg_mi_columns, Jitter, KsgOptions};
use super::project::Dense;
use super::psmi::{check_inputs, ClassSliceStats, Ddof, PsmiScores, SliceModel, STATS_ROWS};
use super::Classes;
use crate::backend::{f64_to_words, words_to_f64, Backend, Device, Op, View};
use crate::error::{Error, Result};

/// Options of a device PSMI run.
#[derive(Clone, Debug)]
pub struct PipelineOptions {
    pub ddof: Ddof,
    /// Slices per block (at most; `max_memory` may lower it).
    pub block: usize,
    /// Also compute the per-slice KSG MI (on the device; on the host in scikit-learn's exact mode).
    pub ksg: Option<KsgOptions>,
    /// Bytes the working set may take (device buffers plus the host's per-block arrays; the loaded
    /// feature matrix itself is not counted). None: no limit.
    pub max_memory: Option<usize>,
}

/// Chunk sizes chosen for a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Slices per block.
    pub block: usize,
    /// Samples per chunk (all n, or a multiple of STATS_ROWS).
    pub chunk: usize,
    /// Estimated working set in bytes.
    pub bytes: usize,
}

/// KSG on the device (`Op::SmiKsg`) unless scikit-learn's jitter is asked for, which is host-only.
fn device_ksg(ksg: Option<&KsgOptions>) -> bool {
    ksg.is_some_and(|k| !k.sklearn_exact)
}

/// Words of `Op::SmiKsg` working space a backend wants for n samples × w slices (n, w → words).
pub type KsgScratch<'a> = &'a dyn Fn(usize, usize) -> usize;

/// Working-set bytes for chunks of `m` samples and blocks of `w` slices.
#[allow(clippy::too_many_arguments)]
fn working_set(n: usize, d: usize, slices: usize, classes: usize, m: usize, w: usize, ksg: Option<&KsgOptions>, scratch: KsgScratch) -> usize {
    let parts_m = m.div_ceil(STATS_ROWS);
    let parts_n = n.div_ceil(STATS_ROWS);
    // Device KSG keeps the block's projections of all n samples.
    let proj_rows = if device_ksg(ksg) { n } else { m };
    let mut device_words = m * d + w * d + proj_rows * w + n + slices + parts_m * 4 * classes * w + 2 * (3 * w * classes + classes) + w + m * slices + 8 * m;
    let mut host = 32 * n + parts_n * 2 * classes * slices * 8 + 3 * slices * classes * 8;
    match ksg {
        Some(k) if k.sklearn_exact => host += 4 * n * w + 24 * n + 8 * n * slices,
        Some(_) => {
            device_words += scratch(n, w) + 2 * w;
            host += 24 * n;
        }
        None => {}
    }
    4 * device_words + host
}

/// Block and chunk sizes that fit `opts.max_memory` and a device's largest view (`max_view` words),
/// with `scratch` the device's `SmiKsg` working space: full blocks over all samples if possible, then
/// narrower blocks (down to 32 slices), then sample chunks (a multiple of STATS_ROWS); a clear error
/// when nothing fits.
#[allow(clippy::too_many_arguments)]
pub fn plan(n: usize, d: usize, slices: usize, classes: usize, opts: &PipelineOptions, max_view: usize, scratch: KsgScratch) -> Result<Plan> {
    let w0 = opts.block.clamp(1, slices.max(1));
    let ws = |m: usize, w: usize| working_set(n, d, slices, classes, m, w, opts.ksg.as_ref(), scratch);
    let budget = opts.max_memory.unwrap_or(usize::MAX);
    // The largest views: the features chunk, the directions block, the projection and pmi chunks,
    // and with device KSG the block's projections of all samples and the KSG scratch.
    let ksg_fits = |w: usize| !device_ksg(opts.ksg.as_ref()) || (n.saturating_mul(w) <= max_view && scratch(n, w) <= max_view);
    let views_fit = |m: usize, w: usize| m.saturating_mul(d.max(slices)) <= max_view && w.saturating_mul(d) <= max_view && ksg_fits(w);
    let fits = |m: usize, w: usize| views_fit(m, w) && ws(m, w) <= budget;
    let mut widths = vec![w0];
    while *widths.last().unwrap() > 32.min(w0) {
        widths.push((widths.last().unwrap() / 2).max(32.min(w0)));
    }
    for &w in &widths {
        if fits(n, w) {
            return Ok(Plan { block: w, chunk: n, bytes: ws(n, w) });
        }
    }
    if n > STATS_ROWS {
        for &w in &widths {
            if fits(STATS_ROWS, w) {
                // The working set is affine in m: the largest multiple of STATS_ROWS under the budget.
                let (at1, at2) = (ws(STATS_ROWS, w), ws(2 * STATS_ROWS, w));
                let by_budget = (budget - at1) / (at2 - at1).max(1);
                let by_view = max_view / d.max(slices) / STATS_ROWS - 1;
                let m = (STATS_ROWS * (1 + by_budget.min(by_view))).min(n);
                return Ok(Plan { block: w, chunk: m, bytes: ws(m, w) });
            }
        }
    }
    let w = *widths.last().unwrap();
    let m = n.min(STATS_ROWS);
    if !views_fit(m, w) {
        return Err(Error::Backend(format!(
            "one chunk of {m} samples needs a view of {} words (d = {d}, K = {slices}), more than this backend's largest binding of {max_view} words",
            m * d.max(slices)
        )));
    }
    Err(Error::Input(format!(
        "--max-memory {budget} bytes: even one chunk of {m} samples × {w} slices needs {} bytes ({:.1} MiB; \
         d = {d}, K = {slices}, {classes} classes{})",
        ws(m, w),
        ws(m, w) as f64 / 1048576.0,
        if opts.ksg.is_some() { ", KSG on" } else { "" }
    )))
}

/// Per-part class statistics over all K slices: part p (rows p·STATS_ROWS..) of the whole dataset,
/// for parts `first_part..first_part + parts`. What a shard writes and what merging reads.
#[derive(Clone, Debug, PartialEq)]
pub struct PartStats {
    pub classes: usize,
    pub slices: usize,
    pub first_part: usize,
    pub parts: usize,
    /// [part][class][slice]
    pub mean: Vec<f64>,
    pub m2: Vec<f64>,
}

impl PartStats {
    fn empty(classes: usize, slices: usize, first_part: usize, parts: usize) -> Self {
        let len = parts * classes * slices;
        PartStats { classes, slices, first_part, parts, mean: vec![0.0; len], m2: vec![0.0; len] }
    }

    /// Store the stats of slices j0.. of part `part` (an absolute part index) from a device download.
    fn put(&mut self, part: usize, j0: usize, w: usize, mean: &[f64], m2: &[f64]) {
        let p = part - self.first_part;
        for c in 0..self.classes {
            let at = (p * self.classes + c) * self.slices + j0;
            self.mean[at..at + w].copy_from_slice(&mean[c * w..(c + 1) * w]);
            self.m2[at..at + w].copy_from_slice(&m2[c * w..(c + 1) * w]);
        }
    }

    /// Statistics of slices [j0, j1) folded over the parts in order, as `ClassSliceStats::of_block`.
    pub fn fold(&self, classes: &Classes, j0: usize, j1: usize) -> Result<ClassSliceStats> {
        let (cs, w) = (self.classes, j1 - j0);
        let mut total = ClassSliceStats::empty(cs, w);
        for p in 0..self.parts {
            let mut s = ClassSliceStats::empty(cs, w);
            let rows = (self.first_part + p) * STATS_ROWS..((self.first_part + p + 1) * STATS_ROWS).min(classes.samples());
            for &c in &classes.of_sample[rows] {
                s.count[c as usize] += 1;
            }
            for c in 0..cs {
                let at = (p * cs + c) * self.slices;
                s.mean[c * w..(c + 1) * w].copy_from_slice(&self.mean[at + j0..at + j1]);
                s.m2[c * w..(c + 1) * w].copy_from_slice(&self.m2[at + j0..at + j1]);
            }
            total.merge(&s)?;
        }
        Ok(total)
    }

    /// Parts of a shard, i of `of`, of a dataset of n samples: shards take contiguous part ranges.
    pub fn shard_parts(n: usize, shard: usize, of: usize) -> std::ops::Range<usize> {
        let parts = n.div_ceil(STATS_ROWS);
        shard * parts / of..(shard + 1) * parts / of
    }

    /// Concatenate shards (in any order) that together cover parts 0..parts exactly once.
    pub fn concat(mut shards: Vec<PartStats>, parts: usize) -> Result<PartStats> {
        shards.sort_by_key(|s| s.first_part);
        let first = shards.first().ok_or_else(|| Error::Input("no shard statistics to merge".into()))?;
        let mut all = PartStats::empty(first.classes, first.slices, 0, 0);
        for s in &shards {
            if (s.classes, s.slices) != (all.classes, all.slices) {
                return Err(Error::Input(format!(
                    "shards disagree: {} classes × {} slices vs {} × {}",
                    s.classes, s.slices, all.classes, all.slices
                )));
            }
            if s.first_part != all.parts {
                return Err(Error::Input(format!("shards leave a gap or overlap at part {} (next shard starts at {})", all.parts, s.first_part)));
            }
            all.parts += s.parts;
            all.mean.extend_from_slice(&s.mean);
            all.m2.extend_from_slice(&s.m2);
        }
        if all.parts != parts {
            return Err(Error::Input(format!("the shards cover {} of {parts} parts of {STATS_ROWS} samples", all.parts)));
        }
        Ok(all)
    }
}

/// Columns [j0, j1) of a model.
fn model_columns(m: &SliceModel, j0: usize, j1: usize) -> SliceModel {
    let cs = m.classes;
    SliceModel {
        classes: cs,
        slices: j1 - j0,
        mu: m.mu[j0 * cs..j1 * cs].to_vec(),
        inv_sigma: m.inv_sigma[j0 * cs..j1 * cs].to_vec(),
        log_weight: m.log_weight[j0 * cs..j1 * cs].to_vec(),
        log_prior: m.log_prior.clone(),
        degenerate: m.degenerate[j0..j1].to_vec(),
    }
}

/// The pipeline's device buffers, sized for one chunk × one block.
struct Bufs<B: Backend> {
    x: B::Buffer,
    dirs: B::Buffer,
    proj: B::Buffer,
    labels: B::Buffer,
    stats: B::Buffer,
    model: B::Buffer,
    excluded: B::Buffer,
    /// Excluded flags of all K slices (u32), for the per-sample summary.
    flags: B::Buffer,
    pmi: B::Buffer,
    summary: B::Buffer,
    /// Device KSG: the block's MI (f64) and the op's working space.
    ksg: Option<(B::Buffer, B::Buffer)>,
}

struct Run<'a, B: Backend> {
    dev: &'a Device<B>,
    x: &'a [f32],
    n: usize,
    d: usize,
    classes: &'a Classes,
    dirs: &'a Directions,
    slices: usize,
    plan: Plan,
    bufs: Bufs<B>,
    /// Device KSG: `proj` holds all n rows of a block (chunk i0 at row i0).
    all_rows: bool,
}

impl<'a, B: Backend> Run<'a, B> {
    fn new(dev: &'a Device<B>, inp: &Input<'a>, dirs: &'a Directions, slices: usize, plan: Plan, ksg: Option<&KsgOptions>) -> Result<Self> {
        let Input { x, n, d, classes } = *inp;
        let (m, w, cs) = (plan.chunk, plan.block, classes.len());
        let all_rows = device_ksg(ksg);
        let proj_rows = if all_rows { n } else { m };
        let scratch = if all_rows { dev.backend.smi_ksg_scratch_len(n, w, cs) } else { 0 };
        for (what, len) in [("features chunk", m * d), ("projection block", proj_rows * w), ("pmi chunk", m * slices), ("directions", w * d), ("KSG scratch", scratch)] {
            if len > dev.backend.max_view_len() {
                return Err(Error::Backend(format!(
                    "the {what} ({len} words) exceeds the {} backend's largest binding ({} words): lower --max-memory or --block",
                    dev.backend.name(),
                    dev.backend.max_view_len()
                )));
            }
        }
        let bufs = Bufs {
            x: dev.alloc(m * d)?,
            dirs: dev.alloc(w * d)?,
            proj: dev.alloc(proj_rows * w)?,
            labels: dev.alloc(n)?,
            stats: dev.alloc(m.div_ceil(STATS_ROWS) * 4 * cs * w)?,
            model: dev.alloc(2 * (3 * w * cs + cs))?,
            excluded: dev.alloc(w)?,
            flags: dev.alloc(slices)?,
            pmi: dev.alloc(m * slices)?,
            summary: dev.alloc(8 * m)?,
            ksg: if all_rows { Some((dev.alloc(2 * w)?, dev.alloc(scratch)?)) } else { None },
        };
        // All labels at once: chunks use their rows, KSG all of them.
        dev.upload_u32(View::new(&bufs.labels, 0, n), &classes.of_sample);
        Ok(Run { dev, x, n, d, classes, dirs, slices, plan, bufs, all_rows })
    }

    fn v<'b>(buf: &'b B::Buffer, len: usize) -> View<'b, B::Buffer> {
        View::new(buf, 0, len)
    }

    fn blocks(&self) -> Vec<(usize, usize)> {
        (0..self.slices).step_by(self.plan.block).map(|j0| (j0, (j0 + self.plan.block).min(self.slices))).collect()
    }

    /// Sample chunks of `rows` (chunk-aligned), as (first row, rows).
    fn chunks(&self, rows: std::ops::Range<usize>) -> Vec<(usize, usize)> {
        (rows.start..rows.end).step_by(self.plan.chunk).map(|i0| (i0, self.plan.chunk.min(rows.end - i0))).collect()
    }

    fn upload_chunk(&self, i0: usize, rows: usize) {
        let d = self.d;
        self.dev.upload_f32(Self::v(&self.bufs.x, rows * d), &self.x[i0 * d..(i0 + rows) * d]);
    }

    fn labels(&self, i0: usize, rows: usize) -> View<'_, B::Buffer> {
        View::new(&self.bufs.labels, i0, rows)
    }

    /// The projections of the chunk at row i0 (of a block w slices wide).
    fn proj(&self, i0: usize, rows: usize, w: usize) -> View<'_, B::Buffer> {
        View::new(&self.bufs.proj, if self.all_rows { i0 * w } else { 0 }, rows * w)
    }

    /// Directions of slices [j0, j1) on the device, then P = X·Θᵀ for the chunk uploaded from row i0.
    fn project(&self, i0: usize, rows: usize, j0: usize, j1: usize) -> Result<()> {
        let (w, d) = (j1 - j0, self.d);
        let dirs = Self::v(&self.bufs.dirs, w * d);
        match self.dirs {
            Directions::Seeded { seed, .. } => self.dev.exec(Op::SmiDirections { out: dirs, seed: *seed, slice0: j0, k: w, d }),
            Directions::Explicit { .. } => self.dev.upload_f32(dirs, &self.dirs.block(j0, j1)?),
        }
        let out = self.proj(i0, rows, w);
        self.dev.exec(Op::SmiProject { out, x: Self::v(&self.bufs.x, rows * d), dirs, n: rows, d, k: w });
        Ok(())
    }

    /// Class statistics of the projected chunk (rows from i0) into `into`.
    fn stats(&self, i0: usize, rows: usize, j0: usize, w: usize, into: &mut PartStats) {
        let cs = self.classes.len();
        let parts = rows.div_ceil(STATS_ROWS);
        let stats = Self::v(&self.bufs.stats, parts * 4 * cs * w);
        let (proj, labels) = (self.proj(i0, rows, w), self.labels(i0, rows));
        self.dev.exec(Op::SmiClassStats { stats, proj, labels, n: rows, k: w, classes: cs });
        let words = words_to_f64(&self.dev.download_u32(stats));
        for (p, part) in words.chunks(2 * cs * w).enumerate() {
            let (mean, m2) = part.split_at(cs * w);
            into.put(i0 / STATS_ROWS + p, j0, w, mean, m2);
        }
    }

    fn upload_model(&self, m: &SliceModel) {
        let mut values = Vec::with_capacity(3 * m.mu.len() + m.log_prior.len());
        for a in [&m.mu, &m.inv_sigma, &m.log_weight, &m.log_prior] {
            values.extend_from_slice(a);
        }
        self.dev.upload_u32(Self::v(&self.bufs.model, 2 * values.len()), &f64_to_words(&values));
        let ex: Vec<u32> = m.degenerate.iter().map(|&e| e as u32).collect();
        self.dev.upload_u32(Self::v(&self.bufs.excluded, ex.len()), &ex);
    }

    fn score(&self, i0: usize, rows: usize, j0: usize, w: usize) {
        let b = &self.bufs;
        self.dev.exec(Op::SmiScore {
            pmi: Self::v(&b.pmi, rows * self.slices),
            proj: self.proj(i0, rows, w),
            labels: self.labels(i0, rows),
            model: Self::v(&b.model, 2 * (3 * w * self.classes.len() + self.classes.len())),
            excluded: Self::v(&b.excluded, w),
            n: rows,
            k: w,
            classes: self.classes.len(),
            ld: self.slices,
            col0: j0,
        });
    }

    fn summarize(&self, rows: usize, excluded: &[bool]) -> Vec<[f64; 4]> {
        let ex: Vec<u32> = excluded.iter().map(|&e| e as u32).collect();
        let b = &self.bufs;
        let flags = Self::v(&b.flags, self.slices);
        self.dev.upload_u32(flags, &ex);
        let out = Self::v(&b.summary, 8 * rows);
        self.dev.exec(Op::SmiRowSummary { out, pmi: Self::v(&b.pmi, rows * self.slices), excluded: flags, n: rows, k: self.slices });
        words_to_f64(&self.dev.download_u32(out)).chunks(4).map(|r| [r[0], r[1], r[2], r[3]]).collect()
    }

    /// Projected columns of the chunk, for KSG on the host (scikit-learn's exact mode).
    fn download_proj(&self, i0: usize, rows: usize, w: usize, into: &mut [f32]) {
        into.copy_from_slice(&self.dev.download_f32(self.proj(i0, rows, w)));
    }

    /// The KSG MI of the block's w slices, from its projections of all n samples on the device.
    fn ksg_on_device(&self, w: usize, neighbors: usize) -> Vec<f64> {
        let (mi, scratch) = self.bufs.ksg.as_ref().expect("device KSG buffers");
        let (n, classes) = (self.n, self.classes.len());
        let mi = Self::v(mi, 2 * w);
        let scratch = Self::v(scratch, self.dev.backend.smi_ksg_scratch_len(n, w, classes));
        self.dev.exec(Op::SmiKsg { mi, proj: self.proj(0, n, w), labels: self.labels(0, n), scratch, n, k: w, classes, neighbors });
        words_to_f64(&self.dev.download_u32(mi))
    }

    /// The block's KSG MI: on the device, or from downloaded projections with the jitter.
    fn ksg(&self, w: usize, j0: usize, k: &KsgOptions, jitter: Option<&Jitter>, host_p: &mut [f32]) -> Result<Vec<f64>> {
        if self.all_rows {
            return Ok(self.ksg_on_device(w, k.n_neighbors));
        }
        if self.plan.chunk >= self.n {
            self.download_proj(0, self.n, w, host_p);
        }
        ksg_mi_columns(host_p, self.n, w, self.classes, k, jitter, j0)
    }
}

/// What the first pass is for.
struct FirstPass<'j> {
    stats: bool,
    ksg: Option<(&'j KsgOptions, Option<&'j Jitter>)>,
}

/// Block-outer pass over sample chunks of `rows`: statistics (into a PartStats of those rows' parts)
/// and/or the per-slice KSG MI (all samples only).
fn first_pass<B: Backend>(r: &Run<'_, B>, rows: std::ops::Range<usize>, what: FirstPass<'_>, progress: &dyn Fn(usize)) -> Result<(Option<PartStats>, Vec<f64>)> {
    let (p0, p1) = (rows.start / STATS_ROWS, rows.end.div_ceil(STATS_ROWS));
    let mut stats = what.stats.then(|| PartStats::empty(r.classes.len(), r.slices, p0, p1 - p0));
    let mut ksg_mi = Vec::new();
    for (j0, j1) in r.blocks() {
        let w = j1 - j0;
        let host_ksg = what.ksg.is_some() && !r.all_rows;
        let mut host_p = if host_ksg { vec![0f32; r.n * w] } else { Vec::new() };
        for (i0, m) in r.chunks(rows.clone()) {
            r.upload_chunk(i0, m);
            r.project(i0, m, j0, j1)?;
            if let Some(s) = stats.as_mut() {
                r.stats(i0, m, j0, w, s);
            }
            if host_ksg {
                r.download_proj(i0, m, w, &mut host_p[i0 * w..(i0 + m) * w]);
            }
        }
        if let Some((k, jitter)) = what.ksg {
            ksg_mi.extend(r.ksg(w, j0, k, jitter, &mut host_p)?);
        }
        progress(j1);
    }
    Ok((stats, ksg_mi))
}

/// Inputs of a device PSMI run: n × d features (row-major f32) and their classes.
#[derive(Clone, Copy)]
pub struct Input<'a> {
    pub x: &'a [f32],
    pub n: usize,
    pub d: usize,
    pub classes: &'a Classes,
}

fn prepare<B: Backend>(dev: &Device<B>, inp: &Input<'_>, dirs: &Directions, slices: usize, opts: &PipelineOptions) -> Result<Plan> {
    check_inputs(&Dense { x: inp.x, n: inp.n, d: inp.d }, inp.classes, dirs)?;
    if slices == 0 {
        return Err(Error::Input("need at least one slice".into()));
    }
    if let Some(avail) = dirs.available() {
        if avail < slices {
            return Err(Error::Input(format!("{slices} slices asked for but only {avail} directions supplied")));
        }
    }
    if slices > u32::MAX as usize || inp.d > 2 * u32::MAX as usize {
        return Err(Error::Input(format!("{slices} slices of dimension {} exceed the direction generator's 32-bit counters", inp.d)));
    }
    if opts.ksg.as_ref().is_some_and(|k| k.n_neighbors == 0) {
        return Err(Error::Input("KSG needs n_neighbors ≥ 1".into()));
    }
    plan(inp.n, inp.d, slices, inp.classes.len(), opts, dev.backend.max_view_len(), &|n, w| dev.backend.smi_ksg_scratch_len(n, w, inp.classes.len()))
}

#[allow(clippy::too_many_arguments)]
/// Statistics of one shard (`shard` of `of`) of the samples: its parts, for `memsieve screen merge`.
pub fn shard_stats<B: Backend>(dev: &Device<B>, inp: &Input<'_>, dirs: &Directions, slices: usize, opts: &PipelineOptions, shard: usize, of: usize, progress: &dyn Fn(usize)) -> Result<PartStats> {
    if of == 0 || shard >= of {
        return Err(Error::Input(format!("--shard {shard}/{of}: need 0 ≤ i < N")));
    }
    let plan = prepare(dev, inp, dirs, slices, &PipelineOptions { ksg: None, ..opts.clone() })?;
    let parts = PartStats::shard_parts(inp.n, shard, of);
    if of > inp.n.div_ceil(STATS_ROWS) {
        return Err(Error::Input(format!(
            "--shard {shard}/{of}: {} samples make only {} parts of {STATS_ROWS}; use at most that many shards",
            inp.n,
            inp.n.div_ceil(STATS_ROWS)
        )));
    }
    let r = Run::new(dev, inp, dirs, slices, plan, None)?;
    let rows = parts.start * STATS_ROWS..(parts.end * STATS_ROWS).min(inp.n);
    let (stats, _) = first_pass(&r, rows, FirstPass { stats: true, ksg: None }, progress)?;
    Ok(stats.expect("asked for statistics"))
}

/// PSMI of every sample over `slices` directions on `dev` (and the per-slice KSG MI when asked),
/// from the class statistics in `given` (merged shards) or computed here.
/// `progress(done, total)` counts slice blocks of both passes.
#[allow(clippy::too_many_arguments)]
pub fn psmi_on_device<B: Backend>(dev: &Device<B>, inp: &Input<'_>, dirs: &Directions, slices: usize, opts: &PipelineOptions, given: Option<&PartStats>, progress: &(dyn Fn(usize, usize) + Sync)) -> Result<(PsmiScores, Plan)> {
    let plan = prepare(dev, inp, dirs, slices, opts)?;
    if let Some(g) = given {
        if (g.classes, g.slices, g.first_part, g.parts) != (inp.classes.len(), slices, 0, inp.n.div_ceil(STATS_ROWS)) {
            return Err(Error::Input("the merged statistics do not describe these samples and slices".into()));
        }
    }
    let r = Run::new(dev, inp, dirs, slices, plan, opts.ksg.as_ref())?;
    let jitter = match &opts.ksg {
        Some(k) if k.sklearn_exact => Some(Jitter::new(inp.n, slices)),
        _ => None,
    };
    let ksg = opts.ksg.as_ref().map(|k| (k, jitter.as_ref()));
    let single = plan.chunk >= inp.n;
    let passes = if single { 1 } else { 2 };
    let report = |pass: usize, done: usize| progress(pass * slices + done, passes * slices);

    // Statistics (and KSG) first when the samples come in several chunks.
    let mut ksg_mi = Vec::new();
    let mut stats = given.cloned();
    if !single && (stats.is_none() || ksg.is_some()) {
        let _phase = dev.profile.phase("screen: statistics pass");
        let (s, k) = first_pass(&r, 0..inp.n, FirstPass { stats: stats.is_none(), ksg }, &|j| report(0, j))?;
        ksg_mi = k;
        stats = stats.or(s);
    }
    let full_model = match &stats {
        Some(s) => Some(s.fold(inp.classes, 0, slices)?.model(opts.ddof)),
        None => None,
    };

    let mut excluded = vec![false; slices];
    let mut summaries = Vec::with_capacity(inp.n);
    let blocks = r.blocks();
    let scoring = dev.profile.phase("screen: scoring pass");
    for (i0, m) in r.chunks(0..inp.n) {
        r.upload_chunk(i0, m);
        for &(j0, j1) in &blocks {
            let w = j1 - j0;
            r.project(i0, m, j0, j1)?;
            let model = match &full_model {
                Some(full) => model_columns(full, j0, j1),
                None => {
                    // One chunk: this block's statistics come straight from its projection.
                    let mut s = PartStats::empty(inp.classes.len(), w, 0, inp.n.div_ceil(STATS_ROWS));
                    r.stats(0, m, 0, w, &mut s);
                    s.fold(inp.classes, 0, w)?.model(opts.ddof)
                }
            };
            if single {
                if let Some((k, jitter)) = ksg {
                    let mut host_p = if r.all_rows { Vec::new() } else { vec![0f32; m * w] };
                    ksg_mi.extend(r.ksg(w, j0, k, jitter, &mut host_p)?);
                }
            }
            excluded[j0..j1].copy_from_slice(&model.degenerate);
            r.upload_model(&model);
            r.score(i0, m, j0, w);
            if single {
                report(0, j1);
            }
        }
        summaries.extend(r.summarize(m, &excluded));
        if !single {
            report(1, (i0 + m) * slices / inp.n);
        }
    }
    drop(scoring);
    let excluded: Vec<usize> = excluded.iter().enumerate().filter(|(_, &e)| e).map(|(j, _)| j).collect();
    if excluded.len() == slices {
        return Err(Error::Numerical(format!("all {slices} slices are degenerate (some class is constant on every slice)")));
    }
    Ok((PsmiScores::from_summaries(&summaries, slices, excluded, ksg_mi), plan))
}
