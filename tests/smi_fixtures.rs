//! SMI against the reference packages (fixtures from tests/gen_smi_fixtures.py: `psmi` 0.2.0 and
//! scikit-learn 1.9.1 with the same directions). PSMI within 1e-5, KSG MI within 1e-6.

use memsieve::smi::ksg::ksg_mi_matrix;
use memsieve::smi::npy::{read_f64, read_features, read_labels};
use memsieve::smi::project::project;
use memsieve::smi::{psmi, psmi_auto, AutoOptions, Classes, Directions, KsgOptions, PsmiOptions};

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(format!("smi_{name}.npy"))
}

fn values(name: &str) -> Vec<f64> {
    read_f64(fixture(name)).unwrap().0
}

fn no_progress(_: usize, _: usize) {}

fn max_abs_diff(a: impl Iterator<Item = f64>, b: &[f64]) -> f64 {
    a.zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

#[test]
fn psmi_fixed_k_matches_psmi_package_f64_and_f32() {
    let x = read_features(fixture("fixed_x")).unwrap();
    let y = read_labels(fixture("fixed_y")).unwrap();
    let d = read_features(fixture("fixed_dirs")).unwrap();
    let (mean, std, pmi) = (values("fixed_mean"), values("fixed_std"), values("fixed_pmi"));
    let k = d.rows;
    let classes = Classes::new(&y).unwrap();
    let dirs = Directions::explicit(d.data.clone(), d.cols).unwrap();
    let opts = PsmiOptions { block: 24, ..Default::default() }; // blocks of 24, 24, 16
    let x64: Vec<f64> = x.data.iter().map(|&v| v as f64).collect();
    let s = psmi(&x64, x.rows, x.cols, &classes, &dirs, k, &opts, &no_progress).unwrap();
    assert!(s.excluded.is_empty());
    let e_mean = max_abs_diff(s.mean.iter().copied(), &mean);
    let e_std = max_abs_diff(s.std.iter().copied(), &std);
    let e_pmi = max_abs_diff(s.pmi_matrix().iter().map(|&v| v as f64), &pmi);
    assert!(e_mean < 1e-5 && e_std < 1e-5 && e_pmi < 1e-5, "f64 projection: mean {e_mean:e} std {e_std:e} pmi {e_pmi:e}");
    // The f32 projection (the screening default) stays within the same tolerance here.
    let s32 = psmi(&x.data, x.rows, x.cols, &classes, &dirs, k, &opts, &no_progress).unwrap();
    let e32 = max_abs_diff(s32.mean.iter().copied(), &mean);
    assert!(e32 < 1e-5, "f32 projection: mean {e32:e}");
    // And the quantiles agree with numpy's on the reference pmi rows.
    for i in [0, 17, 299] {
        let mut row: Vec<f64> = pmi[i * k..(i + 1) * k].to_vec();
        let q = memsieve::smi::quantile_linear(&mut row, 0.01);
        assert!((s.q01[i] - q).abs() < 1e-5);
    }
}

#[test]
fn ksg_matches_sklearn_on_the_same_projections() {
    let x = read_features(fixture("fixed_x")).unwrap();
    let y = read_labels(fixture("fixed_y")).unwrap();
    let d = read_features(fixture("fixed_dirs")).unwrap();
    let want = values("fixed_ksg");
    let classes = Classes::new(&y).unwrap();
    let dirs = Directions::explicit(d.data.clone(), d.cols).unwrap();
    let x64: Vec<f64> = x.data.iter().map(|&v| v as f64).collect();
    // Through the PSMI pipeline (per block, default: no jitter) ...
    let opts = PsmiOptions { block: 24, ksg: Some(KsgOptions::default()), ..Default::default() };
    let s = psmi(&x64, x.rows, x.cols, &classes, &dirs, d.rows, &opts, &no_progress).unwrap();
    let e = max_abs_diff(s.ksg_mi.iter().copied(), &want);
    assert!(e < 1e-6, "KSG through the pipeline: {e:e}");
    // ... and with the full emulation on the whole matrix.
    let thetas: Vec<f64> = dirs.block(0, d.rows).unwrap().iter().map(|&v| v as f64).collect();
    let p = project(&x64, x.rows, x.cols, &thetas, d.rows).unwrap();
    let exact = ksg_mi_matrix(&p, x.rows, d.rows, &classes, &KsgOptions { n_neighbors: 3, sklearn_exact: true }).unwrap();
    let e = max_abs_diff(exact.iter().copied(), &want);
    assert!(e < 1e-6, "KSG sklearn-exact: {e:e}");
}

#[test]
fn ksg_with_ties_small_class_and_singleton_needs_the_emulation() {
    let (p, shape) = read_f64(fixture("ties_p")).unwrap();
    let y = read_labels(fixture("ties_y")).unwrap();
    let want = values("ties_ksg");
    let classes = Classes::new(&y).unwrap();
    let exact = ksg_mi_matrix(&p, shape[0], shape[1], &classes, &KsgOptions { n_neighbors: 3, sklearn_exact: true }).unwrap();
    let e = max_abs_diff(exact.iter().copied(), &want);
    assert!(e < 1e-6, "ties, sklearn-exact: {e:e} ({exact:?} vs {want:?})");
    // Without it the duplicated rows are resolved differently somewhere: the fixture can tell.
    let plain = ksg_mi_matrix(&p, shape[0], shape[1], &classes, &KsgOptions::default()).unwrap();
    assert!(max_abs_diff(plain.iter().copied(), &want) > 1e-6);
}

#[test]
fn ksg_one_dimensional_spec_check() {
    let z = values("1d_z");
    let y = read_labels(fixture("1d_y")).unwrap();
    let classes = Classes::new(&y).unwrap();
    assert_eq!(classes.counts, vec![111, 89]);
    let want = values("1d_ksg")[0];
    assert!((want - 0.40058875447335374).abs() < 1e-12, "fixture agrees with smi.md §12.3");
    for exact in [false, true] {
        let mi = ksg_mi_matrix(&z, z.len(), 1, &classes, &KsgOptions { n_neighbors: 3, sklearn_exact: exact }).unwrap()[0];
        assert!((mi - want).abs() < 1e-6, "exact {exact}: {mi}");
    }
}

#[test]
fn psmi_auto_mode_matches_psmi_package() {
    let x = read_features(fixture("auto_x")).unwrap();
    let y = read_labels(fixture("auto_y")).unwrap();
    let d = read_features(fixture("auto_dirs")).unwrap();
    let want_mean = values("auto_mean");
    let want_k = values("auto_n_estimators")[0] as usize;
    let classes = Classes::new(&y).unwrap();
    let dirs = Directions::explicit(d.data.clone(), d.cols).unwrap();
    let x64: Vec<f64> = x.data.iter().map(|&v| v as f64).collect();
    let auto = AutoOptions { block: 100, ..Default::default() };
    let s = psmi_auto(&x64, x.rows, x.cols, &classes, &dirs, &PsmiOptions::default(), &auto, &no_progress).unwrap();
    assert!(s.converged);
    assert_eq!(s.slices, want_k, "number of directions auto mode settled on");
    let e = max_abs_diff(s.mean.iter().copied(), &want_mean);
    assert!(e < 1e-5, "auto mean {e:e}");
}
