//! `memsieve localize` and `memsieve edit` end to end on a saved model and a JSONL token file.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("memsieve-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn memsieve(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_memsieve")).args(["--backend", "cpu"]).args(args).output().unwrap()
}

/// The IG fixture model (trained, 1 layer) and its rows as a JSONL file.
fn setup(dir: &Path) -> (PathBuf, PathBuf) {
    let f = common::Fixture::load("ig_relu_l1");
    let model = dir.join("model");
    memsieve::checkpoint::save_model(&model, &f.cfg, &f.params, &[]).unwrap();
    let rows: String = f.tokens.chunks(f.t).map(|r| format!("{}\n", serde_json::json!({ "tokens": r }))).collect();
    let data = dir.join("rows.jsonl");
    std::fs::write(&data, rows).unwrap();
    (model, data)
}

#[test]
fn localize_then_edit() {
    let dir = tmp("localize");
    let (model, data) = setup(&dir);
    let out = dir.join("ig");
    let o = memsieve(&["localize", "--model", model.to_str().unwrap(), "--data", data.to_str().unwrap(), "--method", "ig", "--steps", "4", "--max-sequences", "2", "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let scores: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("scores.json")).unwrap()).unwrap();
    assert_eq!(scores["sequences"], 2);
    assert_eq!(scores["scores"].as_array().unwrap().len(), 1);
    assert_eq!(scores["scores"][0].as_array().unwrap().len(), 512);
    assert!(std::fs::read_to_string(out.join("heatmap.svg")).unwrap().starts_with("<svg"));
    assert!(std::fs::metadata(out.join("scores.npy")).unwrap().len() > 512 * 8);

    let edited = dir.join("edited");
    let o = memsieve(&["edit", "--model", model.to_str().unwrap(), "--neurons", out.join("scores.json").to_str().unwrap(), "--top-k", "5", "--data", data.to_str().unwrap(), "--out", edited.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("before") && stdout.contains("perplexity"), "{stdout}");
    let e: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(edited.join("edit.json")).unwrap()).unwrap();
    let neurons = e["neurons"].as_array().unwrap();
    assert_eq!(neurons.len(), 5);
    // The edited checkpoint has those c_fc columns and biases at zero, and loads.
    let (cfg, params) = memsieve::checkpoint::load_model(&edited).unwrap();
    let layout = memsieve::model::params::ParamLayout::new(&cfg);
    let k = neurons[0][1].as_u64().unwrap() as usize;
    assert_eq!(params[layout.offset(memsieve::model::params::ParamKind::FcB, 0) + k], 0.0);
    assert!(e["before"]["loss"].as_f64().unwrap() != e["after"]["loss"].as_f64().unwrap());

    // With planted secrets (the report.json layout of `experiment secrets`): exposure before and after.
    let secrets = dir.join("secrets.json");
    std::fs::write(&secrets, serde_json::json!({ "secrets": [{ "copies": 1, "context": [10, 1, 12, 2], "digits": [3, 1, 4] }, { "copies": 10, "context": [10, 7], "digits": [9, 9, 0, 2] }] }).to_string()).unwrap();
    let edited2 = dir.join("edited2");
    let o = memsieve(&["edit", "--model", model.to_str().unwrap(), "--neurons", out.join("scores.json").to_str().unwrap(), "--top-k", "5", "--data", data.to_str().unwrap(), "--secrets", secrets.to_str().unwrap(), "--out", edited2.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("exposure (per-digit)"));
    let e: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(edited2.join("edit.json")).unwrap()).unwrap();
    for when in ["before", "after"] {
        let x = e[when]["exposure_per_digit"].as_f64().unwrap();
        assert!((0.0..=3.0 * 10f64.log2() + 1e-9).contains(&x), "{when}: {x}");
        assert_eq!(e[when]["exposures"].as_array().unwrap().len(), 2);
    }
    // Digits outside 0–9 are refused.
    std::fs::write(&secrets, serde_json::json!({ "secrets": [{ "copies": 1, "context": [10], "digits": [12] }] }).to_string()).unwrap();
    let o = memsieve(&["edit", "--model", model.to_str().unwrap(), "--neurons", out.join("scores.json").to_str().unwrap(), "--top-k", "5", "--data", data.to_str().unwrap(), "--secrets", secrets.to_str().unwrap(), "--out", edited2.to_str().unwrap()]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("digits 0–9"));
}

#[test]
fn bad_inputs_are_clear_errors() {
    let dir = tmp("localize-bad");
    let (model, data) = setup(&dir);
    let m = model.to_str().unwrap();
    // A scores file for another model shape.
    let wrong = dir.join("wrong.json");
    std::fs::write(&wrong, serde_json::json!({ "method": "ig", "model": "x", "sequences": 1, "layers": 2, "width": 512, "seconds": 0.0, "settings": {}, "scores": [[0.0], [0.0]] }).to_string()).unwrap();
    let o = memsieve(&["edit", "--model", m, "--neurons", wrong.to_str().unwrap(), "--top-k", "1", "--data", data.to_str().unwrap(), "--out", dir.join("e").to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("the model has 1 layers"), "{}", String::from_utf8_lossy(&o.stderr));
    // A prompt longer than the rows leaves nothing to attribute.
    let o = memsieve(&["localize", "--model", m, "--data", data.to_str().unwrap(), "--method", "ig", "--prompt-len", "150", "--out", dir.join("o").to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no position"), "{}", String::from_utf8_lossy(&o.stderr));
    // Edit without saying which neurons.
    let o = memsieve(&["edit", "--model", m, "--neurons", wrong.to_str().unwrap(), "--data", data.to_str().unwrap(), "--out", dir.join("e").to_str().unwrap()]);
    assert!(!o.status.success());
}
