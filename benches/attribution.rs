//! Integrated-gradients benchmark on the cpu: TinyMem's IG workload (every layer, the positions
//! prompt_len − 1 .. T − 2 of each sequence, 20 path points, target probability) on a TinyMem math
//! model, in memsieve's fast single-position form. Prints one JSON line; with --dump DIR also writes
//! the model (DIR/model), the sequences (DIR/tokens.json) and the queries, for
//! benches/baselines/ig_baseline.py, which runs TinyMem's algorithm in PyTorch on the same work.
//!
//! With --full-prefix it also times memsieve's own plain form of TinyMem's algorithm (the prefix run
//! whole per query and layer), which separates the algorithmic gain from the implementation's.
//!
//! cargo bench --bench attribution -- [--layers 4] [--seqs 2] [--stride 5] [--steps 20] [--reps 3] [--full-prefix] [--dump DIR]

use memsieve::attribution::ig::{ig_full_prefix, integrated_gradients, IgOptions};
use memsieve::backend::cpu::CpuBackend;
use memsieve::backend::Device;
use memsieve::model::config::ModelConfig;
use memsieve::model::Model;
use std::sync::Arc;

#[path = "common/mod.rs"]
mod common;
use common::arg;

const T: usize = memsieve::bench::SEQ;

fn main() {
    let layers: usize = arg("--layers", "4").parse().unwrap();
    let seqs: usize = arg("--seqs", "2").parse().unwrap();
    let stride: usize = arg("--stride", "5").parse().unwrap();
    let steps: usize = arg("--steps", "20").parse().unwrap();
    let reps: usize = arg("--reps", "3").parse().unwrap();
    let threads = rayon::current_num_threads();

    let cfg = ModelConfig::tinymem_math(layers);
    let dev = Arc::new(Device::new(CpuBackend::new()));
    let mut model = Model::new(dev, cfg.clone(), 0).unwrap();
    // Digits (ids 0..9), as the math data; the cost does not depend on the values.
    let (tokens, queries) = memsieve::bench::ig_work(seqs, stride);
    let all_layers: Vec<usize> = (0..layers).collect();
    let opts = IgOptions { steps, ..IgOptions::default() };
    if let Some(dir) = std::env::args().position(|a| a == "--dump").and_then(|i| std::env::args().nth(i + 1)) {
        memsieve::bench::dump_ig_work(std::path::Path::new(&dir), &cfg, &model.download_params(), &tokens, &queries, steps).unwrap();
    }
    let secs = common::time(reps, true, || {
        std::hint::black_box(integrated_gradients(&mut model, &tokens, seqs, T, &queries, &all_layers, &opts, &|_, _| {}).unwrap());
    });
    let line = |workload: &str, secs: f64| {
        let per = secs / (queries.len() * layers) as f64;
        println!(
            "{{\"impl\":\"memsieve-cpu\",\"workload\":\"{workload}\",\"layers\":{layers},\"seqs\":{seqs},\"queries\":{},\"steps\":{steps},\"threads\":{threads},\"seconds\":{secs:.4},\"seconds_per_query_layer\":{per:.3e}}}",
            queries.len()
        );
    };
    line("ig", secs);
    if std::env::args().any(|a| a == "--full-prefix") {
        let secs = common::time(1, false, || {
            std::hint::black_box(ig_full_prefix(&mut model, &tokens, seqs, T, &queries, &all_layers, &opts).unwrap());
        });
        line("ig_full_prefix", secs);
    }
}
