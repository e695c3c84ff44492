//! Partial class statistics of one shard of the samples (`memsieve screen --shard i/N`), on disk as
//! `shard-i-of-N.npy` (f64 [parts, 2, classes, K]: mean then M2) beside `shard-i-of-N.json` (what
//! they describe, checked by `memsieve screen merge` against its own inputs). Both written atomically.

use super::pipeline::PartStats;
use super::psmi::STATS_ROWS;
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// What a shard's statistics describe; merging refuses shards whose description differs from its run.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    pub shard: usize,
    pub of: usize,
    pub samples: usize,
    pub dim: usize,
    pub slices: usize,
    /// "philox seed S" or the directions file's content hash.
    pub directions: String,
    /// FNV-1a of the feature and label bits, so a shard of other data is caught.
    pub features_fnv: String,
    pub labels_fnv: String,
    pub classes: usize,
    pub part_rows: usize,
    pub first_part: usize,
    pub parts: usize,
}

/// FNV-1a (64-bit) over a byte stream.
pub fn fnv(bytes: impl IntoIterator<Item = u8>) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

fn paths(dir: &Path, shard: usize, of: usize) -> (PathBuf, PathBuf) {
    let stem = format!("shard-{shard}-of-{of}");
    (dir.join(format!("{stem}.npy")), dir.join(format!("{stem}.json")))
}

/// Write a shard's statistics (the .npy first, so a present manifest means complete data).
pub fn write(dir: &Path, m: &Manifest, s: &PartStats) -> Result<()> {
    let (npy, json) = paths(dir, m.shard, m.of);
    let (cs, k) = (s.classes, s.slices);
    let mut data = Vec::with_capacity(2 * s.mean.len());
    for p in 0..s.parts {
        data.extend_from_slice(&s.mean[p * cs * k..(p + 1) * cs * k]);
        data.extend_from_slice(&s.m2[p * cs * k..(p + 1) * cs * k]);
    }
    super::npy::write_f64(&npy, &data, &[s.parts, 2, cs, k])?;
    crate::cli::write_json(&json, m)
}

/// Read every shard-*-of-N manifest in `dir`, check it against `want` (shard fields ignored), and
/// return the statistics concatenated in part order.
pub fn read_all(dir: &Path, want: &Manifest) -> Result<PartStats> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut manifests = Vec::new();
    for e in entries {
        let path = e.map_err(|e| Error::io(dir, e))?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if name.starts_with("shard-") && name.ends_with(".json") {
            let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
            let m: Manifest = serde_json::from_str(&text).map_err(|e| Error::Input(format!("{}: {e}", path.display())))?;
            manifests.push((path, m));
        }
    }
    if manifests.is_empty() {
        return Err(Error::Input(format!("{}: no shard-*-of-N.json files", dir.display())));
    }
    let of = manifests[0].1.of;
    let mut shards = Vec::new();
    for (path, m) in &manifests {
        let same = Manifest { shard: m.shard, of: m.of, first_part: m.first_part, parts: m.parts, ..want.clone() };
        if *m != same || m.of != of {
            return Err(Error::Input(format!(
                "{}: this shard was computed on other data or settings than this merge:\n  shard: {m:?}\n  merge: {same:?}",
                path.display()
            )));
        }
        let (npy, _) = paths(dir, m.shard, m.of);
        let (data, shape) = super::npy::read_f64(&npy)?;
        if shape != [m.parts, 2, m.classes, m.slices] {
            return Err(Error::Input(format!("{}: shape {shape:?}, manifest says {:?}", npy.display(), [m.parts, 2, m.classes, m.slices])));
        }
        let ck = m.classes * m.slices;
        let (mut mean, mut m2) = (Vec::with_capacity(m.parts * ck), Vec::with_capacity(m.parts * ck));
        for part in data.chunks(2 * ck) {
            mean.extend_from_slice(&part[..ck]);
            m2.extend_from_slice(&part[ck..]);
        }
        shards.push(PartStats { classes: m.classes, slices: m.slices, first_part: m.first_part, parts: m.parts, mean, m2 });
    }
    if manifests.len() != of {
        return Err(Error::Input(format!("{}: {} of the {of} shards are present", dir.display(), manifests.len())));
    }
    PartStats::concat(shards, want.samples.div_ceil(STATS_ROWS))
}
