//! The cuda backend's benchmark: one TinyMem training step (forward, backward, AdamW) and KV-cached
//! greedy generation, on a real GPU (`--backend cuda`, the default) or the CPU emulator
//! (`--backend cuda-emu`, to smoke-test the harness; its times say nothing about a GPU). `--profile`
//! adds the per-kernel table (each op synchronized). Prints one JSON line per workload.
//!
//! cargo bench --bench cuda -- [--backend cuda|cuda-emu] [--batch 8,128] [--layers 4] [--steps 5]
//!                             [--prompts 64] [--workloads train,generate] [--profile]

use memsieve::backend::cuda::{CudaDriverBackend, CudaEmuBackend};
use memsieve::backend::{Backend, Device};
use memsieve::model::config::ModelConfig;
use memsieve::model::generate::GenerateOptions;
use memsieve::model::{AdamW, Model};
use memsieve::rng::{purpose, Stream};
use std::sync::Arc;
use std::time::Instant;

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned()).unwrap_or_else(|| default.to_string())
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

fn main() {
    let backend = arg("--backend", "cuda");
    let result = match backend.as_str() {
        "cuda" => CudaDriverBackend::new(0).map(|b| {
            eprintln!("device: {}", b.describe());
            run(Arc::new(Device::new(b)))
        }),
        "cuda-emu" => CudaEmuBackend::emulator().map(|b| run(Arc::new(Device::new(b)))),
        other => {
            eprintln!("--backend {other}: this benchmark runs cuda or cuda-emu (cargo bench --bench runtime times the cpu)");
            std::process::exit(2);
        }
    };
    if let Err(e) = result {
        eprintln!("{e}");
        std::process::exit(1);
    }
}

fn run<B: Backend>(dev: Arc<Device<B>>) {
    let name = dev.backend.name();
    let layers: usize = arg("--layers", "4").parse().expect("--layers");
    let steps: usize = arg("--steps", "5").parse().expect("--steps");
    let prompts: usize = arg("--prompts", "64").parse().expect("--prompts");
    let profile = std::env::args().any(|a| a == "--profile");
    let workloads = arg("--workloads", "train,generate");
    let cfg = ModelConfig::tinymem_math(layers);
    let mut rng = Stream::new(0, purpose::MISC, 0);
    let t = cfg.n_positions;
    if workloads.contains("train") {
        for b in arg("--batch", "8,128").split(',').map(|s| s.parse::<usize>().expect("--batch")) {
            let mut m = Model::new(dev.clone(), cfg.clone(), 0).expect("model");
            let tokens: Vec<u32> = (0..b * t).map(|_| rng.below(14) as u32).collect();
            let targets = m.lm_targets(&tokens, b, t, false);
            let h = AdamW::default();
            // Warm-up (allocation, module load); the loss download at the end of a step synchronizes.
            m.train_step(&tokens, &targets, b, t, &h).expect("step");
            dev.profile.reset();
            dev.profile.enable(profile);
            let before = dev.backend.counters();
            let times: Vec<f64> = (0..steps)
                .map(|_| {
                    let t0 = Instant::now();
                    m.train_step(&tokens, &targets, b, t, &h).expect("step");
                    t0.elapsed().as_secs_f64()
                })
                .collect();
            dev.profile.enable(false);
            let spent = dev.backend.counters() - before;
            let med = median(times);
            println!(
                "{{\"workload\":\"train_step\",\"impl\":\"memsieve-{name}\",\"batch\":{b},\"layers\":{layers},\"median_ms\":{:.2},\"tokens_per_s\":{:.0},\"launches_per_step\":{},\"bytes_down_per_step\":{}}}",
                med * 1e3,
                (b * t) as f64 / med,
                spent.dispatches / steps as u64,
                spent.bytes_down / steps as u64
            );
            if profile {
                eprintln!("{}", dev.profile.table());
            }
        }
    }
    if workloads.contains("generate") {
        let mut m = Model::new(dev.clone(), cfg.clone(), 0).expect("model");
        let prompt_len = 50;
        let ps: Vec<Vec<u32>> = (0..prompts).map(|_| (0..prompt_len).map(|_| rng.below(10) as u32).collect()).collect();
        let opts = GenerateOptions { max_length: t, min_length: t, batch: prompts };
        m.generate(&ps[..1], &GenerateOptions { batch: 1, ..opts }).expect("warm-up");
        let t0 = Instant::now();
        m.generate(&ps, &opts).expect("generate");
        let secs = t0.elapsed().as_secs_f64();
        let new_tokens = prompts * (t - prompt_len);
        println!(
            "{{\"workload\":\"generate\",\"impl\":\"memsieve-{name}\",\"prompts\":{prompts},\"layers\":{layers},\"seconds\":{secs:.3},\"tokens_per_s\":{:.0}}}",
            new_tokens as f64 / secs
        );
    }
}
