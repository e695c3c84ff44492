//! SMI screening benchmark on the cpu: the f32 projection GEMM alone, PSMI end to end (f32 and f64
//! projection), and the KSG SMI over all slices, on synthetic Gaussian classes. Prints one JSON line
//! per workload and, with --dump DIR, writes the data (x.npy, y.npy) for
//! benches/baselines/smi_baseline.py, which times `psmi` and scikit-learn on the same data.
//!
//! cargo bench --bench smi -- [--n 4000] [--d 1024] [--k 1000] [--classes 4] [--reps 3] [--dump DIR]

use memsieve::rng::{purpose, Stream};
use memsieve::smi::ksg::ksg_mi_matrix;
use memsieve::smi::project::project;
use memsieve::smi::{psmi, Classes, Directions, KsgOptions, PsmiOptions};
use std::hint::black_box;
use std::time::Instant;

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned()).unwrap_or_else(|| default.to_string())
}

/// Median wall time (s) of `reps` runs.
fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    let mut ts: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    ts.sort_by(f64::total_cmp);
    ts[ts.len() / 2]
}

fn main() {
    let n: usize = arg("--n", "4000").parse().unwrap();
    let d: usize = arg("--d", "1024").parse().unwrap();
    let k: usize = arg("--k", "1000").parse().unwrap();
    let c: usize = arg("--classes", "4").parse().unwrap();
    let reps: usize = arg("--reps", "3").parse().unwrap();
    let threads = rayon::current_num_threads();

    // Gaussian classes with small mean shifts (weakly informative, like hidden states).
    let mut rng = Stream::new(11, purpose::MISC, 0);
    let centres: Vec<f32> = (0..c * d).map(|_| 0.05 * rng.normal() as f32).collect();
    let labels: Vec<i64> = (0..n).map(|_| rng.below(c as u64) as i64).collect();
    let x: Vec<f32> = (0..n * d).map(|i| centres[labels[i / d] as usize * d + i % d] + rng.normal() as f32).collect();
    if let Some(dir) = std::env::args().position(|a| a == "--dump").and_then(|i| std::env::args().nth(i + 1)) {
        let dir = std::path::Path::new(&dir);
        let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        memsieve::smi::npy::write_f64(dir.join("x.npy"), &x64, &[n, d]).unwrap();
        memsieve::smi::npy::write_i64(dir.join("y.npy"), &labels, &[n]).unwrap();
    }
    let classes = Classes::new(&labels).unwrap();
    let dirs = Directions::seeded(0, d);
    let thetas = dirs.block(0, k).unwrap();
    let none = |_: usize, _: usize| {};
    let line = |workload: &str, secs: f64| {
        println!("{{\"impl\":\"memsieve-cpu\",\"workload\":\"{workload}\",\"n\":{n},\"d\":{d},\"k\":{k},\"classes\":{c},\"threads\":{threads},\"seconds\":{secs:.4}}}");
    };

    let gemm = time(reps, || {
        black_box(project(&x, n, d, &thetas, k).unwrap());
    });
    line("projection_f32", gemm);
    let psmi32 = time(reps, || {
        black_box(psmi(&x, n, d, &classes, &dirs, k, &PsmiOptions::default(), &none).unwrap());
    });
    line("psmi_f32", psmi32);
    let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let psmi64 = time(reps, || {
        black_box(psmi(&x64, n, d, &classes, &dirs, k, &PsmiOptions::default(), &none).unwrap());
    });
    line("psmi_f64", psmi64);
    let p = project(&x, n, d, &thetas, k).unwrap();
    let ksg = time(reps, || {
        black_box(ksg_mi_matrix(&p, n, k, &classes, &KsgOptions::default()).unwrap());
    });
    line("ksg_all_slices", ksg);
    eprintln!("psmi_f32 / projection_f32 = {:.2}; ksg per slice {:.3} ms", psmi32 / gemm, ksg / k as f64 * 1e3);
}
