//! Helpers shared by the benchmarks (`#[path]`-included; not a bench target itself).
// Each bench uses a subset of these.
#![allow(dead_code)]

/// The value after `name` on the command line, or `default`.
pub fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned()).unwrap_or_else(|| default.to_string())
}

/// Median wall time (s) of `reps` runs, after one untimed warm-up run when `warm_up`.
pub fn time(reps: usize, warm_up: bool, f: impl FnMut()) -> f64 {
    memsieve::bench::time_median(reps, warm_up, f)
}

#[allow(unused_imports)]
pub use memsieve::bench::cpu_seconds;
