//! Hidden states of a model as screening features (smi.md §14), in the Hugging Face
//! `output_hidden_states` convention: layer 0 is the embedding output (wte[tok] + wpe[pos]),
//! layer λ (1 ≤ λ < n_layer) the residual stream after block λ, and layer n_layer ("last") the
//! output of the final LayerNorm — HF applies `ln_f` to its last hidden state, so the raw output
//! of the last block is not one of the n_layer + 1 layers.
//!
//! A sample is one (row, position) pair: the hidden state at `position` with the next token as its
//! label. Classification rows end `[…, separator, answer]`, so their sample sits at the separator
//! and is labelled with the answer; sequence rows give one sample per predicted position.

use crate::backend::Backend;
use crate::data::TokenMatrix;
use crate::error::{Error, Result};
use crate::model::Model;

/// Which layers to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerSel {
    Index(usize),
    /// After `ln_f` (index n_layer).
    Last,
    /// Every layer 0..=n_layer.
    All,
}

impl LayerSel {
    /// `0`, `3`, `last` or `all`.
    pub fn parse(s: &str) -> Result<LayerSel> {
        match s {
            "last" => Ok(LayerSel::Last),
            "all" => Ok(LayerSel::All),
            _ => s
                .parse::<usize>()
                .map(LayerSel::Index)
                .map_err(|_| Error::Input(format!("--layer {s:?}: expected a layer index, `last` or `all`"))),
        }
    }

    /// The layer indices for a model of `n_layer` blocks.
    pub fn resolve(self, n_layer: usize) -> Result<Vec<usize>> {
        match self {
            LayerSel::Index(l) if l > n_layer => Err(Error::Input(format!(
                "layer {l} is out of range: the model has hidden states 0..={n_layer} (0 = embeddings, {n_layer} = after ln_f)"
            ))),
            LayerSel::Index(l) => Ok(vec![l]),
            LayerSel::Last => Ok(vec![n_layer]),
            LayerSel::All => Ok((0..=n_layer).collect()),
        }
    }
}

/// Where to read hidden states, and the label of each sample.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Positions {
    pub rows: Vec<usize>,
    pub pos: Vec<usize>,
    /// The token that follows `pos` in its row.
    pub labels: Vec<i64>,
}

impl Positions {
    pub fn len(&self) -> usize {
        self.rows.len()
    }
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
    fn push(&mut self, row: usize, pos: usize, label: u32) {
        self.rows.push(row);
        self.pos.push(pos);
        self.labels.push(label as i64);
    }
}

fn check_lengths(tokens: &TokenMatrix, lengths: &[usize]) -> Result<()> {
    if lengths.len() != tokens.rows() {
        return Err(Error::Input(format!("{} lengths for {} rows", lengths.len(), tokens.rows())));
    }
    if let Some((r, &n)) = lengths.iter().enumerate().find(|(_, &n)| n > tokens.cols) {
        return Err(Error::Input(format!("row {r}: length {n} exceeds the row width {}", tokens.cols)));
    }
    Ok(())
}

/// Classification rows: the answer is each row's last token, read at the position before it.
pub fn answer_positions(tokens: &TokenMatrix, lengths: &[usize]) -> Result<Positions> {
    check_lengths(tokens, lengths)?;
    let mut p = Positions::default();
    for (r, &n) in lengths.iter().enumerate() {
        if n < 2 {
            return Err(Error::Input(format!("row {r} has {n} token(s): a classification row needs a prompt and an answer")));
        }
        p.push(r, n - 2, tokens.row(r)[n - 1]);
    }
    Ok(p)
}

/// Sequence rows: every position with a next token (0..len−1), labelled with that token.
pub fn sequence_positions(tokens: &TokenMatrix, lengths: &[usize]) -> Result<Positions> {
    check_lengths(tokens, lengths)?;
    let mut p = Positions::default();
    for (r, &n) in lengths.iter().enumerate() {
        for t in 0..n.saturating_sub(1) {
            p.push(r, t, tokens.row(r)[t + 1]);
        }
    }
    if p.is_empty() {
        return Err(Error::Input("no row has two tokens: there is no predicted position to screen".into()));
    }
    Ok(p)
}

/// Hidden states at `at` for each of `layers`: one `at.len() × n_embd` row-major matrix per layer,
/// samples in `at` order. Rows are run in batches of `batch`, each cut to the longest prefix its
/// samples need (the model is causal, so the states are the same as on the full row).
pub fn hidden_states<B: Backend>(
    model: &mut Model<B>,
    tokens: &TokenMatrix,
    at: &Positions,
    layers: &[usize],
    batch: usize,
    progress: &dyn Fn(usize, usize),
) -> Result<Vec<Vec<f32>>> {
    let (n_layer, c) = (model.cfg.n_layer, model.cfg.n_embd);
    if let Some(&l) = layers.iter().find(|&&l| l > n_layer) {
        return Err(LayerSel::Index(l).resolve(n_layer).unwrap_err());
    }
    if at.pos.len() != at.rows.len() {
        return Err(Error::Input("positions and rows differ in length".into()));
    }
    if batch == 0 {
        return Err(Error::Input("batch size must be positive".into()));
    }
    for (&r, &p) in at.rows.iter().zip(&at.pos) {
        if r >= tokens.rows() || p >= tokens.cols {
            return Err(Error::Input(format!("sample at row {r}, position {p} is outside the {} × {} token rows", tokens.rows(), tokens.cols)));
        }
    }
    // Samples grouped by row; rows in first-appearance order.
    let mut need = vec![0usize; tokens.rows()];
    let mut used = vec![false; tokens.rows()];
    let mut order = Vec::new();
    for (&r, &p) in at.rows.iter().zip(&at.pos) {
        if !used[r] {
            used[r] = true;
            order.push(r);
        }
        need[r] = need[r].max(p + 1);
    }
    let mut slot_of_row = vec![usize::MAX; tokens.rows()];
    let mut out: Vec<Vec<f32>> = layers.iter().map(|_| vec![0f32; at.len() * c]).collect();
    let mut samples_of_row: Vec<Vec<usize>> = vec![Vec::new(); tokens.rows()];
    for (i, &r) in at.rows.iter().enumerate() {
        samples_of_row[r].push(i);
    }
    let chunks: Vec<&[usize]> = order.chunks(batch).collect();
    for (ci, chunk) in chunks.iter().enumerate() {
        let t = chunk.iter().map(|&r| need[r]).max().unwrap_or(1);
        let mut batch_tokens = Vec::with_capacity(chunk.len() * t);
        for (bi, &r) in chunk.iter().enumerate() {
            batch_tokens.extend_from_slice(&tokens.row(r)[..t]);
            slot_of_row[r] = bi;
        }
        let b = chunk.len();
        let dev = model.dev.clone();
        dev.backend.scope(|| model.forward(&batch_tokens, None, b, t))?;
        let layout = model.acts().expect("forward ran").layout.clone();
        for (li, &l) in layers.iter().enumerate() {
            let slot = if l == n_layer { layout.lnf } else { layout.residual(l) };
            let h = model.download_slot(slot);
            for &r in chunk.iter() {
                let bi = slot_of_row[r];
                for &i in &samples_of_row[r] {
                    let src = (bi * t + at.pos[i]) * c;
                    out[li][i * c..(i + 1) * c].copy_from_slice(&h[src..src + c]);
                }
            }
        }
        progress(ci + 1, chunks.len());
    }
    Ok(out)
}

/// Which positions of each row become samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum At {
    /// Every position that has a next token (sequence data).
    Every,
    /// The position before each row's last token, labelled with it (classification data).
    Answer,
}

/// One layer's features for `memsieve screen --model`.
pub struct LayerFeatures {
    pub layer: usize,
    /// More than one layer was asked for (`--layer all`).
    pub of_many: bool,
    pub features: super::npy::Matrix<f32>,
    pub positions: Positions,
}

/// Load a model and JSONL rows and extract the hidden states of `layer` (cpu backend).
pub fn from_files(model_dir: &std::path::Path, data: &std::path::Path, layer: &str, at: At, threads: usize) -> Result<Vec<LayerFeatures>> {
    use crate::backend::{cpu::CpuBackend, Device};
    let sel = LayerSel::parse(layer)?;
    let (cfg, params) = crate::checkpoint::load_model(model_dir)?;
    let layers = sel.resolve(cfg.n_layer)?;
    let pad = cfg.pad_token_id.unwrap_or(0);
    let rows = crate::data::load_jsonl(data, cfg.vocab_size, cfg.n_positions, pad)?;
    let positions = match at {
        At::Every => sequence_positions(&rows.tokens, &rows.lengths)?,
        At::Answer => answer_positions(&rows.tokens, &rows.lengths)?,
    };
    let dev = std::sync::Arc::new(Device::new(CpuBackend::with_threads(threads)));
    let mut model = Model::from_params(dev, cfg.clone(), &params)?;
    let batches = rows.tokens.rows().div_ceil(64) as u64;
    let bar = crate::train::progress_bar(batches, "hidden states");
    let h = hidden_states(&mut model, &rows.tokens, &positions, &layers, 64, &|done, _| bar.set_position(done as u64))?;
    bar.finish_and_clear();
    let of_many = layers.len() > 1;
    Ok(layers
        .iter()
        .zip(h)
        .map(|(&layer, data)| LayerFeatures {
            layer,
            of_many,
            features: super::npy::Matrix { rows: positions.len(), cols: cfg.n_embd, data },
            positions: positions.clone(),
        })
        .collect())
}

/// `positions.csv`: which row and position each sample (score row) came from.
pub fn write_positions(path: &std::path::Path, p: &Positions) -> Result<()> {
    use std::fmt::Write as _;
    let mut s = String::from("sample,row,position,label\n");
    for i in 0..p.len() {
        let _ = writeln!(s, "{i},{},{},{}", p.rows[i], p.pos[i], p.labels[i]);
    }
    crate::error::write_atomic(path, s.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_parsing_and_range() {
        assert_eq!(LayerSel::parse("last").unwrap().resolve(4).unwrap(), [4]);
        assert_eq!(LayerSel::parse("all").unwrap().resolve(2).unwrap(), [0, 1, 2]);
        assert_eq!(LayerSel::parse("0").unwrap().resolve(2).unwrap(), [0]);
        let e = LayerSel::parse("3").unwrap().resolve(2).unwrap_err().to_string();
        assert!(e.contains("layer 3") && e.contains("0..=2"), "{e}");
        assert!(LayerSel::parse("-1").is_err() && LayerSel::parse("first").is_err());
    }

    #[test]
    fn positions_of_both_kinds() {
        let m = TokenMatrix::from_data(4, vec![1, 2, 3, 13, 4, 5, 13, 13]).unwrap();
        let a = answer_positions(&m, &[3, 2]).unwrap();
        assert_eq!((a.rows, a.pos, a.labels), (vec![0, 1], vec![1, 0], vec![3, 5]));
        let s = sequence_positions(&m, &[3, 2]).unwrap();
        assert_eq!((s.rows, s.pos, s.labels), (vec![0, 0, 1], vec![0, 1, 0], vec![2, 3, 5]));
        assert!(answer_positions(&m, &[3, 1]).unwrap_err().to_string().contains("row 1"));
        assert!(answer_positions(&m, &[3, 5]).is_err());
        assert!(answer_positions(&m, &[3]).is_err());
        assert!(sequence_positions(&m, &[1, 1]).is_err());
    }
}
