//! smi.md §12 test vectors: PSMI (both std conventions), KSG as scikit-learn computes it, quantiles.

use memsieve::smi::ksg::{jitter_column, ksg_mi_1d, ksg_mi_matrix, scale_column};
use memsieve::smi::mt19937::Mt19937;
use memsieve::smi::psmi::{score_block, ClassSliceStats};
use memsieve::smi::{psmi, psmi_auto, AutoOptions, Classes, Ddof, Directions, KsgOptions, PsmiOptions};

fn close(got: f64, want: f64, tol: f64, what: &str) {
    assert!((got - want).abs() <= tol, "{what}: got {got}, want {want}");
}

fn no_progress(_: usize, _: usize) {}

const X_8X2: [f64; 16] = [1.0, 0.0, 0.9, 0.2, 1.2, -0.1, 0.0, 1.0, 0.1, 0.8, -0.2, 1.1, 0.95, 0.1, 0.05, 0.9];
const Y_8: [i64; 8] = [0, 0, 0, 1, 1, 1, 1, 0];

fn directions_3() -> Directions {
    let h = 0.5f32.sqrt();
    Directions::explicit(vec![1.0, 0.0, 0.0, 1.0, h, h], 2).unwrap()
}

fn run_8x2(ddof: Ddof) -> memsieve::smi::PsmiScores {
    let classes = Classes::new(&Y_8).unwrap();
    let opts = PsmiOptions { ddof, block: 2, ksg: None }; // block 2 < K: exercises block stitching
    psmi(&X_8X2, 8, 2, &classes, &directions_3(), 3, &opts, &no_progress).unwrap()
}

#[test]
fn psmi_8x2_ddof0() {
    let s = run_8x2(Ddof::Zero);
    let pmi = [[0.489880, 0.515748, 0.0], [0.427985, 0.375450, 0.536987], [0.576072, 0.562254, 0.536987], [-0.880134, -0.856890, -0.540120]];
    for (row, want) in [(0, 0), (1, 1), (2, 2), (3, 0), (4, 1), (5, 2), (6, 3), (7, 3)] {
        for (j, &w) in pmi[want].iter().enumerate() {
            close(s.pmi(row, j) as f64, w, 2e-6, &format!("pmi[{row},{j}]"));
        }
    }
    let mean = [0.335209, 0.446807, 0.558438, 0.335209, 0.446807, 0.558438, -0.759048, -0.759048];
    let std = [0.237264, 0.067277, 0.016183, 0.237264, 0.067277, 0.016183, 0.155096, 0.155096];
    let q99 = [0.515231, 0.534807, 0.575796, 0.515231, 0.534807, 0.575796, -0.546455, -0.546455];
    let q01 = [0.009798, 0.376501, 0.537492, 0.009798, 0.376501, 0.537492, -0.879669, -0.879669];
    for i in 0..8 {
        close(s.mean[i], mean[i], 1e-6, &format!("mean {i}"));
        close(s.std[i], std[i], 1e-6, &format!("std {i}"));
        close(s.q99[i], q99[i], 1e-6, &format!("q99 {i}"));
        close(s.q01[i], q01[i], 1e-6, &format!("q01 {i}"));
    }
    assert!(s.excluded.is_empty());
}

#[test]
fn psmi_8x2_ddof1() {
    let s = run_8x2(Ddof::One);
    let mean = [0.282250, 0.370578, 0.483187, 0.282250, 0.370578, 0.483187, -0.540102, -0.540102];
    let q99 = [0.436088, 0.457006, 0.502853, 0.436088, 0.457006, 0.502853, -0.392295, -0.392295];
    let q01 = [0.008203, 0.303274, 0.459745, 0.008203, 0.303274, 0.459745, -0.623939, -0.623939];
    for i in 0..8 {
        close(s.mean[i], mean[i], 1e-6, &format!("mean {i}"));
        close(s.q99[i], q99[i], 1e-6, &format!("q99 {i}"));
        close(s.q01[i], q01[i], 1e-6, &format!("q01 {i}"));
    }
}

#[test]
fn psmi_class_statistics_8x2() {
    let h = 0.5f64.sqrt();
    let th = [1.0, 0.0, 0.0, 1.0, h, h];
    let p = memsieve::smi::project::project(&X_8X2, 8, 2, &th, 3).unwrap();
    close(p[2 * 3 + 2], 0.777817, 1e-6, "projection θ3 row 2");
    let classes = Classes::new(&Y_8).unwrap();
    let st = ClassSliceStats::of_block(&p, 3, &classes);
    for (j, (m0, m1)) in [(0.7875, 0.2125), (0.25, 0.75), (0.733623, 0.680590)].iter().enumerate() {
        close(st.mean[j], *m0, 1e-6, "mu0");
        close(st.mean[3 + j], *m1, 1e-6, "mu1");
    }
    for (j, (s0, s1)) in [(0.439282, 0.507239), (0.390512, 0.450925), (0.045928, 0.053033)].iter().enumerate() {
        for c in 0..2 {
            close(st.sigma(c, j, Ddof::Zero), *s0, 1e-6, "sigma ddof0");
            close(st.sigma(c, j, Ddof::One), *s1, 1e-6, "sigma ddof1");
        }
    }
}

const P_9X2: [f64; 18] = [0.3, -1.2, 0.5, -0.7, 2.1, 0.4, 1.7, 0.9, 2.6, 1.5, -0.8, 2.2, -1.5, 1.1, -0.2, 1.9, 1.9, 0.1];
const Y_9: [i64; 9] = [0, 0, 1, 1, 1, 2, 2, 2, 2];

#[test]
fn psmi_three_unequal_classes_explicit_projections() {
    let classes = Classes::new(&Y_9).unwrap();
    let st = ClassSliceStats::of_block(&P_9X2, 2, &classes);
    let sig0 = [(0.1, 0.25), (0.368179, 0.449691), (1.269843, 0.813557)];
    let sig1 = [(0.141421, 0.353553), (0.450925, 0.550757), (1.466288, 0.939415)];
    for c in 0..3 {
        close(st.sigma(c, 0, Ddof::Zero), sig0[c].0, 1e-6, "σ0");
        close(st.sigma(c, 1, Ddof::Zero), sig0[c].1, 1e-6, "σ0");
        close(st.sigma(c, 0, Ddof::One), sig1[c].0, 1e-6, "σ1");
        close(st.sigma(c, 1, Ddof::One), sig1[c].1, 1e-6, "σ1");
    }
    let pmi = score_block(&P_9X2, 2, &classes, &st.model(Ddof::Zero));
    let want = [1.285848, 1.495889, 1.298834, 1.457548, 1.020932, 0.521901, 0.861646, 0.601017, 1.019120, 0.145779, 0.810930, 0.766149, 0.810930, -0.028990, 0.810930, 0.651519, -1.362541, 0.246833];
    for (g, w) in pmi.iter().zip(want) {
        close(*g as f64, w, 2e-6, "pmi 9x2");
    }
    // Through the full pipeline with identity directions (P = X).
    let dirs = Directions::explicit(vec![1.0, 0.0, 0.0, 1.0], 2).unwrap();
    let mean0 = [1.390869, 1.378191, 0.771417, 0.731331, 0.582449, 0.788539, 0.390970, 0.731224, -0.557854];
    let std0 = [0.105021, 0.079357, 0.249515, 0.130314, 0.436670, 0.022391, 0.419960, 0.079706, 0.804687];
    let mean1 = [1.384748, 1.350331, 0.753345, 0.702559, 0.624260, 0.745325, 0.403787, 0.667774, -0.482032];
    let s0 = psmi(&P_9X2, 9, 2, &classes, &dirs, 2, &PsmiOptions::default(), &no_progress).unwrap();
    let s1 = psmi(&P_9X2, 9, 2, &classes, &dirs, 2, &PsmiOptions { ddof: Ddof::One, ..Default::default() }, &no_progress).unwrap();
    for i in 0..9 {
        close(s0.mean[i], mean0[i], 1e-6, "mean ddof0");
        close(s0.std[i], std0[i], 1e-6, "std ddof0");
        close(s1.mean[i], mean1[i], 1e-6, "mean ddof1");
    }
}

#[test]
fn statistics_merge_equals_one_pass() {
    let classes = Classes::new(&Y_9).unwrap();
    let whole = ClassSliceStats::of_block(&P_9X2, 2, &classes);
    // Split rows 0..5 / 5..9 with the full class map (a part may miss a class entirely).
    let mut a = ClassSliceStats::of_block(&P_9X2[..10], 2, &Classes { values: classes.values.clone(), of_sample: classes.of_sample[..5].to_vec(), counts: vec![2, 3, 0] });
    let b = ClassSliceStats::of_block(&P_9X2[10..], 2, &Classes { values: classes.values.clone(), of_sample: classes.of_sample[5..].to_vec(), counts: vec![0, 0, 4] });
    a.merge(&b).unwrap();
    assert_eq!(a.count, whole.count);
    for (x, y) in a.mean.iter().zip(&whole.mean).chain(a.m2.iter().zip(&whole.m2)) {
        close(*x, *y, 1e-14, "merged");
    }
}

#[test]
fn psmi_errors_and_degenerate_slices() {
    let dirs = directions_3();
    let opts = PsmiOptions::default();
    // A class with one sample.
    let bad = Classes::new(&[0, 0, 0, 1, 1, 1, 1, 2]).unwrap();
    let e = psmi(&X_8X2, 8, 2, &bad, &dirs, 3, &opts, &no_progress).unwrap_err().to_string();
    assert!(e.contains("at least 2 samples") && e.contains("label 2"), "{e}");
    // NaN feature.
    let mut x = X_8X2;
    x[5] = f64::NAN;
    let e = psmi(&x, 8, 2, &Classes::new(&Y_8).unwrap(), &dirs, 3, &opts, &no_progress).unwrap_err().to_string();
    assert!(e.contains("[2, 1]") && e.contains("NaN"), "{e}");
    // Mismatched counts.
    let e = psmi(&X_8X2[..14], 7, 2, &Classes::new(&Y_8).unwrap(), &dirs, 3, &opts, &no_progress).unwrap_err().to_string();
    assert!(e.contains("7 feature rows but 8 labels"), "{e}");
    // Too few supplied directions.
    assert!(psmi(&X_8X2, 8, 2, &Classes::new(&Y_8).unwrap(), &dirs, 4, &opts, &no_progress).is_err());
    // Class 0 constant on coordinate 2 (slice θ2): that slice is excluded for everyone.
    let x = [1.0, 0.5, 0.9, 0.5, 1.2, 0.5, 0.0, 1.0, 0.1, 0.8, -0.2, 1.1];
    let y = [0, 0, 0, 1, 1, 1];
    let c = Classes::new(&y).unwrap();
    let s = psmi(&x, 6, 2, &c, &dirs, 3, &opts, &no_progress).unwrap();
    assert_eq!(s.excluded, vec![1]);
    assert!(s.pmi(0, 1).is_nan());
    // The mean is over the two kept slices.
    for i in 0..6 {
        close(s.mean[i], (s.pmi(i, 0) as f64 + s.pmi(i, 2) as f64) / 2.0, 1e-7, "mean over kept slices");
    }
    // A constant class whose mean does not round exactly (3 × 0.1 / 3 ≠ 0.1) is still degenerate.
    let x01 = [1.0, 0.1, 0.9, 0.1, 1.2, 0.1, 0.0, 1.0, 0.1, 0.8, -0.2, 1.1];
    let s = psmi(&x01, 6, 2, &c, &dirs, 3, &opts, &no_progress).unwrap();
    assert_eq!(s.excluded, vec![1]);
    // Every slice degenerate: a clear error.
    let only = Directions::explicit(vec![0.0, 1.0], 2).unwrap();
    let e = psmi(&x, 6, 2, &c, &only, 1, &opts, &no_progress).unwrap_err().to_string();
    assert!(e.contains("degenerate"), "{e}");
}

#[test]
fn auto_mode_stops_and_guards_small_n() {
    // n = 8 < 20: the reference would loop forever; here ⌊0.05·8⌋ = 0 becomes 1.
    let classes = Classes::new(&Y_8).unwrap();
    let dirs = Directions::seeded(1, 2);
    let auto = AutoOptions { block: 50, ..Default::default() };
    let s = psmi_auto(&X_8X2, 8, 2, &classes, &dirs, &PsmiOptions::default(), &auto, &no_progress).unwrap();
    assert!(s.slices >= 100 && s.slices % 50 == 0);
    // A fixed-K run over the same seeded directions gives the same scores.
    let fixed = psmi(&X_8X2, 8, 2, &classes, &dirs, s.slices, &PsmiOptions::default(), &no_progress).unwrap();
    for i in 0..8 {
        close(s.mean[i], fixed.mean[i], 1e-12, "auto = fixed K");
    }
    // The block cap ends a run that cannot converge.
    let capped = AutoOptions { block: 1, max_blocks: 3, max_variation: -1.0, ..Default::default() };
    let s = psmi_auto(&X_8X2, 8, 2, &classes, &dirs, &PsmiOptions::default(), &capped, &no_progress).unwrap();
    assert_eq!((s.slices, s.converged), (3, false));
}

const A: [f64; 16] = [0.12, 1.37, -0.58, 2.21, 0.93, -1.44, 0.35, 1.81, -0.27, 2.66, 0.71, -0.95, 1.12, 3.05, -1.83, 0.49];
const YA: [i64; 16] = [0, 1, 0, 1, 1, 0, 0, 1, 0, 1, 1, 0, 0, 1, 0, 1];

fn ksg(x: &[f64], y: &[i64], k: usize, exact: bool) -> f64 {
    let c = Classes::new(y).unwrap();
    ksg_mi_matrix(x, x.len(), 1, &c, &KsgOptions { n_neighbors: k, sklearn_exact: exact }).unwrap()[0]
}

/// scikit-learn's jitter on one column, but exact distances |x_i − x_j| on small classes too
/// (the spec's "with exact distances" values).
fn ksg_jitter_exact_distances(x: &[f64], y: &[i64], k: usize) -> f64 {
    let c = Classes::new(y).unwrap();
    let mut col = x.to_vec();
    scale_column(&mut col);
    let mut rng = Mt19937::new(0);
    let eps: Vec<f64> = (0..x.len()).map(|_| rng.standard_normal()).collect();
    jitter_column(&mut col, eps.into_iter());
    ksg_mi_1d(&col, &c, k, false)
}

#[test]
fn ksg_vector_a() {
    for exact in [false, true] {
        close(ksg(&A, &YA, 3, exact), 0.39300577894327926, 1e-12, "A k=3");
        close(ksg(&A, &YA, 1, exact), 0.3326635170385175, 1e-12, "A k=1");
        close(ksg(&A, &YA, 2, exact), 0.4212051837051842, 1e-12, "A k=2");
    }
    close(ksg(&A, &YA, 5, true), 0.35309777028527, 1e-12, "A k=5 sklearn");
    close(ksg_jitter_exact_distances(&A, &YA, 5), 0.36559777028527, 1e-12, "A k=5 exact distances");
    let affine: Vec<f64> = A.iter().map(|v| -2.0 * v + 0.5).collect();
    // A has exact ties among distances in real arithmetic; scikit-learn's jitter breaks them, so the
    // invariance holds under the full emulation (without it the raw column gives 0.41383911227661274).
    close(ksg(&affine, &YA, 3, true), 0.39300577894327926, 1e-12, "affine invariance");
}

#[test]
fn ksg_vector_b_drops_singleton() {
    let mut x = A.to_vec();
    x.extend([4.4, -2.6]);
    let y = [0, 1, 0, 1, 1, 0, 0, 1, 2, 1, 2, 0, 2, 1, 0, 2, 3, 2];
    close(ksg(&x, &y, 3, true), 0.4209950996715708, 1e-12, "B k=3 sklearn");
    close(ksg_jitter_exact_distances(&x, &y, 3), 0.5190343153578454, 1e-12, "B k=3 exact distances");
    close(ksg(&x, &y, 2, true), 0.5027177887472005, 1e-12, "B k=2");
    close(ksg_jitter_exact_distances(&x, &y, 2), 0.5027177887472005, 1e-12, "B k=2 exact distances");
}

#[test]
fn ksg_8x2_with_ties_needs_full_emulation() {
    let h = 0.5f64.sqrt();
    let p = memsieve::smi::project::project(&X_8X2, 8, 2, &[1.0, 0.0, 0.0, 1.0, h, h], 3).unwrap();
    let c = Classes::new(&Y_8).unwrap();
    let exact = ksg_mi_matrix(&p, 8, 3, &c, &KsgOptions { n_neighbors: 3, sklearn_exact: true }).unwrap();
    for (g, w) in exact.iter().zip([0.084524, 0.034524, 0.0]) {
        close(*g, w, 1e-6, "8x2 sklearn-exact");
    }
    let mut v = exact.clone();
    let s = memsieve::smi::Summary::of(&mut v);
    close(s.mean, 0.0396825, 1e-6, "mean");
    close(s.q99, 0.0835238, 1e-6, "q99");
    close(s.q01, 0.00069048, 1e-7, "q01");
    // Neither jitter nor quirk: ties are then resolved differently (spec's third line).
    let plain = ksg_mi_matrix(&p, 8, 3, &c, &KsgOptions::default()).unwrap();
    for (g, w) in plain.iter().zip([0.084524, 0.084524, 0.090774]) {
        close(*g, w, 1e-6, "8x2 no emulation");
    }
}

#[test]
fn ksg_one_dimensional_check_and_scaling() {
    // Spec §12.3 1-D check data: numpy default_rng(1) normals, regenerated by tests/gen_smi_fixtures.py
    // into smi_fixtures; here only the scaling rule: a constant column keeps s = 1.
    let mut c = vec![3.0; 5];
    scale_column(&mut c);
    assert_eq!(c, vec![3.0; 5]);
    let classes = Classes::new(&[0, 0, 1, 1, 1]).unwrap();
    assert_eq!(ksg_mi_1d(&c, &classes, 3, false), 0.0, "all ties: clipped at 0");
}
