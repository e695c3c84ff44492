//! `memsieve bench`: the standard workloads (src/bench.rs) on the chosen backend, median and spread
//! of N runs, a table and JSON; with `--baselines` the Python baseline of each workload runs
//! interleaved with it, round by round, and the speed-up is the median of the per-round ratios.

use crate::backend::{Backend, Device};
use crate::bench::{self, Size, Workload};
use crate::error::{Error, Result};
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Workloads to run (comma-separated; default all).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub workloads: Vec<Workload>,
    /// small: seconds in all; paper: the sizes BENCHMARKS.md quotes.
    #[arg(long, value_enum, default_value_t = Size::Small)]
    pub size: Size,
    /// Timed runs per workload (after one untimed warm-up).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Directory for bench.json and the baselines' input files.
    #[arg(long, default_value = "runs/bench")]
    pub out: PathBuf,
    /// Also run the Python baselines (benches/baselines/) on the same work, interleaved, and print ratios.
    #[arg(long)]
    pub baselines: bool,
    /// Python interpreter for the baselines.
    #[arg(long, default_value = "python3")]
    pub python: String,
    /// Where the baseline scripts are (default: the source tree's benches/baselines).
    #[arg(long)]
    pub baselines_dir: Option<PathBuf>,
}

pub fn run(ctx: &super::Context, a: BenchArgs) -> Result<()> {
    if a.runs == 0 {
        return Err(Error::Input("--runs must be at least 1".into()));
    }
    super::on_device!(ctx, |dev| run_on(dev, &a, ctx.threads))
}

struct Row {
    workload: Workload,
    median: f64,
    spread: f64,
    throughput: f64,
    unit: &'static str,
    baseline: Option<(f64, f64, &'static str)>,
    note: Option<String>,
}

fn run_on<B: Backend>(dev: &Arc<Device<B>>, a: &BenchArgs, threads: usize) -> Result<()> {
    let workloads: Vec<Workload> = if a.workloads.is_empty() { Workload::ALL.to_vec() } else { a.workloads.clone() };
    let machine = crate::machine::machine(threads);
    let baseline_dir = if a.baselines { Some(bench::baselines_dir(a.baselines_dir.as_deref())?) } else { None };
    let work_dir = a.out.join("work");
    let pb = crate::train::progress_bar((workloads.len() * a.runs) as u64, "bench");
    let (mut results, mut rows) = (Vec::new(), Vec::new());
    for &w in &workloads {
        pb.set_message(w.name());
        // --profile/--trace cover the timed runs only, not set-up and warm-up.
        let profiling = dev.profile.is_enabled();
        dev.profile.enable(false);
        let mut p = bench::prepare(w, a.size, dev, &work_dir, machine.threads)?;
        p.time_once()?; // warm-up
        dev.profile.enable(profiling);
        let missing = baseline_dir.as_ref().and_then(|_| bench::baseline_missing(&a.python, &p.baseline));
        if let Some(why) = &missing {
            pb.suspend(|| eprintln!("{}: no baseline ({why})", w.name()));
        }
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for _ in 0..a.runs {
            ours.push(dev.profile.in_phase(w.name(), || p.time_once())?);
            if let (Some(dir), None) = (&baseline_dir, &missing) {
                theirs.push(bench::run_baseline(&a.python, dir, &p.baseline)?);
            }
            pb.inc(1);
        }
        let med = bench::median(&ours);
        let (lo, hi) = ours.iter().fold((f64::INFINITY, 0f64), |(l, h), &x| (l.min(x), h.max(x)));
        let mut entry = json!({
            "workload": w.name(),
            "params": p.params,
            "runs": a.runs,
            "median_s": med,
            "min_s": lo,
            "max_s": hi,
            "spread": (hi - lo) / med,
            "runs_s": ours,
            "work": p.work,
            "unit": p.unit,
            "throughput_per_s": p.work / med,
        });
        let mut row = Row { workload: w, median: med, spread: (hi - lo) / med, throughput: p.work / med, unit: p.unit, baseline: None, note: None };
        if a.baselines {
            entry["baseline"] = match &missing {
                Some(why) => {
                    row.note = Some("baseline not installed".into());
                    json!({"impl": p.baseline.implementation, "missing": why})
                }
                None => {
                    // Rounds alternate memsieve and the baseline, so drift hits both alike.
                    let ratios: Vec<f64> = theirs.iter().zip(&ours).map(|(t, o)| t / o).collect();
                    let ratio = bench::median(&ratios);
                    row.baseline = Some((bench::median(&theirs), ratio, p.baseline.implementation));
                    json!({
                        "impl": p.baseline.implementation,
                        "script": p.baseline.script,
                        "args": p.baseline.args,
                        "median_s": bench::median(&theirs),
                        "runs_s": theirs,
                        "speedup_per_round": ratios,
                        "speedup": ratio,
                    })
                }
            };
        }
        results.push(entry);
        rows.push(row);
    }
    pb.finish_and_clear();
    let doc = json!({
        "memsieve": env!("CARGO_PKG_VERSION"),
        "machine": machine,
        "backend": dev.backend.name(),
        "timing": "wall time per run (host clock around the whole workload)",
        "device_peaks": dev.backend.peaks(),
        "size": format!("{:?}", a.size).to_lowercase(),
        "runs": a.runs,
        "speedup": "baseline seconds / memsieve seconds (> 1: memsieve faster), median of per-round ratios",
        "workloads": results,
    });
    let path = a.out.join("bench.json");
    super::write_json(&path, &doc)?;
    print_table(dev.backend.name(), &machine, &rows);
    println!("wrote {}", path.display());
    Ok(())
}

fn print_table(backend: &str, m: &crate::machine::Machine, rows: &[Row]) {
    println!("{} ({} threads), backend {backend}", m.cpu.model, m.threads);
    println!("{:<11} {:>11} {:>8} {:>22} {:>14} {:>12}", "workload", "median", "spread", "throughput", "baseline", "speed-up");
    for r in rows {
        let (base, ratio) = match (r.baseline, &r.note) {
            (Some((t, x, who)), _) => (format!("{} {}", who, fmt_s(t)), format!("{x:.2}×")),
            (None, Some(n)) => (n.clone(), "-".into()),
            (None, None) => ("-".into(), "-".into()),
        };
        println!(
            "{:<11} {:>11} {:>7.1}% {:>22} {:>14} {:>12}",
            r.workload.name(),
            fmt_s(r.median),
            100.0 * r.spread,
            format!("{:.0} {}/s", r.throughput, r.unit),
            base,
            ratio
        );
    }
}

fn fmt_s(s: f64) -> String {
    if s < 1.0 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{s:.3} s")
    }
}
