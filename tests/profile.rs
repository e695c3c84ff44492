//! The profiler's numbers add up: per-kernel totals against a measured training step, analytic FLOP
//! counts of the matmul, the trace file's structure (Trace Event Format), device timing on wgpu,
//! and `memsieve bench` end to end.

mod common;

use memsieve::backend::cpu::CpuBackend;
use memsieve::backend::profile::Timing;
use memsieve::backend::{Backend, Device, Op, WeightLayout};
use memsieve::model::config::ModelConfig;
use memsieve::model::{AdamW, Model};
use memsieve::rng::{purpose, Stream};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn memsieve() -> Command {
    Command::new(env!("CARGO_BIN_EXE_memsieve"))
}

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("memsieve-profile-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn kernel_totals_add_up_to_the_measured_training_step() {
    let dev = Arc::new(Device::new(CpuBackend::with_threads(1)));
    let mut m = Model::new(dev.clone(), ModelConfig::tinymem_math(2), 0).unwrap();
    let (b, t) = (8, 150);
    let mut rng = Stream::new(0, purpose::MISC, 0);
    let tokens = memsieve::bench::train_tokens(&mut rng, b);
    let targets = m.lm_targets(&tokens, b, t, false);
    let h = AdamW::default();
    m.train_step(&tokens, &targets, b, t, &h).unwrap();
    dev.profile.enable(true);
    // Best of a few, each compared with its own kernel total (the host is shared and noisy).
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        dev.profile.reset();
        let t0 = Instant::now();
        m.train_step(&tokens, &targets, b, t, &h).unwrap();
        let wall = t0.elapsed();
        let kernels = dev.profile.total_time();
        assert!(kernels <= wall, "kernels {kernels:?} longer than the step {wall:?}");
        let gap = (wall.as_secs_f64() - kernels.as_secs_f64()) / wall.as_secs_f64();
        best = best.min(gap);
        assert!(dev.profile.total_calls() > 20, "a step is dozens of ops");
    }
    assert!(best < 0.10, "per-kernel totals miss {:.1}% of the step's wall time", 100.0 * best);
}

#[test]
fn matmul_flops_are_the_analytic_count() {
    let dev = Device::new(CpuBackend::with_threads(1));
    let (n, c, oc) = (37, 29, 53);
    let (inp, w, bias, out) = (dev.alloc(n * c).unwrap(), dev.alloc(c * oc).unwrap(), dev.alloc(oc).unwrap(), dev.alloc(n * oc).unwrap());
    let (dinp, dw, db) = (dev.alloc(n * c).unwrap(), dev.alloc(c * oc).unwrap(), dev.alloc(oc).unwrap());
    let v = |b| dev.view(b);
    let fwd = |bias| Op::MatmulForward { out: v(&out), inp: v(&inp), weight: v(&w), bias, n, c, oc, layout: WeightLayout::InOut };
    assert_eq!(fwd(None).cost().flops, (2 * n * c * oc) as f64);
    assert_eq!(fwd(Some(v(&bias))).cost().flops, (2 * n * c * oc + n * oc) as f64);
    // Backward: d(inp) = d(out)·Wᵀ and d(W) = inpᵀ·d(out) are 2·n·c·oc each; d(bias) a column sum.
    let bwd = |dinp, dweight, dbias| Op::MatmulBackward { dinp, dweight, dbias, dout: v(&out), inp: v(&inp), weight: v(&w), n, c, oc, layout: WeightLayout::InOut };
    assert_eq!(bwd(Some(v(&dinp)), None, None).cost().flops, (2 * n * c * oc) as f64);
    assert_eq!(bwd(Some(v(&dinp)), Some(v(&dw)), Some(v(&db))).cost().flops, (4 * n * c * oc + n * oc) as f64);
    // The profiler records exactly those counts.
    dev.profile.enable(true);
    dev.exec(fwd(None));
    dev.exec(bwd(Some(v(&dinp)), Some(v(&dw)), Some(v(&db))));
    let s = dev.profile.snapshot();
    assert_eq!(s["matmul_forward"].flops, (2 * n * c * oc) as f64);
    assert_eq!(s["matmul_backward"].flops, (4 * n * c * oc + n * oc) as f64);
    assert_eq!(s["matmul_forward"].bytes, 4.0 * (n * c + c * oc + n * oc) as f64);
    // Every op of a training step reports work (none fell through with 0 FLOPs and 0 bytes).
    let m_dev = Arc::new(Device::new(CpuBackend::with_threads(1)));
    let mut m = Model::new(m_dev.clone(), ModelConfig::tinymem_math(1), 0).unwrap();
    let tokens = vec![1u32; 2 * 20];
    let targets = m.lm_targets(&tokens, 2, 20, false);
    m_dev.profile.enable(true);
    m.train_step(&tokens, &targets, 2, 20, &AdamW::default()).unwrap();
    for (name, st) in m_dev.profile.snapshot() {
        assert!(st.flops > 0.0 || st.bytes > 0.0, "{name} reports no cost");
    }
}

/// Parse a trace and check the Trace Event Format: metadata, then complete events with name, cat,
/// ts, dur, pid, tid; kernels carry backend/timing/flops/bytes. Returns (kernel events, phase names).
fn check_trace(path: &std::path::Path, backend: &str) -> (usize, Vec<String>) {
    let text = std::fs::read_to_string(path).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).expect("the trace is valid JSON");
    let events = v["traceEvents"].as_array().expect("traceEvents array");
    let (mut kernels, mut phases) = (0, Vec::new());
    for e in events {
        let ph = e["ph"].as_str().expect("every event has ph");
        assert!(e["pid"].is_u64() && e["tid"].is_u64(), "{e}");
        match ph {
            "M" => assert!(e["args"]["name"].is_string(), "{e}"),
            "X" => {
                let (ts, dur) = (e["ts"].as_f64().unwrap(), e["dur"].as_f64().unwrap());
                assert!(ts >= 0.0 && dur >= 0.0, "{e}");
                assert!(e["name"].is_string());
                match e["cat"].as_str().unwrap() {
                    "kernel" => {
                        kernels += 1;
                        assert_eq!(e["args"]["backend"], backend);
                        assert!(e["args"]["timing"].is_string() && e["args"]["flops"].is_f64() && e["args"]["bytes"].is_f64(), "{e}");
                        assert_ne!(e["tid"], 0, "kernels are on their host thread's track, not the phases'");
                    }
                    "phase" => phases.push(e["name"].as_str().unwrap().to_string()),
                    other => panic!("unexpected category {other}"),
                }
            }
            other => panic!("unexpected phase type {other}"),
        }
    }
    (kernels, phases)
}

#[test]
fn the_trace_is_trace_event_format_with_one_event_per_op_and_phase() {
    let dev = Arc::new(Device::new(CpuBackend::with_threads(1)));
    dev.profile.enable(true);
    dev.profile.enable_trace();
    let mut m = Model::new(dev.clone(), ModelConfig::tinymem_math(1), 0).unwrap();
    let tokens = vec![3u32; 2 * 30];
    let targets = m.lm_targets(&tokens, 2, 30, false);
    let t0 = Instant::now();
    dev.profile.in_phase("step", || m.train_step(&tokens, &targets, 2, 30, &AdamW::default()).unwrap());
    let wall = t0.elapsed();
    let path = tmp("trace").join("trace.json");
    dev.write_trace(&path).unwrap();
    let (kernels, phases) = check_trace(&path, "cpu");
    assert_eq!(kernels as u64, dev.profile.total_calls(), "one event per op launched");
    assert_eq!(phases, ["step"]);
    // The phase encloses its kernels.
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let xs: Vec<&serde_json::Value> = v["traceEvents"].as_array().unwrap().iter().filter(|e| e["ph"] == "X").collect();
    let phase = xs.iter().find(|e| e["cat"] == "phase").unwrap();
    let (p0, p1) = (phase["ts"].as_f64().unwrap(), phase["ts"].as_f64().unwrap() + phase["dur"].as_f64().unwrap());
    assert!(phase["dur"].as_f64().unwrap() <= wall.as_secs_f64() * 1e6 + 1.0);
    for k in xs.iter().filter(|e| e["cat"] == "kernel") {
        let (k0, k1) = (k["ts"].as_f64().unwrap(), k["ts"].as_f64().unwrap() + k["dur"].as_f64().unwrap());
        assert!(k0 >= p0 - 0.01 && k1 <= p1 + 0.01, "kernel [{k0}, {k1}] outside the phase [{p0}, {p1}]");
    }
    // Asking for a trace that was never enabled is an error, not an empty file.
    let plain = Device::new(CpuBackend::with_threads(1));
    assert!(plain.write_trace(&tmp("trace").join("none.json")).is_err());
}

#[test]
fn wgpu_times_ops_with_timestamp_queries_where_the_adapter_has_them() {
    let Some(dev) = common::wgpu_device() else { return };
    let timing = dev.backend.timing();
    eprintln!("wgpu profiler timing: {}", timing.label());
    let (n, c, oc) = (67, 45, 129);
    let (inp, w, out) = (dev.alloc(n * c).unwrap(), dev.alloc(c * oc).unwrap(), dev.alloc(n * oc).unwrap());
    dev.upload_f32(dev.view(&inp), &common::parity_free_random(n * c));
    dev.upload_f32(dev.view(&w), &common::parity_free_random(c * oc));
    dev.profile.reset();
    dev.profile.enable(true);
    for _ in 0..3 {
        dev.exec(Op::MatmulForward { out: dev.view(&out), inp: dev.view(&inp), weight: dev.view(&w), bias: None, n, c, oc, layout: WeightLayout::InOut });
    }
    dev.profile.enable(false);
    let s = &dev.profile.snapshot()["matmul_forward"];
    assert_eq!(s.calls, 3);
    if timing == Timing::GpuTimestamps {
        assert_eq!(s.device_timed, 3, "every call timed on the device");
        assert!(s.time > Duration::ZERO && s.time < Duration::from_secs(5), "{:?}", s.time);
    } else {
        assert_eq!(timing, Timing::Wall);
        assert_eq!(s.device_timed, 0);
    }
    // The result is unchanged by timing.
    let timed = dev.download_f32(dev.view(&out));
    dev.exec(Op::MatmulForward { out: dev.view(&out), inp: dev.view(&inp), weight: dev.view(&w), bias: None, n, c, oc, layout: WeightLayout::InOut });
    assert_eq!(timed, dev.download_f32(dev.view(&out)));
    assert!(dev.profile_table().contains(timing.label()));
}

#[test]
fn bench_small_runs_end_to_end_and_writes_json_and_a_trace() {
    let out = tmp("bench");
    let trace = out.join("trace.json");
    let t0 = Instant::now();
    let o = memsieve()
        .args(["--backend", "cpu", "--threads", "2", "--trace"])
        .arg(&trace)
        .args(["bench", "--size", "small", "--runs", "1", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let secs = t0.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&o.stderr));
    assert!(secs < 60.0, "bench --size small took {secs:.1} s");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("bench.json")).unwrap()).unwrap();
    assert_eq!(v["backend"], "cpu");
    assert!(v["machine"]["cpu"]["model"].is_string());
    assert!(v["machine"]["peak_gflops_derived"].as_f64().unwrap() > 0.0);
    assert!(v["machine"]["bandwidth_gbs_measured"].as_f64().unwrap() > 0.0);
    let ws = v["workloads"].as_array().unwrap();
    let names: Vec<&str> = ws.iter().map(|w| w["workload"].as_str().unwrap()).collect();
    assert_eq!(names, ["train_step", "generate", "psmi", "ksg", "ig", "balanced_subnet"]);
    for w in ws {
        let med = w["median_s"].as_f64().unwrap();
        assert!(med > 0.0 && w["spread"].as_f64().unwrap() >= 0.0, "{w}");
        assert_eq!(w["runs_s"].as_array().unwrap().len(), 1);
        assert!((w["throughput_per_s"].as_f64().unwrap() - w["work"].as_f64().unwrap() / med).abs() < 1e-6 * w["throughput_per_s"].as_f64().unwrap());
        assert!(stdout.contains(w["workload"].as_str().unwrap()), "the table lists {}", w["workload"]);
    }
    // --trace on bench: one host phase per workload run, kernels inside.
    let (kernels, phases) = check_trace(&trace, "cpu");
    assert!(kernels > 100, "{kernels} kernel events");
    for name in ["train_step", "generate", "psmi", "ksg", "ig"] {
        assert!(phases.iter().any(|p| p == name), "no {name} phase in {phases:?}");
    }
}

#[test]
fn bench_baselines_without_python_say_so() {
    let out = tmp("nopython");
    let o = memsieve()
        .args(["--backend", "cpu", "bench", "--size", "small", "--runs", "1", "--workloads", "train-step", "--baselines", "--python", "/nonexistent/python3", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("no baseline") && stderr.contains("pip install torch transformers"), "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("bench.json")).unwrap()).unwrap();
    assert!(v["workloads"][0]["baseline"]["missing"].as_str().unwrap().contains("could not be started"));
    // Bad input is a clear error.
    let o = memsieve().args(["--backend", "cpu", "bench", "--runs", "0"]).output().unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--runs must be at least 1"));
}

#[test]
fn info_prints_the_machine_and_its_peaks() {
    let o = memsieve().args(["--threads", "1", "info"]).output().unwrap();
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{s}");
    for want in ["machine:", "SIMD", "FMA units", "clock", "GFLOP/s derived", "GFLOP/s measured", "GB/s measured", "backends:"] {
        assert!(s.contains(want), "info lacks {want:?}:\n{s}");
    }
}

#[test]
fn cuda_peaks_match_the_a100_datasheet() {
    // A100 SXM: 108 SMs, 1410 MHz boost, 64 FP32/SM → 19.5 TFLOP/s; 1215 MHz × 5120 bits → 1555 GB/s.
    let p = memsieve::machine::cuda_peaks(108, 1_410_000, 1_215_000, 5120, (8, 0)).unwrap();
    assert!((p.gflops - 19_492.0).abs() < 10.0, "{}", p.gflops);
    assert!((p.gbs - 1555.2).abs() < 1.0, "{}", p.gbs);
    assert!(memsieve::machine::cuda_peaks(1, 1, 1, 1, (99, 0)).is_none(), "unknown architectures have no peak");
}

#[test]
fn cpu_peaks_are_derived_and_measured_plausibly() {
    let i = memsieve::machine::cpu_info();
    assert!(i.logical_cpus >= 1 && i.simd_f32_lanes >= 1);
    assert!(i.clock_ghz > 0.1 && i.clock_ghz < 10.0, "{}", i.clock_ghz);
    assert_eq!(i.derived_peak_gflops(2), 2.0 * i.derived_peak_gflops(1));
    // The measured FMA loop cannot beat the derived peak by much (a boost clock aside), and a
    // vectorized loop reaches a good part of it even on a loaded host.
    let measured = memsieve::machine::measure_fma_gflops(1);
    let derived = i.derived_peak_gflops(1);
    assert!(measured < 2.0 * derived, "measured {measured:.1} vs derived {derived:.1} GFLOP/s");
    assert!(measured > 0.05 * derived, "measured {measured:.1} vs derived {derived:.1} GFLOP/s");
}

#[test]
fn cuda_emu_is_timed_by_the_host_and_labelled_as_the_emulator() {
    let dev = Device::new(memsieve::backend::cuda::CudaEmuBackend::emulator().expect("the emulator is built with the crate"));
    assert_eq!(dev.backend.timing(), Timing::EmulatorWall);
    let (n, c, oc) = (5, 7, 9);
    let (inp, w, out) = (dev.alloc(n * c).unwrap(), dev.alloc(c * oc).unwrap(), dev.alloc(n * oc).unwrap());
    dev.profile.enable(true);
    dev.exec(Op::MatmulForward { out: dev.view(&out), inp: dev.view(&inp), weight: dev.view(&w), bias: None, n, c, oc, layout: WeightLayout::InOut });
    let s = &dev.profile.snapshot()["matmul_forward"];
    assert_eq!((s.timed, s.device_timed), (1, 0));
    assert!(s.time > Duration::ZERO);
    let table = dev.profile_table();
    assert!(table.contains("emulator wall") && table.contains("cuda-emu"), "{table}");
    assert!(table.contains("peaks: unknown"), "no peak for an emulator: {table}");
}
