//! Projection P = X·Θᵀ (smi.md §2) through the `gemm` crate, one slice block at a time, rows split
//! across the rayon pool (each worker a single-threaded GEMM on its own rows, so results never
//! depend on the thread count).

use crate::error::{Error, Result};
use gemm::Parallelism;
use rayon::prelude::*;

/// Element types the projection runs in: f32 (the screening default, as the LLM code) or f64 (as `psmi`).
pub trait ProjElem: Copy + Send + Sync + Default + 'static {
    const ONE: Self;
    fn from_f32(v: f32) -> Self;
    fn to_f64(self) -> f64;
    /// Order-preserving integer key (the KSG radix sort): f32 keys use the low 32 bits only.
    fn order_key(self) -> u64;
    /// Whether `order_key` fits in 32 bits.
    const NARROW_KEY: bool;
}

impl ProjElem for f32 {
    const ONE: Self = 1.0;
    const NARROW_KEY: bool = true;
    fn from_f32(v: f32) -> Self {
        v
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn order_key(self) -> u64 {
        let b = self.to_bits();
        (if b >> 31 == 1 { !b } else { b | (1 << 31) }) as u64
    }
}

impl ProjElem for f64 {
    const ONE: Self = 1.0;
    const NARROW_KEY: bool = false;
    fn from_f32(v: f32) -> Self {
        v as f64
    }
    fn to_f64(self) -> f64 {
        self
    }
    fn order_key(self) -> u64 {
        super::ksg::order_key(self)
    }
}

/// Rows per worker chunk: enough to amortise GEMM packing, few enough to balance two cores.
const ROW_CHUNK: usize = 512;

#[derive(Clone, Copy)]
struct SyncPtr<T>(*const T);
unsafe impl<T> Send for SyncPtr<T> {}
unsafe impl<T> Sync for SyncPtr<T> {}

impl<T> SyncPtr<T> {
    /// Through a method, so closures capture the Sync wrapper, not the raw pointer field.
    fn get(&self) -> *const T {
        self.0
    }
}

/// dst[i, col0 + j] = Σ_k x[i, k]·θ[j, k] for i < n, j < kb, with dst row stride `ld`.
/// `x` is n × d, `thetas` kb × d, both row-major.
#[allow(clippy::too_many_arguments)]
pub fn project_into<T: ProjElem>(x: &[T], n: usize, d: usize, thetas: &[T], kb: usize, dst: &mut [T], ld: usize, col0: usize) -> Result<()> {
    if x.len() != n * d || thetas.len() != kb * d || col0 + kb > ld || dst.len() != n * ld {
        return Err(Error::Input(format!(
            "projection shapes: x {} (n {n} × d {d}), directions {} (K {kb}), output {} (ld {ld}, col {col0})",
            x.len(),
            thetas.len(),
            dst.len()
        )));
    }
    if n == 0 || kb == 0 {
        return Ok(());
    }
    let th = SyncPtr(thetas.as_ptr());
    dst.par_chunks_mut(ROW_CHUNK * ld).zip(x.par_chunks(ROW_CHUNK * d)).for_each(|(dst_rows, x_rows)| {
        let m = x_rows.len() / d;
        // Safety: every pointer/stride pair addresses inside the slices checked above; each worker
        // writes only its own rows.
        unsafe {
            gemm::gemm(
                m,
                kb,
                d,
                dst_rows.as_mut_ptr().add(col0),
                1,
                ld as isize,
                false,
                x_rows.as_ptr(),
                1,
                d as isize,
                th.get(),
                d as isize,
                1,
                T::default(),
                T::ONE,
                false,
                false,
                false,
                Parallelism::None,
            )
        }
    });
    Ok(())
}

/// P = X·Θᵀ as a fresh n × kb matrix.
pub fn project<T: ProjElem>(x: &[T], n: usize, d: usize, thetas: &[T], kb: usize) -> Result<Vec<T>> {
    let mut p = vec![T::default(); n * kb];
    project_into(x, n, d, thetas, kb, &mut p, kb, 0)?;
    Ok(p)
}

/// Features in the precision the projection runs in: dense f32/f64 rows, or bf16 pairs
/// ([`super::project_bf16::Bf16Matrix`], f32 output). PSMI and KSG run on whatever it returns.
pub trait Project: Sync {
    type Out: ProjElem;
    /// (samples, dimension)
    fn shape(&self) -> (usize, usize);
    /// Every value must be finite (one NaN would poison its class's statistics).
    fn check(&self) -> Result<()>;
    /// P = X·Θᵀ for a block of `kb` directions (kb × d, f32).
    fn project_block(&self, thetas: &[f32], kb: usize) -> Result<Vec<Self::Out>>;
}

/// A row-major n × d matrix projected in its own precision.
pub struct Dense<'a, T> {
    pub x: &'a [T],
    pub n: usize,
    pub d: usize,
}

impl<T: ProjElem> Project for Dense<'_, T> {
    type Out = T;
    fn shape(&self) -> (usize, usize) {
        (self.n, self.d)
    }
    fn check(&self) -> Result<()> {
        super::check_features(self.x, self.n, self.d)
    }
    fn project_block(&self, thetas: &[f32], kb: usize) -> Result<Vec<T>> {
        let th: Vec<T> = thetas.iter().map(|&v| T::from_f32(v)).collect();
        project(self.x, self.n, self.d, &th, kb)
    }
}

impl Project for super::project_bf16::Bf16Matrix {
    type Out = f32;
    fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }
    fn check(&self) -> Result<()> {
        if self.rows == 0 || self.cols == 0 {
            return Err(Error::Input(format!("empty feature matrix ({} × {})", self.rows, self.cols)));
        }
        // f32 values past bf16's range round to inf; NaN stays NaN.
        match self.first_non_finite() {
            Some((i, k)) => Err(Error::Input(format!("feature [{i}, {k}] is NaN or infinite in bf16"))),
            None => Ok(()),
        }
    }
    fn project_block(&self, thetas: &[f32], kb: usize) -> Result<Vec<f32>> {
        let packed = super::project_bf16::pack_directions(thetas, kb, self.cols)?;
        let mut p = vec![0f32; self.rows * kb];
        super::project_bf16::project_bf16_into(self, &packed, kb, &mut p, kb, 0)?;
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_naive_product_with_column_offset() {
        let (n, d, kb, ld) = (1100, 7, 3, 5);
        let x: Vec<f64> = (0..n * d).map(|i| ((i * 37 % 101) as f64 - 50.0) / 17.0).collect();
        let th: Vec<f64> = (0..kb * d).map(|i| ((i * 13 % 29) as f64 - 14.0) / 9.0).collect();
        let mut p = vec![-1.0; n * ld];
        project_into(&x, n, d, &th, kb, &mut p, ld, 2).unwrap();
        for i in 0..n {
            for j in 0..ld {
                let want = if (2..5).contains(&j) { (0..d).map(|k| x[i * d + k] * th[(j - 2) * d + k]).sum::<f64>() } else { -1.0 };
                assert!((p[i * ld + j] - want).abs() < 1e-12, "({i},{j}) {} vs {want}", p[i * ld + j]);
            }
        }
        assert!(project_into(&x, n, d, &th, kb, &mut p, ld, 3).is_err());
    }
}
