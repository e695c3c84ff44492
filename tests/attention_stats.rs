//! Attention-distribution statistics (depn-attention.md B3): the cpu op against a direct f64 softmax
//! of every full row, rows with one dominant score and with equal scores, the library's aggregates
//! against the probabilities the forward pass itself keeps, its position selection and errors, and
//! `memsieve attention` end to end on a small trained run. The GPU kernels' parity with the cpu op is
//! `attention_stats` in tests/common/parity.rs (wgpu_parity.rs, cuda_emu.rs).

mod common;

use common::cpu_device;
use memsieve::analysis::attention::{attention_statistics, AttentionOptions, Positions};
use memsieve::backend::{Op, ATTENTION_STATS};
use memsieve::data::TokenMatrix;
use memsieve::model::config::ModelConfig;
use memsieve::model::Model;
use std::path::PathBuf;
use std::process::Command;

/// (entropy, H/ln(t+1), max p, top-k mass) of p = softmax(scores) in f64.
fn row_stats(scores: &[f64], k: usize) -> [f64; 4] {
    let m = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
    let z: f64 = e.iter().sum();
    let mut p: Vec<f64> = e.iter().map(|x| x / z).collect();
    let h = -p.iter().filter(|&&x| x > 0.0).map(|x| x * x.ln()).sum::<f64>();
    let t = scores.len() - 1;
    p.sort_by(|a, b| b.total_cmp(a));
    let norm = if t == 0 { 0.0 } else { h / ((t + 1) as f64).ln() };
    [h, norm, p[0], p.iter().take(k).sum()]
}

/// The f64 reference of Op::AttentionStats from the full causal rows.
#[allow(clippy::too_many_arguments)]
fn reference(qkv: &[f32], b: usize, t: usize, c: usize, nh: usize, t0: usize, t1: usize, k: usize) -> Vec<f64> {
    let hs = c / nh;
    let mut out = Vec::new();
    for bi in 0..b {
        for h in 0..nh {
            for tq in t0..t1 {
                let at = |pos: usize, which: usize| &qkv[(bi * t + pos) * 3 * c + which * c + h * hs..][..hs];
                let scores: Vec<f64> = (0..=tq)
                    .map(|s| at(tq, 0).iter().zip(at(s, 1)).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>() / (hs as f64).sqrt())
                    .collect();
                out.extend(row_stats(&scores, k));
            }
        }
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn run_op(qkv: &[f32], b: usize, t: usize, c: usize, nh: usize, t0: usize, t1: usize, k: usize) -> Vec<f32> {
    let dev = cpu_device();
    let q = dev.alloc(qkv.len()).unwrap();
    dev.upload_f32(dev.view(&q), qkv);
    let out = dev.alloc(b * nh * (t1 - t0) * ATTENTION_STATS).unwrap();
    dev.exec(Op::AttentionStats { out: dev.view(&out), qkv: dev.view(&q), b, t, c, nh, t0, t1, top_k: k });
    dev.download_f32(dev.view(&out))
}

fn assert_near(got: &[f32], want: &[f64], atol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!((g as f64 - w).abs() <= atol * (1.0 + w.abs()), "{what}: word {i} (statistic {}) is {g}, f64 reference {w}", i % 4);
    }
}

#[test]
fn cpu_op_matches_a_direct_f64_softmax_of_each_full_row() {
    for (b, t, c, nh, t0, t1, k) in [(1, 1, 128, 4, 0, 1, 5), (2, 37, 48, 3, 0, 37, 16), (1, 150, 128, 4, 50, 150, 5), (2, 257, 64, 2, 120, 257, 7), (1, 70, 32, 1, 69, 70, 1)] {
        let qkv = common::parity_free_random(b * t * 3 * c).iter().map(|x| 2.0 * x).collect::<Vec<f32>>();
        let got = run_op(&qkv, b, t, c, nh, t0, t1, k);
        assert_near(&got, &reference(&qkv, b, t, c, nh, t0, t1, k), 1e-5, &format!("b={b} t={t} c={c} nh={nh} {t0}..{t1} k={k}"));
    }
}

#[test]
fn one_dominant_score_and_equal_scores() {
    // One head of size 32: every query is 16·e0, key 0 is 16·e0 and the others 0, so key 0 scores
    // 256/√32 ≈ 45 and every other key 0: p ≈ (1, 0, …) for every query.
    let (t, c) = (37, 32);
    let mut qkv = vec![0f32; t * 3 * c];
    for pos in 0..t {
        qkv[pos * 3 * c] = 16.0;
    }
    qkv[c] = 16.0;
    let got = run_op(&qkv, 1, t, c, 1, 0, t, 5);
    for (tq, s) in got.chunks(4).enumerate() {
        assert!(s[0].abs() < 1e-6 && s[1].abs() < 1e-6, "query {tq}: entropy {} (normalised {})", s[0], s[1]);
        assert!((s[2] - 1.0).abs() < 1e-6 && (s[3] - 1.0).abs() < 1e-6, "query {tq}: max {} top-5 {}", s[2], s[3]);
    }
    assert_near(&got, &reference(&qkv, 1, t, c, 1, 0, t, 5), 1e-6, "dominant");

    // Every key the same vector: all scores tie, the row is uniform over its t+1 keys, and the top-k
    // boundary cuts through a tie (the mass is k/(t+1) whichever keys are taken).
    let (t, c, nh, k) = (150, 128, 4, 7);
    let mut qkv = common::parity_free_random(t * 3 * c);
    let key: Vec<f32> = qkv[c..2 * c].to_vec();
    for pos in 0..t {
        qkv[pos * 3 * c + c..pos * 3 * c + 2 * c].copy_from_slice(&key);
    }
    let got = run_op(&qkv, 1, t, c, nh, 0, t, k);
    for (i, s) in got.chunks(4).enumerate() {
        let tq = i % t;
        let n = (tq + 1) as f32;
        assert!((s[0] - n.ln()).abs() < 1e-5, "query {tq}: entropy {} vs ln {n}", s[0]);
        let norm = if tq == 0 { 0.0 } else { 1.0 };
        assert!((s[1] - norm).abs() < 1e-6, "query {tq}: normalised entropy {}", s[1]);
        assert!((s[2] - 1.0 / n).abs() < 1e-6, "query {tq}: max {}", s[2]);
        assert!((s[3] - k.min(tq + 1) as f32 / n).abs() < 1e-5, "query {tq}: top-{k} {}", s[3]);
    }
}

/// Rows of random digits, each ending in EOS and padding at its own length (one row unpadded).
fn digit_rows(rows: usize, t: usize) -> TokenMatrix {
    let r = common::parity_free_random(rows * t);
    let mut m = TokenMatrix::new(t);
    for i in 0..rows {
        let len = if i == 0 { t } else { t / 2 + (i * 37) % (t / 2) };
        let row: Vec<u32> = (0..t)
            .map(|p| match p {
                0 => 10,
                p if p < len - 1 => ((r[i * t + p] + 1.0) * 5.0) as u32 % 10,
                p if p == len - 1 => 11,
                _ => 13,
            })
            .collect();
        m.push_row(&row);
    }
    m
}

#[test]
fn library_aggregates_match_the_forward_passes_own_probabilities() {
    let dev = cpu_device();
    let cfg = ModelConfig::tinymem_math(2);
    let mut model = Model::new(dev.clone(), cfg.clone(), 3).unwrap();
    let (n, t, k) = (7, 150, 5);
    let rows = digit_rows(n, t);
    let o = AttentionOptions { positions: Positions::All, top_k: k, batch: 3 };
    let s = attention_statistics(&mut model, &rows, &o, &|_, _| {}).unwrap();
    let whole = attention_statistics(&mut model, &rows, &AttentionOptions { batch: 64, ..o }, &|_, _| {}).unwrap();

    // Independently: the probabilities AttentionForward keeps, [b, nh, t, t] per layer.
    model.forward(&rows.data, None, n, t).unwrap();
    let layout = model.acts().unwrap().layout.clone();
    let nh = cfg.n_head;
    let kept = |row: &[u32], p: usize| p >= 1 && row[p] != 11 && row[p] != 13;
    let mut count = 0;
    for (l, slot) in layout.layers.iter().enumerate() {
        let att = model.download_slot(slot.att);
        for h in 0..nh {
            let mut sum = [0f64; 4];
            count = 0;
            for r in 0..n {
                let row = rows.row(r);
                for p in (0..t).filter(|&p| kept(row, p)) {
                    let probs = &att[((r * nh + h) * t + p) * t..][..=p];
                    // Statistics of the given probabilities: their log is a valid score vector.
                    let scores: Vec<f64> = probs.iter().map(|&x| (x as f64).ln()).collect();
                    for (a, v) in sum.iter_mut().zip(row_stats(&scores, k)) {
                        *a += v;
                    }
                    count += 1;
                }
            }
            let got = s.per_head[l][h].values();
            for j in 0..4 {
                let want = sum[j] / count as f64;
                assert!((got[j] - want).abs() <= 1e-5 * (1.0 + want.abs()), "layer {l} head {h} statistic {j}: {} vs {want}", got[j]);
                assert!((whole.per_head[l][h].values()[j] - got[j]).abs() <= 1e-6 * (1.0 + want.abs()), "batching changed layer {l} head {h}");
            }
        }
    }
    assert_eq!(s.positions, count);
    for (r, sample) in s.samples.iter().enumerate() {
        assert_eq!(sample.positions, (0..t).filter(|&p| kept(rows.row(r), p)).count(), "row {r}");
        let mean = sample.per_layer.iter().map(|x| x.normalized_entropy).sum::<f64>() / cfg.n_layer as f64;
        assert!((sample.mean.normalized_entropy - mean).abs() < 1e-12);
    }
    for l in 0..cfg.n_layer {
        let m = s.per_head[l].iter().map(|x| x.max_weight).sum::<f64>() / nh as f64;
        assert!((s.per_layer[l].max_weight - m).abs() < 1e-12);
        assert!(s.per_layer[l].normalized_entropy > 0.0 && s.per_layer[l].normalized_entropy <= 1.0 + 1e-6);
    }

    // The suffix of a row padded before the prompt ends selects nothing of it; a range counts its positions.
    let suffix = attention_statistics(&mut model, &rows, &AttentionOptions { positions: Positions::Suffix { prompt_len: 100 }, ..o }, &|_, _| {}).unwrap();
    for (r, sample) in suffix.samples.iter().enumerate() {
        assert_eq!(sample.positions, (100..t).filter(|&p| kept(rows.row(r), p)).count(), "row {r}");
        assert_eq!(sample.positions == 0, sample.mean.entropy.is_nan());
    }
    let range = attention_statistics(&mut model, &rows, &AttentionOptions { positions: Positions::Range { start: 0, end: 3 }, ..o }, &|_, _| {}).unwrap();
    assert!(range.samples.iter().all(|x| x.positions == 3), "positions 0, 1, 2 hold BOS and digits");

    // Bad input: clear errors, nothing run.
    for (top_k, batch, positions) in [(0, 3, Positions::All), (17, 3, Positions::All), (5, 0, Positions::All), (5, 3, Positions::Range { start: 100, end: 151 }), (5, 3, Positions::Suffix { prompt_len: 150 })] {
        let e = attention_statistics(&mut model, &rows, &AttentionOptions { positions, top_k, batch }, &|_, _| {});
        assert!(matches!(e, Err(memsieve::Error::Input(_))), "top_k {top_k} batch {batch} {positions:?}: {e:?}");
    }
    let all_padding = TokenMatrix::from_data(t, vec![13; t]).unwrap();
    let e = attention_statistics(&mut model, &all_padding, &o, &|_, _| {}).unwrap_err().to_string();
    assert!(e.contains("padding or EOS"), "{e}");
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("memsieve-test-attention-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn memsieve(backend: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_memsieve")).args(["--backend", backend]).args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

fn read_json(p: PathBuf) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

#[test]
fn attention_command_end_to_end() {
    let run = tmp("model");
    let a = common::train_small_run(run.clone(), 2);
    let model = run.to_str().unwrap();

    // The run's own data.json: the noised rows split by the memorization test, and clean rows.
    let out = tmp("out");
    let (ok, text) = memsieve("cpu", &["attention", "--model", model, "--clean-rows", "5", "--max-rows", "4", "--out", out.to_str().unwrap()]);
    assert!(ok, "{text}");
    assert!(text.contains("reconstruction of Zeng et al.'s statistic") && text.contains("top-5 mass") && text.contains("clean: 4 rows"), "{text}");
    let j = read_json(out.join("attention.json"));
    assert!(j["label"].as_str().unwrap().contains("depn-attention.md B3"));
    let groups = j["groups"].as_array().unwrap();
    let names: Vec<&str> = groups.iter().map(|g| g["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"clean") && names.iter().all(|n| ["memorized", "not memorized", "clean"].contains(n)), "{names:?}");
    let mut csv_rows = 0;
    for g in groups {
        let per_head = g["per_head"].as_array().unwrap();
        assert_eq!(per_head.len(), 2);
        for head in per_head.iter().flat_map(|l| l.as_array().unwrap()) {
            let ne = head["normalized_entropy"].as_f64().unwrap();
            let (mx, top) = (head["max_weight"].as_f64().unwrap(), head["top_k_mass"].as_f64().unwrap());
            assert!((0.0..=1.0 + 1e-6).contains(&ne) && 0.0 < mx && mx <= top && top <= 1.0 + 1e-6, "{head}");
        }
        // Suffix positions of 150-token rows: 100 per row and head, less padding and EOS.
        let rows = g["rows"].as_u64().unwrap();
        assert!(g["positions"].as_u64().unwrap() <= rows * 100);
        csv_rows += rows as usize * 3;
    }
    let csv = std::fs::read_to_string(out.join("samples.csv")).unwrap();
    assert_eq!(csv.lines().next().unwrap(), "group,row,positions,layer,entropy,normalized_entropy,max_weight,top_k_mass");
    assert_eq!(csv.lines().count(), 1 + csv_rows, "a line per (sample, layer) and its mean");
    for l in 0..2 {
        let svg = std::fs::read_to_string(out.join(format!("layer_{l}.svg"))).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>") && svg.contains("clean H/ln"));
    }

    // A JSONL file: one group; on the CUDA emulator the same aggregates.
    let data = memsieve::data::MathDataset::generate(&a.data.config().unwrap()).unwrap();
    let jsonl = run.join("rows.jsonl");
    let rows: String = data.train.iter_rows().take(3).map(|r| format!("{}\n", serde_json::json!({ "tokens": r }))).collect();
    std::fs::write(&jsonl, rows).unwrap();
    let args = |o: &PathBuf| ["attention", "--model", model, "--data", jsonl.to_str().unwrap(), "--positions", "all", "--top-k", "3", "--out", o.to_str().unwrap()].map(String::from);
    let cpu_out = tmp("jsonl-cpu");
    let (ok, text) = memsieve("cpu", &args(&cpu_out).each_ref().map(|s| s.as_str()));
    assert!(ok, "{text}");
    let cpu_j = read_json(cpu_out.join("attention.json"));
    assert_eq!(cpu_j["groups"][0]["name"], "rows");
    assert_eq!(cpu_j["groups"][0]["rows"], 3);
    if memsieve::backend::cuda::emu::built() {
        let emu_out = tmp("jsonl-emu");
        let (ok, text) = memsieve("cuda-emu", &args(&emu_out).each_ref().map(|s| s.as_str()));
        assert!(ok, "{text}");
        let emu_j = read_json(emu_out.join("attention.json"));
        for l in 0..2 {
            for h in 0..4 {
                for s in ["entropy", "normalized_entropy", "max_weight", "top_k_mass"] {
                    let (x, y) = (cpu_j["groups"][0]["per_head"][l][h][s].as_f64().unwrap(), emu_j["groups"][0]["per_head"][l][h][s].as_f64().unwrap());
                    assert!((x - y).abs() <= 1e-4 * (1.0 + x.abs()), "layer {l} head {h} {s}: cpu {x}, cuda-emu {y}");
                }
            }
        }
    } else {
        eprintln!("\n!!!!!!!! SKIPPED the cuda-emu run: the CUDA emulator was not built !!!!!!!!\n");
    }

    // Bad input: clear errors.
    for (bad, says) in [(vec!["--top-k", "17"], "top-k must be between 1 and 16"), (vec!["--positions", "5:2"], "expected suffix, all or A:B"), (vec!["--positions", "10:400"], "past the rows")] {
        let o = tmp("bad");
        let mut argv = vec!["attention", "--model", model, "--data", jsonl.to_str().unwrap(), "--out", o.to_str().unwrap()];
        argv.extend(bad);
        let (ok, text) = memsieve("cpu", &argv);
        assert!(!ok && text.contains(says), "{text}");
    }
}
