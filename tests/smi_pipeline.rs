//! The device PSMI pipeline (src/smi/pipeline.rs): on the cpu backend it reproduces `smi::psmi` bit
//! for bit, whatever the sample chunking or sharding; on wgpu (lavapipe) and the CUDA emulator it
//! agrees with the cpu end to end.

mod common;

use memsieve::backend::cuda::{emu, CudaEmuBackend};
use memsieve::backend::{Backend, Device};
use memsieve::smi::pipeline::{self, Input, PartStats, PipelineOptions};
use memsieve::smi::psmi::{Ddof, STATS_ROWS};
use memsieve::smi::{self, Classes, Directions, KsgOptions, PsmiOptions, PsmiScores};

/// n samples of 3 unequal classes in d dimensions whose class means differ, plus a few far-out samples.
fn data(n: usize, d: usize) -> (Vec<f32>, Classes) {
    let labels: Vec<i64> = (0..n).map(|i| [0, 0, 0, 1, 1, 2, 0, 1][i % 8] * 10 - 3).collect();
    let mut s = 0x2545_f491_4f6c_dd1du64;
    let x = (0..n * d)
        .map(|e| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let u = (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            let (i, k) = (e / d, e % d);
            u + 0.4 * ((labels[i] + 3) as f32 / 10.0) * ((k as f32) * 0.37).cos() + if i % 97 == 0 { 2.0 } else { 0.0 }
        })
        .collect();
    (x, Classes::new(&labels).unwrap())
}

fn popts(ddof: Ddof, block: usize, max_memory: Option<usize>) -> PipelineOptions {
    PipelineOptions { ddof, block, ksg: Some(KsgOptions { n_neighbors: 3, sklearn_exact: false }), max_memory }
}

#[allow(clippy::too_many_arguments)]
fn run<B: Backend>(dev: &Device<B>, x: &[f32], n: usize, d: usize, classes: &Classes, dirs: &Directions, k: usize, o: &PipelineOptions) -> (PsmiScores, pipeline::Plan) {
    pipeline::psmi_on_device(dev, &Input { x, n, d, classes }, dirs, k, o, None, &|_, _| {}).unwrap()
}

fn assert_same(a: &PsmiScores, b: &PsmiScores, what: &str) {
    assert_eq!(a.mean, b.mean, "{what}: mean");
    assert_eq!(a.std, b.std, "{what}: std");
    assert_eq!(a.q01, b.q01, "{what}: q01");
    assert_eq!(a.q99, b.q99, "{what}: q99");
    assert_eq!(a.ksg_mi, b.ksg_mi, "{what}: ksg");
    assert_eq!(a.excluded, b.excluded, "{what}: excluded");
}

#[test]
fn cpu_pipeline_is_smi_psmi_bit_for_bit() {
    let cpu = common::cpu_device();
    let (n, d, k) = (2 * STATS_ROWS + 300, 37, 70);
    let (x, classes) = data(n, d);
    for (ddof, dirs) in [(Ddof::Zero, Directions::seeded(5, d)), (Ddof::One, Directions::explicit(common::parity_free_random(k * d), d).unwrap())] {
        let o = popts(ddof, 30, None);
        let want = smi::psmi(&x, n, d, &classes, &dirs, k, &PsmiOptions { ddof, block: 30, ksg: o.ksg.clone() }, &|_, _| {}).unwrap();
        let (got, plan) = run(&*cpu, &x, n, d, &classes, &dirs, k, &o);
        assert_eq!(plan.chunk, n);
        assert_same(&got, &want, &format!("{ddof:?}"));
    }
}

#[test]
fn chunked_and_sharded_runs_equal_the_unchunked_one() {
    let cpu = common::cpu_device();
    let (n, d, k) = (3 * STATS_ROWS + 5, 20, 45);
    let (x, classes) = data(n, d);
    let dirs = Directions::seeded(11, d);
    let (whole, _) = run(&*cpu, &x, n, d, &classes, &dirs, k, &popts(Ddof::Zero, 16, None));
    // A budget that fits 2 parts per chunk: two passes, chunks of 2048 + 1029 samples.
    let one = pipeline::plan(n, d, k, 3, &popts(Ddof::Zero, 16, None), usize::MAX, &|_, _| 0).unwrap().bytes;
    let (chunked, plan) = run(&*cpu, &x, n, d, &classes, &dirs, k, &popts(Ddof::Zero, 16, Some(one * 2 / 3)));
    assert!(plan.chunk < n && plan.chunk.is_multiple_of(STATS_ROWS), "{plan:?}");
    assert_same(&chunked, &whole, "chunked");
    // Three shards of statistics, merged, then scored.
    let inp = Input { x: &x, n, d, classes: &classes };
    let mut shards: Vec<PartStats> = (0..3).map(|i| pipeline::shard_stats(&*cpu, &inp, &dirs, k, &popts(Ddof::Zero, 16, None), i, 3, &|_| {}).unwrap()).collect();
    shards.reverse();
    let merged = PartStats::concat(shards.clone(), n.div_ceil(STATS_ROWS)).unwrap();
    let (sharded, _) = pipeline::psmi_on_device(&*cpu, &inp, &dirs, k, &popts(Ddof::Zero, 16, None), Some(&merged), &|_, _| {}).unwrap();
    assert_same(&sharded, &whole, "sharded");
    // A missing shard is an error, not a silent partial merge.
    assert!(PartStats::concat(shards[..2].to_vec(), n.div_ceil(STATS_ROWS)).is_err());
}

#[test]
fn a_budget_below_one_chunk_is_a_clear_error() {
    let gpu_scratch = |n: usize, w: usize| memsieve::backend::ksg_scratch_words(n, w, 4);
    let e = pipeline::plan(50_000, 4096, 2000, 4, &popts(Ddof::Zero, 500, Some(1 << 20)), usize::MAX, &gpu_scratch).unwrap_err().to_string();
    assert!(e.contains("--max-memory") && e.contains("even one chunk"), "{e}");
    // A device binding limit alone chunks the samples (lavapipe's 128 MiB: 32 Mi words), and narrows
    // the blocks until the KSG scratch of all samples (5·n·block words) fits one binding ...
    let p = pipeline::plan(50_000, 4096, 2000, 4, &popts(Ddof::Zero, 500, None), 32 << 20, &gpu_scratch).unwrap();
    assert!(p.chunk.is_multiple_of(STATS_ROWS) && p.chunk * 4096 <= 32 << 20 && p.chunk >= 4 * STATS_ROWS, "{p:?}");
    assert!(p.block == 125 && gpu_scratch(50_000, p.block) <= 32 << 20, "{p:?}");
    // ... and a limit below one chunk says which.
    let e = pipeline::plan(50_000, 4096, 2000, 4, &popts(Ddof::Zero, 500, None), 1 << 20, &gpu_scratch).unwrap_err().to_string();
    assert!(e.contains("largest binding"), "{e}");
}

/// End to end on a device backend against the cpu: PSMI (mean, std, quantiles) and KSG.
fn device_matches_cpu<B: Backend>(dev: &Device<B>) {
    let cpu = common::cpu_device();
    // n: two parts plus a remainder; K: blocks of 16 with a remainder; one slice block chunked by a budget.
    let (n, d, k) = (STATS_ROWS + 301, 29, 37);
    let (x, classes) = data(n, d);
    let dirs = Directions::seeded(3, d);
    let (want, _) = run(&*cpu, &x, n, d, &classes, &dirs, k, &popts(Ddof::One, 16, None));
    let one = pipeline::plan(n, d, k, 3, &popts(Ddof::One, 16, None), usize::MAX, &|n, w| dev.backend.smi_ksg_scratch_len(n, w, 3)).unwrap().bytes;
    // Less than what chunks of STATS_ROWS rows save (their features and pmi rows).
    for budget in [None, Some(one - 4 * (n - STATS_ROWS) * (d + k))] {
        let before = dev.backend.counters();
        let (got, plan) = run(dev, &x, n, d, &classes, &dirs, k, &popts(Ddof::One, 16, budget));
        let down = (dev.backend.counters() - before).bytes_down;
        assert!(budget.is_none() || plan.chunk < n, "{plan:?}");
        // KSG runs on the device: statistics, summaries and the per-slice MI come back, not the n × K projections.
        assert!(down < 4 * (n * k) as u64, "{}: {down} bytes downloaded", dev.backend.name());
        let mut worst = [0f64; 4];
        for (w, (name, a, b)) in worst.iter_mut().zip([("mean", &got.mean, &want.mean), ("std", &got.std, &want.std), ("q01", &got.q01, &want.q01), ("q99", &got.q99, &want.q99)]) {
            for i in 0..n {
                let rel = (a[i] - b[i]).abs() / (1e-2 + b[i].abs());
                *w = w.max(rel);
                assert!(rel <= 1e-5, "{} {plan:?}: {name} of sample {i} is {}, cpu {}", dev.backend.name(), a[i], b[i]);
            }
        }
        // KSG counts neighbours, so it jumps where the device's f32 GEMM (another summation order)
        // moves a projection across a neighbour's distance: a few counts of n, not rounding.
        let ksg = got.ksg_mi.iter().zip(&want.ksg_mi).map(|(a, b)| (a - b).abs()).fold(0f64, f64::max);
        assert!(ksg <= 1e-3, "{}: per-slice KSG differs by {ksg:e}", dev.backend.name());
        println!("{} {plan:?}: worst |Δ|/(0.01+|cpu|) mean/std/q01/q99 = {worst:?}; KSG |Δ| {ksg:.1e}", dev.backend.name());
    }
    // scikit-learn's exact mode (jitter) downloads the projections and runs KSG on the host.
    let exact = PipelineOptions { ksg: Some(KsgOptions { n_neighbors: 3, sklearn_exact: true }), ..popts(Ddof::One, 16, None) };
    let (want, _) = run(&*cpu, &x, n, d, &classes, &dirs, k, &exact);
    let (got, _) = run(dev, &x, n, d, &classes, &dirs, k, &exact);
    let ksg = got.ksg_mi.iter().zip(&want.ksg_mi).map(|(a, b)| (a - b).abs()).fold(0f64, f64::max);
    assert!(ksg <= 1e-3 && got.ksg_mi.len() == k, "{}: per-slice KSG (exact mode) differs by {ksg:e}", dev.backend.name());
}

#[test]
fn wgpu_pipeline_matches_cpu() {
    let Some(dev) = common::wgpu_device() else { return };
    device_matches_cpu(&*dev);
}

#[test]
fn cuda_emu_pipeline_matches_cpu() {
    if !emu::built() {
        assert!(std::env::var("CI").map_or(true, |v| v != "true"), "the CUDA emulator was not built");
        eprintln!("\n!!!!!!!! SKIPPED: no CUDA emulator in this build !!!!!!!!\n");
        return;
    }
    device_matches_cpu(&Device::new(CudaEmuBackend::emulator().unwrap()));
}
