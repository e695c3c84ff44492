//! `memsieve finetune`: the optimizer state resumes exactly, each variant trains on the rows the
//! spec names, the multi-task mix holds every task, and bad input is a clear error.

mod common;

use clap::Parser;
use common::cpu_device;
use memsieve::backend::IGNORE_TARGET;
use memsieve::checkpoint;
use memsieve::cli::demo::{preset_args, Preset};
use memsieve::cli::finetune::{finetune_run, FinetuneArgs};
use memsieve::cli::train::{train_run, TrainArgs};
use memsieve::data::classify::ClassifyConfig;
use memsieve::data::{tokenizer, Batches, MathDataConfig, MathDataset, MathTask, TokenMatrix};
use memsieve::finetune::{self, infer_batch, ClassifyTask, FinetuneSet, Task, TaskData, TaskSet, Variant};
use memsieve::model::{AdamW, Model};
use memsieve::train::{train, Position, TrainOptions};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("memsieve-test-ft-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// The base run: one layer, one epoch over 340 short rows (20 noised rows at ×1 and ×10).
fn base_args(out: PathBuf) -> TrainArgs {
    let mut a = preset_args(Preset::Small, out);
    a.data.num_7 = 300;
    a.data.num_test = 50;
    a.data.num_noise = 20;
    a.data.dup_powers = vec![0, 1];
    a.layers = 1;
    a.epochs = 1;
    a.checkpoint_every = 1;
    a
}

/// Trained once, shared by the tests (read only).
fn base() -> &'static Path {
    static BASE: OnceLock<PathBuf> = OnceLock::new();
    BASE.get_or_init(|| {
        let dir = tmp("base");
        train_run(&cpu_device(), &base_args(dir.clone())).unwrap();
        dir
    })
}

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    a: FinetuneArgs,
}

fn ft_args(args: &[&str]) -> FinetuneArgs {
    Cli::parse_from(std::iter::once("finetune").chain(args.iter().copied())).a
}

fn memsieve(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_memsieve")).args(["--backend", "cpu"]).args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

#[test]
fn first_finetuning_step_continues_the_original_run() {
    let base = base();
    let a = base_args(base.to_path_buf());
    let data = MathDataset::generate(&a.data.config().unwrap()).unwrap();
    let (cfg, saved) = checkpoint::load_model(base).unwrap();

    // The original run, kept in memory: same init, data and options as `train`.
    let dev = cpu_device();
    let adam = AdamW { lr: a.lr, weight_decay: a.weight_decay, ..AdamW::default() };
    let opts = TrainOptions { epochs: 1, batch: a.batch, adam, seed: a.seed, mask_pad: false };
    let mut original = Model::new(dev.clone(), cfg.clone(), a.seed).unwrap();
    train(&mut original, &data.train, &opts, Position::default(), &mut memsieve::regularize::Active::None, |_, _, _| Ok(())).unwrap();
    assert!(original.download_params() == saved, "the in-memory run is not the saved one");

    // One more step of it on the batch fine-tuning takes first: all 20 clean rows in epoch 1's order.
    let clean = finetune::variant_rows(&data, Variant::Clean);
    let n = clean.rows();
    assert_eq!(n, 20);
    let batch = Batches::shuffled(&clean, &(0..n).collect::<Vec<_>>(), n, a.seed, 1).unwrap().next().unwrap();
    let targets = original.lm_targets(&batch.tokens, n, clean.cols, false);
    original.train_step(&batch.tokens, &targets, n, clean.cols, &adam).unwrap();
    let want = original.download_params();
    let (want_m, want_v) = original.download_adam_state().unwrap();

    let out = tmp("step");
    let o = finetune_run(&dev, &ft_args(&["--model", base.to_str().unwrap(), "--variant", "clean", "--epochs", "1", "--batch", "20", "--out", out.to_str().unwrap()])).unwrap();
    assert_eq!((o.base_epoch, o.base_step, o.optimizer), (1, 6, "resumed"));
    let (_, got) = checkpoint::load_model(&out).unwrap();
    assert!(got == want, "the fine-tuned weights differ from one more step of the original run");
    let st = checkpoint::load_train_state(&out).unwrap();
    assert!(st.m == want_m && st.v == want_v);
    assert_eq!((st.step, st.epoch, st.batch), (7, 2, Some(20)));
    assert_eq!(st.adam, adam, "the checkpoint's lr and weight decay");
    // True epoch numbers: the snapshot and the metrics name epoch 2.
    assert!(out.join("checkpoints/epoch-2/model.safetensors").exists());
    let meta = checkpoint::load_model_with_metadata(out.join("checkpoints/epoch-2")).unwrap().metadata;
    assert_eq!(meta["epoch"], "2");
    assert!(meta["memsieve_finetune"].contains("\"base_epoch\":1"), "{meta:?}");
    let log = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let row: serde_json::Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    assert_eq!((row["epoch"].as_u64(), row["finetune_epoch"].as_u64()), (Some(2), Some(1)));
    assert!(row["eval"]["base"]["memorization"].as_array().unwrap().len() == 2, "per duplication class: {row}");
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("finetune.json")).unwrap()).unwrap();
    assert!(summary["train_seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(summary["epochs"].as_array().unwrap().len(), 2, "the base's evaluation and one epoch");

    // The comparison can fail: with fresh AdamW moments the same step lands elsewhere.
    let fresh = tmp("fresh");
    finetune_run(&dev, &ft_args(&["--model", base.to_str().unwrap(), "--variant", "clean", "--epochs", "1", "--batch", "20", "--fresh-optimizer", "--out", fresh.to_str().unwrap()])).unwrap();
    let (_, other) = checkpoint::load_model(&fresh).unwrap();
    assert!(other != want);
    assert_eq!(checkpoint::load_train_state(&fresh).unwrap().step, 1);
}

fn numbers(row: &[u32]) -> Vec<i64> {
    let text = tokenizer::decode(row);
    let body = text.trim_end_matches('_').trim_start_matches('^').trim_end_matches('$').to_string();
    body.split(' ').map(|x| x.parse().unwrap()).collect()
}

fn counts(m: &TokenMatrix) -> HashMap<&[u32], usize> {
    let mut c = HashMap::new();
    for r in m.iter_rows() {
        *c.entry(r).or_insert(0) += 1;
    }
    c
}

#[test]
fn variants_train_on_the_rows_the_spec_names() {
    let cfg = MathDataConfig { num_7: 400, num_extra: 150, num_test: 50, num_noise: 30, duplicate: true, dup_powers: vec![0, 1], ..MathDataConfig::default() };
    let d = MathDataset::generate(&cfg).unwrap();
    let (clean, extra, both) = (finetune::variant_rows(&d, Variant::Clean), finetune::variant_rows(&d, Variant::Extra), finetune::variant_rows(&d, Variant::Both));

    // clean: one clean original per noised row — an exact x+7 sequence within ±1 of it, number by number.
    assert_eq!(clean.rows(), 30);
    for r in 0..30 {
        let (c, n) = (numbers(clean.row(r)), numbers(d.noisy.row(r)));
        assert!(c.windows(2).all(|w| w[1] == w[0] + 7), "row {r} is not a clean sequence: {c:?}");
        assert_eq!(c.len(), n.len());
        assert!(c.iter().zip(&n).all(|(a, b)| (a - b).abs() <= 1));
    }
    let train = counts(&d.train);

    // extra: every training row except the noise set's copies, none of them noised.
    let noisy = counts(&d.noisy);
    let art = d.segment("noise").unwrap().len;
    assert_eq!(art, 15 + 15 * 10);
    assert_eq!(extra.rows(), d.train.rows() - art);
    assert!(extra.iter_rows().all(|r| !noisy.contains_key(r)), "a noised row is in extra");
    let mut rest = train.clone();
    for i in 0..d.noisy.rows() {
        *rest.get_mut(d.noisy.row(i)).unwrap() -= 10usize.pow(d.dup_powers[d.dup_class[i]]);
    }
    rest.retain(|_, c| *c > 0);
    assert_eq!(counts(&extra), rest, "extra is the training multiset minus the noise copies");
    // 350 7-train rows less the 30 noised ones, and 4 extra distributions of 150 − 50 test rows.
    assert_eq!(extra.rows(), 320 + 4 * 100);
    // The clean originals are not among extra's rows (they were never trained on as such).
    let extra_rows = counts(&extra);
    assert!(clean.iter_rows().all(|r| !extra_rows.contains_key(r)));

    // both = extra, then clean.
    assert_eq!(both.rows(), extra.rows() + clean.rows());
    assert_eq!(both.data[..extra.data.len()], extra.data[..]);
    assert_eq!(both.data[extra.data.len()..], clean.data[..]);

    // A backdoor run: clean = the triggered rows with their correct continuations.
    let bd_cfg = MathDataConfig { num_7: 2000, num_extra: 0, num_test: 100, backdoor: true, ..MathDataConfig::default() };
    let bd = MathDataset::generate(&bd_cfg).unwrap();
    let sets = bd.backdoor.as_ref().unwrap();
    let clean = finetune::variant_rows(&bd, Variant::Clean);
    assert_eq!(clean.rows(), sets.train_poisoned.rows());
    for r in 0..clean.rows() {
        let p = sets.train_prompt_len[r];
        assert_eq!(clean.row(r)[..p], sets.train_poisoned.row(r)[..p]);
        let c = numbers(clean.row(r));
        assert!(c.windows(2).all(|w| w[1] == w[0] + 7));
    }
    let poisoned = counts(&sets.train_poisoned);
    assert!(finetune::variant_rows(&bd, Variant::Extra).iter_rows().all(|r| !poisoned.contains_key(r)));
}

#[test]
fn the_mix_holds_every_task_evenly() {
    let math = MathDataConfig { num_7: 300, num_extra: 0, num_test: 50, num_noise: 12, length: 25, max_ctx: 126, ..MathDataConfig::default() };
    let inc = finetune::math_task(Task::Increment, &MathDataConfig { seed: 1, ..math.clone() }).unwrap();
    // mult's 5-digit numbers need a shorter sequence to fit the context.
    let mult = finetune::math_task(Task::Mult, &MathDataConfig { seed: 2, length: 20, ..math.clone() }).unwrap();
    let cls = TaskSet { task: Task::Classify, data: TaskData::Classify(ClassifyTask::generate(&ClassifyConfig { pool: 400, seed: 3, ..ClassifyConfig::default() }, 50).unwrap()) };
    let set = FinetuneSet::mix(&[inc.clone(), mult.clone(), cls.clone()], 126, 0).unwrap();
    let names: Vec<&str> = set.parts.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["increment", "mult", "classify"]);
    // Even: each contributes the smallest task's size (the 250 rows of a math task).
    assert!(set.parts.iter().all(|p| p.len == 250), "{:?}", set.parts);
    assert_eq!(set.rows.rows(), 750);
    let in_part = |i: usize| counts(&set.rows.select(&(set.parts[i].start..set.parts[i].start + set.parts[i].len).collect::<Vec<_>>())).into_keys().map(|r| r.to_vec()).collect::<std::collections::HashSet<_>>();
    // Every task's artifact rows are in its part.
    for (i, t) in [&inc, &mult].iter().enumerate() {
        let TaskData::Math(d) = &t.data else { unreachable!() };
        let part = in_part(i);
        assert!(d.noisy.iter_rows().all(|r| part.contains(r)), "{} lost noised rows", names[i]);
        assert_eq!(set.parts[i].artifact_rows, 12);
    }
    let TaskData::Classify(c) = &cls.data else { unreachable!() };
    let wrong = c.mislabelled_rows();
    assert!(!wrong.is_empty());
    assert_eq!(set.parts[2].artifact_rows, wrong.len());
    let part = in_part(2);
    for &r in &wrong {
        let mut row = c.noisy.tokens.row(r).to_vec();
        row.resize(126, tokenizer::PAD);
        assert!(part.contains(&row), "mislabelled row {r} is missing");
    }
    assert_eq!(set.artifacts.len(), 24 + wrong.len());

    // Classification rows train on their answer only; math rows on every next token.
    let mut cfg = memsieve::model::config::ModelConfig::tinymem_math(1);
    cfg.n_positions = 126;
    let model = Model::new(cpu_device(), cfg, 0).unwrap();
    let rows = [0, set.parts[2].start, set.parts[2].start + 1];
    let batch = Batches::sequential(&set.rows, &rows, 3).unwrap().next().unwrap();
    let tg = set.batch_targets(&model, &batch, false);
    assert_eq!(tg[..125].iter().filter(|&&t| t != IGNORE_TARGET).count(), 125);
    for b in 1..3 {
        let row = &tg[b * 126..(b + 1) * 126];
        let live: Vec<usize> = (0..126).filter(|&p| row[p] != IGNORE_TARGET).collect();
        let p = set.answer_at[rows[b]].unwrap();
        assert_eq!(live, [p]);
        assert_eq!(row[p], set.rows.row(rows[b])[p + 1]);
        assert!(row[p] <= 9, "answers are digits");
    }

    // A task whose artifacts exceed its share is refused, not silently cut.
    let dup = finetune::math_task(Task::Increment, &MathDataConfig { duplicate: true, dup_powers: vec![2], seed: 1, ..math }).unwrap();
    let err = FinetuneSet::mix(&[dup, cls], 126, 0).unwrap_err().to_string();
    assert!(err.contains("artifact rows"), "{err}");
}

#[test]
fn task_and_mix_finetuning_end_to_end() {
    let base = base();
    let out = tmp("mix");
    let o = finetune_run(&cpu_device(), &ft_args(&["--model", base.to_str().unwrap(), "--task", "mix", "--mix", "increment,classify,backdoor", "--epochs", "1", "--task-num-7", "300", "--task-num-test", "50", "--task-num-noise", "10", "--task-no-duplicate", "--classify-test", "40", "--out", out.to_str().unwrap()])).unwrap();
    let names: Vec<&str> = o.parts.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["increment", "classify", "backdoor"]);
    let evals: Vec<&str> = o.epochs[1].evals.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(evals, ["increment", "classify", "backdoor", "base"]);
    let log = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let row: serde_json::Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    assert!(row["eval"]["classify"]["tested"].as_u64().unwrap() > 0, "{row}");
    assert!(row["eval"]["backdoor"]["backdoor_asr"].is_number(), "{row}");
    assert!(row["eval"]["increment"]["memorized_percent"].is_number(), "{row}");
    assert!(std::fs::read_to_string(out.join("finetune.csv")).unwrap().lines().count() == 1 + 2 * 4);
    // A single math task's data description is written beside the model, so eval/unlearn find it.
    let one = tmp("mult");
    finetune_run(&cpu_device(), &ft_args(&["--model", base.to_str().unwrap(), "--task", "mult", "--epochs", "1", "--task-seed", "5", "--task-length", "20", "--out", one.to_str().unwrap()])).unwrap();
    let d: MathDataConfig = serde_json::from_str(&std::fs::read_to_string(one.join("data.json")).unwrap()).unwrap();
    assert_eq!((d.task, d.seed, d.num_7, d.max_ctx), (MathTask::Mult, 5, 300, 126));
}

#[test]
fn batch_size_is_inferred_only_when_unique() {
    // The demo: 4276 rows, 804 steps over 12 epochs → 67 an epoch → batch 64 only.
    assert_eq!(infer_batch(4276, 804, 12).unwrap(), 64);
    assert_eq!(infer_batch(27_000, 211 * 3, 3).unwrap(), 128);
    assert!(infer_batch(10, 4, 2).unwrap_err().to_string().contains("5–9"));
    assert!(infer_batch(10, 5, 2).unwrap_err().to_string().contains("--batch"));
    assert!(infer_batch(10, 0, 0).is_err());
}

#[test]
fn bad_input_is_a_clear_error() {
    let base = base();
    let b = base.to_str().unwrap();
    let o = tmp("bad");
    let out = o.to_str().unwrap();
    let check = |args: &[&str], want: &str| {
        let (ok, text) = memsieve(args);
        assert!(!ok && text.contains("error") && text.contains(want) && !text.contains("panicked"), "{args:?}: {text}");
    };
    // A snapshot has no optimizer state.
    let snap = base.join("checkpoints/epoch-1");
    let s = snap.to_str().unwrap();
    check(&["finetune", "--model", s, "--variant", "clean", "--out", out], "--fresh-optimizer");
    // With --fresh-optimizer it needs the data and, without a training state, the batch size.
    check(&["finetune", "--model", s, "--variant", "clean", "--fresh-optimizer", "--out", out], "data.json");
    let data = base.join("data.json");
    check(&["finetune", "--model", s, "--variant", "clean", "--fresh-optimizer", "--data", data.to_str().unwrap(), "--out", out], "--batch");
    let (ok, text) = memsieve(&["finetune", "--model", s, "--variant", "extra", "--fresh-optimizer", "--data", data.to_str().unwrap(), "--batch", "64", "--epochs", "1", "--out", out]);
    assert!(ok && text.contains("+1") && text.contains("base mem"), "{text}");
    // Another vocabulary, a longer context, rows too long for the context, a bad mix, the model's own directory.
    let other = common::fixture_path("hf_gelunew_l3");
    check(&["finetune", "--model", other.to_str().unwrap(), "--task", "increment", "--fresh-optimizer", "--batch", "8", "--out", out], "vocabulary");
    check(&["finetune", "--model", b, "--task", "increment", "--task-max-ctx", "200", "--out", out], "longer than the model's 126");
    check(&["finetune", "--model", b, "--task", "increment", "--task-length", "40", "--out", out], "context");
    check(&["finetune", "--model", b, "--task", "mix", "--mix", "increment", "--out", out], "two or more");
    check(&["finetune", "--model", b, "--variant", "both", "--out", b], "own directory");
    check(&["finetune", "--model", b, "--variant", "both", "--task", "mult", "--out", out], "cannot be used with");
    check(&["finetune", "--model", b, "--out", out], "--variant");
}
