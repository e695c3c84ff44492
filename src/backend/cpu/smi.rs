//! SMI screening ops (twins: shaders/smi.wgsl, kernels/smi.cu). Each op calls the src/smi function
//! that defines it, so the cpu backend's pipeline results are those of `smi::psmi` exactly.

use super::{rd, rd_u32, wr};
use crate::backend::{f64_to_words, words_to_f64, View};
use crate::smi::directions::seeded_direction;
use crate::smi::ksg::{ksg_mi_columns, KsgOptions};
use crate::smi::project::project_into;
use crate::smi::psmi::{score_block, summarize_row, ClassSliceStats, SliceModel, STATS_ROWS};
use crate::smi::Classes;
use rayon::prelude::*;

type V<'a> = View<'a, super::CpuBuffer>;

fn write_f64(dst: &mut [f32], values: &[f64]) {
    dst.copy_from_slice(bytemuck::cast_slice(&f64_to_words(values)));
}

fn read_f64(src: &[f32]) -> Vec<f64> {
    words_to_f64(bytemuck::cast_slice(src))
}

/// A row that cannot be normalised (16 zero-norm redraws, probability 0) comes out NaN, as on the GPUs.
pub fn directions(out: V, seed: u64, slice0: usize, k: usize, d: usize) {
    wr(out)[..k * d].par_chunks_mut(d).enumerate().for_each(|(r, row)| {
        if seeded_direction(seed, slice0 + r, row).is_err() {
            row.fill(f32::NAN);
        }
    });
}

pub fn project(out: V, x: V, dirs: V, n: usize, d: usize, k: usize) {
    project_into(&rd(x)[..n * d], n, d, &rd(dirs)[..k * d], k, &mut wr(out)[..n * k], k, 0)
        .unwrap_or_else(|e| panic!("smi_project: {e}"));
}

pub fn class_stats(stats: V, proj: V, labels: V, n: usize, k: usize, classes: usize) {
    let part_words = 4 * classes * k;
    let parts = n.div_ceil(STATS_ROWS);
    let (p, y) = (&rd(proj)[..n * k], &rd_u32(labels)[..n]);
    wr(stats)[..parts * part_words].par_chunks_mut(part_words).enumerate().for_each(|(part, out)| {
        let rows = part * STATS_ROWS..((part + 1) * STATS_ROWS).min(n);
        let s = ClassSliceStats::of_rows(&p[rows.start * k..rows.end * k], k, &y[rows], classes);
        let (mean, m2) = out.split_at_mut(2 * classes * k);
        write_f64(mean, &s.mean);
        write_f64(m2, &s.m2);
    });
}

#[allow(clippy::too_many_arguments)]
pub fn score(pmi: V, proj: V, labels: V, model: V, excluded: V, n: usize, k: usize, classes: usize, ld: usize, col0: usize) {
    let m = read_f64(&rd(model)[..2 * (3 * k * classes + classes)]);
    let (arrays, log_prior) = m.split_at(3 * k * classes);
    let kc = k * classes;
    let model = SliceModel {
        classes,
        slices: k,
        mu: arrays[..kc].to_vec(),
        inv_sigma: arrays[kc..2 * kc].to_vec(),
        log_weight: arrays[2 * kc..].to_vec(),
        log_prior: log_prior.to_vec(),
        degenerate: rd_u32(excluded)[..k].iter().map(|&e| e != 0).collect(),
    };
    // score_block reads only the class count and each sample's class.
    let cls = Classes { values: (0..classes as i64).collect(), of_sample: rd_u32(labels)[..n].to_vec(), counts: vec![0; classes] };
    let scored = score_block(&rd(proj)[..n * k], k, &cls, &model);
    let out = wr(pmi);
    for (i, row) in scored.chunks(k.max(1)).enumerate() {
        out[i * ld + col0..i * ld + col0 + k].copy_from_slice(row);
    }
}

pub fn row_summary(out: V, pmi: V, excluded: V, n: usize, k: usize) {
    let (p, ex) = (&rd(pmi)[..n * k], &rd_u32(excluded)[..k]);
    wr(out)[..8 * n].par_chunks_mut(8).enumerate().for_each_init(Vec::new, |scratch: &mut Vec<f64>, (i, o)| {
        scratch.clear();
        scratch.extend(p[i * k..(i + 1) * k].iter().zip(ex).filter(|(_, &e)| e == 0).map(|(&v, _)| v as f64));
        write_f64(o, &summarize_row(scratch));
    });
}

/// `ksg_mi_columns` itself, on the block in place (no jitter: scikit-learn's exact mode stays on the host).
#[allow(clippy::too_many_arguments)]
pub fn ksg(mi: V, proj: V, labels: V, n: usize, k: usize, classes: usize, neighbors: usize) {
    let of_sample = rd_u32(labels)[..n].to_vec();
    let mut counts = vec![0usize; classes];
    for &c in &of_sample {
        counts[c as usize] += 1;
    }
    let cls = Classes { values: (0..classes as i64).collect(), of_sample, counts };
    let opts = KsgOptions { n_neighbors: neighbors, sklearn_exact: false };
    let values = ksg_mi_columns(&rd(proj)[..n * k], n, k, &cls, &opts, None, 0).unwrap_or_else(|e| panic!("smi_ksg: {e}"));
    write_f64(&mut wr(mi)[..2 * k], &values);
}
