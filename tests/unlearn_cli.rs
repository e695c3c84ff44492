//! `memsieve unlearn` end to end on a small trained run: a given unlearning set, the saved edit, the
//! sweep's CSV/SVG and best-run choice, and the error paths.

mod common;

use memsieve::model::params::{ParamKind, ParamLayout};
use std::path::PathBuf;
use std::process::Command;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("memsieve-test-unlearn-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn memsieve(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_memsieve")).args(["--backend", "cpu"]).args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

/// A one-layer model after one epoch (it memorizes nothing yet) and a JSONL file of 3 noised rows.
fn setup() -> (PathBuf, PathBuf) {
    let run = tmp("model");
    let a = common::train_small_run(run.clone(), 1);
    let data = memsieve::data::MathDataset::generate(&a.data.config().unwrap()).unwrap();
    let rows: String = data.noisy.iter_rows().take(3).map(|r| format!("{}\n", serde_json::json!({ "tokens": r }))).collect();
    let m = run.join("m.jsonl");
    std::fs::write(&m, rows).unwrap();
    (run, m)
}

#[test]
fn unlearn_a_given_set_then_sweep() {
    let (run, m) = setup();
    let (model, mem) = (run.to_str().unwrap(), m.to_str().unwrap());

    // Nothing memorized and no set given: a clear error.
    let (ok, text) = memsieve(&["unlearn", "--model", model, "--out", tmp("none").to_str().unwrap()]);
    assert!(!ok && text.contains("nothing to unlearn"), "{text}");

    let out = tmp("balanced");
    let (ok, text) = memsieve(&["unlearn", "--model", model, "--memorized", mem, "--method", "balanced-subnet", "--ratio", "0.1", "--epochs", "1", "--max-retain", "40", "--out", out.to_str().unwrap()]);
    assert!(ok, "{text}");
    assert!(text.contains("memorized set M: 3 sequences; retain set C: 40 sequences") && text.contains("clean accuracy %"), "{text}");
    let u: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("unlearn.json")).unwrap()).unwrap();
    assert_eq!(u["method"], "balanced-subnet");
    assert_eq!(u["chosen"]["outcome"]["steps"], 2, "43 rows in batches of 32");
    assert!(u["before"]["accuracy"].as_f64().unwrap() > 0.0 && u["chosen"]["after"]["accuracy"].as_f64().is_some());
    // The saved model is an ordinary checkpoint with 10% of each MLP matrix zeroed, and evaluates.
    let (cfg, p) = memsieve::checkpoint::load_model(&out).unwrap();
    let layout = ParamLayout::new(&cfg);
    for k in [ParamKind::FcW, ParamKind::FcProjW] {
        let off = layout.offset(k, 0);
        let zeros = p[off..off + layout.len(k)].iter().filter(|&&x| x == 0.0).count();
        assert_eq!(zeros, layout.len(k) / 10, "{k:?}");
    }
    let (ok, text) = memsieve(&["eval", "--model", out.to_str().unwrap()]);
    assert!(ok && text.contains("clean accuracy"), "{text}");

    // A sweep over two ratios keeps the lower selection score and writes the grid.
    let sweep = tmp("sweep");
    let (ok, text) = memsieve(&["unlearn", "--model", model, "--memorized", mem, "--method", "subnet", "--sweep", "--ratios", "0.01,0.5", "--epochs-grid", "1", "--out", sweep.to_str().unwrap()]);
    assert!(ok, "{text}");
    let csv = std::fs::read_to_string(sweep.join("sweep.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");
    let u: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(sweep.join("unlearn.json")).unwrap()).unwrap();
    let scores: Vec<f64> = u["runs"].as_array().unwrap().iter().map(|r| r["score"].as_f64().unwrap()).collect();
    let best = scores.iter().copied().fold(f64::INFINITY, f64::min);
    assert_eq!(u["chosen"]["score"].as_f64().unwrap(), best);
    assert!(std::fs::read_to_string(sweep.join("sweep.svg")).unwrap().starts_with("<svg"));

    // Bad input: a ratio outside [0, 1], and a model without data.json.
    let (ok, text) = memsieve(&["unlearn", "--model", model, "--memorized", mem, "--ratio", "2", "--out", tmp("bad").to_str().unwrap()]);
    assert!(!ok && text.contains("ratio must be in [0, 1]"), "{text}");
    let bare = tmp("bare");
    memsieve::checkpoint::save_model(&bare, &cfg, &p, &[]).unwrap();
    let (ok, text) = memsieve(&["unlearn", "--model", bare.to_str().unwrap(), "--out", tmp("bad2").to_str().unwrap()]);
    assert!(!ok && text.contains("data.json"), "{text}");
}
