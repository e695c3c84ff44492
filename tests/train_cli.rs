//! Training runs end to end: checkpoints, metrics log, exact resume, and the CLI's error paths.

mod common;

use common::cpu_device;
use memsieve::checkpoint;
use memsieve::cli::train::{train_run, TrainArgs};
use std::path::PathBuf;
use std::process::Command;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("memsieve-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn tiny(out: PathBuf, epochs: usize) -> TrainArgs {
    common::tiny_train_args(out, epochs)
}

#[test]
fn resume_continues_exactly() {
    let straight = tmp("straight");
    train_run(&cpu_device(), &tiny(straight.clone(), 2)).unwrap();
    let split = tmp("split");
    train_run(&cpu_device(), &tiny(split.clone(), 1)).unwrap();
    let mut again = tiny(split.clone(), 2);
    again.resume = true;
    train_run(&cpu_device(), &again).unwrap();
    let (_, a) = checkpoint::load_model(&straight).unwrap();
    let (_, b) = checkpoint::load_model(&split).unwrap();
    assert!(a == b, "resumed run differs from the uninterrupted one");
    let sa = checkpoint::load_train_state(&straight).unwrap();
    let sb = checkpoint::load_train_state(&split).unwrap();
    assert_eq!((sa.step, sa.epoch), (sb.step, sb.epoch));
    assert!(sa.m == sb.m && sa.v == sb.v);
    // metrics.jsonl has one row per epoch, with evaluations.
    let log = std::fs::read_to_string(split.join("metrics.jsonl")).unwrap();
    let rows: Vec<serde_json::Value> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 2);
    assert!(rows[1]["eval"]["accuracy"].as_f64().unwrap() > 0.0);
    assert!(split.join("checkpoints/epoch-2/model.safetensors").exists());
}

fn memsieve(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_memsieve")).args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

#[test]
fn eval_reads_a_transformers_directory_and_writes_json() {
    let dir = tmp("eval");
    std::fs::create_dir_all(&dir).unwrap();
    let jsonl = dir.join("rows.jsonl");
    std::fs::write(&jsonl, "{\"tokens\": [10, 1, 12, 8, 12, 1, 5, 11]}\n{\"tokens\": [10, 2, 12, 9, 11]}\n").unwrap();
    let json = dir.join("out.json");
    let model = common::fixture_path("hf_relu_l1");
    let (ok, text) = memsieve(&["eval", "--model", model.to_str().unwrap(), "--data", jsonl.to_str().unwrap(), "--json", json.to_str().unwrap()]);
    assert!(ok, "{text}");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(v["loss"].as_f64().unwrap() > 0.0 && v["perplexity"].as_f64().unwrap() > 1.0, "{v}");
}

#[test]
fn bad_inputs_are_clear_errors_not_panics() {
    let dir = tmp("bad");
    std::fs::create_dir_all(&dir).unwrap();
    // Token id out of range in a JSONL file.
    let jsonl = dir.join("bad.jsonl");
    std::fs::write(&jsonl, "{\"tokens\": [1, 2, 99]}\n").unwrap();
    let model = common::fixture_path("hf_relu_l1");
    let (ok, text) = memsieve(&["eval", "--model", model.to_str().unwrap(), "--data", jsonl.to_str().unwrap()]);
    assert!(!ok && text.contains("error:") && text.contains("99") && !text.contains("panicked"), "{text}");
    // A truncated checkpoint.
    let cut = dir.join("cut");
    std::fs::create_dir_all(&cut).unwrap();
    std::fs::copy(model.join("config.json"), cut.join("config.json")).unwrap();
    let bytes = std::fs::read(model.join("model.safetensors")).unwrap();
    std::fs::write(cut.join("model.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    let (ok, text) = memsieve(&["generate", "--model", cut.to_str().unwrap(), "--tokens", "10,1"]);
    assert!(!ok && text.contains("error:") && !text.contains("panicked"), "{text}");
    // A missing model directory.
    let (ok, text) = memsieve(&["eval", "--model", "/nonexistent/model", "--data", jsonl.to_str().unwrap()]);
    assert!(!ok && text.contains("error:") && !text.contains("panicked"), "{text}");
    // A prompt longer than the context.
    let long: Vec<String> = (0..151).map(|_| "1".to_string()).collect();
    let (ok, text) = memsieve(&["generate", "--model", model.to_str().unwrap(), "--tokens", &long.join(",")]);
    assert!(!ok && text.contains("context") && !text.contains("panicked"), "{text}");
    // Resuming a directory without a run.
    let (ok, text) = memsieve(&["train", "--out", dir.join("nothing").to_str().unwrap(), "--resume", "--epochs", "1"]);
    assert!(!ok && text.contains("error:") && !text.contains("panicked"), "{text}");
}

#[test]
fn generate_continues_a_math_prompt() {
    let model = common::fixture_path("hf_relu_l1");
    let (ok, text) = memsieve(&["generate", "--model", model.to_str().unwrap(), "--text", "^7 14", "--max-length", "20"]);
    assert!(ok, "{text}");
    let first = text.lines().next().unwrap();
    assert_eq!(first.split(',').count(), 20, "{text}");
}

#[test]
fn demo_runs_end_to_end_and_writes_its_report() {
    let dir = tmp("demo");
    let (ok, text) = memsieve(&["demo", "--epochs", "1", "--out", dir.to_str().unwrap()]);
    assert!(ok, "{text}");
    assert!(text.contains("memorized") && text.contains("clean accuracy"), "{text}");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["preset"], "small");
    assert!(report["final"]["accuracy_ceiling"].as_f64().unwrap() > 0.9);
    for plot in ["memorization.svg", "methods.svg"] {
        assert!(std::fs::read_to_string(dir.join("plots").join(plot)).unwrap().starts_with("<svg"), "{plot}");
    }
    // A second demo into the same directory refuses rather than overwriting the run.
    let (ok, text) = memsieve(&["demo", "--epochs", "1", "--out", dir.to_str().unwrap()]);
    assert!(!ok && text.contains("already holds a run"), "{text}");
}

/// Without a Vulkan driver, `--backend wgpu` is a clear error and `auto` runs on cpu.
#[test]
fn no_vulkan_driver_is_a_clear_error_and_auto_falls_back() {
    let model = common::fixture_path("hf_relu_l1");
    let args = ["generate", "--model", model.to_str().unwrap(), "--text", "^7 14", "--max-length", "20"];
    let run = |backend: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_memsieve"))
            .arg("--backend")
            .arg(backend)
            .args(args)
            .env("VK_ICD_FILENAMES", "/nonexistent/icd.json")
            .env("VK_DRIVER_FILES", "/nonexistent/icd.json")
            .output()
            .unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
    };
    let (ok, text) = run("wgpu");
    assert!(!ok && text.contains("no Vulkan adapter") && !text.contains("panicked"), "{text}");
    let (ok, text) = run("auto");
    assert!(ok, "{text}");
    // And the wgpu backend itself, where lavapipe is installed, gives the cpu backend's tokens.
    if common::wgpu_device().is_some() {
        let (ok, wgpu_text) = memsieve(&[&["--backend", "wgpu"][..], &args[..]].concat());
        assert!(ok, "{wgpu_text}");
        let (_, cpu_text) = memsieve(&[&["--backend", "cpu"][..], &args[..]].concat());
        assert_eq!(wgpu_text.lines().next(), cpu_text.lines().next(), "wgpu and cpu generate differently");
    }
}
