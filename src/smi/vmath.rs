//! Branch-free f64 exp and ln that LLVM vectorizes (plain arithmetic and bit moves, no calls), for
//! PSMI scoring's log-sum-exp: one exp per (sample, slice, class) and one ln per (sample, slice)
//! dominate screening after the projection. Both are within a few ulp of libm on their ranges.

/// ln 2 split (fdlibm): the high part has 20 trailing zero bits, so k·LN2_HI is exact for |k| < 2²⁰.
const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);
/// 1.5·2⁵²: adding it rounds to an integer held in the low mantissa bits.
const ROUND_MAGIC: f64 = 6_755_399_441_055_744.0;

/// eˣ for x ≤ 0 (the shifted log-sum-exp terms); x below −708 gives e⁻⁷⁰⁸ (nothing beside the e⁰ term).
#[inline(always)]
pub fn exp_nonpos(x: f64) -> f64 {
    let x = x.max(-708.0);
    // x = k·ln2 + r, |r| ≤ ln2/2 (Cody–Waite split of ln2).
    let shifted = x * std::f64::consts::LOG2_E + ROUND_MAGIC;
    let kf = shifted - ROUND_MAGIC;
    let r = (x - kf * LN2_HI) - kf * LN2_LO;
    // Taylor to r¹³/13! (|r| ≤ 0.347: truncation < 2e-17), Horner.
    let mut p = 1.0 / 6_227_020_800.0;
    p = p * r + 1.0 / 479_001_600.0;
    p = p * r + 1.0 / 39_916_800.0;
    p = p * r + 1.0 / 3_628_800.0;
    p = p * r + 1.0 / 362_880.0;
    p = p * r + 1.0 / 40_320.0;
    p = p * r + 1.0 / 5_040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    // 2^k for k in [−1022, 0] built in the exponent field; k sits in the low bits of `shifted`
    // (no float → int conversion, which Rust saturates and LLVM then scalarizes).
    let k = shifted.to_bits().wrapping_sub(ROUND_MAGIC.to_bits());
    p * f64::from_bits(k.wrapping_add(1023) << 52)
}

/// ln x for finite x ≥ 1 (a log-sum-exp sum, at least its maximal term e⁰).
#[inline(always)]
pub fn ln_ge1(x: f64) -> f64 {
    let bits = x.to_bits();
    // x = m·2ᵉ with m in [√½, √2).
    let mut e = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let mut m = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | 0x3ff0_0000_0000_0000);
    let big = m > std::f64::consts::SQRT_2;
    m = if big { m * 0.5 } else { m };
    e += big as i64;
    // ln m = 2·atanh(s), s = (m−1)/(m+1), |s| ≤ 0.1716: odd series to s²³ (truncation < 1e-18).
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let mut q = 1.0 / 23.0;
    for d in [21.0, 19.0, 17.0, 15.0, 13.0, 11.0, 9.0, 7.0, 5.0, 3.0, 1.0] {
        q = q * s2 + 1.0 / d;
    }
    let ef = e as f64;
    (ef * LN2_HI + 2.0 * s * q) + ef * LN2_LO
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_and_ln_match_libm() {
        let mut worst = (0f64, 0f64);
        for i in 0..200_000 {
            let x = -(i as f64) * 0.003_7 - 1e-9 * (i % 7) as f64;
            let (got, want) = (exp_nonpos(x), x.exp());
            if want > 1e-300 {
                worst.0 = worst.0.max(((got - want) / want).abs());
            }
            let y = 1.0 + (i as f64) * 0.000_731;
            let (got, want) = (ln_ge1(y), y.ln());
            worst.1 = worst.1.max((got - want).abs() / want.abs().max(1e-300));
        }
        assert!(worst.0 < 4.0 * f64::EPSILON, "exp relative error {:e}", worst.0);
        assert!(worst.1 < 4.0 * f64::EPSILON, "ln relative error {:e}", worst.1);
        assert_eq!(exp_nonpos(0.0), 1.0);
        assert!(exp_nonpos(-1e6) < 1e-300);
        assert_eq!(ln_ge1(1.0), 0.0);
        assert!((ln_ge1(4.0) - 4f64.ln()).abs() < 1e-15);
    }
}
