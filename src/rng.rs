//! Philox4x32-10: the counter-based generator every backend shares (engineering-notes §5).
//! A value depends only on (key, counter), so any backend can draw element i without a sequential state,
//! and a run is reproducible from its seed everywhere.

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

/// One Philox4x32-10 block: 10 rounds over a 128-bit counter with a 64-bit key.
#[inline]
pub fn philox4x32(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let (mut x, mut k) = (counter, key);
    for round in 0..10 {
        if round > 0 {
            k[0] = k[0].wrapping_add(W0);
            k[1] = k[1].wrapping_add(W1);
        }
        let p0 = (M0 as u64) * (x[0] as u64);
        let p1 = (M1 as u64) * (x[2] as u64);
        x = [
            ((p1 >> 32) as u32) ^ x[1] ^ k[0],
            p1 as u32,
            ((p0 >> 32) as u32) ^ x[3] ^ k[1],
            p0 as u32,
        ];
    }
    x
}

/// Key for a 64-bit seed.
#[inline]
pub fn seed_key(seed: u64) -> [u32; 2] {
    [seed as u32, (seed >> 32) as u32]
}

/// Uniform in the open interval (0, 1) from one u32: (x + 0.5)·2⁻³².
#[inline]
pub fn uniform_open(x: u32) -> f64 {
    (x as f64 + 0.5) * (1.0 / 4_294_967_296.0)
}

/// Purpose tags (counter word 2), so independent uses of one seed never share a stream.
pub mod purpose {
    pub const INIT: u32 = 1;
    pub const DATA: u32 = 2;
    pub const SHUFFLE: u32 = 3;
    pub const PROJECTION: u32 = 4;
    pub const MASK_INIT: u32 = 5;
    pub const MISC: u32 = 6;
    /// The spectral-norm penalty's initial u vectors (src/regularize/spectral.rs).
    pub const SPECTRAL: u32 = 7;
    /// Example-tied dropout masks, drawn in-kernel (src/regularize/etd.rs).
    pub const ETD: u32 = 8;
}

/// A sequential reader over one Philox stream: counter = (block, stream, purpose, 0).
/// Host-side code (data generation, shuffles, init) uses this; kernels index blocks directly.
#[derive(Clone, Debug)]
pub struct Stream {
    key: [u32; 2],
    stream: u32,
    purpose: u32,
    block: u32,
    buf: [u32; 4],
    used: usize,
}

impl Stream {
    pub fn new(seed: u64, purpose: u32, stream: u32) -> Self {
        Stream { key: seed_key(seed), stream, purpose, block: 0, buf: [0; 4], used: 4 }
    }

    pub fn next_u32(&mut self) -> u32 {
        if self.used == 4 {
            self.buf = philox4x32([self.block, self.stream, self.purpose, 0], self.key);
            self.block = self.block.wrapping_add(1);
            self.used = 0;
        }
        let v = self.buf[self.used];
        self.used += 1;
        v
    }

    pub fn next_u64(&mut self) -> u64 {
        ((self.next_u32() as u64) << 32) | self.next_u32() as u64
    }

    /// Uniform in (0, 1).
    pub fn uniform(&mut self) -> f64 {
        uniform_open(self.next_u32())
    }

    /// Uniform integer in [0, n), unbiased (rejection on the 64-bit draw).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0)");
        let zone = u64::MAX - (u64::MAX % n);
        loop {
            let x = self.next_u64();
            if x < zone {
                return x % n;
            }
        }
    }

    /// Standard normal by Box–Muller (one value per pair of uniforms, the cosine branch).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }

    /// A random permutation of 0..n.
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        self.shuffle(&mut p);
        p
    }

    /// `k` distinct indices from 0..n, in draw order (like Python's `random.sample`).
    pub fn sample(&mut self, n: usize, k: usize) -> Vec<usize> {
        assert!(k <= n, "sample larger than population");
        let mut p: Vec<usize> = (0..n).collect();
        for i in 0..k {
            let j = i + self.below((n - i) as u64) as usize;
            p.swap(i, j);
        }
        p.truncate(k);
        p
    }

    /// Index drawn with the given (unnormalised) weights, like `random.choices`.
    pub fn choose_weighted(&mut self, weights: &[f64]) -> usize {
        let total: f64 = weights.iter().sum();
        let mut r = self.uniform() * total;
        for (i, w) in weights.iter().enumerate() {
            if r < *w {
                return i;
            }
            r -= w;
        }
        weights.len() - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answers() {
        assert_eq!(philox4x32([0; 4], [0; 2]), [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]);
        assert_eq!(
            philox4x32([u32::MAX; 4], [u32::MAX; 2]),
            [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]
        );
        assert_eq!(
            philox4x32([0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0]),
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]
        );
    }

    #[test]
    fn normal_moments() {
        let mut s = Stream::new(7, purpose::MISC, 0);
        let n = 200_000;
        let xs: Vec<f64> = (0..n).map(|_| s.normal()).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "var {var}");
    }

    #[test]
    fn sample_is_distinct() {
        let mut s = Stream::new(1, purpose::MISC, 0);
        let mut v = s.sample(100, 60);
        v.sort();
        v.dedup();
        assert_eq!(v.len(), 60);
    }
}
