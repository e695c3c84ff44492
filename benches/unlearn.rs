//! BalancedSubnet benchmark on the cpu: epochs of TinyMem's BalancedSubnet (tinymem.md §5.5; batch
//! 32, SGD + momentum on the MLP scores, straight-through masks) on a TinyMem math model over a
//! memorized set M and a retain set C of 150-token digit rows. Prints one JSON line; with --dump DIR
//! also writes the model (DIR/model) and the rows (DIR/work.json) for
//! benches/baselines/subnet_baseline.py, which runs the reference algorithm in PyTorch on the same work.
//!
//! cargo bench --bench unlearn -- [--layers 4] [--mem 64] [--retain 1024] [--epochs 1] [--ratio 0.05] [--reps 3] [--dump DIR]

use memsieve::backend::cpu::CpuBackend;
use memsieve::backend::Device;
use memsieve::model::config::ModelConfig;
use memsieve::model::Model;
use memsieve::unlearn::{unlearn, Method, UnlearnOptions, UnlearnSets};
use std::sync::Arc;

#[path = "common/mod.rs"]
mod common;
use common::arg;

fn main() {
    let layers: usize = arg("--layers", "4").parse().unwrap();
    let n_mem: usize = arg("--mem", "64").parse().unwrap();
    let n_retain: usize = arg("--retain", "1024").parse().unwrap();
    let epochs: usize = arg("--epochs", "1").parse().unwrap();
    let ratio: f64 = arg("--ratio", "0.05").parse().unwrap();
    let reps: usize = arg("--reps", "3").parse().unwrap();
    let method = if std::env::args().any(|a| a == "--subnet") { Method::Subnet } else { Method::BalancedSubnet };
    let threads = rayon::current_num_threads();

    let cfg = ModelConfig::tinymem_math(layers);
    let dev = Arc::new(Device::new(CpuBackend::new()));
    let base = Model::new(dev.clone(), cfg.clone(), 0).unwrap().download_params();
    // Digits (ids 0..9), as the math data; the cost does not depend on the values.
    let (m, c) = memsieve::bench::unlearn_work(n_mem, n_retain);
    let o = UnlearnOptions { ratio, epochs, alpha: 0.9, ..UnlearnOptions::default() };
    if let Some(dir) = std::env::args().position(|a| a == "--dump").and_then(|i| std::env::args().nth(i + 1)) {
        memsieve::bench::dump_unlearn_work(std::path::Path::new(&dir), &cfg, &base, &m, &c, method, &o).unwrap();
    }
    let sets = UnlearnSets { memorized: &m, retain: &c };
    let mut steps = 0;
    let secs = common::time(reps, true, || {
        let mut model = Model::from_params(dev.clone(), cfg.clone(), &base).unwrap();
        steps = unlearn(&mut model, method, &sets, &o, &|_, _| {}).unwrap().steps;
    });
    println!(
        "{{\"impl\":\"memsieve-cpu\",\"workload\":\"{}\",\"layers\":{layers},\"memorized\":{n_mem},\"retain\":{n_retain},\"epochs\":{epochs},\"ratio\":{ratio},\"steps\":{steps},\"threads\":{threads},\"seconds\":{secs:.4},\"seconds_per_step\":{:.4e}}}",
        method.name(),
        secs / steps.max(1) as f64
    );
}
