//! Hidden-state extraction for screening (smi.md §14): layer `last` × wteᵀ reproduces the logits,
//! layer 0 is wte[tok] + wpe[pos], batching and prefix cuts do not change the states, bad input is
//! an error; and `memsieve screen --model --data --layer` end to end.

use memsieve::backend::cpu::CpuBackend;
use memsieve::backend::Device;
use memsieve::data::TokenMatrix;
use memsieve::model::config::ModelConfig;
use memsieve::model::params::ParamKind;
use memsieve::model::Model;
use memsieve::rng::{purpose, Stream};
use memsieve::smi::extract::{answer_positions, hidden_states, sequence_positions, LayerSel, Positions};
use std::process::Command;
use std::sync::Arc;

fn model(layers: usize) -> Model<CpuBackend> {
    let dev = Arc::new(Device::new(CpuBackend::new()));
    let mut cfg = ModelConfig::tinymem_math(layers);
    cfg.n_positions = 24;
    Model::new(dev, cfg, 7).unwrap()
}

/// 7 rows of width 19 with lengths 2..19 (awkward against any batch size).
fn rows() -> (TokenMatrix, Vec<usize>) {
    let mut rng = Stream::new(1, purpose::MISC, 9);
    let lengths = vec![19, 2, 11, 5, 17, 3, 13];
    let mut m = TokenMatrix::new(19);
    for &n in &lengths {
        let row: Vec<u32> = (0..19).map(|t| if t < n { rng.below(13) as u32 } else { 13 }).collect();
        m.push_row(&row);
    }
    (m, lengths)
}

fn close(a: f32, b: f32) -> bool {
    (a - b).abs() <= 1e-5 + 1e-4 * b.abs()
}

#[test]
fn last_layer_times_wte_gives_the_logits_and_layer_0_the_embeddings() {
    let mut m = model(2);
    let (tokens, lengths) = rows();
    let at = sequence_positions(&tokens, &lengths).unwrap();
    let h = hidden_states(&mut m, &tokens, &at, &[0, 1, 2], 3, &|_, _| {}).unwrap();
    let (c, v, t) = (m.cfg.n_embd, m.cfg.vocab_size, tokens.cols);
    // Reference: one forward over the full rows.
    m.forward(&tokens.data, None, tokens.rows(), t).unwrap();
    let logits = m.download_logits();
    let layout = m.acts().unwrap().layout.clone();
    let res1 = m.download_slot(layout.residual(1));
    let p = m.download_params();
    let wte = &p[m.layout.offset(ParamKind::Wte, 0)..][..v * c];
    let wpe = &p[m.layout.offset(ParamKind::Wpe, 0)..][..m.cfg.n_positions * c];
    for i in 0..at.len() {
        let (r, pos) = (at.rows[i], at.pos[i]);
        let x = &h[2][i * c..(i + 1) * c];
        for tok in 0..v {
            let dot: f32 = x.iter().zip(&wte[tok * c..(tok + 1) * c]).map(|(a, b)| a * b).sum();
            let want = logits[(r * t + pos) * v + tok];
            assert!(close(dot, want), "sample {i} token {tok}: {dot} vs {want}");
        }
        let id = tokens.row(r)[pos] as usize;
        for k in 0..c {
            assert!(close(h[0][i * c + k], wte[id * c + k] + wpe[pos * c + k]), "embedding of sample {i}");
            assert!(close(h[1][i * c + k], res1[(r * t + pos) * c + k]), "layer 1 of sample {i}");
        }
    }
}

#[test]
fn answer_samples_sit_before_the_last_token() {
    let mut m = model(1);
    let (tokens, lengths) = rows();
    let at = answer_positions(&tokens, &lengths).unwrap();
    let all = sequence_positions(&tokens, &lengths).unwrap();
    let ha = hidden_states(&mut m, &tokens, &at, &[1], 4, &|_, _| {}).unwrap();
    let hs = hidden_states(&mut m, &tokens, &all, &[1], 64, &|_, _| {}).unwrap();
    let c = m.cfg.n_embd;
    for i in 0..at.len() {
        assert_eq!(at.labels[i], tokens.row(at.rows[i])[lengths[i] - 1] as i64);
        let j = (0..all.len()).find(|&j| all.rows[j] == at.rows[i] && all.pos[j] == at.pos[i]).unwrap();
        assert_eq!(all.labels[j], at.labels[i]);
        for k in 0..c {
            assert!(close(ha[0][i * c + k], hs[0][j * c + k]));
        }
    }
}

#[test]
fn bad_input_is_an_error() {
    let mut m = model(2);
    let (tokens, lengths) = rows();
    let at = sequence_positions(&tokens, &lengths).unwrap();
    let e = hidden_states(&mut m, &tokens, &at, &[3], 4, &|_, _| {}).unwrap_err().to_string();
    assert!(e.contains("layer 3 is out of range"), "{e}");
    assert!(LayerSel::parse("3").unwrap().resolve(2).is_err());
    // A token outside the vocabulary.
    let mut bad = tokens.clone();
    bad.row_mut(2)[1] = 14;
    let e = hidden_states(&mut m, &bad, &at, &[1], 4, &|_, _| {}).unwrap_err().to_string();
    assert!(e.contains("token id 14"), "{e}");
    // A position past the model's context (24).
    let long = TokenMatrix::from_data(30, vec![1; 30]).unwrap();
    let at_long = Positions { rows: vec![0], pos: vec![28], labels: vec![1] };
    let e = hidden_states(&mut m, &long, &at_long, &[1], 4, &|_, _| {}).unwrap_err().to_string();
    assert!(e.contains("longer than the model's context"), "{e}");
    let outside = Positions { rows: vec![7], pos: vec![0], labels: vec![1] };
    assert!(hidden_states(&mut m, &tokens, &outside, &[1], 4, &|_, _| {}).is_err());
    assert!(hidden_states(&mut m, &tokens, &at, &[1], 0, &|_, _| {}).is_err());
}

#[test]
fn screen_from_a_model_and_jsonl_rows() {
    let dir = std::env::temp_dir().join(format!("memsieve-extract-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let m = model(2);
    memsieve::checkpoint::save_model(dir.join("model"), &m.cfg, &m.download_params(), &[]).unwrap();
    // Classification-style rows: 40 prompts ending in one of two answers.
    let mut rng = Stream::new(2, purpose::MISC, 3);
    let mut tm = TokenMatrix::new(9);
    let mut lengths = Vec::new();
    for i in 0..40 {
        let n = 5 + (i % 5);
        let mut row: Vec<u32> = (0..9).map(|_| rng.below(10) as u32).collect();
        row[n - 2] = 11;
        row[n - 1] = (i % 2) as u32;
        tm.push_row(&row);
        lengths.push(n);
    }
    memsieve::data::save_jsonl(dir.join("rows.jsonl"), &tm, Some(&lengths)).unwrap();
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_memsieve"))
            .args(["screen", "--model", dir.join("model").to_str().unwrap(), "--data", dir.join("rows.jsonl").to_str().unwrap()])
            .args(["--slices", "50", "--out", dir.join("out").to_str().unwrap()])
            .args(extra)
            .output()
            .unwrap()
    };
    let o = run(&["--layer", "all", "--at", "answer"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for l in 0..=2 {
        let csv = std::fs::read_to_string(dir.join(format!("out/layer_{l}/scores.csv"))).unwrap();
        assert_eq!(csv.lines().count(), 41, "layer {l}");
        let pos = std::fs::read_to_string(dir.join(format!("out/layer_{l}/positions.csv"))).unwrap();
        assert!(pos.lines().nth(1).unwrap().starts_with("0,0,3,0"), "{pos}");
    }
    let o = run(&["--layer", "last"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let n_seq: usize = lengths.iter().map(|n| n - 1).sum();
    assert_eq!(std::fs::read_to_string(dir.join("out/scores.csv")).unwrap().lines().count(), n_seq + 1);
    let o = run(&["--layer", "5"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("layer 5 is out of range"));
    let o = run(&["--layer", "first"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("expected a layer index"));
    std::fs::remove_dir_all(&dir).unwrap();
}
