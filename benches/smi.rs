//! SMI screening benchmark on the cpu: the f32 projection GEMM alone, PSMI end to end (f32 and f64
//! projection), and the KSG SMI over all slices, on synthetic Gaussian classes. Prints one JSON line
//! per workload and, with --dump DIR, writes the data (x.npy, y.npy) for
//! benches/baselines/smi_baseline.py, which times `psmi` and scikit-learn on the same data.
//!
//! cargo bench --bench smi -- [--n 4000] [--d 1024] [--k 1000] [--classes 4] [--reps 3] [--dump DIR]
//!     [--only ksg] [--ksg-save MI.npy | --ksg-check MI.npy]
//!
//! `--only ksg` times just the KSG stage (the projection it reads is computed untimed).
//! `--ksg-save` writes the K slice MIs; `--ksg-check` compares them bit for bit with a saved file
//! and exits non-zero on any difference (guarding KSG optimisations).

use memsieve::smi::ksg::ksg_mi_matrix;
use memsieve::smi::project::project;
use memsieve::smi::project_bf16::{self, pack_directions, project_bf16_into, Bf16Matrix};
use memsieve::smi::{psmi, psmi_of, Classes, Directions, KsgOptions, PsmiOptions, PsmiScores};
use std::hint::black_box;

#[path = "common/mod.rs"]
mod common;
use common::arg;

fn time(reps: usize, f: impl FnMut()) -> f64 {
    common::time(reps, false, f)
}

fn main() {
    let n: usize = arg("--n", "4000").parse().unwrap();
    let d: usize = arg("--d", "1024").parse().unwrap();
    let k: usize = arg("--k", "1000").parse().unwrap();
    let c: usize = arg("--classes", "4").parse().unwrap();
    let reps: usize = arg("--reps", "3").parse().unwrap();
    let threads = rayon::current_num_threads();
    let path_arg = |name: &str| std::env::args().position(|a| a == name).and_then(|i| std::env::args().nth(i + 1));
    let only_ksg = match arg("--only", "all").as_str() {
        "all" => false,
        "ksg" => true,
        other => panic!("--only takes ksg, not {other}"),
    };

    let (x, labels) = memsieve::bench::gaussian_classes(n, d, c);
    if let Some(dir) = path_arg("--dump") {
        memsieve::bench::dump_smi_work(std::path::Path::new(&dir), &x, &labels, n, d).unwrap();
    }
    let classes = Classes::new(&labels).unwrap();
    let dirs = Directions::seeded(0, d);
    let thetas = dirs.block(0, k).unwrap();
    let none = |_: usize, _: usize| {};
    let line = |workload: &str, secs: f64| {
        println!("{{\"impl\":\"memsieve-cpu\",\"workload\":\"{workload}\",\"n\":{n},\"d\":{d},\"k\":{k},\"classes\":{c},\"threads\":{threads},\"seconds\":{secs:.4}}}");
    };

    let gemm = if only_ksg {
        None
    } else {
        let gemm = time(reps, || {
            black_box(project(&x, n, d, &thetas, k).unwrap());
        });
        line("projection_f32", gemm);
        let xb = Bf16Matrix::from_f32(&x, n, d).unwrap();
        let gemm_bf16 = time(reps, || {
            let packed = pack_directions(&thetas, k, d).unwrap();
            let mut p = vec![0f32; n * k];
            project_bf16_into(&xb, &packed, k, &mut p, k, 0).unwrap();
            black_box(p);
        });
        line(if project_bf16::native() { "projection_bf16_avx512" } else { "projection_bf16_portable" }, gemm_bf16);
        let mut s32 = None;
        let psmi32 = time(reps, || {
            s32 = Some(psmi(&x, n, d, &classes, &dirs, k, &PsmiOptions::default(), &none).unwrap());
        });
        line("psmi_f32", psmi32);
        let mut sb = None;
        let psmib = time(reps, || {
            // End to end from f32 features: the bf16 rounding of X is part of the cost.
            let xb = Bf16Matrix::from_f32(&x, n, d).unwrap();
            sb = Some(psmi_of(&xb, &classes, &dirs, k, &PsmiOptions::default(), &none).unwrap());
        });
        line("psmi_bf16", psmib);
        let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        let psmi64 = time(reps, || {
            black_box(psmi(&x64, n, d, &classes, &dirs, k, &PsmiOptions::default(), &none).unwrap());
        });
        line("psmi_f64", psmi64);
        let s64 = psmi(&x64, n, d, &classes, &dirs, k, &PsmiOptions::default(), &none).unwrap();
        let (s32, sb) = (s32.unwrap(), sb.unwrap());
        score_effect("f32", &s32, &s64);
        score_effect("bf16", &sb, &s64);
        eprintln!("psmi_bf16 / projection_f32 = {:.2}, psmi_bf16 / psmi_f32 = {:.2}", psmib / gemm, psmib / psmi32);
        eprintln!("psmi_f32 / projection_f32 = {:.2}", psmi32 / gemm);
        Some(gemm)
    };
    let p = project(&x, n, d, &thetas, k).unwrap();
    let mut mi = Vec::new();
    // CPU seconds too (median over reps): on a shared host they move far less than wall time.
    let mut cpu = Vec::new();
    let ksg = time(reps, || {
        let c0 = common::cpu_seconds();
        mi = ksg_mi_matrix(&p, n, k, &classes, &KsgOptions::default()).unwrap();
        cpu.push(common::cpu_seconds() - c0);
    });
    cpu.sort_by(f64::total_cmp);
    line("ksg_all_slices", ksg);
    eprintln!("ksg cpu seconds (all threads, median) {:.4}", cpu[cpu.len() / 2]);
    eprintln!("ksg per slice {:.3} ms{}", ksg / k as f64 * 1e3, gemm.map_or(String::new(), |g| format!(", ksg / projection_f32 = {:.3}", ksg / g)));
    if let Some(path) = path_arg("--ksg-save") {
        memsieve::smi::npy::write_f64(&path, &mi, &[k]).unwrap();
    }
    if let Some(path) = path_arg("--ksg-check") {
        let (saved, shape) = memsieve::smi::npy::read_f64(&path).unwrap();
        assert_eq!(shape, [k], "{path}: saved for another K");
        let differ: Vec<usize> = (0..k).filter(|&j| saved[j].to_bits() != mi[j].to_bits()).collect();
        if !differ.is_empty() {
            let j = differ[0];
            eprintln!("KSG MI differs from {path} on {} of {k} slices (first: slice {j}, {} vs saved {})", differ.len(), mi[j], saved[j]);
            std::process::exit(1);
        }
        eprintln!("KSG MI bit-identical to {path} ({k} slices)");
    }
}

/// How far a precision's scores are from the f64 reference: mean PSMI error, the flagged set of the
/// default rule (PSMI ≤ 0) and the lowest 1% (the samples a screen reports).
fn score_effect(name: &str, s: &PsmiScores, reference: &PsmiScores) {
    let n = s.mean.len();
    let diff: Vec<f64> = s.mean.iter().zip(&reference.mean).map(|(a, b)| (a - b).abs()).collect();
    let max = diff.iter().cloned().fold(0.0, f64::max);
    let mean_abs = diff.iter().sum::<f64>() / n as f64;
    let spread = memsieve::smi::stats::mean_std(&reference.mean).1;
    let flag = |m: &[f64]| m.iter().map(|&v| v <= 0.0).collect::<Vec<bool>>();
    let (fa, fb) = (flag(&s.mean), flag(&reference.mean));
    let flips = fa.iter().zip(&fb).filter(|(a, b)| a != b).count();
    let lowest = |m: &[f64]| {
        let mut o: Vec<usize> = (0..n).collect();
        o.sort_by(|&i, &j| m[i].total_cmp(&m[j]));
        o.truncate((n / 100).max(1));
        o.sort_unstable();
        o
    };
    let (la, lb) = (lowest(&s.mean), lowest(&reference.mean));
    let common = la.iter().filter(|i| lb.binary_search(i).is_ok()).count();
    println!(
        "{{\"impl\":\"memsieve-cpu\",\"workload\":\"score_effect_{name}_vs_f64\",\"max_abs_mean_psmi\":{max:.3e},\"mean_abs_mean_psmi\":{mean_abs:.3e},\"psmi_spread_std\":{spread:.3e},\"flag_flips\":{flips},\"flagged_f64\":{},\"lowest1pct_overlap\":{common},\"lowest1pct\":{}}}",
        fb.iter().filter(|&&v| v).count(),
        lb.len()
    );
}
