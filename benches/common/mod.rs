//! Helpers shared by the benchmarks (`#[path]`-included; not a bench target itself).
// Each bench uses a subset of these.
#![allow(dead_code)]

use std::time::Instant;

/// The value after `name` on the command line, or `default`.
pub fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned()).unwrap_or_else(|| default.to_string())
}

/// Median wall time (s) of `reps` runs, after one untimed warm-up run when `warm_up`.
pub fn time(reps: usize, warm_up: bool, mut f: impl FnMut()) -> f64 {
    if warm_up {
        f();
    }
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

/// CPU time (s) this process's threads have run so far, from /proc/self/task/*/schedstat (Linux;
/// 0 elsewhere). On a shared host it moves far less than wall time when other jobs compete.
pub fn cpu_seconds() -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0.0 };
    let ns: u64 = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    ns as f64 * 1e-9
}
