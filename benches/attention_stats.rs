//! `Op::AttentionStats` at TinyMem shapes: `--b` rows of 150 tokens, width 128 (4 heads of 32), the
//! suffix queries 50..150, top-5 — on the cpu backend and, with `--backend wgpu|cuda|cuda-emu`, on
//! that backend too. Prints a table and one JSON line per backend. Not a test: nothing asserts a speed.
//! `--dump DIR` writes the qkv and the cpu's statistics for benches/baselines/attention_stats_baseline.py
//! (PyTorch, materialising every causal softmax row as `output_attentions` would), which times the
//! same work and checks it agrees:
//!
//! cargo bench --bench attention_stats -- [--backend cpu|wgpu|cuda|cuda-emu] [--b 64] [--reps 5] [--dump DIR]
//! python3 benches/baselines/attention_stats_baseline.py DIR [--threads N]

#[path = "common/mod.rs"]
mod common;

use common::{arg, time};
use memsieve::backend::cpu::CpuBackend;
use memsieve::backend::{Backend, Device, Op, ATTENTION_STATS};

const T: usize = 150;
const C: usize = 128;
const NH: usize = 4;
const T0: usize = 50;
const K: usize = 5;

fn main() {
    let b: usize = arg("--b", "64").parse().expect("--b");
    let reps: usize = arg("--reps", "5").parse().expect("--reps");
    // Scores of a trained model's size: uniform in [-2, 2) per qkv entry.
    let mut s = 0x2545_f491u64;
    let qkv: Vec<f32> = (0..b * T * 3 * C)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * 2.0
        })
        .collect();
    let (cpu, stats) = run(&Device::new(CpuBackend::new()), &qkv, b, reps);
    let mut rows = vec![cpu];
    match arg("--backend", "cpu").as_str() {
        "cpu" => {}
        "wgpu" => rows.push(run(&Device::new(memsieve::backend::wgpu::WgpuBackend::new().unwrap_or_else(|e| panic!("{e}"))), &qkv, b, reps).0),
        "cuda" => rows.push(run(&Device::new(memsieve::backend::cuda::CudaDriverBackend::new(0).unwrap_or_else(|e| panic!("{e}"))), &qkv, b, reps).0),
        // The emulator is a smoke run of the kernel, not a timing.
        "cuda-emu" => rows.push(run(&Device::new(memsieve::backend::cuda::CudaEmuBackend::emulator().unwrap_or_else(|e| panic!("{e}"))), &qkv, b, 1).0),
        other => panic!("unknown --backend {other} (cpu, wgpu, cuda or cuda-emu)"),
    }
    let threads = rayon::current_num_threads();
    println!("{:<8} {:>6} {:>9} {:>12} {:>10} {:>10}", "backend", "rows", "queries", "median ms", "GFLOP/s", "GB/s");
    for r in &rows {
        println!("{:<8} {b:>6} {:>9} {:>12.3} {:>10.2} {:>10.2}", r.backend, b * NH * (T - T0), r.secs * 1e3, r.flops / r.secs / 1e9, r.bytes / r.secs / 1e9);
    }
    for r in &rows {
        println!(
            "{{\"bench\":\"attention_stats\",\"backend\":\"{}\",\"b\":{b},\"t\":{T},\"queries\":[{T0},{T}],\"top_k\":{K},\"threads\":{threads},\"median_s\":{:.6e},\"gflops\":{:.3}}}",
            r.backend, r.secs, r.flops / r.secs / 1e9
        );
    }
    if let Some(dir) = std::env::args().position(|a| a == "--dump").and_then(|i| std::env::args().nth(i + 1)) {
        let dir = std::path::PathBuf::from(dir);
        let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        memsieve::error::write_atomic(dir.join("qkv.f32"), &bytes(&qkv)).unwrap();
        memsieve::error::write_atomic(dir.join("stats.f32"), &bytes(&stats)).unwrap();
        let work = format!("{{\"b\":{b},\"t\":{T},\"c\":{C},\"nh\":{NH},\"t0\":{T0},\"t1\":{T},\"top_k\":{K},\"rust_median_s\":{:.6e}}}", rows[0].secs);
        memsieve::error::write_atomic(dir.join("work.json"), work.as_bytes()).unwrap();
        println!("wrote {}/qkv.f32, stats.f32, work.json", dir.display());
    }
}

/// One backend's timing: the median of the runs and the op's analytic FLOPs and bytes.
struct Timing {
    backend: String,
    secs: f64,
    flops: f64,
    bytes: f64,
}

/// The op's timing on `dev` and its statistics.
fn run<B: Backend>(dev: &Device<B>, qkv: &[f32], b: usize, reps: usize) -> (Timing, Vec<f32>) {
    let q = dev.alloc(qkv.len()).unwrap();
    dev.upload_f32(dev.view(&q), qkv);
    let out = dev.alloc(b * NH * (T - T0) * ATTENTION_STATS).unwrap();
    let op = || Op::AttentionStats { out: dev.view(&out), qkv: dev.view(&q), b, t: T, c: C, nh: NH, t0: T0, t1: T, top_k: K };
    let cost = op().cost();
    let secs = time(reps, true, || {
        dev.exec(op());
        dev.backend.synchronize();
    });
    (Timing { backend: dev.backend.name().to_string(), secs, flops: cost.flops, bytes: cost.bytes }, dev.download_f32(dev.view(&out)))
}
