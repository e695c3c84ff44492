//! bf16 projection P = X·Θᵀ with f32 accumulation (`--precision bf16`): inputs rounded to bf16
//! (round to nearest even), products summed in f32. On x86-64 with AVX-512 BF16 the inner loop is
//! `vdpbf16ps` (two bf16 products per f32 lane per instruction, half the bytes of f32 per value);
//! elsewhere a portable loop computes the same sums in a fixed pair order.
//!
//! Layout: X stays row-major with its row length padded to even, so the pair (x[i,2p], x[i,2p+1]) is
//! one 32-bit word to broadcast. Θ is packed per block into panels of [`NR`] slices: for pair p the
//! panel holds NR words (θ[j,2p], θ[j,2p+1]) side by side, one 64-byte load per 16 slices.

use crate::error::{Error, Result};
use half::bf16;
use rayon::prelude::*;

/// Slices per packed panel (two 16-lane vectors).
pub const NR: usize = 32;
/// Rows per register tile (2 × MR accumulators of the 32 zmm registers).
const MR: usize = 12;
/// Pairs of the reduction per cache block: an NR panel of KC pairs is 16 KB (stays in L1).
const KC: usize = 128;
/// Rows per worker chunk (its KC-slice of X, 256 KB, stays in L2 across panels).
const ROW_CHUNK: usize = 480;

/// A feature matrix rounded to bf16, rows padded to an even length (pairs), packed as u32 words.
pub struct Bf16Matrix {
    pub rows: usize,
    pub cols: usize,
    /// rows × pairs words; word p of row i holds bf16 x[i,2p] (low half) and x[i,2p+1] (high half).
    words: Vec<u32>,
}

fn pair_word(lo: bf16, hi: bf16) -> u32 {
    lo.to_bits() as u32 | ((hi.to_bits() as u32) << 16)
}

impl Bf16Matrix {
    pub fn pairs(&self) -> usize {
        self.cols.div_ceil(2)
    }

    /// Round a row-major f32 matrix to bf16.
    pub fn from_f32(x: &[f32], rows: usize, cols: usize) -> Result<Self> {
        Self::pack(x, rows, cols, bf16::from_f32)
    }

    /// Take a matrix that is already bf16 (a bf16 input file) without rounding anything.
    pub fn from_bf16(x: &[bf16], rows: usize, cols: usize) -> Result<Self> {
        Self::pack(x, rows, cols, |v| v)
    }

    /// Rows of `x` as bf16 pairs (an odd last column pairs with zero).
    fn pack<T: Copy + Sync>(x: &[T], rows: usize, cols: usize, to_bf16: impl Fn(T) -> bf16 + Sync) -> Result<Self> {
        if x.len() != rows * cols {
            return Err(Error::Input(format!("bf16 matrix: {} values are not {rows} × {cols}", x.len())));
        }
        let pairs = cols.div_ceil(2);
        let mut words = vec![0u32; rows * pairs];
        if cols > 0 {
            words.par_chunks_mut(pairs).zip(x.par_chunks(cols)).for_each(|(w, row)| {
                for (p, wp) in w.iter_mut().enumerate() {
                    let hi = row.get(2 * p + 1).map_or(bf16::ZERO, |&v| to_bf16(v));
                    *wp = pair_word(to_bf16(row[2 * p]), hi);
                }
            });
        }
        Ok(Bf16Matrix { rows, cols, words })
    }

    /// (row, column) of the first NaN or infinite value (all-ones exponent), if any.
    pub fn first_non_finite(&self) -> Option<(usize, usize)> {
        let pairs = self.pairs();
        let bad = |h: u32| h & 0x7f80 == 0x7f80;
        let w = self.words.par_iter().position_first(|&w| bad(w) || bad(w >> 16))?;
        let (i, p) = (w / pairs, w % pairs);
        Some((i, if bad(self.words[w]) { 2 * p } else { 2 * p + 1 }))
    }

    /// Element (i, k) back as f32 (tests, checks).
    pub fn get(&self, i: usize, k: usize) -> f32 {
        let w = self.words[i * self.pairs() + k / 2];
        bf16::from_bits(if k.is_multiple_of(2) { w as u16 } else { (w >> 16) as u16 }).to_f32()
    }
}

/// Θ block (kb × d, f32) rounded to bf16 and packed into ⌈kb/NR⌉ panels of pairs × NR words
/// (slices past kb are zero).
pub fn pack_directions(thetas: &[f32], kb: usize, d: usize) -> Result<Vec<u32>> {
    if thetas.len() != kb * d {
        return Err(Error::Input(format!("bf16 directions: {} values are not {kb} × {d}", thetas.len())));
    }
    let pairs = d.div_ceil(2);
    let panels = kb.div_ceil(NR);
    let mut packed = vec![0u32; panels * pairs * NR];
    packed.par_chunks_mut(pairs * NR).enumerate().for_each(|(panel, out)| {
        for lane in 0..NR {
            let j = panel * NR + lane;
            if j >= kb {
                break;
            }
            let row = &thetas[j * d..(j + 1) * d];
            for p in 0..pairs {
                let lo = bf16::from_f32(row[2 * p]);
                let hi = row.get(2 * p + 1).map_or(bf16::ZERO, |&v| bf16::from_f32(v));
                out[p * NR + lane] = pair_word(lo, hi);
            }
        }
    });
    Ok(packed)
}

/// Whether the vdpbf16ps kernel runs here (else the portable loop).
pub fn native() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// dst[i, col0 + j] = Σ_k bf16(x[i,k])·bf16(θ[j,k]) (f32 sums) for j < kb; dst row stride `ld`.
/// `packed` comes from [`pack_directions`] with the same kb and d = x.cols.
pub fn project_bf16_into(x: &Bf16Matrix, packed: &[u32], kb: usize, dst: &mut [f32], ld: usize, col0: usize) -> Result<()> {
    let (n, pairs) = (x.rows, x.pairs());
    let panels = kb.div_ceil(NR);
    if packed.len() != panels * pairs * NR || col0 + kb > ld || dst.len() != n * ld {
        return Err(Error::Input(format!(
            "bf16 projection shapes: x {n} × {}, packed {} words for K {kb}, output {} (ld {ld}, col {col0})",
            x.cols,
            packed.len(),
            dst.len()
        )));
    }
    if n == 0 || kb == 0 {
        return Ok(());
    }
    let native = native();
    dst.par_chunks_mut(ROW_CHUNK * ld).zip(x.words.par_chunks(ROW_CHUNK * pairs)).for_each_init(
        || vec![0u32; ROW_CHUNK.div_ceil(MR) * MR * KC],
        |apack, (dst_rows, x_rows)| {
            let m = x_rows.len() / pairs;
            for r in dst_rows.chunks_mut(ld) {
                r[col0..col0 + kb].fill(0.0);
            }
            for p0 in (0..pairs).step_by(KC) {
                let pc = KC.min(pairs - p0);
                // Row tiles packed [tile][pair][MR] so a tile's broadcasts read one sequential stream
                // (rows of X sit a power-of-two stride apart for the usual d: 12 of them would
                // share one L1 set).
                for (t, i0) in (0..m).step_by(MR).enumerate() {
                    let tile_pack = &mut apack[t * pc * MR..(t + 1) * pc * MR];
                    for r in 0..MR {
                        let src = (i0 + r < m).then(|| &x_rows[(i0 + r) * pairs + p0..][..pc]);
                        for p in 0..pc {
                            tile_pack[p * MR + r] = src.map_or(0, |s| s[p]);
                        }
                    }
                }
                for panel in 0..panels {
                    let b = &packed[(panel * pairs + p0) * NR..][..pc * NR];
                    let (j0, width) = (panel * NR, NR.min(kb - panel * NR));
                    for (t, i0) in (0..m).step_by(MR).enumerate() {
                        let rows = MR.min(m - i0);
                        let c = &mut dst_rows[i0 * ld + col0 + j0..];
                        tile(native, &apack[t * pc * MR..(t + 1) * pc * MR], b, pc, c, ld, rows, width);
                    }
                }
            }
        },
    );
    Ok(())
}

/// C[r, 0..width] += Σ_p A[p, r]·B[p, 0..width] for r < rows; A is a packed tile [pc][MR].
#[allow(clippy::too_many_arguments)]
#[inline]
fn tile(native: bool, a: &[u32], b: &[u32], pc: usize, c: &mut [f32], ldc: usize, rows: usize, width: usize) {
    assert!(a.len() >= pc * MR && b.len() >= pc * NR && rows <= MR && width <= NR && c.len() >= (rows - 1) * ldc + width);
    #[cfg(target_arch = "x86_64")]
    if native {
        // Safety: the features were detected; the bounds were checked just above.
        unsafe { avx512::tile(a.as_ptr(), b.as_ptr(), pc, c.as_mut_ptr(), ldc, rows, width) };
        return;
    }
    let _ = native;
    portable_tile(a, b, pc, c, ldc, rows, width);
}

fn bf16_lo(w: u32) -> f32 {
    f32::from_bits(w << 16)
}
fn bf16_hi(w: u32) -> f32 {
    f32::from_bits(w & 0xffff_0000)
}

fn portable_tile(a: &[u32], b: &[u32], pc: usize, c: &mut [f32], ldc: usize, rows: usize, width: usize) {
    for r in 0..rows {
        let mut acc = [0f32; NR];
        for p in 0..pc {
            let w = a[p * MR + r];
            let (xl, xh) = (bf16_lo(w), bf16_hi(w));
            for (lane, acc) in acc.iter_mut().enumerate().take(width) {
                let t = b[p * NR + lane];
                *acc += xl * bf16_lo(t) + xh * bf16_hi(t);
            }
        }
        for (o, v) in c[r * ldc..r * ldc + width].iter_mut().zip(acc) {
            *o += v;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{MR, NR};
    use std::arch::x86_64::*;

    /// Register tile of R rows × 32 slices: 2R accumulators, one broadcast pair per row and pair step.
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn tile_rows<const R: usize>(a: *const u32, b: *const u32, pc: usize, c: *mut f32, ldc: usize, width: usize) {
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        for p in 0..pc {
            let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(p * NR) as *const _));
            let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(p * NR + 16) as *const _));
            for (r, acc) in acc.iter_mut().enumerate() {
                let x: __m512bh = std::mem::transmute(_mm512_set1_epi32(*a.add(p * MR + r) as i32));
                acc[0] = _mm512_dpbf16_ps(acc[0], x, b0);
                acc[1] = _mm512_dpbf16_ps(acc[1], x, b1);
            }
        }
        let m0: __mmask16 = if width >= 16 { 0xffff } else { (1u32 << width) as u16 - 1 };
        let m1: __mmask16 = if width >= NR { 0xffff } else if width > 16 { (1u32 << (width - 16)) as u16 - 1 } else { 0 };
        for (r, acc) in acc.iter().enumerate() {
            let row = c.add(r * ldc);
            _mm512_mask_storeu_ps(row, m0, _mm512_add_ps(_mm512_maskz_loadu_ps(m0, row), acc[0]));
            _mm512_mask_storeu_ps(row.add(16), m1, _mm512_add_ps(_mm512_maskz_loadu_ps(m1, row.add(16)), acc[1]));
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub unsafe fn tile(a: *const u32, b: *const u32, pc: usize, c: *mut f32, ldc: usize, rows: usize, width: usize) {
        const _: () = assert!(MR == 12);
        match rows {
            12 => tile_rows::<12>(a, b, pc, c, ldc, width),
            11 => tile_rows::<11>(a, b, pc, c, ldc, width),
            10 => tile_rows::<10>(a, b, pc, c, ldc, width),
            9 => tile_rows::<9>(a, b, pc, c, ldc, width),
            8 => tile_rows::<8>(a, b, pc, c, ldc, width),
            7 => tile_rows::<7>(a, b, pc, c, ldc, width),
            6 => tile_rows::<6>(a, b, pc, c, ldc, width),
            5 => tile_rows::<5>(a, b, pc, c, ldc, width),
            4 => tile_rows::<4>(a, b, pc, c, ldc, width),
            3 => tile_rows::<3>(a, b, pc, c, ldc, width),
            2 => tile_rows::<2>(a, b, pc, c, ldc, width),
            _ => tile_rows::<1>(a, b, pc, c, ldc, width),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both kernels against an f64 product of the bf16-rounded inputs, on shapes that are not
    /// multiples of any tile (odd d, K past a panel, rows past a chunk and a register tile).
    #[test]
    fn matches_rounded_product_on_awkward_shapes() {
        for &(n, d, kb, ld, col0) in &[(1, 1, 1, 1, 0), (13, 7, 33, 40, 5), (ROW_CHUNK + 25, 2 * KC * 2 + 3, 70, 70, 0)] {
            let x: Vec<f32> = (0..n * d).map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0).collect();
            let th: Vec<f32> = (0..kb * d).map(|i| ((i * 13 % 29) as f32 - 14.0) / 9.0).collect();
            let xb = Bf16Matrix::from_f32(&x, n, d).unwrap();
            let packed = pack_directions(&th, kb, d).unwrap();
            let want = |i: usize, j: usize| -> f64 { (0..d).map(|k| xb.get(i, k) as f64 * bf16::from_f32(th[j * d + k]).to_f64()).sum() };
            for native_kernel in [true, false] {
                if native_kernel && !native() {
                    eprintln!("!!! no AVX-512 BF16 on this CPU: only the portable bf16 kernel is tested !!!");
                    continue;
                }
                let mut dst = vec![-7.0f32; n * ld];
                if native_kernel {
                    project_bf16_into(&xb, &packed, kb, &mut dst, ld, col0).unwrap();
                } else {
                    let pairs = xb.pairs();
                    for (i, row) in dst.chunks_mut(ld).enumerate() {
                        row[col0..col0 + kb].fill(0.0);
                        // One row as a packed tile (the other MR − 1 rows zero).
                        let mut a = vec![0u32; pairs * MR];
                        for p in 0..pairs {
                            a[p * MR] = xb.words[i * pairs + p];
                        }
                        for panel in 0..kb.div_ceil(NR) {
                            let w = NR.min(kb - panel * NR);
                            let b = &packed[panel * pairs * NR..][..pairs * NR];
                            portable_tile(&a, b, pairs, &mut row[col0 + panel * NR..], ld, 1, w);
                        }
                    }
                }
                for i in 0..n {
                    for j in 0..ld {
                        let got = dst[i * ld + j] as f64;
                        if (col0..col0 + kb).contains(&j) {
                            let w = want(i, j - col0);
                            assert!((got - w).abs() <= 1e-5 * (1.0 + w.abs()) * (d as f64).sqrt(), "n{n} d{d} kb{kb} ({i},{j}): {got} vs {w}");
                        } else {
                            assert_eq!(got, -7.0, "column {j} outside the block was written");
                        }
                    }
                }
            }
        }
        assert!(pack_directions(&[1.0; 5], 2, 3).is_err());
        let xb = Bf16Matrix::from_f32(&[1.0; 6], 2, 3).unwrap();
        assert!(project_bf16_into(&xb, &[0; 3], 1, &mut [0.0; 2], 1, 0).is_err());
    }
}
