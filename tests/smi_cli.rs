//! `memsieve screen` end to end on the psmi-package fixture, plus bad-input errors.

use memsieve::smi::npy::{read_f64, write_f64, write_i64};
use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(format!("smi_{name}.npy"))
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("memsieve-screen-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn screen(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_memsieve")).arg("screen").args(args).output().unwrap()
}

#[test]
fn screen_with_reference_directions_matches_psmi_and_sklearn() {
    let out = tmp("ref");
    let o = screen(&[
        "--features", fixture("fixed_x").to_str().unwrap(),
        "--labels", fixture("fixed_y").to_str().unwrap(),
        "--directions", fixture("fixed_dirs").to_str().unwrap(),
        "--precision", "f64",
        "--top", "7",
        "--out", out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("flagged 7 of 300"), "{stdout}");
    let (scores, shape) = read_f64(out.join("scores.npy")).unwrap();
    assert_eq!(shape, vec![300, 4]);
    let want = read_f64(fixture("fixed_mean")).unwrap().0;
    let want_std = read_f64(fixture("fixed_std")).unwrap().0;
    for i in 0..300 {
        assert!((scores[i * 4] - want[i]).abs() < 1e-5 && (scores[i * 4 + 1] - want_std[i]).abs() < 1e-5, "sample {i}");
    }
    // The 7 flagged are the 7 lowest reference scores.
    let flagged = read_f64(out.join("flagged.npy")).unwrap().0;
    let mut order: Vec<usize> = (0..300).collect();
    order.sort_by(|&a, &b| want[a].total_cmp(&want[b]));
    assert_eq!(flagged.iter().map(|&v| v as usize).collect::<Vec<_>>(), order[..7].to_vec());
    // Dataset SMI = mean of scikit-learn's per-slice MI.
    let ksg = read_f64(fixture("fixed_ksg")).unwrap().0;
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("smi.json")).unwrap()).unwrap();
    let mean = json["ksg"]["per_slice"]["mean"].as_f64().unwrap();
    assert!((mean - ksg.iter().sum::<f64>() / ksg.len() as f64).abs() < 1e-6);
    assert_eq!(json["slices"], 64);
    let csv = std::fs::read_to_string(out.join("scores.csv")).unwrap();
    assert_eq!(csv.lines().count(), 301);
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn screen_seeded_default_rule_flags_nonpositive_scores() {
    let out = tmp("seeded");
    let o = screen(&[
        "--features", fixture("fixed_x").to_str().unwrap(),
        "--labels", fixture("fixed_y").to_str().unwrap(),
        "--slices", "100", "--seed", "3", "--ddof", "1",
        "--out", out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (scores, _) = read_f64(out.join("scores.npy")).unwrap();
    let flagged: Vec<usize> = read_f64(out.join("flagged.npy")).unwrap().0.iter().map(|&v| v as usize).collect();
    let expect: usize = (0..300).filter(|&i| scores[i * 4] <= 0.0).count();
    assert_eq!(flagged.len(), expect);
    assert!(flagged.iter().all(|&i| scores[i * 4] <= 0.0));
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn screen_bad_inputs_are_clear_errors() {
    let dir = tmp("bad");
    let x = dir.join("x.npy");
    write_f64(&x, &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, f64::NAN], &[4, 2]).unwrap();
    let y3 = dir.join("y3.npy");
    write_i64(&y3, &[0, 0, 1], &[3]).unwrap();
    let y4 = dir.join("y4.npy");
    write_i64(&y4, &[0, 0, 1, 1], &[4]).unwrap();
    let run = |y: &Path| {
        let o = screen(&["--features", x.to_str().unwrap(), "--labels", y.to_str().unwrap(), "--out", dir.join("o").to_str().unwrap()]);
        assert!(!o.status.success());
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    assert!(run(&y3).contains("4 feature rows but 3 labels"));
    assert!(run(&y4).contains("NaN or infinite"));
    std::fs::remove_dir_all(&dir).ok();
}

/// Features from safetensors (F32 and BF16, labels in the same file) and the bf16 projection:
/// a BF16 file and the F32 file rounded by `--precision bf16` give identical scores, close to f64's.
#[test]
fn screen_safetensors_inputs_and_bf16_projection() {
    use safetensors::tensor::{Dtype, TensorView};
    let dir = tmp("st");
    let (x, shape) = read_f64(fixture("fixed_x")).unwrap();
    let y = read_f64(fixture("fixed_y")).unwrap().0;
    let labels: Vec<u8> = y.iter().flat_map(|&v| (v as i64).to_le_bytes()).collect();
    let f32_bytes: Vec<u8> = x.iter().flat_map(|&v| (v as f32).to_le_bytes()).collect();
    let bf16_bytes: Vec<u8> = x.iter().flat_map(|&v| half::bf16::from_f32(v as f32).to_le_bytes()).collect();
    let write = |name: &str, dtype: Dtype, bytes: &[u8]| {
        let path = dir.join(name);
        let tensors = [("features", TensorView::new(dtype, shape.clone(), bytes).unwrap()), ("labels", TensorView::new(Dtype::I64, vec![y.len()], &labels).unwrap())];
        std::fs::write(&path, safetensors::serialize(tensors, None).unwrap()).unwrap();
        path
    };
    let (f32_file, bf16_file) = (write("x32.safetensors", Dtype::F32, &f32_bytes), write("x16.safetensors", Dtype::BF16, &bf16_bytes));
    let run = |file: &Path, precision: &str, out: &str| {
        let out = dir.join(out);
        let o = screen(&[
            "--features", file.to_str().unwrap(),
            "--labels", file.to_str().unwrap(),
            "--directions", fixture("fixed_dirs").to_str().unwrap(),
            "--precision", precision,
            "--out", out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        read_f64(out.join("scores.npy")).unwrap().0
    };
    let from_bf16_file = run(&bf16_file, "bf16", "a");
    let rounded_from_f32 = run(&f32_file, "bf16", "b");
    assert_eq!(from_bf16_file, rounded_from_f32, "bf16 input is taken as is; f32 input rounds to the same values");
    let want = read_f64(fixture("fixed_mean")).unwrap().0;
    let f32_scores = run(&f32_file, "f32", "c");
    let (mut worst32, mut worst16) = (0f64, 0f64);
    for i in 0..300 {
        worst32 = worst32.max((f32_scores[i * 4] - want[i]).abs());
        worst16 = worst16.max((from_bf16_file[i * 4] - want[i]).abs());
    }
    eprintln!("max |mean PSMI − psmi f64|: f32 projection {worst32:.2e}, bf16 projection {worst16:.2e}");
    assert!(worst32 < 1e-5, "f32: {worst32}");
    assert!(worst16 < 5e-3 && worst16 > worst32, "bf16: {worst16}");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("a/smi.json")).unwrap()).unwrap();
    assert_eq!(json["features_dtype"], "bf16");
    assert_eq!(json["precision"], "bf16");
    // A name that is not in the file.
    let o = screen(&["--features", f32_file.to_str().unwrap(), "--features-tensor", "hidden", "--labels", f32_file.to_str().unwrap(), "--out", dir.join("d").to_str().unwrap()]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("no tensor named \"hidden\""));
    std::fs::remove_dir_all(&dir).ok();
}

fn memsieve(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_memsieve")).args(args).output().unwrap()
}

/// 2100 samples (three parts of 1024 rows, so up to three shards) of 9 features, 3 unequal classes.
fn sharding_data(dir: &Path) -> (PathBuf, PathBuf) {
    let (n, d) = (2100, 9);
    let labels: Vec<i64> = (0..n as i64).map(|i| [0, 0, 1, 2, 1, 0, 0][i as usize % 7]).collect();
    let x: Vec<f64> = (0..n * d).map(|e| (((e * 7919) % 1009) as f64 / 1009.0 - 0.5) + 0.2 * labels[e / d] as f64 * ((e % d) as f64).sin()).collect();
    let (xp, yp) = (dir.join("x.npy"), dir.join("y.npy"));
    write_f64(&xp, &x, &[n, d]).unwrap();
    write_i64(&yp, &labels, &[n]).unwrap();
    (xp, yp)
}

#[test]
fn sharded_statistics_merged_give_the_unsharded_results() {
    let dir = tmp("shards");
    let (x, y) = sharding_data(&dir);
    let (x, y) = (x.to_str().unwrap(), y.to_str().unwrap());
    let common = ["--features", x, "--labels", y, "--slices", "40", "--seed", "9", "--block", "16"];
    let whole = dir.join("whole");
    let o = memsieve(&[&["screen"][..], &common, &["--out", whole.to_str().unwrap()]].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let shards = dir.join("stats");
    for i in 0..3 {
        let shard = format!("{i}/3");
        let o = memsieve(&[&["screen"][..], &common, &["--shard", &shard, "--out", shards.to_str().unwrap()]].concat());
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    // A merge with a shard missing fails clearly; with all three it reproduces the unsharded files.
    let merged = dir.join("merged");
    std::fs::rename(shards.join("shard-2-of-3.json"), dir.join("aside.json")).unwrap();
    let o = memsieve(&[&["screen", "merge", "--shards", shards.to_str().unwrap()][..], &common, &["--out", merged.to_str().unwrap()]].concat());
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("2 of the 3 shards"), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::rename(dir.join("aside.json"), shards.join("shard-2-of-3.json")).unwrap();
    let o = memsieve(&[&["screen", "merge", "--shards", shards.to_str().unwrap()][..], &common, &["--out", merged.to_str().unwrap(), "--max-memory", "700K"]].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for f in ["scores.npy", "flagged.npy", "ksg_per_slice.npy"] {
        assert_eq!(std::fs::read(whole.join(f)).unwrap(), std::fs::read(merged.join(f)).unwrap(), "{f}");
    }
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(merged.join("smi.json")).unwrap()).unwrap();
    assert!(json["chunk_samples"].as_u64().unwrap() < 2100, "the budget chunks the samples: {json}");
    // Shards of other settings are refused.
    let o = memsieve(&["screen", "merge", "--shards", shards.to_str().unwrap(), "--features", x, "--labels", y, "--slices", "40", "--seed", "10", "--out", merged.to_str().unwrap()]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("other data or settings"), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn screen_on_the_cuda_emulator_and_wgpu_agrees_with_cpu() {
    let out = tmp("backends");
    let args = |backend: &'static str, dir: &Path| -> Vec<String> {
        ["--backend", backend, "screen", "--features", fixture("fixed_x").to_str().unwrap(), "--labels", fixture("fixed_y").to_str().unwrap(), "--slices", "50", "--out", dir.to_str().unwrap()]
            .iter()
            .map(|s| s.to_string())
            .collect()
    };
    let cpu_dir = out.join("cpu");
    let o = Command::new(env!("CARGO_BIN_EXE_memsieve")).args(args("cpu", &cpu_dir)).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let want = read_f64(cpu_dir.join("scores.npy")).unwrap().0;
    let want_ksg = read_f64(cpu_dir.join("ksg_per_slice.npy")).unwrap().0;
    let cpu_json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(cpu_dir.join("smi.json")).unwrap()).unwrap();
    for backend in ["cuda-emu", "wgpu"] {
        let dir = out.join(backend);
        let o = Command::new(env!("CARGO_BIN_EXE_memsieve")).args(args(backend, &dir)).output().unwrap();
        if !o.status.success() {
            let err = String::from_utf8_lossy(&o.stderr);
            // Only a missing device may skip, loudly, and never under CI.
            assert!(err.contains("no Vulkan adapter") || err.contains("not built"), "{backend}: {err}");
            assert!(std::env::var("CI").map_or(true, |v| v != "true"), "{backend} unavailable under CI: {err}");
            eprintln!("\n!!!!!!!! SKIPPED screen on {backend}: {err} !!!!!!!!\n");
            continue;
        }
        let got = read_f64(dir.join("scores.npy")).unwrap().0;
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!((g - w).abs() <= 1e-5 * (0.01 + w.abs()), "{backend}: score {i} is {g}, cpu {w}");
        }
        let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("smi.json")).unwrap()).unwrap();
        assert_eq!(json["backend"], backend);
        // The dataset SMI (KSG on the device): per slice, and its summary, within 1e-3 of the cpu (a
        // projection moved by the GEMM's summation order can change a neighbour count).
        let ksg = read_f64(dir.join("ksg_per_slice.npy")).unwrap().0;
        assert_eq!(ksg.len(), want_ksg.len());
        let worst = ksg.iter().zip(&want_ksg).map(|(g, w)| (g - w).abs()).fold(0f64, f64::max);
        assert!(worst <= 1e-3, "{backend}: per-slice KSG differs by {worst:e}");
        for stat in ["mean", "q01", "q99"] {
            let (g, w) = (json["ksg"]["per_slice"][stat].as_f64().unwrap(), cpu_json["ksg"]["per_slice"][stat].as_f64().unwrap());
            assert!((g - w).abs() <= 1e-3 && (stat != "mean" || w > 0.0), "{backend}: KSG {stat} is {g}, cpu {w}");
        }
        println!("{backend}: per-slice KSG within {worst:.1e} of the cpu");
    }
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn screen_memory_and_mode_conflicts_are_clear_errors() {
    let out = tmp("conflicts");
    let (x, y) = (fixture("fixed_x"), fixture("fixed_y"));
    let base = ["screen", "--features", x.to_str().unwrap(), "--labels", y.to_str().unwrap(), "--out", out.to_str().unwrap()];
    let o = memsieve(&[&base[..], &["--max-memory", "10K"]].concat());
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("even one chunk"), "{}", String::from_utf8_lossy(&o.stderr));
    let o = memsieve(&[&base[..], &["--shard", "0/2", "--precision", "f64"]].concat());
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("--precision f32"), "{}", String::from_utf8_lossy(&o.stderr));
    let o = memsieve(&[&base[..], &["--shard", "0/2"]].concat());
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("use at most that many shards"), "{}", String::from_utf8_lossy(&o.stderr));
    let o = memsieve(&[&base[..], &["--shard", "2/2"]].concat());
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("need 0 ≤ i < N"), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::remove_dir_all(&out).ok();
}
