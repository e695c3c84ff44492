//! Runtime benchmark: one TinyMem training step (forward, backward, AdamW) and KV-cached greedy
//! generation, on the cpu backend (or `--backend wgpu|cuda|cuda-emu`). Prints one JSON line per workload (compare with
//! benches/baselines/*.py through benches/compare.sh). Not a test: nothing here asserts a speed.
//!
//! cargo bench --bench runtime -- [--batch 8,128] [--layers 4] [--steps 5] [--prompts 64] [--gen-batch N]
//!     [--workloads train,generate] [--profile] [--backend cpu|wgpu|cuda|cuda-emu]

use memsieve::backend::cpu::CpuBackend;
use memsieve::backend::{Backend, Device};
use memsieve::model::config::ModelConfig;
use memsieve::model::generate::GenerateOptions;
use memsieve::model::{AdamW, Model};
use memsieve::rng::{purpose, Stream};
use std::sync::Arc;
use std::time::Instant;

#[path = "common/mod.rs"]
mod common;
use common::{arg, cpu_seconds};

fn median(xs: Vec<f64>) -> f64 {
    memsieve::bench::median(&xs)
}

fn main() {
    match arg("--backend", "cpu").as_str() {
        "cpu" => {
            let dev = Arc::new(Device::new(CpuBackend::new()));
            let threads = dev.backend.threads();
            run(dev, threads)
        }
        "wgpu" => {
            let backend = memsieve::backend::wgpu::WgpuBackend::new().unwrap_or_else(|e| panic!("{e}"));
            eprintln!("wgpu adapter: {}", backend.adapter.name);
            run(Arc::new(Device::new(backend)), 0)
        }
        "cuda" => {
            let backend = memsieve::backend::cuda::CudaDriverBackend::new(0).unwrap_or_else(|e| panic!("{e}"));
            eprintln!("cuda device: {}", backend.describe());
            run(Arc::new(Device::new(backend)), 0)
        }
        // The CPU emulator of the cuda backend: a smoke run of its host code and kernels, not a timing.
        "cuda-emu" => {
            let backend = memsieve::backend::cuda::CudaEmuBackend::emulator().unwrap_or_else(|e| panic!("{e}"));
            run(Arc::new(Device::new(backend)), 0)
        }
        other => panic!("unknown --backend {other} (cpu, wgpu, cuda or cuda-emu)"),
    }
}

fn run<B: Backend>(dev: Arc<Device<B>>, threads: usize) {
    let name = format!("memsieve-{}", dev.backend.name());
    let layers: usize = arg("--layers", "4").parse().unwrap();
    let steps: usize = arg("--steps", "5").parse().unwrap();
    let profile = std::env::args().any(|a| a == "--profile");
    let workloads = arg("--workloads", "train,generate");
    let cfg = ModelConfig::tinymem_math(layers);
    let mut rng = Stream::new(0, purpose::MISC, 0);
    let t = memsieve::bench::SEQ;
    if workloads.contains("train") {
        for b in arg("--batch", "8,128").split(',').map(|s| s.parse::<usize>().unwrap()) {
            let mut m = Model::new(dev.clone(), cfg.clone(), 0).unwrap();
            let tokens = memsieve::bench::train_tokens(&mut rng, b);
            let targets = m.lm_targets(&tokens, b, t, false);
            let h = AdamW::default();
            for _ in 0..2 {
                m.train_step(&tokens, &targets, b, t, &h).unwrap();
            }
            dev.profile.reset();
            dev.profile.enable(profile);
            let mut times = vec![];
            let before = dev.backend.counters();
            for _ in 0..steps {
                let t0 = Instant::now();
                m.train_step(&tokens, &targets, b, t, &h).unwrap();
                times.push(t0.elapsed().as_secs_f64());
            }
            dev.profile.enable(false);
            let per_step = dev.backend.counters() - before;
            let med = median(times);
            // Analytic count of tinymem.md §7 (full T×T attention), for comparison with PyTorch's figure.
            let flops = memsieve::bench::train_step_flops(b, t, layers);
            println!(
                "{{\"workload\":\"train_step\",\"impl\":\"{name}\",\"batch\":{b},\"layers\":{layers},\"threads\":{threads},\"median_ms\":{:.2},\"tokens_per_s\":{:.0},\"gflops_analytic\":{:.1},\"dispatches_per_step\":{},\"submits_per_step\":{},\"bytes_up_per_step\":{},\"bytes_down_per_step\":{}}}",
                med * 1e3,
                (b * t) as f64 / med,
                flops / med / 1e9,
                per_step.dispatches / steps as u64,
                per_step.submits / steps as u64,
                per_step.bytes_up / steps as u64,
                per_step.bytes_down / steps as u64,
            );
            if profile {
                eprintln!("{}", dev.profile_table());
            }
        }
    }
    if workloads.contains("generate") {
        let n: usize = arg("--prompts", "64").parse().unwrap();
        let mut m = Model::new(dev.clone(), cfg.clone(), 0).unwrap();
        let prompts = memsieve::bench::generation_prompts(&mut rng, n);
        let gen_batch: usize = arg("--gen-batch", &n.to_string()).parse().unwrap();
        let opts = GenerateOptions { max_length: 150, min_length: 150, batch: gen_batch };
        m.generate(&prompts, &opts).unwrap();
        let (mut times, mut cpu) = (vec![], vec![]);
        for _ in 0..3 {
            let (t0, c0) = (Instant::now(), cpu_seconds());
            m.generate(&prompts, &opts).unwrap();
            times.push(t0.elapsed().as_secs_f64());
            cpu.push(cpu_seconds() - c0);
        }
        if profile {
            dev.profile.reset();
            dev.profile.enable(true);
            m.generate(&prompts, &opts).unwrap();
            dev.profile.enable(false);
            eprintln!("{}", dev.profile_table());
        }
        let med = median(times);
        println!(
            "{{\"workload\":\"generate\",\"impl\":\"{name}\",\"prompts\":{n},\"layers\":{layers},\"threads\":{threads},\"median_s\":{med:.4},\"cpu_s\":{:.4},\"new_tokens_per_s\":{:.0}}}",
            median(cpu),
            (n * 100) as f64 / med
        );
    }
}
