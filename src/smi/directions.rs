//! Slice directions θ_j ∈ S^{d−1} (smi.md §2): seeded ones from the shared Philox generator, keyed by
//! (seed, slice j, coordinate k) so any backend can draw any element without state, or user-supplied ones.

use crate::error::{Error, Result};
use crate::rng::{philox4x32, purpose, seed_key, uniform_open};

/// Where the K directions come from.
#[derive(Clone, Debug)]
pub enum Directions {
    /// Drawn from Philox with this seed; any number of slices can be asked for.
    Seeded { seed: u64, dim: usize },
    /// Rows of a K × d matrix, already normalised to unit length (see [`Directions::explicit`]).
    Explicit { rows: Vec<f32>, count: usize, dim: usize },
}

/// One standard normal g_j[k] of attempt `attempt`: one Philox block gives two Box–Muller normals
/// (counter = (k/2, j, PROJECTION, attempt)), coordinate k uses the pair (2·(k%2), 2·(k%2)+1).
#[inline]
pub fn seeded_normal(key: [u32; 2], slice: u32, coord: usize, attempt: u32) -> f64 {
    let block = philox4x32([(coord / 2) as u32, slice, purpose::PROJECTION, attempt], key);
    let pair = 2 * (coord % 2);
    let (u1, u2) = (uniform_open(block[pair]), uniform_open(block[pair + 1]));
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// Unit direction of slice `slice` in R^dim, written into `out` (len dim).
/// A zero norm has probability 0 but is guarded: redraw with the next attempt counter.
pub fn seeded_direction(seed: u64, slice: usize, out: &mut [f32]) -> Result<()> {
    let key = seed_key(seed);
    let slice = u32::try_from(slice).map_err(|_| Error::Input(format!("slice index {slice} exceeds u32")))?;
    if out.len() > 2 * (u32::MAX as usize) {
        return Err(Error::Input(format!("dimension {} too large for the direction generator", out.len())));
    }
    let mut g = vec![0f64; out.len()];
    for attempt in 0..16u32 {
        for (k, gk) in g.iter_mut().enumerate() {
            *gk = seeded_normal(key, slice, k, attempt);
        }
        let norm = g.iter().map(|v| v * v).sum::<f64>().sqrt();
        if norm > 0.0 && norm.is_finite() {
            for (o, gk) in out.iter_mut().zip(&g) {
                *o = (gk / norm) as f32;
            }
            return Ok(());
        }
    }
    Err(Error::Numerical(format!("direction {slice}: zero norm after 16 redraws (dimension {})", out.len())))
}

/// Normalise each row of a K × d matrix to unit L2 norm (f64 accumulation), as the references do.
pub fn normalize_rows(rows: &mut [f32], dim: usize) -> Result<()> {
    if dim == 0 || !rows.len().is_multiple_of(dim) {
        return Err(Error::Input(format!("directions: {} values are not a whole number of rows of {dim}", rows.len())));
    }
    for (j, row) in rows.chunks_mut(dim).enumerate() {
        if row.iter().any(|v| !v.is_finite()) {
            return Err(Error::Input(format!("direction {j} holds NaN or inf")));
        }
        let norm = row.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>().sqrt();
        if norm == 0.0 {
            return Err(Error::Input(format!("direction {j} is the zero vector")));
        }
        for v in row.iter_mut() {
            *v = (*v as f64 / norm) as f32;
        }
    }
    Ok(())
}

impl Directions {
    pub fn seeded(seed: u64, dim: usize) -> Self {
        Directions::Seeded { seed, dim }
    }

    /// User directions (K × d, row-major), normalised per row.
    pub fn explicit(mut rows: Vec<f32>, dim: usize) -> Result<Self> {
        normalize_rows(&mut rows, dim)?;
        let count = rows.len() / dim;
        Ok(Directions::Explicit { rows, count, dim })
    }

    pub fn dim(&self) -> usize {
        match self {
            Directions::Seeded { dim, .. } | Directions::Explicit { dim, .. } => *dim,
        }
    }

    /// How many slices this source can give (None: unbounded).
    pub fn available(&self) -> Option<usize> {
        match self {
            Directions::Seeded { .. } => None,
            Directions::Explicit { count, .. } => Some(*count),
        }
    }

    /// Directions of slices [start, end) as an (end−start) × d row-major matrix.
    pub fn block(&self, start: usize, end: usize) -> Result<Vec<f32>> {
        match self {
            Directions::Seeded { seed, dim } => {
                use rayon::prelude::*;
                let mut out = vec![0f32; (end - start) * dim];
                if *dim == 0 {
                    return Err(Error::Input("directions of dimension 0".into()));
                }
                out.par_chunks_mut(*dim).enumerate().try_for_each(|(r, row)| seeded_direction(*seed, start + r, row))?;
                Ok(out)
            }
            Directions::Explicit { rows, count, dim } => {
                if end > *count || start > end {
                    return Err(Error::Input(format!("asked for slices {start}..{end} of {count} supplied directions")));
                }
                Ok(rows[start * dim..end * dim].to_vec())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_directions_are_unit_and_reproducible() {
        let d = Directions::seeded(42, 37);
        let a = d.block(0, 5).unwrap();
        let b = d.block(3, 5).unwrap();
        assert_eq!(&a[3 * 37..], &b[..], "slice j depends on (seed, j) only");
        for row in a.chunks(37) {
            let n: f64 = row.iter().map(|&v| (v as f64).powi(2)).sum();
            assert!((n - 1.0).abs() < 1e-6);
        }
        assert_ne!(a, Directions::seeded(43, 37).block(0, 5).unwrap());
    }

    #[test]
    fn seeded_normals_have_unit_moments() {
        let key = seed_key(3);
        let xs: Vec<f64> = (0..100_000).map(|k| seeded_normal(key, 7, k, 0)).collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!(mean.abs() < 0.02 && (var - 1.0).abs() < 0.03, "mean {mean} var {var}");
    }

    #[test]
    fn explicit_rows_are_normalised_and_bad_rows_rejected() {
        let d = Directions::explicit(vec![3.0, 4.0, 0.0, 2.0], 2).unwrap();
        assert_eq!(d.block(0, 2).unwrap(), vec![0.6, 0.8, 0.0, 1.0]);
        assert!(d.block(1, 3).is_err());
        assert!(Directions::explicit(vec![0.0, 0.0], 2).is_err());
        assert!(Directions::explicit(vec![1.0, f32::NAN], 2).is_err());
        assert!(Directions::explicit(vec![1.0, 2.0, 3.0], 2).is_err());
    }
}
