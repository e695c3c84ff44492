//! The machine's peaks, for the profiler's "fraction of peak" and `memsieve info`: derived from what
//! the hardware reports (CPU: cores × SIMD lanes × FMA units × 2 × clock; GPU: device properties)
//! and measured where a number can be (memory bandwidth by a multithreaded triad, FMA throughput by
//! a register-resident loop). Every figure says where it came from.

use rayon::prelude::*;
use serde::Serialize;
use std::sync::OnceLock;
use std::time::Instant;

/// Peak compute and memory bandwidth of one backend's device, with their provenance.
#[derive(Clone, Debug, Serialize)]
pub struct Peaks {
    pub gflops: f64,
    pub gbs: f64,
    /// How each figure was obtained (derived from properties, measured, assumed).
    pub source: String,
}

/// What the CPU is and what it can do.
#[derive(Clone, Debug, Serialize)]
pub struct CpuInfo {
    pub model: String,
    /// Logical CPUs the OS gives this process.
    pub logical_cpus: usize,
    /// f32 lanes of the widest vector unit detected (16 AVX-512, 8 AVX2, 4 SSE/NEON).
    pub simd_f32_lanes: usize,
    pub simd: &'static str,
    /// f32 FMA lanes per cycle per core divided by the SIMD width: an assumption per vendor/ISA.
    pub fma_units: f64,
    pub fma_assumption: &'static str,
    pub clock_ghz: f64,
    pub clock_source: &'static str,
}

impl CpuInfo {
    /// cores × lanes × FMA units × 2 (an FMA is two flops) × clock, for `threads` cores.
    pub fn derived_peak_gflops(&self, threads: usize) -> f64 {
        threads as f64 * self.simd_f32_lanes as f64 * self.fma_units * 2.0 * self.clock_ghz
    }
}

fn cpuinfo_field(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == key).then(|| v.trim().to_string())
    })
}

/// Read the CPU's identity, ISA and clock (Linux /proc/cpuinfo; a measured clock-free fallback elsewhere).
pub fn cpu_info() -> CpuInfo {
    let text = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo_field(&text, "model name").unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let vendor = cpuinfo_field(&text, "vendor_id").unwrap_or_default();
    let family: u32 = cpuinfo_field(&text, "cpu family").and_then(|f| f.parse().ok()).unwrap_or(0);
    let logical_cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (simd_f32_lanes, simd) = simd_width();
    // FMA issue per core: public microarchitecture figures, since no register reports them.
    let (fma_units, fma_assumption) = match (simd, vendor.as_str()) {
        ("avx512", "AuthenticAMD") if family >= 0x1a => (2.0, "Zen 5: two 512-bit FMA pipes"),
        // Zen 4 executes a 512-bit FMA as two halves on its two 256-bit pipes: one 512-bit FMA a cycle.
        ("avx512", "AuthenticAMD") => (1.0, "Zen 4: two 256-bit FMA pipes = one 512-bit FMA per cycle"),
        ("avx512", _) => (2.0, "Intel AVX-512 server core: two 512-bit FMA units (some parts have one)"),
        ("avx2", _) => (2.0, "two 256-bit FMA units (Haswell+/Zen)"),
        _ => (2.0, "two vector FMA/mul-add pipes (assumed)"),
    };
    let (clock_ghz, clock_source) = match cpuinfo_field(&text, "cpu MHz").and_then(|m| m.parse::<f64>().ok()) {
        Some(mhz) if mhz > 0.0 => (mhz / 1e3, "/proc/cpuinfo cpu MHz"),
        _ => (measured_clock_ghz(), "measured dependent-add loop"),
    };
    CpuInfo { model, logical_cpus, simd_f32_lanes, simd, fma_units, fma_assumption, clock_ghz, clock_source }
}

fn simd_width() -> (usize, &'static str) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return (16, "avx512");
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            return (8, "avx2");
        }
        (4, "sse")
    }
    #[cfg(target_arch = "aarch64")]
    {
        (4, "neon")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        (1, "scalar")
    }
}

/// A chain of dependent integer adds retires one a cycle on every core since the 1990s.
fn measured_clock_ghz() -> f64 {
    let n: u64 = 200_000_000;
    let t = Instant::now();
    let mut x = std::hint::black_box(1u64);
    for _ in 0..n {
        x = std::hint::black_box(x.wrapping_add(3));
    }
    std::hint::black_box(x);
    n as f64 / t.elapsed().as_secs_f64() / 1e9
}

/// Measured f32 FMA throughput (GFLOP/s) of `threads` threads, each running 12 independent vector
/// accumulators in registers (enough chains to cover FMA latency on two pipes), best of three.
pub fn measure_fma_gflops(threads: usize) -> f64 {
    let threads = threads.max(1);
    let iters = 4_000_000u64;
    let pool = match rayon::ThreadPoolBuilder::new().num_threads(threads).build() {
        Ok(p) => p,
        Err(_) => return 0.0,
    };
    let run = || {
        let t = Instant::now();
        let flops: u64 = pool.install(|| (0..threads).into_par_iter().map(|_| fma_loop(iters)).sum());
        flops as f64 / t.elapsed().as_secs_f64() / 1e9
    };
    run();
    (0..3).map(|_| run()).fold(0.0, f64::max)
}

/// Flops done by `iters` rounds of 12 vector FMAs of the widest kind this CPU has.
fn fma_loop(iters: u64) -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // Safety: the feature was just detected.
            return unsafe { fma_avx512(iters) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // Safety: as above.
            return unsafe { fma_avx2(iters) };
        }
    }
    let mut acc = [[1e-3f32; 4]; 12];
    let (m, c) = (std::hint::black_box(0.999_999f32), std::hint::black_box(1e-7f32));
    for _ in 0..iters {
        for a in acc.iter_mut() {
            for v in a.iter_mut() {
                *v = v.mul_add(m, c);
            }
        }
    }
    std::hint::black_box(acc);
    iters * 12 * 4 * 2
}

macro_rules! fma_kernel {
    ($name:ident, $feature:literal, $lanes:expr, $set1:ident, $fmadd:ident, $reg:ty) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $feature)]
        unsafe fn $name(iters: u64) -> u64 {
            use std::arch::x86_64::*;
            let m = $set1(std::hint::black_box(0.999_999f32));
            let c = $set1(std::hint::black_box(1e-7f32));
            let mut acc: [$reg; 12] = [$set1(1e-3); 12];
            for _ in 0..iters {
                for a in acc.iter_mut() {
                    *a = $fmadd(*a, m, c);
                }
            }
            std::hint::black_box(acc);
            iters * 12 * $lanes * 2
        }
    };
}
fma_kernel!(fma_avx512, "avx512f", 16, _mm512_set1_ps, _mm512_fmadd_ps, __m512);
fma_kernel!(fma_avx2, "avx2,fma", 8, _mm256_set1_ps, _mm256_fmadd_ps, __m256);

/// Measured memory bandwidth (GB/s) of a STREAM-style triad a = b + s·c over three 32 MiB arrays on
/// `threads` threads, best of five; bytes counted are the 12 per element read and written (no
/// write-allocate traffic), as STREAM reports.
pub fn measure_bandwidth_gbs(threads: usize) -> f64 {
    let n = 8 << 20;
    let pool = match rayon::ThreadPoolBuilder::new().num_threads(threads.max(1)).build() {
        Ok(p) => p,
        Err(_) => return 0.0,
    };
    let b = vec![1.0f32; n];
    let c = vec![2.0f32; n];
    let mut a = vec![0.0f32; n];
    let chunk = n.div_ceil(threads.max(1) * 8);
    let mut best = f64::INFINITY;
    for _ in 0..6 {
        let t = Instant::now();
        pool.install(|| {
            a.par_chunks_mut(chunk).zip(b.par_chunks(chunk)).zip(c.par_chunks(chunk)).for_each(|((a, b), c)| {
                for ((a, b), c) in a.iter_mut().zip(b).zip(c) {
                    *a = b + 3.0 * c;
                }
            })
        });
        best = best.min(t.elapsed().as_secs_f64());
        std::hint::black_box(&a);
    }
    (12 * n) as f64 / best / 1e9
}

/// The cpu backend's peaks at `threads` threads: compute derived from the ISA, FMA assumption and
/// clock; bandwidth measured (once per process and thread count).
pub fn cpu_peaks(threads: usize) -> Peaks {
    static CACHE: OnceLock<std::sync::Mutex<Vec<(usize, Peaks)>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some((_, p)) = cache.lock().unwrap().iter().find(|(t, _)| *t == threads) {
        return p.clone();
    }
    let info = cpu_info();
    let derived = info.derived_peak_gflops(threads);
    // A boost clock above the reported one shows as a measured FMA rate above the derived peak;
    // the fraction of peak is taken against the larger, so it never exceeds 100% for that reason.
    let measured = measure_fma_gflops(threads);
    let p = Peaks {
        gflops: derived.max(measured),
        gbs: measure_bandwidth_gbs(threads),
        source: format!(
            "{} GFLOP/s: derived {derived:.1} = {threads} cores × {} f32 lanes ({}) × {} FMA units × 2 × {:.2} GHz ({}; FMA: {}), measured FMA loop {measured:.1}; bandwidth measured (triad)",
            if measured > derived { "measured" } else { "derived" },
            info.simd_f32_lanes,
            info.simd,
            info.fma_units,
            info.clock_ghz,
            info.clock_source,
            info.fma_assumption
        ),
    };
    cache.lock().unwrap().push((threads, p.clone()));
    p
}

/// The machine as `memsieve info` and `memsieve bench` report it.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    pub cpu: CpuInfo,
    /// Threads the figures below are for.
    pub threads: usize,
    /// Derived: threads × lanes × FMA units × 2 × clock.
    pub peak_gflops_derived: f64,
    /// Measured: the register-resident FMA loop on `threads` threads.
    pub fma_gflops_measured: f64,
    /// Measured: the triad on `threads` threads.
    pub bandwidth_gbs_measured: f64,
}

/// Describe and measure the CPU at `threads` threads (0: all logical CPUs); about half a second.
pub fn machine(threads: usize) -> Machine {
    let cpu = cpu_info();
    let threads = if threads == 0 { cpu.logical_cpus } else { threads.min(cpu.logical_cpus) };
    Machine {
        peak_gflops_derived: cpu.derived_peak_gflops(threads),
        fma_gflops_measured: measure_fma_gflops(threads),
        bandwidth_gbs_measured: measure_bandwidth_gbs(threads),
        cpu,
        threads,
    }
}

/// FP32 lanes per streaming multiprocessor by compute capability (NVIDIA's architecture whitepapers).
pub fn cuda_fp32_per_sm(major: i32, minor: i32) -> Option<u32> {
    Some(match (major, minor) {
        (6, 0) => 64,
        (6, _) => 128,
        (7, _) => 64,
        (8, 0) => 64,
        (8, _) => 128,
        (9, _) | (10, _) | (12, _) => 128,
        _ => return None,
    })
}

/// A CUDA device's peaks from its properties: SMs × FP32 lanes per SM × 2 × SM clock, and
/// 2 (double data rate) × memory clock × bus width.
pub fn cuda_peaks(sms: i32, clock_khz: i32, mem_clock_khz: i32, bus_bits: i32, cc: (i32, i32)) -> Option<Peaks> {
    let lanes = cuda_fp32_per_sm(cc.0, cc.1)?;
    if sms <= 0 || clock_khz <= 0 {
        return None;
    }
    let gflops = sms as f64 * lanes as f64 * 2.0 * clock_khz as f64 * 1e3 / 1e9;
    let gbs = 2.0 * mem_clock_khz as f64 * 1e3 * (bus_bits as f64 / 8.0) / 1e9;
    Some(Peaks {
        gflops,
        gbs,
        source: format!(
            "device properties: {sms} SMs × {lanes} FP32 lanes (sm_{}{}) × 2 × {:.2} GHz; 2 × {:.2} GHz memory clock × {bus_bits}-bit bus",
            cc.0,
            cc.1,
            clock_khz as f64 / 1e6,
            mem_clock_khz as f64 / 1e6
        ),
    })
}
