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

use memsieve::attribution::ig::{ig_full_prefix, integrated_gradients, IgOptions, Query};
use memsieve::backend::cpu::CpuBackend;
use memsieve::backend::Device;
use memsieve::model::config::ModelConfig;
use memsieve::model::Model;
use memsieve::rng::{purpose, Stream};
use std::sync::Arc;

#[path = "common/mod.rs"]
mod common;
use common::arg;

const T: usize = 150;
const PROMPT: usize = 50;

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
    let mut rng = Stream::new(5, purpose::MISC, 0);
    let tokens: Vec<u32> = (0..seqs * T).map(|_| rng.below(10) as u32).collect();
    let queries: Vec<Query> = (0..seqs)
        .flat_map(|s| (PROMPT - 1..T - 1).step_by(stride).map(move |pos| (s, pos)))
        .map(|(s, pos)| Query { seq: s, pos, target: tokens[s * T + pos + 1] })
        .collect();
    let all_layers: Vec<usize> = (0..layers).collect();
    let opts = IgOptions { steps, ..IgOptions::default() };
    if let Some(dir) = std::env::args().position(|a| a == "--dump").and_then(|i| std::env::args().nth(i + 1)) {
        let dir = std::path::Path::new(&dir);
        memsieve::checkpoint::save_model(dir.join("model"), &cfg, &model.download_params(), &[]).unwrap();
        let rows: Vec<&[u32]> = tokens.chunks(T).collect();
        let q: Vec<[usize; 3]> = queries.iter().map(|q| [q.seq, q.pos, q.target as usize]).collect();
        let doc = serde_json::json!({ "tokens": rows, "queries": q, "steps": steps, "grid": "left", "target": "prob" });
        memsieve::error::write_atomic(dir.join("work.json"), doc.to_string().as_bytes()).unwrap();
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
