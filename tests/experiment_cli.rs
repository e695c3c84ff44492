//! `memsieve experiment predict-memorization` end to end on a tiny configuration (seconds): the
//! tables print, report.json / metrics.csv / samples.csv / checkpoints.csv / token_rows.csv are
//! written and consistent, and bad options are clear errors.

use std::process::Command;

fn run(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_memsieve"))
        .args(["--backend", "cpu", "experiment", "predict-memorization"])
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn tiny_experiment_writes_consistent_outputs() {
    let dir = std::env::temp_dir().join(format!("memsieve-experiment-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let o = run(&[
        "--out", dir.to_str().unwrap(),
        "--pool", "200", "--shadows", "3", "--epochs", "3", "--batch", "16", "--layers", "1", "--slices", "40",
        "--token-num7", "120", "--token-noise", "6", "--token-epochs", "1", "--token-clean-rows", "10",
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}\n{}", stdout, String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("prediction checkpoint") && stdout.contains("PSMI≤0 last") && stdout.contains("token level"), "{stdout}");

    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    let cls = &report["classification"];
    assert_eq!(cls["pool"], 200);
    assert_eq!(cls["scored_samples"], 100);
    let results = cls["results"].as_array().unwrap();
    assert_eq!(results.len(), 4);
    for g in results {
        assert_eq!(g["positives"].as_u64().unwrap() + g["negatives"].as_u64().unwrap(), 100);
        // loss, -gap, and -psmi for layers 1 (block 1 output after ln_f) at least.
        let names: Vec<&str> = g["scores"].as_array().unwrap().iter().map(|s| s["score"].as_str().unwrap()).collect();
        assert!(names.contains(&"loss") && names.contains(&"-gap") && names.contains(&"-psmi"), "{names:?}");
        for s in g["scores"].as_array().unwrap() {
            if let Some(auc) = s["auc"].as_f64() {
                assert!((0.0..=1.0).contains(&auc));
            }
        }
    }
    // The mislabelled ground truth is known from the data: ≈ 1/30 · 0.9 of 100.
    let mis = &results[3];
    assert_eq!(mis["name"], "mislabelled");
    // Checkpoints: step 0, then every 100/16/5 → 1 step; the median starts near ln 10.
    let ck = cls["checkpoints"].as_array().unwrap();
    assert_eq!(ck[0]["step"], 0);
    assert!((ck[0]["median_loss"].as_f64().unwrap() - 10f64.ln()).abs() < 1.5);
    assert_eq!(ck.last().unwrap()["step"], 3 * 7);

    let samples = std::fs::read_to_string(dir.join("samples.csv")).unwrap();
    assert_eq!(samples.lines().count(), 101);
    assert!(samples.starts_with("index,label,true_label,memo,memo_fixed_variance,final_gap,loss,gap,psmi_l0,psmi_l1\n"));
    // The saved prediction-checkpoint model and rows reproduce the PSMI column through `screen`.
    let o = Command::new(env!("CARGO_BIN_EXE_memsieve"))
        .args(["screen", "--model", dir.join("prediction_model").to_str().unwrap(), "--data", dir.join("target_rows.jsonl").to_str().unwrap()])
        .args(["--at", "answer", "--layer", "1", "--slices", "40", "--seed", "0", "--out", dir.join("screen").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let screened = std::fs::read_to_string(dir.join("screen/scores.csv")).unwrap();
    for (a, b) in samples.lines().skip(1).zip(screened.lines().skip(1)) {
        let want: f64 = a.split(',').nth(9).unwrap().parse().unwrap();
        let got: f64 = b.split(',').nth(2).unwrap().parse().unwrap();
        assert!((want - got).abs() < 1e-4, "{a} vs {b}");
    }
    assert_eq!(screened.lines().count(), 101);
    let metrics = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    assert!(metrics.lines().any(|l| l.starts_with("token_level,")), "{metrics}");
    assert!(metrics.lines().any(|l| l.starts_with("classification,memo >= 4,loss,")), "{metrics}");

    let tok = &report["token_level"];
    let tested = tok["tested"].as_u64().unwrap();
    assert!(tested <= 6 && tok["memorized"].as_u64().unwrap() <= tested);
    let rows = std::fs::read_to_string(dir.join("token_rows.csv")).unwrap();
    assert_eq!(rows.lines().count() as u64, tested + 1);
    assert!(std::fs::read_to_string(dir.join("checkpoints.csv")).unwrap().contains("token_level,0,"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_options_are_errors() {
    let dir = std::env::temp_dir().join(format!("memsieve-experiment-bad-{}", std::process::id()));
    let o = run(&["--out", dir.to_str().unwrap(), "--shadows", "1", "--no-token-level"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("shadows"), "{}", String::from_utf8_lossy(&o.stderr));
    let o = run(&["--out", dir.to_str().unwrap(), "--pool", "1", "--shadows", "2", "--no-token-level"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("pool"), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!dir.join("report.json").exists());
}
